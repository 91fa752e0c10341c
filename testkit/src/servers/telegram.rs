//! The Telegram Bot API (`https://api.telegram.org/bot<token>/<method>`).
//!
//! Parameters arrive as a JSON body, an urlencoded form, a multipart form or a query
//! string, as the real API accepts. Answers are `{"ok": true, "result": …}` or an error
//! object `{"ok": false, "error_code", "description", "parameters"}` with the matching HTTP
//! status. Method names are matched case-insensitively, as Telegram does.
//!
//! Served methods: what teloxide calls at start-up (`getMe`, `getWebhookInfo`,
//! `deleteWebhook`, `setMyCommands`), long-polled `getUpdates` honouring `offset`,
//! `timeout` and `limit`, `sendMessage`/`sendPhoto` (HTML parse mode and length limits
//! checked as Telegram does; replies through `reply_parameters` or `reply_to_message_id`
//! resolved, or refused unless `allow_sending_without_reply`),
//! `editMessageText`/`editMessageCaption`/`editMessageReplyMarkup` (answering "message is
//! not modified" for an edit that changes nothing, "there is no text/caption in the
//! message to edit" for the wrong method, and refused like sends while a chat is
//! blocked, rate limited or failing on script), `answerCallbackQuery` and the chat member lookups a bot makes in groups (from a table
//! of admins the test fills). Dates are unix seconds.
//!
//! The test side injects updates as a person would produce them (a text message, a press
//! on an inline button), reads back every message the bot sent and every call it made,
//! and can make sends fail: scripted answers per chat (429 with `retry_after`, 403
//! blocked, 400 with `migrate_to_chat_id`, any 400), lasting blocks and migrations, users
//! who never started the bot (403 on private messages), send rates enforced with 429s, an
//! outage of sends answered 500, or a gateway outage answering every method 502 Bad
//! Gateway (switched on and off, or for a set period).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};

use super::{lock, serve, Served};

/// The bot account the server plays.
pub const BOT_ID: i64 = 6_100_000_042;
/// Its username (group commands may be addressed as `/command@stargazer_test_bot`).
pub const BOT_USERNAME: &str = "stargazer_test_bot";

/// One message the bot sent successfully.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `sendMessage` or `sendPhoto`.
    pub method: String,
    /// The target chat.
    pub chat_id: i64,
    /// Text (or photo caption) as the reader sees it: markup removed, entities decoded.
    pub text: String,
    /// Text (or caption) as the bot sent it.
    pub raw: String,
    /// The photo of a `sendPhoto`.
    pub photo: Option<String>,
    /// The inline keyboard, if any.
    pub reply_markup: Option<Value>,
    /// The id the server gave the message.
    pub message_id: i64,
    /// The message it replies to, if any (and that message exists).
    pub reply_to: Option<i64>,
    /// Whether it was sent silently (`disable_notification`).
    pub silent: bool,
    /// When the server accepted it.
    pub at: Instant,
}

impl Sent {
    /// `(label, callback data or url)` of every inline button.
    pub fn buttons(&self) -> Vec<(String, String)> {
        buttons_of(self.reply_markup.as_ref())
    }
}

