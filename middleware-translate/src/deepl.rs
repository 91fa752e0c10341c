//! One call to the DeepL API v2 `POST {base}/v2/translate`, with its failures classified
//! so the batcher can decide: retry (429, 5xx, network), stop calling (456, quota), or
//! give up (other 4xx).
//!
//! Request: `Authorization: DeepL-Auth-Key <key>`, JSON `{"text": [...], "target_lang":
//! "EN-US"}`. Response: `{"translations": [{"detected_source_language": "JA", "text":
//! "…"}]}`, one entry per input text, in order.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// Most texts DeepL accepts in one request.
pub(crate) const MAX_TEXTS_PER_CALL: usize = 50;

/// One translated text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Translation {
    /// Source language DeepL detected (`JA`, `EN`).
    pub detected_source_language: String,
    /// The translation.
    pub text: String,
}

#[derive(Debug, Serialize)]
struct TranslateRequest<'a> {
    text: &'a [String],
    target_lang: &'a str,
}

#[derive(Debug, Deserialize)]
struct TranslateResponse {
    translations: Vec<Translation>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// 429: too many requests; `retry_after` when the server said how long to wait.
    #[error("DeepL rate limit (429)")]
    RateLimited {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// 456: the character quota of the billing period is used up.
    #[error("DeepL quota exceeded (456)")]
    QuotaExceeded,
    /// 5xx: the service failed; worth retrying.
    #[error("DeepL server error ({status})")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Another status: the request itself is wrong (bad key, bad language); retrying
    /// will not help.
    #[error("DeepL rejected the request ({status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// DeepL's `message`, or the start of the body.
        message: String,
    },
    /// The request did not complete (connect, timeout, reset).
    #[error("DeepL unreachable: {0}")]
    Network(String),
    /// A 200 whose body is not the documented shape.
    #[error("DeepL answered an unexpected body: {0}")]
    BadResponse(String),
}

impl CallError {
    /// Whether another attempt may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::RateLimited { .. } | CallError::Server { .. } | CallError::Network(_)
        )
    }

    /// How long the server asked to wait before the next attempt.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::RateLimited { retry_after } | CallError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A DeepL API client.
#[derive(Debug, Clone)]
pub(crate) struct DeeplClient {
    http: reqwest::Client,
    url: String,
    authorization: String,
}

impl DeeplClient {
    /// A client for the API at `base_url` (`https://api-free.deepl.com` or
    /// `https://api.deepl.com`) authenticating with `key`; each request times out after
    /// `timeout`.
    pub(crate) fn new(
        base_url: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            http,
            url: format!("{}/v2/translate", base_url.trim_end_matches('/')),
            authorization: format!("DeepL-Auth-Key {key}"),
        })
    }

    /// Translates up to [`MAX_TEXTS_PER_CALL`] texts into `target_lang` (a DeepL code,
    /// e.g. `EN-US`); the answer has one entry per text, in order.
    pub(crate) async fn translate(
        &self,
        texts: &[String],
        target_lang: &str,
    ) -> Result<Vec<Translation>, CallError> {
        debug_assert!(texts.len() <= MAX_TEXTS_PER_CALL);
        let response = self
            .http
            .post(&self.url)
            .header(AUTHORIZATION, &self.authorization)
            .json(&TranslateRequest {
                text: texts,
                target_lang,
            })
            .send()
            .await
            .map_err(|err| CallError::Network(err.to_string()))?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers(), Utc::now());
        let body = response
            .bytes()
            .await
            .map_err(|err| CallError::Network(err.to_string()))?;
        match status {
            StatusCode::OK => {
                let parsed: TranslateResponse = serde_json::from_slice(&body)
                    .map_err(|err| CallError::BadResponse(err.to_string()))?;
                if parsed.translations.len() != texts.len() {
                    return Err(CallError::BadResponse(format!(
                        "{} translations for {} texts",
                        parsed.translations.len(),
                        texts.len()
                    )));
                }
                Ok(parsed.translations)
            }
            StatusCode::TOO_MANY_REQUESTS => Err(CallError::RateLimited { retry_after }),
            status if status.as_u16() == 456 => Err(CallError::QuotaExceeded),
            status if status.is_server_error() => Err(CallError::Server {
                status: status.as_u16(),
                retry_after,
            }),
            status => Err(CallError::Rejected {
                status: status.as_u16(),
                message: error_message(&body),
            }),
        }
    }
}

/// DeepL's `{"message": …}`, or the first 200 characters of the body.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            message: Some(message),
        }) => message,
        _ => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_in_seconds_or_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut headers = HeaderMap::new();
        assert_eq!(parse_retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(3))
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Thu, 01 Jan 2026 00:00:10 GMT"),
        );
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(10))
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers, now), None);
    }

    #[test]
    fn error_message_prefers_deepl_json() {
        assert_eq!(
            error_message(br#"{"message":"Wrong endpoint"}"#),
            "Wrong endpoint"
        );
        assert_eq!(error_message(b"plain"), "plain");
    }
}
