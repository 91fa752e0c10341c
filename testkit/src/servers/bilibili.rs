//! Bilibili's web APIs as the worker uses them, with their real shapes and failure modes.
//!
//! - `POST /room/v1/Room/get_status_info_by_uids` with `{"uids":[…]}`: the status of each
//!   known uid's room under `data."<uid>"`; unknown uids are simply absent (no room at
//!   all: `data: []`, as the real API answers). Each call is recorded with how many uids
//!   it asked for ([`BilibiliServer::status_calls`]).
//! - `GET /x/web-interface/nav`: a guest's answer, code `-101` "账号未登录" with
//!   `data.wbi_img.{img_url,sub_url}` carrying today's WBI keys
//!   ([`BilibiliServer::rotate_keys`] changes them).
//! - `GET /x/polymer/web-dynamic/v1/feed/space`: checks `w_rid`/`wts` against its own
//!   keys (a wrong or missing signature → code `-352`), then pages the user's dynamics
//!   newest first, a pinned one on top of the first page (`module_tag.text == "置顶"`),
//!   `offset` = the last item's id, `has_more`. With `features=itemOpusStyle` picture and
//!   text posts come in the opus shape (`major.opus`), else the older `desc` + `major.draw`.
//!
//! Risk control ([`BilibiliServer::set_risk`]) answers an endpoint's next N calls, or
//! every call until switched off, the way Bilibili refuses a client that polls too hard:
//! the status endpoint with HTTP 200 and `{"code":-412,"message":"请求被拦截"}`, the
//! dynamics endpoints (`nav` and `feed/space`) with HTTP 412 and the same body. A request
//! without a `User-Agent` is refused the same way. Every request is recorded with its
//! time ([`BilibiliServer::requests`]) so tests can check backoff and spacing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use md5::{Digest, Md5};
use serde_json::{json, Value};

use super::{lock, serve, Served};

/// The WBI permutation (bilibili-API-collect, `docs/misc/sign/wbi.md`).
const MIXIN_KEY_ENC_TAB: [usize; 64] = [
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49, 33, 9, 42, 19, 29,
    28, 14, 39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40, 61, 26, 17, 0, 1, 60, 51, 30, 4, 22, 25,
    54, 21, 56, 59, 6, 63, 57, 62, 11, 36, 20, 34, 44, 52,
];
/// Items per feed page (the web client gets about a dozen).
const DEFAULT_PAGE_SIZE: usize = 12;

/// The endpoints risk control can be switched on for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `get_status_info_by_uids`.
    Live,
    /// `nav` and `feed/space`.
    Dynamic,
}

/// How an endpoint's risk control behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// Answers normally.
    Off,
    /// Refuses the next N calls, then answers normally.
    Next(u64),
    /// Refuses every call until switched off.
    On,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived.
    pub at: Instant,
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// `status`, `nav` or `feed`.
    pub path: &'static str,
    /// The `code` answered (0 for success).
    pub code: i64,
    /// For a status call: how many uids it asked for.
    pub uids: usize,
    /// For a feed call: `host_mid`.
    pub host_mid: String,
    /// For a feed call: `offset`.
    pub offset: String,
}

/// A room's state.
#[derive(Debug, Clone)]
struct Room {
    room_id: u64,
    uname: String,
    title: String,
    status: u8,
    live_time: i64,
}

/// What a dynamic is.
#[derive(Debug, Clone)]
pub enum Post {
    /// `DYNAMIC_TYPE_AV`: a video upload.
    Video {
        /// BV id.
        bvid: String,
        /// The video's title.
        title: String,
        /// Its description.
        desc: String,
    },
    /// `DYNAMIC_TYPE_DRAW`: text with pictures.
    Picture {
        /// The text.
        text: String,
        /// Picture URLs.
        pictures: Vec<String>,
    },
    /// `DYNAMIC_TYPE_WORD`: text only.
    Text {
        /// The text.
        text: String,
    },
    /// `DYNAMIC_TYPE_FORWARD`: a repost of dynamic `orig` with a comment.
    Repost {
        /// The comment.
        text: String,
        /// The forwarded dynamic's id.
        orig: u64,
    },
    /// A kind the worker does not publish (`DYNAMIC_TYPE_ARTICLE`).
    Article {
        /// The article title.
        title: String,
    },
}

#[derive(Debug, Clone)]
struct Item {
    id: u64,
    uid: String,
    pub_ts: i64,
    post: Post,
}

