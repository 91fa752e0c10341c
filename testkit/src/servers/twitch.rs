//! Twitch as a source sees it: the OAuth token endpoint, Helix and the EventSub webhook
//! sender.
//!
//! - `POST /oauth2/token` (client credentials, form or query) issues app tokens with
//!   `expires_in`; [`TwitchServer::revoke_tokens`] makes every issued token invalid, so
//!   Helix answers 401 until a new one is fetched.
//! - Helix under `/helix`: `GET /users?login=`, `GET /streams?user_id=` (≤ 100),
//!   `GET /channels?broadcaster_id=` (≤ 100), `GET|POST|DELETE /eventsub/subscriptions`
//!   (100 per page, `pagination.cursor`, 409 on a duplicate of type + condition +
//!   callback). Every Helix answer carries `Ratelimit-Limit`, `Ratelimit-Remaining` and
//!   `Ratelimit-Reset` (unix seconds) of a token bucket refilled each window; an empty
//!   bucket answers 429 ([`TwitchServer::set_bucket`], [`TwitchServer::force_rate_limited`]).
//!   A request without `Client-Id` or with an unknown bearer token answers 401.
//! - EventSub: a created subscription is `webhook_callback_verification_pending`; the server
//!   then POSTs a signed `webhook_callback_verification` with a challenge to the callback
//!   and marks it `enabled` only when the answer body is exactly the challenge (else
//!   `webhook_callback_verification_failed`). [`TwitchServer::online`],
//!   [`TwitchServer::offline`], [`TwitchServer::channel_update`] send signed notifications
//!   with the real payload shapes, [`TwitchServer::resend`] repeats a message (same id,
//!   `Twitch-Eventsub-Message-Retry` + 1), [`TwitchServer::revoke`] sends a revocation and
//!   [`TwitchServer::send`] sends anything, badly signed or stale when asked.
//!
//! Every Helix and token request is recorded ([`TwitchServer::requests`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use super::{lock, serve, Served};

/// Subscriptions per page of `GET /eventsub/subscriptions` (Twitch's page size).
const PAGE: usize = 100;
/// Ids per `GET /streams`, `/channels`, `/users` call that Helix accepts.
const MAX_IDS: usize = 100;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path (`/helix/streams`, `/oauth2/token`…).
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The status answered.
    pub status: u16,
}

/// An EventSub subscription held by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its id.
    pub id: String,
    /// `stream.online`, `stream.offline`, `channel.update`.
    pub kind: String,
    /// `1` or `2`.
    pub version: String,
    /// `enabled`, `webhook_callback_verification_pending`, …
    pub status: String,
    /// `condition.broadcaster_user_id`.
    pub broadcaster: String,
    /// The webhook callback.
    pub callback: String,
    /// The HMAC secret messages are signed with.
    pub secret: String,
}

impl Subscription {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status,
            "type": self.kind,
            "version": self.version,
            "cost": 1,
            "condition": {"broadcaster_user_id": self.broadcaster},
            "transport": {"method": "webhook", "callback": self.callback},
            "created_at": "2026-01-01T00:00:00.000000000Z",
        })
    }
}

/// A Twitch user.
#[derive(Debug, Clone)]
pub struct User {
    /// Numeric id.
    pub id: String,
    /// Login (lower case).
    pub login: String,
    /// Display name.
    pub name: String,
}

/// A live stream as `GET /streams` lists it.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The stream id.
    pub id: String,
    /// `live` (Helix lists only live streams; other types are EventSub's).
    pub kind: String,
    /// Title.
    pub title: String,
    /// Game name.
    pub game_name: String,
    /// Start.
    pub started_at: DateTime<Utc>,
}

/// How [`TwitchServer::send`] damages a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tamper {
    /// Sent as Twitch sends it.
    #[default]
    None,
    /// A signature made with another secret.
    BadSignature,
    /// No signature header.
    Unsigned,
    /// The timestamp this long ago, seconds (signed correctly for it).
    StaleBy(i64),
}

/// A message sent to a callback.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `Twitch-Eventsub-Message-Id`.
    pub message_id: String,
    /// The status the callback answered (0: no answer).
    pub status: u16,
    /// The answer body.
    pub body: String,
}

