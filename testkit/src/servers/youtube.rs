//! YouTube: the Data API v3 `videos.list` (`GET /youtube/v3/videos?part=…&id=…&key=…`)
//! and the public channel feed (`GET /feeds/videos.xml?channel_id=…`), plus the Atom
//! documents the WebSub hub pushes ([`notification_xml`], [`tombstone_xml`]).
//!
//! `videos.list` checks the key (400 `keyInvalid`, 403 `forbidden` without one), the
//! `part` list and the 50-id limit, returns only the parts asked for, and omits unknown
//! ids from `items` as the real API does. Videos move through the states a stream goes
//! through (upcoming → live → ended) when the test says so. Every call is recorded
//! ([`Youtube::list_requests`]), and the test can make the next calls fail with 403
//! `quotaExceeded` ([`Youtube::fail_quota`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    /// A plain upload (no `liveStreamingDetails`).
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
    /// A stream that ran from `started` to `ended`.
    Ended {
        /// The actual start.
        started: DateTime<Utc>,
        /// The actual end.
        ended: DateTime<Utc>,
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
    /// Its description.
    pub description: String,
    /// Its length in seconds (`contentDetails.duration`): 0 for a stream not over yet; a
    /// premiere's is its video's length before it starts.
    pub duration_seconds: u64,
    /// A Short: the feed links it as `/shorts/<id>`, as YouTube's feeds do.
    pub short: bool,
}

impl Video {
    /// A plain upload published at `published`.
    pub fn upload(id: &str, channel_id: &str, title: &str, published: DateTime<Utc>) -> Self {
        Self {
            id: id.to_owned(),
            channel_id: channel_id.to_owned(),
            title: title.to_owned(),
            published,
            broadcast: Broadcast::Upload,
            description: String::new(),
            duration_seconds: 600,
            short: false,
        }
    }

    /// A stream announced now, scheduled to start at `start`.
    pub fn upcoming(id: &str, channel_id: &str, title: &str, start: DateTime<Utc>) -> Self {
        Self {
            broadcast: Broadcast::Upcoming(start),
            duration_seconds: 0,
            ..Self::upload(id, channel_id, title, Utc::now())
        }
    }

    /// A stream scheduled for `scheduled` that went live now.
    pub fn live(id: &str, channel_id: &str, title: &str, scheduled: DateTime<Utc>) -> Self {
        let now = Utc::now();
        Self {
            broadcast: Broadcast::Live {
                scheduled,
                started: now,
            },
            duration_seconds: 0,
            ..Self::upload(id, channel_id, title, now)
        }
    }
}

/// One `videos.list` call as the server saw it.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// The ids asked for, in order.
    pub ids: Vec<String>,
    /// The parts asked for.
    pub parts: Vec<String>,
    /// When it arrived.
    pub at: Instant,
    /// The status answered.
    pub status: u16,
}

/// One entry of a channel's public feed.
#[derive(Debug, Clone)]
struct FeedEntry {
    video_id: String,
    updated: DateTime<Utc>,
}

#[derive(Default)]
struct YoutubeState {
    api_key: String,
    videos: Mutex<HashMap<String, Video>>,
    /// Feed entries per channel, newest first; a channel without an entry here has no feed.
    feeds: Mutex<HashMap<String, Vec<FeedEntry>>>,
    list_requests: Mutex<Vec<ListRequest>>,
    /// `videos.list` calls still to answer with 403 `quotaExceeded`.
    quota_failures: AtomicU64,
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
            Broadcast::Upload | Broadcast::Ended { .. } => "none",
            Broadcast::Upcoming(_) => "upcoming",
            Broadcast::Live { .. } => "live",
        };
        let thumb = |name: &str, w: u32, h: u32| json!({"url": format!("https://i.ytimg.com/vi/{}/{name}.jpg", video.id), "width": w, "height": h});
        item["snippet"] = json!({
            "publishedAt": rfc3339(video.published),
            "channelId": video.channel_id,
            "title": video.title,
            "description": video.description,
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
    if parts.contains(&"contentDetails") {
        item["contentDetails"] = json!({
            "duration": iso_duration(video.duration_seconds),
            "dimension": "2d",
            "definition": "hd",
            "caption": "false",
            "licensedContent": false,
            "contentRating": {},
            "projection": "rectangular",
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
            Broadcast::Ended { started, ended } => {
                item["liveStreamingDetails"] = json!({
                    "actualStartTime": rfc3339(started),
                    "actualEndTime": rfc3339(ended),
                });
            }
        }
    }
    item
}

/// `seconds` as the Data API writes a duration: `P0D` for none, else `PT#H#M#S` without
/// zero parts (days when over 24 hours).
fn iso_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "P0D".into();
    }
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let mut text = String::from("P");
    if days > 0 {
        text.push_str(&format!("{days}D"));
    }
    if rest > 0 {
        text.push('T');
        for (value, unit) in [(h, 'H'), (m, 'M'), (s, 'S')] {
            if value > 0 {
                text.push_str(&format!("{value}{unit}"));
            }
        }
    }
    text
}

