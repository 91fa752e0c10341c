//! The REST sender: creates and edits messages through Discord's API v10 while keeping to
//! its rate limits, and classifies what goes wrong. It also registers the application's
//! slash commands (one bulk overwrite) and edits the original answer to an interaction
//! through the interaction's webhook.
//!
//! Limits kept (docs: "Rate Limits" in Discord's developer documentation):
//! - *Per-route buckets.* Every answer names its bucket (`X-RateLimit-Bucket`, shared by
//!   the routes Discord groups together) and says how many requests it has left
//!   (`-Remaining`) and when it refills (`-Reset-After`). Buckets are per major parameter,
//!   here the channel. One request per bucket is in flight at a time, so its answer's
//!   headers are known before the next request, which waits for the refill when none is
//!   left; messages to one channel also go out in the order they were asked for.
//! - *The global limit* (50 requests per second per bot) carries no headers until it is
//!   exceeded, so it is kept proactively: requests are spaced evenly, a little further
//!   apart than the limit requires ([`GLOBAL_CUSHION`]), so that arrival jitter never
//!   puts 51 requests into one second at Discord's end. Interaction webhooks (editing an
//!   interaction's answer) are not bound to it, as Discord documents, and go without the
//!   bot token, which they do not need; their bucket is per interaction token.
//! - *429s* still happen (another process on the same token, a shared bucket): their
//!   `retry_after` blocks the bucket, or every request when `global` is set, and the
//!   request is sent again after it. [`RestClient::send_message`] and
//!   [`RestClient::edit_message`] never fail for a 429; the `try_` variants make one
//!   attempt and report it as [`SendError::RateLimited`] for callers that prefer to
//!   requeue.
//!
//! Why not `twilight-http`: its client can be pointed at another host
//! (`ClientBuilder::proxy`), but when an answer is 429 it sends the request again at once
//! (without its rate limiter: immediately, in a loop; with it: as soon as the limiter
//! permits, and a global 429 does not hold the limiter back), it paces the global limit
//! as a burst of 50 at the start of each second (which a window counted at Discord's end
//! can see as 51), and it hides the 429s from the caller. The JSON shapes do come from
//! `twilight-model`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stargazer_core::sync::lock;
use tokio::time::{sleep_until, Instant};
use twilight_model::application::command::Command;
use twilight_model::channel::message::component::{ActionRow, Button, ButtonStyle};
use twilight_model::channel::message::embed::EmbedThumbnail;
use twilight_model::channel::message::{AllowedMentions, Component, Embed};
use twilight_model::id::marker::{ApplicationMarker, ChannelMarker, MessageMarker, RoleMarker};
use twilight_model::id::Id;

use crate::config::DiscordConfig;

/// Extra time added to every second of the global limit: requests go out at most
/// `global_per_second` per (1 s + this), so that up to this much jitter between sending
/// and arrival cannot put one request too many into a second counted at Discord's end.
pub const GLOBAL_CUSHION: Duration = Duration::from_millis(25);

/// Discord's JSON error codes that mean the bot can no longer post in the channel.
const GONE_CODES: [u32; 4] = [
    10003, // Unknown Channel: deleted
    50001, // Missing Access: the bot was removed, or the channel hidden from it
    50007, // Cannot send messages to this user: direct messages closed or bot blocked
    50013, // Missing Permissions: may no longer post there
];

