//! YouTube: the Data API v3 `videos.list` (`GET /youtube/v3/videos?part=…&id=…&key=…`)
//! and the public channel feed (`GET /feeds/videos.xml?channel_id=…`), plus the Atom
//! documents the WebSub hub pushes.
//!
//! `videos.list` checks the key (400 `keyInvalid`, 403 `forbidden` without one), the
//! `part` list and the 50-id limit, returns only the parts asked for, and omits unknown
//! ids from `items` as the real API does. Videos move through the states a stream goes
//! through (upcoming → live → ended) when the test says so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{lock, serve, Served};

/// The WebSub topic YouTube publishes a channel's uploads to (the worker's default
/// `youtube.topic_base`).
pub fn topic(channel_id: &str) -> String {
    format!("https://www.youtube.com/xml/feeds/videos.xml?channel_id={channel_id}")
}

/// A channel id of the real shape (`UC` + 22 characters), unique per call.
pub fn new_channel_id() -> String {
    let mut id = format!("UC{}", uuid::Uuid::new_v4().simple());
    id.truncate(24);
    id
}

/// A video id of the real shape (11 characters), unique per call.
pub fn new_video_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..11].to_owned()
}

/// Where a video is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Broadcast {
    /// A plain upload.
    Upload,
    /// A stream scheduled to start at the given time.
    Upcoming(DateTime<Utc>),
    /// Live since `started`.
    Live {
        /// The scheduled start.
        scheduled: DateTime<Utc>,
        /// The actual start.
        started: DateTime<Utc>,
    },
}

/// One video the API knows.
#[derive(Debug, Clone)]
pub struct Video {
    /// The video id.
    pub id: String,
    /// Its channel.
    pub channel_id: String,
    /// Its title.
    pub title: String,
    /// When it was published.
    pub published: DateTime<Utc>,
    /// Its state.
    pub broadcast: Broadcast,
}

#[derive(Default)]
struct YoutubeState {
    api_key: String,
    videos: Mutex<HashMap<String, Video>>,
    /// Feed entries per channel, newest first; a channel without an entry here has no feed.
    feeds: Mutex<HashMap<String, Vec<String>>>,
    list_calls: AtomicU64,
    feed_requests: AtomicU64,
    feed_requests_by_channel: Mutex<HashMap<String, u64>>,
}

/// A running YouTube double; stops when dropped.
pub struct Youtube {
    /// Base URL for `youtube.data_api_base`, `youtube.feed_base` and
    /// `live_check.api_base_url`.
    pub base: String,
    /// The API key it accepts.
    pub api_key: String,
    state: Arc<YoutubeState>,
    _served: Served,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn api_error(status: StatusCode, reason: &str, domain: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "errors": [{"message": message, "domain": domain, "reason": reason}],
    }});
    (status, Json(body)).into_response()
}

fn video_json(video: &Video, parts: &[&str]) -> Value {
    let mut item =
        json!({"kind": "youtube#video", "etag": format!("etag-{}", video.id), "id": video.id});
    if parts.contains(&"snippet") {
        let content = match video.broadcast {
            Broadcast::Upload => "none",
            Broadcast::Upcoming(_) => "upcoming",
            Broadcast::Live { .. } => "live",
        };
        let thumb = |name: &str, w: u32, h: u32| json!({"url": format!("https://i.ytimg.com/vi/{}/{name}.jpg", video.id), "width": w, "height": h});
        item["snippet"] = json!({
            "publishedAt": rfc3339(video.published),
            "channelId": video.channel_id,
            "title": video.title,
            "description": "",
            "thumbnails": {
                "default": thumb("default", 120, 90),
                "medium": thumb("mqdefault", 320, 180),
                "high": thumb("hqdefault", 480, 360),
            },
            "channelTitle": format!("Channel {}", video.channel_id),
            "categoryId": "20",
            "liveBroadcastContent": content,
        });
    }
    if parts.contains(&"liveStreamingDetails") {
        match video.broadcast {
            Broadcast::Upload => {}
            Broadcast::Upcoming(start) => {
                item["liveStreamingDetails"] = json!({"scheduledStartTime": rfc3339(start), "activeLiveChatId": format!("chat-{}", video.id)});
            }
            Broadcast::Live { scheduled, started } => {
                item["liveStreamingDetails"] = json!({
                    "scheduledStartTime": rfc3339(scheduled),
                    "actualStartTime": rfc3339(started),
                    "concurrentViewers": "1024",
                    "activeLiveChatId": format!("chat-{}", video.id),
                });
            }
        }
    }
    item
}

