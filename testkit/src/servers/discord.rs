//! Discord's REST API v10 (`https://discord.com/api/v10`) as a bot sees it, and a client
//! that plays Discord towards the bot's HTTP interactions endpoint.
//!
//! Served routes:
//! - `POST /api/v10/channels/{channel_id}/messages` creates a message from a JSON body
//!   (`content`, `embeds`, `components`, `allowed_mentions`) and answers 200 with the
//!   Message object (snowflake `id`, `channel_id`, `author` with `bot: true`, ISO 8601
//!   `timestamp`, the embeds with `type: "rich"`).
//!   A `message_reference` (`{"message_id": "…", "fail_if_not_exists": …}`) makes it a
//!   reply (`type` 19, with `message_reference` and `referenced_message`) to a message of
//!   that channel; a reference to a message not in that channel answers 400 50035 with
//!   `{"message_reference": {"_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE", …}]}}`
//!   unless `fail_if_not_exists` is `false`, which posts a plain message instead.
//! - `PATCH /api/v10/channels/{channel_id}/messages/{message_id}` edits one (404, code
//!   10008 "Unknown Message", when it does not exist in that channel).
//! - `DELETE /api/v10/channels/{channel_id}/messages/{message_id}` deletes one: 204, or
//!   404 10008 as for an edit; later edits of it answer 10008. A test deletes a message
//!   as a person would with [`DiscordServer::delete_message`].
//! - `PUT /api/v10/applications/{application_id}/commands` overwrites the application's
//!   global commands in bulk: the body must be an array (at most 100) of command objects
//!   (`name` of 1–32 lowercase letters, digits, `-` or `_`; `type` 1–4, default 1; a
//!   CHAT_INPUT command's `description` of 1–100 characters; localizations under
//!   Discord's locales; at most 25 `options` with the same rules, required ones first,
//!   at most 25 `choices`, no `choices` with `autocomplete`; names unique per type).
//!   Answers 200 with the stored commands, each with a snowflake `id` (kept across
//!   overwrites for a name and type, as Discord keeps it), `application_id` and
//!   `version`; an invalid body answers 400 50035 and stores nothing.
//! - `PATCH /api/v10/webhooks/{application_id}/{interaction_token}/messages/@original`
//!   edits the original answer to an interaction. Like Discord it needs no bot token (the
//!   interaction token is the credential) and is not counted against the global limit;
//!   the token must be one of an interaction the test opened
//!   ([`DiscordServer::open_interaction`]) within the last 15 minutes, else 404, code
//!   10015 "Unknown Webhook". The body is checked as a message edit; the answer is the
//!   Message object.
//!
//! Checked as Discord checks them: `Authorization: Bot <token>` (else 401
//! `{"message": "401: Unauthorized", "code": 0}`); content at most 2,000 characters, at
//! most 10 embeds, an embed title at most 256 and a description at most 4,096 characters
//! (and the other embed limits, 6,000 characters over all embeds), at most 5 action rows of
//! at most 5 buttons or of one string select menu (a `custom_id` of at most 100
//! characters, 1–25 options whose labels and values are at most 100 characters,
//! `min_values` ≤ `max_values` ≤ the options), a link button with a URL and no
//! `custom_id`, `allowed_mentions.parse` of `users`, `roles`, `everyone`. A field error answers 400
//! `{"code": 50035, "message": "Invalid Form Body", "errors": {…}}` with Discord's nested
//! `_errors` shape; a body that is not JSON answers 50109, a message with nothing in it
//! 50006, as Discord does.
//!
//! Rate limits as Discord applies them ([`Limits`]): a bucket per route shape and major
//! parameter (the channel), a fixed window opened by its first request (Discord's
//! message-create bucket is 5 per 5 s per channel), and a global limit per bot (Discord's
//! is 50 requests per second), counted here over a sliding window so that a client which
//! bunches its requests is caught. Every answer past the global check carries
//! `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch seconds, fractional), `-Reset-After`
//! (seconds, fractional) and `-Bucket` (an opaque hash per route shape). Over the global
//! limit: 429 with `X-RateLimit-Global: true`, `X-RateLimit-Scope: global`, `Retry-After`
//! and `{"message": "You are being rate limited.", "retry_after": <secs>, "global": true}`;
//! over a bucket the same with scope `user` and `"global": false`.
//!
//! The test side reads back every message sent and every edit, counts 429s, and scripts
//! failures per channel ([`Failure`]: 403 50001 "Missing Access", 403 50013 "Missing
//! Permissions", 404 10003 "Unknown Channel", 500, 502, a scripted 429) for the next
//! request or for good, or an outage of the whole API ([`Outage`]).
//!
//! [`InteractionSigner`] holds an Ed25519 key pair and POSTs interactions signed the way
//! Discord signs them (`X-Signature-Ed25519` over timestamp ++ body, `X-Signature-Timestamp`),
//! or signed badly on purpose ([`Signing`]); [`ping`], [`application_command`],
//! [`autocomplete`], [`message_component`] and [`string_select`] build the interaction
//! payloads, and [`message_errors`] checks an interaction's answer against the limits
//! Discord applies to messages.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post, put};
use axum::{Json, Router};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};
use tokio::sync::watch;

use super::{lock, serve, Served};

/// The user id of the bot account the server plays (also its application id).
pub const BOT_USER_ID: u64 = 1_190_000_000_000_000_042;
/// The bot's username.
pub const BOT_USERNAME: &str = "Stargazer";
/// Discord's epoch (2015-01-01T00:00:00Z) in unix milliseconds; snowflakes count from it.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Route shape of message creation, as hashed into its bucket id.
const CREATE_ROUTE: &str = "POST /channels/{channel_id}/messages";
/// Route shape of message edits.
const EDIT_ROUTE: &str = "PATCH /channels/{channel_id}/messages/{message_id}";
/// Route shape of message deletions.
const DELETE_ROUTE: &str = "DELETE /channels/{channel_id}/messages/{message_id}";
/// Route shape of the bulk overwrite of global commands.
const COMMANDS_ROUTE: &str = "PUT /applications/{application_id}/commands";
/// Route shape of edits of an interaction's original answer.
const ORIGINAL_ROUTE: &str =
    "PATCH /webhooks/{application_id}/{interaction_token}/messages/@original";
/// How long an interaction's token may edit its answer.
pub const INTERACTION_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Discord's locales, the keys of `name_localizations` and `description_localizations`.
pub const LOCALES: [&str; 32] = [
    "id", "da", "de", "en-GB", "en-US", "es-ES", "es-419", "fr", "hr", "it", "lt", "hu", "nl",
    "no", "pl", "pt-BR", "ro", "fi", "sv-SE", "vi", "tr", "cs", "el", "bg", "ru", "uk", "hi", "th",
    "zh-CN", "ja", "zh-TW", "ko",
];

/// Rate limits the server enforces (see [`DiscordServer::set_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per bucket (route shape and channel) within `bucket_window`.
    pub bucket_limit: u32,
    /// The bucket's window, opened by its first request.
    pub bucket_window: Duration,
    /// Requests of the bot over all routes within any `global_window`.
    pub global_limit: u32,
    /// The sliding window of the global limit.
    pub global_window: Duration,
}

impl Limits {
    /// Discord's own: 5 messages per 5 s per channel, 50 requests per second per bot.
    pub fn discord() -> Self {
        Self {
            bucket_limit: 5,
            bucket_window: Duration::from_secs(5),
            global_limit: 50,
            global_window: Duration::from_secs(1),
        }
    }

    /// Limits no test reaches (headers are still sent).
    pub fn lenient() -> Self {
        Self {
            bucket_limit: 1_000_000,
            bucket_window: Duration::from_secs(5),
            global_limit: 1_000_000,
            global_window: Duration::from_secs(1),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::discord()
    }
}

/// A scripted answer to a request about one channel (see [`DiscordServer::fail_next`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 403, code 50001: the bot cannot see the channel (removed from the server, or the
    /// channel hidden from it).
    MissingAccess,
    /// 403, code 50013: the bot may see the channel but not post in it.
    MissingPermissions,
    /// 404, code 10003: the channel was deleted.
    UnknownChannel,
    /// 500 `{"message": "500: Internal Server Error", "code": 0}`.
    ServerError,
    /// 502 Bad Gateway from the edge (an HTML body, as Cloudflare sends).
    BadGateway,
    /// 429 with this `retry_after` (seconds); `global` picks the scope.
    RateLimited {
        /// Seconds to wait.
        retry_after: f64,
        /// Whether it is the global limit.
        global: bool,
    },
}

/// An outage of the whole API (see [`DiscordServer::set_outage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Every request answered 500.
    ServerError,
    /// Every request answered 502 Bad Gateway.
    BadGateway,
}

/// One message the bot created.
#[derive(Debug, Clone)]
pub struct SentMessage {
    /// Its snowflake.
    pub id: u64,
    /// The channel it went to.
    pub channel_id: u64,
    /// Its `content` (empty when it had none).
    pub content: String,
    /// Its embeds as sent.
    pub embeds: Vec<Value>,
    /// Its components as sent.
    pub components: Vec<Value>,
    /// Its `allowed_mentions`, if given.
    pub allowed_mentions: Option<Value>,
    /// The message it replies to (its `message_reference`), when that message was there;
    /// `None` for a plain message, or a reference to a missing message that did not fail.
    pub reply_to: Option<u64>,
    /// When the server accepted it.
    pub at: Instant,
}

