//! The Bilibili web API client: batched room status, the `/nav` signing keys and the
//! WBI-signed space-dynamics feed, with Bilibili's `{code, message, data}` envelope turned
//! into [`ApiError`]s.

use std::collections::HashMap;

use reqwest::header::{HeaderMap, HeaderValue, REFERER, USER_AGENT};
use serde::Deserialize;
use serde_json::Value;

use crate::config::BilibiliConfig;
use crate::wbi::{BadKeyUrl, WbiKeys};
use stargazer_core::source::SourceError;

/// Codes of Bilibili's risk control: "request intercepted" and "risk control failed"
/// (the latter also answers a bad WBI signature).
pub(crate) const CODE_INTERCEPTED: i64 = -412;
/// See [`CODE_INTERCEPTED`].
pub(crate) const CODE_RISK: i64 = -352;
/// "Access denied": also what stale WBI keys may earn.
pub(crate) const CODE_DENIED: i64 = -403;

/// The largest answer read: a status batch of 500 rooms is about 500 KB, a feed page of a
/// dozen items some 100 KB.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Risk control: `-412` / HTTP 412, or `-352`.
    #[error("risk control: code {code} ({message})")]
    Risk { code: i64, message: String },
    /// Any other `code != 0`.
    #[error("code {code} ({message})")]
    Code { code: i64, message: String },
    /// An HTTP status other than 200 (and 412).
    #[error("HTTP {0}")]
    Status(u16),
    /// No answer (connection, timeout).
    #[error("unavailable: {0}")]
    Unavailable(#[source] reqwest::Error),
    /// An answer that is not the documented shape.
    #[error("bad response: {0}")]
    BadResponse(String),
}

impl ApiError {
    /// The `outcome` label of the poll counter.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Risk { .. } => "risk_control",
            Self::Code { .. } => "error_code",
            Self::Status(_) => "http_error",
            Self::Unavailable(_) => "unavailable",
            Self::BadResponse(_) => "bad_response",
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Value,
}

/// One room of a status answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RoomStatus {
    pub(crate) title: String,
    pub(crate) room_id: u64,
    pub(crate) uid: u64,
    /// Unix seconds the current stream started; 0 when not live.
    pub(crate) live_time: i64,
    /// 0 off, 1 live, 2 rerun loop.
    pub(crate) live_status: u8,
    pub(crate) area_v2_name: String,
    pub(crate) cover_from_user: String,
    pub(crate) keyframe: String,
    pub(crate) uname: String,
}

/// One page of a user's dynamics.
#[derive(Debug, Default)]
pub(crate) struct FeedPage {
    pub(crate) items: Vec<Dynamic>,
    pub(crate) offset: String,
    pub(crate) has_more: bool,
}

/// The archive (video) of a `DYNAMIC_TYPE_AV` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Archive {
    pub(crate) bvid: String,
    pub(crate) title: String,
    pub(crate) desc: String,
    pub(crate) cover: String,
}

/// The parts of a dynamic the worker publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dynamic {
    pub(crate) id: String,
    /// `DYNAMIC_TYPE_…`.
    pub(crate) kind: String,
    pub(crate) pub_ts: i64,
    /// Pinned to the top of the space (`module_tag.text == "置顶"`).
    pub(crate) pinned: bool,
    pub(crate) text: String,
    pub(crate) pictures: Vec<String>,
    pub(crate) archive: Option<Archive>,
    /// For a repost: the forwarded dynamic's id.
    pub(crate) forwarded_id: Option<String>,
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

