//! A OneBot v11 implementation (the protocol NapCat, Lagrange.OneBot, LLOneBot and
//! go-cqhttp speak for a QQ account): its HTTP API and its HTTP POST event reporting.
//!
//! **HTTP API** (`/<action>` or `/<action>/`, GET or POST). Parameters arrive as a query
//! string, an urlencoded form or a JSON object, as the spec allows; a POST body of another
//! content type is answered 406, an unreadable one 400, an unknown action 404. When an
//! access token is configured it is read from `Authorization: Bearer <token>` or the
//! `access_token` query parameter: none given → 401, a wrong one → 403 (the spec's
//! `communication/http.md`). Everything else is HTTP 200 with the envelope
//! `{"status", "retcode", "data", …}`: `ok`/0 on success, `failed` with a non-zero
//! `retcode` otherwise.
//!
//! Served actions: `send_group_msg`, `send_private_msg` (→ `{"message_id": <int32>}`),
//! `delete_msg`, `get_group_member_info` (from a table of members and roles the test
//! fills; senders of injected group messages join it unless their report only claims a
//! role), `get_login_info`. A `message` parameter is accepted as a CQ-code string
//! (parsed with the spec's unescaping, or taken literally with `auto_escape`), an array of
//! segments or a single segment; what was sent is recorded as the reader sees it
//! ([`Sent::text`]) and as segments.
//!
//! **Failures** are shaped after a real implementation ([`Dialect`]), since OneBot leaves
//! every code but 0 and 1 to them:
//!
//! | case | [`Dialect::NapCat`] (HTTP) | [`Dialect::GoCqhttp`] |
//! |---|---|---|
//! | bot not in the group / removed | 200, `message` [`NAPCAT_GROUP_GONE`] | 100, `msg` `GROUP_NOT_FOUND` |
//! | bot muted in the group | 200, [`NAPCAT_MUTED`] | 100, `SEND_MSG_API_ERROR` |
//! | risk control (over the rate) | 200, [`NAPCAT_RISK_CONTROL`] | 100, `SEND_MSG_API_ERROR` |
//! | empty message | 200, [`NAPCAT_EMPTY`] | 100, `EMPTY_MSG_ERROR` |
//! | unknown message id | 200, [`NAPCAT_MESSAGE_GONE`] | 100, `MESSAGE_NOT_FOUND` |
//! | unknown member | 200, [`NAPCAT_MEMBER_GONE`] | 100, `MEMBER_NOT_FOUND` |
//! | missing or malformed parameter | 400 | 100, `PARAM_ERROR` |
//!
//! NapCat's HTTP adapter answers every error thrown by an action with retcode 200 and
//! the error's text in `message` and `wording`, and a failed parameter check with 400
//! (its WebSocket adapters use 1200 and 1400 for the same); the texts vary with the QQNT
//! error they pass on, so the ones used here are representative, not quoted. go-cqhttp
//! answers 100 with an upper-case code in `msg` and a Chinese `wording`; it cannot tell a
//! muted bot from risk control (both are `SEND_MSG_API_ERROR`, "请参考 go-cqhttp 端输出").
//! Neither implementation reports a rate limit as such: QQ's risk control simply makes
//! sends fail, which is what [`RateLimits`] plays (counted by [`OneBotServer::rate_limited`]).
//!
//! Outages answer HTTP 500 to every action ([`OneBotServer::set_outage`]), as a reverse
//! proxy in front of a crashed implementation does.
//!
//! **Event reporting** ([`OneBotServer::post_message`] and friends): the test side POSTs
//! a message event, in array or string post format, to the bot's URL with `X-Self-ID`
//! and, when a secret is set, `X-Signature: sha1=<hex HMAC-SHA1 of the body>`; a bad or
//! missing signature can be forced ([`Signing`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha1::Sha1;
use tokio::sync::watch;

use super::{lock, serve, Served};

/// The QQ account the server plays (`self_id`, `X-Self-ID`, `get_login_info`).
pub const SELF_ID: i64 = 3_889_000_042;
/// Its nickname.
pub const SELF_NICKNAME: &str = "Stargazer";

/// NapCat-dialect failure text: the bot is not (or no longer) in the group.
pub const NAPCAT_GROUP_GONE: &str = "群聊不存在或机器人已不在群内";
/// NapCat-dialect failure text: the bot is muted in the group.
pub const NAPCAT_MUTED: &str = "发送消息失败: 机器人已被禁言";
/// NapCat-dialect failure text: the send was refused by QQ's risk control.
pub const NAPCAT_RISK_CONTROL: &str = "发送消息失败: 消息发送过于频繁, 可能被风控";
/// NapCat-dialect failure text: the message has no content.
pub const NAPCAT_EMPTY: &str = "消息体无法解析, 请检查是否发送了不支持的消息类型";
/// NapCat-dialect failure text: no message with that id.
pub const NAPCAT_MESSAGE_GONE: &str = "消息不存在";
/// NapCat-dialect failure text: no such member in the group.
pub const NAPCAT_MEMBER_GONE: &str = "群成员不存在";

/// Which implementation's failure answers the server imitates (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// NapCat's HTTP adapter: retcode 200 (400 for parameters), text in `message`.
    #[default]
    NapCat,
    /// go-cqhttp: retcode 100, a code in `msg`, text in `wording`.
    GoCqhttp,
}

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct OneBotOptions {
    /// The access token API calls must carry; `None`: calls are not checked.
    pub access_token: Option<String>,
    /// The secret event reports are signed with; `None`: reports are not signed.
    pub secret: Option<String>,
    /// Whose failure shapes to answer.
    pub dialect: Dialect,
}

/// A member's role in a group, as `sender.role` and `get_group_member_info` give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The group's owner (群主).
    Owner,
    /// An administrator.
    Admin,
    /// Everybody else.
    Member,
}