/// The non-empty items of comma-separated query parameter `name`.
fn comma_list(query: &HashMap<String, String>, name: &str) -> Vec<String> {
    query
        .get(name)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn videos_list(
    State(state): State<Arc<YoutubeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let ids = comma_list(&query, "id");
    let parts = comma_list(&query, "part");
    let (status, response) = answer_list(&state, query.get("key"), &ids, &parts);
    lock(&state.list_requests).push(ListRequest {
        ids,
        parts,
        at: Instant::now(),
        status: status.as_u16(),
    });
    response
}

/// The answer to one `videos.list` call, with its status for the request log.
fn answer_list(
    state: &YoutubeState,
    key: Option<&String>,
    ids: &[String],
    parts: &[String],
) -> (StatusCode, Response) {
    let refuse = |status: StatusCode, reason: &str, domain: &str, message: &str| {
        (status, api_error(status, reason, domain, message))
    };
    match key {
        None => {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "global",
                "The request is missing a valid API key.",
            )
        }
        Some(key) if *key != state.api_key => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "keyInvalid",
                "usageLimits",
                "API key not valid. Please pass a valid API key.",
            )
        }
        Some(_) => {}
    }
    if parts.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "required",
            "global",
            "No filter selected. Expected one of: chart, id, myRating",
        );
    }
    const KNOWN_PARTS: &[&str] = &[
        "id",
        "snippet",
        "liveStreamingDetails",
        "contentDetails",
        "statistics",
        "status",
    ];
    if let Some(unknown) = parts.iter().find(|p| !KNOWN_PARTS.contains(&p.as_str())) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unknownPart",
            "youtube.part",
            &format!("'{unknown}'"),
        );
    }
    if ids.len() > 50 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalidFilters",
            "youtube.parameter",
            "The request specifies more than 50 video ids.",
        );
    }
    let quota_spent = state
        .quota_failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if quota_spent {
        return refuse(
            StatusCode::FORBIDDEN,
            "quotaExceeded",
            "youtube.quota",
            "The request cannot be completed because you have exceeded your quota.",
        );
    }
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let videos = lock(&state.videos);
    let items: Vec<Value> = ids
        .iter()
        .filter_map(|id| videos.get(id))
        .map(|v| video_json(v, &parts))
        .collect();
    let body = json!({
        "kind": "youtube#videoListResponse",
        "etag": format!("list-{}", uuid::Uuid::new_v4().simple()),
        "pageInfo": {"totalResults": items.len(), "resultsPerPage": items.len()},
        "items": items,
    });
    (StatusCode::OK, Json(body).into_response())
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
    let entries: Vec<(&Video, DateTime<Utc>)> = entries
        .iter()
        .filter_map(|entry| Some((videos.get(&entry.video_id)?, entry.updated)))
        .collect();
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
         <title>{title}</title>\n  <link rel=\"alternate\" href=\"https://www.youtube.com/{page}{id}\"/>\n  \
         <author>\n   <name>Channel {channel}</name>\n   <uri>https://www.youtube.com/channel/{channel}</uri>\n  </author>\n  \
         <published>{published}</published>\n  <updated>{updated}</updated>\n </entry>\n",
        id = video.id,
        page = if video.short { "shorts/" } else { "watch?v=" },
        channel = video.channel_id,
        title = xml_escape(&video.title),
        published = video.published.to_rfc3339(),
        updated = updated.to_rfc3339_opts(SecondsFormat::Nanos, true),
    )
}

fn feed_xml(channel: &str, entries: &[(&Video, DateTime<Utc>)]) -> String {
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns:yt=\"http://www.youtube.com/xml/schemas/2015\" \
         xmlns:media=\"http://search.yahoo.com/mrss/\" xmlns=\"http://www.w3.org/2005/Atom\">\n \
         <link rel=\"self\" href=\"http://www.youtube.com/feeds/videos.xml?channel_id={channel}\"/>\n \
         <id>yt:channel:{channel}</id>\n <yt:channelId>{channel}</yt:channelId>\n <title>Channel {channel}</title>\n"
    );
    for (video, updated) in entries {
        body.push_str(&entry_xml(video, *updated));
    }
    body.push_str("</feed>\n");
    body
}

