//! DeepL API v2: `POST /v2/translate`.
//!
//! Accepts a JSON body (`{"text": [...], "target_lang": "EN-US"}`) or an urlencoded form
//! with repeated `text` fields, authenticated by `Authorization: DeepL-Auth-Key <key>`
//! (403 otherwise). Enforces the 50-texts limit and DeepL's target codes (plain `EN` and
//! `PT` are refused). Answers `{"translations": [{"detected_source_language", "text"}]}`
//! in input order, at once. Texts come back from a phrase book the test fills, or marked
//! with the target code (`[EN-US] …`); a text already in the target language comes back
//! unchanged. Japanese is detected by kana or kanji, anything else is English.
//!
//! Every authenticated request is recorded with its answer ([`Deepl::requests`]), and the
//! test can make the next requests, or all of them, fail as DeepL does when overloaded
//! or out of quota ([`Deepl::fail_next`], [`Deepl::fail_always`]).
//!
//! A benchmark can give every authenticated request a round trip ([`Deepl::set_latency`],
//! 0 by default): the answer waits that long, each request on its own, so concurrent
//! requests overlap as they do at DeepL and the bound measured is the caller's own call
//! concurrency, not the double's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{lock, serve, Served};

/// Most texts DeepL accepts per request.
pub const MAX_TEXTS: usize = 50;

/// A failure DeepL answers a valid request with instead of translating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 Too Many Requests, with a `Retry-After` of so many seconds when given.
    TooManyRequests {
        /// The `Retry-After` header, seconds.
        retry_after: Option<u64>,
    },
    /// 456 Quota Exceeded: the character limit of the billing period is reached.
    QuotaExceeded,
    /// 503 Service Unavailable.
    Unavailable,
}

impl Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::TooManyRequests { retry_after } => {
                let mut response = message(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                response
            }
            Failure::QuotaExceeded => message(
                StatusCode::from_u16(456).unwrap_or(StatusCode::FORBIDDEN),
                "Quota exceeded",
            ),
            Failure::Unavailable => message(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable"),
        }
    }
}

/// One authenticated `/v2/translate` request as the server saw it.
#[derive(Debug, Clone)]
pub struct TranslateRequest {
    /// The texts, in order.
    pub texts: Vec<String>,
    /// The target code as sent (upper-cased), empty when missing.
    pub target: String,
    /// When it arrived.
    pub at: Instant,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Faults {
    next: VecDeque<Failure>,
    always: Option<Failure>,
}

#[derive(Default)]
struct DeeplState {
    key: String,
    /// `(text, target code)` → translation.
    phrase_book: Mutex<HashMap<(String, String), String>>,
    faults: Mutex<Faults>,
    requests: Mutex<Vec<TranslateRequest>>,
    calls: AtomicU64,
    texts: AtomicU64,
    refused: AtomicU64,
    /// Wait before each authenticated answer, microseconds.
    latency_us: AtomicU64,
}

/// A running DeepL double; stops when dropped.
pub struct Deepl {
    /// Base URL for `translate.deepl_base_url`.
    pub base: String,
    /// The key it accepts.
    pub key: String,
    state: Arc<DeeplState>,
    _served: Served,
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text}))).into_response()
}

/// The language DeepL would detect: Japanese for kana or kanji, else English.
fn detect(text: &str) -> &'static str {
    let japanese = text
        .chars()
        .any(|c| matches!(c as u32, 0x3040..=0x30ff | 0x4e00..=0x9fff | 0xff66..=0xff9f));
    if japanese {
        "JA"
    } else {
        "EN"
    }
}

/// The texts and target language of a request; `Err` with DeepL's message for a body it
/// would refuse with 400.
fn request_fields(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<String>, Option<String>), &'static str> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let parsed: Value =
            serde_json::from_slice(body).map_err(|_| "Invalid request: expected a JSON object")?;
        let texts = match parsed.get("text") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("Value for 'text' not supported.")?,
            Some(_) => return Err("Value for 'text' not supported."),
            None => Vec::new(),
        };
        let target = parsed
            .get("target_lang")
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Ok((texts, target));
    }
    let url = reqwest::Url::parse(&format!(
        "http://form.invalid/?{}",
        String::from_utf8_lossy(body)
    ))
    .map_err(|_| "Invalid request")?;
    let mut texts = Vec::new();
    let mut target = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "text" => texts.push(value.into_owned()),
            "target_lang" => target = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok((texts, target))
}

async fn translate(
    State(state): State<Arc<DeeplState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DeepL-Auth-Key "))
        .is_some_and(|key| key == state.key);
    if !authorized {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return message(
            StatusCode::FORBIDDEN,
            "Authorization failure, check auth_key",
        );
    }
    let (texts, target) = match request_fields(&headers, &body) {
        Ok(fields) => fields,
        Err(why) => return message(StatusCode::BAD_REQUEST, why),
    };
    let target = target.map(|t| t.to_ascii_uppercase());
    let latency = state.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        // Each request sleeps on its own task: no cap on requests in flight, as at DeepL.
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    let response = answer(&state, &texts, target.as_deref());
    lock(&state.requests).push(TranslateRequest {
        texts,
        target: target.unwrap_or_default(),
        at: Instant::now(),
        status: response.status().as_u16(),
    });
    response
}