impl Role {
    /// The protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// One message segment (`{"type": …, "data": {…}}`), data values as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `text`, `image`, `at`, `face`, …
    pub kind: String,
    /// The segment's parameters.
    pub data: BTreeMap<String, String>,
}

impl Segment {
    /// A segment of `kind` with `data`.
    pub fn new<'a>(kind: &str, data: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            kind: kind.to_owned(),
            data: data
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// A `text` segment.
    pub fn text(text: &str) -> Self {
        Self::new("text", [("text", text)])
    }

    /// One parameter, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// The array-format JSON of the segment.
    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "data": self.data})
    }
}

/// Where a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A group, by group number.
    Group(i64),
    /// A private chat, by the user's QQ number.
    Private(i64),
}

/// One message the bot sent successfully.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `send_group_msg` or `send_private_msg`.
    pub action: String,
    /// Where it went.
    pub target: Target,
    /// What a reader sees as text: text segments, mentions as `@全体成员` / `@<card or
    /// nickname or number>`; images and other media contribute nothing.
    pub text: String,
    /// The message as parsed segments (CQ codes decoded).
    pub segments: Vec<Segment>,
    /// The `message` parameter exactly as the bot sent it.
    pub raw: Value,
    /// The id the server gave it.
    pub message_id: i32,
    /// When the server accepted it.
    pub at: Instant,
}

impl Sent {
    /// The `file` of every image segment, in order.
    pub fn images(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter(|s| s.kind == "image")
            .filter_map(|s| s.get("file").map(str::to_owned))
            .collect()
    }

    /// The `qq` of every mention (`all` for everyone), in order.
    pub fn mentions(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter(|s| s.kind == "at")
            .filter_map(|s| s.get("qq").map(str::to_owned))
            .collect()
    }
}

/// An answer scripted for the next send to a group (see [`OneBotServer::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The bot is not in the group (it was removed, or the group was dissolved).
    NotInGroup,
    /// The bot is muted in the group.
    Muted,
    /// QQ's risk control refused the send.
    RiskControl,
    /// HTTP 500 with no envelope: the implementation is down.
    Outage,
}

/// Send rates the server enforces like QQ's risk control, failing the sends over them
/// (see [`OneBotServer::enforce`]).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Sends accepted within any one-second window, over all targets.
    pub global_per_second: usize,
    /// Minimum gap between two accepted sends to one group.
    pub per_group: Duration,
}

#[derive(Debug, Clone)]
struct Member {
    nickname: String,
    card: String,
    role: Role,
}

#[derive(Default)]
struct Inner {
    next_message_id: i32,
    sent: Vec<Sent>,
    deleted: Vec<i32>,
    /// Every authorized call: action name and parameters.
    calls: Vec<(String, Value)>,
    members: HashMap<(i64, i64), Member>,
    failures: HashMap<i64, VecDeque<Failure>>,
    removed: HashSet<i64>,
    muted: HashSet<i64>,
    limits: Option<RateLimits>,
    recent: VecDeque<Instant>,
    last_per_group: HashMap<i64, Instant>,
    rate_limited: u64,
    outage: bool,
    outage_answers: u64,
    refused_tokens: u64,
    next_event_message_id: i32,
}

struct Shared {
    options: OneBotOptions,
    inner: Mutex<Inner>,
    sent_count: watch::Sender<usize>,
}

/// Why an action failed, answered in the server's dialect.
#[derive(Debug, Clone)]
enum Refusal {
    NotInGroup,
    Muted,
    RiskControl,
    Empty,
    MessageGone,
    MemberGone,
    BadParam(String),
}

/// How a test-side event report is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// With the configured secret, as the implementation does (no header without one).
    Good,
    /// With a different key: the signature does not verify.
    Bad,
    /// No `X-Signature` header at all.
    Missing,
}

/// A message event to report to the bot (see [`OneBotServer::post_message`]).
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    /// The group it was written in; `None`: a private message.
    pub group_id: Option<i64>,
    /// Who wrote it.
    pub user_id: i64,
    /// Their nickname.
    pub nickname: String,
    /// Their group card (群名片); empty when unset.
    pub card: String,
    /// Their role in the group (ignored for private messages).
    pub role: Role,
    /// What the report's `sender.role` says of it.
    pub reported_role: ReportedRole,
    /// The message.
    pub segments: Vec<Segment>,
    /// Report `message` as a CQ-code string (`messagePostFormat: "string"`) instead of an
    /// array of segments.
    pub string_format: bool,
}

impl IncomingMessage {
    /// `user_id` writes `text` in `group_id`, as an ordinary member.
    pub fn group(group_id: i64, user_id: i64, text: &str) -> Self {
        Self {
            group_id: Some(group_id),
            user_id,
            nickname: format!("viewer{user_id}"),
            card: String::new(),
            role: Role::Member,
            reported_role: ReportedRole::Actual,
            segments: vec![Segment::text(text)],
            string_format: false,
        }
    }

    /// `user_id` writes `text` to the bot privately.
    pub fn private(user_id: i64, text: &str) -> Self {
        Self {
            group_id: None,
            ..Self::group(0, user_id, text)
        }
    }

    /// The sender has `role` in the group.
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// The report says the sender has `role`, and the member table is left as it is:
    /// `get_group_member_info` answers what [`OneBotServer::set_member`] or an earlier
    /// report put there, or that there is no such member. A bot trusting the report alone
    /// is fooled by it.
    pub fn claims_role(mut self, role: Role) -> Self {
        self.reported_role = ReportedRole::Claimed(role);
        self
    }

    /// The report carries no `sender.role` (implementations may leave it out); the
    /// sender still joins the member table with [`Self::role`].
    pub fn omits_role(mut self) -> Self {
        self.reported_role = ReportedRole::Omitted;
        self
    }

    /// The message is these segments instead.
    pub fn segments(mut self, segments: Vec<Segment>) -> Self {
        self.segments = segments;
        self
    }