/// Why a request failed, in the classes the delivery acts on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// 429: try again after this long (only the `try_` methods return it).
    #[error("rate limited by Discord: retry after {0:?}")]
    RateLimited(Duration),
    /// The channel is gone for the bot: deleted (10003), the bot removed or the channel
    /// hidden from it (50001), posting forbidden (50013), or a user who closed their
    /// direct messages (50007). Retrying will not help; the subscription should pause.
    #[error("channel unavailable to the bot: Discord code {code}: {message}")]
    Gone {
        /// Discord's JSON error code.
        code: u32,
        /// Discord's message.
        message: String,
    },
    /// Refused for a reason about this request (a 4xx other than the above): sending it
    /// again unchanged will fail again.
    #[error("refused by Discord: HTTP {status}, code {code}: {message}")]
    Invalid {
        /// The HTTP status.
        status: u16,
        /// Discord's JSON error code (0 when there was none).
        code: u32,
        /// Discord's message, or the start of the body.
        message: String,
    },
    /// 401: the bot token was refused. Nothing is wrong with the message; nothing will be
    /// delivered until the token is fixed.
    #[error("Discord refused the bot token (401)")]
    Unauthorized,
    /// Discord failed or could not be reached (5xx, network, timeout): worth retrying
    /// later. After a timeout the message may have been created all the same.
    #[error("Discord unavailable: {0}")]
    Transient(String),
    /// Discord accepted the request (2xx) but its answer could not be read. The message
    /// was probably created: sending it again may duplicate it.
    #[error("unreadable answer from Discord: {0}")]
    BadAnswer(String),
}

/// The body of a message to create, or the new state of one to edit (for an edit, a
/// `None` field is left as it is).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MessageBody {
    /// Text above the embeds, at most 2,000 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// At most 10 embeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeds: Option<Vec<Embed>>,
    /// Action rows of buttons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<Component>>,
    /// Who may be pinged; `None` sends "nobody", so a title containing `@everyone` or a
    /// role mention never pings a server.
    pub allowed_mentions: Option<AllowedMentions>,
    /// The message a new message replies to (creation only; an edit cannot change it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_reference: Option<MessageReference>,
}

/// A reply's reference to the message it answers, in Discord's shape
/// (`{"message_id": "…", "fail_if_not_exists": false}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageReference {
    /// The message replied to, in the channel the reply is posted to.
    pub message_id: Id<MessageMarker>,
    /// Whether Discord refuses the reply (400, 50035) when that message no longer
    /// exists; `false` posts it as a plain message instead.
    pub fail_if_not_exists: bool,
}

impl MessageBody {
    /// A message of `content` alone.
    pub fn text(content: impl Into<String>) -> Self {
        Self {
            content: Some(content.into()),
            ..Self::default()
        }
    }

    /// The same message as a reply to `message`, posted plainly if that message is gone.
    pub fn replying_to(self, message: Id<MessageMarker>) -> Self {
        Self {
            message_reference: Some(MessageReference {
                message_id: message,
                fail_if_not_exists: false,
            }),
            ..self
        }
    }

    /// The same message pinging `role` (a role id): `<@&role>` before the content, and
    /// that role alone allowed to be pinged.
    pub fn mentioning(mut self, role: Id<RoleMarker>) -> Self {
        let mention = format!("<@&{role}>");
        self.content = Some(match self.content.take() {
            Some(content) if !content.is_empty() => format!("{mention} {content}"),
            _ => mention,
        });
        let allowed = self
            .allowed_mentions
            .get_or_insert_with(AllowedMentions::default);
        if !allowed.roles.contains(&role) {
            allowed.roles.push(role);
        }
        self
    }

    /// Adds an embed.
    pub fn with_embed(mut self, embed: Embed) -> Self {
        self.embeds.get_or_insert_with(Vec::new).push(embed);
        self
    }

    /// Adds a link button, in a new action row once the last holds 5.
    pub fn with_link_button(mut self, label: impl Into<String>, url: impl Into<String>) -> Self {
        let button = Component::Button(Button {
            custom_id: None,
            disabled: false,
            emoji: None,
            id: None,
            label: Some(label.into()),
            sku_id: None,
            style: ButtonStyle::Link,
            url: Some(url.into()),
        });
        let rows = self.components.get_or_insert_with(Vec::new);
        match rows.last_mut() {
            Some(Component::ActionRow(row)) if row.components.len() < 5 => {
                row.components.push(button);
            }
            _ => rows.push(Component::ActionRow(ActionRow {
                components: vec![button],
                id: None,
            })),
        }
        self
    }
}

