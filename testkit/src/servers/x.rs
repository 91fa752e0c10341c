//! X API v2 user timelines: `GET /2/users/:id/tweets` with an app bearer token.
//!
//! Honours `since_id`, `max_results` (5–100, else 400), `pagination_token` (newest first,
//! `meta.next_token` while more remain), answers an unknown account with 200 and an
//! `errors` array as X does, a wrong token with a 401 problem document, and sends the
//! `x-rate-limit-limit` / `-remaining` / `-reset` headers of a 15-minute window (429 when
//! it is spent). Retweets come with the original in `includes.tweets` and its author in
//! `includes.users`; attached media in `includes.media`.
//!
//! Every request is recorded ([`XServer::requests_for`]); the test can shrink the rate
//! window ([`XServer::set_rate_limit`], [`XServer::set_rate_window`]), force 429s
//! ([`XServer::force_rate_limited`]) and count requests made while the budget was spent
//! ([`XServer::violations`]).

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
/// Distance between consecutive tweet ids, so they grow like real snowflakes rather than
/// one by one.
const ID_STRIDE: u64 = 1_000_003;

/// The tweet a retweet repeats.
#[derive(Debug, Clone)]
pub struct Retweeted {
    /// The original's id.
    pub id: u64,
    /// The original's full text.
    pub text: String,
    /// The original's author id (username `user<id>`).
    pub author_id: String,
}

/// A media item attached to a tweet.
#[derive(Debug, Clone)]
pub struct Media {
    /// The media key (`3_…` for photos, `7_…` for videos).
    pub key: String,
    /// `photo`, `video` or `animated_gif`.
    pub kind: String,
    /// The photo's `url`, or the `preview_image_url` of other kinds.
    pub url: String,
}

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
    /// The original, when this is a retweet.
    pub retweet_of: Option<Retweeted>,
    /// Attached media.
    pub media: Vec<Media>,
}

/// One timeline request as the server saw it.
#[derive(Debug, Clone)]
pub struct TimelineRequest {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// The account asked for.
    pub user_id: String,
    /// The query parameters.
    pub query: HashMap<String, String>,
    /// The status answered.
    pub status: u16,
}

struct Window {
    /// Requests allowed in a fresh window.
    limit: i64,
    remaining: i64,
    /// Unix seconds.
    reset_at: i64,
    /// Requests still to answer 429, and how far away their reset is, seconds.
    forced: u64,
    forced_reset_in: i64,
    /// Requests that arrived while the budget was spent (a client ignoring the headers).
    violations: u64,
}

struct XState {
    token: String,
    timelines: Mutex<HashMap<String, Vec<Tweet>>>,
    usernames: Mutex<HashMap<String, String>>,
    window: Mutex<Window>,
    requests: Mutex<Vec<TimelineRequest>>,
    next_id: AtomicU64,
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
        ("x-rate-limit-limit", window.limit),
        ("x-rate-limit-remaining", window.remaining.max(0)),
        ("x-rate-limit-reset", window.reset_at),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    headers
}

fn problem(status: StatusCode, title: &str) -> Json<Value> {
    Json(json!({"title": title, "detail": title, "type": "about:blank", "status": status.as_u16()}))
}

/// Spends one request of the rate window and returns its headers; `Err` with the headers
/// of a spent window when there is none left (the request is answered 429).
fn spend(state: &XState) -> Result<HeaderMap, HeaderMap> {
    let now = Utc::now().timestamp();
    let mut window = lock(&state.window);
    if now >= window.reset_at {
        window.reset_at = now + WINDOW_SECONDS;
        window.remaining = window.limit;
    }
    if window.forced > 0 {
        window.forced -= 1;
        window.remaining = 0;
        window.reset_at = now + window.forced_reset_in;
        return Err(rate_headers(&window));
    }
    if window.remaining <= 0 {
        window.violations += 1;
        return Err(rate_headers(&window));
    }
    window.remaining -= 1;
    Ok(rate_headers(&window))
}

async fn user_tweets(
    State(state): State<Arc<XState>>,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let response = timeline(&state, &user, &query, &headers);
    lock(&state.requests).push(TimelineRequest {
        at: Utc::now(),
        user_id: user,
        query,
        status: response.status().as_u16(),
    });
    response
}