    /// Reported in string post format (CQ codes).
    pub fn string_format(mut self) -> Self {
        self.string_format = true;
        self
    }
}

/// What a group message report's `sender.role` says (see [`IncomingMessage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportedRole {
    /// The sender's role, as the member table gets it too.
    #[default]
    Actual,
    /// Another role than the member table's, which the report leaves alone.
    Claimed(Role),
    /// No `role` field.
    Omitted,
}

/// A running OneBot v11 implementation; stops when dropped.
pub struct OneBotServer {
    /// Base URL of the HTTP API (`http://127.0.0.1:PORT`).
    pub url: String,
    shared: Arc<Shared>,
    _served: Served,
}

// ---- CQ codes -------------------------------------------------------------------------

/// Decodes the spec's escapes in one pass (`&amp;` last would double-decode `&amp;#91;`).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let decoded = [
            ("&amp;", '&'),
            ("&#91;", '['),
            ("&#93;", ']'),
            ("&#44;", ','),
        ]
        .into_iter()
        .find(|(entity, _)| tail.starts_with(entity));
        match decoded {
            Some((entity, c)) => {
                out.push(c);
                rest = &tail[entity.len()..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(text: &str, in_param: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '[' => out.push_str("&#91;"),
            ']' => out.push_str("&#93;"),
            ',' if in_param => out.push_str("&#44;"),
            c => out.push(c),
        }
    }
    out
}

/// Parses a string-format message into segments: CQ codes become their segments, the
/// text between them (unescaped) text segments. An unterminated `[CQ:` is text, as the
/// implementations treat it.
pub fn parse_cq(message: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut rest = message;
    while let Some(start) = rest.find("[CQ:") {
        let Some(len) = rest[start..].find(']') else {
            break;
        };
        text.push_str(&rest[..start]);
        let code = &rest[start + 4..start + len];
        rest = &rest[start + len + 1..];
        let mut parts = code.split(',');
        let kind = parts.next().unwrap_or_default().to_owned();
        let data = parts
            .map(|part| match part.split_once('=') {
                Some((k, v)) => (k.to_owned(), unescape(v)),
                None => (part.to_owned(), String::new()),
            })
            .collect();
        if !text.is_empty() {
            segments.push(Segment::text(&unescape(&text)));
            text.clear();
        }
        segments.push(Segment { kind, data });
    }
    text.push_str(rest);
    if !text.is_empty() {
        segments.push(Segment::text(&unescape(&text)));
    }
    segments
}

/// The string format of `segments`, escaped as the spec says.
pub fn to_cq(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        if segment.kind == "text" {
            out.push_str(&escape(segment.get("text").unwrap_or_default(), false));
            continue;
        }
        out.push_str("[CQ:");
        out.push_str(&segment.kind);
        for (key, value) in &segment.data {
            out.push(',');
            out.push_str(key);
            out.push('=');
            out.push_str(&escape(value, true));
        }
        out.push(']');
    }
    out
}

// ---- answers --------------------------------------------------------------------------

fn ok(data: Value) -> Response {
    Json(json!({"status": "ok", "retcode": 0, "data": data, "message": "", "wording": ""}))
        .into_response()
}

fn failed(dialect: Dialect, refusal: &Refusal) -> Response {
    let body = match dialect {
        Dialect::NapCat => {
            let (retcode, text) = match refusal {
                Refusal::NotInGroup => (200, NAPCAT_GROUP_GONE.to_owned()),
                Refusal::Muted => (200, NAPCAT_MUTED.to_owned()),
                Refusal::RiskControl => (200, NAPCAT_RISK_CONTROL.to_owned()),
                Refusal::Empty => (200, NAPCAT_EMPTY.to_owned()),
                Refusal::MessageGone => (200, NAPCAT_MESSAGE_GONE.to_owned()),
                Refusal::MemberGone => (200, NAPCAT_MEMBER_GONE.to_owned()),
                Refusal::BadParam(why) => (400, why.clone()),
            };
            json!({"status": "failed", "retcode": retcode, "data": null, "message": text, "wording": text})
        }
        Dialect::GoCqhttp => {
            let (msg, wording) = match refusal {
                Refusal::NotInGroup => ("GROUP_NOT_FOUND", "群聊不存在".to_owned()),
                Refusal::Muted | Refusal::RiskControl => {
                    ("SEND_MSG_API_ERROR", "请参考 go-cqhttp 端输出".to_owned())
                }
                Refusal::Empty => ("EMPTY_MSG_ERROR", "消息为空".to_owned()),
                Refusal::MessageGone => ("MESSAGE_NOT_FOUND", "消息不存在".to_owned()),
                Refusal::MemberGone => ("MEMBER_NOT_FOUND", "群员不存在".to_owned()),
                Refusal::BadParam(why) => ("PARAM_ERROR", why.clone()),
            };
            json!({"status": "failed", "retcode": 100, "data": null, "msg": msg, "wording": wording})
        }
    };
    Json(body).into_response()
}

fn outage() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
}

