//! What a verified EventSub notification or revocation does.
//!
//! - `stream.online`: the stream's record is stored (namespace `twitch.live`), then
//!   `twitch.live` (or `twitch.rerun`, or nothing when non-live streams are dropped) is
//!   published once per stream id, whatever the message id.
//! - `stream.offline`: `twitch.ended` for the remembered stream, then the record is
//!   removed; an end whose start was never seen is skipped (counted).
//! - `channel.update`: the remembered title and category follow; no event.
//! - revocation: counted and logged; re-created after `revocation_backoff_seconds` unless
//!   the account is gone (`user_removed`) or the authorisation was withdrawn
//!   (`authorization_revoked`), which no retry can fix.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use stargazer_core::contract::source;
use stargazer_core::storage::StorageError;
use stargazer_core::wait::sleep_unless_cancelled;

use crate::config::NonLiveStreams;
use crate::events::{self, Broadcaster, ChannelUpdate, LiveRecord, Online, LIVE_NAMESPACE};
use crate::helix::SubscriptionInfo;
use crate::runner::Shared;

/// Why a notification could not be handled now (Twitch retries it on a 5xx).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandleError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("malformed event: {0}")]
    Malformed(String),
}

/// Statuses after which a subscription is not re-created.
const FINAL_REVOCATIONS: [&str; 2] = ["user_removed", "authorization_revoked"];

fn parse<T: serde::de::DeserializeOwned>(event: Value) -> Result<T, HandleError> {
    serde_json::from_value(event).map_err(|err| HandleError::Malformed(err.to_string()))
}

async fn record(shared: &Shared, broadcaster: &str) -> Result<Option<LiveRecord>, StorageError> {
    let Some(value) = shared.state.kv_get(LIVE_NAMESPACE, broadcaster).await? else {
        return Ok(None);
    };
    match serde_json::from_value(value) {
        Ok(record) => Ok(Some(record)),
        Err(err) => {
            tracing::warn!(broadcaster, cause = %err, "unreadable live record; ignored");
            Ok(None)
        }
    }
}

async fn store(
    shared: &Shared,
    broadcaster: &str,
    record: &LiveRecord,
) -> Result<(), StorageError> {
    let value =
        serde_json::to_value(record).map_err(|err| StorageError::Corrupt(err.to_string()))?;
    shared
        .state
        .kv_put(LIVE_NAMESPACE, broadcaster, &value)
        .await
}

/// Handles a notification of subscription type `kind`; returns the outcome label.
pub(crate) async fn notification(
    shared: Arc<Shared>,
    kind: &str,
    event: Value,
    sent_at: DateTime<Utc>,
) -> Result<&'static str, HandleError> {
    match kind {
        "stream.online" => online(&shared, parse(event)?).await,
        "stream.offline" => offline(&shared, parse(event)?, sent_at).await,
        "channel.update" => channel_update(&shared, parse(event)?).await,
        _ => Ok("unknown_type"),
    }
}

async fn online(shared: &Shared, online: Online) -> Result<&'static str, HandleError> {
    let broadcaster = online.broadcaster_user_id.clone();
    let Some(entity) = shared.entity_for(&broadcaster).await else {
        tracing::info!(
            broadcaster,
            "stream.online for a broadcaster no task watches; ignored"
        );
        return Ok("unknown_broadcaster");
    };
    if online.kind != "live" && shared.config.non_live_streams == NonLiveStreams::Drop {
        tracing::debug!(broadcaster, stream_type = %online.kind, "non-live stream dropped");
        return Ok("dropped_non_live");
    }
    let details = shared.lookup.details(&broadcaster).await;
    let (record, event) = events::started(entity, &online, &details, Utc::now());
    // Stored before publishing: an end must find its start even if the worker dies
    // right after the publish.
    store(shared, &broadcaster, &record).await?;
    let published = shared
        .publisher
        .publish_event(source::TWITCH, &event)
        .await?;
    Ok(if published { "published" } else { "duplicate" })
}

