//! X API v2 user timeline: `GET {base}/2/users/:id/tweets` with bearer auth, and the rate
//! limit gate shared by every account the worker polls (the limit belongs to the app
//! token, not to one account).

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use stargazer_core::sync::lock;
use stargazer_core::wait::{sleep_unless_cancelled, Waited};
use tokio_util::sync::CancellationToken;

/// Failures of a timeline request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 429: no more requests until `until`.
    #[error("rate limited until {until}")]
    RateLimited {
        /// When requests may resume.
        until: DateTime<Utc>,
    },
    /// 401 or 403: the token is wrong or lacks access to this account.
    #[error("X API refused access ({status}): {detail}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The API's explanation.
        detail: String,
    },
    /// The account does not exist (or is suspended): an `errors` body without data, or 404.
    #[error("account not available: {0}")]
    NotFound(String),
    /// Another client error (bad parameter).
    #[error("X API rejected the request ({status}): {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The API's explanation.
        detail: String,
    },
    /// A server error or transport failure.
    #[error("X API unavailable: {0}")]
    Unavailable(String),
    /// A success status with a body that is not a timeline page.
    #[error("unexpected X API body: {0}")]
    BadResponse(String),
}

impl ApiError {
    /// A short label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Rejected { .. } => "rejected",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::BadResponse(_) => "bad_response",
        }
    }
}

/// One tweet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Tweet {
    /// Tweet id (decimal string; exceeds 2^53).
    pub id: String,
    /// Text (for retweets, the truncated `RT @user: …`).
    #[serde(default)]
    pub text: String,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Author's user id.
    #[serde(default)]
    pub author_id: Option<String>,
    /// Retweeted, quoted or replied-to tweets.
    #[serde(default)]
    pub referenced_tweets: Vec<ReferencedTweet>,
    /// Attached media keys.
    #[serde(default)]
    pub attachments: Option<Attachments>,
}

/// A reference to another tweet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ReferencedTweet {
    /// `retweeted`, `quoted` or `replied_to`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The referenced tweet's id.
    pub id: String,
}

/// `attachments` of a tweet.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub(crate) struct Attachments {
    /// Keys into `includes.media`.
    #[serde(default)]
    pub media_keys: Vec<String>,
}

/// One media object of `includes.media`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Media {
    /// The key tweets refer to.
    pub media_key: String,
    /// `photo`, `video` or `animated_gif`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Image URL (photos).
    #[serde(default)]
    pub url: Option<String>,
    /// Preview image URL (videos, GIFs).
    #[serde(default)]
    pub preview_image_url: Option<String>,
}

/// One user of `includes.users`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct User {
    /// User id.
    pub id: String,
    /// Handle without `@`.
    #[serde(default)]
    pub username: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// `includes` of a page.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub(crate) struct Includes {
    /// Media objects.
    #[serde(default)]
    pub media: Vec<Media>,
    /// Referenced tweets.
    #[serde(default)]
    pub tweets: Vec<Tweet>,
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
}

impl Includes {
    /// Adds another page's includes.
    pub(crate) fn merge(&mut self, other: Includes) {
        self.media.extend(other.media);
        self.tweets.extend(other.tweets);
        self.users.extend(other.users);
    }
}

/// `meta` of a page.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub(crate) struct Meta {
    /// Tweets on this page.
    #[serde(default)]
    pub result_count: u32,
    /// Newest id on this page.
    #[serde(default)]
    pub newest_id: Option<String>,
    /// Oldest id on this page.
    #[serde(default)]
    pub oldest_id: Option<String>,
    /// Token of the next (older) page.
    #[serde(default)]
    pub next_token: Option<String>,
}

/// One page of a user timeline.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub(crate) struct Page {
    /// Tweets, newest first.
    #[serde(default)]
    pub data: Vec<Tweet>,
    /// Expanded objects.
    #[serde(default)]
    pub includes: Includes,
    /// Paging information.
    #[serde(default)]
    pub meta: Meta,
    /// Partial errors.
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