fn buttons_of(markup: Option<&Value>) -> Vec<(String, String)> {
    let rows = markup
        .and_then(|m| m.get("inline_keyboard"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .map(|button| {
            let label = button["text"].as_str().unwrap_or_default().to_owned();
            let target = button
                .get("callback_data")
                .or_else(|| button.get("url"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (label, target)
        })
        .collect()
}

/// An answer scripted for the next send to a chat (see [`TelegramServer::fail_next`]).
#[derive(Debug, Clone)]
pub enum Failure {
    /// 429 with `retry_after` seconds.
    RetryAfter(u32),
    /// 403: the user blocked the bot.
    Blocked,
    /// 400: the group became a supergroup with this id.
    Migrate(i64),
    /// 400 with this description.
    BadRequest(String),
    /// 403: the user never started a private chat with the bot.
    CantInitiate,
}

/// Send rates the server enforces, answering 429 when exceeded
/// (see [`TelegramServer::enforce`]).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Sends accepted within any window of `window`.
    pub global: usize,
    /// The sliding window of the overall limit.
    pub window: Duration,
    /// Minimum gap between two accepted sends to one chat.
    pub per_chat: Duration,
    /// `retry_after` seconds to answer.
    pub retry_after: u32,
}

#[derive(Default)]
struct Inner {
    next_update_id: i64,
    updates: VecDeque<(i64, Value)>,
    next_message_id: i64,
    sent: Vec<Sent>,
    messages: HashMap<(i64, i64), Value>,
    /// Every authorized call: canonical method name and parameters.
    calls: Vec<(String, Value)>,
    callback_answers: Vec<Value>,
    admins: HashMap<i64, HashSet<i64>>,
    failures: HashMap<i64, VecDeque<Failure>>,
    blocked: HashSet<i64>,
    migrated: HashMap<i64, i64>,
    limits: Option<RateLimits>,
    recent: VecDeque<Instant>,
    /// Accepted sends that asked for a paid broadcast, within the paid window.
    recent_paid: VecDeque<Instant>,
    /// Sends accepted as paid broadcasts (0.1 Stars each at Telegram).
    paid_sent: u64,
    last_per_chat: HashMap<i64, Instant>,
    too_many: u64,
    get_updates_calls: u64,
    /// Bumped by every `getUpdates`: a long poll still waiting when it changes was
    /// overtaken by another and is ended with Telegram's 409 Conflict.
    poll_generation: u64,
    /// Long polls ended that way.
    poll_conflicts: u64,
    /// Sends are answered 500 while this holds (a Bot API outage).
    outage: bool,
    refused_during_outage: u64,
    /// Every call is answered 502 while this lasts.
    gateway: Option<GatewayOutage>,
    bad_gateways: u64,
    /// Users whose private chat with the bot was never started.
    unstarted: HashSet<i64>,
}

/// How long a gateway outage lasts.
#[derive(Debug, Clone, Copy)]
enum GatewayOutage {
    /// Until switched off.
    UntilOff,
    /// Until this instant.
    Until(Instant),
}

impl Inner {
    /// Whether a call arriving `now` is answered 502 (and counts it).
    fn bad_gateway(&mut self, now: Instant) -> bool {
        let down = match self.gateway {
            Some(GatewayOutage::UntilOff) => true,
            Some(GatewayOutage::Until(end)) => now < end,
            None => false,
        };
        if down {
            self.bad_gateways += 1;
        }
        down
    }
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
    new_update: Notify,
    sent_count: watch::Sender<usize>,
}

/// A running Bot API server; stops when dropped.
pub struct TelegramServer {
    /// Base URL to configure as `telegram.api_url` (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The bot token it accepts.
    pub token: String,
    shared: Arc<Shared>,
    _served: Served,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The `Chat` object of `id`: a private chat for positive ids, a supergroup otherwise.
pub fn chat_json(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "supergroup", "title": format!("Group {id}")})
    } else {
        json!({"id": id, "type": "private", "first_name": format!("Viewer{id}"), "username": format!("viewer{id}")})
    }
}

/// The `User` object of a person with this id (English client).
pub fn user_json(id: i64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": format!("Viewer{id}"), "username": format!("viewer{id}"), "language_code": "en"})
}

fn bot_json() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Stargazer", "username": BOT_USERNAME})
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn error(status: StatusCode, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let Some(parameters) = parameters {
        body["parameters"] = parameters;
    }
    (status, Json(body)).into_response()
}

fn bad_request(description: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Bad Request: {description}"),
        None,
    )
}

fn failure_response(failure: &Failure) -> Response {
    match failure {
        Failure::RetryAfter(seconds) => error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too Many Requests: retry after {seconds}"),
            Some(json!({"retry_after": seconds})),
        ),
        Failure::Blocked => error(
            StatusCode::FORBIDDEN,
            "Forbidden: bot was blocked by the user",
            None,
        ),
        Failure::Migrate(to) => error(
            StatusCode::BAD_REQUEST,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(json!({"migrate_to_chat_id": to})),
        ),
        Failure::BadRequest(description) => error(StatusCode::BAD_REQUEST, description, None),
        Failure::CantInitiate => error(
            StatusCode::FORBIDDEN,
            "Forbidden: bot can't initiate conversation with a user",
            None,
        ),
    }
}

fn int_param(params: &Map<String, Value>, name: &str) -> Option<i64> {
    match params.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn str_param(params: &Map<String, Value>, name: &str) -> Option<String> {
    match params.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A JSON-valued parameter (`reply_markup`), given inline or serialized in a string.
fn json_param(params: &Map<String, Value>, name: &str) -> Option<Value> {
    match params.get(name)? {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

fn form_pairs(text: &str) -> Map<String, Value> {
    reqwest::Url::parse(&format!("http://form.invalid/?{text}"))
        .map(|url| {
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect()
        })
        .unwrap_or_default()
}

async fn read_params(
    query: Option<String>,
    request: Request,
) -> Result<Map<String, Value>, Response> {
    let mut params = query.as_deref().map(form_pairs).unwrap_or_default();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| bad_request(&e.to_string()))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| bad_request(&e.to_string()))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let text = field
                .text()
                .await
                .map_err(|e| bad_request(&e.to_string()))?;
            params.insert(name, Value::String(text));
        }
        return Ok(params);
    }
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|e| bad_request(&e.to_string()))?;
    if body.is_empty() {
        return Ok(params);
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(form_pairs(&String::from_utf8_lossy(&body)));
        return Ok(params);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => {
            params.extend(map);
            Ok(params)
        }
        _ => Err(bad_request("can't parse JSON object")),
    }
}

