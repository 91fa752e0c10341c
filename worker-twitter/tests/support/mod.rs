//! Test doubles: an X API v2 server (`GET /2/users/:id/tweets` with bearer auth,
//! `since_id`, pagination, rate-limit headers, 429), plus the shared fake coordinator and
//! observer queue on the real RabbitMQ exchange from `stargazer-testkit`.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

pub use stargazer_testkit::coordinator;
pub use stargazer_testkit::observer::{Observer, ObserverOptions};
pub use stargazer_testkit::{eventually, AMQP_URL, MONGO_URL};

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

pub const TOKEN: &str = "test-bearer-token";

pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A numeric user id unique per call.
pub fn user_id() -> String {
    (Uuid::new_v4().as_u128() % 1_000_000_000_000).to_string()
}

#[derive(Debug, Clone)]
pub struct FakeTweet {
    pub id: u64,
    pub text: String,
    pub created_at: DateTime<Utc>,
    /// (original id, original text, original author id) for a retweet.
    pub retweet_of: Option<(u64, String, String)>,
    /// (media key, type, url) attached.
    pub media: Vec<(String, String, String)>,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub at: DateTime<Utc>,
    pub user: String,
    pub query: HashMap<String, String>,
    pub status: u16,
}

pub struct XState {
    pub timelines: Mutex<HashMap<String, Vec<FakeTweet>>>,
    pub usernames: Mutex<HashMap<String, String>>,
    pub requests: Mutex<Vec<Request>>,
    /// Requests allowed per window; the window resets at `reset_at` (unix seconds).
    pub limit: AtomicI64,
    pub remaining: AtomicI64,
    pub reset_at: AtomicI64,
    /// Answer the next N requests with 429 and a reset `forced_reset_in` seconds away.
    pub force_429: AtomicU64,
    pub forced_reset_in: AtomicI64,
    /// Requests that arrived while the budget was spent (a client ignoring the headers).
    pub violations: AtomicU64,
    pub next_id: AtomicU64,
}

#[derive(Clone)]
pub struct XServer {
    pub base: String,
    pub state: Arc<XState>,
}

fn now_s() -> i64 {
    Utc::now().timestamp()
}

fn rate_headers(state: &XState) -> [(String, String); 3] {
    [
        (
            "x-rate-limit-limit".into(),
            state.limit.load(Ordering::SeqCst).to_string(),
        ),
        (
            "x-rate-limit-remaining".into(),
            state.remaining.load(Ordering::SeqCst).max(0).to_string(),
        ),
        (
            "x-rate-limit-reset".into(),
            state.reset_at.load(Ordering::SeqCst).to_string(),
        ),
    ]
}