struct Bucket {
    limit: i64,
    remaining: i64,
    reset_at: i64,
    window: i64,
    forced: u64,
    forced_reset_in: i64,
}

struct Message {
    kind: String,
    subscription: Subscription,
    body: String,
    retry: u32,
}

struct TwitchState {
    client_id: String,
    client_secret: String,
    base: Mutex<String>,
    expires_in: Mutex<u64>,
    tokens: Mutex<HashMap<String, i64>>,
    users: Mutex<HashMap<String, User>>,
    streams: Mutex<HashMap<String, Stream>>,
    channels: Mutex<HashMap<String, (String, String)>>,
    subscriptions: Mutex<Vec<Subscription>>,
    bucket: Mutex<Bucket>,
    requests: Mutex<Vec<Recorded>>,
    messages: Mutex<HashMap<String, Message>>,
    auto_verify: Mutex<bool>,
    next: AtomicU64,
    http: reqwest::Client,
}

impl TwitchState {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }
}

/// A running Twitch double; stops when dropped.
pub struct TwitchServer {
    /// `twitch.id_base`.
    pub id_base: String,
    /// `twitch.helix_base`.
    pub helix_base: String,
    /// The client id it accepts.
    pub client_id: String,
    /// The client secret it accepts.
    pub client_secret: String,
    state: Arc<TwitchState>,
    _served: Served,
}

fn hmac_hex(secret: &str, message_id: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(message_id.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "error": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "message": message,
    });
    (status, Json(body)).into_response()
}

fn query_values(query: &str, name: &str) -> Vec<String> {
    url_pairs(query)
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TwitchState {
    fn rate_headers(&self, bucket: &Bucket) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ratelimit-limit", bucket.limit),
            ("ratelimit-remaining", bucket.remaining.max(0)),
            ("ratelimit-reset", bucket.reset_at),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
        headers
    }

    /// Checks the app token and spends a point of the bucket.
    fn admit(&self, headers: &HeaderMap) -> Result<HeaderMap, Box<Response>> {
        let client = headers.get("client-id").and_then(|v| v.to_str().ok());
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let now = Utc::now().timestamp();
        let valid = bearer.is_some_and(|token| {
            lock(&self.tokens)
                .get(token)
                .is_some_and(|expires| *expires > now)
        });
        if client != Some(self.client_id.as_str()) {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "Client ID and OAuth token do not match",
            )));
        }
        if !valid {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "Invalid OAuth token",
            )));
        }
        let mut bucket = lock(&self.bucket);
        if now >= bucket.reset_at {
            bucket.reset_at = now + bucket.window;
            bucket.remaining = bucket.limit;
        }
        if bucket.forced > 0 {
            bucket.forced -= 1;
            bucket.remaining = 0;
            bucket.reset_at = now + bucket.forced_reset_in;
            let headers = self.rate_headers(&bucket);
            return Err(Box::new(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    headers,
                    error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
                )
                    .into_response(),
            ));
        }
        if bucket.remaining <= 0 {
            let headers = self.rate_headers(&bucket);
            return Err(Box::new(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    headers,
                    error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
                )
                    .into_response(),
            ));
        }
        bucket.remaining -= 1;
        Ok(self.rate_headers(&bucket))
    }

    fn record(&self, method: &Method, path: &str, query: &str, status: StatusCode) {
        lock(&self.requests).push(Recorded {
            method: method.to_string(),
            path: path.to_owned(),
            query: query.to_owned(),
            status: status.as_u16(),
        });
    }
}

async fn token(
    State(state): State<Arc<TwitchState>>,
    RawQuery(query): RawQuery,
    body: String,
) -> Response {
    let mut pairs = url_pairs(query.as_deref().unwrap_or(""));
    pairs.extend(url_pairs(&body));
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let response = if get("client_id").as_deref() != Some(state.client_id.as_str()) {
        error(StatusCode::BAD_REQUEST, "invalid client")
    } else if get("client_secret").as_deref() != Some(state.client_secret.as_str()) {
        error(StatusCode::FORBIDDEN, "invalid client secret")
    } else if get("grant_type").as_deref() != Some("client_credentials") {
        error(StatusCode::BAD_REQUEST, "unsupported grant type")
    } else {
        let token = format!("apptoken{}", state.next_id());
        let expires_in = *lock(&state.expires_in);
        lock(&state.tokens).insert(token.clone(), Utc::now().timestamp() + expires_in as i64);
        Json(json!({"access_token": token, "expires_in": expires_in, "token_type": "bearer"}))
            .into_response()
    };
    state.record(
        &Method::POST,
        "/oauth2/token",
        query.as_deref().unwrap_or(""),
        response.status(),
    );
    response
}

