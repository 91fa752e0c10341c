//! The Helix client: EventSub subscriptions, streams, channels and users, with the app
//! token (refreshed once on a 401 and the call retried) and the shared rate-limit gate
//! (a 429 waits for `Ratelimit-Reset` and retries).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::auth::AppToken;
use crate::config::TwitchConfig;
use crate::metrics::Metrics;
use crate::ratelimit::RateGate;

/// 429s in a row after which a call gives up (each waited for its reset first).
const RATE_LIMITED_ATTEMPTS: u32 = 5;
/// Ids per `streams`, `channels` and `users` call that Helix accepts.
pub(crate) const MAX_IDS: usize = 100;

/// The EventSub subscription types the worker holds per broadcaster, with their versions.
pub(crate) const SUBSCRIPTION_TYPES: [(&str, &str); 3] = [
    ("stream.online", "1"),
    ("stream.offline", "1"),
    ("channel.update", "2"),
];

/// Why a Helix call failed.
#[derive(Debug, thiserror::Error)]
pub enum HelixError {
    /// The token endpoint refused the client credentials.
    #[error("token endpoint answered {status}: {detail} (check twitch.client_id and twitch.client_secret)")]
    Token {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        detail: String,
    },
    /// Helix refused a freshly fetched token too.
    #[error("Helix refused the app token: {0}")]
    Unauthorized(String),
    /// Still rate limited after several waits for the reset.
    #[error("Helix rate limit: still 429 after {RATE_LIMITED_ATTEMPTS} waits")]
    RateLimited,
    /// Any other unexpected status.
    #[error("Helix answered {status}: {detail}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        detail: String,
    },
    /// No answer.
    #[error("network: {0}")]
    Network(String),
    /// An answer that does not parse.
    #[error("unexpected answer: {0}")]
    BadResponse(String),
    /// The worker is shutting down.
    #[error("shutting down")]
    Cancelled,
}

/// The first 200 characters of a body, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    body.chars().take(200).collect()
}

/// One subscription as `GET /eventsub/subscriptions` lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct SubscriptionInfo {
    /// Its id.
    pub(crate) id: String,
    /// `enabled`, `webhook_callback_verification_pending`, `…_failed`, …
    pub(crate) status: String,
    /// The subscription type.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The condition.
    #[serde(default)]
    pub(crate) condition: Condition,
    /// The transport.
    #[serde(default)]
    pub(crate) transport: Transport,
}

/// A subscription's condition.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct Condition {
    /// The broadcaster.
    #[serde(default)]
    pub(crate) broadcaster_user_id: String,
}

/// A subscription's transport.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct Transport {
    /// `webhook`, `websocket`, `conduit`.
    #[serde(default)]
    pub(crate) method: String,
    /// The webhook callback.
    #[serde(default)]
    pub(crate) callback: Option<String>,
}

#[derive(Deserialize)]
struct Data<T> {
    data: Vec<T>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize, Default)]
struct Pagination {
    #[serde(default)]
    cursor: Option<String>,
}

/// One page of subscriptions and the cursor of the next.
pub(crate) struct SubscriptionPage {
    pub(crate) data: Vec<SubscriptionInfo>,
    pub(crate) cursor: Option<String>,
}

/// A live stream (`GET /streams`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StreamInfo {
    pub(crate) id: String,
    pub(crate) user_id: String,
    #[serde(default)]
    pub(crate) user_login: String,
    #[serde(default)]
    pub(crate) game_name: String,
    #[serde(default)]
    pub(crate) title: String,
    #[serde(default)]
    pub(crate) thumbnail_url: String,
}

/// A channel (`GET /channels`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChannelInfo {
    pub(crate) broadcaster_id: String,
    #[serde(default)]
    pub(crate) game_name: String,
    #[serde(default)]
    pub(crate) title: String,
}

/// A user (`GET /users`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UserInfo {
    pub(crate) id: String,
    pub(crate) login: String,
}

/// What creating a subscription did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Created {
    /// Created with this id (verification pending).
    New(String),
    /// It exists already (409): held.
    Exists,
}

/// The Helix client. Cheap to share behind an `Arc`.
pub(crate) struct Helix {
    http: reqwest::Client,
    config: Arc<TwitchConfig>,
    token: AppToken,
    gate: RateGate,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl Helix {
    pub(crate) fn new(
        http: reqwest::Client,
        config: Arc<TwitchConfig>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            token: AppToken::new(
                http.clone(),
                config.token_url(),
                &config.client_id,
                &config.client_secret,
            ),
            http,
            config,
            gate: RateGate::default(),
            metrics,
            shutdown,
        }
    }

    /// How long Helix calls are held for the rate limit, if they are now.
    pub(crate) fn rate_limited_for(&self) -> Option<Duration> {
        self.gate.closed_for()
    }