fn with_headers(headers: [(String, String); 3], status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

async fn user_tweets(
    State(state): State<Arc<XState>>,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let record = |status: u16| {
        state.requests.lock().unwrap().push(Request {
            at: Utc::now(),
            user: user.clone(),
            query: query.clone(),
            status,
        });
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        record(401);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})),
        )
            .into_response();
    }
    // The rate window.
    if now_s() >= state.reset_at.load(Ordering::SeqCst) {
        state.reset_at.store(now_s() + 900, Ordering::SeqCst);
        state
            .remaining
            .store(state.limit.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    if state
        .force_429
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        state.remaining.store(0, Ordering::SeqCst);
        state.reset_at.store(
            now_s() + state.forced_reset_in.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        record(429);
        return with_headers(
            rate_headers(&state),
            StatusCode::TOO_MANY_REQUESTS,
            json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}),
        );
    }
    if state.remaining.load(Ordering::SeqCst) <= 0 {
        state.violations.fetch_add(1, Ordering::SeqCst);
        record(429);
        return with_headers(
            rate_headers(&state),
            StatusCode::TOO_MANY_REQUESTS,
            json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}),
        );
    }
    state.remaining.fetch_sub(1, Ordering::SeqCst);
    let max_results: usize = match query.get("max_results").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (5..=100).contains(&n) => n,
        _ => {
            record(400);
            return with_headers(
                rate_headers(&state),
                StatusCode::BAD_REQUEST,
                json!({"errors": [{"parameters": {"max_results": [query.get("max_results")]}, "message": "The `max_results` query parameter value is not between 5 and 100"}],
                       "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.", "type": "https://api.twitter.com/2/problems/invalid-request"}),
            );
        }
    };
    let timelines = state.timelines.lock().unwrap();
    let Some(timeline) = timelines.get(&user) else {
        record(200);
        return with_headers(
            rate_headers(&state),
            StatusCode::OK,
            json!({"errors": [{"value": user, "detail": format!("Could not find user with id: [{user}]."),
                "title": "Not Found Error", "resource_type": "user", "parameter": "id", "resource_id": user,
                "type": "https://api.twitter.com/2/problems/resource-not-found"}]}),
        );
    };
    let since: u64 = query
        .get("since_id")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut newer: Vec<&FakeTweet> = timeline.iter().filter(|t| t.id > since).collect();
    newer.sort_by_key(|t| std::cmp::Reverse(t.id));
    let offset: usize = query
        .get("pagination_token")
        .and_then(|t| t.strip_prefix("tok").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let page: Vec<&FakeTweet> = newer
        .iter()
        .skip(offset)
        .take(max_results)
        .copied()
        .collect();
    let next = (offset + page.len() < newer.len()).then(|| format!("tok{}", offset + page.len()));
    record(200);
    if page.is_empty() {
        return with_headers(
            rate_headers(&state),
            StatusCode::OK,
            json!({"meta": {"result_count": 0}}),
        );
    }
    let usernames = state.usernames.lock().unwrap();
    let mut data = Vec::new();
    let mut media = Vec::new();
    let mut tweets = Vec::new();
    let mut users = vec![
        json!({"id": user, "username": usernames.get(&user).cloned().unwrap_or_default(), "name": "Account"}),
    ];
    for t in &page {
        let mut item = json!({
            "id": t.id.to_string(),
            "text": t.text,
            "created_at": t.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "author_id": user,
            "edit_history_tweet_ids": [t.id.to_string()],
        });
        if let Some((orig, text, author)) = &t.retweet_of {
            item["referenced_tweets"] = json!([{"type": "retweeted", "id": orig.to_string()}]);
            tweets.push(json!({"id": orig.to_string(), "text": text, "author_id": author, "edit_history_tweet_ids": [orig.to_string()]}));
            users.push(
                json!({"id": author, "username": format!("user{author}"), "name": "Original"}),
            );
        }
        if !t.media.is_empty() {
            item["attachments"] =
                json!({"media_keys": t.media.iter().map(|m| m.0.clone()).collect::<Vec<_>>()});
            for (key, kind, url) in &t.media {
                if kind == "photo" {
                    media.push(json!({"media_key": key, "type": kind, "url": url}));
                } else {
                    media.push(json!({"media_key": key, "type": kind, "preview_image_url": url}));
                }
            }
        }
        data.push(item);
    }
    let mut meta = json!({
        "result_count": page.len(),
        "newest_id": page.first().unwrap().id.to_string(),
        "oldest_id": page.last().unwrap().id.to_string(),
    });
    if let Some(next) = next {
        meta["next_token"] = json!(next);
    }
    with_headers(
        rate_headers(&state),
        StatusCode::OK,
        json!({"data": data, "includes": {"media": media, "tweets": tweets, "users": users}, "meta": meta}),
    )
}

impl XServer {
    pub async fn start() -> Self {
        let state = Arc::new(XState {
            timelines: Mutex::new(HashMap::new()),
            usernames: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            limit: AtomicI64::new(1500),
            remaining: AtomicI64::new(1500),
            reset_at: AtomicI64::new(now_s() + 900),
            force_429: AtomicU64::new(0),
            forced_reset_in: AtomicI64::new(2),
            violations: AtomicU64::new(0),
            next_id: AtomicU64::new(1_850_000_000_000_000_000),
        });
        let router = Router::new()
            .route("/2/users/{id}/tweets", get(user_tweets))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub fn add_user(&self, user: &str, username: &str) {
        self.state
            .timelines
            .lock()
            .unwrap()
            .entry(user.to_owned())
            .or_default();
        self.state
            .usernames
            .lock()
            .unwrap()
            .insert(user.to_owned(), username.to_owned());
    }

    /// Adds a tweet and returns its id (ids grow like real snowflakes).
    pub fn tweet(&self, user: &str, text: &str) -> u64 {
        self.push(user, text, None, vec![])
    }

    pub fn push(
        &self,
        user: &str,
        text: &str,
        retweet_of: Option<(u64, String, String)>,
        media: Vec<(String, String, String)>,
    ) -> u64 {
        let id = self.state.next_id.fetch_add(1_000_003, Ordering::SeqCst);
        self.state
            .timelines
            .lock()
            .unwrap()
            .entry(user.to_owned())
            .or_default()
            .push(FakeTweet {
                id,
                text: text.to_owned(),
                created_at: Utc::now(),
                retweet_of,
                media,
            });
        id
    }

    pub fn requests_for(&self, user: &str) -> Vec<Request> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.user == user)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------- bus observer

/// How this crate's tests observe the real exchange (`Observer::start(OBSERVER, patterns)`).
pub const OBSERVER: ObserverOptions<'static> = ObserverOptions {
    queue_prefix: "test.worker-twitter",
    require_json: false,
};
