//! The callback server Twitch posts to: `POST /twitch/eventsub` (bodies up to
//! `max_body_bytes`), with `/healthz`, `/readyz` and `/metrics` beside it.
//!
//! Every message must carry a valid signature (403 otherwise) and a timestamp within ten
//! minutes of now (403 otherwise); a message id handled within that window is answered
//! 204 without being handled again. Then, by `Twitch-Eventsub-Message-Type`:
//! `webhook_callback_verification` → 200 with the challenge as `text/plain`;
//! `notification` → handled, and answered 204 only once its event is in the outbox (a
//! failure answers 500 so Twitch retries); `revocation` → 204 (see `notify.rs`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::helix::{SubscriptionInfo, SUBSCRIPTION_TYPES};
use crate::notify;
use crate::runner::Shared;
use crate::signature;

/// The path Twitch posts to; `twitch.callback_url` must lead here.
pub const CALLBACK_PATH: &str = "/twitch/eventsub";
/// Longest message id accepted (Twitch's are UUIDs).
const MAX_MESSAGE_ID: usize = 128;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body_bytes;
    let registry = shared.metrics.registry().clone();
    let readiness = shared.readiness.clone();
    Router::new()
        .route(CALLBACK_PATH, post(eventsub))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
        .merge(stargazer_core::telemetry::health_and_metrics_router(
            registry,
        ))
        .merge(readiness.router())
}

#[derive(Deserialize)]
struct Verification {
    challenge: String,
}

#[derive(Deserialize)]
struct Notification {
    subscription: SubscriptionInfo,
    event: Value,
}

#[derive(Deserialize)]
struct Revocation {
    subscription: SubscriptionInfo,
}

/// A subscription type as a metric label: one of ours, else `other`.
fn type_label(kind: Option<&str>) -> &'static str {
    SUBSCRIPTION_TYPES
        .iter()
        .map(|(k, _)| *k)
        .find(|k| Some(*k) == kind)
        .unwrap_or("other")
}

async fn eventsub(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(message_id), Some(timestamp), Some(message_type)) = (
        header("twitch-eventsub-message-id"),
        header("twitch-eventsub-message-timestamp"),
        header("twitch-eventsub-message-type"),
    ) else {
        shared.metrics.rejected("missing_headers");
        return (StatusCode::BAD_REQUEST, "missing Twitch-Eventsub headers").into_response();
    };
    if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID {
        shared.metrics.rejected("missing_headers");
        return (StatusCode::BAD_REQUEST, "bad message id").into_response();
    }
    let sent_at = match signature::verify(
        shared.config.eventsub_secret.as_bytes(),
        message_id,
        timestamp,
        &body,
        header("twitch-eventsub-message-signature"),
        Utc::now(),
    ) {
        Ok(at) => at,
        Err(err) => {
            shared.metrics.rejected(err.label());
            tracing::warn!(message_id, cause = %err, "EventSub message refused");
            return StatusCode::FORBIDDEN.into_response();
        }
    };
    let kind = type_label(header("twitch-eventsub-subscription-type"));
    if shared.replay.contains(message_id) {
        shared.metrics.notification(kind, "duplicate");
        tracing::debug!(message_id, "message delivered again; already handled");
        return StatusCode::NO_CONTENT.into_response();
    }
    match message_type {
        "webhook_callback_verification" => {
            let Ok(verification) = serde_json::from_slice::<Verification>(&body) else {
                shared.metrics.notification(kind, "malformed");
                return (StatusCode::BAD_REQUEST, "no challenge").into_response();
            };
            shared.replay.record(message_id);
            shared.metrics.notification(kind, "verified");
            tracing::debug!(message_id, kind, "verification challenge answered");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                verification.challenge,
            )
                .into_response()
        }
        "notification" => {
            let Ok(notification) = serde_json::from_slice::<Notification>(&body) else {
                shared.metrics.notification(kind, "malformed");
                return (StatusCode::BAD_REQUEST, "malformed notification").into_response();
            };
            let kind = type_label(Some(&notification.subscription.kind));
            // In its own task: if Twitch hangs up, dropping this handler must not stop a
            // publish halfway (after its seen-window claim).
            let handling = tokio::spawn(notify::notification(
                shared.clone(),
                kind,
                notification.event,
                sent_at,
            ));
            match handling.await {
                Ok(Ok(outcome)) => {
                    shared.replay.record(message_id);
                    shared.metrics.notification(kind, outcome);
                    StatusCode::NO_CONTENT.into_response()
                }
                Ok(Err(notify::HandleError::Malformed(detail))) => {
                    // Retrying the same bytes cannot help.
                    shared.replay.record(message_id);
                    shared.metrics.notification(kind, "malformed");
                    tracing::warn!(message_id, kind, detail, "malformed notification; dropped");
                    StatusCode::NO_CONTENT.into_response()
                }
                Ok(Err(err)) => {
                    shared.metrics.notification(kind, "failed");
                    tracing::error!(message_id, kind, cause = %err, "notification not handled; Twitch will retry");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
                Err(err) => {
                    shared.metrics.notification(kind, "failed");
                    tracing::error!(message_id, kind, cause = %err, "notification handling panicked");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
        "revocation" => {
            let Ok(revocation) = serde_json::from_slice::<Revocation>(&body) else {
                shared.metrics.notification(kind, "malformed");
                return (StatusCode::BAD_REQUEST, "malformed revocation").into_response();
            };
            shared.replay.record(message_id);
            shared.metrics.notification(kind, "revoked");
            notify::revocation(&shared, revocation.subscription);
            StatusCode::NO_CONTENT.into_response()
        }
        other => {
            shared.metrics.notification(kind, "malformed");
            tracing::warn!(
                message_id,
                message_type = other,
                "unknown EventSub message type"
            );
            (StatusCode::BAD_REQUEST, "unknown message type").into_response()
        }
    }
}
