//! Response envelopes, the JSON body extractor and small HTTP helpers.
//!
//! [`RpcBody`] reads the body within the configured limit (413 beyond it), treats an empty
//! body as `{}` and maps parse failures through axum's `JsonRejection` (400 for broken
//! JSON, 422 naming the field for a wrong shape). [`Data`] wraps a result in
//! `{"success": true, "time", "data"}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::state::AppState;
use crate::types::ErrorBody;

/// Current unix time in seconds.
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Now, truncated to milliseconds: the precision every backend stores, so what a write
/// returns equals what a later read returns.
pub(crate) fn stored_now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// A successful RPC result, sent as `{"success": true, "time", "data"}`.
pub(crate) struct Data<T>(pub T);

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<T> {
            success: bool,
            time: i64,
            data: T,
        }
        match serde_json::to_vec(&Body {
            success: true,
            time: unix_now(),
            data: self.0,
        }) {
            Ok(bytes) => json_response(StatusCode::OK, bytes),
            Err(err) => Error::Internal(format!("serializing a response: {err}")).into_response(),
        }
    }
}

/// A successful result whose `data` is already serialized JSON (from the read cache).
/// The cached bytes are sent as they are, between a small head and tail, without being
/// copied into a new buffer (a subscriber list can be megabytes).
pub(crate) struct RawData(pub Bytes);

impl IntoResponse for RawData {
    fn into_response(self) -> Response {
        let head = Bytes::from(format!(
            "{{\"success\":true,\"time\":{},\"data\":",
            unix_now()
        ));
        let body = Chunks::new([head, self.0, Bytes::from_static(b"}")]);
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            axum::body::Body::new(body),
        )
            .into_response()
    }
}

/// A body made of a few shared buffers, with an exact length (so it is sent with
/// `Content-Length`, not chunked).
struct Chunks {
    parts: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: std::collections::VecDeque<Bytes> =
            parts.into_iter().filter(|b| !b.is_empty()).collect();
        let remaining = parts.iter().map(|b| b.len() as u64).sum();
        Self { parts, remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.parts.pop_front();
        if let Some(part) = &next {
            self.remaining -= part.len() as u64;
        }
        std::task::Poll::Ready(next.map(|part| Ok(http_body::Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The JSON of an error envelope.
pub(crate) fn envelope_error(error: ErrorBody) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "success": false,
        "time": unix_now(),
        "error": error,
    }))
}

/// A JSON object request body; an empty body reads as `{}`, any other non-object
/// (whitespace alone included: it is not JSON) is refused ([`Error::check_object`]).
pub(crate) struct RpcBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for RpcBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            Error::from_bytes_rejection(rejection, state.config.body_limit_bytes)
        })?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        Error::check_object(bytes)?;
        Json::<T>::from_bytes(bytes)
            .map(|Json(value)| RpcBody(value))
            .map_err(Error::from_json_rejection)
    }
}

/// The `scheme://host[:port]` origin of an http(s) URL, as browsers send it in `Origin`.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://sg.example/app?x").as_deref(),
            Some("https://sg.example")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:3000").as_deref(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(origin_of("ftp://x"), None);
        assert_eq!(origin_of("https://"), None);
    }
}
