//! A WebSub hub as Google's `pubsubhubbub.appspot.com` behaves for YouTube feeds.
//!
//! - `POST /subscribe` with an urlencoded form (`hub.mode`, `hub.topic`, `hub.callback`,
//!   `hub.secret`, `hub.lease_seconds`) answers `202 Accepted`, then verifies intent
//!   asynchronously: `GET <callback>?hub.mode=…&hub.topic=…&hub.challenge=…&hub.lease_seconds=…`
//!   must answer 2xx with exactly the challenge. Only verified subscriptions get content.
//!   Subscriptions are keyed by `(topic, callback)`.
//! - [`Hub::publish`] distributes a feed document to every verified subscription of the
//!   topic: `POST <callback>` with `Content-Type: application/atom+xml`, `Link` headers and,
//!   when the subscriber gave a secret, `X-Hub-Signature: sha1=<HMAC-SHA1 of the body>`.
//!   A delivery that fails (no answer or a non-2xx status) is retried with exponential
//!   backoff a bounded number of times, as the hub redelivers; a subscriber that is gone
//!   for longer loses the notification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use hmac::{Hmac, Mac};

use super::{lock, serve, Served};

/// Longest lease the hub grants, seconds (Google's maximum is ten days).
const MAX_LEASE_SECONDS: u64 = 864_000;

/// A verified subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic URL.
    pub topic: String,
    /// The subscriber's callback URL.
    pub callback: String,
    /// The secret content is signed with (empty: unsigned).
    pub secret: String,
    /// The lease granted, seconds.
    pub lease_seconds: u64,
}

/// One attempt to deliver content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The topic published.
    pub topic: String,
    /// The callback posted to.
    pub callback: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// The subscriber's status, `None` when it could not be reached.
    pub status: Option<u16>,
}

#[derive(Default)]
struct HubState {
    subscriptions: Mutex<HashMap<(String, String), Subscription>>,
    attempts: Mutex<Vec<DeliveryAttempt>>,
    requests: AtomicU64,
    refused_verifications: AtomicU64,
}

#[derive(Clone)]
struct Ctx {
    state: Arc<HubState>,
    http: reqwest::Client,
    policy: Redelivery,
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct Redelivery {
    /// Tries per (notification, subscriber), the first included.
    pub attempts: u32,
    /// Pause before the first retry; doubles after each failure.
    pub initial_backoff: Duration,
}

impl Default for Redelivery {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_backoff: Duration::from_millis(250),
        }
    }
}

/// A running hub; stops when dropped.
pub struct Hub {
    /// The URL to configure as `youtube.hub_url`.
    pub url: String,
    ctx: Ctx,
    _served: Served,
}

#[derive(serde::Deserialize)]
struct HubRequest {
    #[serde(rename = "hub.mode", default)]
    mode: String,
    #[serde(rename = "hub.topic", default)]
    topic: String,
    #[serde(rename = "hub.callback", default)]
    callback: String,
    #[serde(rename = "hub.secret", default)]
    secret: String,
    #[serde(rename = "hub.lease_seconds", default)]
    lease_seconds: Option<String>,
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

async fn subscribe(State(ctx): State<Ctx>, Form(request): Form<HubRequest>) -> Response {
    ctx.state.requests.fetch_add(1, Ordering::SeqCst);
    if request.mode != "subscribe" && request.mode != "unsubscribe" {
        return (StatusCode::BAD_REQUEST, "Invalid value for hub.mode").into_response();
    }
    if !is_http_url(&request.callback) {
        return (StatusCode::BAD_REQUEST, "Invalid value for hub.callback").into_response();
    }
    if !is_http_url(&request.topic) {
        return (StatusCode::BAD_REQUEST, "Invalid value for hub.topic").into_response();
    }
    if request.secret.len() >= 200 {
        return (StatusCode::BAD_REQUEST, "Invalid value for hub.secret").into_response();
    }
    let lease = match request.lease_seconds.as_deref().map(str::trim) {
        None | Some("") => MAX_LEASE_SECONDS,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) => seconds.min(MAX_LEASE_SECONDS),
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "Invalid value for hub.lease_seconds",
                )
                    .into_response()
            }
        },
    };
    tokio::spawn(verify(ctx, request, lease));
    StatusCode::ACCEPTED.into_response()
}