async fn users(
    State(state): State<Arc<TwitchState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let response = match state.admit(&headers) {
        Err(refused) => *refused,
        Ok(limits) => {
            let logins = query_values(&query, "login");
            let ids = query_values(&query, "id");
            if logins.len() + ids.len() > MAX_IDS {
                error(StatusCode::BAD_REQUEST, "too many logins or ids")
            } else {
                let users = lock(&state.users);
                let data: Vec<Value> = users
                    .values()
                    .filter(|u| logins.contains(&u.login) || ids.contains(&u.id))
                    .map(|u| {
                        json!({"id": u.id, "login": u.login, "display_name": u.name,
                               "type": "", "broadcaster_type": "", "description": "",
                               "profile_image_url": "", "offline_image_url": "",
                               "created_at": "2020-01-01T00:00:00Z"})
                    })
                    .collect();
                (limits, Json(json!({"data": data}))).into_response()
            }
        }
    };
    state.record(&Method::GET, "/helix/users", &query, response.status());
    response
}

async fn streams(
    State(state): State<Arc<TwitchState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let response = match state.admit(&headers) {
        Err(refused) => *refused,
        Ok(limits) => {
            let ids = query_values(&query, "user_id");
            if ids.len() > MAX_IDS {
                error(
                    StatusCode::BAD_REQUEST,
                    "The parameter \"user_id\" may only be specified up to 100 times",
                )
            } else {
                let (streams, users) = (lock(&state.streams), lock(&state.users));
                let data: Vec<Value> = ids
                    .iter()
                    .filter_map(|id| streams.get(id).map(|s| (id, s)))
                    .map(|(id, s)| {
                        let login = users.get(id).map(|u| u.login.clone()).unwrap_or_default();
                        json!({"id": s.id, "user_id": id, "user_login": login,
                               "user_name": login, "game_id": "1", "game_name": s.game_name,
                               "type": s.kind, "title": s.title, "tags": [], "viewer_count": 5,
                               "started_at": s.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                               "language": "en",
                               "thumbnail_url": format!("https://static-cdn.jtvnw.net/previews-ttv/live_user_{login}-{{width}}x{{height}}.jpg"),
                               "is_mature": false})
                    })
                    .collect();
                (limits, Json(json!({"data": data, "pagination": {}}))).into_response()
            }
        }
    };
    state.record(&Method::GET, "/helix/streams", &query, response.status());
    response
}

async fn channels(
    State(state): State<Arc<TwitchState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let response = match state.admit(&headers) {
        Err(refused) => *refused,
        Ok(limits) => {
            let ids = query_values(&query, "broadcaster_id");
            if ids.is_empty() || ids.len() > MAX_IDS {
                error(
                    StatusCode::BAD_REQUEST,
                    "Missing or too many broadcaster_id",
                )
            } else {
                let (channels, users) = (lock(&state.channels), lock(&state.users));
                let data: Vec<Value> = ids
                    .iter()
                    .filter_map(|id| users.get(id))
                    .map(|u| {
                        let (title, game) = channels.get(&u.id).cloned().unwrap_or_default();
                        json!({"broadcaster_id": u.id, "broadcaster_login": u.login,
                               "broadcaster_name": u.name, "broadcaster_language": "en",
                               "game_id": "1", "game_name": game, "title": title, "delay": 0,
                               "tags": []})
                    })
                    .collect();
                (limits, Json(json!({"data": data}))).into_response()
            }
        }
    };
    state.record(&Method::GET, "/helix/channels", &query, response.status());
    response
}