fn int_param(params: &Map<String, Value>, name: &str) -> Option<i64> {
    match params.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn bool_param(params: &Map<String, Value>, name: &str) -> bool {
    match params.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.trim(), "true" | "1" | "yes"),
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        _ => false,
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

/// The token a call carries: the bearer header, else the `access_token` parameter.
fn presented_token(headers: &HeaderMap, query: &Map<String, Value>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    bearer.or_else(|| match query.get("access_token") {
        Some(Value::String(token)) => Some(token.clone()),
        _ => None,
    })
}

async fn read_params(
    query: Map<String, Value>,
    request: Request,
) -> Result<Map<String, Value>, Response> {
    let mut params = query;
    params.remove("access_token");
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()).into_response())?;
    if body.is_empty() {
        return Ok(params);
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(form_pairs(&String::from_utf8_lossy(&body)));
        return Ok(params);
    }
    if !content_type.starts_with("application/json") {
        // The spec's answer to a POST body it cannot read.
        return Err(StatusCode::NOT_ACCEPTABLE.into_response());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => {
            params.extend(map);
            Ok(params)
        }
        _ => Err((StatusCode::BAD_REQUEST, "invalid JSON body").into_response()),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(action): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let query = query.as_deref().map(form_pairs).unwrap_or_default();
    if let Some(expected) = &shared.options.access_token {
        match presented_token(request.headers(), &query) {
            None => {
                lock(&shared.inner).refused_tokens += 1;
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"message": "token is missing"})),
                )
                    .into_response();
            }
            Some(token) if token != *expected => {
                lock(&shared.inner).refused_tokens += 1;
                return (
                    StatusCode::FORBIDDEN,
                    Json(json!({"message": "token verify failed!"})),
                )
                    .into_response();
            }
            Some(_) => {}
        }
    }
    let params = match read_params(query, request).await {
        Ok(params) => params,
        Err(response) => return response,
    };
    {
        let mut inner = lock(&shared.inner);
        inner
            .calls
            .push((action.clone(), Value::Object(params.clone())));
        if inner.outage {
            inner.outage_answers += 1;
            return outage();
        }
    }
    let dialect = shared.options.dialect;
    let result = match action.as_str() {
        "send_group_msg" => send(&shared, &action, &params, true),
        "send_private_msg" => send(&shared, &action, &params, false),
        "delete_msg" => delete(&shared, &params),
        "get_group_member_info" => member_info(&shared, &params),
        "get_login_info" => Ok(json!({"user_id": SELF_ID, "nickname": SELF_NICKNAME})),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"status": "failed", "retcode": 1404, "data": null,
                    "message": format!("{action} API 不存在"), "wording": ""})),
            )
                .into_response()
        }
    };
    match result {
        Ok(data) => ok(data),
        Err(Answer::Refused(refusal)) => failed(dialect, &refusal),
        Err(Answer::Outage) => outage(),
    }
}

enum Answer {
    Refused(Refusal),
    Outage,
}

impl From<Refusal> for Answer {
    fn from(refusal: Refusal) -> Self {
        Answer::Refused(refusal)
    }
}

/// One array-format segment, its data values as strings (implementations accept numbers).
fn segment_from_json(value: &Value) -> Result<Segment, Refusal> {
    let bad = || Refusal::BadParam("message segment must be {\"type\", \"data\"}".to_owned());
    let object = value.as_object().ok_or_else(bad)?;
    let kind = object.get("type").and_then(Value::as_str).ok_or_else(bad)?;
    let data = match object.get("data") {
        Some(Value::Object(data)) => data
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        None | Some(Value::Null) => BTreeMap::new(),
        Some(_) => return Err(bad()),
    };
    Ok(Segment {
        kind: kind.to_owned(),
        data,
    })
}

fn message_param(params: &Map<String, Value>) -> Result<Vec<Segment>, Refusal> {
    let segments = match params.get("message") {
        Some(Value::String(text)) if bool_param(params, "auto_escape") => {
            vec![Segment::text(text)]
        }
        Some(Value::String(text)) => parse_cq(text),
        Some(Value::Array(items)) => items
            .iter()
            .map(segment_from_json)
            .collect::<Result<_, _>>()?,
        Some(object @ Value::Object(_)) => vec![segment_from_json(object)?],
        None | Some(Value::Null) => return Err(Refusal::Empty),
        Some(_) => return Err(Refusal::BadParam("message has a wrong type".to_owned())),
    };
    for segment in &segments {
        let valid = match segment.kind.as_str() {
            "text" => segment.get("text").is_some(),
            "image" => segment.get("file").is_some_and(|f| !f.trim().is_empty()),
            "at" => segment
                .get("qq")
                .is_some_and(|qq| qq == "all" || qq.parse::<i64>().is_ok()),
            _ => true,
        };
        if !valid {
            return Err(Refusal::BadParam(format!(
                "invalid {} segment: {:?}",
                segment.kind, segment.data
            )));
        }
    }
    let empty = segments
        .iter()
        .all(|s| s.kind == "text" && s.get("text").is_none_or(|t| t.trim().is_empty()));
    if empty {
        return Err(Refusal::Empty);
    }
    Ok(segments)
}

/// What a reader sees of `segments` as text in `group` (mentions by card or nickname).
fn visible_text(inner: &Inner, group: Option<i64>, segments: &[Segment]) -> String {
    let mut text = String::new();
    for segment in segments {
        match segment.kind.as_str() {
            "text" => text.push_str(segment.get("text").unwrap_or_default()),
            "at" => match segment.get("qq").unwrap_or_default() {
                "all" => text.push_str("@全体成员"),
                qq => {
                    let member = qq
                        .parse::<i64>()
                        .ok()
                        .zip(group)
                        .and_then(|(user, group)| inner.members.get(&(group, user)));
                    let name = member.map(|m| {
                        if m.card.is_empty() {
                            m.nickname.clone()
                        } else {
                            m.card.clone()
                        }
                    });
                    text.push('@');
                    text.push_str(name.as_deref().unwrap_or(qq));
                }
            },
            _ => {}
        }
    }
    text
}

/// The refusal QQ would give a valid send to `target` now, if any. Counts rate refusals.
fn refusal(inner: &mut Inner, target: Target, now: Instant) -> Option<Answer> {
    if let Target::Group(group) = target {
        if let Some(failure) = inner.failures.get_mut(&group).and_then(VecDeque::pop_front) {
            return Some(match failure {
                Failure::NotInGroup => Refusal::NotInGroup.into(),
                Failure::Muted => Refusal::Muted.into(),
                Failure::RiskControl => {
                    inner.rate_limited += 1;
                    Refusal::RiskControl.into()
                }
                Failure::Outage => {
                    inner.outage_answers += 1;
                    Answer::Outage
                }
            });
        }
        if inner.removed.contains(&group) {
            return Some(Refusal::NotInGroup.into());
        }
        if inner.muted.contains(&group) {
            return Some(Refusal::Muted.into());
        }
    }
    let limits = inner.limits?;
    while inner
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        inner.recent.pop_front();
    }
    let group_too_soon = match target {
        Target::Group(group) => inner
            .last_per_group
            .get(&group)
            .is_some_and(|t| now.duration_since(*t) < limits.per_group),
        Target::Private(_) => false,
    };
    if inner.recent.len() >= limits.global_per_second || group_too_soon {
        inner.rate_limited += 1;
        return Some(Refusal::RiskControl.into());
    }
    inner.recent.push_back(now);
    if let Target::Group(group) = target {
        inner.last_per_group.insert(group, now);
    }
    None
}

