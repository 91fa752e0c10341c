//! X API v2 user timelines: `GET /2/users/:id/tweets` with an app bearer token.
//!
//! Honours `since_id`, `max_results` (5–100, else 400), `pagination_token` (newest first,
//! `meta.next_token` while more remain), answers an unknown account with 200 and an
//! `errors` array as X does, a wrong token with a 401 problem document, and sends the
//! `x-rate-limit-limit` / `-remaining` / `-reset` headers of a 15-minute window (429 when
//! it is spent).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{lock, serve, Served};

/// Requests allowed per account timeline per window (X's app limit for this endpoint).
const WINDOW_LIMIT: i64 = 1500;
/// The rate window, seconds.
const WINDOW_SECONDS: i64 = 900;

/// One tweet of a timeline.
#[derive(Debug, Clone)]
pub struct Tweet {
    /// The numeric id.
    pub id: u64,
    /// The text.
    pub text: String,
    /// When it was posted.
    pub created_at: DateTime<Utc>,
    /// Language X detected.
    pub lang: String,
}

#[derive(Default)]
struct Window {
    remaining: i64,
    reset_at: i64,
}

#[derive(Default)]
struct XState {
    token: String,
    timelines: Mutex<HashMap<String, Vec<Tweet>>>,
    window: Mutex<Window>,
    next_id: AtomicU64,
    requests: AtomicU64,
}

/// A running X API double; stops when dropped.
pub struct XServer {
    /// Base URL for `twitter.api_base`.
    pub base: String,
    /// The bearer token it accepts.
    pub token: String,
    state: Arc<XState>,
    _served: Served,
}

/// A numeric account id, unique per call.
pub fn new_user_id() -> String {
    (1_000_000 + uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000).to_string()
}

fn rate_headers(window: &Window) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-rate-limit-limit", WINDOW_LIMIT),
        ("x-rate-limit-remaining", window.remaining.max(0)),
        ("x-rate-limit-reset", window.reset_at),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    headers
}

fn problem(status: StatusCode, title: &str, detail: &str, kind: &str) -> Json<Value> {
    Json(json!({"title": title, "detail": detail, "type": kind, "status": status.as_u16()}))
}

async fn user_tweets(
    State(state): State<Arc<XState>>,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {}", state.token)) {
        let body = problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            "about:blank",
        );
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    let limits = {
        let now = Utc::now().timestamp();
        let mut window = lock(&state.window);
        if now >= window.reset_at {
            window.reset_at = now + WINDOW_SECONDS;
            window.remaining = WINDOW_LIMIT;
        }
        if window.remaining <= 0 {
            let body = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests",
                "Too Many Requests",
                "about:blank",
            );
            return (StatusCode::TOO_MANY_REQUESTS, rate_headers(&window), body).into_response();
        }
        window.remaining -= 1;
        rate_headers(&window)
    };
    let max_results = match query.get("max_results").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (5..=100).contains(&n) => n,
        Some(_) => {
            let body = json!({
                "errors": [{"parameters": {"max_results": [query.get("max_results")]},
                            "message": "The `max_results` query parameter value is not between 5 and 100"}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": "https://api.twitter.com/2/problems/invalid-request",
            });
            return (StatusCode::BAD_REQUEST, limits, Json(body)).into_response();
        }
    };
    let timelines = lock(&state.timelines);
    let Some(timeline) = timelines.get(&user) else {
        let body = json!({"errors": [{
            "value": user, "detail": format!("Could not find user with id: [{user}]."),
            "title": "Not Found Error", "resource_type": "user", "parameter": "id", "resource_id": user,
            "type": "https://api.twitter.com/2/problems/resource-not-found",
        }]});
        return (StatusCode::OK, limits, Json(body)).into_response();
    };
    let since: u64 = query
        .get("since_id")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut newer: Vec<&Tweet> = timeline.iter().filter(|t| t.id > since).collect();
    newer.sort_by_key(|t| std::cmp::Reverse(t.id));
    let offset: usize = query
        .get("pagination_token")
        .and_then(|t| t.strip_prefix("pg").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let page: Vec<&Tweet> = newer
        .iter()
        .skip(offset)
        .take(max_results)
        .copied()
        .collect();
    let (Some(newest), Some(oldest)) = (page.first(), page.last()) else {
        return (
            StatusCode::OK,
            limits,
            Json(json!({"meta": {"result_count": 0}})),
        )
            .into_response();
    };
    let data: Vec<Value> = page
        .iter()
        .map(|t| {
            json!({
                "id": t.id.to_string(),
                "text": t.text,
                "created_at": t.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "author_id": user,
                "lang": t.lang,
                "edit_history_tweet_ids": [t.id.to_string()],
            })
        })
        .collect();
    let mut meta = json!({
        "result_count": page.len(),
        "newest_id": newest.id.to_string(),
        "oldest_id": oldest.id.to_string(),
    });
    if offset + page.len() < newer.len() {
        meta["next_token"] = json!(format!("pg{}", offset + page.len()));
    }
    let body = json!({
        "data": data,
        "includes": {"users": [{"id": user, "username": format!("account{user}"), "name": "Account"}]},
        "meta": meta,
    });
    (StatusCode::OK, limits, Json(body)).into_response()
}

impl XServer {
    /// Starts the double accepting `token`.
    pub async fn start(token: &str) -> crate::Result<Self> {
        let state = Arc::new(XState {
            token: token.to_owned(),
            next_id: AtomicU64::new(1_880_000_000_000_000_000),
            ..XState::default()
        });
        let router = Router::new()
            .route("/2/users/{id}/tweets", get(user_tweets))
            .with_state(state.clone());
        let served = serve(router).await?;
        Ok(Self {
            base: served.base_url(),
            token: token.to_owned(),
            state,
            _served: served,
        })
    }

    /// Creates an account with an empty timeline.
    pub fn add_account(&self, user_id: &str) {
        lock(&self.state.timelines)
            .entry(user_id.to_owned())
            .or_default();
    }

    /// Posts a tweet on `user_id`'s timeline now; returns its id.
    pub fn post(&self, user_id: &str, text: &str, lang: &str) -> u64 {
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&self.state.timelines)
            .entry(user_id.to_owned())
            .or_default()
            .push(Tweet {
                id,
                text: text.to_owned(),
                created_at: Utc::now(),
                lang: lang.to_owned(),
            });
        id
    }

    /// Timeline requests so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}