struct BiliState {
    rooms: Mutex<HashMap<u64, Room>>,
    feeds: Mutex<HashMap<String, Vec<Item>>>,
    pinned: Mutex<HashMap<String, u64>>,
    keys: Mutex<(String, String)>,
    risk: Mutex<HashMap<Endpoint, Risk>>,
    requests: Mutex<Vec<Request>>,
    page_size: AtomicU64,
    next_id: AtomicU64,
}

/// A running Bilibili API double; stops when dropped.
pub struct BilibiliServer {
    /// Base URL for both `bilibili.live_base` and `bilibili.api_base`.
    pub base: String,
    state: Arc<BiliState>,
    _served: Served,
}

/// A uid, unique per call.
pub fn new_uid() -> u64 {
    1_000_000 + (uuid::Uuid::new_v4().as_u128() % 3_000_000_000) as u64
}

fn random_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn mixin_key(img: &str, sub: &str) -> String {
    let raw: Vec<char> = img.chars().chain(sub.chars()).collect();
    MIXIN_KEY_ENC_TAB
        .iter()
        .filter_map(|&i| raw.get(i))
        .take(32)
        .collect()
}

/// `encodeURIComponent`, upper-case hex.
fn encode_component(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~!'()*".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether `params` carry a valid `w_rid` for the mixin key.
fn signature_ok(params: &[(String, String)], mixin: &str) -> bool {
    let Some(w_rid) = params.iter().find(|(k, _)| k == "w_rid").map(|(_, v)| v) else {
        return false;
    };
    if !params.iter().any(|(k, _)| k == "wts") {
        return false;
    }
    let mut signed: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "w_rid")
        .map(|(k, v)| {
            let stripped: String = v.chars().filter(|c| !"!'()*".contains(*c)).collect();
            (k.clone(), stripped)
        })
        .collect();
    signed.sort();
    let query = signed
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&");
    hex::encode(Md5::digest(format!("{query}{mixin}").as_bytes())) == *w_rid
}

fn refused() -> Value {
    json!({"code": -412, "message": "请求被拦截", "ttl": 1, "data": null})
}

impl BiliState {
    /// Whether risk control refuses this call of `endpoint` (and counts it down).
    fn refuse(&self, endpoint: Endpoint, headers: &HeaderMap) -> bool {
        let agent = headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if agent.trim().is_empty() {
            return true;
        }
        let mut risk = lock(&self.risk);
        match risk.get(&endpoint).copied().unwrap_or(Risk::Off) {
            Risk::Off => false,
            Risk::On => true,
            Risk::Next(n) => {
                let left = n.saturating_sub(1);
                risk.insert(
                    endpoint,
                    if left == 0 {
                        Risk::Off
                    } else {
                        Risk::Next(left)
                    },
                );
                true
            }
        }
    }

    fn record(&self, request: Request) {
        lock(&self.requests).push(request);
    }
}

fn request(endpoint: Endpoint, path: &'static str, code: i64) -> Request {
    Request {
        at: Instant::now(),
        endpoint,
        path,
        code,
        uids: 0,
        host_mid: String::new(),
        offset: String::new(),
    }
}

async fn status(
    State(state): State<Arc<BiliState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let uids: Vec<u64> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("uids").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mut seen = request(Endpoint::Live, "status", 0);
    seen.uids = uids.len();
    if state.refuse(Endpoint::Live, &headers) {
        seen.code = -412;
        state.record(seen);
        return Json(refused()).into_response();
    }
    if uids.is_empty() {
        seen.code = -400;
        state.record(seen);
        return Json(json!({"code": -400, "msg": "请求错误", "message": "请求错误", "data": []}))
            .into_response();
    }
    state.record(seen);
    let rooms = lock(&state.rooms);
    let mut data = serde_json::Map::new();
    for uid in uids {
        let Some(room) = rooms.get(&uid) else {
            continue;
        };
        let live_time = if room.status == 1 { room.live_time } else { 0 };
        data.insert(
            uid.to_string(),
            json!({
                "title": room.title, "room_id": room.room_id, "uid": uid, "online": 1234,
                "live_time": live_time, "live_status": room.status, "short_id": 0,
                "area": 6, "area_name": "生活娱乐", "area_v2_id": 744, "area_v2_name": "虚拟Singer",
                "area_v2_parent_name": "虚拟主播", "area_v2_parent_id": 9, "uname": room.uname,
                "face": "https://i0.hdslb.com/bfs/face/face.jpg", "tag_name": "", "tags": "",
                "cover_from_user": format!("https://i0.hdslb.com/bfs/live/new_room_cover/{}.jpg", room.room_id),
                "keyframe": format!("https://i0.hdslb.com/bfs/live-key-frame/keyframe{}.jpg", room.room_id),
                "lock_till": "0000-00-00 00:00:00", "hidden_till": "0000-00-00 00:00:00", "broadcast_type": 0,
            }),
        );
    }
    let data = if data.is_empty() {
        json!([])
    } else {
        Value::Object(data)
    };
    Json(json!({"code": 0, "msg": "success", "message": "success", "data": data})).into_response()
}