async fn videos_list(
    State(state): State<Arc<YoutubeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.list_calls.fetch_add(1, Ordering::SeqCst);
    match query.get("key") {
        None => {
            return api_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "global",
                "The request is missing a valid API key.",
            )
        }
        Some(key) if *key != state.api_key => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "keyInvalid",
                "usageLimits",
                "API key not valid. Please pass a valid API key.",
            )
        }
        Some(_) => {}
    }
    let Some(part) = query.get("part").filter(|p| !p.trim().is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "required",
            "global",
            "No filter selected. Expected one of: chart, id, myRating",
        );
    };
    const KNOWN_PARTS: &[&str] = &[
        "id",
        "snippet",
        "liveStreamingDetails",
        "contentDetails",
        "statistics",
        "status",
    ];
    let parts: Vec<&str> = part.split(',').map(str::trim).collect();
    if let Some(unknown) = parts.iter().find(|p| !KNOWN_PARTS.contains(p)) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "unknownPart",
            "youtube.part",
            &format!("'{unknown}'"),
        );
    }
    let ids: Vec<&str> = query
        .get("id")
        .map(|ids| {
            ids.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if ids.len() > 50 {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalidFilters",
            "youtube.parameter",
            "The request specifies more than 50 video ids.",
        );
    }
    let videos = lock(&state.videos);
    let items: Vec<Value> = ids
        .iter()
        .filter_map(|id| videos.get(*id))
        .map(|v| video_json(v, &parts))
        .collect();
    Json(json!({
        "kind": "youtube#videoListResponse",
        "etag": format!("list-{}", state.list_calls.load(Ordering::SeqCst)),
        "items": items,
        "pageInfo": {"totalResults": items.len(), "resultsPerPage": items.len()},
    }))
    .into_response()
}

async fn feed(
    State(state): State<Arc<YoutubeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.feed_requests.fetch_add(1, Ordering::SeqCst);
    let Some(channel) = query.get("channel_id") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    *lock(&state.feed_requests_by_channel)
        .entry(channel.clone())
        .or_default() += 1;
    let Some(entries) = lock(&state.feeds).get(channel).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let videos = lock(&state.videos);
    let entries: Vec<&Video> = entries.iter().filter_map(|id| videos.get(id)).collect();
    let body = feed_xml(channel, &entries);
    ([("content-type", "text/xml; charset=UTF-8")], body).into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn entry_xml(video: &Video, updated: DateTime<Utc>) -> String {
    format!(
        "<entry>\n  <id>yt:video:{id}</id>\n  <yt:videoId>{id}</yt:videoId>\n  <yt:channelId>{channel}</yt:channelId>\n  \
         <title>{title}</title>\n  <link rel=\"alternate\" href=\"https://www.youtube.com/watch?v={id}\"/>\n  \
         <author>\n   <name>Channel {channel}</name>\n   <uri>https://www.youtube.com/channel/{channel}</uri>\n  </author>\n  \
         <published>{published}</published>\n  <updated>{updated}</updated>\n </entry>\n",
        id = video.id,
        channel = video.channel_id,
        title = xml_escape(&video.title),
        published = video.published.to_rfc3339(),
        updated = updated.to_rfc3339_opts(SecondsFormat::Nanos, true),
    )
}

fn feed_xml(channel: &str, videos: &[&Video]) -> String {
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns:yt=\"http://www.youtube.com/xml/schemas/2015\" \
         xmlns:media=\"http://search.yahoo.com/mrss/\" xmlns=\"http://www.w3.org/2005/Atom\">\n \
         <link rel=\"self\" href=\"http://www.youtube.com/feeds/videos.xml?channel_id={channel}\"/>\n \
         <id>yt:channel:{channel}</id>\n <yt:channelId>{channel}</yt:channelId>\n <title>Channel {channel}</title>\n"
    );
    for video in videos {
        body.push_str(&entry_xml(video, video.published));
    }
    body.push_str("</feed>\n");
    body
}

