//! A WebSub hub as Google's `pubsubhubbub.appspot.com` behaves for YouTube feeds.
//!
//! - `POST /subscribe` with an urlencoded form (`hub.mode`, `hub.topic`, `hub.callback`,
//!   `hub.secret`, `hub.lease_seconds`) answers `202 Accepted`, then verifies intent
//!   asynchronously: `GET <callback>?hub.mode=…&hub.topic=…&hub.challenge=…&hub.lease_seconds=…`
//!   must answer 2xx with exactly the challenge. Only verified subscriptions get content.
//!   Subscriptions are keyed by `(topic, callback)`; a renewal replaces the old one.
//! - [`Hub::publish`] distributes a feed document to every verified subscription of the
//!   topic in the background: `POST <callback>` with `Content-Type: application/atom+xml`,
//!   `Link` headers and, when the subscriber gave a secret,
//!   `X-Hub-Signature: sha1=<HMAC-SHA1 of the body>` (or another WebSub method chosen with
//!   [`Hub::sign_with`], as hubs such as Flask-WebSub sign with `sha512`). A delivery that fails (no answer or
//!   a non-2xx status) is retried with exponential backoff a bounded number of times, as
//!   the hub redelivers; a subscriber that is gone for longer loses the notification.
//!   [`Hub::publish_now`] delivers once and returns the subscribers' answers, and
//!   [`Hub::post`] sends any body with any signature (or none), for forgery tests.
//! - The test can make the hub refuse the next requests ([`Hub::refuse_next`]) and grant
//!   leases shorter than asked ([`Hub::grant_lease`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use chrono::{DateTime, Utc};
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
    /// When the subscriber confirmed it (the lease runs from here).
    pub verified_at: DateTime<Utc>,
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
    /// Statuses to answer the next requests with instead of 202.
    refusals: Mutex<VecDeque<u16>>,
    /// Lease granted in verifications instead of the one asked for (0: as asked).
    granted_lease: AtomicU64,
    requests: AtomicU64,
    subscribe_requests: AtomicU64,
    unsubscribe_requests: AtomicU64,
    verified: AtomicU64,
    refused_verifications: AtomicU64,
    /// The hash content is signed with.
    method: Mutex<SignatureMethod>,
}

/// The hash functions WebSub allows for `X-Hub-Signature`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureMethod {
    /// `sha1=`: what Google's hub sends.
    #[default]
    Sha1,
    /// `sha256=`.
    Sha256,
    /// `sha384=`.
    Sha384,
    /// `sha512=`: Flask-WebSub's default.
    Sha512,
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
    let state = &ctx.state;
    state.requests.fetch_add(1, Ordering::SeqCst);
    match request.mode.as_str() {
        "subscribe" => state.subscribe_requests.fetch_add(1, Ordering::SeqCst),
        "unsubscribe" => state.unsubscribe_requests.fetch_add(1, Ordering::SeqCst),
        _ => return (StatusCode::BAD_REQUEST, "Invalid value for hub.mode").into_response(),
    };
    if let Some(status) = lock(&state.refusals).pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, "refused as the test asked").into_response();
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
    let asked = match request.lease_seconds.as_deref().map(str::trim) {
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
    let lease = match state.granted_lease.load(Ordering::SeqCst) {
        0 => asked,
        granted => granted,
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
    ctx.state.verified.fetch_add(1, Ordering::SeqCst);
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
                verified_at: Utc::now(),
            },
        );
    } else {
        subscriptions.remove(&key);
    }
}

/// The `X-Hub-Signature` value Google's hub sends.
pub fn signature(secret: &str, body: &[u8]) -> String {
    signature_with(SignatureMethod::Sha1, secret, body)
}