/// The answer to an authenticated request with these texts and target.
fn answer(state: &DeeplState, texts: &[String], target: Option<&str>) -> Response {
    if texts.is_empty() {
        return message(StatusCode::BAD_REQUEST, "Parameter 'text' not specified.");
    }
    if texts.len() > MAX_TEXTS {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large: at most 50 texts per request",
        );
    }
    let Some(target) = target else {
        return message(
            StatusCode::BAD_REQUEST,
            "Value for 'target_lang' not supported.",
        );
    };
    if target == "EN" || target == "PT" {
        return message(
            StatusCode::BAD_REQUEST,
            &format!("Value for 'target_lang' not supported: targeting {target} is deprecated, use a regional variant"),
        );
    }
    let failure = {
        let mut faults = lock(&state.faults);
        faults.next.pop_front().or(faults.always)
    };
    if let Some(failure) = failure {
        return failure.into_response();
    }
    state.calls.fetch_add(1, Ordering::SeqCst);
    state.texts.fetch_add(texts.len() as u64, Ordering::SeqCst);
    let book = lock(&state.phrase_book);
    let primary = target.split('-').next().unwrap_or(target);
    let translations: Vec<Value> = texts
        .iter()
        .map(|text| {
            let source = detect(text);
            let translated = match book.get(&(text.clone(), target.to_owned())) {
                Some(known) => known.clone(),
                None if source == primary => text.clone(),
                None => format!("[{target}] {text}"),
            };
            json!({"detected_source_language": source, "text": translated})
        })
        .collect();
    Json(json!({"translations": translations})).into_response()
}

impl Deepl {
    /// Starts the double accepting `key`.
    pub async fn start(key: &str) -> std::io::Result<Self> {
        let state = Arc::new(DeeplState {
            key: key.to_owned(),
            ..DeeplState::default()
        });
        let router = Router::new()
            .route("/v2/translate", post(translate))
            .with_state(state.clone());
        let served = serve(router).await?;
        Ok(Self {
            base: served.base_url(),
            key: key.to_owned(),
            state,
            _served: served,
        })
    }

    /// Teaches it that `text` in `target` (a DeepL code such as `EN-US`) is `translation`.
    pub fn learn(&self, text: &str, target: &str, translation: &str) {
        lock(&self.state.phrase_book).insert(
            (text.to_owned(), target.to_ascii_uppercase()),
            translation.to_owned(),
        );
    }

    /// Answers the next valid requests with these failures, one each, in order.
    pub fn fail_next(&self, failures: &[Failure]) {
        lock(&self.state.faults)
            .next
            .extend(failures.iter().copied());
    }

    /// Answers every valid request with `failure` from now on (`None`: translate again),
    /// once the failures given to [`Deepl::fail_next`] are used up.
    pub fn fail_always(&self, failure: Option<Failure>) {
        lock(&self.state.faults).always = failure;
    }

    /// Makes every authenticated request wait `latency` before it is answered (a DeepL
    /// round trip); requests wait side by side, never in turn. Zero (the default) answers
    /// at once.
    pub fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_us.store(micros, Ordering::Relaxed);
    }

    /// Successful `/v2/translate` calls so far.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Texts translated so far.
    pub fn texts(&self) -> u64 {
        self.state.texts.load(Ordering::SeqCst)
    }

    /// Requests refused for a wrong or missing key.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every authenticated request so far, with what it was answered.
    pub fn requests(&self) -> Vec<TranslateRequest> {
        lock(&self.state.requests).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(deepl: &Deepl, key: &str, body: Value) -> (u16, Option<String>, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v2/translate", deepl.base))
            .header("authorization", format!("DeepL-Auth-Key {key}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, response.json().await.unwrap())
    }

    #[tokio::test]
    async fn translates_in_order_and_fails_as_scripted() {
        let deepl = Deepl::start("k:fx").await.unwrap();
        deepl.learn("おはよう", "en-us", "Good morning");
        deepl.fail_next(&[Failure::TooManyRequests {
            retry_after: Some(2),
        }]);
        let body = json!({"text": ["おはよう", "配信", "Hello"], "target_lang": "EN-US"});
        let (status, retry_after, _) = call(&deepl, "k:fx", body.clone()).await;
        assert_eq!((status, retry_after.as_deref()), (429, Some("2")));
        let (status, _, answer) = call(&deepl, "k:fx", body.clone()).await;
        assert_eq!(status, 200);
        let texts: Vec<&str> = answer["translations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, vec!["Good morning", "[EN-US] 配信", "Hello"]);
        deepl.fail_always(Some(Failure::QuotaExceeded));
        assert_eq!(call(&deepl, "k:fx", body.clone()).await.0, 456);
        assert_eq!(call(&deepl, "wrong", body).await.0, 403);
        let statuses: Vec<u16> = deepl.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![429, 200, 456]);
        assert_eq!((deepl.calls(), deepl.texts(), deepl.refused()), (1, 3, 1));
    }

    #[tokio::test]
    async fn latency_holds_each_answer_back_without_queueing_requests() {
        let deepl = Deepl::start("k:fx").await.unwrap();
        let latency = Duration::from_millis(300);
        deepl.set_latency(latency);
        let body = json!({"text": ["配信"], "target_lang": "EN-US"});
        let started = Instant::now();
        // Four requests at once: each is answered after the latency, and all of them are
        // answered (none refused or dropped for being concurrent).
        let answers =
            futures::future::join_all((0..4).map(|_| call(&deepl, "k:fx", body.clone()))).await;
        assert!(started.elapsed() >= latency);
        assert!(answers.iter().all(|(status, _, _)| *status == 200));
        assert_eq!(deepl.calls(), 4);
    }
}