async fn list_subscriptions(
    State(state): State<Arc<TwitchState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let response = match state.admit(&headers) {
        Err(refused) => *refused,
        Ok(limits) => {
            let after = query_values(&query, "after")
                .first()
                .and_then(|c| c.strip_prefix("cursor-").and_then(|n| n.parse().ok()))
                .unwrap_or(0usize);
            let kind = query_values(&query, "type").into_iter().next();
            let user = query_values(&query, "user_id").into_iter().next();
            let status = query_values(&query, "status").into_iter().next();
            let subs = lock(&state.subscriptions);
            let matching: Vec<&Subscription> = subs
                .iter()
                .filter(|s| kind.as_ref().is_none_or(|k| &s.kind == k))
                .filter(|s| user.as_ref().is_none_or(|u| &s.broadcaster == u))
                .filter(|s| status.as_ref().is_none_or(|st| &s.status == st))
                .collect();
            let page: Vec<Value> = matching
                .iter()
                .skip(after)
                .take(PAGE)
                .map(|s| s.to_json())
                .collect();
            let pagination = if after + PAGE < matching.len() {
                json!({"cursor": format!("cursor-{}", after + PAGE)})
            } else {
                json!({})
            };
            let body = json!({"data": page, "total": matching.len(), "total_cost": subs.len(),
                              "max_total_cost": 10000, "pagination": pagination});
            (limits, Json(body)).into_response()
        }
    };
    state.record(
        &Method::GET,
        "/helix/eventsub/subscriptions",
        &query,
        response.status(),
    );
    response
}

async fn create_subscription(
    State(state): State<Arc<TwitchState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let response = match state.admit(&headers) {
        Err(refused) => *refused,
        Ok(limits) => create(&state, &body, limits),
    };
    state.record(
        &Method::POST,
        "/helix/eventsub/subscriptions",
        "",
        response.status(),
    );
    response
}

fn create(state: &Arc<TwitchState>, body: &str, limits: HeaderMap) -> Response {
    let Ok(request) = serde_json::from_str::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "malformed body");
    };
    let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str);
    let (Some(kind), Some(version), Some(broadcaster), Some(callback), Some(secret)) = (
        text("/type"),
        text("/version"),
        text("/condition/broadcaster_user_id"),
        text("/transport/callback"),
        text("/transport/secret"),
    ) else {
        return error(StatusCode::BAD_REQUEST, "missing field");
    };
    if text("/transport/method") != Some("webhook") {
        return error(StatusCode::BAD_REQUEST, "unsupported transport");
    }
    let expected = match kind {
        "stream.online" | "stream.offline" => "1",
        "channel.update" => "2",
        _ => return error(StatusCode::BAD_REQUEST, "unsupported type"),
    };
    if version != expected {
        return error(StatusCode::BAD_REQUEST, "unsupported version");
    }
    if !(10..=100).contains(&secret.len()) {
        return error(StatusCode::BAD_REQUEST, "invalid secret length");
    }
    let sub = {
        let mut subs = lock(&state.subscriptions);
        if subs
            .iter()
            .any(|s| s.kind == kind && s.broadcaster == broadcaster && s.callback == callback)
        {
            return error(StatusCode::CONFLICT, "subscription already exists");
        }
        let sub = Subscription {
            id: format!("sub-{}", state.next_id()),
            kind: kind.to_owned(),
            version: version.to_owned(),
            status: "webhook_callback_verification_pending".to_owned(),
            broadcaster: broadcaster.to_owned(),
            callback: callback.to_owned(),
            secret: secret.to_owned(),
        };
        subs.push(sub.clone());
        sub
    };
    if *lock(&state.auto_verify) {
        let state = state.clone();
        let sub = sub.clone();
        tokio::spawn(async move { verify(&state, sub).await });
    }
    let body =
        json!({"data": [sub.to_json()], "total": 1, "total_cost": 1, "max_total_cost": 10000});
    (StatusCode::ACCEPTED, limits, Json(body)).into_response()
}

async fn verify(state: &Arc<TwitchState>, sub: Subscription) {
    let challenge = format!("challenge-{}", state.next_id());
    let body = json!({"challenge": challenge, "subscription": sub.to_json()}).to_string();
    let sent = deliver(
        state,
        &sub,
        "webhook_callback_verification",
        &body,
        &format!("verify-{}", state.next_id()),
        0,
        Tamper::None,
    )
    .await;
    let ok = (200..300).contains(&sent.status) && sent.body == challenge;
    let mut subs = lock(&state.subscriptions);
    if let Some(s) = subs.iter_mut().find(|s| s.id == sub.id) {
        s.status = if ok {
            "enabled"
        } else {
            "webhook_callback_verification_failed"
        }
        .to_owned();
    }
}