fn send(
    shared: &Arc<Shared>,
    action: &str,
    params: &Map<String, Value>,
    group: bool,
) -> Result<Value, Answer> {
    let id_name = if group { "group_id" } else { "user_id" };
    let id = int_param(params, id_name)
        .filter(|id| *id > 0)
        .ok_or_else(|| Refusal::BadParam(format!("{id_name} is required")))?;
    let target = if group {
        Target::Group(id)
    } else {
        Target::Private(id)
    };
    let segments = message_param(params)?;
    let now = Instant::now();
    let mut inner = lock(&shared.inner);
    if let Some(refused) = refusal(&mut inner, target, now) {
        return Err(refused);
    }
    inner.next_message_id = inner.next_message_id.wrapping_add(1).max(1);
    let message_id = inner.next_message_id;
    let text = visible_text(&inner, group.then_some(id), &segments);
    inner.sent.push(Sent {
        action: action.to_owned(),
        target,
        text,
        segments,
        raw: params.get("message").cloned().unwrap_or(Value::Null),
        message_id,
        at: now,
    });
    let count = inner.sent.len();
    drop(inner);
    shared.sent_count.send_replace(count);
    Ok(json!({"message_id": message_id}))
}

fn delete(shared: &Arc<Shared>, params: &Map<String, Value>) -> Result<Value, Answer> {
    let id = int_param(params, "message_id")
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| Refusal::BadParam("message_id is required".to_owned()))?;
    let mut inner = lock(&shared.inner);
    let exists = inner.sent.iter().any(|s| s.message_id == id);
    if !exists || inner.deleted.contains(&id) {
        return Err(Refusal::MessageGone.into());
    }
    inner.deleted.push(id);
    Ok(Value::Null)
}

