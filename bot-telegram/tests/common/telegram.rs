//! A local server speaking the Telegram Bot API, for tests and the fan-out bench.
//!
//! It answers `POST /bot<token>/<method>` with JSON, urlencoded or multipart bodies the
//! way api.telegram.org does: `{"ok": true, "result": …}` or a Bot API error object with
//! the matching HTTP status (`{"ok": false, "error_code", "description", "parameters"}`).
//! It serves what teloxide calls at start-up (`getMe`, `getWebhookInfo`,
//! `deleteWebhook`), long-polls `getUpdates` honouring `offset`/`timeout`, records every
//! `sendMessage`/`sendPhoto`/`editMessageText`/`answerCallbackQuery`, answers
//! `getChatMember`/`getChatAdministrators` from a table of admins, and can be told to
//! answer 403 (blocked), 400 with `migrate_to_chat_id`, or 429 with `retry_after` for a
//! chat, or to enforce overall and per-chat send rates with 429s.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// The bot account the server plays.
pub const BOT_ID: i64 = 7_000_000_001;
/// Its username.
pub const BOT_USERNAME: &str = "stargazer_test_bot";

/// One message the bot sent successfully.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `sendMessage` or `sendPhoto`.
    pub method: String,
    /// Target chat.
    pub chat_id: i64,
    /// Text or caption as the reader sees it (HTML markup parsed away).
    pub text: String,
    /// Text or caption as the bot sent it.
    pub raw: String,
    /// Photo URL for `sendPhoto`.
    pub photo: Option<String>,
    /// The inline keyboard, if any.
    pub reply_markup: Option<Value>,
    /// Id given to the message.
    pub message_id: i64,
    /// When it was accepted.
    pub at: Instant,
}

impl Sent {
    /// `(text, callback_data or url)` of every inline button.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(rows) = self
            .reply_markup
            .as_ref()
            .and_then(|m| m.get("inline_keyboard"))
            .and_then(Value::as_array)
        {
            for row in rows {
                for b in row.as_array().into_iter().flatten() {
                    let text = b["text"].as_str().unwrap_or_default().to_owned();
                    let target = b
                        .get("callback_data")
                        .or_else(|| b.get("url"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    out.push((text, target));
                }
            }
        }
        out
    }
}

/// An answer scripted for the next send to a chat.
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
}

/// Send rates the server enforces, answering 429 when exceeded.
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
    token: String,
    next_update_id: i64,
    updates: VecDeque<(i64, Value)>,
    next_message_id: i64,
    sent: Vec<Sent>,
    messages: HashMap<(i64, i64), Value>,
    calls: Vec<(String, Value)>,
    callback_answers: Vec<Value>,
    edits: Vec<Value>,
    admins: HashMap<i64, HashSet<i64>>,
    failures: HashMap<i64, VecDeque<Failure>>,
    blocked: HashSet<i64>,
    migrated: HashMap<i64, i64>,
    limits: Option<RateLimits>,
    recent: VecDeque<Instant>,
    last_per_chat: HashMap<i64, Instant>,
    too_many: u64,
    get_updates_calls: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    new_update: Notify,
    sent_count: watch::Sender<usize>,
}

/// A running fake Bot API; stops when dropped.
pub struct TelegramServer {
    /// Base URL to give the bot (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The token it accepts.
    pub token: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for TelegramServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A `Chat` object for `id`: private for positive ids, supergroup for negative ones.
pub fn chat_json(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "supergroup", "title": format!("Group {id}")})
    } else {
        json!({"id": id, "type": "private", "first_name": format!("User{id}"), "username": format!("user{id}")})
    }
}

/// A `User` object for a person with this id.
pub fn user_json(id: i64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": format!("User{id}"), "username": format!("user{id}"), "language_code": "en"})
}

