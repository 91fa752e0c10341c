//! Test doubles that speak the real protocols: a WebSub hub (subscribe → 202 → verification
//! GET against the callback → signed deliveries), a YouTube server (Data API `videos.list`
//! and the public channel feed), plus the shared fake coordinator and observer queue on the
//! real RabbitMQ exchange from `stargazer-testkit`.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

pub use stargazer_testkit::coordinator;
pub use stargazer_testkit::observer::{Observer, ObserverOptions};
pub use stargazer_testkit::{eventually, AMQP_URL, MONGO_URL};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use stargazer_worker_youtube::signature::sign_sha1;
use uuid::Uuid;

pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A channel id of the right shape, unique per call.
pub fn channel_id() -> String {
    let mut id = format!("UC{}", Uuid::new_v4().simple());
    id.truncate(24);
    id
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

// ---------------------------------------------------------------- hub

#[derive(Debug, Clone)]
pub struct HubSubscription {
    pub topic: String,
    pub callback: String,
    pub secret: String,
    pub lease_seconds: u64,
    pub verified_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct HubState {
    /// Verified subscriptions keyed by (topic, callback), as a real hub keys them.
    pub subscriptions: Mutex<HashMap<(String, String), HubSubscription>>,
    pub subscribe_requests: AtomicU64,
    pub unsubscribe_requests: AtomicU64,
    pub verified: AtomicU64,
    pub verification_refused: AtomicU64,
    /// Statuses to answer the next requests with instead of 202.
    pub fail_next: Mutex<Vec<u16>>,
    /// Lease granted in verifications (0 = what was asked).
    pub grant_seconds: AtomicU64,
}

#[derive(Clone)]
pub struct Hub {
    pub url: String,
    pub state: Arc<HubState>,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct HubForm {
    #[serde(rename = "hub.mode")]
    mode: String,
    #[serde(rename = "hub.topic")]
    topic: String,
    #[serde(rename = "hub.callback")]
    callback: String,
    #[serde(rename = "hub.secret", default)]
    secret: String,
    #[serde(rename = "hub.lease_seconds", default)]
    lease_seconds: Option<u64>,
}

async fn hub_request(
    State((state, http)): State<(Arc<HubState>, reqwest::Client)>,
    Form(form): Form<HubForm>,
) -> Response {
    match form.mode.as_str() {
        "subscribe" => state.subscribe_requests.fetch_add(1, Ordering::SeqCst),
        "unsubscribe" => state.unsubscribe_requests.fetch_add(1, Ordering::SeqCst),
        _ => return (StatusCode::BAD_REQUEST, "bad hub.mode").into_response(),
    };
    if let Some(status) = {
        let mut fail = state.fail_next.lock().unwrap();
        (!fail.is_empty()).then(|| fail.remove(0))
    } {
        return (StatusCode::from_u16(status).unwrap(), "hub says no").into_response();
    }
    if !form.callback.starts_with("http") || form.topic.is_empty() {
        return (StatusCode::BAD_REQUEST, "bad request").into_response();
    }
    // Verification of intent happens after the 202, as Google's hub does.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let challenge = unique();
        let granted = match state.grant_seconds.load(Ordering::SeqCst) {
            0 => form.lease_seconds.unwrap_or(432_000),
            n => n,
        };
        let lease = granted.to_string();
        let mut query = vec![
            ("hub.mode", form.mode.as_str()),
            ("hub.topic", form.topic.as_str()),
            ("hub.challenge", challenge.as_str()),
        ];
        if form.mode == "subscribe" {
            query.push(("hub.lease_seconds", lease.as_str()));
        }
        let answer = http.get(&form.callback).query(&query).send().await;
        let confirmed = match answer {
            Ok(response) if response.status() == 200 => {
                response.text().await.unwrap_or_default() == challenge
            }
            _ => false,
        };
        if !confirmed {
            state.verification_refused.fetch_add(1, Ordering::SeqCst);
            return;
        }
        state.verified.fetch_add(1, Ordering::SeqCst);
        let key = (form.topic.clone(), form.callback.clone());
        let mut subs = state.subscriptions.lock().unwrap();
        if form.mode == "subscribe" {
            subs.insert(
                key,
                HubSubscription {
                    topic: form.topic,
                    callback: form.callback,
                    secret: form.secret,
                    lease_seconds: granted,
                    verified_at: Utc::now(),
                },
            );
        } else {
            subs.remove(&key);
        }
    });
    StatusCode::ACCEPTED.into_response()
}

impl Hub {
    pub async fn start() -> Self {
        let state = Arc::new(HubState::default());
        let http = reqwest::Client::new();
        let router = Router::new()
            .route("/subscribe", post(hub_request))
            .with_state((state.clone(), http.clone()));
        let addr = serve(router).await;
        Self {
            url: format!("http://{addr}/subscribe"),
            state,
            http,
        }
    }

    pub fn subscriptions_for(&self, topic: &str) -> Vec<HubSubscription> {
        self.state
            .subscriptions
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.topic == topic)
            .cloned()
            .collect()
    }

    pub fn subscription_count(&self) -> usize {
        self.state.subscriptions.lock().unwrap().len()
    }

    pub fn subscribe_requests(&self) -> u64 {
        self.state.subscribe_requests.load(Ordering::SeqCst)
    }

    pub fn unsubscribe_requests(&self) -> u64 {
        self.state.unsubscribe_requests.load(Ordering::SeqCst)
    }

    /// Delivers `body` signed to every subscriber of `topic`; returns their statuses.
    pub async fn publish(&self, topic: &str, body: &str) -> Vec<u16> {
        let mut statuses = Vec::new();
        for sub in self.subscriptions_for(topic) {
            let signature = sign_sha1(sub.secret.as_bytes(), body.as_bytes());
            statuses.push(self.post(&sub.callback, body, Some(signature)).await);
        }
        statuses
    }

    /// Posts `body` to a callback with any signature (or none).
    pub async fn post(&self, callback: &str, body: &str, signature: Option<String>) -> u16 {
        let mut request = self
            .http
            .post(callback)
            .header("content-type", "application/atom+xml")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature", signature);
        }
        request.send().await.unwrap().status().as_u16()
    }
}