/// The `X-Hub-Signature` value of `body` signed with `method`.
pub fn signature_with(method: SignatureMethod, secret: &str, body: &[u8]) -> String {
    fn hex_mac<M: Mac + hmac::digest::KeyInit>(secret: &str, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts any key length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
    match method {
        SignatureMethod::Sha1 => format!("sha1={}", hex_mac::<Hmac<sha1::Sha1>>(secret, body)),
        SignatureMethod::Sha256 => {
            format!("sha256={}", hex_mac::<Hmac<sha2::Sha256>>(secret, body))
        }
        SignatureMethod::Sha384 => {
            format!("sha384={}", hex_mac::<Hmac<sha2::Sha384>>(secret, body))
        }
        SignatureMethod::Sha512 => {
            format!("sha512={}", hex_mac::<Hmac<sha2::Sha512>>(secret, body))
        }
    }
}

/// Posts a notification to `callback` as the hub does; the subscriber's status, `None`
/// when it could not be reached.
async fn notify(
    http: &reqwest::Client,
    callback: &str,
    topic: Option<&str>,
    body: &str,
    signature: Option<String>,
) -> Option<u16> {
    let mut request = http
        .post(callback)
        .header("content-type", "application/atom+xml")
        .body(body.to_owned());
    if let Some(topic) = topic {
        request = request.header(
            "link",
            format!("<https://pubsubhubbub.appspot.com>; rel=hub, <{topic}>; rel=self"),
        );
    }
    if let Some(signature) = signature {
        request = request.header("x-hub-signature", signature);
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}

/// One signed delivery attempt to `subscription`, recorded.
async fn attempt(ctx: &Ctx, subscription: &Subscription, body: &str, attempt: u32) -> Option<u16> {
    let method = *lock(&ctx.state.method);
    let signature = (!subscription.secret.is_empty())
        .then(|| signature_with(method, &subscription.secret, body.as_bytes()));
    let status = notify(
        &ctx.http,
        &subscription.callback,
        Some(&subscription.topic),
        body,
        signature,
    )
    .await;
    lock(&ctx.state.attempts).push(DeliveryAttempt {
        topic: subscription.topic.clone(),
        callback: subscription.callback.clone(),
        attempt,
        status,
    });
    status
}

async fn deliver_with_retries(ctx: Ctx, subscription: Subscription, body: String) {
    let mut backoff = ctx.policy.initial_backoff;
    for number in 1..=ctx.policy.attempts.max(1) {
        let status = attempt(&ctx, &subscription, &body, number).await;
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

impl Hub {
    /// Starts a hub with the default redelivery policy.
    pub async fn start() -> std::io::Result<Self> {
        Self::with_redelivery(Redelivery::default()).await
    }

    /// Starts a hub retrying failed deliveries per `policy`.
    pub async fn with_redelivery(policy: Redelivery) -> std::io::Result<Self> {
        let ctx = Ctx {
            state: Arc::new(HubState::default()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(std::io::Error::other)?,
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

    /// Answers the next subscribe or unsubscribe requests with these statuses, in order,
    /// instead of accepting them.
    pub fn refuse_next(&self, statuses: &[u16]) {
        lock(&self.ctx.state.refusals).extend(statuses.iter().copied());
    }

    /// Signs content with `method` from now on (`sha1` until then).
    pub fn sign_with(&self, method: SignatureMethod) {
        *lock(&self.ctx.state.method) = method;
    }

    /// Grants leases of `seconds` from now on, whatever the subscriber asks for.
    pub fn grant_lease(&self, seconds: u64) {
        self.ctx
            .state
            .granted_lease
            .store(seconds, Ordering::SeqCst);
    }

    /// Verified subscriptions of `topic`, by callback.
    pub fn subscriptions(&self, topic: &str) -> Vec<Subscription> {
        let mut found: Vec<Subscription> = lock(&self.ctx.state.subscriptions)
            .values()
            .filter(|s| s.topic == topic)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.callback.cmp(&b.callback));
        found
    }

    /// Every verified subscription, of any topic.
    pub fn all_subscriptions(&self) -> Vec<Subscription> {
        lock(&self.ctx.state.subscriptions)
            .values()
            .cloned()
            .collect()
    }

    /// Subscribe and unsubscribe requests received so far, malformed ones included.
    pub fn requests(&self) -> u64 {
        self.ctx.state.requests.load(Ordering::SeqCst)
    }

    /// Subscribe requests received so far (renewals included, refused ones too).
    pub fn subscribe_requests(&self) -> u64 {
        self.ctx.state.subscribe_requests.load(Ordering::SeqCst)
    }

    /// Unsubscribe requests received so far.
    pub fn unsubscribe_requests(&self) -> u64 {
        self.ctx.state.unsubscribe_requests.load(Ordering::SeqCst)
    }

    /// Verifications of intent the subscribers confirmed.
    pub fn verified(&self) -> u64 {
        self.ctx.state.verified.load(Ordering::SeqCst)
    }

    /// Verifications of intent the subscribers did not confirm.
    pub fn refused_verifications(&self) -> u64 {
        self.ctx.state.refused_verifications.load(Ordering::SeqCst)
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
            tokio::spawn(deliver_with_retries(
                self.ctx.clone(),
                subscription.clone(),
                body.to_owned(),
            ));
        }
        targets.len()
    }

    /// Delivers `body` once to every verified subscriber of `topic`, in callback order,
    /// and returns their statuses (`None`: not reachable). No retries.
    pub async fn publish_now(&self, topic: &str, body: &str) -> Vec<Option<u16>> {
        let mut statuses = Vec::new();
        for subscription in self.subscriptions(topic) {
            statuses.push(attempt(&self.ctx, &subscription, body, 1).await);
        }
        statuses
    }

    /// Posts `body` to `callback` with the given `X-Hub-Signature` (or none) and returns
    /// the status; panics when the callback cannot be reached.
    pub async fn post(&self, callback: &str, body: &str, signature: Option<String>) -> u16 {
        notify(&self.ctx.http, callback, None, body, signature)
            .await
            .unwrap_or_else(|| panic!("callback {callback} cannot be reached"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::extract::Query;
    use axum::routing::get;

    use super::*;

    #[test]
    fn signature_is_hmac_sha1_hex() {
        // RFC 2202 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            signature_with(
                SignatureMethod::Sha512,
                "Jefe",
                b"what do ya want for nothing?"
            ),
            "sha512=164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    /// A subscriber that echoes challenges and answers notifications 204.
    async fn subscriber() -> Served {
        let router = Router::new().route(
            "/cb",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                q.get("hub.challenge").cloned().unwrap_or_default()
            })
            .post(|| async { StatusCode::NO_CONTENT }),
        );
        serve(router).await.unwrap()
    }

    #[tokio::test]
    async fn refuses_then_verifies_with_the_granted_lease_and_delivers() {
        let hub = Hub::start().await.unwrap();
        let subscriber = subscriber().await;
        let callback = format!("{}/cb", subscriber.base_url());
        let topic = "https://www.youtube.com/xml/feeds/videos.xml?channel_id=UC1";
        hub.refuse_next(&[503]);
        hub.grant_lease(60);
        let form = [
            ("hub.mode", "subscribe"),
            ("hub.topic", topic),
            ("hub.callback", callback.as_str()),
            ("hub.secret", "s3cret"),
            ("hub.lease_seconds", "432000"),
        ];
        let http = reqwest::Client::new();
        let first = http.post(&hub.url).form(&form).send().await.unwrap();
        assert_eq!(first.status(), 503);
        let second = http.post(&hub.url).form(&form).send().await.unwrap();
        assert_eq!(second.status(), 202);
        crate::eventually("verified", Duration::from_secs(5), || hub.verified() == 1).await;
        let subscription = hub.subscriptions(topic).remove(0);
        assert_eq!(subscription.lease_seconds, 60);
        assert_eq!(hub.subscribe_requests(), 2);
        assert_eq!(hub.publish_now(topic, "<feed/>").await, vec![Some(204)]);
        let attempts = hub.attempts();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].callback, callback);
    }
}