impl SentMessage {
    /// `(label, url)` of every link button.
    pub fn link_buttons(&self) -> Vec<(String, String)> {
        self.components
            .iter()
            .filter_map(|row| row.get("components").and_then(Value::as_array))
            .flatten()
            .filter(|button| button.get("style").and_then(Value::as_u64) == Some(5))
            .map(|button| {
                let text = |key: &str| {
                    button
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                (text("label"), text("url"))
            })
            .collect()
    }
}

/// One accepted edit.
#[derive(Debug, Clone)]
pub struct Edit {
    /// The edited message.
    pub message_id: u64,
    /// Its channel.
    pub channel_id: u64,
    /// The PATCH body.
    pub body: Value,
    /// When the server accepted it.
    pub at: Instant,
}

/// One accepted bulk overwrite of an application's commands.
#[derive(Debug, Clone)]
pub struct CommandOverwrite {
    /// The application.
    pub application_id: u64,
    /// The PUT body (an array of commands).
    pub body: Value,
    /// When the server accepted it.
    pub at: Instant,
}

impl CommandOverwrite {
    /// The names of the commands, in the order sent.
    pub fn names(&self) -> Vec<String> {
        self.body
            .as_array()
            .map(|commands| {
                commands
                    .iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One accepted edit of an interaction's original answer.
#[derive(Debug, Clone)]
pub struct OriginalEdit {
    /// The application.
    pub application_id: u64,
    /// The interaction token it went to.
    pub token: String,
    /// The interaction's channel.
    pub channel_id: u64,
    /// The PATCH body.
    pub body: Value,
    /// When the server accepted it.
    pub at: Instant,
}

/// An interaction whose token may edit its original answer.
#[derive(Debug, Clone)]
struct Opened {
    application_id: u64,
    channel_id: u64,
    opened: Instant,
    /// The original answer as the edits left it.
    message: Option<Value>,
}

/// A bucket's fixed window.
#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    used: u32,
}

#[derive(Default)]
struct Inner {
    limits: Limits,
    next_seq: u64,
    /// Stored messages by id: their channel and Message object.
    messages: HashMap<u64, (u64, Value)>,
    sent: Vec<SentMessage>,
    edits: Vec<Edit>,
    /// Each application's global commands, as stored.
    commands: HashMap<u64, Vec<Value>>,
    /// Command ids by application, type and name, kept across overwrites.
    command_ids: HashMap<(u64, u64, String), u64>,
    overwrites: Vec<CommandOverwrite>,
    /// Interactions by token.
    interactions: HashMap<String, Opened>,
    original_edits: Vec<OriginalEdit>,
    buckets: HashMap<(&'static str, u64), Window>,
    /// Arrival times of the requests counted against the global limit, oldest first.
    global: VecDeque<Instant>,
    failures: HashMap<u64, VecDeque<Failure>>,
    lasting: HashMap<u64, Failure>,
    outage: Option<Outage>,
    requests: u64,
    unauthorized: u64,
    global_429: u64,
    bucket_429: u64,
    scripted_429: u64,
}

impl Inner {
    /// Deletes message `id` if it is in `channel`; whether it was.
    fn delete_message(&mut self, channel: u64, id: u64) -> bool {
        let there = self.messages.get(&id).is_some_and(|(c, _)| *c == channel);
        if there {
            self.messages.remove(&id);
        }
        there
    }
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
    sent_count: watch::Sender<usize>,
    /// Bumped on every command overwrite and original edit, for the waits.
    changes: watch::Sender<u64>,
}

/// A running Discord REST API; stops when dropped.
pub struct DiscordServer {
    /// Base URL to configure as `discord.api_url` (`http://127.0.0.1:PORT`); the API
    /// lives under `/api/v10`.
    pub url: String,
    /// The bot token it accepts (sent as `Authorization: Bot <token>`).
    pub token: String,
    shared: Arc<Shared>,
    _served: Served,
}

impl DiscordServer {
    /// Starts a server accepting `token`, enforcing [`Limits::discord`].
    pub async fn start(token: &str) -> std::io::Result<Self> {
        let (sent_count, _) = watch::channel(0);
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            inner: Mutex::new(Inner::default()),
            sent_count,
            changes,
        });
        let router = Router::new()
            .route("/api/v10/channels/{channel_id}/messages", post(create))
            .route(
                "/api/v10/channels/{channel_id}/messages/{message_id}",
                patch(edit).delete(delete),
            )
            .route(
                "/api/v10/applications/{application_id}/commands",
                put(overwrite_commands),
            )
            .route(
                "/api/v10/webhooks/{application_id}/{token}/messages/@original",
                patch(edit_original),
            )
            .fallback(not_found)
            .with_state(shared.clone());
        let served = serve(router).await?;
        Ok(Self {
            url: served.base_url(),
            token: token.to_owned(),
            shared,
            _served: served,
        })
    }

    /// Replaces the enforced limits (buckets already open keep their window).
    pub fn set_limits(&self, limits: Limits) {
        lock(&self.shared.inner).limits = limits;
    }

    /// Answers the next request about `channel` with `failure` (queued after earlier ones).
    pub fn fail_next(&self, channel: u64, failure: Failure) {
        lock(&self.shared.inner)
            .failures
            .entry(channel)
            .or_default()
            .push_back(failure);
    }

    /// Answers every request about `channel` with `failure` until cleared with `None`.
    pub fn set_channel_failure(&self, channel: u64, failure: Option<Failure>) {
        let mut inner = lock(&self.shared.inner);
        match failure {
            Some(failure) => inner.lasting.insert(channel, failure),
            None => inner.lasting.remove(&channel),
        };
    }

    /// Starts (`Some`) or ends (`None`) an outage of the whole API.
    pub fn set_outage(&self, outage: Option<Outage>) {
        lock(&self.shared.inner).outage = outage;
    }

    /// Every message created, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.shared.inner).sent.clone()
    }

    /// Messages created in `channel`, in order.
    pub fn sent_to(&self, channel: u64) -> Vec<SentMessage> {
        lock(&self.shared.inner)
            .sent
            .iter()
            .filter(|m| m.channel_id == channel)
            .cloned()
            .collect()
    }

    /// How many messages were created.
    pub fn sent_count(&self) -> usize {
        lock(&self.shared.inner).sent.len()
    }

    /// Every accepted edit, in order.
    pub fn edits(&self) -> Vec<Edit> {
        lock(&self.shared.inner).edits.clone()
    }

    /// How many edits were accepted.
    pub fn edited_count(&self) -> usize {
        lock(&self.shared.inner).edits.len()
    }

    /// Deletes message `message_id` of `channel` as a person would (in Discord's client,
    /// not through the bot's token or limits); whether it existed there. The bot's later
    /// edits of it answer 404 10008, and replies to it find nothing.
    pub fn delete_message(&self, channel: u64, message_id: u64) -> bool {
        lock(&self.shared.inner).delete_message(channel, message_id)
    }

    /// The current Message object of `message_id`, if it exists.
    pub fn message(&self, message_id: u64) -> Option<Value> {
        lock(&self.shared.inner)
            .messages
            .get(&message_id)
            .map(|(_, message)| message.clone())
    }

    /// 429s answered, of every kind (global, bucket, scripted).
    pub fn too_many(&self) -> u64 {
        let inner = lock(&self.shared.inner);
        inner.global_429 + inner.bucket_429 + inner.scripted_429
    }

    /// 429s answered for the global limit.
    pub fn global_too_many(&self) -> u64 {
        lock(&self.shared.inner).global_429
    }

    /// 429s answered for a bucket.
    pub fn bucket_too_many(&self) -> u64 {
        lock(&self.shared.inner).bucket_429
    }

    /// Requests received on the served routes, answered anyhow.
    pub fn requests(&self) -> u64 {
        lock(&self.shared.inner).requests
    }

    /// Requests refused 401 for a missing or wrong token.
    pub fn unauthorized(&self) -> u64 {
        lock(&self.shared.inner).unauthorized
    }

    /// Every accepted bulk overwrite of commands, in order.
    pub fn command_overwrites(&self) -> Vec<CommandOverwrite> {
        lock(&self.shared.inner).overwrites.clone()
    }

    /// The global commands of `application` as stored (with their ids), in order.
    pub fn commands(&self, application: u64) -> Vec<Value> {
        lock(&self.shared.inner)
            .commands
            .get(&application)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until at least `count` bulk overwrites were accepted (panics after
    /// `timeout`).
    pub async fn wait_command_overwrites(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Vec<CommandOverwrite> {
        self.wait_change(timeout, || {
            let overwrites = self.command_overwrites();
            (overwrites.len() >= count).then_some(overwrites)
        })
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {count} command overwrites"))
    }

    /// Makes the token of `interaction` (a payload built by this module) known, as
    /// Discord knows the interactions it sends: for 15 minutes its original answer may be
    /// edited through the webhook route.
    pub fn open_interaction(&self, interaction: &Value) {
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let Some(token) = text(interaction.get("token")) else {
            return;
        };
        let id = |value: Option<String>| value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let channel = text(interaction.get("channel_id"))
            .or_else(|| text(interaction.get("channel").and_then(|c| c.get("id"))));
        lock(&self.shared.inner).interactions.insert(
            token,
            Opened {
                application_id: id(text(interaction.get("application_id"))),
                channel_id: id(channel),
                opened: Instant::now(),
                message: None,
            },
        );
    }

    /// Every accepted edit of an interaction's original answer, in order.
    pub fn original_edits(&self) -> Vec<OriginalEdit> {
        lock(&self.shared.inner).original_edits.clone()
    }

    /// Waits until the original answer of the interaction `token` was edited; the first
    /// edit (panics after `timeout`).
    pub async fn wait_original_edit(&self, token: &str, timeout: Duration) -> OriginalEdit {
        self.wait_change(timeout, || {
            self.original_edits().into_iter().find(|e| e.token == token)
        })
        .await
        .unwrap_or_else(|| panic!("timed out waiting for an edit of the original answer"))
    }

    /// Polls `found` after every change until it answers, for at most `timeout`.
    async fn wait_change<T>(&self, timeout: Duration, found: impl Fn() -> Option<T>) -> Option<T> {
        let mut rx = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = found() {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return found();
            }
        }
    }

    /// Waits until at least `count` messages were created (panics after `timeout`).
    pub async fn wait_sent(&self, count: usize, timeout: Duration) -> Vec<SentMessage> {
        let mut rx = self.shared.sent_count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await;
        match reached {
            Ok(Ok(_)) => self.sent(),
            _ => panic!(
                "timed out waiting for {count} Discord messages ({} sent)",
                self.sent_count()
            ),
        }
    }
}

/// Route shape of a request, naming its bucket.
#[derive(Debug, Clone, Copy)]
enum Route {
    Create,
    Edit(u64),
    Delete(u64),
}

impl Route {
    fn shape(self) -> &'static str {
        match self {
            Route::Create => CREATE_ROUTE,
            Route::Edit(_) => EDIT_ROUTE,
            Route::Delete(_) => DELETE_ROUTE,
        }
    }
}

/// The opaque bucket id Discord sends for a route shape: stable, meaningless to clients.
fn bucket_hash(shape: &str) -> String {
    hex::encode(&Sha1::digest(shape.as_bytes())[..16])
}

fn json_response(status: StatusCode, body: Value, headers: &[(&'static str, String)]) -> Response {
    with_headers((status, Json(body)).into_response(), headers)
}

fn with_headers(mut response: Response, headers: &[(&'static str, String)]) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

fn api_error(code: u32, message: &str) -> Value {
    json!({"message": message, "code": code})
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"message": "404: Not Found", "code": 0}),
        &[],
    )
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&shared, &channel_id, None, &headers, &body)
}

async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((channel_id, message_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    handle(
        &shared,
        &channel_id,
        Some((&message_id, true)),
        &headers,
        &[],
    )
}

async fn edit(
    State(shared): State<Arc<Shared>>,
    Path((channel_id, message_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &shared,
        &channel_id,
        Some((&message_id, false)),
        &headers,
        &body,
    )
}

fn not_snowflake(field: &str, value: &str) -> Value {
    let mut errors = Map::new();
    push_error(
        &mut errors,
        &[field],
        "NUMBER_TYPE_COERCE",
        &format!("Value \"{value}\" is not snowflake."),
    );
    invalid_form(errors)
}

fn invalid_form(errors: Map<String, Value>) -> Value {
    json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})
}

/// One request on a served route, decided under the lock (no `.await` inside): a create
/// without `message`, an edit or (with `true`) a deletion of `message`.
fn handle(
    shared: &Shared,
    channel_id: &str,
    message: Option<(&str, bool)>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let now = Instant::now();
    let mut inner = lock(&shared.inner);
    inner.requests += 1;

    if let Some(refused) = unauthorized(shared, &mut inner, headers) {
        return refused;
    }
    if let Some(failed) = outage(&inner) {
        return failed;
    }

    let Ok(channel) = channel_id.parse::<u64>() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            not_snowflake("channel_id", channel_id),
            &[],
        );
    };
    let route = match message {
        None => Route::Create,
        Some((id, delete)) => match id.parse::<u64>() {
            Ok(id) if delete => Route::Delete(id),
            Ok(id) => Route::Edit(id),
            Err(_) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    not_snowflake("message_id", id),
                    &[],
                )
            }
        },
    };

    let rate_headers = match admit(&mut inner, route.shape(), channel, true, now) {
        Ok(headers) => headers,
        Err(refused) => return *refused,
    };