fn bot_user_json() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Stargazer", "username": BOT_USERNAME})
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn error(status: u16, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({"ok": false, "error_code": status, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(body)).into_response()
}

fn failure_response(f: &Failure) -> Response {
    match f {
        Failure::RetryAfter(s) => error(
            429,
            &format!("Too Many Requests: retry after {s}"),
            Some(json!({"retry_after": s})),
        ),
        Failure::Blocked => error(403, "Forbidden: bot was blocked by the user", None),
        Failure::Migrate(to) => error(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(json!({"migrate_to_chat_id": to})),
        ),
        Failure::BadRequest(d) => error(400, d, None),
    }
}

/// Reads a parameter as i64 whether it came as a JSON number or a form string.
fn param_i64(params: &Map<String, Value>, name: &str) -> Option<i64> {
    match params.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn param_str(params: &Map<String, Value>, name: &str) -> Option<String> {
    match params.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Reads a parameter that is JSON (`reply_markup`), sent inline or as a string field.
fn param_json(params: &Map<String, Value>, name: &str) -> Option<Value> {
    match params.get(name)? {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

async fn read_params(request: Request) -> Result<Map<String, Value>, Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| error(400, &format!("Bad Request: {e}"), None))?;
        let mut map = Map::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| error(400, &format!("Bad Request: {e}"), None))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let text = field
                .text()
                .await
                .map_err(|e| error(400, &format!("Bad Request: {e}"), None))?;
            map.insert(name, Value::String(text));
        }
        return Ok(map);
    }
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|e| error(400, &format!("Bad Request: {e}"), None))?;
    if body.is_empty() {
        return Ok(Map::new());
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(&body);
        return Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(error(400, "Bad Request: can't parse request body", None)),
    }
}

fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let params = match read_params(request).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    {
        let mut inner = shared.inner.lock().unwrap();
        if bot.strip_prefix("bot") != Some(inner.token.as_str()) {
            return error(401, "Unauthorized", None);
        }
        inner
            .calls
            .push((method.clone(), Value::Object(params.clone())));
    }
    // Bot API method names are case-insensitive (teloxide sends `SendMessage`).
    let method = canonical(&method);
    match method.as_str() {
        "getMe" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Stargazer", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false, "has_main_web_app": false
        })),
        "getWebhookInfo" => {
            ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "deleteWebhook" | "setMyCommands" | "deleteMyCommands" => ok(json!(true)),
        "getUpdates" => get_updates(&shared, &params).await,
        "sendMessage" | "sendPhoto" => send(&shared, &method, &params),
        "answerCallbackQuery" => {
            shared
                .inner
                .lock()
                .unwrap()
                .callback_answers
                .push(Value::Object(params));
            ok(json!(true))
        }
        "editMessageText" | "editMessageReplyMarkup" => edit(&shared, &method, &params),
        "getChatMember" => {
            let (Some(chat), Some(user)) =
                (param_i64(&params, "chat_id"), param_i64(&params, "user_id"))
            else {
                return error(400, "Bad Request: chat_id and user_id are required", None);
            };
            let inner = shared.inner.lock().unwrap();
            ok(member_json(
                user,
                inner.admins.get(&chat).is_some_and(|a| a.contains(&user)),
            ))
        }
        "getChatAdministrators" => {
            let Some(chat) = param_i64(&params, "chat_id") else {
                return error(400, "Bad Request: chat_id is required", None);
            };
            let inner = shared.inner.lock().unwrap();
            let admins: Vec<Value> = inner
                .admins
                .get(&chat)
                .into_iter()
                .flatten()
                .map(|u| member_json(*u, true))
                .collect();
            ok(Value::Array(admins))
        }
        _ => error(404, "Not Found: method not found", None),
    }
}

const METHODS: &[&str] = &[
    "getMe",
    "getWebhookInfo",
    "deleteWebhook",
    "setMyCommands",
    "deleteMyCommands",
    "getUpdates",
    "sendMessage",
    "sendPhoto",
    "answerCallbackQuery",
    "editMessageText",
    "editMessageReplyMarkup",
    "getChatMember",
    "getChatAdministrators",
];

