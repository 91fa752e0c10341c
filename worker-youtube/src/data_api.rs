//! YouTube Data API v3 `videos.list?part=snippet,liveStreamingDetails,contentDetails`: the one call the
//! worker makes to tell uploads, scheduled streams and live streams apart. Each call costs
//! one quota unit whatever the number of ids (≤ 50), which is why callers batch.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Errors of a `videos.list` call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DataApiError {
    /// The daily quota is spent (403 `quotaExceeded`/`dailyLimitExceeded`) or requests come
    /// too fast (403 `rateLimitExceeded`, 429): wait long before retrying.
    #[error("Data API quota exhausted: {0}")]
    Quota(String),
    /// The API refused the request for another reason (bad key, bad parameter).
    #[error("Data API rejected the request ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The API's reason and message.
        message: String,
    },
    /// A server error or a transport failure; worth retrying soon.
    #[error("Data API unavailable: {0}")]
    Unavailable(String),
    /// A 200 response that is not a `videoListResponse`.
    #[error("Data API answered with an unexpected body: {0}")]
    BadResponse(String),
}

impl DataApiError {
    /// A short label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            DataApiError::Quota(_) => "quota",
            DataApiError::Rejected { .. } => "rejected",
            DataApiError::Unavailable(_) => "unavailable",
            DataApiError::BadResponse(_) => "bad_response",
        }
    }
}

/// One `youtube#video` resource, reduced to what classification needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Video {
    /// Video id.
    pub id: String,
    /// `snippet`.
    #[serde(default)]
    pub snippet: Option<Snippet>,
    /// `liveStreamingDetails`, present for streams and premieres.
    #[serde(default, rename = "liveStreamingDetails")]
    pub live: Option<LiveStreamingDetails>,
    /// `contentDetails`, for the duration (premieres and Shorts).
    #[serde(default, rename = "contentDetails")]
    pub content: Option<ContentDetails>,
}

/// `contentDetails` of a video.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub(crate) struct ContentDetails {
    /// ISO 8601 duration (`PT3M20S`; `P0D` for a stream not over yet).
    #[serde(default)]
    pub duration: Option<String>,
}

/// `snippet` of a video.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Snippet {
    /// When the video was published (for streams: when the broadcast was created).
    #[serde(default)]
    pub published_at: Option<DateTime<Utc>>,
    /// Owning channel.
    #[serde(default)]
    pub channel_id: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Description (members-only and Shorts markers).
    #[serde(default)]
    pub description: String,
    /// Channel title.
    #[serde(default)]
    pub channel_title: String,
    /// Thumbnails by size name.
    #[serde(default)]
    pub thumbnails: std::collections::BTreeMap<String, Thumbnail>,
    /// `none`, `upcoming` or `live`.
    #[serde(default)]
    pub live_broadcast_content: String,
}

/// One thumbnail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Thumbnail {
    /// Image URL.
    pub url: String,
}

/// `liveStreamingDetails` of a stream or premiere.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LiveStreamingDetails {
    /// Announced start.
    #[serde(default)]
    pub scheduled_start_time: Option<DateTime<Utc>>,
    /// Real start, once live.
    #[serde(default)]
    pub actual_start_time: Option<DateTime<Utc>>,
    /// Real end, once over.
    #[serde(default)]
    pub actual_end_time: Option<DateTime<Utc>>,
}

impl Video {
    /// `contentDetails.duration` in seconds, when present and readable.
    pub(crate) fn duration_seconds(&self) -> Option<u64> {
        parse_duration(self.content.as_ref()?.duration.as_deref()?)
    }

    /// The largest thumbnail's URL.
    pub(crate) fn best_thumbnail(&self) -> Option<&str> {
        let thumbs = &self.snippet.as_ref()?.thumbnails;
        ["maxres", "standard", "high", "medium", "default"]
            .iter()
            .find_map(|size| thumbs.get(*size))
            .map(|t| t.url.as_str())
    }
}