async fn deliver(
    state: &TwitchState,
    sub: &Subscription,
    kind: &str,
    body: &str,
    message_id: &str,
    retry: u32,
    tamper: Tamper,
) -> Sent {
    let timestamp = match tamper {
        Tamper::StaleBy(seconds) => Utc::now() - chrono::Duration::seconds(seconds),
        _ => Utc::now(),
    }
    .to_rfc3339_opts(SecondsFormat::Nanos, true);
    let secret = match tamper {
        Tamper::BadSignature => "not-the-right-secret",
        _ => sub.secret.as_str(),
    };
    let signature = hmac_hex(secret, message_id, &timestamp, body);
    let mut request = state
        .http
        .post(&sub.callback)
        .header("content-type", "application/json")
        .header("twitch-eventsub-message-id", message_id)
        .header("twitch-eventsub-message-retry", retry.to_string())
        .header("twitch-eventsub-message-type", kind)
        .header("twitch-eventsub-message-timestamp", &timestamp)
        .header("twitch-eventsub-subscription-type", &sub.kind)
        .header("twitch-eventsub-subscription-version", &sub.version)
        .body(body.to_owned());
    if tamper != Tamper::Unsigned {
        request = request.header("twitch-eventsub-message-signature", signature);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            Sent {
                message_id: message_id.to_owned(),
                status,
                body: response.text().await.unwrap_or_default(),
            }
        }
        Err(_) => Sent {
            message_id: message_id.to_owned(),
            status: 0,
            body: String::new(),
        },
    }
}

async fn delete_subscription(
    State(state): State<Arc<TwitchState>>,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let response = match state.admit(&headers) {
        Err(refused) => *refused,
        Ok(limits) => match query.get("id") {
            None => error(StatusCode::BAD_REQUEST, "Missing required parameter \"id\""),
            Some(id) => {
                let mut subs = lock(&state.subscriptions);
                let before = subs.len();
                subs.retain(|s| &s.id != id);
                if subs.len() < before {
                    (StatusCode::NO_CONTENT, limits).into_response()
                } else {
                    error(StatusCode::NOT_FOUND, "subscription not found")
                }
            }
        },
    };
    state.record(
        &Method::DELETE,
        "/helix/eventsub/subscriptions",
        raw.as_deref().unwrap_or(""),
        response.status(),
    );
    response
}

impl TwitchServer {
    /// Starts a server accepting `client_id` / `client_secret`; tokens last an hour.
    pub async fn start(client_id: &str, client_secret: &str) -> std::io::Result<Self> {
        let state = Arc::new(TwitchState {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            base: Mutex::new(String::new()),
            expires_in: Mutex::new(3600),
            tokens: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(Vec::new()),
            bucket: Mutex::new(Bucket {
                limit: 800,
                remaining: 800,
                reset_at: 0,
                window: 60,
                forced: 0,
                forced_reset_in: 1,
            }),
            requests: Mutex::new(Vec::new()),
            messages: Mutex::new(HashMap::new()),
            auto_verify: Mutex::new(true),
            next: AtomicU64::new(1),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(std::io::Error::other)?,
        });
        let helix = Router::new()
            .route("/users", get(users))
            .route("/streams", get(streams))
            .route("/channels", get(channels))
            .route(
                "/eventsub/subscriptions",
                get(list_subscriptions)
                    .post(create_subscription)
                    .delete(delete_subscription),
            );
        let router = Router::new()
            .route("/oauth2/token", post(token))
            .nest("/helix", helix)
            .with_state(state.clone());
        let served = serve(router).await?;
        let base = served.base_url();
        *lock(&state.base) = base.clone();
        Ok(Self {
            id_base: base.clone(),
            helix_base: format!("{base}/helix"),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            state,
            _served: served,
        })
    }

