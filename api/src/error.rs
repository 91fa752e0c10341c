//! The crate's one error type and its single mapping onto HTTP responses.
//!
//! Every handler returns [`Error`]; [`Error::status_code`] and [`Error::code`] are the only
//! places a failure becomes a status and a wire code. Storage and internal failures are
//! logged with their detail and answered with generic text: driver messages never reach
//! clients.

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use stargazer_core::storage::StorageError;

use crate::types::{ErrorBody, ErrorCode};

/// Seconds a client is asked to wait after a 503 (storage unavailable or too slow).
const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 5;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the api service, its admin commands and its startup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON or the request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing, malformed or wrong credentials, or an unknown or expired session (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// A record does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// `/v1/{method}` names no method (404 listing the methods).
    #[error("unknown method `{0}`")]
    UnknownMethod(String),
    /// A method was called with something other than POST (405).
    #[error("methods are called with POST")]
    MethodNotAllowed,
    /// A record already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The body exceeds the limit (413).
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// A field is missing or invalid (422); the message names the field.
    #[error("{0}")]
    InvalidInput(String),
    /// Every password check is busy and none came free within `pbkdf2_wait_ms` (429):
    /// logins are arriving faster than they can be verified.
    #[error("too many logins are being checked; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds to wait before trying again.
        retry_after_secs: u64,
    },
    /// A storage failure; mapped by kind (409, 404, 503 or 500).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An unexpected failure (500); logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// A configuration value is invalid; the message names the key.
    #[error("{0}")]
    Config(String),
    /// Binding, serving or writing output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A 422 naming `field`.
    pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Error::InvalidInput(format!("field `{field}`: {reason}"))
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::UnknownMethod(_) => ErrorCode::UnknownMethod,
            Error::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Error::InvalidInput(_) => ErrorCode::InvalidInput,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::Storage(StorageError::Conflict(_)) => ErrorCode::Conflict,
            Error::Storage(StorageError::NotFound(_)) => ErrorCode::NotFound,
            Error::Storage(StorageError::Backend(_)) => ErrorCode::Unavailable,
            Error::Storage(_) | Error::Internal(_) | Error::Config(_) | Error::Io(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// The HTTP status sent for this error.
    pub fn status_code(&self) -> StatusCode {
        match self.code() {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound | ErrorCode::UnknownMethod => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message sent to the client: the detail for client errors, generic text for
    /// server-side failures (whose detail goes to the log).
    fn public_message(&self) -> String {
        match self {
            Error::Storage(StorageError::Conflict(what)) => format!("already exists: {what}"),
            Error::Storage(StorageError::NotFound(what)) => format!("not found: {what}"),
            Error::Storage(StorageError::Backend(_)) => {
                "the database is unavailable; retry later".to_owned()
            }
            // Names the stored record (collection, id, field): no driver text, no data.
            Error::Storage(StorageError::Corrupt(what)) => {
                format!("a stored record is malformed: {what}")
            }
            Error::Storage(_) | Error::Internal(_) | Error::Config(_) | Error::Io(_) => {
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// Maps a body-reading failure: over the limit is 413, anything else 400.
    pub(crate) fn from_bytes_rejection(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge(limit)
        } else {
            Error::BadRequest(rejection.body_text())
        }
    }

    /// Every request body is a JSON object. Anything else is refused before it reaches
    /// serde, which would read a struct from an array: broken or truncated JSON is 400,
    /// well-formed JSON that is not an object is 422 saying what it is.
    pub(crate) fn check_object(body: &[u8]) -> Result<()> {
        if is_object(body) {
            return Ok(());
        }
        Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Error::InvalidInput(format!(
                    "the body must be a JSON object, not {}",
                    json_kind(body)
                )),
                Err(err) => Error::BadRequest(format!("malformed JSON: {err}")),
            },
        )
    }

    /// Maps axum's JSON rejection: a syntax error (truncated or broken JSON) is 400, a
    /// shape error (missing field, wrong type, unknown field) is 422 with serde's path to
    /// the field.
    pub(crate) fn from_json_rejection(rejection: JsonRejection) -> Self {
        const PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";
        const SYNTAX_PREFIX: &str = "Failed to parse the request body as JSON: ";
        match rejection {
            JsonRejection::JsonDataError(err) => {
                let text = err.body_text();
                let detail = text.strip_prefix(PREFIX).unwrap_or(&text);
                Error::InvalidInput(describe_data_error(detail))
            }
            JsonRejection::JsonSyntaxError(err) => {
                let text = err.body_text();
                Error::BadRequest(format!(
                    "malformed JSON: {}",
                    text.strip_prefix(SYNTAX_PREFIX).unwrap_or(&text)
                ))
            }
            other => Error::BadRequest(other.body_text()),
        }
    }
}

/// Whether `body` starts as a JSON object does.
fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// What kind of JSON value well-formed `body` is, for messages.
fn json_kind(body: &[u8]) -> &'static str {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

/// serde_path_to_error renders `path: message`; name the field first so the message
/// reads `field `a.b`: …`. Root-level errors (missing or unknown fields) already name it.
fn describe_data_error(detail: &str) -> String {
    match detail.split_once(": ") {
        Some((path, message)) if !path.contains(' ') && path != "." => {
            format!("field `{path}`: {message}")
        }
        _ => detail.to_owned(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match &self {
            Error::Storage(StorageError::Backend(detail)) => {
                tracing::warn!(cause = %detail, "storage unavailable")
            }
            Error::Storage(
                err @ (StorageError::Corrupt(_)
                | StorageError::InvalidUrl(_)
                | StorageError::Inconsistent(_)),
            ) => {
                tracing::error!(cause = %err, "storage failure")
            }
            Error::Internal(_) | Error::Config(_) | Error::Io(_) => {
                tracing::error!(cause = %self, "internal error")
            }
            _ => {}
        }
        let methods = match &self {
            Error::UnknownMethod(_) => {
                Some(crate::rpc::METHODS.iter().map(|m| m.to_string()).collect())
            }
            _ => None,
        };
        let body = ErrorBody {
            code: self.code(),
            message: self.public_message(),
            methods,
        };
        let mut response = (status, crate::http::envelope_error(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Error::Unauthorized(_) => {
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="stargazer", charset="UTF-8""#),
                );
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="stargazer""#),
                );
            }
            Error::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Error::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_UNAVAILABLE_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_codes() {
        assert_eq!(
            Error::Storage(StorageError::Backend("down".into())).status_code(),
            503
        );
        assert_eq!(
            Error::Storage(StorageError::Conflict("x".into())).status_code(),
            409
        );
        assert_eq!(
            Error::RateLimited {
                retry_after_secs: 3
            }
            .status_code(),
            429
        );
        assert_eq!(Error::UnknownMethod("x".into()).status_code(), 404);
    }

    #[test]
    fn backend_detail_is_not_sent() {
        let err = Error::Storage(StorageError::Backend("secret host 10.0.0.1".into()));
        assert!(!err.public_message().contains("10.0.0.1"));
    }

    #[test]
    fn non_objects_are_named() {
        assert!(is_object(b" \n{}"));
        assert!(!is_object(b"[]"));
        assert!(matches!(
            Error::check_object(b"[]"),
            Err(Error::InvalidInput(m)) if m.ends_with("not an array")
        ));
        assert!(matches!(
            Error::check_object(b"[1,"),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            Error::check_object(b"nul"),
            Err(Error::BadRequest(_))
        ));
        assert_eq!(json_kind(b" [1]"), "an array");
        assert_eq!(json_kind(b"\"x\""), "a string");
        assert_eq!(json_kind(b"null"), "null");
        assert_eq!(json_kind(b"-1.5"), "a number");
    }

    #[test]
    fn data_errors_name_the_field() {
        assert_eq!(
            describe_data_error("user: UUID parsing failed at line 1 column 10"),
            "field `user`: UUID parsing failed at line 1 column 10"
        );
        assert_eq!(
            describe_data_error("missing field `user` at line 1"),
            "missing field `user` at line 1"
        );
    }
}