/// Verification of intent: the subscriber must echo the challenge.
async fn verify(ctx: Ctx, request: HubRequest, lease: u64) {
    let challenge = uuid::Uuid::new_v4().simple().to_string();
    let lease_text = lease.to_string();
    let mut query = vec![
        ("hub.mode", request.mode.as_str()),
        ("hub.topic", request.topic.as_str()),
        ("hub.challenge", challenge.as_str()),
    ];
    if request.mode == "subscribe" {
        query.push(("hub.lease_seconds", lease_text.as_str()));
    }
    let confirmed = match ctx.http.get(&request.callback).query(&query).send().await {
        Ok(response) if response.status().is_success() => {
            response.text().await.is_ok_and(|body| body == challenge)
        }
        _ => false,
    };
    if !confirmed {
        ctx.state
            .refused_verifications
            .fetch_add(1, Ordering::SeqCst);
        return;
    }
    let key = (request.topic.clone(), request.callback.clone());
    let mut subscriptions = lock(&ctx.state.subscriptions);
    if request.mode == "subscribe" {
        subscriptions.insert(
            key,
            Subscription {
                topic: request.topic,
                callback: request.callback,
                secret: request.secret,
                lease_seconds: lease,
            },
        );
    } else {
        subscriptions.remove(&key);
    }
}

/// The `X-Hub-Signature` value Google's hub sends.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(ctx: Ctx, subscription: Subscription, body: String) {
    let mut backoff = ctx.policy.initial_backoff;
    for attempt in 1..=ctx.policy.attempts.max(1) {
        let mut request = ctx
            .http
            .post(&subscription.callback)
            .header("content-type", "application/atom+xml")
            .header(
                "link",
                format!(
                    "<https://pubsubhubbub.appspot.com>; rel=hub, <{}>; rel=self",
                    subscription.topic
                ),
            )
            .body(body.clone());
        if !subscription.secret.is_empty() {
            request = request.header(
                "x-hub-signature",
                signature(&subscription.secret, body.as_bytes()),
            );
        }
        let status = request.send().await.ok().map(|r| r.status().as_u16());
        lock(&ctx.state.attempts).push(DeliveryAttempt {
            topic: subscription.topic.clone(),
            callback: subscription.callback.clone(),
            attempt,
            status,
        });
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

impl Hub {
    /// Starts a hub with the default redelivery policy.
    pub async fn start() -> crate::Result<Self> {
        Self::with_redelivery(Redelivery::default()).await
    }

    /// Starts a hub retrying failed deliveries per `policy`.
    pub async fn with_redelivery(policy: Redelivery) -> crate::Result<Self> {
        let ctx = Ctx {
            state: Arc::new(HubState::default()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| crate::Error::Service {
                    service: "hub".into(),
                    reason: e.to_string(),
                })?,
            policy,
        };
        let router = Router::new()
            .route("/subscribe", post(subscribe))
            .with_state(ctx.clone());
        let served = serve(router).await?;
        Ok(Self {
            url: format!("{}/subscribe", served.base_url()),
            ctx,
            _served: served,
        })
    }

    /// Verified subscriptions of `topic`.
    pub fn subscriptions(&self, topic: &str) -> Vec<Subscription> {
        let mut found: Vec<Subscription> = lock(&self.ctx.state.subscriptions)
            .values()
            .filter(|s| s.topic == topic)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.callback.cmp(&b.callback));
        found
    }

    /// Subscribe and unsubscribe requests received so far.
    pub fn requests(&self) -> u64 {
        self.ctx.state.requests.load(Ordering::SeqCst)
    }

    /// Every delivery attempt so far.
    pub fn attempts(&self) -> Vec<DeliveryAttempt> {
        lock(&self.ctx.state.attempts).clone()
    }

    /// Distributes `body` to every verified subscriber of `topic` in the background
    /// (retrying failures); returns how many subscribers it goes to.
    pub fn publish(&self, topic: &str, body: &str) -> usize {
        let targets = self.subscriptions(topic);
        for subscription in &targets {
            tokio::spawn(deliver(
                self.ctx.clone(),
                subscription.clone(),
                body.to_owned(),
            ));
        }
        targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha1_hex() {
        // RFC 2202 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }
}
