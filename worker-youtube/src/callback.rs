//! The callback server the hub talks to: `GET /websub/{id}` answers verification requests,
//! `POST /websub/{id}` receives notifications; `/healthz`, `/readyz` and `/metrics` sit
//! beside them.
//!
//! Verification: the challenge is echoed (200) only when this worker asked for exactly
//! that (subscription id, topic, mode); anything else gets 404 so nobody can subscribe or
//! unsubscribe the worker on its behalf.
//!
//! Notifications: the body must carry a valid `X-Hub-Signature` for the subscription's
//! secret. Forged, unsigned or unparsable posts are ignored (logged and counted) but still
//! answered 202, as the WebSub spec allows: an error status would only make the hub retry
//! the same bytes, and a different answer for bad signatures would help someone probing
//! for the secret.
//!
//! A post for a subscription this worker does not hold (yet) is answered `503` with
//! `Retry-After`, never acknowledged: right after a restart, or while the coordinator
//! hands the channel back, the lease is in storage but not loaded, and a `202` would make
//! the hub forget a notification nobody handled. The hub redelivers with backoff and the
//! retry lands once the worker holds the subscription again (a `410` would make the hub
//! drop a subscription the worker is about to reuse). A subscription the worker is
//! leaving (unsubscribing) is answered 202: the channel's new holder has its own.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use uuid::Uuid;

use crate::atom::{parse_feed, Feed};
use crate::batcher::Origin;
use crate::runner::{Phase, Shared, SubEntry};
use crate::signature;

/// `Retry-After` for a notification of a subscription this worker does not hold yet,
/// seconds: about how long a restarted worker takes to get its channels back.
pub(crate) const UNKNOWN_SUBSCRIPTION_RETRY_AFTER_SECS: u64 = 5;

/// The routes of the callback server.
pub(crate) fn router(shared: std::sync::Arc<Shared>) -> Router {
    let limit = shared.config.max_body_bytes;
    let registry = shared.metrics.registry().clone();
    let readiness = shared.readiness.clone();
    Router::new()
        .route("/websub/{id}", get(verify).post(notify))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
        .merge(stargazer_core::telemetry::health_and_metrics_router(
            registry,
        ))
        .merge(readiness.router())
}

async fn verify(
    State(shared): State<std::sync::Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mode = query.get("hub.mode").map(String::as_str).unwrap_or("");
    let topic = query.get("hub.topic").map(String::as_str).unwrap_or("");
    let challenge = query.get("hub.challenge").map(String::as_str);
    let Ok(subscription) = Uuid::parse_str(&id) else {
        shared.metrics.verification(mode_label(mode), "refused");
        return StatusCode::NOT_FOUND.into_response();
    };
    if mode == "denied" {
        // The hub refused the subscription; the job re-subscribes after its verify timeout.
        let reason = query.get("hub.reason").map(String::as_str).unwrap_or("");
        tracing::warn!(%subscription, topic, reason, "hub denied the subscription");
        shared.metrics.verification("denied", "confirmed");
        return StatusCode::OK.into_response();
    }
    let Some(challenge) = challenge else {
        shared.metrics.verification(mode_label(mode), "refused");
        return (StatusCode::BAD_REQUEST, "missing hub.challenge").into_response();
    };
    // A hub's lease is clamped: 0, negative or absurdly large values must neither panic
    // nor leave the subscription unrenewed for ever.
    let lease_seconds = query
        .get("hub.lease_seconds")
        .and_then(|s| crate::store::parse_lease_seconds(s));
    match shared
        .confirm_verification(subscription, mode, topic, lease_seconds)
        .await
    {
        Ok(true) => {
            shared.metrics.verification(mode_label(mode), "confirmed");
            tracing::debug!(%subscription, mode, topic, "verification confirmed");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                challenge.to_owned(),
            )
                .into_response()
        }
        Ok(false) => {
            shared.metrics.verification(mode_label(mode), "refused");
            tracing::info!(%subscription, mode, topic, "refused verification for an unwanted subscription");
            StatusCode::NOT_FOUND.into_response()
        }
        Err(err) => {
            // Without the lease stored a restart would forget the subscription; let the hub
            // retry instead.
            tracing::error!(%subscription, cause = %err, "could not store the verified lease");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

fn mode_label(mode: &str) -> &'static str {
    match mode {
        "subscribe" => "subscribe",
        "unsubscribe" => "unsubscribe",
        _ => "other",
    }
}

async fn notify(
    State(shared): State<std::sync::Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let accepted = StatusCode::ACCEPTED.into_response();
    let Some(entry) = Uuid::parse_str(&id)
        .ok()
        .and_then(|subscription| shared.subscription(subscription))
    else {
        shared.metrics.notification("unknown_subscription");
        tracing::info!(subscription = %id, "notification for a subscription this worker does not hold (yet); asking the hub to retry");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                UNKNOWN_SUBSCRIPTION_RETRY_AFTER_SECS.to_string(),
            )],
        )
            .into_response();
    };
    if entry.phase == Phase::Unsubscribing {
        shared.metrics.notification("unsubscribing");
        tracing::info!(subscription = %id, task_id = %entry.task.task_id, "notification for a subscription being left; ignored");
        return accepted;
    }
    let signature = headers
        .get("x-hub-signature")
        .and_then(|value| value.to_str().ok());
    if let Err(err) = signature::verify(signature, &entry.secret, &body) {
        let label = match err {
            signature::SignatureError::Missing => "unsigned",
            _ => "forged",
        };
        shared.metrics.notification(label);
        tracing::warn!(subscription = %id, task_id = %entry.task.task_id, cause = %err, "notification rejected; ignored");
        return accepted;
    }
    let feed = match parse_feed(&body) {
        Ok(feed) => feed,
        Err(err) => {
            shared.metrics.notification("malformed");
            tracing::warn!(subscription = %id, task_id = %entry.task.task_id, cause = %err, "unparsable notification; ignored");
            return accepted;
        }
    };
    shared.metrics.notification("accepted");
    // Processed in its own task: if the hub hangs up, dropping this handler must not stop
    // a publish halfway (after its seen-window claim).
    let processing = tokio::spawn(process(shared.clone(), entry, feed));
    if let Err(err) = processing.await {
        tracing::error!(cause = %err, "notification processing failed");
    }
    accepted
}

async fn process(shared: std::sync::Arc<Shared>, entry: SubEntry, feed: Feed) {
    let now = Utc::now();
    if let Err(err) =
        crate::store::record_contact(shared.storage.as_ref(), entry.task.task_id, now).await
    {
        tracing::warn!(task_id = %entry.task.task_id, cause = %err, "could not record the push as the last contact");
    }
    for item in feed.entries {
        if item.channel_id != entry.task.channel_id {
            shared.metrics.notification("foreign_entry");
            tracing::warn!(task_id = %entry.task.task_id, channel = %item.channel_id, "entry for another channel in a notification; ignored");
            continue;
        }
        if let Err(err) = shared.submit(&entry.task, item, Origin::Push).await {
            tracing::error!(task_id = %entry.task.task_id, cause = %err, "could not queue a notified video");
        }
    }
    for tombstone in feed.deleted {
        if tombstone
            .channel_id
            .as_deref()
            .is_some_and(|channel| channel != entry.task.channel_id)
        {
            shared.metrics.notification("foreign_entry");
            continue;
        }
        if let Err(err) = shared
            .tombstone(&entry.task, &tombstone.video_id, now)
            .await
        {
            tracing::error!(task_id = %entry.task.task_id, video_id = %tombstone.video_id, cause = %err, "could not process a tombstone");
        }
    }
}