// ---------------------------------------------------------------- YouTube (Data API + feed)

#[derive(Default)]
pub struct YoutubeState {
    pub videos: Mutex<HashMap<String, Value>>,
    pub feeds: Mutex<HashMap<String, String>>,
    pub calls: AtomicU64,
    pub ids_per_call: Mutex<Vec<usize>>,
    pub feed_requests: AtomicU64,
    /// Calls to answer with 403 quotaExceeded.
    pub quota_failures: AtomicU64,
    pub api_key: Mutex<String>,
}

#[derive(Clone)]
pub struct Youtube {
    pub base: String,
    pub state: Arc<YoutubeState>,
}

async fn videos_list(
    State(state): State<Arc<YoutubeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if query.get("key") != Some(&*state.api_key.lock().unwrap()) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                "errors": [{"message": "API key not valid.", "domain": "global", "reason": "badRequest"}]}})),
        )
            .into_response();
    }
    if state
        .quota_failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": {"code": 403,
                "message": "The request cannot be completed because you have exceeded your <a href=\"/youtube/v3/getting-started#quota\">quota</a>.",
                "errors": [{"message": "The request cannot be completed because you have exceeded your quota.",
                            "domain": "youtube.quota", "reason": "quotaExceeded"}]}})),
        )
            .into_response();
    }
    let part = query.get("part").cloned().unwrap_or_default();
    assert!(
        part.contains("snippet") && part.contains("liveStreamingDetails"),
        "part={part}"
    );
    let ids: Vec<&str> = query
        .get("id")
        .map(|s| s.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if ids.len() > 50 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": 400, "message": "too many ids",
                "errors": [{"reason": "badRequest"}]}})),
        )
            .into_response();
    }
    state.ids_per_call.lock().unwrap().push(ids.len());
    let videos = state.videos.lock().unwrap();
    let items: Vec<Value> = ids
        .iter()
        .filter_map(|id| videos.get(*id).cloned())
        .collect();
    Json(json!({
        "kind": "youtube#videoListResponse",
        "etag": "etag",
        "items": items,
        "pageInfo": {"totalResults": items.len(), "resultsPerPage": items.len()}
    }))
    .into_response()
}