    /// One call with token and rate-limit handling; the status and body of any answer
    /// other than 401 and 429 are the caller's to judge.
    async fn call(
        &self,
        endpoint: &'static str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<(StatusCode, String), HelixError> {
        let fallback = Duration::from_secs(self.config.rate_limit_fallback_seconds.max(1));
        let mut refreshed = false;
        let mut limited = 0;
        loop {
            match self.gate.wait(&self.shutdown).await {
                Err(_) => return Err(HelixError::Cancelled),
                Ok(true) => self.metrics.rate_limit_wait(),
                Ok(false) => {}
            }
            let token = self.token.get().await?;
            let sent = build(&self.http)
                .header("Client-Id", &self.config.client_id)
                .bearer_auth(&token)
                .send();
            let response = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(HelixError::Cancelled),
                response = sent => response,
            };
            let response = match response {
                Ok(response) => response,
                Err(err) => {
                    self.metrics.helix_call(endpoint, "network");
                    return Err(HelixError::Network(err.without_url().to_string()));
                }
            };
            let status = response.status();
            self.gate.observe(
                response.headers(),
                status == StatusCode::TOO_MANY_REQUESTS,
                fallback,
            );
            let body = response
                .text()
                .await
                .map_err(|err| HelixError::Network(err.without_url().to_string()))?;
            match status {
                StatusCode::UNAUTHORIZED => {
                    self.metrics.helix_call(endpoint, "unauthorized");
                    self.token.invalidate(&token).await;
                    if refreshed {
                        return Err(HelixError::Unauthorized(snippet(&body)));
                    }
                    tracing::info!(endpoint, "Helix refused the app token; fetching a new one");
                    refreshed = true;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    self.metrics.helix_call(endpoint, "rate_limited");
                    limited += 1;
                    tracing::warn!(endpoint, wait = ?self.gate.closed_for(), "Helix rate limit hit (429)");
                    if limited >= RATE_LIMITED_ATTEMPTS {
                        return Err(HelixError::RateLimited);
                    }
                }
                _ => {
                    let label = match status.as_u16() {
                        200..=299 => "ok",
                        409 => "conflict",
                        404 => "not_found",
                        _ => "error",
                    };
                    self.metrics.helix_call(endpoint, label);
                    return Ok((status, body));
                }
            }
        }
    }

    async fn get_data<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Data<T>, HelixError> {
        let url = self.config.helix(path);
        let (status, body) = self
            .call(endpoint, |http| http.get(&url).query(query))
            .await?;
        if !status.is_success() {
            return Err(HelixError::Status {
                status: status.as_u16(),
                detail: snippet(&body),
            });
        }
        serde_json::from_str(&body).map_err(|err| HelixError::BadResponse(format!("{path}: {err}")))
    }

    /// One page of the app's subscriptions, after `cursor`.
    pub(crate) async fn list_subscriptions(
        &self,
        cursor: Option<&str>,
    ) -> Result<SubscriptionPage, HelixError> {
        let mut query = Vec::new();
        if let Some(cursor) = cursor {
            query.push(("after", cursor));
        }
        let page: Data<SubscriptionInfo> = self
            .get_data("subscriptions_list", "eventsub/subscriptions", &query)
            .await?;
        Ok(SubscriptionPage {
            data: page.data,
            cursor: page
                .pagination
                .and_then(|p| p.cursor)
                .filter(|c| !c.is_empty()),
        })
    }

    /// Creates a webhook subscription to our callback; 409 means it exists.
    pub(crate) async fn create_subscription(
        &self,
        kind: &str,
        version: &str,
        broadcaster: &str,
    ) -> Result<Created, HelixError> {
        let url = self.config.helix("eventsub/subscriptions");
        let body = json!({
            "type": kind,
            "version": version,
            "condition": {"broadcaster_user_id": broadcaster},
            "transport": {
                "method": "webhook",
                "callback": self.config.callback_url,
                "secret": self.config.eventsub_secret,
            },
        });
        let (status, text) = self
            .call("subscriptions_create", |http| http.post(&url).json(&body))
            .await?;
        match status.as_u16() {
            200..=299 => {
                let created: Data<SubscriptionInfo> = serde_json::from_str(&text)
                    .map_err(|err| HelixError::BadResponse(format!("create: {err}")))?;
                Ok(Created::New(
                    created
                        .data
                        .into_iter()
                        .next()
                        .map(|s| s.id)
                        .unwrap_or_default(),
                ))
            }
            409 => Ok(Created::Exists),
            status => Err(HelixError::Status {
                status,
                detail: snippet(&text),
            }),
        }
    }

    /// Deletes a subscription; one already gone (404) counts as deleted.
    pub(crate) async fn delete_subscription(&self, id: &str) -> Result<(), HelixError> {
        let url = self.config.helix("eventsub/subscriptions");
        let (status, text) = self
            .call("subscriptions_delete", |http| {
                http.request(Method::DELETE, &url).query(&[("id", id)])
            })
            .await?;
        match status.as_u16() {
            200..=299 | 404 => Ok(()),
            status => Err(HelixError::Status {
                status,
                detail: snippet(&text),
            }),
        }
    }

    /// The live streams of up to [`MAX_IDS`] users.
    pub(crate) async fn streams(&self, user_ids: &[String]) -> Result<Vec<StreamInfo>, HelixError> {
        let query: Vec<(&str, &str)> = user_ids.iter().map(|id| ("user_id", id.as_str())).collect();
        Ok(self.get_data("streams", "streams", &query).await?.data)
    }

    /// The channels of up to [`MAX_IDS`] broadcasters.
    pub(crate) async fn channels(&self, ids: &[String]) -> Result<Vec<ChannelInfo>, HelixError> {
        let query: Vec<(&str, &str)> = ids
            .iter()
            .map(|id| ("broadcaster_id", id.as_str()))
            .collect();
        Ok(self.get_data("channels", "channels", &query).await?.data)
    }

    /// The users of up to [`MAX_IDS`] logins.
    pub(crate) async fn users(&self, logins: &[String]) -> Result<Vec<UserInfo>, HelixError> {
        let query: Vec<(&str, &str)> = logins.iter().map(|l| ("login", l.as_str())).collect();
        Ok(self.get_data("users", "users", &query).await?.data)
    }
}