/// Seconds of an ISO 8601 duration of the form the Data API uses (`P[nD][T[nH][nM][nS]]`,
/// whole numbers); `None` for anything else.
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('P').filter(|rest| !rest.is_empty())?;
    let (days, time) = match rest.split_once('T') {
        Some((days, time)) => (days, Some(time)),
        None => (rest, None),
    };
    let mut seconds: u64 = 0;
    let mut add = |part: &str, units: &[(char, u64)]| -> Option<()> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let (_, scale) = allowed.find(|(unit, _)| *unit == c)?;
            let value: u64 = number.parse().ok()?;
            seconds = seconds.checked_add(value.checked_mul(*scale)?)?;
            number.clear();
        }
        number.is_empty().then_some(())
    };
    add(days, &[('W', 604_800), ('D', 86_400)])?;
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        add(time, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    Some(seconds)
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// A `videos.list` client.
#[derive(Debug, Clone)]
pub(crate) struct DataApi {
    http: reqwest::Client,
    endpoint: String,
    key: String,
}

impl DataApi {
    /// A client for `{base}/youtube/v3/videos` with API key `key`.
    pub(crate) fn new(http: reqwest::Client, base: &str, key: &str) -> Self {
        Self {
            http,
            endpoint: format!("{}/youtube/v3/videos", base.trim_end_matches('/')),
            key: key.to_owned(),
        }
    }

    /// Fetches up to 50 videos in one call (one quota unit). Ids the API does not return
    /// (private, deleted, never existed) are simply absent from the result. Items that do
    /// not parse are skipped with a warning rather than failing the whole batch.
    pub(crate) async fn list(&self, ids: &[String]) -> Result<Vec<Video>, DataApiError> {
        let joined = ids.join(",");
        let response = self
            .http
            .get(&self.endpoint)
            .query(&[
                ("part", "snippet,liveStreamingDetails,contentDetails"),
                ("id", joined.as_str()),
                ("maxResults", "50"),
                ("key", self.key.as_str()),
            ])
            .send()
            .await
            .map_err(|err| DataApiError::Unavailable(without_url(&err)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| DataApiError::Unavailable(without_url(&err)))?;
        if status.is_success() {
            let list: ListResponse = serde_json::from_slice(&body)
                .map_err(|err| DataApiError::BadResponse(err.to_string()))?;
            if let Some(kind) = list.kind.as_deref() {
                if kind != "youtube#videoListResponse" {
                    return Err(DataApiError::BadResponse(format!("kind `{kind}`")));
                }
            }
            let mut videos = Vec::with_capacity(list.items.len());
            for item in list.items {
                match serde_json::from_value::<Video>(item) {
                    Ok(video) => videos.push(video),
                    Err(err) => tracing::warn!(cause = %err, "skipping unparsable video item"),
                }
            }
            return Ok(videos);
        }
        let (reason, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(parsed) => (
                parsed
                    .error
                    .errors
                    .first()
                    .map(|e| e.reason.clone())
                    .unwrap_or_default(),
                parsed.error.message,
            ),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        let described = if reason.is_empty() {
            message
        } else {
            format!("{reason}: {message}")
        };
        match status.as_u16() {
            429 => Err(DataApiError::Quota(described)),
            403 if matches!(
                reason.as_str(),
                "quotaExceeded"
                    | "dailyLimitExceeded"
                    | "rateLimitExceeded"
                    | "userRateLimitExceeded"
            ) =>
            {
                Err(DataApiError::Quota(described))
            }
            code if status.is_server_error() => {
                Err(DataApiError::Unavailable(format!("{code}: {described}")))
            }
            code => Err(DataApiError::Rejected {
                status: code,
                message: described,
            }),
        }
    }
}

/// reqwest errors print the URL, which carries the API key; keep it out of logs.
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "<videos.list>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_data_api_form() {
        assert_eq!(parse_duration("P0D"), Some(0));
        assert_eq!(parse_duration("PT59S"), Some(59));
        assert_eq!(parse_duration("PT3M"), Some(180));
        assert_eq!(parse_duration("PT1H2M3S"), Some(3723));
        assert_eq!(parse_duration("P1DT1S"), Some(86_401));
        for bad in [
            "",
            "P",
            "PT",
            "T1S",
            "PT1X",
            "PT1",
            "P1H",
            "PTS",
            "PT99999999999999999999S",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_a_real_shaped_item() {
        let item = serde_json::json!({
            "kind": "youtube#video",
            "etag": "x",
            "id": "VID",
            "snippet": {
                "publishedAt": "2024-05-01T10:00:00Z",
                "channelId": "UC1",
                "title": "t",
                "description": "d",
                "thumbnails": {"default": {"url": "https://i.ytimg.com/d.jpg", "width": 120, "height": 90},
                               "high": {"url": "https://i.ytimg.com/h.jpg", "width": 480, "height": 360}},
                "channelTitle": "ch",
                "liveBroadcastContent": "upcoming"
            },
            "liveStreamingDetails": {"scheduledStartTime": "2024-05-02T10:00:00Z", "activeLiveChatId": "c"}
        });
        let video: Video = serde_json::from_value(item).unwrap();
        assert_eq!(video.best_thumbnail(), Some("https://i.ytimg.com/h.jpg"));
        let snippet = video.snippet.as_ref().unwrap();
        assert_eq!(snippet.live_broadcast_content, "upcoming");
        assert_eq!(
            video
                .live
                .unwrap()
                .scheduled_start_time
                .unwrap()
                .to_rfc3339(),
            "2024-05-02T10:00:00+00:00"
        );
    }
}