async fn feed(
    State(state): State<Arc<YoutubeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.feed_requests.fetch_add(1, Ordering::SeqCst);
    let channel = query.get("channel_id").cloned().unwrap_or_default();
    match state.feeds.lock().unwrap().get(&channel) {
        Some(body) => ([("content-type", "text/xml; charset=UTF-8")], body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Youtube {
    pub async fn start(api_key: &str) -> Self {
        let state = Arc::new(YoutubeState::default());
        *state.api_key.lock().unwrap() = api_key.to_owned();
        let router = Router::new()
            .route("/youtube/v3/videos", get(videos_list))
            .route("/feeds/videos.xml", get(feed))
            .with_state(state.clone());
        let addr = serve(router).await;
        Self {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn ids_per_call(&self) -> Vec<usize> {
        self.state.ids_per_call.lock().unwrap().clone()
    }

    fn put(&self, id: &str, value: Value) {
        self.state
            .videos
            .lock()
            .unwrap()
            .insert(id.to_owned(), value);
    }

    fn snippet(channel: &str, title: &str, published: DateTime<Utc>, content: &str) -> Value {
        json!({
            "publishedAt": rfc3339(published),
            "channelId": channel,
            "title": title,
            "description": "",
            "thumbnails": {
                "default": {"url": "https://i.ytimg.com/vi/x/default.jpg", "width": 120, "height": 90},
                "high": {"url": "https://i.ytimg.com/vi/x/hqdefault.jpg", "width": 480, "height": 360}
            },
            "channelTitle": "Test Channel",
            "categoryId": "20",
            "liveBroadcastContent": content
        })
    }

    pub fn upload(&self, id: &str, channel: &str, title: &str, published: DateTime<Utc>) {
        self.put(
            id,
            json!({
                "kind": "youtube#video", "etag": "e", "id": id,
                "snippet": Self::snippet(channel, title, published, "none")
            }),
        );
    }

    pub fn upcoming(&self, id: &str, channel: &str, title: &str, start: DateTime<Utc>) {
        self.put(id, json!({
            "kind": "youtube#video", "etag": "e", "id": id,
            "snippet": Self::snippet(channel, title, Utc::now(), "upcoming"),
            "liveStreamingDetails": {"scheduledStartTime": rfc3339(start), "activeLiveChatId": "chat"}
        }));
    }

    pub fn live(&self, id: &str, channel: &str, title: &str, start: DateTime<Utc>) {
        self.put(id, json!({
            "kind": "youtube#video", "etag": "e", "id": id,
            "snippet": Self::snippet(channel, title, Utc::now(), "live"),
            "liveStreamingDetails": {"scheduledStartTime": rfc3339(start), "actualStartTime": rfc3339(Utc::now()),
                                     "concurrentViewers": "42", "activeLiveChatId": "chat"}
        }));
    }

    pub fn remove(&self, id: &str) {
        self.state.videos.lock().unwrap().remove(id);
    }

    pub fn set_feed(&self, channel: &str, entries: &[(&str, &str)]) {
        let body = feed_xml(channel, entries);
        self.state
            .feeds
            .lock()
            .unwrap()
            .insert(channel.to_owned(), body);
    }
}

// ---------------------------------------------------------------- Atom documents

pub fn topic(channel: &str) -> String {
    format!("https://www.youtube.com/xml/feeds/videos.xml?channel_id={channel}")
}

pub fn entry_xml(video: &str, channel: &str, title: &str, updated: &str) -> String {
    format!(
        r#"  <entry>
    <id>yt:video:{video}</id>
    <yt:videoId>{video}</yt:videoId>
    <yt:channelId>{channel}</yt:channelId>
    <title>{title}</title>
    <link rel="alternate" href="https://www.youtube.com/watch?v={video}"/>
    <author>
     <name>Test Channel</name>
     <uri>https://www.youtube.com/channel/{channel}</uri>
    </author>
    <published>2026-01-01T00:00:00+00:00</published>
    <updated>{updated}</updated>
  </entry>
"#
    )
}

/// A WebSub notification for one entry.
pub fn push_xml(video: &str, channel: &str, title: &str, updated: &str) -> String {
    format!(
        r#"<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015" xmlns="http://www.w3.org/2005/Atom">
  <link rel="hub" href="https://pubsubhubbub.appspot.com"/>
  <link rel="self" href="https://www.youtube.com/xml/feeds/videos.xml?channel_id={channel}"/>
  <title>YouTube video feed</title>
  <updated>{updated}</updated>
{}</feed>"#,
        entry_xml(video, channel, title, updated)
    )
}

pub fn tombstone_xml(video: &str, channel: &str) -> String {
    format!(
        r#"<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:at="http://purl.org/atompub/tombstones/1.0" xmlns="http://www.w3.org/2005/Atom">
  <at:deleted-entry ref="yt:video:{video}" when="{}">
    <link href="https://www.youtube.com/watch?v={video}"/>
    <at:by>
     <name>Test Channel</name>
     <uri>https://www.youtube.com/channel/{channel}</uri>
    </at:by>
  </at:deleted-entry>
</feed>"#,
        Utc::now().to_rfc3339()
    )
}

/// The public channel feed with `(video id, updated)` entries.
pub fn feed_xml(channel: &str, entries: &[(&str, &str)]) -> String {
    let mut body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015" xmlns:media="http://search.yahoo.com/mrss/" xmlns="http://www.w3.org/2005/Atom">
 <link rel="self" href="http://www.youtube.com/feeds/videos.xml?channel_id={channel}"/>
 <id>yt:channel:{channel}</id>
 <yt:channelId>{channel}</yt:channelId>
 <title>Test Channel</title>
"#
    );
    for (video, updated) in entries {
        body.push_str(&entry_xml(video, channel, "polled title", updated));
    }
    body.push_str("</feed>");
    body
}

// ---------------------------------------------------------------- bus observer

/// How this crate's tests observe the real exchange (`Observer::start(OBSERVER, patterns)`).
pub const OBSERVER: ObserverOptions<'static> = ObserverOptions {
    queue_prefix: "test.worker-youtube",
    require_json: true,
};