impl Dynamic {
    /// Reads an item of `data.items`; `None` without an id.
    pub(crate) fn from_item(item: &Value) -> Option<Self> {
        let id = str_at(item, "/id_str");
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let dynamic = item.pointer("/modules/module_dynamic");
        let dyn_str = |p: &str| dynamic.map(|d| str_at(d, p)).unwrap_or("");
        let mut text = dyn_str("/desc/text").to_owned();
        if text.is_empty() {
            text = dyn_str("/major/opus/summary/text").to_owned();
        }
        let urls = |p: &str, field: &str| -> Vec<String> {
            dynamic
                .and_then(|d| d.pointer(p))
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.get(field).and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut pictures = urls("/major/draw/items", "src");
        if pictures.is_empty() {
            pictures = urls("/major/opus/pics", "url");
        }
        let archive = dynamic
            .and_then(|d| d.pointer("/major/archive"))
            .filter(|a| a.is_object())
            .map(|a| Archive {
                bvid: str_at(a, "/bvid").to_owned(),
                title: str_at(a, "/title").to_owned(),
                desc: str_at(a, "/desc").to_owned(),
                cover: str_at(a, "/cover").to_owned(),
            });
        let forwarded_id = Some(str_at(item, "/orig/id_str"))
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        Some(Self {
            id: id.to_owned(),
            kind: str_at(item, "/type").to_owned(),
            pub_ts: item
                .pointer("/modules/module_author/pub_ts")
                .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                .unwrap_or(0),
            pinned: str_at(item, "/modules/module_tag/text") == "置顶",
            text,
            pictures,
            archive,
            forwarded_id,
        })
    }
}

/// Compares two numeric dynamic ids (decimal strings, possibly past `u64`).
pub(crate) fn id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BiliApi {
    http: reqwest::Client,
    live_base: String,
    api_base: String,
}

impl BiliApi {
    /// A client sending the configured `User-Agent` and `Referer`: not the kit's
    /// `http_client`, whose `stargazer-worker-…` agent Bilibili's edge refuses.
    pub(crate) fn new(config: &BilibiliConfig) -> Result<Self, SourceError> {
        let mut headers = HeaderMap::new();
        let header = |value: &str, key: &str| {
            HeaderValue::from_str(value)
                .map_err(|_| SourceError::Config(format!("bilibili.{key}: not a header value")))
        };
        headers.insert(USER_AGENT, header(&config.user_agent, "user_agent")?);
        headers.insert(REFERER, header(&config.referer, "referer")?);
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout())
            .default_headers(headers)
            .build()
            .map_err(|err| SourceError::Config(format!("HTTP client: {err}")))?;
        Ok(Self {
            http,
            live_base: config.live_base.trim_end_matches('/').to_owned(),
            api_base: config.api_base.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `request` and opens the envelope; `accept` lists non-zero codes whose
    /// `data` is still wanted (`/nav` answers guests -101 with the keys).
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        accept: &[i64],
    ) -> Result<Value, ApiError> {
        let mut response = request.send().await.map_err(ApiError::Unavailable)?;
        let status = response.status().as_u16();
        // Read in chunks up to a bound: a broken or hostile answer cannot make the worker
        // buffer without end.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(ApiError::Unavailable)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ApiError::BadResponse(format!(
                    "answer larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let envelope: Option<Envelope> = serde_json::from_slice(&body).ok();
        match (status, envelope) {
            (_, Some(e)) if e.code == CODE_INTERCEPTED || e.code == CODE_RISK => {
                Err(ApiError::Risk {
                    code: e.code,
                    message: e.message,
                })
            }
            // The edge sometimes refuses with a bare 412 page.
            (412, _) => Err(ApiError::Risk {
                code: CODE_INTERCEPTED,
                message: "HTTP 412".into(),
            }),
            (200, Some(e)) if e.code == 0 || accept.contains(&e.code) => Ok(e.data),
            (200, Some(e)) => Err(ApiError::Code {
                code: e.code,
                message: e.message,
            }),
            (200, None) => Err(ApiError::BadResponse("not a JSON envelope".into())),
            (status, _) => Err(ApiError::Status(status)),
        }
    }

    /// The status of the rooms of `uids` (one request); uids without a room are absent.
    pub(crate) async fn room_status(
        &self,
        uids: &[u64],
    ) -> Result<HashMap<u64, RoomStatus>, ApiError> {
        let url = format!("{}/room/v1/Room/get_status_info_by_uids", self.live_base);
        let data = self
            .call(
                self.http
                    .post(url)
                    .json(&serde_json::json!({ "uids": uids })),
                &[],
            )
            .await?;
        let Value::Object(rooms) = data else {
            // No room found: the API answers an empty array.
            return match data {
                Value::Array(a) if a.is_empty() => Ok(HashMap::new()),
                Value::Null => Ok(HashMap::new()),
                _ => Err(ApiError::BadResponse("status data is not an object".into())),
            };
        };
        let mut statuses = HashMap::with_capacity(rooms.len());
        for (uid, room) in rooms {
            let Ok(uid) = uid.parse::<u64>() else {
                continue;
            };
            match serde_json::from_value::<RoomStatus>(room) {
                Ok(room) => {
                    statuses.insert(uid, room);
                }
                Err(err) => tracing::warn!(uid, cause = %err, "unreadable room status skipped"),
            }
        }
        Ok(statuses)
    }

    /// Today's WBI keys from `/x/web-interface/nav`.
    pub(crate) async fn wbi_keys(&self) -> Result<WbiKeys, ApiError> {
        let url = format!("{}/x/web-interface/nav", self.api_base);
        // -101 "not logged in" is the normal answer for a guest and still carries the keys.
        let data = self.call(self.http.get(url), &[-101]).await?;
        WbiKeys::from_urls(
            str_at(&data, "/wbi_img/img_url"),
            str_at(&data, "/wbi_img/sub_url"),
        )
        .map_err(|BadKeyUrl(url)| ApiError::BadResponse(format!("WBI key URL `{url}`")))
    }

    /// One page of `uid`'s dynamics after `offset` (empty for the newest), signed with `keys`.
    pub(crate) async fn space_feed(
        &self,
        keys: &WbiKeys,
        uid: &str,
        offset: &str,
    ) -> Result<FeedPage, ApiError> {
        let query = keys.sign(
            &[
                ("host_mid", uid.to_owned()),
                ("offset", offset.to_owned()),
                ("timezone_offset", "-480".into()),
                ("features", "itemOpusStyle".into()),
            ],
            chrono::Utc::now().timestamp(),
        );
        let url = format!(
            "{}/x/polymer/web-dynamic/v1/feed/space?{query}",
            self.api_base
        );
        let data = self.call(self.http.get(url), &[]).await?;
        let items = data
            .get("items")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Dynamic::from_item).collect())
            .unwrap_or_default();
        Ok(FeedPage {
            items,
            offset: match data.get("offset") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            },
            has_more: data
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_video_picture_and_repost_items() {
        let video = json!({"id_str": "900", "type": "DYNAMIC_TYPE_AV", "modules": {
            "module_author": {"pub_ts": 1700000000},
            "module_dynamic": {"desc": null, "major": {"type": "MAJOR_TYPE_ARCHIVE", "archive": {
                "bvid": "BV1xx411c7mD", "title": "T", "desc": "D", "cover": "http://i0.hdslb.com/c.jpg",
                "jump_url": "//www.bilibili.com/video/BV1xx411c7mD/"}}}}});
        let d = Dynamic::from_item(&video).unwrap();
        assert_eq!(d.archive.unwrap().bvid, "BV1xx411c7mD");
        assert_eq!(d.pub_ts, 1_700_000_000);
        let opus = json!({"id_str": "901", "type": "DYNAMIC_TYPE_DRAW", "modules": {
            "module_tag": {"text": "置顶"},
            "module_dynamic": {"desc": null, "major": {"type": "MAJOR_TYPE_OPUS", "opus": {
                "summary": {"text": "pics"}, "pics": [{"url": "http://i0.hdslb.com/a.jpg"}]}}}}});
        let d = Dynamic::from_item(&opus).unwrap();
        assert!(d.pinned);
        assert_eq!(d.text, "pics");
        assert_eq!(d.pictures, vec!["http://i0.hdslb.com/a.jpg"]);
        let repost = json!({"id_str": "902", "type": "DYNAMIC_TYPE_FORWARD",
            "orig": {"id_str": "77"}, "modules": {"module_dynamic": {"desc": {"text": "look"}}}});
        let d = Dynamic::from_item(&repost).unwrap();
        assert_eq!(d.forwarded_id.as_deref(), Some("77"));
        assert_eq!(d.text, "look");
        assert!(Dynamic::from_item(&json!({"id_str": "x1"})).is_none());
        assert!(Dynamic::from_item(&json!([])).is_none());
    }

    #[test]
    fn ids_compare_as_numbers() {
        use std::cmp::Ordering;
        assert_eq!(id_cmp("99", "100"), Ordering::Less);
        assert_eq!(id_cmp("1000000000000000000001", "999"), Ordering::Greater);
    }
}