    /// Adds a user; returns its numeric id.
    pub fn add_user(&self, login: &str) -> String {
        // Random, so servers of concurrent tests hand out different ids.
        let id = (100_000_000 + uuid::Uuid::new_v4().as_u128() % 800_000_000).to_string();
        lock(&self.state.users).insert(
            id.clone(),
            User {
                id: id.clone(),
                login: login.to_lowercase(),
                name: login.to_owned(),
            },
        );
        id
    }

    /// Sets what `GET /channels` says of a user.
    pub fn set_channel(&self, user_id: &str, title: &str, game: &str) {
        lock(&self.state.channels).insert(user_id.to_owned(), (title.to_owned(), game.to_owned()));
    }

    /// Lists a live stream for `user_id` in `GET /streams` (the channel's title and game
    /// follow it).
    pub fn go_live(&self, user_id: &str, stream_id: &str, title: &str, game: &str) {
        self.set_channel(user_id, title, game);
        lock(&self.state.streams).insert(
            user_id.to_owned(),
            Stream {
                id: stream_id.to_owned(),
                kind: "live".to_owned(),
                title: title.to_owned(),
                game_name: game.to_owned(),
                started_at: Utc::now(),
            },
        );
    }

    /// Removes `user_id`'s stream from `GET /streams`.
    pub fn end_stream(&self, user_id: &str) {
        lock(&self.state.streams).remove(user_id);
    }

    /// Tokens issued from now on last `seconds`.
    pub fn set_token_lifetime(&self, seconds: u64) {
        *lock(&self.state.expires_in) = seconds;
    }

    /// Every token issued so far stops working (Helix answers 401).
    pub fn revoke_tokens(&self) {
        lock(&self.state.tokens).clear();
    }

    /// A bucket of `limit` points refilled every `window` seconds.
    pub fn set_bucket(&self, limit: i64, window: i64) {
        let mut bucket = lock(&self.state.bucket);
        bucket.limit = limit;
        bucket.remaining = limit;
        bucket.window = window;
        bucket.reset_at = Utc::now().timestamp() + window;
    }

    /// The next `n` Helix requests answer 429 with `Ratelimit-Reset` `reset_in` seconds away.
    pub fn force_rate_limited(&self, n: u64, reset_in: i64) {
        let mut bucket = lock(&self.state.bucket);
        bucket.forced = n;
        bucket.forced_reset_in = reset_in;
    }

    /// Whether created subscriptions are verified at once (default true).
    pub fn set_auto_verify(&self, on: bool) {
        *lock(&self.state.auto_verify) = on;
    }

    /// Adds a subscription as if created earlier, with `status`; returns its id.
    pub fn seed_subscription(
        &self,
        kind: &str,
        broadcaster: &str,
        callback: &str,
        secret: &str,
        status: &str,
    ) -> String {
        let id = format!("sub-{}", self.state.next_id());
        lock(&self.state.subscriptions).push(Subscription {
            id: id.clone(),
            kind: kind.to_owned(),
            version: if kind == "channel.update" { "2" } else { "1" }.to_owned(),
            status: status.to_owned(),
            broadcaster: broadcaster.to_owned(),
            callback: callback.to_owned(),
            secret: secret.to_owned(),
        });
        id
    }