fn timeline(
    state: &XState,
    user: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {}", state.token)) {
        let body = problem(StatusCode::UNAUTHORIZED, "Unauthorized");
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    let limits = match spend(state) {
        Ok(limits) => limits,
        Err(spent) => {
            let body = problem(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            return (StatusCode::TOO_MANY_REQUESTS, spent, body).into_response();
        }
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
    let Some(timeline) = timelines.get(user) else {
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
    let username = lock(&state.usernames)
        .get(user)
        .cloned()
        .unwrap_or_else(|| format!("account{user}"));
    let mut users = vec![json!({"id": user, "username": username, "name": "Account"})];
    let mut originals = Vec::new();
    let mut media = Vec::new();
    let data: Vec<Value> = page
        .iter()
        .map(|t| {
            let mut item = json!({
                "id": t.id.to_string(),
                "text": t.text,
                "created_at": t.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "author_id": user,
                "lang": t.lang,
                "edit_history_tweet_ids": [t.id.to_string()],
            });
            if let Some(original) = &t.retweet_of {
                let id = original.id.to_string();
                item["referenced_tweets"] = json!([{"type": "retweeted", "id": id}]);
                originals.push(json!({"id": id, "text": original.text, "author_id": original.author_id, "edit_history_tweet_ids": [id]}));
                users.push(json!({"id": original.author_id, "username": format!("user{}", original.author_id), "name": "Original"}));
            }
            if !t.media.is_empty() {
                let keys: Vec<&str> = t.media.iter().map(|m| m.key.as_str()).collect();
                item["attachments"] = json!({"media_keys": keys});
                for m in &t.media {
                    let url_field = if m.kind == "photo" { "url" } else { "preview_image_url" };
                    media.push(json!({"media_key": m.key, "type": m.kind, url_field: m.url}));
                }
            }
            item
        })
        .collect();
    let mut includes = json!({"users": users});
    // X leaves out the expansions nothing refers to.
    if !originals.is_empty() {
        includes["tweets"] = json!(originals);
    }
    if !media.is_empty() {
        includes["media"] = json!(media);
    }
    let mut meta = json!({
        "result_count": page.len(),
        "newest_id": newest.id.to_string(),
        "oldest_id": oldest.id.to_string(),
    });
    if offset + page.len() < newer.len() {
        meta["next_token"] = json!(format!("pg{}", offset + page.len()));
    }
    let body = json!({"data": data, "includes": includes, "meta": meta});
    (StatusCode::OK, limits, Json(body)).into_response()
}

impl XServer {
    /// Starts the double accepting `token`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        let state = Arc::new(XState {
            token: token.to_owned(),
            timelines: Mutex::default(),
            usernames: Mutex::default(),
            window: Mutex::new(Window {
                limit: WINDOW_LIMIT,
                remaining: WINDOW_LIMIT,
                reset_at: Utc::now().timestamp() + WINDOW_SECONDS,
                forced: 0,
                forced_reset_in: 0,
                violations: 0,
            }),
            requests: Mutex::default(),
            next_id: AtomicU64::new(1_880_000_000_000_000_000),
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

    /// Creates an account with an empty timeline and the username `account<id>`.
    pub fn add_account(&self, user_id: &str) {
        lock(&self.state.timelines)
            .entry(user_id.to_owned())
            .or_default();
    }

    /// Creates an account with an empty timeline and the given username.
    pub fn add_user(&self, user_id: &str, username: &str) {
        self.add_account(user_id);
        lock(&self.state.usernames).insert(user_id.to_owned(), username.to_owned());
    }

    /// Posts a plain tweet on `user_id`'s timeline now; returns its id.
    pub fn post(&self, user_id: &str, text: &str, lang: &str) -> u64 {
        self.post_with(user_id, text, lang, None, Vec::new())
    }

    /// Posts a tweet that may be a retweet or carry media; returns its id.
    pub fn post_with(
        &self,
        user_id: &str,
        text: &str,
        lang: &str,
        retweet_of: Option<Retweeted>,
        media: Vec<Media>,
    ) -> u64 {
        let id = self.state.next_id.fetch_add(ID_STRIDE, Ordering::SeqCst);
        lock(&self.state.timelines)
            .entry(user_id.to_owned())
            .or_default()
            .push(Tweet {
                id,
                text: text.to_owned(),
                created_at: Utc::now(),
                lang: lang.to_owned(),
                retweet_of,
                media,
            });
        id
    }

    /// Requests allowed in each new rate window from now on.
    pub fn set_rate_limit(&self, limit: i64) {
        lock(&self.state.window).limit = limit;
    }

    /// Sets the current rate window: `remaining` requests until `reset_at` (unix seconds).
    pub fn set_rate_window(&self, remaining: i64, reset_at: i64) {
        let mut window = lock(&self.state.window);
        window.remaining = remaining;
        window.reset_at = reset_at;
    }

    /// Answers the next `count` authorized requests 429, each spending the window and
    /// moving its reset `reset_in` seconds past that request.
    pub fn force_rate_limited(&self, count: u64, reset_in: i64) {
        let mut window = lock(&self.state.window);
        window.forced = count;
        window.forced_reset_in = reset_in;
    }

    /// When the current rate window resets, unix seconds.
    pub fn rate_reset_at(&self) -> i64 {
        lock(&self.state.window).reset_at
    }

    /// Requests that arrived while the rate budget was spent (forced 429s not counted).
    pub fn violations(&self) -> u64 {
        lock(&self.state.window).violations
    }

    /// Timeline requests so far, refused ones included.
    pub fn requests(&self) -> u64 {
        lock(&self.state.requests).len() as u64
    }

    /// Every timeline request for `user_id` so far, in arrival order.
    pub fn requests_for(&self, user_id: &str) -> Vec<TimelineRequest> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.user_id == user_id)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_timeline(x: &XServer, user: &str, query: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}/2/users/{user}/tweets?{query}", x.base))
            .bearer_auth(&x.token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn pages_newest_first_and_expands_retweets() {
        let x = XServer::start("t").await.unwrap();
        let user = new_user_id();
        x.add_user(&user, "vt");
        let ids: Vec<u64> = (0..6)
            .map(|i| x.post(&user, &format!("t{i}"), "en"))
            .collect();
        let original = Retweeted {
            id: 7,
            text: "full".into(),
            author_id: "42".into(),
        };
        let retweet = x.post_with(&user, "RT", "en", Some(original), Vec::new());
        let (status, first) = get_timeline(&x, &user, "max_results=5").await;
        assert_eq!(status, 200);
        assert_eq!(first["data"][0]["id"], retweet.to_string());
        assert_eq!(first["includes"]["tweets"][0]["text"], "full");
        assert_eq!(first["includes"]["users"][1]["username"], "user42");
        let token = first["meta"]["next_token"].as_str().unwrap();
        let (_, second) = get_timeline(
            &x,
            &user,
            &format!("max_results=5&pagination_token={token}"),
        )
        .await;
        assert_eq!(second["meta"]["result_count"], 2);
        assert_eq!(second["data"][1]["id"], ids[0].to_string());
        let (_, none) = get_timeline(&x, &user, &format!("max_results=5&since_id={retweet}")).await;
        assert_eq!(none["meta"]["result_count"], 0);
        assert_eq!(x.requests_for(&user).len(), 3);
    }

    #[tokio::test]
    async fn a_spent_window_answers_429_and_counts_violations() {
        let x = XServer::start("t").await.unwrap();
        let user = new_user_id();
        x.add_account(&user);
        x.set_rate_window(1, Utc::now().timestamp() + 60);
        assert_eq!(get_timeline(&x, &user, "").await.0, 200);
        assert_eq!(get_timeline(&x, &user, "").await.0, 429);
        assert_eq!(x.violations(), 1);
        x.set_rate_window(10, Utc::now().timestamp() + 60);
        x.force_rate_limited(1, 3);
        assert_eq!(get_timeline(&x, &user, "").await.0, 429);
        assert_eq!(x.violations(), 1, "a forced 429 is no violation");
        let statuses: Vec<u16> = x.requests_for(&user).iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![200, 429, 429]);
    }
}