/// Orders tweet ids numerically (they are decimal strings without leading zeros).
pub(crate) fn id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The app-wide rate limit: when the remaining budget reaches zero (or a 429 arrives),
/// every account's next request waits until the window resets.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    closed_until: Mutex<Option<DateTime<Utc>>>,
}

impl RateGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DateTime<Utc>>> {
        // Short, await-free critical sections: a poisoned lock still holds a valid value.
        lock(&self.closed_until)
    }

    /// When requests may resume, if they are held now.
    pub(crate) fn closed_until(&self) -> Option<DateTime<Utc>> {
        let until = *self.lock();
        until.filter(|at| *at > Utc::now())
    }

    /// Holds requests until `until` (keeps the later of two closings).
    pub(crate) fn close_until(&self, until: DateTime<Utc>) {
        let mut current = self.lock();
        if current.is_none_or(|at| at < until) {
            *current = Some(until);
        }
    }

    /// Waits until requests may go out: [`Waited::Cancelled`] if `cancel` fired first.
    pub(crate) async fn wait(&self, cancel: &CancellationToken) -> Waited {
        while let Some(until) = self.closed_until() {
            let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tracing::info!(?wait, %until, "waiting for the X rate limit window to reset");
            if sleep_unless_cancelled(wait, cancel).await.is_cancelled() {
                return Waited::Cancelled;
            }
        }
        Waited::Elapsed
    }

    /// Reads `x-rate-limit-remaining` / `x-rate-limit-reset` from a response.
    pub(crate) fn observe(&self, headers: &HeaderMap) {
        let remaining = header_number(headers, "x-rate-limit-remaining");
        let reset = reset_time(headers);
        if let (Some(0), Some(reset)) = (remaining, reset) {
            self.close_until(reset);
        }
    }
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<i64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn reset_time(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let seconds = header_number(headers, "x-rate-limit-reset")?;
    // One second of slack: the reset is rounded down to whole seconds.
    Utc.timestamp_opt(seconds + 1, 0).single()
}

/// A timeline request.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimelineRequest<'a> {
    /// The account.
    pub user_id: &'a str,
    /// Only tweets newer than this id.
    pub since_id: Option<&'a str>,
    /// Page size (5–100).
    pub max_results: u32,
    /// The `next_token` of the previous page.
    pub pagination_token: Option<&'a str>,
}

/// The X API client.
#[derive(Debug)]
pub(crate) struct XApi {
    http: reqwest::Client,
    base: String,
    token: String,
    gate: RateGate,
    fallback: chrono::Duration,
}