/// The Atom document the hub pushes when `video` was published or updated at `updated`
/// (its title and times as given, whatever the Data API says).
pub fn notification_xml(video: &Video, updated: DateTime<Utc>) -> String {
    format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<feed xmlns:yt=\"http://www.youtube.com/xml/schemas/2015\" \
         xmlns=\"http://www.w3.org/2005/Atom\"><link rel=\"hub\" href=\"https://pubsubhubbub.appspot.com\"/>\
         <link rel=\"self\" href=\"{topic}\"/><title>YouTube video feed</title><updated>{updated}</updated>{entry}</feed>\n",
        topic = xml_escape(&topic(&video.channel_id)),
        updated = updated.to_rfc3339_opts(SecondsFormat::Nanos, true),
        entry = entry_xml(video, updated),
    )
}

/// The Atom document the hub pushes when video `video_id` of `channel_id` was deleted.
pub fn tombstone_xml(video_id: &str, channel_id: &str) -> String {
    format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<feed xmlns:at=\"http://purl.org/atompub/tombstones/1.0\" \
         xmlns=\"http://www.w3.org/2005/Atom\">\n  <at:deleted-entry ref=\"yt:video:{video_id}\" when=\"{when}\">\n    \
         <link href=\"https://www.youtube.com/watch?v={video_id}\"/>\n    <at:by>\n     <name>Channel {channel_id}</name>\n     \
         <uri>https://www.youtube.com/channel/{channel_id}</uri>\n    </at:by>\n  </at:deleted-entry>\n</feed>\n",
        when = Utc::now().to_rfc3339(),
    )
}

impl Youtube {
    /// Starts the double accepting `api_key`.
    pub async fn start(api_key: &str) -> std::io::Result<Self> {
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

    /// Stores or replaces a video; when `in_feed`, it also heads its channel's feed, updated
    /// when it was published.
    pub fn put_video(&self, video: Video, in_feed: bool) {
        if in_feed {
            let mut feeds = lock(&self.state.feeds);
            let entries = feeds.entry(video.channel_id.clone()).or_default();
            entries.retain(|entry| entry.video_id != video.id);
            entries.insert(
                0,
                FeedEntry {
                    video_id: video.id.clone(),
                    updated: video.published,
                },
            );
        }
        lock(&self.state.videos).insert(video.id.clone(), video);
    }

    /// Replaces `channel_id`'s feed with `(video id, updated)` entries, newest first; ids
    /// the API does not know are left out of the served feed.
    pub fn set_feed(&self, channel_id: &str, entries: &[(&str, DateTime<Utc>)]) {
        let entries = entries
            .iter()
            .map(|(video_id, updated)| FeedEntry {
                video_id: (*video_id).to_owned(),
                updated: *updated,
            })
            .collect();
        lock(&self.state.feeds).insert(channel_id.to_owned(), entries);
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

    /// Answers the next `count` valid `videos.list` calls with 403 `quotaExceeded`.
    pub fn fail_quota(&self, count: u64) {
        self.state.quota_failures.store(count, Ordering::SeqCst);
    }

    /// The Atom document the hub pushes when stored video `video_id` was published or
    /// updated at `updated`; `None` if the video is unknown.
    pub fn push_xml(&self, video_id: &str, updated: DateTime<Utc>) -> Option<String> {
        let videos = lock(&self.state.videos);
        Some(notification_xml(videos.get(video_id)?, updated))
    }

    /// `videos.list` calls so far, refused ones included.
    pub fn list_calls(&self) -> u64 {
        lock(&self.state.list_requests).len() as u64
    }

    /// Every `videos.list` call so far, in arrival order.
    pub fn list_requests(&self) -> Vec<ListRequest> {
        lock(&self.state.list_requests).clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn list(youtube: &Youtube, query: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}/youtube/v3/videos?{query}", youtube.base))
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn lists_known_videos_with_the_parts_asked_and_fails_quota_on_demand() {
        let youtube = Youtube::start("k").await.unwrap();
        let start = Utc::now();
        youtube.put_video(Video::upcoming("vid00000001", "UC1", "Soon", start), false);
        let (status, body) = list(
            &youtube,
            "key=k&part=liveStreamingDetails&id=vid00000001,unknown0001",
        )
        .await;
        assert_eq!(status, 200);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "unknown ids are left out");
        assert_eq!(
            items[0]["liveStreamingDetails"]["scheduledStartTime"],
            rfc3339(start)
        );
        assert!(
            items[0].get("snippet").is_none(),
            "only the parts asked for"
        );
        youtube.fail_quota(1);
        let (status, body) = list(&youtube, "key=k&part=snippet&id=vid00000001").await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["errors"][0]["reason"], "quotaExceeded");
        let (status, _) = list(&youtube, "key=wrong&part=snippet&id=vid00000001").await;
        assert_eq!(status, 400);
        let statuses: Vec<u16> = youtube.list_requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![200, 403, 400]);
        assert_eq!(youtube.list_requests()[0].ids.len(), 2);
    }
}