fn member_info(shared: &Arc<Shared>, params: &Map<String, Value>) -> Result<Value, Answer> {
    let (Some(group), Some(user)) = (int_param(params, "group_id"), int_param(params, "user_id"))
    else {
        return Err(Refusal::BadParam("group_id and user_id are required".to_owned()).into());
    };
    let inner = lock(&shared.inner);
    if inner.removed.contains(&group) {
        return Err(Refusal::NotInGroup.into());
    }
    let member = inner
        .members
        .get(&(group, user))
        .ok_or(Refusal::MemberGone)?;
    Ok(json!({
        "group_id": group, "user_id": user, "nickname": member.nickname, "card": member.card,
        "sex": "unknown", "age": 0, "area": "", "join_time": 1_700_000_000,
        "last_sent_time": now_secs(), "level": "1", "role": member.role.as_str(),
        "unfriendly": false, "title": "", "title_expire_time": 0, "card_changeable": false,
    }))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `sha1=<hex HMAC-SHA1 of body with key>`, the `X-Signature` value.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

impl OneBotServer {
    /// Starts a server on 127.0.0.1:0.
    pub async fn start(options: OneBotOptions) -> std::io::Result<Self> {
        let (sent_count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            options,
            inner: Mutex::new(Inner {
                next_message_id: 1_000_000,
                next_event_message_id: 2_000_000,
                ..Inner::default()
            }),
            sent_count,
        });
        let router = Router::new()
            .route("/{action}", any(handle))
            .route("/{action}/", any(handle))
            .with_state(shared.clone());
        let served = serve(router).await?;
        Ok(Self {
            url: served.base_url(),
            shared,
            _served: served,
        })
    }

    /// The access token API calls must carry, if any.
    pub fn access_token(&self) -> Option<&str> {
        self.shared.options.access_token.as_deref()
    }

    /// The secret event reports are signed with, if any.
    pub fn secret(&self) -> Option<&str> {
        self.shared.options.secret.as_deref()
    }

    // ---- test side: the account's groups ----

    /// Puts `user` in `group` with `role` (replacing what was there).
    pub fn set_member(&self, group: i64, user: i64, nickname: &str, card: &str, role: Role) {
        lock(&self.shared.inner).members.insert(
            (group, user),
            Member {
                nickname: nickname.to_owned(),
                card: card.to_owned(),
                role,
            },
        );
    }

    /// Scripts the answers to the next sends to `group`, one failure per send.
    pub fn fail_next(&self, group: i64, failures: impl IntoIterator<Item = Failure>) {
        lock(&self.shared.inner)
            .failures
            .entry(group)
            .or_default()
            .extend(failures);
    }

    /// The bot is removed from `group` (or it is dissolved): every send to it and every
    /// member lookup in it fails from now on.
    pub fn remove_from_group(&self, group: i64) {
        lock(&self.shared.inner).removed.insert(group);
    }

    /// The bot is muted in `group` (`true`) or may speak again (`false`).
    pub fn set_muted(&self, group: i64, muted: bool) {
        let mut inner = lock(&self.shared.inner);
        if muted {
            inner.muted.insert(group);
        } else {
            inner.muted.remove(&group);
        }
    }

    /// Enforces send rates from now on, failing sends over them as risk control does.
    pub fn enforce(&self, limits: RateLimits) {
        lock(&self.shared.inner).limits = Some(limits);
    }

    /// From now on every action is answered HTTP 500 (`true`) or served again.
    pub fn set_outage(&self, outage: bool) {
        lock(&self.shared.inner).outage = outage;
    }

    // ---- test side: what happened ----

    /// Sends refused as risk control so far (rate limits and scripted).
    pub fn rate_limited(&self) -> u64 {
        lock(&self.shared.inner).rate_limited
    }

    /// Calls answered 500 so far.
    pub fn outage_answers(&self) -> u64 {
        lock(&self.shared.inner).outage_answers
    }

    /// Calls refused for a missing or wrong token so far.
    pub fn refused_tokens(&self) -> u64 {
        lock(&self.shared.inner).refused_tokens
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.shared.inner).sent.clone()
    }

    /// Messages sent to `target`.
    pub fn sent_to(&self, target: Target) -> Vec<Sent> {
        lock(&self.shared.inner)
            .sent
            .iter()
            .filter(|s| s.target == target)
            .cloned()
            .collect()
    }

    /// Ids of the messages recalled with `delete_msg`, in order.
    pub fn deleted(&self) -> Vec<i32> {
        lock(&self.shared.inner).deleted.clone()
    }

    /// Every authorized call so far (action and parameters), in order.
    pub fn calls(&self) -> Vec<(String, Value)> {
        lock(&self.shared.inner).calls.clone()
    }

    /// Parameters of every call of `action`, in order.
    pub fn calls_of(&self, action: &str) -> Vec<Value> {
        lock(&self.shared.inner)
            .calls
            .iter()
            .filter(|(called, _)| called == action)
            .map(|(_, params)| params.clone())
            .collect()
    }

    /// Waits until at least `count` messages were sent and returns them all; panics
    /// after `timeout`.
    pub async fn wait_sent(&self, count: usize, timeout: Duration) -> Vec<Sent> {
        let mut rx = self.shared.sent_count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await;
        assert!(
            reached.is_ok(),
            "timed out after {timeout:?} waiting for {count} messages; {} were sent",
            self.sent().len()
        );
        self.sent()
    }

    // ---- test side: event reporting ----

    /// The JSON of a message event as the implementation reports it (allocating its
    /// `message_id`); a group sender joins the member table with their role (unless the
    /// report only [claims](IncomingMessage::claims_role) one).
    pub fn message_event(&self, message: &IncomingMessage) -> Value {
        let message_id = {
            let mut inner = lock(&self.shared.inner);
            inner.next_event_message_id = inner.next_event_message_id.wrapping_add(1).max(1);
            let joins = !matches!(message.reported_role, ReportedRole::Claimed(_));
            if let Some(group) = message.group_id.filter(|_| joins) {
                inner.members.insert(
                    (group, message.user_id),
                    Member {
                        nickname: message.nickname.clone(),
                        card: message.card.clone(),
                        role: message.role,
                    },
                );
            }
            inner.next_event_message_id
        };
        let raw = to_cq(&message.segments);
        let body = if message.string_format {
            json!(raw)
        } else {
            Value::Array(message.segments.iter().map(Segment::to_json).collect())
        };
        let mut event = json!({
            "time": now_secs(), "self_id": SELF_ID, "post_type": "message",
            "message_id": message_id, "user_id": message.user_id, "message": body,
            "raw_message": raw, "font": 0,
            "message_format": if message.string_format { "string" } else { "array" },
        });
        match message.group_id {
            Some(group) => {
                event["message_type"] = json!("group");
                event["sub_type"] = json!("normal");
                event["group_id"] = json!(group);
                event["anonymous"] = Value::Null;
                event["sender"] = json!({
                    "user_id": message.user_id, "nickname": message.nickname,
                    "card": message.card, "sex": "unknown", "age": 0,
                });
                let role = match message.reported_role {
                    ReportedRole::Actual => Some(message.role),
                    ReportedRole::Claimed(role) => Some(role),
                    ReportedRole::Omitted => None,
                };
                if let Some(role) = role {
                    event["sender"]["role"] = json!(role.as_str());
                }
            }
            None => {
                event["message_type"] = json!("private");
                event["sub_type"] = json!("friend");
                event["sender"] = json!({
                    "user_id": message.user_id, "nickname": message.nickname,
                    "sex": "unknown", "age": 0,
                });
            }
        }
        event
    }

    /// Reports `message` to `url`, signed properly; returns the answer's status and body.
    pub async fn post_message(&self, url: &str, message: &IncomingMessage) -> (u16, String) {
        self.post_message_signed(url, message, Signing::Good).await
    }

    /// Reports `message` to `url` with the given signing.
    pub async fn post_message_signed(
        &self,
        url: &str,
        message: &IncomingMessage,
        signing: Signing,
    ) -> (u16, String) {
        let body = self.message_event(message).to_string();
        self.post_raw(url, body.into_bytes(), signing).await
    }

    /// POSTs `body` to `url` as an event report: `Content-Type: application/json`,
    /// `X-Self-ID`, and `X-Signature` per `signing` (with [`Signing::Good`] only when a
    /// secret is configured, as the implementations do).
    pub async fn post_raw(&self, url: &str, body: Vec<u8>, signing: Signing) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Self-ID", SELF_ID.to_string());
        let secret = self.shared.options.secret.as_deref();
        let signed = match (signing, secret) {
            (Signing::Good, Some(secret)) => Some(signature(secret.as_bytes(), &body)),
            (Signing::Bad, secret) => {
                let wrong = format!("not-{}", secret.unwrap_or_default());
                Some(signature(wrong.as_bytes(), &body))
            }
            (Signing::Good, None) | (Signing::Missing, _) => None,
        };
        if let Some(signed) = signed {
            request = request.header("X-Signature", signed);
        }
        let response = request
            .body(body)
            .send()
            .await
            .expect("the bot's event endpoint answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cq_codes_parse_with_unescaping_and_encode_back() {
        let message =
            "a &#91;x&#93; &amp;#91; [CQ:at,qq=all] b[CQ:image,file=https://x/?a=1&amp;b=2&#44;3]c";
        let segments = parse_cq(message);
        assert_eq!(
            segments,
            vec![
                Segment::text("a [x] &#91; "),
                Segment::new("at", [("qq", "all")]),
                Segment::text(" b"),
                Segment::new("image", [("file", "https://x/?a=1&b=2,3")]),
                Segment::text("c"),
            ]
        );
        assert_eq!(parse_cq(&to_cq(&segments)), segments);
        // Unterminated codes and stray brackets stay text.
        assert_eq!(
            parse_cq("[CQ:at,qq=1 oops"),
            vec![Segment::text("[CQ:at,qq=1 oops")]
        );
        assert_eq!(
            to_cq(&[Segment::text("[CQ:at,qq=all]")]),
            "&#91;CQ:at,qq=all&#93;"
        );
    }

    async fn call(
        server: &OneBotServer,
        action: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().post(format!("{}/{action}", server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn options(dialect: Dialect) -> OneBotOptions {
        OneBotOptions {
            access_token: Some("tok".into()),
            secret: Some("sec".into()),
            dialect,
        }
    }

    #[tokio::test]
    async fn tokens_are_checked_by_header_or_query() {
        let server = OneBotServer::start(options(Dialect::NapCat)).await.unwrap();
        assert_eq!(
            call(&server, "get_login_info", None, json!({})).await.0,
            401
        );
        assert_eq!(
            call(&server, "get_login_info", Some("bad"), json!({}))
                .await
                .0,
            403
        );
        let (status, body) = call(&server, "get_login_info", Some("tok"), json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"]["user_id"], SELF_ID);
        assert_eq!(
            (body["status"].as_str(), body["retcode"].as_i64()),
            (Some("ok"), Some(0))
        );
        let by_query = reqwest::get(format!(
            "{}/send_private_msg?access_token=tok&user_id=5&message=hi%20%26amp%3B",
            server.url
        ))
        .await
        .unwrap();
        let body: Value = by_query.json().await.unwrap();
        assert!(body["data"]["message_id"].as_i64().is_some());
        assert_eq!(server.sent()[0].text, "hi &");
        let (_, literal) = call(
            &server,
            "send_private_msg",
            Some("tok"),
            json!({"user_id": 5, "message": "[CQ:at,qq=all]", "auto_escape": "true"}),
        )
        .await;
        assert_eq!(literal["status"], "ok");
        assert_eq!(
            server.sent()[1].segments,
            vec![Segment::text("[CQ:at,qq=all]")]
        );
        assert_eq!(server.refused_tokens(), 2);
        let form = reqwest::Client::new()
            .post(format!("{}/send_group_msg/", server.url))
            .bearer_auth("tok")
            .form(&[("group_id", "7"), ("message", "[CQ:at,qq=all] go")])
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 200);
        let sent = &server.sent_to(Target::Group(7))[0];
        assert_eq!(sent.text, "@全体成员 go");
        assert_eq!(sent.mentions(), vec!["all"]);
        assert_eq!(
            call(&server, "no_such_action", Some("tok"), json!({}))
                .await
                .0,
            404
        );
        let xml = reqwest::Client::new()
            .post(format!("{}/send_group_msg", server.url))
            .bearer_auth("tok")
            .header(header::CONTENT_TYPE, "text/xml")
            .body("<x/>")
            .send()
            .await
            .unwrap();
        assert_eq!(xml.status(), 406);
    }

    #[tokio::test]
    async fn array_messages_are_recorded_as_seen_and_deleted() {
        let server = OneBotServer::start(options(Dialect::NapCat)).await.unwrap();
        server.set_member(9, 42, "nick", "Card", Role::Admin);
        let message = json!([
            {"type": "text", "data": {"text": "[CQ:at,qq=all] & "}},
            {"type": "at", "data": {"qq": 42}},
            {"type": "image", "data": {"file": "https://img/x.png"}},
        ]);
        let (_, body) = call(
            &server,
            "send_group_msg",
            Some("tok"),
            json!({"group_id": "9", "message": message}),
        )
        .await;
        let id = body["data"]["message_id"].as_i64().unwrap();
        let sent = &server.sent()[0];
        assert_eq!(sent.text, "[CQ:at,qq=all] & @Card");
        assert_eq!(sent.images(), vec!["https://img/x.png"]);
        assert_eq!(sent.mentions(), vec!["42"]);
        let (_, body) = call(
            &server,
            "delete_msg",
            Some("tok"),
            json!({"message_id": id}),
        )
        .await;
        assert_eq!(body["status"], "ok");
        let (_, body) = call(
            &server,
            "delete_msg",
            Some("tok"),
            json!({"message_id": id}),
        )
        .await;
        assert_eq!(
            (body["retcode"].as_i64(), body["message"].as_str()),
            (Some(200), Some(NAPCAT_MESSAGE_GONE))
        );
        let (_, body) = call(
            &server,
            "get_group_member_info",
            Some("tok"),
            json!({"group_id": 9, "user_id": 42}),
        )
        .await;
        assert_eq!(body["data"]["role"], "admin");
        let (_, empty) = call(
            &server,
            "send_private_msg",
            Some("tok"),
            json!({"user_id": 1, "message": "  "}),
        )
        .await;
        assert_eq!(empty["status"], "failed");
        let (_, bad) = call(
            &server,
            "send_private_msg",
            Some("tok"),
            json!({"user_id": 1, "message": [{"type": "image", "data": {}}]}),
        )
        .await;
        assert_eq!(bad["retcode"], 400);
    }

    #[tokio::test]
    async fn failures_are_answered_in_each_dialect() {
        for (dialect, gone, risk) in [
            (
                Dialect::NapCat,
                (200, NAPCAT_GROUP_GONE),
                (200, NAPCAT_RISK_CONTROL),
            ),
            (
                Dialect::GoCqhttp,
                (100, "GROUP_NOT_FOUND"),
                (100, "SEND_MSG_API_ERROR"),
            ),
        ] {
            let server = OneBotServer::start(options(dialect)).await.unwrap();
            let text_of = |body: &Value| {
                body.get("message")
                    .or_else(|| body.get("msg"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let send = json!({"group_id": 3, "message": "hi"});
            server.fail_next(3, [Failure::RiskControl, Failure::Outage]);
            let (_, body) = call(&server, "send_group_msg", Some("tok"), send.clone()).await;
            assert_eq!(
                (body["retcode"].as_i64().unwrap(), text_of(&body).as_str()),
                (risk.0, risk.1)
            );
            assert_eq!(
                call(&server, "send_group_msg", Some("tok"), send.clone())
                    .await
                    .0,
                500
            );
            assert_eq!(
                call(&server, "send_group_msg", Some("tok"), send.clone())
                    .await
                    .1["status"],
                "ok"
            );
            server.remove_from_group(3);
            let (_, body) = call(&server, "send_group_msg", Some("tok"), send.clone()).await;
            assert_eq!(
                (body["retcode"].as_i64().unwrap(), text_of(&body).as_str()),
                (gone.0, gone.1)
            );
            server.set_muted(4, true);
            let (_, body) = call(
                &server,
                "send_group_msg",
                Some("tok"),
                json!({"group_id": 4, "message": "x"}),
            )
            .await;
            assert_eq!(body["status"], "failed");
            server.set_outage(true);
            assert_eq!(
                call(&server, "get_login_info", Some("tok"), json!({}))
                    .await
                    .0,
                500
            );
            assert_eq!(server.outage_answers(), 2);
            assert_eq!(server.rate_limited(), 1);
        }
    }

    #[tokio::test]
    async fn rate_limits_fail_sends_like_risk_control() {
        let server = OneBotServer::start(options(Dialect::GoCqhttp))
            .await
            .unwrap();
        server.enforce(RateLimits {
            global_per_second: 3,
            per_group: Duration::from_secs(60),
        });
        let group = |g: i64| json!({"group_id": g, "message": "x"});
        let (_, first) = call(&server, "send_group_msg", Some("tok"), group(1)).await;
        let (_, again) = call(&server, "send_group_msg", Some("tok"), group(1)).await;
        let (_, other) = call(&server, "send_group_msg", Some("tok"), group(2)).await;
        let (_, private) = call(
            &server,
            "send_private_msg",
            Some("tok"),
            json!({"user_id": 8, "message": "x"}),
        )
        .await;
        let (_, over) = call(&server, "send_group_msg", Some("tok"), group(3)).await;
        assert_eq!(
            [&first, &again, &other, &private, &over].map(|b| b["retcode"].as_i64().unwrap()),
            [0, 100, 0, 0, 100]
        );
        assert_eq!(over["msg"], "SEND_MSG_API_ERROR");
        assert_eq!(server.rate_limited(), 2);
        assert_eq!(server.sent().len(), 3);
    }

    #[tokio::test]
    async fn events_are_posted_signed_with_self_id() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let receiver = Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let _ = tx.send((header("x-signature"), header("x-self-id"), body));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let bot = serve(receiver).await.unwrap();
        let url = format!("{}/", bot.base_url());
        let server = OneBotServer::start(options(Dialect::NapCat)).await.unwrap();
        let message = IncomingMessage::group(77, 5, "/list [x] & y").role(Role::Owner);
        assert_eq!(server.post_message(&url, &message).await.0, 204);
        let (signature_header, self_id, body) = rx.recv().await.unwrap();
        assert_eq!(signature_header, Some(signature(b"sec", &body)));
        assert_eq!(self_id, Some(SELF_ID.to_string()));
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["message"][0]["data"]["text"], "/list [x] & y");
        assert_eq!(event["raw_message"], "/list &#91;x&#93; &amp; y");
        assert_eq!(event["sender"]["role"], "owner");
        assert_eq!(event["group_id"], 77);

        server
            .post_message_signed(&url, &message.clone().string_format(), Signing::Bad)
            .await;
        let (bad, _, body) = rx.recv().await.unwrap();
        assert_ne!(bad, Some(signature(b"sec", &body)));
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["message"], "/list &#91;x&#93; &amp; y");
        server
            .post_message_signed(&url, &IncomingMessage::private(5, "hi"), Signing::Missing)
            .await;
        let (missing, _, body) = rx.recv().await.unwrap();
        assert_eq!(missing, None);
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (event["message_type"].as_str(), event["sub_type"].as_str()),
            (Some("private"), Some("friend"))
        );
        // A group sender joined the member table.
        let (_, info) = call(
            &server,
            "get_group_member_info",
            Some("tok"),
            json!({"group_id": 77, "user_id": 5}),
        )
        .await;
        assert_eq!(info["data"]["role"], "owner");
    }

    #[tokio::test]
    async fn a_claimed_role_leaves_the_member_table_alone() {
        let server = OneBotServer::start(options(Dialect::NapCat)).await.unwrap();
        let claimed = IncomingMessage::group(5, 6, "/x").claims_role(Role::Admin);
        let event = server.message_event(&claimed);
        assert_eq!(event["sender"]["role"], "admin");
        let info = |user: i64| {
            call(
                &server,
                "get_group_member_info",
                Some("tok"),
                json!({"group_id": 5, "user_id": user}),
            )
        };
        let (_, unknown) = info(6).await;
        assert_eq!(unknown["message"], NAPCAT_MEMBER_GONE);
        server.set_member(5, 6, "n", "", Role::Member);
        server.message_event(&claimed);
        assert_eq!(info(6).await.1["data"]["role"], "member");
        let omitted = IncomingMessage::group(5, 7, "/x")
            .role(Role::Owner)
            .omits_role();
        let event = server.message_event(&omitted);
        assert!(event["sender"].get("role").is_none(), "{event}");
        assert_eq!(info(7).await.1["data"]["role"], "owner");
    }
}