    // Scripted failures of this channel: the next one queued, else a lasting one.
    let scripted = inner
        .failures
        .get_mut(&channel)
        .and_then(VecDeque::pop_front)
        .or_else(|| inner.lasting.get(&channel).cloned());
    if let Some(failure) = scripted {
        if matches!(failure, Failure::RateLimited { .. }) {
            inner.scripted_429 += 1;
        }
        return failure_response(&failure, &rate_headers);
    }

    // The message edited; a deletion has no body to read.
    let edited = match route {
        Route::Create => None,
        Route::Edit(id) => Some(id),
        Route::Delete(id) if inner.delete_message(channel, id) => {
            return with_headers(StatusCode::NO_CONTENT.into_response(), &rate_headers)
        }
        Route::Delete(_) => {
            return json_response(
                StatusCode::NOT_FOUND,
                api_error(10008, "Unknown Message"),
                &rate_headers,
            )
        }
    };

    let body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(body)) => body,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 50109, "message": "The request body contains invalid JSON."}),
                &rate_headers,
            )
        }
    };
    let errors = validate(&body);
    if !errors.is_empty() {
        return json_response(StatusCode::BAD_REQUEST, invalid_form(errors), &rate_headers);
    }

    match edited {
        None => {
            if is_empty_message(&body) {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"code": 50006, "message": "Cannot send an empty message"}),
                    &rate_headers,
                );
            }
            let reply_to = match reply_to(&body, channel, &inner.messages) {
                Ok(reply_to) => reply_to,
                Err(errors) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        invalid_form(errors),
                        &rate_headers,
                    )
                }
            };
            inner.next_seq += 1;
            let id = snowflake(inner.next_seq);
            let mut message = message_json(id, channel, &body);
            if let Some(replied) = reply_to {
                let mut referenced = inner
                    .messages
                    .get(&replied)
                    .map(|(_, m)| m.clone())
                    .unwrap_or_default();
                // Discord does not nest a reply's reply.
                if let Some(referenced) = referenced.as_object_mut() {
                    referenced.remove("referenced_message");
                }
                message["type"] = json!(19);
                message["message_reference"] = json!({
                    "type": 0,
                    "channel_id": channel.to_string(),
                    "message_id": replied.to_string(),
                });
                message["referenced_message"] = referenced;
            }
            let sent = SentMessage {
                id,
                channel_id: channel,
                content: body
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                embeds: array_of(&body, "embeds"),
                components: array_of(&body, "components"),
                allowed_mentions: body.get("allowed_mentions").cloned(),
                reply_to,
                at: now,
            };
            inner.messages.insert(id, (channel, message.clone()));
            inner.sent.push(sent);
            let count = inner.sent.len();
            drop(inner);
            shared.sent_count.send_replace(count);
            json_response(StatusCode::OK, message, &rate_headers)
        }
        Some(id) => {
            let Some((stored_channel, message)) = inner.messages.get_mut(&id) else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    api_error(10008, "Unknown Message"),
                    &rate_headers,
                );
            };
            if *stored_channel != channel {
                return json_response(
                    StatusCode::NOT_FOUND,
                    api_error(10008, "Unknown Message"),
                    &rate_headers,
                );
            }
            apply_edit(message, &body);
            let answer = message.clone();
            inner.edits.push(Edit {
                message_id: id,
                channel_id: channel,
                body: Value::Object(body),
                at: now,
            });
            json_response(StatusCode::OK, answer, &rate_headers)
        }
    }
}

/// Checks the bot token; the 401 Discord answers when it is missing or wrong.
fn unauthorized(shared: &Shared, inner: &mut Inner, headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bot {}", shared.token);
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if authorized {
        return None;
    }
    inner.unauthorized += 1;
    Some(json_response(
        StatusCode::UNAUTHORIZED,
        json!({"message": "401: Unauthorized", "code": 0}),
        &[],
    ))
}

/// The answer of an outage, when one is on: the edge failing before any rate limit is
/// counted.
fn outage(inner: &Inner) -> Option<Response> {
    match inner.outage {
        Some(Outage::BadGateway) => Some(bad_gateway()),
        Some(Outage::ServerError) => Some(server_error(&[])),
        None => None,
    }
}

/// Counts a request of route `shape` with major parameter `major` against the global
/// limit (when `global`) and its bucket; answers the rate-limit headers to send, or the
/// 429.
fn admit(
    inner: &mut Inner,
    shape: &'static str,
    major: u64,
    global: bool,
    now: Instant,
) -> Result<Vec<(&'static str, String)>, Box<Response>> {
    let limits = inner.limits;
    if global {
        // The global limit, over a sliding window.
        while inner
            .global
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limits.global_window)
        {
            inner.global.pop_front();
        }
        if inner.global.len() >= limits.global_limit as usize {
            inner.global_429 += 1;
            let oldest = inner.global.front().copied().unwrap_or(now);
            let retry_after = (oldest + limits.global_window)
                .saturating_duration_since(now)
                .as_secs_f64()
                .max(0.001);
            return Err(Box::new(too_many(retry_after, true, &[])));
        }
        inner.global.push_back(now);
    }

    // The route's bucket for this major parameter: a fixed window opened by its first
    // request.
    let window = inner.buckets.entry((shape, major)).or_insert(Window {
        opened: now,
        used: 0,
    });
    if now.duration_since(window.opened) >= limits.bucket_window {
        *window = Window {
            opened: now,
            used: 0,
        };
    }
    let reset_after = (window.opened + limits.bucket_window).saturating_duration_since(now);
    let over = window.used >= limits.bucket_limit;
    if !over {
        window.used += 1;
    }
    let remaining = limits.bucket_limit.saturating_sub(window.used);
    let reset_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(reset_after)
        .as_secs_f64();
    let rate_headers = vec![
        ("x-ratelimit-limit", limits.bucket_limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", format!("{reset_epoch:.3}")),
        (
            "x-ratelimit-reset-after",
            format!("{:.3}", reset_after.as_secs_f64()),
        ),
        ("x-ratelimit-bucket", bucket_hash(shape)),
    ];
    if over {
        inner.bucket_429 += 1;
        return Err(Box::new(too_many(
            reset_after.as_secs_f64().max(0.001),
            false,
            &rate_headers,
        )));
    }
    Ok(rate_headers)
}