/// A rich embed with a linked title, a description and an optional thumbnail.
pub fn embed(
    title: impl Into<String>,
    url: Option<String>,
    description: impl Into<String>,
    thumbnail: Option<String>,
) -> Embed {
    Embed {
        author: None,
        color: None,
        description: Some(description.into()),
        fields: Vec::new(),
        flags: None,
        footer: None,
        image: None,
        kind: "rich".to_owned(),
        provider: None,
        thumbnail: thumbnail.map(|url| EmbedThumbnail {
            height: None,
            proxy_url: None,
            url,
            width: None,
        }),
        timestamp: None,
        title: Some(title.into()),
        url,
        video: None,
    }
}

/// A message Discord created or edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SentMessage {
    /// Its id, for later edits.
    pub id: Id<MessageMarker>,
    /// Its channel.
    pub channel_id: Id<ChannelMarker>,
}

/// Discord's JSON error body.
#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    message: String,
}

/// Discord's 429 body.
#[derive(Debug, Deserialize)]
struct RateLimitBody {
    retry_after: f64,
    #[serde(default)]
    global: bool,
}

/// The client for Discord's REST API; cheap to clone, one per bot token.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{api_url}/api/v10`.
    base: String,
    authorization: String,
    pacer: GlobalPacer,
    buckets: Buckets,
}

/// A route shape and its major parameter: what identifies a bucket until Discord has
/// named it.
#[derive(Debug, Clone)]
struct Route {
    method: Method,
    /// The shape, with `{}` for parameters, as a key of its own before the bucket is known.
    shape: &'static str,
    /// The major parameter (the channel id, the application id, a hash of an
    /// interaction token).
    major: u64,
    /// Whether the request carries the bot token and counts against the global limit;
    /// interaction webhooks do neither.
    as_bot: bool,
}

impl Route {
    fn key(&self) -> &'static str {
        self.shape
    }
}