impl Youtube {
    /// Starts the double accepting `api_key`.
    pub async fn start(api_key: &str) -> crate::Result<Self> {
        let state = Arc::new(YoutubeState {
            api_key: api_key.to_owned(),
            ..YoutubeState::default()
        });
        let router = Router::new()
            .route("/youtube/v3/videos", get(videos_list))
            .route("/feeds/videos.xml", get(feed))
            .with_state(state.clone());
        let served = serve(router).await?;
        Ok(Self {
            base: served.base_url(),
            api_key: api_key.to_owned(),
            state,
            _served: served,
        })
    }

    /// Gives `channel_id` a (so far empty) public feed.
    pub fn add_channel(&self, channel_id: &str) {
        lock(&self.state.feeds)
            .entry(channel_id.to_owned())
            .or_default();
    }

    /// Stores or replaces a video; when `in_feed`, it also heads its channel's feed.
    pub fn put_video(&self, video: Video, in_feed: bool) {
        if in_feed {
            let mut feeds = lock(&self.state.feeds);
            let entries = feeds.entry(video.channel_id.clone()).or_default();
            entries.retain(|id| *id != video.id);
            entries.insert(0, video.id.clone());
        }
        lock(&self.state.videos).insert(video.id.clone(), video);
    }

    /// Moves a known video to `broadcast`; `false` if the video is unknown.
    pub fn set_broadcast(&self, video_id: &str, broadcast: Broadcast) -> bool {
        match lock(&self.state.videos).get_mut(video_id) {
            Some(video) => {
                video.broadcast = broadcast;
                true
            }
            None => false,
        }
    }

    /// The Atom document the hub pushes when `video` was published or updated at
    /// `updated`.
    pub fn push_xml(&self, video_id: &str, updated: DateTime<Utc>) -> Option<String> {
        let videos = lock(&self.state.videos);
        let video = videos.get(video_id)?;
        Some(format!(
            "<?xml version='1.0' encoding='UTF-8'?>\n<feed xmlns:yt=\"http://www.youtube.com/xml/schemas/2015\" \
             xmlns=\"http://www.w3.org/2005/Atom\"><link rel=\"hub\" href=\"https://pubsubhubbub.appspot.com\"/>\
             <link rel=\"self\" href=\"{topic}\"/><title>YouTube video feed</title><updated>{updated}</updated>{entry}</feed>\n",
            topic = xml_escape(&topic(&video.channel_id)),
            updated = updated.to_rfc3339_opts(SecondsFormat::Nanos, true),
            entry = entry_xml(video, updated),
        ))
    }

    /// `videos.list` calls so far.
    pub fn list_calls(&self) -> u64 {
        self.state.list_calls.load(Ordering::SeqCst)
    }

    /// Feed requests so far.
    pub fn feed_requests(&self) -> u64 {
        self.state.feed_requests.load(Ordering::SeqCst)
    }

    /// Feed requests for one channel so far.
    pub fn feed_requests_for(&self, channel_id: &str) -> u64 {
        lock(&self.state.feed_requests_by_channel)
            .get(channel_id)
            .copied()
            .unwrap_or(0)
    }
}