async fn offline(
    shared: &Shared,
    offline: Broadcaster,
    sent_at: DateTime<Utc>,
) -> Result<&'static str, HandleError> {
    let broadcaster = offline.broadcaster_user_id;
    let Some(record) = record(shared, &broadcaster).await? else {
        tracing::info!(
            broadcaster,
            "stream.offline without a stream seen starting; skipped"
        );
        return Ok("end_without_start");
    };
    let event = events::ended(&record, sent_at);
    let published = shared
        .publisher
        .publish_event(source::TWITCH, &event)
        .await?;
    shared.state.kv_delete(LIVE_NAMESPACE, &broadcaster).await?;
    Ok(if published { "published" } else { "duplicate" })
}

async fn channel_update(
    shared: &Shared,
    update: ChannelUpdate,
) -> Result<&'static str, HandleError> {
    let broadcaster = update.broadcaster_user_id;
    let Some(mut record) = record(shared, &broadcaster).await? else {
        return Ok("ignored");
    };
    record.title = update.title;
    record.category = update.category_name;
    store(shared, &broadcaster, &record).await?;
    Ok("updated")
}

/// Why the sweep stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SweepError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Helix(#[from] crate::helix::HelixError),
}

/// Ends the remembered streams of the `held` broadcasters that Helix no longer lists
/// live (or lists with another stream id) — a `stream.offline` Twitch gave up
/// delivering — as if the end had arrived `now`; returns how many it ended. A stream
/// that started less than `sweep_grace_seconds` ago is left alone (Helix lists new
/// streams with a delay). The ended event has the
/// same id as the notification's would, so one racing it is published once.
pub(crate) async fn sweep_ended(
    shared: &Shared,
    held: &std::collections::HashSet<String>,
    now: DateTime<Utc>,
) -> Result<usize, SweepError> {
    let grace = i64::try_from(shared.config.sweep_grace_seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .unwrap_or(chrono::Duration::MAX);
    let mut remembered: Vec<(String, LiveRecord)> = Vec::new();
    for (broadcaster, value) in shared.state.kv_list(LIVE_NAMESPACE).await? {
        if !held.contains(&broadcaster) {
            continue;
        }
        match serde_json::from_value::<LiveRecord>(value) {
            Ok(record) if now - record.started_at >= grace => {
                remembered.push((broadcaster, record))
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(broadcaster, cause = %err, "unreadable live record; ignored")
            }
        }
    }
    let mut ended = 0;
    for batch in remembered.chunks(crate::helix::MAX_IDS) {
        let ids: Vec<String> = batch.iter().map(|(b, _)| b.clone()).collect();
        let live: std::collections::HashMap<String, String> = shared
            .helix
            .streams(&ids)
            .await?
            .into_iter()
            .map(|stream| (stream.user_id, stream.id))
            .collect();
        for (broadcaster, record) in batch {
            if live.get(broadcaster) == Some(&record.stream_id) {
                continue;
            }
            let event = events::ended(record, now);
            shared
                .publisher
                .publish_event(source::TWITCH, &event)
                .await?;
            shared.state.kv_delete(LIVE_NAMESPACE, broadcaster).await?;
            shared
                .metrics
                .notification("stream.offline", "ended_by_sweep");
            tracing::info!(broadcaster, stream_id = %record.stream_id, "stream no longer live on Helix; ended without its stream.offline");
            ended += 1;
        }
    }
    Ok(ended)
}

/// Handles a revocation of `subscription`.
pub(crate) fn revocation(shared: &Arc<Shared>, subscription: SubscriptionInfo) {
    let status = subscription.status.as_str();
    let broadcaster = subscription.condition.broadcaster_user_id.clone();
    shared.metrics.revoked(match status {
        "user_removed"
        | "authorization_revoked"
        | "notification_failures_exceeded"
        | "version_removed"
        | "moderator_removed" => status,
        _ => "other",
    });
    if FINAL_REVOCATIONS.contains(&status) {
        tracing::warn!(broadcaster, kind = %subscription.kind, status, "Twitch revoked a subscription for good; not re-creating it");
        return;
    }
    tracing::warn!(broadcaster, kind = %subscription.kind, status, "Twitch revoked a subscription; re-creating it after a pause");
    let backoff = Duration::from_secs(shared.config.revocation_backoff_seconds);
    let shared_for_task = shared.clone();
    shared.background.spawn(async move {
        let shared = shared_for_task;
        if sleep_unless_cancelled(backoff, &shared.shutdown)
            .await
            .is_cancelled()
        {
            return;
        }
        if shared.holds(&broadcaster) {
            shared.request_ensure(broadcaster);
        }
    });
}