async fn nav(State(state): State<Arc<BiliState>>, headers: HeaderMap) -> Response {
    if state.refuse(Endpoint::Dynamic, &headers) {
        state.record(request(Endpoint::Dynamic, "nav", -412));
        return (StatusCode::PRECONDITION_FAILED, Json(refused())).into_response();
    }
    state.record(request(Endpoint::Dynamic, "nav", -101));
    let (img, sub) = lock(&state.keys).clone();
    Json(
        json!({"code": -101, "message": "账号未登录", "ttl": 1, "data": {
            "isLogin": false,
            "wbi_img": {
                "img_url": format!("https://i0.hdslb.com/bfs/wbi/{img}.png"),
                "sub_url": format!("https://i0.hdslb.com/bfs/wbi/{sub}.png"),
            },
        }}),
    )
    .into_response()
}

fn item_json(item: &Item, opus: bool, pinned: bool, orig: Option<&Item>) -> Value {
    let id = item.id.to_string();
    let kind = match item.post {
        Post::Video { .. } => "DYNAMIC_TYPE_AV",
        Post::Picture { .. } => "DYNAMIC_TYPE_DRAW",
        Post::Text { .. } => "DYNAMIC_TYPE_WORD",
        Post::Repost { .. } => "DYNAMIC_TYPE_FORWARD",
        Post::Article { .. } => "DYNAMIC_TYPE_ARTICLE",
    };
    let text_desc = |text: &str| json!({"text": text, "rich_text_nodes": [{"type": "RICH_TEXT_NODE_TYPE_TEXT", "text": text, "orig_text": text}]});
    let module_dynamic = match &item.post {
        Post::Video { bvid, title, desc } => json!({
            "desc": null, "additional": null, "topic": null,
            "major": {"type": "MAJOR_TYPE_ARCHIVE", "archive": {
                "aid": (item.id % 1_000_000_000).to_string(), "bvid": bvid, "title": title, "desc": desc,
                "cover": format!("http://i0.hdslb.com/bfs/archive/{bvid}.jpg"),
                "jump_url": format!("//www.bilibili.com/video/{bvid}/"),
                "duration_text": "12:34", "stat": {"danmaku": "0", "play": "0"}, "type": 1,
            }},
        }),
        Post::Picture { text, pictures } if opus => json!({
            "desc": null, "additional": null, "topic": null,
            "major": {"type": "MAJOR_TYPE_OPUS", "opus": {
                "jump_url": format!("//www.bilibili.com/opus/{id}"), "title": null,
                "summary": text_desc(text),
                "pics": pictures.iter().map(|u| json!({"url": u, "width": 1080, "height": 1080, "size": 100.0})).collect::<Vec<_>>(),
            }},
        }),
        Post::Picture { text, pictures } => json!({
            "desc": text_desc(text), "additional": null, "topic": null,
            "major": {"type": "MAJOR_TYPE_DRAW", "draw": {"id": item.id % 1_000_000,
                "items": pictures.iter().map(|u| json!({"src": u, "width": 1080, "height": 1080, "size": 100.0, "tags": []})).collect::<Vec<_>>()}},
        }),
        Post::Text { text } if opus => json!({
            "desc": null, "additional": null, "topic": null,
            "major": {"type": "MAJOR_TYPE_OPUS", "opus": {
                "jump_url": format!("//www.bilibili.com/opus/{id}"), "title": null,
                "summary": text_desc(text), "pics": [],
            }},
        }),
        Post::Text { text } | Post::Repost { text, .. } => json!({
            "desc": text_desc(text), "additional": null, "topic": null, "major": null,
        }),
        Post::Article { title } => json!({
            "desc": null, "additional": null, "topic": null,
            "major": {"type": "MAJOR_TYPE_ARTICLE", "article": {"title": title, "id": item.id % 1_000_000}},
        }),
    };
    let mut modules = json!({
        "module_author": {
            "mid": item.uid.parse::<u64>().unwrap_or(0), "name": format!("up{}", item.uid),
            "face": "https://i0.hdslb.com/bfs/face/face.jpg", "pub_ts": item.pub_ts,
            "pub_time": "刚刚", "pub_action": if matches!(item.post, Post::Video { .. }) { "投稿了视频" } else { "" },
            "type": "AUTHOR_TYPE_NORMAL",
        },
        "module_dynamic": module_dynamic,
        "module_stat": {"comment": {"count": 0}, "forward": {"count": 0}, "like": {"count": 0}},
    });
    if pinned {
        modules["module_tag"] = json!({"text": "置顶"});
    }
    let mut value = json!({
        "id_str": id, "type": kind, "visible": true,
        "basic": {"comment_id_str": id, "comment_type": 17, "rid_str": id},
        "modules": modules,
    });
    if let Some(orig) = orig {
        value["orig"] = item_json(orig, opus, false, None);
    }
    value
}