impl RestClient {
    /// A client for the API at `config.api_url`, authenticated with `config.token`.
    pub fn new(config: &DiscordConfig) -> Result<Self, crate::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout())
            // Discord asks bots for `DiscordBot (<url or name>, <version>)`.
            .user_agent(concat!(
                "DiscordBot (stargazer, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(|err| crate::Error::Client(err.to_string()))?;
        let base = format!("{}/api/v10", config.api_url.trim_end_matches('/'));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                authorization: format!("Bot {}", config.token),
                pacer: GlobalPacer::new(config.global_per_second),
                buckets: Buckets::default(),
            }),
        })
    }

    /// Creates a message in `channel`, waiting out rate limits (never failing for a 429).
    #[tracing::instrument(skip(self, body), fields(channel_id = %channel))]
    pub async fn send_message(
        &self,
        channel: Id<ChannelMarker>,
        body: &MessageBody,
    ) -> Result<SentMessage, SendError> {
        loop {
            match self.try_send_message(channel, body).await {
                Err(SendError::RateLimited(wait)) => {
                    tracing::debug!(?wait, "rate limited; sending again after the wait");
                }
                other => return other,
            }
        }
    }

    /// Edits `message` in `channel`, waiting out rate limits (never failing for a 429).
    #[tracing::instrument(skip(self, body), fields(channel_id = %channel, message_id = %message))]
    pub async fn edit_message(
        &self,
        channel: Id<ChannelMarker>,
        message: Id<MessageMarker>,
        body: &MessageBody,
    ) -> Result<SentMessage, SendError> {
        loop {
            match self.try_edit_message(channel, message, body).await {
                Err(SendError::RateLimited(wait)) => {
                    tracing::debug!(?wait, "rate limited; editing again after the wait");
                }
                other => return other,
            }
        }
    }

    /// One attempt at creating a message (after waiting for its bucket and the global
    /// pace); a 429 is returned as [`SendError::RateLimited`], its wait already recorded.
    pub async fn try_send_message(
        &self,
        channel: Id<ChannelMarker>,
        body: &MessageBody,
    ) -> Result<SentMessage, SendError> {
        let route = Route {
            method: Method::POST,
            shape: "POST channels/{}/messages",
            major: channel.get(),
            as_bot: true,
        };
        let path = format!("channels/{channel}/messages");
        self.attempt(route, &path, &quiet(body)).await
    }

    /// One attempt at an edit, as [`RestClient::try_send_message`].
    pub async fn try_edit_message(
        &self,
        channel: Id<ChannelMarker>,
        message: Id<MessageMarker>,
        body: &MessageBody,
    ) -> Result<SentMessage, SendError> {
        let route = Route {
            method: Method::PATCH,
            shape: "PATCH channels/{}/messages/{}",
            major: channel.get(),
            as_bot: true,
        };
        let path = format!("channels/{channel}/messages/{message}");
        self.attempt(route, &path, &quiet(body)).await
    }

    /// Replaces the application's global slash commands with `commands` (one bulk
    /// overwrite, `PUT applications/{id}/commands`: commands not listed are deleted,
    /// listed ones keep their ids), waiting out rate limits; answers the commands as
    /// Discord stored them.
    #[tracing::instrument(skip(self, commands), fields(application_id = %application))]
    pub async fn overwrite_commands<C: Serialize>(
        &self,
        application: Id<ApplicationMarker>,
        commands: &[C],
    ) -> Result<Vec<Command>, SendError> {
        let route = Route {
            method: Method::PUT,
            shape: "PUT applications/{}/commands",
            major: application.get(),
            as_bot: true,
        };
        let path = format!("applications/{application}/commands");
        loop {
            match self.attempt(route.clone(), &path, commands).await {
                Err(SendError::RateLimited(wait)) => {
                    tracing::debug!(?wait, "rate limited; registering again after the wait");
                }
                other => return other,
            }
        }
    }

    /// Edits the original answer to an interaction (`PATCH
    /// webhooks/{application}/{token}/messages/@original`): the message a deferred answer
    /// promised, or the message a component belongs to. Waits out rate limits. The token
    /// is the interaction's (valid 15 minutes), so no bot token is sent.
    #[tracing::instrument(skip(self, token, body), fields(application_id = %application))]
    pub async fn edit_original_response(
        &self,
        application: Id<ApplicationMarker>,
        token: &str,
        body: &MessageBody,
    ) -> Result<SentMessage, SendError> {
        let route = Route {
            method: Method::PATCH,
            shape: "PATCH webhooks/{}/{}/messages/@original",
            major: token_key(token),
            as_bot: false,
        };
        let path = format!(
            "webhooks/{application}/{}/messages/@original",
            path_segment(token)
        );
        let body = quiet(body);
        loop {
            match self.attempt(route.clone(), &path, &body).await {
                Err(SendError::RateLimited(wait)) => {
                    tracing::debug!(
                        ?wait,
                        "rate limited; editing the answer again after the wait"
                    );
                }
                other => return other,
            }
        }
    }

    async fn attempt<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        route: Route,
        path: &str,
        body: &B,
    ) -> Result<T, SendError> {
        let inner = &self.inner;
        let bucket = inner.buckets.get(&route);
        // Held until the answer's headers are recorded: one request per bucket in flight.
        let mut state = bucket.lock().await;
        state.wait_ready().await;
        if route.as_bot {
            inner.pacer.acquire().await;
        }

        let mut request = inner
            .http
            .request(route.method.clone(), format!("{}/{path}", inner.base))
            .json(body);
        if route.as_bot {
            request = request.header(AUTHORIZATION, &inner.authorization);
        }
        let sent = request.send().await;
        // An interaction webhook's URL holds the interaction token, a credential: its
        // errors are reported without the URL.
        let described = |err: reqwest::Error| match route.as_bot {
            true => err.to_string(),
            false => err.without_url().to_string(),
        };
        let response = match sent {
            Ok(response) => response,
            Err(err) => return Err(SendError::Transient(described(err))),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let limits = BucketHeaders::parse(&headers);
        if let Some(limits) = &limits {
            state.update(limits);
            inner.buckets.learn(&route, &limits.bucket, &bucket);
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(err) if status.is_success() => return Err(SendError::BadAnswer(described(err))),
            Err(err) => return Err(SendError::Transient(described(err))),
        };

        if status == StatusCode::TOO_MANY_REQUESTS {
            let (wait, global) = retry_after(&headers, &bytes);
            if global {
                inner.pacer.block_for(wait);
            } else {
                state.block_for(wait);
            }
            // The route's shape, not its path: an interaction token is a credential.
            tracing::warn!(?wait, global, route = route.shape, "Discord answered 429");
            return Err(SendError::RateLimited(wait));
        }
        drop(state);
        if status.is_success() {
            return serde_json::from_slice::<T>(&bytes)
                .map_err(|err| SendError::BadAnswer(err.to_string()));
        }
        Err(classify(status, &bytes))
    }
}