fn array_of(body: &Map<String, Value>, key: &str) -> Vec<Value> {
    body.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn too_many(retry_after: f64, global: bool, rate_headers: &[(&'static str, String)]) -> Response {
    let mut headers = rate_headers.to_vec();
    // Discord's `Retry-After` header is whole seconds, rounded up; the body is exact.
    headers.push((
        "retry-after",
        (retry_after.ceil() as u64).max(1).to_string(),
    ));
    headers.push((
        "x-ratelimit-scope",
        if global { "global" } else { "user" }.to_owned(),
    ));
    if global {
        headers.push(("x-ratelimit-global", "true".to_owned()));
    }
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        json!({
            "message": "You are being rate limited.",
            "retry_after": (retry_after * 1000.0).round() / 1000.0,
            "global": global,
        }),
        &headers,
    )
}

fn bad_gateway() -> Response {
    let mut response = (
        StatusCode::BAD_GATEWAY,
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>",
    )
        .into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

fn server_error(rate_headers: &[(&'static str, String)]) -> Response {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"message": "500: Internal Server Error", "code": 0}),
        rate_headers,
    )
}

fn failure_response(failure: &Failure, rate_headers: &[(&'static str, String)]) -> Response {
    match failure {
        Failure::MissingAccess => json_response(
            StatusCode::FORBIDDEN,
            api_error(50001, "Missing Access"),
            rate_headers,
        ),
        Failure::MissingPermissions => json_response(
            StatusCode::FORBIDDEN,
            api_error(50013, "Missing Permissions"),
            rate_headers,
        ),
        Failure::UnknownChannel => json_response(
            StatusCode::NOT_FOUND,
            api_error(10003, "Unknown Channel"),
            rate_headers,
        ),
        Failure::ServerError => server_error(rate_headers),
        Failure::BadGateway => bad_gateway(),
        Failure::RateLimited {
            retry_after,
            global,
        } => {
            if *global {
                too_many(*retry_after, true, &[])
            } else {
                too_many(*retry_after, false, rate_headers)
            }
        }
    }
}

/// A snowflake for now: milliseconds since Discord's epoch above 22 bits of sequence.
fn snowflake(seq: u64) -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(DISCORD_EPOCH_MS)
        .saturating_sub(DISCORD_EPOCH_MS);
    (ms << 22) | (seq & 0x3F_FFFF)
}

/// Discord's timestamp format: `2026-01-02T03:04:05.678000+00:00`.
fn discord_timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// The bot's User object.
pub fn bot_user_json() -> Value {
    json!({
        "id": BOT_USER_ID.to_string(),
        "username": BOT_USERNAME,
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": true,
        "public_flags": 0,
    })
}

/// Embeds as Discord stores them: `type` defaults to `rich`.
fn rich_embeds(embeds: &Value) -> Value {
    let mut embeds = embeds.clone();
    if let Some(list) = embeds.as_array_mut() {
        for embed in list.iter_mut().filter_map(Value::as_object_mut) {
            embed
                .entry("type")
                .or_insert_with(|| Value::String("rich".into()));
        }
    }
    embeds
}

fn message_json(id: u64, channel: u64, body: &Map<String, Value>) -> Value {
    json!({
        "id": id.to_string(),
        "type": 0,
        "channel_id": channel.to_string(),
        "content": body.get("content").and_then(Value::as_str).unwrap_or_default(),
        "author": bot_user_json(),
        "attachments": [],
        "embeds": rich_embeds(&Value::Array(array_of(body, "embeds"))),
        "components": array_of(body, "components"),
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": false,
        "pinned": false,
        "tts": false,
        "timestamp": discord_timestamp(),
        "edited_timestamp": null,
        "flags": 0,
    })
}

/// The message a new message in `channel` replies to, by its `message_reference`:
/// `Ok(None)` without one, or with one to a message not in `channel` that does not
/// fail (`fail_if_not_exists: false`: Discord posts a plain message); the errors of a
/// 50035 answer for a malformed reference or one to a missing message that fails.
fn reply_to(
    body: &Map<String, Value>,
    channel: u64,
    messages: &HashMap<u64, (u64, Value)>,
) -> Result<Option<u64>, Map<String, Value>> {
    let mut errors = Map::new();
    let reference = match body.get("message_reference") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(reference)) => reference,
        Some(_) => {
            push_error(
                &mut errors,
                &["message_reference"],
                "MODEL_TYPE_CONVERT",
                "Expected an object/dictionary.",
            );
            return Err(errors);
        }
    };
    let snowflake_at = |errors: &mut Map<String, Value>, field: &str| {
        let value = reference.get(field).filter(|v| !v.is_null())?;
        let id = match value {
            Value::String(text) => text.parse::<u64>().ok(),
            Value::Number(number) => number.as_u64(),
            _ => None,
        };
        if id.is_none() {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            push_error(
                errors,
                &["message_reference", field],
                "NUMBER_TYPE_COERCE",
                &format!("Value \"{shown}\" is not snowflake."),
            );
        }
        id
    };
    let message_id = snowflake_at(&mut errors, "message_id");
    let channel_id = snowflake_at(&mut errors, "channel_id");
    if reference.get("message_id").is_none_or(Value::is_null) {
        push_error(
            &mut errors,
            &["message_reference", "message_id"],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        );
    }
    let fail = match reference.get("fail_if_not_exists") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(fail)) => *fail,
        Some(_) => {
            push_error(
                &mut errors,
                &["message_reference", "fail_if_not_exists"],
                "BASE_TYPE_BOOLEAN",
                "Must be either true or false.",
            );
            true
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let found = message_id.filter(|id| {
        channel_id.is_none_or(|c| c == channel)
            && messages.get(id).is_some_and(|(c, _)| *c == channel)
    });
    if found.is_some() || !fail {
        return Ok(found);
    }
    push_error(
        &mut errors,
        &["message_reference"],
        "REPLIES_UNKNOWN_MESSAGE",
        "Unknown message",
    );
    Err(errors)
}

fn is_empty_message(body: &Map<String, Value>) -> bool {
    let content = body
        .get("content")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    let non_empty_array = |key: &str| {
        body.get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    !(content
        || non_empty_array("embeds")
        || non_empty_array("components")
        || non_empty_array("sticker_ids")
        || non_empty_array("attachments")
        || body.get("poll").is_some_and(|p| !p.is_null()))
}

/// Adds `{code, message}` under `path` in Discord's nested error map
/// (`{"embeds": {"0": {"title": {"_errors": [...]}}}}`); an empty path is the top level.
fn push_error(errors: &mut Map<String, Value>, path: &[&str], code: &str, message: &str) {
    let mut node = errors;
    for segment in path {
        let entry = node
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        node = match entry.as_object_mut() {
            Some(map) => map,
            None => return,
        };
    }
    let list = node
        .entry("_errors")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = list.as_array_mut() {
        list.push(json!({"code": code, "message": message}));
    }
}

fn check_len(
    errors: &mut Map<String, Value>,
    path: &[&str],
    value: Option<&Value>,
    max: usize,
) -> usize {
    match value {
        None | Some(Value::Null) => 0,
        Some(Value::String(text)) => {
            let len = text.chars().count();
            if len > max {
                push_error(
                    errors,
                    path,
                    "BASE_TYPE_MAX_LENGTH",
                    &format!("Must be {max} or fewer in length."),
                );
            }
            len
        }
        Some(other) => {
            push_error(
                errors,
                path,
                "BASE_TYPE_STRING",
                &format!("Could not interpret \"{other}\" as string."),
            );
            0
        }
    }
}

fn check_url(errors: &mut Map<String, Value>, path: &[&str], value: Option<&Value>) {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return;
    };
    let ok = value
        .as_str()
        .and_then(|u| reqwest::Url::parse(u).ok())
        .is_some_and(|u| matches!(u.scheme(), "http" | "https" | "attachment"));
    if !ok {
        push_error(
            errors,
            path,
            "URL_TYPE_INVALID_URL",
            "Not a well formed URL.",
        );
    }
}

fn check_array<'a>(
    errors: &mut Map<String, Value>,
    path: &[&str],
    value: Option<&'a Value>,
    max: usize,
) -> &'a [Value] {
    match value {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => {
            if items.len() > max {
                push_error(
                    errors,
                    path,
                    "BASE_TYPE_MAX_LENGTH",
                    &format!("Must be {max} or fewer in length."),
                );
            }
            items
        }
        Some(_) => {
            push_error(errors, path, "BASE_TYPE_ARRAY", "Must be an array.");
            &[]
        }
    }
}

/// Field checks shared by create and edit; returns Discord's nested error map.
fn validate(body: &Map<String, Value>) -> Map<String, Value> {
    let mut errors = Map::new();
    check_len(&mut errors, &["content"], body.get("content"), 2000);

    let embeds = check_array(&mut errors, &["embeds"], body.get("embeds"), 10);
    let mut embed_chars = 0;
    for (i, embed) in embeds.iter().enumerate() {
        let i = i.to_string();
        let at = |field: &'static str| [String::from("embeds"), i.clone(), field.to_owned()];
        let Some(embed) = embed.as_object() else {
            push_error(
                &mut errors,
                &["embeds", &i],
                "MODEL_TYPE_CONVERT",
                "Only dictionaries may be used in a ModelType",
            );
            continue;
        };
        let p = at("title");
        embed_chars += check_len(&mut errors, &as_refs(&p), embed.get("title"), 256);
        let p = at("description");
        embed_chars += check_len(&mut errors, &as_refs(&p), embed.get("description"), 4096);
        check_url(&mut errors, &as_refs(&at("url")), embed.get("url"));
        for media in ["thumbnail", "image"] {
            if let Some(object) = embed.get(media).filter(|v| !v.is_null()) {
                let p = [
                    String::from("embeds"),
                    i.clone(),
                    media.to_owned(),
                    "url".to_owned(),
                ];
                if object.get("url").is_none() {
                    push_error(
                        &mut errors,
                        &as_refs(&p),
                        "BASE_TYPE_REQUIRED",
                        "This field is required",
                    );
                } else {
                    check_url(&mut errors, &as_refs(&p), object.get("url"));
                }
            }
        }
        if let Some(footer) = embed.get("footer") {
            let p = [
                String::from("embeds"),
                i.clone(),
                "footer".into(),
                "text".into(),
            ];
            embed_chars += check_len(&mut errors, &as_refs(&p), footer.get("text"), 2048);
        }
        if let Some(author) = embed.get("author") {
            let p = [
                String::from("embeds"),
                i.clone(),
                "author".into(),
                "name".into(),
            ];
            embed_chars += check_len(&mut errors, &as_refs(&p), author.get("name"), 256);
        }
        let p = at("fields");
        let fields = check_array(&mut errors, &as_refs(&p), embed.get("fields"), 25);
        for (j, field) in fields.iter().enumerate() {
            let j = j.to_string();
            for (key, max) in [("name", 256), ("value", 1024)] {
                let p = [
                    String::from("embeds"),
                    i.clone(),
                    "fields".into(),
                    j.clone(),
                    key.into(),
                ];
                embed_chars += check_len(&mut errors, &as_refs(&p), field.get(key), max);
            }
        }
    }
    if embed_chars > 6000 {
        push_error(
            &mut errors,
            &["embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
        );
    }

    let rows = check_array(&mut errors, &["components"], body.get("components"), 5);
    for (i, row) in rows.iter().enumerate() {
        let i = i.to_string();
        if row.get("type").and_then(Value::as_u64) != Some(1) {
            push_error(
                &mut errors,
                &["components", &i, "type"],
                "UNION_TYPE_CHOICES",
                "Value of field \"type\" must be one of (1,).",
            );
            continue;
        }
        let path = ["components", &i, "components"];
        let children = check_array(&mut errors, &path, row.get("components"), 5);
        if children.is_empty() {
            push_error(
                &mut errors,
                &path,
                "BASE_TYPE_MIN_LENGTH",
                "Must be 1 or more in length.",
            );
        }
        let selects = children
            .iter()
            .filter(|c| c.get("type").and_then(Value::as_u64) == Some(3))
            .count();
        if selects > 0 && children.len() > 1 {
            // A select menu is as wide as its row.
            push_error(
                &mut errors,
                &path,
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            );
        }
        for (j, button) in children.iter().enumerate() {
            let j = j.to_string();
            let at = |field: &'static str| ["components", &i, "components", &j, field];
            if button.get("type").and_then(Value::as_u64) == Some(3) {
                check_select(&mut errors, &["components", &i, "components", &j], button);
                continue;
            }
            if button.get("type").and_then(Value::as_u64) != Some(2) {
                push_error(
                    &mut errors,
                    &at("type"),
                    "UNION_TYPE_CHOICES",
                    "Value of field \"type\" must be one of (2, 3).",
                );
                continue;
            }
            check_len(&mut errors, &at("label"), button.get("label"), 80);
            let style = button.get("style").and_then(Value::as_u64).unwrap_or(0);
            let has = |key: &str| button.get(key).is_some_and(|v| !v.is_null());
            match style {
                5 => {
                    if !has("url") {
                        push_error(
                            &mut errors,
                            &at("url"),
                            "BUTTON_COMPONENT_URL_REQUIRED",
                            "A url is required",
                        );
                    }
                    check_url(&mut errors, &at("url"), button.get("url"));
                    if has("custom_id") {
                        push_error(
                            &mut errors,
                            &at("custom_id"),
                            "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                            "A custom id cannot be specified",
                        );
                    }
                }
                1..=4 => {
                    if !has("custom_id") {
                        push_error(
                            &mut errors,
                            &at("custom_id"),
                            "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
                            "A custom id is required",
                        );
                    }
                    check_len(&mut errors, &at("custom_id"), button.get("custom_id"), 100);
                }
                _ => push_error(
                    &mut errors,
                    &at("style"),
                    "ENUM_TYPE_COERCE",
                    &format!("Value \"{style}\" is not a valid enum value."),
                ),
            }
        }
    }

    if let Some(mentions) = body.get("allowed_mentions").filter(|v| !v.is_null()) {
        match mentions.get("parse") {
            None | Some(Value::Null) => {}
            Some(Value::Array(kinds)) => {
                for (i, kind) in kinds.iter().enumerate() {
                    let ok = kind
                        .as_str()
                        .is_some_and(|k| matches!(k, "users" | "roles" | "everyone"));
                    if !ok {
                        push_error(
                            &mut errors,
                            &["allowed_mentions", "parse", &i.to_string()],
                            "ENUM_TYPE_COERCE",
                            &format!("Value \"{kind}\" is not a valid enum value."),
                        );
                    }
                }
            }
            Some(_) => push_error(
                &mut errors,
                &["allowed_mentions", "parse"],
                "BASE_TYPE_ARRAY",
                "Must be an array.",
            ),
        }
    }
    errors
}

/// Checks a string select menu at `path`.
fn check_select(errors: &mut Map<String, Value>, path: &[&str], select: &Value) {
    let at = |field: &'static str| {
        let mut full = path.to_vec();
        full.push(field);
        full
    };
    let has = |key: &str| select.get(key).is_some_and(|v| !v.is_null());
    if !has("custom_id") {
        push_error(
            errors,
            &at("custom_id"),
            "BASE_TYPE_REQUIRED",
            "This field is required",
        );
    }
    check_len(errors, &at("custom_id"), select.get("custom_id"), 100);
    check_len(errors, &at("placeholder"), select.get("placeholder"), 150);
    let options = check_array(errors, &at("options"), select.get("options"), 25);
    if options.is_empty() {
        push_error(
            errors,
            &at("options"),
            "BASE_TYPE_MIN_LENGTH",
            "Must be 1 or more in length.",
        );
    }
    let mut defaults = 0;
    for (k, option) in options.iter().enumerate() {
        let k = k.to_string();
        let mut option_path = at("options");
        option_path.push(&k);
        for key in ["label", "value"] {
            let mut field = option_path.clone();
            field.push(key);
            if option.get(key).is_none_or(Value::is_null) {
                push_error(
                    errors,
                    &field,
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
            }
            check_len(errors, &field, option.get(key), 100);
        }
        let mut field = option_path.clone();
        field.push("description");
        check_len(errors, &field, option.get("description"), 100);
        if option.get("default").and_then(Value::as_bool) == Some(true) {
            defaults += 1;
        }
    }
    let count =
        |key: &str, default: u64| select.get(key).and_then(Value::as_u64).unwrap_or(default);
    let (min, max) = (count("min_values", 1), count("max_values", 1));
    if min > 25 {
        push_error(
            errors,
            &at("min_values"),
            "NUMBER_TYPE_MAX",
            "int value should be less than or equal to 25.",
        );
    }
    if !(1..=25).contains(&max) {
        push_error(
            errors,
            &at("max_values"),
            "NUMBER_TYPE_MAX",
            "int value should be between 1 and 25.",
        );
    }
    if min > max {
        push_error(
            errors,
            &at("min_values"),
            "SELECT_COMPONENT_MIN_VALUES_TOO_LARGE",
            "min_values must be less than or equal to max_values",
        );
    }
    if !options.is_empty() && max as usize > options.len() {
        push_error(
            errors,
            &at("max_values"),
            "SELECT_COMPONENT_MAX_VALUES_TOO_LARGE",
            "max_values must be less than or equal to the number of options",
        );
    }
    if defaults > max {
        push_error(
            errors,
            &at("options"),
            "SELECT_COMPONENT_TOO_MANY_DEFAULT_VALUES",
            "More default values than max_values",
        );
    }
}

/// Discord's errors for `message`, a message body (content, embeds, components,
/// allowed mentions), as the `errors` map of a 50035 answer; `None` when Discord would
/// accept it. For checking the messages a bot answers interactions with, which reach
/// the test rather than this server.
pub fn message_errors(message: &Value) -> Option<Value> {
    let Some(body) = message.as_object() else {
        let mut errors = Map::new();
        push_error(
            &mut errors,
            &[],
            "MODEL_TYPE_CONVERT",
            "Only dictionaries may be used in a ModelType",
        );
        return Some(Value::Object(errors));
    };
    let errors = validate(body);
    (!errors.is_empty()).then_some(Value::Object(errors))
}

/// Whether `name` is a command or option name Discord accepts: 1–32 characters, each a
/// letter, a digit, `-` or `_`, and no capitals.
fn valid_command_name(name: &str) -> bool {
    let count = name.chars().count();
    (1..=32).contains(&count)
        && name
            .chars()
            .all(|c| (c.is_alphanumeric() || c == '-' || c == '_') && !c.is_uppercase())
}

/// Checks `name` and `description` (and their localizations) of a command or option at
/// `path`; `described`: whether a description is required (CHAT_INPUT commands and
/// every option).
fn check_naming(errors: &mut Map<String, Value>, path: &[&str], item: &Value, described: bool) {
    let at = |field: &str| {
        let mut full: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        full.push(field.to_owned());
        full
    };
    match item.get("name") {
        None | Some(Value::Null) => push_error(
            errors,
            &refs(&at("name")),
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ),
        Some(Value::String(name)) if !valid_command_name(name) => push_error(
            errors,
            &refs(&at("name")),
            "APPLICATION_COMMAND_INVALID_NAME",
            "Command name is invalid",
        ),
        Some(Value::String(_)) => {}
        Some(other) => push_error(
            errors,
            &refs(&at("name")),
            "BASE_TYPE_STRING",
            &format!("Could not interpret \"{other}\" as string."),
        ),
    }
    if described {
        match item.get("description") {
            None | Some(Value::Null) => push_error(
                errors,
                &refs(&at("description")),
                "BASE_TYPE_REQUIRED",
                "This field is required",
            ),
            Some(Value::String(text)) if !(1..=100).contains(&text.chars().count()) => push_error(
                errors,
                &refs(&at("description")),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            ),
            Some(Value::String(_)) => {}
            Some(other) => push_error(
                errors,
                &refs(&at("description")),
                "BASE_TYPE_STRING",
                &format!("Could not interpret \"{other}\" as string."),
            ),
        }
    }
    for (key, max) in [
        ("name_localizations", 32),
        ("description_localizations", 100),
    ] {
        let Some(map) = item.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(map) = map.as_object() else {
            push_error(
                errors,
                &refs(&at(key)),
                "DICT_TYPE_CONVERT",
                "Only dictionaries may be used in a DictType",
            );
            continue;
        };
        for (locale, text) in map {
            let mut full = at(key);
            full.push(locale.clone());
            if !LOCALES.contains(&locale.as_str()) {
                push_error(
                    errors,
                    &refs(&full),
                    "BASE_TYPE_CHOICES",
                    &format!("Value must be one of {LOCALES:?}."),
                );
                continue;
            }
            let ok = text
                .as_str()
                .is_some_and(|t| (1..=max).contains(&t.chars().count()));
            if !ok {
                push_error(
                    errors,
                    &refs(&full),
                    "BASE_TYPE_BAD_LENGTH",
                    &format!("Must be between 1 and {max} in length."),
                );
            }
        }
    }
}

/// Checks the options of a command or option at `path` (`options` under it).
fn check_options(errors: &mut Map<String, Value>, path: &[&str], item: &Value) {
    let mut options_path = path.to_vec();
    options_path.push("options");
    let options = check_array(errors, &options_path, item.get("options"), 25);
    let mut optional_seen = false;
    for (i, option) in options.iter().enumerate() {
        let i = i.to_string();
        let mut at = options_path.clone();
        at.push(&i);
        if !option.is_object() {
            push_error(
                errors,
                &at,
                "MODEL_TYPE_CONVERT",
                "Only dictionaries may be used in a ModelType",
            );
            continue;
        }
        let field = |name: &'static str| {
            let mut full = at.clone();
            full.push(name);
            full
        };
        let kind = option.get("type").and_then(Value::as_u64);
        if !kind.is_some_and(|k| (1..=11).contains(&k)) {
            push_error(
                errors,
                &field("type"),
                "ENUM_TYPE_COERCE",
                &format!(
                    "Value \"{}\" is not a valid enum value.",
                    option.get("type").unwrap_or(&Value::Null)
                ),
            );
        }
        check_naming(errors, &at, option, true);
        let required = option.get("required").and_then(Value::as_bool) == Some(true);
        if required && optional_seen {
            push_error(
                errors,
                &field("required"),
                "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                "Required options must be placed before non-required options",
            );
        }
        optional_seen |= !required;
        let choices = check_array(errors, &field("choices"), option.get("choices"), 25);
        if !choices.is_empty() && option.get("autocomplete").and_then(Value::as_bool) == Some(true)
        {
            push_error(
                errors,
                &field("autocomplete"),
                "APPLICATION_COMMAND_AUTOCOMPLETE_REQUIRES_NO_CHOICES",
                "Autocomplete cannot be set for options with choices",
            );
        }
        for (j, choice) in choices.iter().enumerate() {
            let j = j.to_string();
            let mut choice_path = field("choices");
            choice_path.push(&j);
            let mut name = choice_path.clone();
            name.push("name");
            let ok = choice
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| (1..=100).contains(&n.chars().count()));
            if !ok {
                push_error(
                    errors,
                    &name,
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                );
            }
            let mut value = choice_path.clone();
            value.push("value");
            match choice.get("value") {
                Some(Value::String(text)) if text.chars().count() <= 100 => {}
                Some(Value::Number(_)) => {}
                _ => push_error(
                    errors,
                    &value,
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                ),
            }
        }
        if matches!(kind, Some(1 | 2)) {
            check_options(errors, &at, option);
        }
    }
}