    /// Every subscription now.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        lock(&self.state.subscriptions).clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Requests with this method and path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    fn subscription(&self, kind: &str, broadcaster: &str) -> Subscription {
        lock(&self.state.subscriptions)
            .iter()
            .find(|s| s.kind == kind && s.broadcaster == broadcaster)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} subscription for {broadcaster}"))
    }

    fn user(&self, id: &str) -> User {
        lock(&self.state.users)
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no user {id}"))
    }

    /// Sends `stream.online` for `broadcaster` with stream `stream_id` of `kind` (`live`,
    /// `rerun`, `playlist`…).
    pub async fn online(&self, broadcaster: &str, stream_id: &str, kind: &str) -> Sent {
        let user = self.user(broadcaster);
        let event = json!({"id": stream_id, "broadcaster_user_id": user.id,
            "broadcaster_user_login": user.login, "broadcaster_user_name": user.name,
            "type": kind,
            "started_at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)});
        self.notify("stream.online", broadcaster, event, Tamper::None)
            .await
    }

    /// Sends `stream.offline` for `broadcaster`.
    pub async fn offline(&self, broadcaster: &str) -> Sent {
        let user = self.user(broadcaster);
        let event = json!({"broadcaster_user_id": user.id,
            "broadcaster_user_login": user.login, "broadcaster_user_name": user.name});
        self.notify("stream.offline", broadcaster, event, Tamper::None)
            .await
    }

    /// Sends `channel.update` (version 2) for `broadcaster`.
    pub async fn channel_update(&self, broadcaster: &str, title: &str, category: &str) -> Sent {
        let user = self.user(broadcaster);
        let event = json!({"broadcaster_user_id": user.id,
            "broadcaster_user_login": user.login, "broadcaster_user_name": user.name,
            "title": title, "language": "en", "category_id": "509658",
            "category_name": category, "content_classification_labels": []});
        self.notify("channel.update", broadcaster, event, Tamper::None)
            .await
    }

    /// Sends a notification of subscription type `kind` carrying `event`, damaged as
    /// `tamper` says.
    pub async fn notify(
        &self,
        kind: &str,
        broadcaster: &str,
        event: Value,
        tamper: Tamper,
    ) -> Sent {
        let mut sub = self.subscription(kind, broadcaster);
        sub.status = "enabled".to_owned();
        let body = json!({"subscription": sub.to_json(), "event": event}).to_string();
        self.send(&sub, "notification", body, tamper).await
    }

    /// Sends a revocation of `broadcaster`'s `kind` subscription with `status`
    /// (`authorization_revoked`, `user_removed`, `notification_failures_exceeded`,
    /// `version_removed`) and removes it, as Twitch does.
    pub async fn revoke(&self, kind: &str, broadcaster: &str, status: &str) -> Sent {
        let mut sub = self.subscription(kind, broadcaster);
        lock(&self.state.subscriptions).retain(|s| s.id != sub.id);
        sub.status = status.to_owned();
        let body = json!({"subscription": sub.to_json()}).to_string();
        self.send(&sub, "revocation", body, Tamper::None).await
    }

    /// Sends `body` as a message of `message_type` for `sub`, with a fresh message id.
    pub async fn send(
        &self,
        sub: &Subscription,
        message_type: &str,
        body: String,
        tamper: Tamper,
    ) -> Sent {
        let id = format!("msg-{}", uuid::Uuid::new_v4());
        let sent = deliver(&self.state, sub, message_type, &body, &id, 0, tamper).await;
        lock(&self.state.messages).insert(
            id,
            Message {
                kind: message_type.to_owned(),
                subscription: sub.clone(),
                body,
                retry: 0,
            },
        );
        sent
    }

    /// Delivers message `message_id` again, as Twitch retries: same id and body, a new
    /// timestamp and signature, `Twitch-Eventsub-Message-Retry` one higher.
    pub async fn resend(&self, message_id: &str) -> Sent {
        let (sub, kind, body, retry) = {
            let mut messages = lock(&self.state.messages);
            let message = messages
                .get_mut(message_id)
                .unwrap_or_else(|| panic!("no message {message_id}"));
            message.retry += 1;
            (
                message.subscription.clone(),
                message.kind.clone(),
                message.body.clone(),
                message.retry,
            )
        };
        deliver(
            &self.state,
            &sub,
            &kind,
            &body,
            message_id,
            retry,
            Tamper::None,
        )
        .await
    }

    /// The same notification body as `message_id` under a new message id (Twitch may
    /// retry that way too).
    pub async fn resend_as_new(&self, message_id: &str) -> Sent {
        let (sub, kind, body) = {
            let messages = lock(&self.state.messages);
            let message = messages
                .get(message_id)
                .unwrap_or_else(|| panic!("no message {message_id}"));
            (
                message.subscription.clone(),
                message.kind.clone(),
                message.body.clone(),
            )
        };
        self.send(&sub, &kind, body, Tamper::None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_id_timestamp_and_body() {
        // Twitch's documented example construction: id + timestamp + body.
        let a = hmac_hex("secret", "id", "ts", "body");
        let b = hmac_hex("secret", "idts", "", "body");
        assert_eq!(a, b);
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(
            query_values("login=a&login=b%20c&x=1", "login"),
            vec!["a".to_owned(), "b c".to_owned()]
        );
    }
}
