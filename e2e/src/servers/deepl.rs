//! DeepL API v2: `POST /v2/translate`.
//!
//! Accepts a JSON body (`{"text": [...], "target_lang": "EN-US"}`) or an urlencoded form
//! with repeated `text` fields, authenticated by `Authorization: DeepL-Auth-Key <key>`
//! (403 otherwise). Enforces the 50-texts limit and DeepL's target codes (plain `EN` and
//! `PT` are refused). Answers `{"translations": [{"detected_source_language", "text"}]}`
//! in input order, at once. Texts come back from a phrase book the test fills, or marked
//! with the target code; a text already in the target language comes back unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{lock, serve, Served};

/// Most texts DeepL accepts per request.
pub const MAX_TEXTS: usize = 50;

#[derive(Default)]
struct DeeplState {
    key: String,
    /// `(text, target code)` → translation.
    phrase_book: Mutex<HashMap<(String, String), String>>,
    calls: AtomicU64,
    texts: AtomicU64,
    refused: AtomicU64,
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
    if texts.is_empty() {
        return message(StatusCode::BAD_REQUEST, "Parameter 'text' not specified.");
    }
    if texts.len() > MAX_TEXTS {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large: at most 50 texts per request",
        );
    }
    let Some(target) = target.map(|t| t.to_ascii_uppercase()) else {
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
    state.calls.fetch_add(1, Ordering::SeqCst);
    state.texts.fetch_add(texts.len() as u64, Ordering::SeqCst);
    let book = lock(&state.phrase_book);
    let translations: Vec<Value> = texts
        .iter()
        .map(|text| {
            let source = detect(text);
            let primary = target.split('-').next().unwrap_or(&target);
            let translated = match book.get(&(text.clone(), target.clone())) {
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
    pub async fn start(key: &str) -> crate::Result<Self> {
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
}