/// Checks a bulk overwrite of commands; Discord's nested error map.
fn validate_commands(commands: &[Value]) -> Map<String, Value> {
    let mut errors = Map::new();
    if commands.len() > 100 {
        push_error(
            &mut errors,
            &[],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 100 or fewer in length.",
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, command) in commands.iter().enumerate() {
        let i = i.to_string();
        if !command.is_object() {
            push_error(
                &mut errors,
                &[&i],
                "MODEL_TYPE_CONVERT",
                "Only dictionaries may be used in a ModelType",
            );
            continue;
        }
        let kind = match command.get("type") {
            None | Some(Value::Null) => 1,
            Some(value) => match value.as_u64().filter(|k| (1..=4).contains(k)) {
                Some(kind) => kind,
                None => {
                    push_error(
                        &mut errors,
                        &[&i, "type"],
                        "ENUM_TYPE_COERCE",
                        &format!("Value \"{value}\" is not a valid enum value."),
                    );
                    continue;
                }
            },
        };
        check_naming(&mut errors, &[&i], command, kind == 1);
        check_options(&mut errors, &[&i], command);
        if let Some(name) = command.get("name").and_then(Value::as_str) {
            if !seen.insert((kind, name.to_owned())) {
                push_error(
                    &mut errors,
                    &[&i, "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                );
            }
        }
    }
    errors
}

/// The bucket's major parameter for an interaction token.
fn token_key(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// Applies the fields of an edit `body` to a stored Message object.
fn apply_edit(message: &mut Value, body: &Map<String, Value>) {
    for key in ["content", "embeds", "components"] {
        if let Some(value) = body.get(key) {
            message[key] = match (key, value) {
                ("content", Value::Null) => json!(""),
                (_, Value::Null) => json!([]),
                ("embeds", embeds) => rich_embeds(embeds),
                (_, value) => value.clone(),
            };
        }
    }
    message["edited_timestamp"] = json!(discord_timestamp());
}

async fn overwrite_commands(
    State(shared): State<Arc<Shared>>,
    Path(application_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let mut inner = lock(&shared.inner);
    inner.requests += 1;
    if let Some(refused) = unauthorized(&shared, &mut inner, &headers) {
        return refused;
    }
    if let Some(failed) = outage(&inner) {
        return failed;
    }
    let Ok(application) = application_id.parse::<u64>() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            not_snowflake("application_id", &application_id),
            &[],
        );
    };
    let rate_headers = match admit(&mut inner, COMMANDS_ROUTE, application, true, now) {
        Ok(headers) => headers,
        Err(refused) => return *refused,
    };
    let commands = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(commands)) => commands,
        Ok(_) => {
            let mut errors = Map::new();
            push_error(&mut errors, &[], "BASE_TYPE_ARRAY", "Must be an array.");
            return json_response(StatusCode::BAD_REQUEST, invalid_form(errors), &rate_headers);
        }
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 50109, "message": "The request body contains invalid JSON."}),
                &rate_headers,
            )
        }
    };
    let errors = validate_commands(&commands);
    if !errors.is_empty() {
        return json_response(StatusCode::BAD_REQUEST, invalid_form(errors), &rate_headers);
    }
    let Inner {
        next_seq,
        command_ids,
        ..
    } = &mut *inner;
    *next_seq += 1;
    let version = snowflake(*next_seq);
    let stored: Vec<Value> = commands
        .iter()
        .map(|command| {
            let kind = command.get("type").and_then(Value::as_u64).unwrap_or(1);
            let name = command
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let id = *command_ids
                .entry((application, kind, name.clone()))
                .or_insert_with(|| {
                    *next_seq += 1;
                    snowflake(*next_seq)
                });
            let given = |key: &str, default: Value| {
                command
                    .get(key)
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or(default)
            };
            let mut stored = json!({
                "id": id.to_string(),
                "application_id": application.to_string(),
                "version": version.to_string(),
                "default_member_permissions": given("default_member_permissions", Value::Null),
                "type": kind,
                "name": name,
                "name_localizations": given("name_localizations", Value::Null),
                "description": given("description", json!("")),
                "description_localizations": given("description_localizations", Value::Null),
                "dm_permission": given("dm_permission", json!(true)),
                "contexts": given("contexts", Value::Null),
                "integration_types": given("integration_types", json!([0])),
                "nsfw": given("nsfw", json!(false)),
            });
            if let Some(options) = command.get("options").filter(|o| !o.is_null()) {
                stored["options"] = options.clone();
            }
            stored
        })
        .collect();
    inner.commands.insert(application, stored.clone());
    inner.overwrites.push(CommandOverwrite {
        application_id: application,
        body: Value::Array(commands),
        at: now,
    });
    drop(inner);
    shared.changes.send_modify(|n| *n += 1);
    json_response(StatusCode::OK, Value::Array(stored), &rate_headers)
}