/// `body` with `allowed_mentions` set to "nobody" unless the caller chose otherwise.
fn quiet(body: &MessageBody) -> MessageBody {
    let mut body = body.clone();
    body.allowed_mentions
        .get_or_insert_with(AllowedMentions::default);
    body
}

/// The bucket key of an interaction token: Discord keys webhook buckets by webhook and
/// token, and one interaction's edits must not wait behind another's.
fn token_key(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// `text` as one path segment: unreserved characters as they are, the rest
/// percent-encoded (interaction tokens are URL-safe, but a token is input).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The wait a 429 asks for and whether it is global: the body's exact `retry_after`,
/// else the `Retry-After` header, else one second.
fn retry_after(headers: &HeaderMap, body: &[u8]) -> (Duration, bool) {
    let header_global = headers
        .get("x-ratelimit-global")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        || headers
            .get("x-ratelimit-scope")
            .is_some_and(|v| v.as_bytes() == b"global");
    let parsed = serde_json::from_slice::<RateLimitBody>(body)
        .ok()
        .filter(|b| b.retry_after.is_finite() && b.retry_after >= 0.0);
    let wait = parsed
        .as_ref()
        .map(|b| b.retry_after)
        .or_else(|| header_f64(headers, "retry-after"))
        .unwrap_or(1.0);
    let global = header_global || parsed.is_some_and(|b| b.global);
    // Capped at a day: a bogus value must not park a request for ever.
    (Duration::from_secs_f64(wait.clamp(0.0, 86_400.0)), global)
}

/// Sorts a failed answer into the classes of [`SendError`].
fn classify(status: StatusCode, body: &[u8]) -> SendError {
    let error = serde_json::from_slice::<ApiError>(body).unwrap_or_else(|_| ApiError {
        code: 0,
        message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    });
    if status == StatusCode::UNAUTHORIZED {
        return SendError::Unauthorized;
    }
    if status.is_server_error() {
        return SendError::Transient(format!("HTTP {}: {}", status.as_u16(), error.message));
    }
    if GONE_CODES.contains(&error.code) {
        return SendError::Gone {
            code: error.code,
            message: error.message,
        };
    }
    SendError::Invalid {
        status: status.as_u16(),
        code: error.code,
        message: error.message,
    }
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// The bucket headers of one answer.
#[derive(Debug, Clone)]
struct BucketHeaders {
    bucket: String,
    remaining: u32,
    reset_after: Duration,
}

impl BucketHeaders {
    /// `None` unless the answer names its bucket with its remaining count and refill time.
    fn parse(headers: &HeaderMap) -> Option<Self> {
        let bucket = headers.get("x-ratelimit-bucket")?.to_str().ok()?.to_owned();
        let remaining = header_f64(headers, "x-ratelimit-remaining")?;
        let reset_after = header_f64(headers, "x-ratelimit-reset-after")?;
        Some(Self {
            bucket,
            remaining: remaining.min(f64::from(u32::MAX)) as u32,
            reset_after: Duration::from_secs_f64(reset_after.min(86_400.0)),
        })
    }
}

/// What is known of one bucket.
#[derive(Debug, Default)]
struct BucketState {
    /// Requests left before `reset_at`, when known.
    remaining: Option<u32>,
    /// When the bucket refills.
    reset_at: Option<Instant>,
}

impl BucketState {
    /// Waits while the bucket is empty and not yet refilled.
    async fn wait_ready(&mut self) {
        if let (Some(0), Some(reset_at)) = (self.remaining, self.reset_at) {
            if reset_at > Instant::now() {
                tracing::debug!(wait = ?reset_at - Instant::now(), "bucket empty; waiting for its reset");
                sleep_until(reset_at).await;
            }
        }
        if self.reset_at.is_some_and(|at| at <= Instant::now()) {
            // Refilled: the next answer says by how much.
            self.remaining = None;
            self.reset_at = None;
        }
    }

    fn update(&mut self, headers: &BucketHeaders) {
        // The refill is counted from when the answer arrived, never earlier than
        // Discord's own reset: Discord counted it from before it answered.
        self.remaining = Some(headers.remaining);
        self.reset_at = Some(Instant::now() + headers.reset_after);
    }

    fn block_for(&mut self, wait: Duration) {
        self.remaining = Some(0);
        let until = Instant::now() + wait;
        self.reset_at = Some(self.reset_at.map_or(until, |at| at.max(until)));
    }
}

type SharedBucket = Arc<tokio::sync::Mutex<BucketState>>;

/// Bucket states by (bucket id, major parameter); a route's bucket id is its shape until
/// Discord names the bucket.
#[derive(Default)]
struct Buckets {
    inner: Mutex<BucketTable>,
}

#[derive(Default)]
struct BucketTable {
    /// Bucket ids Discord named, by route shape.
    named: HashMap<&'static str, String>,
    states: HashMap<(String, u64), SharedBucket>,
    /// Size of `states` after the last pruning; the next one happens at twice that.
    pruned_at: usize,
}

/// Fewer bucket states than this are never pruned.
const PRUNE_FLOOR: usize = 4096;

impl Buckets {
    fn get(&self, route: &Route) -> SharedBucket {
        let mut table = lock(&self.inner);
        let id = table
            .named
            .get(route.key())
            .cloned()
            .unwrap_or_else(|| route.key().to_owned());
        if table.states.len() >= PRUNE_FLOOR.max(table.pruned_at * 2) {
            table.prune();
        }
        table.states.entry((id, route.major)).or_default().clone()
    }

    /// Records the bucket Discord named for `route`, so later requests of every route in
    /// that bucket share `state`.
    fn learn(&self, route: &Route, bucket: &str, state: &SharedBucket) {
        let mut table = lock(&self.inner);
        if table.named.get(route.key()).map(String::as_str) != Some(bucket) {
            table.named.insert(route.key(), bucket.to_owned());
        }
        table
            .states
            .entry((bucket.to_owned(), route.major))
            .or_insert_with(|| state.clone());
        // The provisional entry under the route's shape is no longer looked up; dropping
        // it leaves one entry per bucket, which pruning can then remove.
        let provisional = (route.key().to_owned(), route.major);
        if table
            .states
            .get(&provisional)
            .is_some_and(|held| Arc::ptr_eq(held, state))
        {
            table.states.remove(&provisional);
        }
    }
}

impl BucketTable {
    /// Drops the states nobody holds whose bucket has refilled: a fan-out to thousands of
    /// channels must not keep one entry per channel for ever.
    fn prune(&mut self) {
        let now = Instant::now();
        self.states.retain(|_, state| {
            if Arc::strong_count(state) > 1 {
                return true;
            }
            match state.try_lock() {
                Ok(state) => state.reset_at.is_some_and(|at| at > now),
                Err(_) => true,
            }
        });
        self.pruned_at = self.states.len();
    }
}

/// Spaces requests evenly under the global limit, and holds them all back after a global
/// 429.
struct GlobalPacer {
    interval: Duration,
    state: Mutex<PacerState>,
}

struct PacerState {
    /// The earliest time the next request may go.
    next: Instant,
}

impl GlobalPacer {
    fn new(per_second: f64) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            50.0
        };
        let second = Duration::from_secs(1) + GLOBAL_CUSHION;
        Self {
            interval: second.div_f64(per_second),
            state: Mutex::new(PacerState {
                next: Instant::now(),
            }),
        }
    }

    /// Waits for this request's slot.
    async fn acquire(&self) {
        let slot = {
            let mut state = lock(&self.state);
            let slot = state.next.max(Instant::now());
            state.next = slot + self.interval;
            slot
        };
        sleep_until(slot).await;
    }

    fn block_for(&self, wait: Duration) {
        let mut state = lock(&self.state);
        state.next = state.next.max(Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_status_and_code() {
        let body = |code: u32, message: &str| {
            serde_json::to_vec(&serde_json::json!({"code": code, "message": message})).unwrap()
        };
        for code in [10003, 50001, 50013, 50007] {
            let status = if code == 10003 { 404 } else { 403 };
            assert!(matches!(
                classify(StatusCode::from_u16(status).unwrap(), &body(code, "x")),
                SendError::Gone { code: c, .. } if c == code
            ));
        }
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &body(50035, "Invalid Form Body")),
            SendError::Invalid {
                status: 400,
                code: 50035,
                ..
            }
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &body(10008, "Unknown Message")),
            SendError::Invalid { code: 10008, .. }
        ));
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &body(0, "401: Unauthorized")),
            SendError::Unauthorized
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, b"<html>502</html>"),
            SendError::Transient(_)
        ));
    }

    #[test]
    fn retry_after_prefers_the_exact_body() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        let (wait, global) = retry_after(&headers, br#"{"retry_after": 2.25, "global": false}"#);
        assert_eq!(wait, Duration::from_millis(2250));
        assert!(!global);
        headers.insert("x-ratelimit-global", "true".parse().unwrap());
        let (wait, global) = retry_after(&headers, b"not json");
        assert_eq!(wait, Duration::from_secs(3));
        assert!(global);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests_evenly() {
        let pacer = GlobalPacer::new(50.0);
        let start = Instant::now();
        for _ in 0..101 {
            pacer.acquire().await;
        }
        // 100 intervals of (1 s + cushion) / 50.
        let expected = (Duration::from_secs(1) + GLOBAL_CUSHION) * 2;
        let elapsed = start.elapsed();
        assert!(
            elapsed >= expected && elapsed < expected + Duration::from_millis(5),
            "{elapsed:?}"
        );
        pacer.block_for(Duration::from_secs(3));
        let before = Instant::now();
        pacer.acquire().await;
        assert!(before.elapsed() >= Duration::from_secs(3));
    }

    #[test]
    fn a_reply_references_its_message_and_survives_its_deletion() {
        let plain = serde_json::to_value(MessageBody::text("x")).unwrap();
        assert!(plain.get("message_reference").is_none());
        let reply = MessageBody::text("x").replying_to(Id::new(1_200_000_000_000_000_001));
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            json["message_reference"],
            serde_json::json!({"message_id": "1200000000000000001", "fail_if_not_exists": false})
        );
    }

    #[test]
    fn link_buttons_fill_rows_of_five() {
        let mut body = MessageBody::text("x");
        for i in 0..6 {
            body = body.with_link_button(format!("b{i}"), "https://example.com");
        }
        let json = serde_json::to_value(&body).unwrap();
        let rows = json["components"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["type"], 1);
        assert_eq!(rows[0]["components"].as_array().unwrap().len(), 5);
        assert_eq!(rows[0]["components"][0]["style"], 5);
        assert_eq!(rows[0]["components"][0]["url"], "https://example.com");
        assert!(rows[0]["components"][0].get("custom_id").is_none());
    }
}