impl XApi {
    /// A client for `base` with `token`; a 429 without reset header pauses `fallback`.
    pub(crate) fn new(http: reqwest::Client, base: &str, token: &str, fallback: Duration) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            gate: RateGate::default(),
            fallback: chrono::Duration::from_std(fallback)
                .unwrap_or_else(|_| chrono::Duration::minutes(15)),
        }
    }

    /// The shared rate gate.
    pub(crate) fn gate(&self) -> &RateGate {
        &self.gate
    }

    /// Fetches one page. Honours nothing by itself: callers wait on [`XApi::gate`] first.
    pub(crate) async fn timeline(&self, request: &TimelineRequest<'_>) -> Result<Page, ApiError> {
        let url = format!("{}/2/users/{}/tweets", self.base, request.user_id);
        let max_results = request.max_results.to_string();
        let mut query: Vec<(&str, &str)> = vec![
            ("max_results", max_results.as_str()),
            (
                "tweet.fields",
                "created_at,referenced_tweets,attachments,entities,author_id",
            ),
            (
                "expansions",
                "attachments.media_keys,referenced_tweets.id,referenced_tweets.id.author_id,referenced_tweets.id.attachments.media_keys,author_id",
            ),
            ("media.fields", "url,preview_image_url,type"),
            ("user.fields", "username,name"),
        ];
        if let Some(since) = request.since_id {
            query.push(("since_id", since));
        }
        if let Some(token) = request.pagination_token {
            query.push(("pagination_token", token));
        }
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .query(&query)
            .send()
            .await
            .map_err(|err| ApiError::Unavailable(err.to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        self.gate.observe(&headers);
        let body = response
            .bytes()
            .await
            .map_err(|err| ApiError::Unavailable(err.to_string()))?;
        match status.as_u16() {
            200 => {
                let page: Page = serde_json::from_slice(&body)
                    .map_err(|err| ApiError::BadResponse(err.to_string()))?;
                if page.data.is_empty() && page.meta.result_count == 0 && !page.errors.is_empty() {
                    return Err(ApiError::NotFound(problem_detail(&page.errors[0])));
                }
                Ok(page)
            }
            429 => {
                let until = reset_time(&headers).unwrap_or_else(|| Utc::now() + self.fallback);
                self.gate.close_until(until);
                Err(ApiError::RateLimited { until })
            }
            code @ (401 | 403) => Err(ApiError::Unauthorized {
                status: code,
                detail: body_detail(&body),
            }),
            404 => Err(ApiError::NotFound(body_detail(&body))),
            code if status.is_server_error() => Err(ApiError::Unavailable(format!(
                "{code}: {}",
                body_detail(&body)
            ))),
            code => Err(ApiError::Rejected {
                status: code,
                detail: body_detail(&body),
            }),
        }
    }
}

fn problem_detail(problem: &serde_json::Value) -> String {
    problem
        .get("detail")
        .or_else(|| problem.get("title"))
        .or_else(|| problem.get("message"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| problem.to_string())
}

fn body_detail(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            if let Some(first) = value.get("errors").and_then(|e| e.get(0)) {
                problem_detail(first)
            } else {
                problem_detail(&value)
            }
        }
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn ids_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(id_cmp("9", "10"), Less);
        assert_eq!(
            id_cmp("1850000000000000001", "1850000000000000000"),
            Greater
        );
        assert_eq!(id_cmp("5", "5"), Equal);
    }

    #[test]
    fn gate_closes_only_when_the_budget_is_spent() {
        let gate = RateGate::default();
        let reset = (Utc::now() + chrono::Duration::seconds(30)).timestamp();
        let mut headers = HeaderMap::new();
        headers.insert("x-rate-limit-remaining", HeaderValue::from_static("3"));
        headers.insert("x-rate-limit-reset", HeaderValue::from(reset));
        gate.observe(&headers);
        assert!(gate.closed_until().is_none());
        headers.insert("x-rate-limit-remaining", HeaderValue::from_static("0"));
        gate.observe(&headers);
        assert_eq!(gate.closed_until().unwrap().timestamp(), reset + 1);
        // An earlier closing does not shorten the wait.
        gate.close_until(Utc::now());
        assert_eq!(gate.closed_until().unwrap().timestamp(), reset + 1);
    }

    #[test]
    fn parses_a_real_shaped_page() {
        let body = serde_json::json!({
            "data": [{"id": "2", "text": "RT @a: hi", "created_at": "2026-01-01T00:00:00.000Z",
                      "author_id": "1", "edit_history_tweet_ids": ["2"],
                      "referenced_tweets": [{"type": "retweeted", "id": "1"}]}],
            "includes": {"tweets": [{"id": "1", "text": "hi", "author_id": "9"}],
                         "users": [{"id": "9", "username": "a", "name": "A"}]},
            "meta": {"result_count": 1, "newest_id": "2", "oldest_id": "2"}
        });
        let page: Page = serde_json::from_value(body).unwrap();
        assert_eq!(page.data[0].referenced_tweets[0].kind, "retweeted");
        assert_eq!(page.includes.users[0].username, "a");
        assert_eq!(page.meta.newest_id.as_deref(), Some("2"));
    }
}