async fn edit_original(
    State(shared): State<Arc<Shared>>,
    Path((application_id, token)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let mut inner = lock(&shared.inner);
    inner.requests += 1;
    if let Some(failed) = outage(&inner) {
        return failed;
    }
    let Ok(application) = application_id.parse::<u64>() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            not_snowflake("webhook_id", &application_id),
            &[],
        );
    };
    let known = inner.interactions.get(&token).is_some_and(|opened| {
        opened.application_id == application
            && now.duration_since(opened.opened) < INTERACTION_TOKEN_LIFETIME
    });
    if !known {
        return json_response(
            StatusCode::NOT_FOUND,
            api_error(10015, "Unknown Webhook"),
            &[],
        );
    }
    // Interaction webhooks are not bound to the global limit; their bucket is the token's.
    let rate_headers = match admit(&mut inner, ORIGINAL_ROUTE, token_key(&token), false, now) {
        Ok(headers) => headers,
        Err(refused) => return *refused,
    };
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(body)) => body,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 50109, "message": "The request body contains invalid JSON."}),
                &rate_headers,
            )
        }
    };
    let errors = validate(&body);
    if !errors.is_empty() {
        return json_response(StatusCode::BAD_REQUEST, invalid_form(errors), &rate_headers);
    }
    inner.next_seq += 1;
    let fresh_id = snowflake(inner.next_seq);
    let Some(opened) = inner.interactions.get_mut(&token) else {
        return json_response(
            StatusCode::NOT_FOUND,
            api_error(10015, "Unknown Webhook"),
            &[],
        );
    };
    let channel = opened.channel_id;
    let message = opened.message.get_or_insert_with(|| {
        let mut message = message_json(fresh_id, channel, &Map::new());
        message["application_id"] = json!(application.to_string());
        message
    });
    apply_edit(message, &body);
    let answer = message.clone();
    inner.original_edits.push(OriginalEdit {
        application_id: application,
        token,
        channel_id: channel,
        body: Value::Object(body),
        at: now,
    });
    drop(inner);
    shared.changes.send_modify(|n| *n += 1);
    json_response(StatusCode::OK, answer, &rate_headers)
}

/// A path of owned segments as the `&str` segments [`push_error`] takes.
fn refs(path: &[String]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

fn as_refs<const N: usize>(path: &[String; N]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------
// The interactions side: Discord calling the bot.

/// How [`InteractionSigner::post_with`] signs a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// As Discord does, timestamped now.
    Valid,
    /// A well-formed signature by another key.
    BadSignature,
    /// A valid signature over a body other than the one sent.
    TamperedBody,
    /// No signature headers at all.
    Missing,
    /// Correctly signed, but timestamped this long ago.
    StaleBy(Duration),
}

/// Plays Discord towards the bot's interactions endpoint: an Ed25519 key pair whose public
/// half the bot is configured with, and a client that POSTs signed interactions.
pub struct InteractionSigner {
    key: SigningKey,
    http: reqwest::Client,
}

impl Default for InteractionSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl InteractionSigner {
    /// A fresh random key pair.
    pub fn new() -> Self {
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self::from_seed(seed)
    }

    /// The key pair of a fixed 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
            http: reqwest::Client::new(),
        }
    }

    /// The public key in hex, as the Developer Portal shows it (`discord.public_key`).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Hex of the signature over `timestamp` bytes followed by `body` bytes.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mut message = Vec::with_capacity(timestamp.len() + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(body);
        hex::encode(self.key.sign(&message).to_bytes())
    }

    /// POSTs `interaction` to `url`, signed as Discord signs it.
    pub async fn post(&self, url: &str, interaction: &Value) -> reqwest::Response {
        self.post_with(url, interaction, Signing::Valid).await
    }

    /// POSTs `interaction` to `url`, signed as `signing` says.
    pub async fn post_with(
        &self,
        url: &str,
        interaction: &Value,
        signing: Signing,
    ) -> reqwest::Response {
        let body = serde_json::to_vec(interaction).expect("a JSON value serializes");
        let now = chrono::Utc::now().timestamp();
        let timestamp = match signing {
            Signing::StaleBy(age) => (now - age.as_secs() as i64).to_string(),
            _ => now.to_string(),
        };
        let signature = match signing {
            Signing::Valid | Signing::StaleBy(_) => Some(self.sign(&timestamp, &body)),
            Signing::BadSignature => Some(InteractionSigner::new().sign(&timestamp, &body)),
            Signing::TamperedBody => Some(self.sign(&timestamp, b"{\"type\":1}")),
            Signing::Missing => None,
        };
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request
                .header("x-signature-ed25519", signature)
                .header("x-signature-timestamp", timestamp);
        }
        request
            .send()
            .await
            .expect("interaction POST reaches the bot")
    }
}

/// Who invokes an interaction, and where.
#[derive(Debug, Clone)]
pub struct Invoker {
    /// The user's id.
    pub user_id: u64,
    /// The user's username.
    pub username: String,
    /// The server (guild), or `None` in a direct message with the bot.
    pub guild_id: Option<u64>,
    /// The channel.
    pub channel_id: u64,
    /// The member's permissions in the channel (a bitfield; Discord sends it as a string).
    pub permissions: u64,
    /// The user's client language (`en-US`, `ja`, …).
    pub locale: String,
    /// The server's language (`guild_locale`; `en-US` unless a community server set
    /// another).
    pub guild_locale: String,
    /// The member's role ids.
    pub roles: Vec<u64>,
}

impl Invoker {
    /// Discord's `ADMINISTRATOR` permission bit.
    pub const ADMINISTRATOR: u64 = 1 << 3;
    /// Discord's `MANAGE_CHANNELS` permission bit.
    pub const MANAGE_CHANNELS: u64 = 1 << 4;
    /// Discord's `MANAGE_GUILD` permission bit.
    pub const MANAGE_GUILD: u64 = 1 << 5;
    /// Discord's `SEND_MESSAGES` permission bit.
    pub const SEND_MESSAGES: u64 = 1 << 11;

    /// A member of `guild` without special permissions, in `channel`.
    pub fn member(guild: u64, channel: u64, user: u64) -> Self {
        Self {
            user_id: user,
            username: format!("viewer{user}"),
            guild_id: Some(guild),
            channel_id: channel,
            permissions: Self::SEND_MESSAGES,
            locale: "en-US".into(),
            guild_locale: "en-US".into(),
            roles: Vec::new(),
        }
    }

    /// This invoker with role `role` too.
    pub fn with_role(mut self, role: u64) -> Self {
        self.roles.push(role);
        self
    }

    /// An administrator of `guild`, in `channel`.
    pub fn admin(guild: u64, channel: u64, user: u64) -> Self {
        Self {
            permissions: Self::ADMINISTRATOR | Self::MANAGE_GUILD | Self::SEND_MESSAGES,
            ..Self::member(guild, channel, user)
        }
    }

    /// A user in a direct message with the bot.
    pub fn direct(channel: u64, user: u64) -> Self {
        Self {
            guild_id: None,
            ..Self::member(0, channel, user)
        }
    }

    fn user_json(&self) -> Value {
        json!({
            "id": self.user_id.to_string(),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username,
            "avatar": null,
            "public_flags": 0,
        })
    }
}

/// Largest upload allowed in the interaction's context (Discord sends it with every
/// interaction; 10 MiB for a server without boosts).
const ATTACHMENT_SIZE_LIMIT: u64 = 10 * 1024 * 1024;

fn interaction_id() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    snowflake(SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).to_string()
}

/// The frame every interaction from a person shares: ids, token, who and where.
fn interaction(kind: u8, invoker: &Invoker, data: Value) -> Value {
    let mut value = json!({
        "id": interaction_id(),
        "application_id": BOT_USER_ID.to_string(),
        "type": kind,
        "data": data,
        "channel_id": invoker.channel_id.to_string(),
        "token": format!("interaction-token-{}", uuid::Uuid::new_v4().simple()),
        "version": 1,
        "locale": invoker.locale,
        "app_permissions": "2248473465835073",
        "entitlements": [],
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    });
    match invoker.guild_id {
        Some(guild) => {
            value["guild_id"] = json!(guild.to_string());
            value["guild_locale"] = json!(invoker.guild_locale);
            value["context"] = json!(0);
            value["authorizing_integration_owners"] = json!({"0": guild.to_string()});
            value["channel"] = json!({"id": invoker.channel_id.to_string(), "type": 0, "guild_id": guild.to_string(), "name": "streams"});
            value["member"] = json!({
                "user": invoker.user_json(),
                "permissions": invoker.permissions.to_string(),
                "roles": invoker.roles.iter().map(u64::to_string).collect::<Vec<_>>(),
                "joined_at": "2024-01-01T00:00:00.000000+00:00",
                "deaf": false,
                "mute": false,
                "nick": null,
                "flags": 0,
            });
        }
        None => {
            value["context"] = json!(1);
            value["authorizing_integration_owners"] = json!({"1": invoker.user_id.to_string()});
            value["channel"] = json!({"id": invoker.channel_id.to_string(), "type": 1});
            value["user"] = invoker.user_json();
        }
    }
    value
}

/// A PING (type 1), which Discord sends to check the endpoint.
pub fn ping() -> Value {
    json!({
        "id": interaction_id(),
        "application_id": BOT_USER_ID.to_string(),
        "type": 1,
        "token": format!("interaction-token-{}", uuid::Uuid::new_v4().simple()),
        "version": 1,
        "entitlements": [],
        "authorizing_integration_owners": {},
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    })
}

fn command_data(invoker: &Invoker, name: &str, options: Value) -> Value {
    let mut data = json!({
        "id": "1190000000000000100",
        "name": name,
        "type": 1,
        "options": options,
    });
    if let Some(guild) = invoker.guild_id {
        data["guild_id"] = json!(guild.to_string());
    }
    data
}

/// An APPLICATION_COMMAND (type 2): the slash command `name` with `options` (an array of
/// `{"name", "type", "value"}`).
pub fn application_command(invoker: &Invoker, name: &str, options: Value) -> Value {
    interaction(2, invoker, command_data(invoker, name, options))
}

/// An APPLICATION_COMMAND_AUTOCOMPLETE (type 4): `options` holds the partial input, the
/// focused option marked `"focused": true`.
pub fn autocomplete(invoker: &Invoker, name: &str, options: Value) -> Value {
    interaction(4, invoker, command_data(invoker, name, options))
}

/// A MESSAGE_COMPONENT (type 3): a press on the button `custom_id` of the bot's message
/// `message_id`.
pub fn message_component(invoker: &Invoker, custom_id: &str, message_id: u64) -> Value {
    let mut value = interaction(
        3,
        invoker,
        json!({"custom_id": custom_id, "component_type": 2}),
    );
    let body = Map::new();
    let mut message = message_json(message_id, invoker.channel_id, &body);
    message["content"] = json!("…");
    value["message"] = message;
    value
}