/// Method names are case-insensitive in the Bot API (teloxide sends `SendMessage`); this
/// is their canonical spelling.
fn canonical(method: &str) -> String {
    const METHODS: &[&str] = &[
        "getMe",
        "getWebhookInfo",
        "deleteWebhook",
        "setMyCommands",
        "deleteMyCommands",
        "getMyCommands",
        "getUpdates",
        "sendMessage",
        "sendPhoto",
        "sendChatAction",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "answerCallbackQuery",
        "getChat",
        "getChatMember",
        "getChatAdministrators",
    ];
    METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .map_or_else(|| method.to_owned(), |m| (*m).to_owned())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized", None);
    }
    let params = match read_params(query, request).await {
        Ok(params) => params,
        Err(response) => return response,
    };
    let method = canonical(&method);
    {
        let mut inner = lock(&shared.inner);
        inner
            .calls
            .push((method.clone(), Value::Object(params.clone())));
        if inner.bad_gateway(Instant::now()) {
            // The shape the Bot API answers when its backend is unreachable.
            return error(StatusCode::BAD_GATEWAY, "Bad Gateway", None);
        }
    }
    match method.as_str() {
        "getMe" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Stargazer", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false, "has_main_web_app": false
        })),
        "getWebhookInfo" => {
            ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "deleteWebhook" | "setMyCommands" | "deleteMyCommands" | "sendChatAction" => {
            ok(json!(true))
        }
        "getMyCommands" => ok(json!([])),
        "getUpdates" => get_updates(&shared, &params).await,
        "sendMessage" | "sendPhoto" => send(&shared, &method, &params),
        "editMessageText" | "editMessageCaption" | "editMessageReplyMarkup" => {
            edit(&shared, &method, &params)
        }
        "answerCallbackQuery" => {
            if str_param(&params, "callback_query_id").is_none() {
                return bad_request("callback_query_id is empty");
            }
            lock(&shared.inner)
                .callback_answers
                .push(Value::Object(params));
            ok(json!(true))
        }
        "getChat" => match int_param(&params, "chat_id") {
            Some(chat) => ok(chat_json(chat)),
            None => bad_request("chat_id is empty"),
        },
        "getChatMember" => {
            let (Some(chat), Some(user)) =
                (int_param(&params, "chat_id"), int_param(&params, "user_id"))
            else {
                return bad_request("chat_id and user_id are required");
            };
            let admin = lock(&shared.inner)
                .admins
                .get(&chat)
                .is_some_and(|admins| admins.contains(&user));
            ok(member_json(user, admin))
        }
        "getChatAdministrators" => {
            let Some(chat) = int_param(&params, "chat_id") else {
                return bad_request("chat_id is empty");
            };
            let mut admins: Vec<i64> = lock(&shared.inner)
                .admins
                .get(&chat)
                .map(|admins| admins.iter().copied().collect())
                .unwrap_or_default();
            admins.sort_unstable();
            ok(Value::Array(
                admins.into_iter().map(|u| member_json(u, true)).collect(),
            ))
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found: method not found", None),
    }
}

fn member_json(user: i64, admin: bool) -> Value {
    if admin {
        json!({
            "user": user_json(user), "status": "administrator", "is_anonymous": false,
            "can_be_edited": false, "can_manage_chat": true, "can_change_info": true,
            "can_delete_messages": true, "can_manage_video_chats": true, "can_invite_users": true,
            "can_restrict_members": true, "can_promote_members": false, "can_pin_messages": true
        })
    } else {
        json!({"user": user_json(user), "status": "member"})
    }
}