fn canonical(method: &str) -> String {
    METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .map_or_else(|| method.to_owned(), |m| (*m).to_owned())
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
    let offset = param_i64(params, "offset").unwrap_or(0);
    let timeout = param_i64(params, "timeout").unwrap_or(0).clamp(0, 50) as u64;
    let limit = param_i64(params, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = shared.new_update.notified();
        {
            let mut inner = shared.inner.lock().unwrap();
            inner.get_updates_calls += 1;
            // An offset confirms every update below it.
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

/// The text a reader sees: with `parse_mode=HTML`, the markup checked as Telegram does
/// (supported tags, balanced) and removed, entities decoded.
fn parse_text(params: &Map<String, Value>, raw: &str) -> Result<String, String> {
    let html = param_str(params, "parse_mode").is_some_and(|m| m.eq_ignore_ascii_case("html"));
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
    let bad = |why: String| format!("Bad Request: can't parse entities: {why}");
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find(['<', '&']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix('&') {
            let end = after.find(';').filter(|e| *e <= 7);
            let decoded = end.and_then(|e| match &after[..e] {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                _ => None,
            });
            match (end, decoded) {
                (Some(e), Some(c)) => {
                    out.push(c);
                    rest = &after[e + 1..];
                }
                _ => {
                    out.push('&');
                    rest = after;
                }
            }
            continue;
        }
        let Some(end) = tail.find('>') else {
            return Err(bad(format!(
                "unclosed tag at byte offset {}",
                raw.len() - tail.len()
            )));
        };
        let inner = &tail[1..end];
        if let Some(name) = inner.strip_prefix('/') {
            if open.pop().as_deref() != Some(name.trim()) {
                return Err(bad(format!("unmatched end tag \"{name}\"")));
            }
        } else {
            let name = inner.split_whitespace().next().unwrap_or("").to_owned();
            if !TAGS.contains(&name.as_str()) {
                return Err(bad(format!("unsupported start tag \"{name}\"")));
            }
            open.push(name);
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    if let Some(name) = open.pop() {
        return Err(bad(format!(
            "can't find end tag corresponding to start tag \"{name}\""
        )));
    }
    Ok(out)
}

fn send(shared: &Arc<Shared>, method: &str, params: &Map<String, Value>) -> Response {
    let Some(chat_id) = param_i64(params, "chat_id") else {
        return error(400, "Bad Request: chat_id is empty", None);
    };
    let text = if method == "sendPhoto" {
        param_str(params, "caption").unwrap_or_default()
    } else {
        match param_str(params, "text") {
            Some(t) if !t.is_empty() => t,
            _ => return error(400, "Bad Request: message text is empty", None),
        }
    };
    let photo = if method == "sendPhoto" {
        match param_str(params, "photo") {
            Some(p) => Some(p),
            None => return error(400, "Bad Request: there is no photo in the request", None),
        }
    } else {
        None
    };
    let reply_markup = param_json(params, "reply_markup");
    let raw = text;
    let text = match parse_text(params, &raw) {
        Ok(text) => text,
        Err(why) => return error(400, &why, None),
    };
    let mut inner = shared.inner.lock().unwrap();
    if let Some(f) = inner
        .failures
        .get_mut(&chat_id)
        .and_then(VecDeque::pop_front)
    {
        if matches!(f, Failure::RetryAfter(_)) {
            inner.too_many += 1;
        }
        return failure_response(&f);
    }
    if inner.blocked.contains(&chat_id) {
        return failure_response(&Failure::Blocked);
    }
    if let Some(to) = inner.migrated.get(&chat_id).copied() {
        return failure_response(&Failure::Migrate(to));
    }
    let now = Instant::now();
    if let Some(limits) = inner.limits {
        while inner
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limits.window)
        {
            inner.recent.pop_front();
        }
        let chat_too_soon = inner
            .last_per_chat
            .get(&chat_id)
            .is_some_and(|t| now.duration_since(*t) < limits.per_chat);
        if inner.recent.len() >= limits.global || chat_too_soon {
            inner.too_many += 1;
            return failure_response(&Failure::RetryAfter(limits.retry_after));
        }
        inner.recent.push_back(now);
        inner.last_per_chat.insert(chat_id, now);
    }
    inner.next_message_id += 1;
    let message_id = inner.next_message_id;
    let mut message = json!({
        "message_id": message_id, "date": now_secs(), "chat": chat_json(chat_id), "from": bot_user_json(),
    });
    if let Some(p) = &photo {
        message["photo"] = json!([{"file_id": format!("photo-{message_id}"), "file_unique_id": format!("u{message_id}"), "width": 320, "height": 180}]);
        if !text.is_empty() {
            message["caption"] = json!(text);
        }
        let _ = p;
    } else {
        message["text"] = json!(text);
    }
    if let Some(markup) = &reply_markup {
        message["reply_markup"] = markup.clone();
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
        at: now,
    });
    let count = inner.sent.len();
    drop(inner);
    shared.sent_count.send_replace(count);
    ok(message)
}

fn edit(shared: &Arc<Shared>, method: &str, params: &Map<String, Value>) -> Response {
    let (Some(chat_id), Some(message_id)) = (
        param_i64(params, "chat_id"),
        param_i64(params, "message_id"),
    ) else {
        return error(
            400,
            "Bad Request: chat_id and message_id are required",
            None,
        );
    };
    let mut inner = shared.inner.lock().unwrap();
    inner.edits.push(Value::Object(params.clone()));
    let Some(message) = inner.messages.get_mut(&(chat_id, message_id)) else {
        return error(400, "Bad Request: message to edit not found", None);
    };
    if method == "editMessageText" {
        if let Some(raw) = param_str(params, "text") {
            match parse_text(params, &raw) {
                Ok(text) => message["text"] = json!(text),
                Err(why) => return error(400, &why, None),
            }
        }
    }
    match param_json(params, "reply_markup") {
        Some(markup) => message["reply_markup"] = markup,
        None => {
            if let Some(m) = message.as_object_mut() {
                m.remove("reply_markup");
            }
        }
    }
    message["edit_date"] = json!(now_secs());
    ok(message.clone())
}

impl TelegramServer {
    /// Starts a server on 127.0.0.1:0 accepting `token`.
    pub async fn start(token: &str) -> Self {
        let (sent_count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                token: token.to_owned(),
                next_update_id: 1000,
                next_message_id: 1,
                ..Default::default()
            }),
            new_update: Notify::new(),
            sent_count,
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        Self {
            url,
            token: token.to_owned(),
            shared,
            stop,
        }
    }

    fn push_update(&self, build: impl FnOnce(i64) -> Value) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.next_update_id += 1;
        let id = inner.next_update_id;
        inner.updates.push_back((id, build(id)));
        drop(inner);
        self.shared.new_update.notify_waiters();
    }

    /// A person `from` writes `text` in `chat` (a private chat when `chat == from`).
    pub fn send_text(&self, chat: i64, from: i64, text: &str) {
        let message_id = {
            let mut inner = self.shared.inner.lock().unwrap();
            inner.next_message_id += 1;
            inner.next_message_id
        };
        let text = text.to_owned();
        self.push_update(move |id| {
            let mut message = json!({
                "message_id": message_id, "date": now_secs(), "chat": chat_json(chat),
                "from": user_json(from), "text": text,
            });
            if text.starts_with('/') {
                let len = text
                    .split_whitespace()
                    .next()
                    .map_or(0, |c| c.encode_utf16().count());
                message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
            }
            json!({"update_id": id, "message": message})
        });
    }

    /// A person `from` presses the inline button with `data` under the bot's message.
    pub fn press(&self, sent: &Sent, from: i64, data: &str) {
        self.press_on(sent.chat_id, sent.message_id, from, data);
    }

    /// A person `from` presses the button with `data` under message `message_id` in `chat`.
    pub fn press_on(&self, chat: i64, message_id: i64, from: i64, data: &str) {
        let message = self
            .shared
            .inner
            .lock()
            .unwrap()
            .messages
            .get(&(chat, message_id))
            .cloned()
            .unwrap_or_else(|| json!({"message_id": message_id, "date": now_secs(), "chat": chat_json(chat), "from": bot_user_json(), "text": ""}));
        let data = data.to_owned();
        self.push_update(move |id| {
            json!({"update_id": id, "callback_query": {
                "id": format!("cbq-{id}"), "from": user_json(from), "message": message,
                "chat_instance": format!("ci-{chat}"), "data": data,
            }})
        });
    }

    /// `(text, callback_data or url)` of the buttons a message has now (after edits).
    pub fn buttons_of(&self, chat: i64, message_id: i64) -> Vec<(String, String)> {
        let markup = self
            .message(chat, message_id)
            .and_then(|m| m.get("reply_markup").cloned());
        Sent {
            method: String::new(),
            chat_id: chat,
            text: String::new(),
            raw: String::new(),
            photo: None,
            reply_markup: markup,
            message_id,
            at: Instant::now(),
        }
        .buttons()
    }

    /// Waits until message `message_id` in `chat` (after edits) satisfies `pred`.
    pub async fn wait_message(
        &self,
        chat: i64,
        message_id: i64,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.message(chat, message_id).filter(|m| pred(m)) {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on message {message_id} in {chat}: {:#?}",
                self.message(chat, message_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes `user` an administrator of group `chat`.
    pub fn add_admin(&self, chat: i64, user: i64) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .admins
            .entry(chat)
            .or_default()
            .insert(user);
    }

    /// Scripts the answers to the next sends to `chat`.
    pub fn fail_next(&self, chat: i64, failures: impl IntoIterator<Item = Failure>) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .failures
            .entry(chat)
            .or_default()
            .extend(failures);
    }

    /// Every send to `chat` answers 403 from now on.
    pub fn block(&self, chat: i64) {
        self.shared.inner.lock().unwrap().blocked.insert(chat);
    }

    /// Sends to `chat` are accepted again (the user unblocked the bot).
    pub fn unblock(&self, chat: i64) {
        self.shared.inner.lock().unwrap().blocked.remove(&chat);
    }

    /// Every send to `chat` answers 400 with `migrate_to_chat_id = to` from now on.
    pub fn migrate(&self, chat: i64, to: i64) {
        self.shared.inner.lock().unwrap().migrated.insert(chat, to);
    }

    /// Enforces send rates from now on.
    pub fn enforce(&self, limits: RateLimits) {
        self.shared.inner.lock().unwrap().limits = Some(limits);
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.inner.lock().unwrap().sent.clone()
    }

    /// Messages sent to `chat`.
    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.chat_id == chat)
            .collect()
    }

    /// 429 answers given so far.
    pub fn too_many(&self) -> u64 {
        self.shared.inner.lock().unwrap().too_many
    }

    /// Every `answerCallbackQuery` call.
    pub fn callback_answers(&self) -> Vec<Value> {
        self.shared.inner.lock().unwrap().callback_answers.clone()
    }

    /// Every edit call.
    pub fn edits(&self) -> Vec<Value> {
        self.shared.inner.lock().unwrap().edits.clone()
    }

    /// The current state of a message the bot sent (after edits).
    pub fn message(&self, chat: i64, message_id: i64) -> Option<Value> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .messages
            .get(&(chat, message_id))
            .cloned()
    }

    /// Names of every method called, in order (canonical case).
    pub fn methods(&self) -> Vec<String> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(m, _)| canonical(m))
            .collect()
    }

    /// Parameters of every call of `method`, in order.
    pub fn calls_of(&self, method: &str) -> Vec<Value> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(m, _)| m.eq_ignore_ascii_case(method))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Waits until at least `count` messages were sent in total.
    pub async fn wait_sent(&self, count: usize, timeout: Duration) -> Vec<Sent> {
        let mut rx = self.shared.sent_count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await;
        let sent = self.sent();
        assert!(
            reached.is_ok(),
            "timed out waiting for {count} messages; got {}: {:#?}",
            sent.len(),
            sent
        );
        sent
    }

    /// Waits until a message to `chat` satisfies `pred` and returns it.
    pub async fn wait_for(
        &self,
        chat: i64,
        timeout: Duration,
        pred: impl Fn(&Sent) -> bool,
    ) -> Sent {
        let mut rx = self.shared.sent_count.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.sent_to(chat).into_iter().find(|s| pred(s)) {
                return found;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out waiting for a message to {chat}; got {:#?}",
                    self.sent_to(chat)
                );
            }
        }
    }

    /// Waits until the bot polls for updates (so it is up).
    pub async fn wait_polling(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.shared.inner.lock().unwrap().get_updates_calls == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bot never polled getUpdates"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