/// A MESSAGE_COMPONENT (type 3) from a string select menu: `values` chosen in the menu
/// `custom_id` of the bot's message `message_id`.
pub fn string_select(
    invoker: &Invoker,
    custom_id: &str,
    values: &[&str],
    message_id: u64,
) -> Value {
    let mut value = message_component(invoker, custom_id, message_id);
    value["data"] = json!({"custom_id": custom_id, "component_type": 3, "values": values});
    value
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    use super::*;

    async fn server() -> DiscordServer {
        DiscordServer::start("test-token").await.unwrap()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    async fn post(server: &DiscordServer, channel: u64, body: Value) -> reqwest::Response {
        client()
            .post(format!(
                "{}/api/v10/channels/{channel}/messages",
                server.url
            ))
            .header("authorization", format!("Bot {}", server.token))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The answer to a POST of `body` to `channel` that Discord accepts.
    async fn created(server: &DiscordServer, channel: u64, body: Value) -> Value {
        let response = post(server, channel, body).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Checks that `response` is Discord's answer for a message that is not there.
    async fn assert_unknown_message(response: reqwest::Response) {
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"message": "Unknown Message", "code": 10008}));
    }

    fn header(response: &reqwest::Response, name: &str) -> String {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_bucket_counts_down_per_channel_and_refuses_the_sixth() {
        let server = server().await;
        let mut buckets = Vec::new();
        for i in 0..5 {
            let response = post(&server, 11, json!({"content": format!("m{i}")})).await;
            assert_eq!(response.status(), 200);
            assert_eq!(header(&response, "x-ratelimit-limit"), "5");
            assert_eq!(
                header(&response, "x-ratelimit-remaining"),
                (4 - i).to_string()
            );
            let after: f64 = header(&response, "x-ratelimit-reset-after")
                .parse()
                .unwrap();
            assert!(after > 0.0 && after <= 5.0, "{after}");
            let reset: f64 = header(&response, "x-ratelimit-reset").parse().unwrap();
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            assert!((reset - now.as_secs_f64() - after).abs() < 0.5);
            buckets.push(header(&response, "x-ratelimit-bucket"));
        }
        assert!(buckets.iter().all(|b| b == &buckets[0] && !b.is_empty()));

        let refused = post(&server, 11, json!({"content": "m5"})).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(header(&refused, "x-ratelimit-scope"), "user");
        assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
        assert!(refused.headers().get("x-ratelimit-global").is_none());
        assert!(!header(&refused, "retry-after").is_empty());
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["global"], false);
        assert_eq!(body["message"], "You are being rate limited.");
        assert!(body["retry_after"].as_f64().unwrap() > 0.0);

        // Another channel has a bucket of its own.
        let other = post(&server, 12, json!({"content": "x"})).await;
        assert_eq!(other.status(), 200);
        assert_eq!(header(&other, "x-ratelimit-remaining"), "4");
        assert_eq!(header(&other, "x-ratelimit-bucket"), buckets[0]);
        assert_eq!(server.bucket_too_many(), 1);
        assert_eq!(server.too_many(), 1);
        assert_eq!(server.sent_count(), 6);

        // Edits are another route shape, so another bucket.
        let id = server.sent_to(12)[0].id;
        let edited = client()
            .patch(format!("{}/api/v10/channels/12/messages/{id}", server.url))
            .header("authorization", "Bot test-token")
            .json(&json!({"content": "y"}))
            .send()
            .await
            .unwrap();
        assert_eq!(edited.status(), 200);
        assert_ne!(header(&edited, "x-ratelimit-bucket"), buckets[0]);
        assert_eq!(server.edited_count(), 1);
        assert_eq!(server.message(id).unwrap()["content"], "y");
    }

    #[tokio::test]
    async fn a_bucket_opens_again_after_its_window() {
        let server = server().await;
        server.set_limits(Limits {
            bucket_limit: 1,
            bucket_window: Duration::from_millis(300),
            ..Limits::discord()
        });
        assert_eq!(
            post(&server, 1, json!({"content": "a"})).await.status(),
            200
        );
        assert_eq!(
            post(&server, 1, json!({"content": "b"})).await.status(),
            429
        );
        tokio::time::sleep(Duration::from_millis(320)).await;
        assert_eq!(
            post(&server, 1, json!({"content": "c"})).await.status(),
            200
        );
    }

    #[tokio::test]
    async fn over_the_global_limit_is_a_global_429() {
        let server = server().await;
        server.set_limits(Limits {
            global_limit: 3,
            ..Limits::lenient()
        });
        for channel in 1..=3 {
            assert_eq!(
                post(&server, channel, json!({"content": "a"}))
                    .await
                    .status(),
                200
            );
        }
        let refused = post(&server, 4, json!({"content": "a"})).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(header(&refused, "x-ratelimit-global"), "true");
        assert_eq!(header(&refused, "x-ratelimit-scope"), "global");
        assert_eq!(header(&refused, "retry-after"), "1");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["global"], true);
        let retry_after = body["retry_after"].as_f64().unwrap();
        assert!(retry_after > 0.0 && retry_after <= 1.0, "{retry_after}");
        assert_eq!(server.global_too_many(), 1);
        assert_eq!(server.sent_count(), 3);
        tokio::time::sleep(Duration::from_secs_f64(retry_after + 0.02)).await;
        assert_eq!(
            post(&server, 4, json!({"content": "a"})).await.status(),
            200
        );
    }

    async fn form_error(server: &DiscordServer, body: Value) -> Value {
        let response = post(server, 7, body).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 50035, "{body}");
        assert_eq!(body["message"], "Invalid Form Body");
        body["errors"].clone()
    }

    #[tokio::test]
    async fn bodies_are_validated_as_discord_does() {
        let server = server().await;
        server.set_limits(Limits::lenient());
        let errors = form_error(&server, json!({"content": "x".repeat(2001)})).await;
        assert_eq!(
            errors["content"]["_errors"][0]["code"],
            "BASE_TYPE_MAX_LENGTH"
        );
        let errors = form_error(&server, json!({"embeds": vec![json!({"title": "t"}); 11]})).await;
        assert_eq!(
            errors["embeds"]["_errors"][0]["message"],
            "Must be 10 or fewer in length."
        );
        let errors = form_error(&server, json!({"embeds": [{"title": "t".repeat(257)}]})).await;
        assert_eq!(
            errors["embeds"]["0"]["title"]["_errors"][0]["code"],
            "BASE_TYPE_MAX_LENGTH"
        );
        let errors = form_error(
            &server,
            json!({"embeds": [{"title": "t", "description": "d".repeat(4097)}]}),
        )
        .await;
        assert!(errors["embeds"]["0"]["description"]["_errors"].is_array());
        let errors = form_error(
            &server,
            json!({"content": "x", "components": [{"type": 1, "components": [{"type": 2, "style": 5, "label": "Watch"}]}]}),
        )
        .await;
        assert!(errors["components"]["0"]["components"]["0"]["url"]["_errors"].is_array());
        let errors = form_error(
            &server,
            json!({"content": "x", "allowed_mentions": {"parse": ["nobody"]}}),
        )
        .await;
        assert!(errors["allowed_mentions"]["parse"]["0"]["_errors"].is_array());

        let empty = post(&server, 7, json!({"content": ""})).await;
        assert_eq!(empty.status(), 400);
        assert_eq!(empty.json::<Value>().await.unwrap()["code"], 50006);
        let broken = client()
            .post(format!("{}/api/v10/channels/7/messages", server.url))
            .header("authorization", "Bot test-token")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(broken.status(), 400);
        assert_eq!(broken.json::<Value>().await.unwrap()["code"], 50109);
        assert_eq!(server.sent_count(), 0);

        // A full, valid message is stored and echoed as a Message object.
        let ok = post(
            &server,
            7,
            json!({
                "content": "live",
                "embeds": [{"title": "Stream", "url": "https://youtu.be/x", "description": "d", "thumbnail": {"url": "https://i.ytimg.com/x.jpg"}}],
                "components": [{"type": 1, "components": [{"type": 2, "style": 5, "label": "Watch", "url": "https://youtu.be/x"}]}],
                "allowed_mentions": {"parse": []},
            }),
        )
        .await;
        assert_eq!(ok.status(), 200);
        let message: Value = ok.json().await.unwrap();
        assert_eq!(message["channel_id"], "7");
        assert_eq!(message["author"]["bot"], true);
        assert_eq!(message["embeds"][0]["type"], "rich");
        assert!(message["id"].as_str().unwrap().parse::<u64>().unwrap() > 0);
        let sent = &server.sent()[0];
        assert_eq!(
            sent.link_buttons(),
            vec![("Watch".to_owned(), "https://youtu.be/x".to_owned())]
        );

        let unknown = client()
            .patch(format!("{}/api/v10/channels/7/messages/123", server.url))
            .header("authorization", "Bot test-token")
            .json(&json!({"content": "x"}))
            .send()
            .await
            .unwrap();
        assert_unknown_message(unknown).await;
    }

    #[tokio::test]
    async fn replies_reference_a_message_of_their_channel() {
        let server = server().await;
        server.set_limits(Limits::lenient());
        let first = created(&server, 7, json!({"content": "first"})).await;
        let first_id: u64 = first["id"].as_str().unwrap().parse().unwrap();
        let reference = |fail: Option<bool>| {
            let mut reference = json!({"message_id": first_id.to_string()});
            if let Some(fail) = fail {
                reference["fail_if_not_exists"] = json!(fail);
            }
            json!({"content": "reply", "message_reference": reference})
        };

        let reply = created(&server, 7, reference(None)).await;
        assert_eq!(reply["type"], 19);
        assert_eq!(
            reply["message_reference"]["message_id"],
            first_id.to_string()
        );
        assert_eq!(reply["referenced_message"]["content"], "first");
        assert_eq!(server.sent_to(7)[1].reply_to, Some(first_id));

        // A message of another channel is not there to reply to.
        let unknown = json!({"message_reference": {"_errors": [
            {"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}
        ]}});
        let elsewhere = post(&server, 8, reference(Some(true))).await;
        assert_eq!(elsewhere.status(), 400);
        let body: Value = elsewhere.json().await.unwrap();
        assert_eq!(body["code"], 50035);
        assert_eq!(body["errors"], unknown);
        let plain = created(&server, 8, reference(Some(false))).await;
        assert_eq!(plain["type"], 0);
        assert!(plain.get("message_reference").is_none());
        assert_eq!(server.sent_to(8)[0].reply_to, None);

        // Deleted: gone for replies and edits alike.
        assert!(server.delete_message(7, first_id));
        assert!(server.message(first_id).is_none());
        assert_eq!(form_error(&server, reference(None)).await, unknown);
        created(&server, 7, reference(Some(false))).await;
        assert_eq!(server.sent_to(7).len(), 3);

        for (bad, errors) in [
            (
                json!("123"),
                json!({"message_reference": {"_errors": [
                    {"code": "MODEL_TYPE_CONVERT", "message": "Expected an object/dictionary."}
                ]}}),
            ),
            (
                json!({"message_id": "x", "fail_if_not_exists": "no"}),
                json!({"message_reference": {
                    "message_id": {"_errors": [
                        {"code": "NUMBER_TYPE_COERCE", "message": "Value \"x\" is not snowflake."}
                    ]},
                    "fail_if_not_exists": {"_errors": [
                        {"code": "BASE_TYPE_BOOLEAN", "message": "Must be either true or false."}
                    ]},
                }}),
            ),
        ] {
            let body = json!({"content": "x", "message_reference": bad});
            assert_eq!(form_error(&server, body).await, errors);
        }
        assert_eq!(server.sent_count(), 4);
    }

    #[tokio::test]
    async fn the_bot_deletes_its_messages_and_cannot_edit_them_after() {
        let server = server().await;
        server.set_limits(Limits::lenient());
        let sent = created(&server, 7, json!({"content": "x"})).await;
        let id = sent["id"].as_str().unwrap().to_owned();
        let url = |channel: u64| format!("{}/api/v10/channels/{channel}/messages/{id}", server.url);
        let delete = |channel: u64, auth: &str| {
            client()
                .delete(url(channel))
                .header("authorization", auth.to_owned())
                .send()
        };

        let refused = delete(7, "Bot wrong").await.unwrap();
        assert_eq!(refused.status(), 401);
        assert_unknown_message(delete(8, "Bot test-token").await.unwrap()).await;
        let deleted = delete(7, "Bot test-token").await.unwrap();
        assert_eq!(deleted.status(), 204);
        assert!(!header(&deleted, "x-ratelimit-bucket").is_empty());
        assert!(deleted.bytes().await.unwrap().is_empty());
        assert_unknown_message(delete(7, "Bot test-token").await.unwrap()).await;

        let edit = client()
            .patch(url(7))
            .header("authorization", "Bot test-token")
            .json(&json!({"content": "y"}))
            .send()
            .await
            .unwrap();
        assert_unknown_message(edit).await;
        assert_eq!(server.edited_count(), 0);
        assert!(!server.delete_message(7, id.parse().unwrap()));
    }

    #[tokio::test]
    async fn requests_need_the_bot_token() {
        let server = server().await;
        for auth in [None, Some("Bot wrong"), Some("test-token")] {
            let mut request = client()
                .post(format!("{}/api/v10/channels/1/messages", server.url))
                .json(&json!({"content": "x"}));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body, json!({"message": "401: Unauthorized", "code": 0}));
        }
        assert_eq!(server.unauthorized(), 3);
        assert_eq!(server.sent_count(), 0);
    }

    #[tokio::test]
    async fn scripted_failures_answer_like_discord() {
        let server = server().await;
        server.set_limits(Limits::lenient());
        server.fail_next(5, Failure::MissingAccess);
        server.fail_next(5, Failure::MissingPermissions);
        let first = post(&server, 5, json!({"content": "x"})).await;
        assert_eq!(first.status(), 403);
        assert!(first.headers().get("x-ratelimit-bucket").is_some());
        assert_eq!(first.json::<Value>().await.unwrap()["code"], 50001);
        let second = post(&server, 5, json!({"content": "x"})).await;
        assert_eq!(second.json::<Value>().await.unwrap()["code"], 50013);
        assert_eq!(
            post(&server, 5, json!({"content": "x"})).await.status(),
            200
        );

        server.set_channel_failure(6, Some(Failure::UnknownChannel));
        for _ in 0..2 {
            let gone = post(&server, 6, json!({"content": "x"})).await;
            assert_eq!(gone.status(), 404);
            let body: Value = gone.json().await.unwrap();
            assert_eq!(body["code"], 10003);
            assert_eq!(body["message"], "Unknown Channel");
        }
        server.set_channel_failure(6, None);
        assert_eq!(
            post(&server, 6, json!({"content": "x"})).await.status(),
            200
        );

        server.fail_next(
            8,
            Failure::RateLimited {
                retry_after: 2.5,
                global: false,
            },
        );
        let limited = post(&server, 8, json!({"content": "x"})).await;
        assert_eq!(limited.status(), 429);
        assert_eq!(header(&limited, "retry-after"), "3");
        assert_eq!(limited.json::<Value>().await.unwrap()["retry_after"], 2.5);
        assert_eq!(server.too_many(), 1);

        server.set_outage(Some(Outage::BadGateway));
        assert_eq!(
            post(&server, 9, json!({"content": "x"})).await.status(),
            502
        );
        server.set_outage(Some(Outage::ServerError));
        assert_eq!(
            post(&server, 9, json!({"content": "x"})).await.status(),
            500
        );
        server.set_outage(None);
        assert_eq!(
            post(&server, 9, json!({"content": "x"})).await.status(),
            200
        );
    }

    async fn put_commands(
        server: &DiscordServer,
        auth: Option<&str>,
        body: Value,
    ) -> reqwest::Response {
        let mut request = client()
            .put(format!(
                "{}/api/v10/applications/{BOT_USER_ID}/commands",
                server.url
            ))
            .json(&body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send().await.unwrap()
    }

    #[tokio::test]
    async fn commands_are_overwritten_in_bulk_as_discord_does() {
        let server = server().await;
        server.set_limits(Limits::lenient());
        let command = |name: &str| {
            json!({
                "name": name, "type": 1, "description": "Subscribe to a streamer.",
                "description_localizations": {"ja": "配信者を購読します。"},
                "contexts": [0],
                "options": [{"type": 3, "name": "entity", "description": "Who", "required": true, "autocomplete": true}],
            })
        };
        let refused = put_commands(&server, None, json!([command("subscribe")])).await;
        assert_eq!(refused.status(), 401);

        for (body, path) in [
            (json!({"name": "x"}), None),
            (
                json!([{"name": "Subscribe", "description": "d"}]),
                Some("/0/name"),
            ),
            (
                json!([{"name": "list", "description": ""}]),
                Some("/0/description"),
            ),
            (
                json!([{"name": "list", "type": 9, "description": "d"}]),
                Some("/0/type"),
            ),
            (
                json!([{"name": "list", "description": "d", "description_localizations": {"zh": "列表"}}]),
                Some("/0/description_localizations/zh"),
            ),
            (
                json!([{"name": "lang", "description": "d", "options": [
                    {"type": 3, "name": "code", "description": "c"},
                    {"type": 3, "name": "other", "description": "o", "required": true},
                ]}]),
                Some("/0/options/1/required"),
            ),
            (
                json!([{"name": "lang", "description": "d", "options": [{"type": 3, "name": "code", "description": "c",
                    "autocomplete": true, "choices": [{"name": "English", "value": "en"}]}]}]),
                Some("/0/options/0/autocomplete"),
            ),
            (json!([command("list"), command("list")]), Some("/1/name")),
        ] {
            let response = put_commands(&server, Some("Bot test-token"), body.clone()).await;
            assert_eq!(response.status(), 400, "{body}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["code"], 50035, "{answer}");
            let errors = &answer["errors"];
            let at = match path {
                Some(path) => errors.pointer(path).cloned().unwrap_or(Value::Null),
                None => errors.clone(),
            };
            assert!(at["_errors"].is_array(), "{body}: {answer}");
        }
        assert!(server.command_overwrites().is_empty());

        let first = put_commands(
            &server,
            Some("Bot test-token"),
            json!([command("subscribe"), {"name": "help", "description": "Help."}]),
        )
        .await;
        assert_eq!(first.status(), 200);
        assert!(first.headers().get("x-ratelimit-bucket").is_some());
        let stored: Vec<Value> = first.json().await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0]["application_id"], BOT_USER_ID.to_string());
        assert_eq!(stored[0]["options"][0]["name"], "entity");
        assert_eq!(stored[1]["type"], 1);
        assert!(stored[0]["version"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok());
        let second: Vec<Value> = put_commands(
            &server,
            Some("Bot test-token"),
            json!([command("subscribe")]),
        )
        .await
        .json()
        .await
        .unwrap();
        // The same name keeps its id; help was dropped.
        assert_eq!(second[0]["id"], stored[0]["id"]);
        assert_eq!(server.commands(BOT_USER_ID).len(), 1);
        let overwrites = server
            .wait_command_overwrites(2, Duration::from_secs(1))
            .await;
        assert_eq!(overwrites[0].names(), ["subscribe", "help"]);
    }

    #[tokio::test]
    async fn an_original_answer_is_edited_with_the_interaction_token() {
        let server = server().await;
        let interaction = application_command(&Invoker::admin(1, 2, 3), "list", json!([]));
        let token = interaction["token"].as_str().unwrap().to_owned();
        let url = format!(
            "{}/api/v10/webhooks/{BOT_USER_ID}/{token}/messages/@original",
            server.url
        );
        let unknown = client()
            .patch(&url)
            .json(&json!({"content": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
        assert_eq!(unknown.json::<Value>().await.unwrap()["code"], 10015);

        server.open_interaction(&interaction);
        let menu = |max: u64| {
            json!({"content": "Subscribed.", "components": [{"type": 1, "components": [{
                "type": 3, "custom_id": "kinds:1", "min_values": 1, "max_values": max,
                "options": [{"label": "Live", "value": "live", "default": true},
                            {"label": "Video", "value": "video"}],
            }]}]})
        };
        let invalid = client().patch(&url).json(&menu(3)).send().await.unwrap();
        assert_eq!(invalid.status(), 400);
        let errors = invalid.json::<Value>().await.unwrap()["errors"].clone();
        assert!(errors["components"]["0"]["components"]["0"]["max_values"]["_errors"].is_array());

        // No bot token: the interaction token is the credential.
        let edited = client().patch(&url).json(&menu(2)).send().await.unwrap();
        assert_eq!(edited.status(), 200);
        let message: Value = edited.json().await.unwrap();
        assert_eq!(message["content"], "Subscribed.");
        assert_eq!(message["channel_id"], "2");
        assert_eq!(message["components"][0]["components"][0]["type"], 3);
        let edit = server
            .wait_original_edit(&token, Duration::from_secs(1))
            .await;
        assert_eq!(edit.channel_id, 2);
        assert_eq!(edit.body["content"], "Subscribed.");
        assert_eq!(server.unauthorized(), 0);

        assert!(message_errors(&menu(2)).is_none());
        let crowded = json!({"components": [{"type": 1, "components": [
            menu(2)["components"][0]["components"][0].clone(),
            {"type": 2, "style": 1, "label": "x", "custom_id": "y"},
        ]}]});
        assert!(message_errors(&crowded).is_some());
    }

    #[test]
    fn signatures_cover_timestamp_then_body() {
        let signer = InteractionSigner::from_seed([7; 32]);
        let key_bytes: [u8; 32] = hex::decode(signer.public_key_hex())
            .unwrap()
            .try_into()
            .unwrap();
        let key = VerifyingKey::from_bytes(&key_bytes).unwrap();
        let signature_hex = signer.sign("1700000000", b"{\"type\":1}");
        let signature_bytes: [u8; 64] = hex::decode(signature_hex).unwrap().try_into().unwrap();
        let signature = Signature::from_bytes(&signature_bytes);
        assert!(key.verify(b"1700000000{\"type\":1}", &signature).is_ok());
        assert!(key.verify(b"1700000001{\"type\":1}", &signature).is_err());
    }

    #[test]
    fn interactions_have_discords_shapes() {
        let guild = application_command(&Invoker::admin(1, 2, 3), "subscribe", json!([]));
        assert_eq!(guild["type"], 2);
        assert_eq!(guild["member"]["user"]["id"], "3");
        assert_eq!(guild["member"]["permissions"], "2088");
        assert_eq!(guild["data"]["name"], "subscribe");
        let direct = message_component(&Invoker::direct(5, 6), "unsubscribe:1", 99);
        assert_eq!(direct["type"], 3);
        assert_eq!(direct["user"]["id"], "6");
        assert!(direct.get("member").is_none());
        assert_eq!(direct["message"]["id"], "99");
        assert_eq!(ping()["type"], 1);
        let manager = Invoker::member(1, 2, 3).with_role(9);
        let select = string_select(&manager, "kinds:x", &["twitch.live"], 99);
        assert_eq!(select["data"]["component_type"], 3);
        assert_eq!(select["data"]["values"], json!(["twitch.live"]));
        assert_eq!(select["member"]["roles"], json!(["9"]));
        assert_eq!(
            autocomplete(&Invoker::member(1, 2, 3), "subscribe", json!([]))["type"],
            4
        );
    }
}