async fn feed(
    State(state): State<Arc<BiliState>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut seen = request(Endpoint::Dynamic, "feed", 0);
    seen.host_mid = param("host_mid");
    seen.offset = param("offset");
    if state.refuse(Endpoint::Dynamic, &headers) {
        seen.code = -412;
        state.record(seen);
        return (StatusCode::PRECONDITION_FAILED, Json(refused())).into_response();
    }
    let mixin = {
        let (img, sub) = &*lock(&state.keys);
        mixin_key(img, sub)
    };
    if !signature_ok(&params, &mixin) {
        seen.code = -352;
        state.record(seen);
        return Json(json!({"code": -352, "message": "风控校验失败", "ttl": 1,
            "data": {"v_voucher": format!("voucher_{}", uuid::Uuid::new_v4())}}))
        .into_response();
    }
    let uid = seen.host_mid.clone();
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
        seen.code = -400;
        state.record(seen);
        return Json(json!({"code": -400, "message": "请求错误", "ttl": 1})).into_response();
    }
    let offset: Option<u64> = seen.offset.parse().ok();
    state.record(seen);
    let opus = param("features").split(',').any(|f| f == "itemOpusStyle");
    let page_size = state.page_size.load(Ordering::SeqCst) as usize;
    let feeds = lock(&state.feeds);
    let all: Vec<Item> = feeds.get(&uid).cloned().unwrap_or_default();
    let pinned_id = lock(&state.pinned).get(&uid).copied();
    let by_id = |id: u64| all.iter().find(|i| i.id == id);
    let mut newest_first: Vec<&Item> = all
        .iter()
        .filter(|i| Some(i.id) != pinned_id)
        .filter(|i| offset.is_none_or(|o| i.id < o))
        .collect();
    newest_first.sort_by_key(|i| std::cmp::Reverse(i.id));
    let page: Vec<&Item> = newest_first.iter().take(page_size).copied().collect();
    let has_more = newest_first.len() > page.len();
    let mut items = Vec::new();
    if offset.is_none() {
        if let Some(pinned) = pinned_id.and_then(by_id) {
            items.push(item_json(pinned, opus, true, None));
        }
    }
    for item in &page {
        let orig = match item.post {
            Post::Repost { orig, .. } => by_id(orig),
            _ => None,
        };
        items.push(item_json(item, opus, false, orig));
    }
    let next_offset = page.last().map(|i| i.id.to_string()).unwrap_or_default();
    Json(json!({"code": 0, "message": "0", "ttl": 1, "data": {
        "has_more": has_more, "items": items, "offset": next_offset,
        "update_baseline": page.first().map(|i| i.id.to_string()).unwrap_or_default(),
        "update_num": 0,
    }}))
    .into_response()
}