async fn get_updates(shared: &Arc<Shared>, params: &Map<String, Value>) -> Response {
    let offset = int_param(params, "offset").unwrap_or(0);
    let timeout = int_param(params, "timeout").unwrap_or(0).clamp(0, 50) as u64;
    let limit = int_param(params, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let generation = {
        let mut inner = lock(&shared.inner);
        inner.poll_generation += 1;
        inner.poll_generation
    };
    // Wakes a poll this one overtakes.
    shared.new_update.notify_waiters();
    loop {
        // Registered before looking, so an update pushed in between is not missed.
        let notified = shared.new_update.notified();
        {
            let mut inner = lock(&shared.inner);
            if inner.poll_generation != generation {
                // Telegram ends the older of two overlapping long polls this way.
                inner.poll_conflicts += 1;
                return error(
                    StatusCode::CONFLICT,
                    "Conflict: terminated by other getUpdates request; make sure that only \
                     one bot instance is running",
                    None,
                );
            }
            inner.get_updates_calls += 1;
            // An offset confirms every update below it; they are never sent again.
            while inner.updates.front().is_some_and(|(id, _)| *id < offset) {
                inner.updates.pop_front();
            }
            let batch: Vec<Value> = inner
                .updates
                .iter()
                .take(limit)
                .map(|(_, u)| u.clone())
                .collect();
            if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                return ok(Value::Array(batch));
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// What a reader sees of an HTML-mode text; `Err` with Telegram's description when the
/// markup would be refused (unsupported or unbalanced tags, unknown entities).
fn visible_text(params: &Map<String, Value>, raw: &str) -> Result<String, String> {
    let html = str_param(params, "parse_mode").is_some_and(|m| m.eq_ignore_ascii_case("html"));
    if !html {
        return Ok(raw.to_owned());
    }
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "blockquote",
        "span",
        "tg-spoiler",
        "tg-emoji",
    ];
    let mut out = String::with_capacity(raw.len());
    let mut open: Vec<String> = Vec::new();
    let mut rest = raw;
    while let Some(at) = rest.find(['<', '&']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(entity) = tail.strip_prefix('&') {
            let decoded = entity.find(';').filter(|end| *end <= 10).and_then(|end| {
                let name = &entity[..end];
                let c = match name {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    _ => {
                        let code = match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                        {
                            Some(hex) => u32::from_str_radix(hex, 16).ok(),
                            None => name.strip_prefix('#').and_then(|dec| dec.parse().ok()),
                        };
                        char::from_u32(code?)?
                    }
                };
                Some((c, end))
            });
            match decoded {
                Some((c, end)) => {
                    out.push(c);
                    rest = &entity[end + 1..];
                }
                None => return Err("can't parse entities: unsupported entity".to_owned()),
            }
            continue;
        }
        let Some(end) = tail.find('>') else {
            return Err(format!(
                "can't parse entities: unclosed start tag at byte offset {}",
                raw.len() - tail.len()
            ));
        };
        let tag = &tail[1..end];
        if let Some(name) = tag.strip_prefix('/') {
            if open.pop().as_deref() != Some(name.trim()) {
                return Err(format!(
                    "can't parse entities: unmatched end tag \"{name}\""
                ));
            }
        } else {
            let name = tag.split_whitespace().next().unwrap_or_default().to_owned();
            if !TAGS.contains(&name.as_str()) {
                return Err(format!(
                    "can't parse entities: unsupported start tag \"{name}\""
                ));
            }
            open.push(name);
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    match open.pop() {
        Some(name) => Err(format!(
            "can't parse entities: can't find end tag corresponding to start tag \"{name}\""
        )),
        None => Ok(out),
    }
}

/// Sends a second Telegram takes as paid broadcasts (`allow_paid_broadcast`), which are
/// exempt from the overall limit but not from the per-chat one.
pub const PAID_BROADCAST_PER_SECOND: usize = 1000;

/// The refusal Telegram would give a valid send to `chat_id` now, if any: an outage,
/// a scripted failure, a block or migration, or a rate limit (a `paid` send counts
/// against [`PAID_BROADCAST_PER_SECOND`] instead of the overall limit). Counts what it
/// refuses, and the paid sends it accepts.
fn refusal(inner: &mut Inner, chat_id: i64, now: Instant, paid: bool) -> Option<Response> {
    if inner.outage {
        inner.refused_during_outage += 1;
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            None,
        ));
    }
    if let Some(failure) = inner
        .failures
        .get_mut(&chat_id)
        .and_then(VecDeque::pop_front)
    {
        if matches!(failure, Failure::RetryAfter(_)) {
            inner.too_many += 1;
        }
        return Some(failure_response(&failure));
    }
    if inner.blocked.contains(&chat_id) {
        return Some(failure_response(&Failure::Blocked));
    }
    if inner.unstarted.contains(&chat_id) {
        return Some(failure_response(&Failure::CantInitiate));
    }
    if let Some(to) = inner.migrated.get(&chat_id).copied() {
        return Some(failure_response(&Failure::Migrate(to)));
    }
    let Some(limits) = inner.limits else {
        inner.paid_sent += u64::from(paid);
        return None;
    };
    for recent in [&mut inner.recent, &mut inner.recent_paid] {
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limits.window)
        {
            recent.pop_front();
        }
    }
    let chat_too_soon = inner
        .last_per_chat
        .get(&chat_id)
        .is_some_and(|t| now.duration_since(*t) < limits.per_chat);
    let overall_full = if paid {
        inner.recent_paid.len() >= PAID_BROADCAST_PER_SECOND
    } else {
        inner.recent.len() >= limits.global
    };
    if overall_full || chat_too_soon {
        inner.too_many += 1;
        return Some(failure_response(&Failure::RetryAfter(limits.retry_after)));
    }
    if paid {
        inner.recent_paid.push_back(now);
        inner.paid_sent += 1;
    } else {
        inner.recent.push_back(now);
    }
    inner.last_per_chat.insert(chat_id, now);
    None
}

fn send(shared: &Arc<Shared>, method: &str, params: &Map<String, Value>) -> Response {
    let Some(chat_id) = int_param(params, "chat_id") else {
        return bad_request("chat_id is empty");
    };
    let (raw, photo) = if method == "sendPhoto" {
        match str_param(params, "photo") {
            Some(photo) => (
                str_param(params, "caption").unwrap_or_default(),
                Some(photo),
            ),
            None => return bad_request("there is no photo in the request"),
        }
    } else {
        match str_param(params, "text") {
            Some(text) if !text.trim().is_empty() => (text, None),
            _ => return bad_request("message text is empty"),
        }
    };
    let limit = if photo.is_some() { 1024 } else { 4096 };
    let text = match visible_text(params, &raw) {
        Ok(text) => text,
        Err(why) => return bad_request(&why),
    };
    if text.chars().count() > limit {
        return bad_request(if photo.is_some() {
            "message caption is too long"
        } else {
            "message is too long"
        });
    }
    let reply_markup = json_param(params, "reply_markup");
    let silent = bool_param(params, "disable_notification");
    let paid = bool_param(params, "allow_paid_broadcast");
    let now = Instant::now();
    let mut inner = lock(&shared.inner);
    if let Some(refused) = refusal(&mut inner, chat_id, now, paid) {
        return refused;
    }
    let reply_to = match reply_target(params) {
        Some((target, allow_without)) => match inner.messages.get(&(chat_id, target)) {
            Some(replied) => Some((target, replied.clone())),
            None if allow_without => None,
            None => return bad_request("message to be replied not found"),
        },
        None => None,
    };
    inner.next_message_id += 1;
    let message_id = inner.next_message_id;
    let mut message = json!({
        "message_id": message_id, "date": now_secs(), "chat": chat_json(chat_id), "from": bot_json(),
    });
    if photo.is_some() {
        message["photo"] = json!([{"file_id": format!("AgAD{message_id}"), "file_unique_id": format!("AQAD{message_id}"), "width": 480, "height": 360}]);
        if !text.is_empty() {
            message["caption"] = json!(text);
        }
    } else {
        message["text"] = json!(text);
    }
    if let Some(markup) = &reply_markup {
        message["reply_markup"] = markup.clone();
    }
    if let Some((_, replied)) = &reply_to {
        message["reply_to_message"] = replied.clone();
    }
    inner
        .messages
        .insert((chat_id, message_id), message.clone());
    inner.sent.push(Sent {
        method: method.to_owned(),
        chat_id,
        text,
        raw,
        photo,
        reply_markup,
        message_id,
        reply_to: reply_to.map(|(target, _)| target),
        silent,
        at: now,
    });
    let count = inner.sent.len();
    drop(inner);
    shared.sent_count.send_replace(count);
    ok(message)
}

fn edit(shared: &Arc<Shared>, method: &str, params: &Map<String, Value>) -> Response {
    let (Some(chat_id), Some(message_id)) = (
        int_param(params, "chat_id"),
        int_param(params, "message_id"),
    ) else {
        return bad_request("chat_id and message_id are required");
    };
    // What the edit sets, checked before the message is looked at, as Telegram does.
    let content = match method {
        "editMessageText" => {
            let Some(raw) = str_param(params, "text").filter(|t| !t.trim().is_empty()) else {
                return bad_request("message text is empty");
            };
            match visible_text(params, &raw) {
                Ok(text) if text.chars().count() > 4096 => {
                    return bad_request("message is too long")
                }
                Ok(text) => Some(("text", text)),
                Err(why) => return bad_request(&why),
            }
        }
        "editMessageCaption" => {
            let raw = str_param(params, "caption").unwrap_or_default();
            match visible_text(params, &raw) {
                Ok(text) if text.chars().count() > 1024 => {
                    return bad_request("message caption is too long")
                }
                Ok(text) => Some(("caption", text)),
                Err(why) => return bad_request(&why),
            }
        }
        _ => None,
    };
    let markup = json_param(params, "reply_markup");
    let mut inner = lock(&shared.inner);
    // Edits take no `allow_paid_broadcast`: they always count against the overall limit.
    if let Some(refused) = refusal(&mut inner, chat_id, Instant::now(), false) {
        return refused;
    }
    let Some(message) = inner.messages.get_mut(&(chat_id, message_id)) else {
        return bad_request("message to edit not found");
    };
    let is_photo = message.get("photo").is_some();
    match (&content, is_photo) {
        (Some(("text", _)), true) => return bad_request("there is no text in the message to edit"),
        (Some(("caption", _)), false) => {
            return bad_request("there is no caption in the message to edit")
        }
        _ => {}
    }
    let unchanged_content = content.as_ref().is_none_or(|(field, text)| {
        message
            .get(*field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            == text
    });
    if unchanged_content && message.get("reply_markup") == markup.as_ref() {
        return bad_request(
            "message is not modified: specified new message content and reply markup are \
             exactly the same as a content and reply markup of the current message",
        );
    }
    if let (Some((field, text)), Some(fields)) = (content, message.as_object_mut()) {
        if text.is_empty() {
            fields.remove(field);
        } else {
            fields.insert(field.to_owned(), json!(text));
        }
    }
    match markup {
        Some(markup) => message["reply_markup"] = markup,
        None => {
            if let Some(fields) = message.as_object_mut() {
                fields.remove("reply_markup");
            }
        }
    }
    message["edit_date"] = json!(now_secs());
    ok(message.clone())
}

/// A boolean parameter (`true`, or `"true"` in a form).
fn bool_param(params: &Map<String, Value>, name: &str) -> bool {
    match params.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The message a send replies to, and whether it may go out without it: from
/// `reply_parameters` or the older `reply_to_message_id`/`allow_sending_without_reply`.
fn reply_target(params: &Map<String, Value>) -> Option<(i64, bool)> {
    if let Some(Value::Object(reply)) = json_param(params, "reply_parameters") {
        let target = int_param(&reply, "message_id")?;
        return Some((target, bool_param(&reply, "allow_sending_without_reply")));
    }
    let target = int_param(params, "reply_to_message_id")?;
    Some((target, bool_param(params, "allow_sending_without_reply")))
}

impl TelegramServer {
    /// Starts a server on 127.0.0.1:0 accepting `token`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        let (sent_count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            inner: Mutex::new(Inner {
                next_update_id: 500_000,
                next_message_id: 100,
                ..Inner::default()
            }),
            new_update: Notify::new(),
            sent_count,
        });
        let router = Router::new()
            .route("/{bot}/{method}", any(handle))
            .with_state(shared.clone());
        let served = serve(router).await?;
        Ok(Self {
            url: served.base_url(),
            token: token.to_owned(),
            shared,
            _served: served,
        })
    }

    fn push_update(&self, build: impl FnOnce(i64) -> Value) {
        let mut inner = lock(&self.shared.inner);
        inner.next_update_id += 1;
        let id = inner.next_update_id;
        inner.updates.push_back((id, build(id)));
        drop(inner);
        self.shared.new_update.notify_waiters();
    }

    /// Person `from` writes `text` in `chat` (their private chat when `chat == from`);
    /// a leading `/command` is marked as a bot command entity, as clients do.
    pub fn send_text(&self, chat: i64, from: i64, text: &str) {
        let message_id = {
            let mut inner = lock(&self.shared.inner);
            if chat == from {
                // Writing to the bot starts the private chat.
                inner.unstarted.remove(&from);
            }
            inner.next_message_id += 1;
            inner.next_message_id
        };
        let text = text.to_owned();
        self.push_update(move |update_id| {
            let mut message = json!({
                "message_id": message_id, "date": now_secs(), "chat": chat_json(chat),
                "from": user_json(from), "text": text,
            });
            if text.starts_with('/') {
                let length = text
                    .split_whitespace()
                    .next()
                    .map_or(0, |c| c.encode_utf16().count());
                message["entities"] =
                    json!([{"type": "bot_command", "offset": 0, "length": length}]);
            }
            json!({"update_id": update_id, "message": message})
        });
    }

    /// Person `from` presses the inline button carrying `data` under message `message_id`
    /// of `chat` (the message as it is now, after edits).
    pub fn press(&self, chat: i64, message_id: i64, from: i64, data: &str) {
        let message = self.message(chat, message_id).unwrap_or_else(
            || json!({"message_id": message_id, "date": now_secs(), "chat": chat_json(chat), "from": bot_json(), "text": ""}),
        );
        let data = data.to_owned();
        self.push_update(move |update_id| {
            json!({"update_id": update_id, "callback_query": {
                "id": format!("{update_id}{message_id}"), "from": user_json(from), "message": message,
                "chat_instance": format!("{chat}"), "data": data,
            }})
        });
    }

    /// Makes `user` an administrator of group `chat`.
    pub fn add_admin(&self, chat: i64, user: i64) {
        lock(&self.shared.inner)
            .admins
            .entry(chat)
            .or_default()
            .insert(user);
    }

    /// Scripts the answers to the next sends (or edits) to `chat`, one failure per call.
    pub fn fail_next(&self, chat: i64, failures: impl IntoIterator<Item = Failure>) {
        lock(&self.shared.inner)
            .failures
            .entry(chat)
            .or_default()
            .extend(failures);
    }

    /// Every send to `chat` answers 403 from now on.
    pub fn block(&self, chat: i64) {
        lock(&self.shared.inner).blocked.insert(chat);
    }

    /// Sends to `chat` are accepted again (the user unblocked the bot).
    pub fn unblock(&self, chat: i64) {
        lock(&self.shared.inner).blocked.remove(&chat);
    }

    /// Every send to `chat` answers 400 with `migrate_to_chat_id = to` from now on.
    pub fn migrate(&self, chat: i64, to: i64) {
        lock(&self.shared.inner).migrated.insert(chat, to);
    }

    /// Enforces send rates from now on.
    pub fn enforce(&self, limits: RateLimits) {
        lock(&self.shared.inner).limits = Some(limits);
    }

    /// From now on every send is answered 500 (`outage == true`) or served again.
    pub fn set_outage(&self, outage: bool) {
        lock(&self.shared.inner).outage = outage;
    }

    /// Sends refused during outages so far.
    pub fn refused_during_outage(&self) -> u64 {
        lock(&self.shared.inner).refused_during_outage
    }

    /// From now on every call (any method) is answered 502 Bad Gateway, in the Bot API's
    /// error shape, until switched off (`down == false`).
    pub fn set_bad_gateway(&self, down: bool) {
        lock(&self.shared.inner).gateway = down.then_some(GatewayOutage::UntilOff);
    }

    /// Every call is answered 502 Bad Gateway for `period` from now, then served again.
    pub fn bad_gateway_for(&self, period: Duration) {
        lock(&self.shared.inner).gateway = Some(GatewayOutage::Until(Instant::now() + period));
    }

    /// Calls answered 502 so far.
    pub fn bad_gateways(&self) -> u64 {
        lock(&self.shared.inner).bad_gateways
    }

    /// Private messages to `user` are refused with 403 "bot can't initiate conversation"
    /// until they write to the bot ([`TelegramServer::send_text`] in their private chat).
    pub fn never_started(&self, user: i64) {
        lock(&self.shared.inner).unstarted.insert(user);
    }

    /// 429 answers given so far (scripted and rate-limited).
    pub fn too_many(&self) -> u64 {
        lock(&self.shared.inner).too_many
    }

    /// Sends accepted as paid broadcasts (`allow_paid_broadcast`).
    pub fn paid_sent(&self) -> u64 {
        lock(&self.shared.inner).paid_sent
    }

    /// The current state of a message the bot sent (after edits).
    pub fn message(&self, chat: i64, message_id: i64) -> Option<Value> {
        lock(&self.shared.inner)
            .messages
            .get(&(chat, message_id))
            .cloned()
    }

    /// `(label, callback data or url)` of the buttons message `message_id` has now.
    pub fn buttons(&self, chat: i64, message_id: i64) -> Vec<(String, String)> {
        let message = self.message(chat, message_id);
        buttons_of(message.as_ref().and_then(|m| m.get("reply_markup")))
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.shared.inner).sent.clone()
    }

    /// How many messages were sent so far.
    pub fn sent_len(&self) -> usize {
        lock(&self.shared.inner).sent.len()
    }

    /// Messages sent to `chat`.
    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        lock(&self.shared.inner)
            .sent
            .iter()
            .filter(|s| s.chat_id == chat)
            .cloned()
            .collect()
    }

    /// Every `answerCallbackQuery` call.
    pub fn callback_answers(&self) -> Vec<Value> {
        lock(&self.shared.inner).callback_answers.clone()
    }

    /// Every call so far (canonical method name and parameters), in order.
    pub fn calls(&self) -> Vec<(String, Value)> {
        lock(&self.shared.inner).calls.clone()
    }

    /// Parameters of every call of `method` (any case), in order.
    pub fn calls_of(&self, method: &str) -> Vec<Value> {
        let method = canonical(method);
        lock(&self.shared.inner)
            .calls
            .iter()
            .filter(|(called, _)| *called == method)
            .map(|(_, params)| params.clone())
            .collect()
    }

    /// Long polls of `getUpdates` ended with 409 Conflict because another overtook them
    /// (two bot instances polling one token).
    pub fn poll_conflicts(&self) -> u64 {
        lock(&self.shared.inner).poll_conflicts
    }

    /// `getUpdates` rounds so far (each look at the queue of a long poll counts).
    pub fn get_updates_calls(&self) -> u64 {
        lock(&self.shared.inner).get_updates_calls
    }

    /// Waits until the bot long-polls `getUpdates` (so its dispatcher is up).
    pub async fn wait_polling(&self, timeout: Duration) {
        crate::eventually("the bot polls getUpdates", timeout, || {
            lock(&self.shared.inner).get_updates_calls > 0
        })
        .await;
    }

    /// Waits until at least `count` messages were sent in total and returns them all;
    /// panics after `timeout`.
    pub async fn wait_sent(&self, count: usize, timeout: Duration) -> Vec<Sent> {
        let mut rx = self.shared.sent_count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await;
        assert!(
            reached.is_ok(),
            "timed out after {timeout:?} waiting for {count} messages; {} were sent",
            self.sent_len()
        );
        self.sent()
    }

    /// Waits until a message to `chat` satisfies `pred` and returns the first that does;
    /// panics after `timeout`, listing what the chat got.
    pub async fn wait_for(
        &self,
        chat: i64,
        timeout: Duration,
        pred: impl Fn(&Sent) -> bool,
    ) -> Sent {
        let mut rx = self.shared.sent_count.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = lock(&self.shared.inner)
                .sent
                .iter()
                .find(|s| s.chat_id == chat && pred(s))
            {
                return found.clone();
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let texts: Vec<String> = self.sent_to(chat).into_iter().map(|s| s.text).collect();
                panic!("timed out waiting for a message to chat {chat}; it got {texts:#?}");
            }
        }
    }

    /// Waits until message `message_id` of `chat` (after edits) satisfies `pred`.
    pub async fn wait_message(
        &self,
        chat: i64,
        message_id: i64,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(message) = self.message(chat, message_id).filter(|m| pred(m)) {
                return message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on message {message_id} of chat {chat}: {:#?}",
                self.message(chat, message_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(text: &str) -> Result<String, String> {
        let mut params = Map::new();
        params.insert("parse_mode".into(), json!("HTML"));
        visible_text(&params, text)
    }

    #[test]
    fn html_markup_is_checked_and_removed() {
        assert_eq!(
            html("<b>Hi</b> &lt;3 <a href=\"x\">link</a>").unwrap(),
            "Hi <3 link"
        );
        assert!(html("<b>open").unwrap_err().contains("end tag"));
        assert!(html("<div>x</div>")
            .unwrap_err()
            .contains("unsupported start tag"));
        assert!(html("a & b").is_err());
        assert_eq!(html("it&#39;s &#x41;").unwrap(), "it's A");
        assert_eq!(visible_text(&Map::new(), "<b>").unwrap(), "<b>");
    }

    async fn post(server: &TelegramServer, method: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/bot{}/{method}", server.url, server.token))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    #[tokio::test]
    async fn sends_are_recorded_and_scripted_failures_answered_in_order() {
        let server = TelegramServer::start("1:test").await.unwrap();
        server.fail_next(7, [Failure::RetryAfter(3), Failure::Migrate(-100)]);
        let message = json!({"chat_id": 7, "text": "<b>hi</b>", "parse_mode": "HTML"});
        let (status, body) = post(&server, "SendMessage", message.clone()).await;
        assert_eq!(status, 429);
        assert_eq!(body["parameters"]["retry_after"], 3);
        let (status, body) = post(&server, "sendMessage", message.clone()).await;
        assert_eq!(status, 400);
        assert_eq!(body["parameters"]["migrate_to_chat_id"], -100);
        let (status, body) = post(&server, "sendMessage", message).await;
        assert_eq!(status, 200);
        assert_eq!(body["result"]["text"], "hi");
        let sent = server.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].chat_id, sent[0].raw.as_str()), (7, "<b>hi</b>"));
        assert_eq!(server.too_many(), 1);
        assert_eq!(server.calls_of("sendmessage").len(), 3);
        server.set_outage(true);
        let (status, _) = post(&server, "sendMessage", json!({"chat_id": 7, "text": "x"})).await;
        assert_eq!(status, 500);
        assert_eq!(server.refused_during_outage(), 1);
    }

    #[tokio::test]
    async fn a_gateway_outage_answers_every_call_502_while_it_lasts() {
        let server = TelegramServer::start("1:test").await.unwrap();
        let message = json!({"chat_id": 7, "text": "x"});
        server.set_bad_gateway(true);
        let (status, body) = post(&server, "sendMessage", message.clone()).await;
        assert_eq!(status, 502);
        assert_eq!(
            body,
            json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})
        );
        let (status, _) = post(&server, "getMe", json!({})).await;
        assert_eq!(status, 502);
        server.set_bad_gateway(false);
        assert_eq!(post(&server, "sendMessage", message.clone()).await.0, 200);

        server.bad_gateway_for(Duration::from_millis(300));
        assert_eq!(post(&server, "sendMessage", message.clone()).await.0, 502);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(post(&server, "sendMessage", message).await.0, 200);
        assert_eq!(server.bad_gateways(), 3);
        assert_eq!(server.sent_len(), 2);
    }

    #[tokio::test]
    async fn a_user_who_never_started_the_bot_cannot_be_messaged_until_they_write() {
        let server = TelegramServer::start("1:test").await.unwrap();
        server.never_started(42);
        let (status, body) =
            post(&server, "sendMessage", json!({"chat_id": 42, "text": "x"})).await;
        assert_eq!(status, 403);
        assert_eq!(
            body["description"],
            "Forbidden: bot can't initiate conversation with a user"
        );
        server.send_text(42, 42, "/start");
        assert_eq!(
            post(&server, "sendMessage", json!({"chat_id": 42, "text": "x"}))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn rate_limits_answer_429_per_chat() {
        let server = TelegramServer::start("1:test").await.unwrap();
        server.enforce(RateLimits {
            global: 100,
            window: Duration::from_secs(1),
            per_chat: Duration::from_secs(60),
            retry_after: 5,
        });
        let (first, _) = post(&server, "sendMessage", json!({"chat_id": 1, "text": "a"})).await;
        let (second, body) = post(&server, "sendMessage", json!({"chat_id": 1, "text": "b"})).await;
        let (other, _) = post(&server, "sendMessage", json!({"chat_id": 2, "text": "c"})).await;
        assert_eq!((first, second, other), (200, 429, 200));
        assert_eq!(body["parameters"]["retry_after"], 5);
    }

    #[tokio::test]
    async fn paid_broadcasts_pass_the_overall_limit_but_not_the_per_chat_one() {
        let server = TelegramServer::start("1:test").await.unwrap();
        server.enforce(RateLimits {
            global: 1,
            window: Duration::from_secs(60),
            per_chat: Duration::from_secs(60),
            retry_after: 5,
        });
        let send = |chat: i64, paid: bool| {
            post(
                &server,
                "sendMessage",
                json!({"chat_id": chat, "text": "x", "allow_paid_broadcast": paid}),
            )
        };
        assert_eq!(send(1, false).await.0, 200);
        assert_eq!(send(2, false).await.0, 429, "the overall limit");
        assert_eq!(send(2, true).await.0, 200, "paid: past the overall limit");
        assert_eq!(send(3, true).await.0, 200);
        assert_eq!(send(3, true).await.0, 429, "paid: still one per chat");
        assert_eq!(server.paid_sent(), 2);
    }

    #[tokio::test]
    async fn get_updates_long_polls_until_an_update_arrives() {
        let server = TelegramServer::start("1:test").await.unwrap();
        let (_, empty) = post(&server, "getUpdates", json!({"timeout": 0})).await;
        assert_eq!(empty["result"], json!([]));
        let polling = post(&server, "getUpdates", json!({"timeout": 10}));
        let pushing = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            server.send_text(5, 5, "/start now");
        };
        let ((_, got), ()) = tokio::join!(polling, pushing);
        let update = &got["result"][0];
        assert_eq!(update["message"]["text"], "/start now");
        assert_eq!(update["message"]["entities"][0]["length"], 6);
        let next = update["update_id"].as_i64().unwrap() + 1;
        let (_, after) = post(&server, "getUpdates", json!({"offset": next})).await;
        assert_eq!(after["result"], json!([]), "confirmed updates are gone");
    }
}
