//! Discord's HTTP interactions endpoint (`POST /interactions`): Discord POSTs every slash
//! command, autocomplete request and button press here instead of over the gateway.
//!
//! Discord signs each request: `X-Signature-Ed25519` is the hex signature, by the
//! application's key, of the `X-Signature-Timestamp` bytes followed by the body bytes.
//! [`Verified`] checks it against the configured public key before anything reads the
//! body; a missing or bad signature, or a timestamp more than [`MAX_SKEW`] away from now
//! (a replayed request), answers 401, which is also what Discord's own endpoint check
//! expects for a tampered request. Bodies are bounded ([`MAX_BODY_BYTES`]).
//!
//! Answers: PING (type 1) → PONG `{"type": 1}`. Commands are not implemented yet, and the
//! endpoint says so rather than pretend: a command (2), a button press (3) or a modal
//! (5) gets an ephemeral message (type 4, flags 64) saying commands are not available
//! yet; an autocomplete request (4) gets an empty list of choices (type 8), the only
//! answer Discord accepts for it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use twilight_model::application::interaction::InteractionType;
use twilight_model::channel::message::MessageFlags;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};

/// Largest interaction body accepted. Interactions are small; the largest, a button press,
/// carries the whole message it belongs to (at most 2,000 characters of content and
/// 6,000 of embeds, plus ids and components).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How far the signed timestamp may be from now; older requests are refused as replays.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// What the interactions endpoint needs: the key interactions must be signed with.
#[derive(Clone)]
pub struct InteractionsState {
    key: Arc<VerifyingKey>,
}

impl InteractionsState {
    /// State verifying against the application's public key.
    pub fn new(key: VerifyingKey) -> Self {
        Self { key: Arc::new(key) }
    }
}

/// The endpoint's router: `POST /interactions`.
pub fn router(state: InteractionsState) -> Router {
    Router::new()
        .route("/interactions", post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Why a request to the endpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum InteractionError {
    /// No `X-Signature-Ed25519` or `X-Signature-Timestamp` header.
    #[error("missing signature headers")]
    MissingSignature,
    /// The signature is malformed or does not verify.
    #[error("invalid request signature")]
    BadSignature,
    /// The signed timestamp is unreadable or too far from now.
    #[error("stale or invalid signature timestamp")]
    Stale,
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body too large")]
    TooLarge,
    /// The signed body is not an interaction.
    #[error("not an interaction: {0}")]
    BadBody(String),
}

impl InteractionError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingSignature | Self::BadSignature | Self::Stale => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for InteractionError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        tracing::debug!(cause = %self, status = status.as_u16(), "interaction refused");
        (status, self.to_string()).into_response()
    }
}

/// A request body whose Discord signature verified; the extractor refuses everything else.
#[derive(Debug)]
pub struct Verified(pub Bytes);

impl FromRequest<InteractionsState> for Verified {
    type Rejection = InteractionError;

    async fn from_request(
        request: Request,
        state: &InteractionsState,
    ) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let (Some(signature), Some(timestamp)) = (
            header(headers, "x-signature-ed25519"),
            header(headers, "x-signature-timestamp"),
        ) else {
            return Err(InteractionError::MissingSignature);
        };
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    InteractionError::TooLarge
                } else {
                    InteractionError::BadBody(rejection.body_text())
                }
            })?;
        verify(&state.key, &signature, &timestamp, &body, SystemTime::now())?;
        Ok(Verified(body))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Checks a request's signature and timestamp as of `now`.
pub fn verify(
    key: &VerifyingKey,
    signature_hex: &str,
    timestamp: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<(), InteractionError> {
    let mut signature = [0u8; 64];
    hex::decode_to_slice(signature_hex.trim(), &mut signature)
        .map_err(|_| InteractionError::BadSignature)?;
    let signature = Signature::from_bytes(&signature);
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &signature)
        .map_err(|_| InteractionError::BadSignature)?;
    // The timestamp is part of what was signed: it is only read once the signature holds.
    let signed_at = timestamp
        .trim()
        .parse::<u64>()
        .map_err(|_| InteractionError::Stale)?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| InteractionError::Stale)?
        .as_secs();
    if now.abs_diff(signed_at) > MAX_SKEW.as_secs() {
        return Err(InteractionError::Stale);
    }
    Ok(())
}

/// The part of an interaction this endpoint reads so far.
#[derive(Debug, Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: u8,
}

/// The text answered to every command until commands exist.
pub const NOT_AVAILABLE: &str =
    "Stargazer's commands are not available on Discord yet. Please check back later.";

async fn handle(Verified(body): Verified) -> Result<Json<InteractionResponse>, InteractionError> {
    let incoming: Incoming =
        serde_json::from_slice(&body).map_err(|err| InteractionError::BadBody(err.to_string()))?;
    let kind = InteractionType::try_from(incoming.kind)
        .map_err(|_| InteractionError::BadBody(format!("unknown type {}", incoming.kind)))?;
    tracing::debug!(?kind, "interaction");
    let response = match kind {
        InteractionType::Ping => InteractionResponse {
            kind: InteractionResponseType::Pong,
            data: None,
        },
        InteractionType::ApplicationCommandAutocomplete => InteractionResponse {
            kind: InteractionResponseType::ApplicationCommandAutocompleteResult,
            data: Some(InteractionResponseData {
                choices: Some(Vec::new()),
                ..InteractionResponseData::default()
            }),
        },
        _ => InteractionResponse {
            kind: InteractionResponseType::ChannelMessageWithSource,
            data: Some(InteractionResponseData {
                content: Some(NOT_AVAILABLE.to_owned()),
                flags: Some(MessageFlags::EPHEMERAL),
                ..InteractionResponseData::default()
            }),
        },
    };
    Ok(Json(response))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn signed(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        hex::encode(key.sign(&message).to_bytes())
    }

    #[test]
    fn verification_covers_signature_and_clock() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let body = br#"{"type":1}"#;
        let signature = signed(&key, "1800000000", body);
        assert!(verify(&public, &signature, "1800000000", body, now).is_ok());
        assert!(matches!(
            verify(&public, &signature, "1800000000", b"{}", now),
            Err(InteractionError::BadSignature)
        ));
        assert!(matches!(
            verify(&public, "zz", "1800000000", body, now),
            Err(InteractionError::BadSignature)
        ));
        let old = signed(&key, "1799999699", body);
        assert!(matches!(
            verify(&public, &old, "1799999699", body, now),
            Err(InteractionError::Stale)
        ));
        let edge = signed(&key, "1799999700", body);
        assert!(verify(&public, &edge, "1799999700", body, now).is_ok());
    }
}