impl BilibiliServer {
    /// Starts the double with fresh WBI keys.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(BiliState {
            rooms: Mutex::default(),
            feeds: Mutex::default(),
            pinned: Mutex::default(),
            keys: Mutex::new((random_key(), random_key())),
            risk: Mutex::default(),
            requests: Mutex::default(),
            page_size: AtomicU64::new(DEFAULT_PAGE_SIZE as u64),
            next_id: AtomicU64::new(980_000_000_000_000_000),
        });
        let router = Router::new()
            .route("/room/v1/Room/get_status_info_by_uids", post(status))
            .route("/x/web-interface/nav", get(nav))
            .route("/x/polymer/web-dynamic/v1/feed/space", get(feed))
            .with_state(state.clone());
        let served = serve(router).await?;
        Ok(Self {
            base: served.base_url(),
            state,
            _served: served,
        })
    }

    /// Creates `uid`'s room `room_id`, off air.
    pub fn add_room(&self, uid: u64, room_id: u64) {
        lock(&self.state.rooms).insert(
            uid,
            Room {
                room_id,
                uname: format!("up{uid}"),
                title: "a room".into(),
                status: 0,
                live_time: 0,
            },
        );
    }

    fn with_room(&self, uid: u64, change: impl FnOnce(&mut Room)) {
        if let Some(room) = lock(&self.state.rooms).get_mut(&uid) {
            change(room);
        }
    }

    /// Puts `uid`'s room live now with `title`; returns the `live_time`. A room already
    /// live keeps its start.
    pub fn set_live(&self, uid: u64, title: &str) -> i64 {
        let mut started = 0;
        self.with_room(uid, |room| {
            if room.status != 1 {
                room.live_time = Utc::now().timestamp();
            }
            room.status = 1;
            room.title = title.to_owned();
            started = room.live_time;
        });
        started
    }

    /// Puts `uid`'s room live with a given `live_time` (a restarted encoder gets a new one).
    pub fn set_live_at(&self, uid: u64, title: &str, live_time: i64) {
        self.with_room(uid, |room| {
            room.status = 1;
            room.live_time = live_time;
            room.title = title.to_owned();
        });
    }

    /// Takes `uid`'s room off air.
    pub fn set_off(&self, uid: u64) {
        self.with_room(uid, |room| room.status = 0);
    }

    /// Puts `uid`'s room in a rerun loop (status 2).
    pub fn set_rerun(&self, uid: u64) {
        self.with_room(uid, |room| room.status = 2);
    }

    /// Posts a dynamic on `uid`'s space now; returns its id.
    pub fn post(&self, uid: u64, post: Post) -> u64 {
        let id = self.state.next_id.fetch_add(1_000_003, Ordering::SeqCst);
        lock(&self.state.feeds)
            .entry(uid.to_string())
            .or_default()
            .push(Item {
                id,
                uid: uid.to_string(),
                pub_ts: Utc::now().timestamp(),
                post,
            });
        id
    }

    /// Pins dynamic `id` to the top of `uid`'s space.
    pub fn pin(&self, uid: u64, id: u64) {
        lock(&self.state.pinned).insert(uid.to_string(), id);
    }

    /// Items per feed page from now on.
    pub fn set_page_size(&self, size: usize) {
        self.state
            .page_size
            .store(size.max(1) as u64, Ordering::SeqCst);
    }

    /// Switches risk control of `endpoint`.
    pub fn set_risk(&self, endpoint: Endpoint, risk: Risk) {
        lock(&self.state.risk).insert(endpoint, risk);
    }

    /// New WBI keys: signatures made with the old ones are refused (-352).
    pub fn rotate_keys(&self) {
        *lock(&self.state.keys) = (random_key(), random_key());
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state.requests).clone()
    }

    /// The requests of `endpoint` so far.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<Request> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// Status calls so far.
    pub fn status_calls(&self) -> Vec<Request> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == "status")
            .cloned()
            .collect()
    }

    /// Feed calls for `uid` so far.
    pub fn feed_calls(&self, uid: u64) -> Vec<Request> {
        let uid = uid.to_string();
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == "feed" && r.host_mid == uid)
            .cloned()
            .collect()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_published_signature_example() {
        let mixin = mixin_key(
            "7cd084941338484aae1ad9425b84077c",
            "4932caff0ff746eab6f01bf08b70ac45",
        );
        assert_eq!(mixin, "ea1db124af3c7062474693fa704f4ff8");
        let params: Vec<(String, String)> = [
            ("foo", "114"),
            ("bar", "514"),
            ("zab", "1919810"),
            ("wts", "1702204169"),
            ("w_rid", "8f6f2b5b3d485fe1886cec6a0be8c5d4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(signature_ok(&params, &mixin));
        let mut tampered = params.clone();
        tampered[0].1 = "115".into();
        assert!(!signature_ok(&tampered, &mixin));
    }

    #[tokio::test]
    async fn status_answers_known_uids_and_records_the_batch() {
        let server = BilibiliServer::start().await.unwrap();
        server.add_room(11, 1011);
        server.set_live(11, "hi");
        let answer: Value = reqwest::Client::new()
            .post(format!(
                "{}/room/v1/Room/get_status_info_by_uids",
                server.base
            ))
            .header("user-agent", "Mozilla/5.0")
            .json(&json!({"uids": [11, 12]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["data"]["11"]["live_status"], 1);
        assert!(answer["data"].get("12").is_none());
        assert_eq!(server.status_calls()[0].uids, 2);
        server.set_risk(Endpoint::Live, Risk::Next(1));
        let refused: Value = reqwest::Client::new()
            .post(format!(
                "{}/room/v1/Room/get_status_info_by_uids",
                server.base
            ))
            .header("user-agent", "Mozilla/5.0")
            .json(&json!({"uids": [11]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(refused["code"], -412);
    }
}
