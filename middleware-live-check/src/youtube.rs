//! The one YouTube Data API v3 call live-check needs:
//! `GET {base}/youtube/v3/videos?part=liveStreamingDetails&id=a,b,c&key=…` for up to 50
//! ids, answering `{"items": [{"id": "…", "liveStreamingDetails": {"scheduledStartTime",
//! "actualStartTime", "actualEndTime"}}]}`. Ids missing from `items` are deleted or
//! private videos. Errors come as `{"error": {"code", "message", "errors": [{"reason"}]}}`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Most ids one `videos.list` call accepts.
pub(crate) const MAX_IDS_PER_CALL: usize = 50;

/// What the API says about one video's broadcast.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveStreamingDetails {
    /// When the broadcast is scheduled to start.
    #[serde(default)]
    pub scheduled_start_time: Option<DateTime<Utc>>,
    /// When it actually started: present once it is live.
    #[serde(default)]
    pub actual_start_time: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default)]
    pub actual_end_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    id: String,
    #[serde(default)]
    live_streaming_details: Option<LiveStreamingDetails>,
}

#[derive(Debug, Deserialize)]
struct ListResponse {
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorReason>,
}

#[derive(Debug, Deserialize)]
struct ErrorReason {
    #[serde(default)]
    reason: String,
}

/// Why a call failed; every kind leaves the pending videos pending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 403 `quotaExceeded` / `rateLimitExceeded` (or 429).
    #[error("YouTube API quota or rate limit exceeded: {0}")]
    Quota(String),
    /// 5xx.
    #[error("YouTube API server error ({status}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// Any other status (bad key, bad request).
    #[error("YouTube API rejected the request ({status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The API's message and reasons.
        message: String,
    },
    /// The request did not complete.
    #[error("YouTube API unreachable: {0}")]
    Network(String),
    /// A 200 whose body is not a `videoListResponse`.
    #[error("YouTube API answered an unexpected body: {0}")]
    BadResponse(String),
}

impl ApiError {
    /// Whether the API refused the call for quota (such a call costs no unit).
    pub fn is_quota(&self) -> bool {
        matches!(self, ApiError::Quota(_))
    }

    /// The metric label of this error.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::Quota(_) => "quota",
            ApiError::Server { .. } => "server_error",
            ApiError::Rejected { .. } => "rejected",
            ApiError::Network(_) => "network",
            ApiError::BadResponse(_) => "bad_response",
        }
    }
}

/// A Data API client.
#[derive(Debug, Clone)]
pub struct YoutubeClient {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl YoutubeClient {
    /// A client for the API at `base_url` (`https://www.googleapis.com`) with API `key`.
    pub fn new(base_url: &str, key: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            url: format!("{}/youtube/v3/videos", base_url.trim_end_matches('/')),
            key: key.to_owned(),
        })
    }

    /// The broadcast details of up to [`MAX_IDS_PER_CALL`] videos. A video absent from the
    /// map was not returned (deleted or private); `None` details mean it is not a
    /// broadcast.
    pub async fn live_details(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Option<LiveStreamingDetails>>, ApiError> {
        debug_assert!(ids.len() <= MAX_IDS_PER_CALL);
        let joined = ids.join(",");
        let response = self
            .http
            .get(&self.url)
            .query(&[
                ("part", "liveStreamingDetails"),
                ("id", joined.as_str()),
                ("maxResults", "50"),
                ("key", self.key.as_str()),
            ])
            .send()
            .await
            .map_err(|err| ApiError::Network(err.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| ApiError::Network(err.without_url().to_string()))?;
        if status.is_success() {
            let parsed: ListResponse = serde_json::from_slice(&body)
                .map_err(|err| ApiError::BadResponse(err.to_string()))?;
            return Ok(parsed
                .items
                .into_iter()
                .map(|item| (item.id, item.live_streaming_details))
                .collect());
        }
        let (message, reasons) = match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(envelope) => (
                envelope.error.message,
                envelope
                    .error
                    .errors
                    .into_iter()
                    .map(|e| e.reason)
                    .collect::<Vec<_>>(),
            ),
            Err(_) => (
                String::from_utf8_lossy(&body).chars().take(200).collect(),
                Vec::new(),
            ),
        };
        let quota = status.as_u16() == 429
            || reasons.iter().any(|r| {
                r == "quotaExceeded" || r == "rateLimitExceeded" || r == "userRateLimitExceeded"
            });
        if quota {
            return Err(ApiError::Quota(message));
        }
        if status.is_server_error() {
            return Err(ApiError::Server {
                status: status.as_u16(),
                message,
            });
        }
        let message = if reasons.is_empty() {
            message
        } else {
            format!("{message} ({})", reasons.join(", "))
        };
        Err(ApiError::Rejected {
            status: status.as_u16(),
            message,
        })
    }
}
