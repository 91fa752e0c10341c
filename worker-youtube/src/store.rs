//! What the worker persists, on top of the storage's key/value and seen-window methods.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `youtube.lease.<task id>` | subscription id | [`Lease`]: callback, secret, expiry |
//! | `youtube.videos.<task id>` | video id | [`VideoRecord`] |
//! | `youtube.synced` | task id | when the channel's first sync happened |
//! | `youtube.tracked` | task id | when the channel began to be tracked (before its first sync) |
//! | `youtube.contact` | task id | the last accepted push or successful feed poll |
//! | `youtube.outbox` | `<event id>:<routing key>` | a message whose publish failed |
//! | seen window `youtube.seen` | `<entity>/<claim>` | published message groups |
//!
//! Leases are keyed per subscription inside a per-task namespace because during a
//! reassignment two workers briefly hold leases for the same task, each with its own
//! callback; each worker only touches its own.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stargazer_core::source::Namespaces;
use stargazer_core::storage::{StateStore, StorageError};
use uuid::Uuid;

use crate::classify::VideoRecord;

/// Seen-window namespace of published groups.
pub const SEEN_NAMESPACE: &str = "youtube.seen";
/// Namespace of failed publishes awaiting a retry.
pub const OUTBOX_NAMESPACE: &str = "youtube.outbox";
/// The seen window and outbox of the shared publisher.
pub const PUBLISHING: Namespaces = Namespaces {
    seen: SEEN_NAMESPACE,
    outbox: OUTBOX_NAMESPACE,
};
/// Namespace of first-sync markers.
pub const SYNCED_NAMESPACE: &str = "youtube.synced";
/// Namespace of when each task began to be tracked.
pub const TRACKED_NAMESPACE: &str = "youtube.tracked";
/// Namespace of each task's last successful contact (an accepted push, a feed poll).
pub const CONTACT_NAMESPACE: &str = "youtube.contact";

/// A point in time, as the `tracked` and `contact` records hold it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Marker {
    at: DateTime<Utc>,
}

async fn marker(
    storage: &dyn StateStore,
    namespace: &str,
    task: Uuid,
) -> Result<Option<DateTime<Utc>>, StorageError> {
    let Some(value) = storage.kv_get(namespace, &task.to_string()).await? else {
        return Ok(None);
    };
    match serde_json::from_value::<Marker>(value) {
        Ok(marker) => Ok(Some(marker.at)),
        Err(err) => {
            tracing::warn!(%task, namespace, cause = %err, "ignoring an unreadable time record");
            Ok(None)
        }
    }
}

async fn put_marker(
    storage: &dyn StateStore,
    namespace: &str,
    task: Uuid,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    let value =
        serde_json::to_value(Marker { at }).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    storage.kv_put(namespace, &task.to_string(), &value).await
}

/// When the task began to be tracked: recorded as `now` at its first start, the same
/// afterwards. Uploads published before it are the channel's history; after it, news, even
/// when the first feed poll only succeeds later.
pub async fn tracked_since(
    storage: &dyn StateStore,
    task: Uuid,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, StorageError> {
    if let Some(since) = marker(storage, TRACKED_NAMESPACE, task).await? {
        return Ok(since);
    }
    put_marker(storage, TRACKED_NAMESPACE, task, now).await?;
    Ok(now)
}

/// The task's last successful contact, if any was recorded.
pub async fn last_contact(
    storage: &dyn StateStore,
    task: Uuid,
) -> Result<Option<DateTime<Utc>>, StorageError> {
    marker(storage, CONTACT_NAMESPACE, task).await
}

/// Records a successful contact (an accepted push, a feed poll) at `at`.
pub async fn record_contact(
    storage: &dyn StateStore,
    task: Uuid,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    put_marker(storage, CONTACT_NAMESPACE, task, at).await
}

/// The lease namespace of a task.
pub fn lease_namespace(task: Uuid) -> String {
    format!("youtube.lease.{task}")
}

/// The video-record namespace of a task.
pub fn videos_namespace(task: Uuid) -> String {
    format!("youtube.videos.{task}")
}

/// One WebSub subscription as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Subscription id (last path segment of the callback).
    pub subscription: Uuid,
    /// The channel.
    pub channel_id: String,
    /// `hub.topic`.
    pub topic: String,
    /// `hub.callback`.
    pub callback: String,
    /// `hub.secret`, hex.
    pub secret: String,
    /// When the hub's lease ends; `None` until verified, and again once unsubscribing.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The lease length the hub granted, seconds.
    #[serde(default)]
    pub granted_seconds: Option<u64>,
}

/// Shortest lease accepted from a hub, seconds: a shorter one (0 included) would make the
/// worker renew in a tight loop.
pub const MIN_LEASE_SECONDS: u64 = 2;

/// Longest lease accepted from a hub, seconds (10 days): a longer one would mean the
/// subscription is never renewed, though hubs drop subscriptions on their own schedule.
pub const MAX_LEASE_SECONDS: u64 = 10 * 86_400;

/// `seconds` within [`MIN_LEASE_SECONDS`, `MAX_LEASE_SECONDS`].
pub fn clamp_lease_seconds(seconds: u64) -> u64 {
    seconds.clamp(MIN_LEASE_SECONDS, MAX_LEASE_SECONDS)
}

/// Reads a hub's `hub.lease_seconds`: any integer, clamped (a negative one to the minimum,
/// one too large for any integer type to the maximum); `None` when it is not an integer.
pub fn parse_lease_seconds(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(MIN_LEASE_SECONDS);
    }
    Some(clamp_lease_seconds(
        digits.parse::<u64>().unwrap_or(u64::MAX),
    ))
}

/// A lease length (or a part of one) as a time span, capped at [`MAX_LEASE_SECONDS`] so
/// it can neither overflow nor panic.
pub fn lease_span(seconds: u64) -> chrono::Duration {
    let seconds = i64::try_from(seconds.min(MAX_LEASE_SECONDS)).unwrap_or(i64::MAX);
    chrono::Duration::try_seconds(seconds).unwrap_or(chrono::Duration::MAX)
}

/// Loads every lease of a task.
pub async fn leases(storage: &dyn StateStore, task: Uuid) -> Result<Vec<Lease>, StorageError> {
    let mut out = Vec::new();
    for (key, value) in storage.kv_list(&lease_namespace(task)).await? {
        match serde_json::from_value::<Lease>(value) {
            Ok(lease) => out.push(lease),
            Err(err) => {
                tracing::warn!(%task, key, cause = %err, "dropping unreadable lease record");
                storage.kv_delete(&lease_namespace(task), &key).await?;
            }
        }
    }
    Ok(out)
}

/// Stores a lease.
pub async fn put_lease(
    storage: &dyn StateStore,
    task: Uuid,
    lease: &Lease,
) -> Result<(), StorageError> {
    let value = serde_json::to_value(lease).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    storage
        .kv_put(
            &lease_namespace(task),
            &lease.subscription.to_string(),
            &value,
        )
        .await
}

/// Deletes a lease.
pub async fn delete_lease(
    storage: &dyn StateStore,
    task: Uuid,
    subscription: Uuid,
) -> Result<(), StorageError> {
    storage
        .kv_delete(&lease_namespace(task), &subscription.to_string())
        .await
        .map(|_| ())
}

/// Loads a video record; an unreadable one counts as absent (and is logged).
pub async fn video(
    storage: &dyn StateStore,
    task: Uuid,
    video_id: &str,
) -> Result<Option<VideoRecord>, StorageError> {
    let Some(value) = storage.kv_get(&videos_namespace(task), video_id).await? else {
        return Ok(None);
    };
    match serde_json::from_value(value) {
        Ok(record) => Ok(Some(record)),
        Err(err) => {
            tracing::warn!(%task, video_id, cause = %err, "ignoring unreadable video record");
            Ok(None)
        }
    }
}

/// Stores a video record.
pub async fn put_video(
    storage: &dyn StateStore,
    task: Uuid,
    video_id: &str,
    record: &VideoRecord,
) -> Result<(), StorageError> {
    let value = serde_json::to_value(record).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    storage
        .kv_put(&videos_namespace(task), video_id, &value)
        .await
}

/// Deletes records of a task older than `before`, except pending scheduled streams.
pub async fn prune_videos(
    storage: &dyn StateStore,
    task: Uuid,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, StorageError> {
    let namespace = videos_namespace(task);
    let mut pruned = 0;
    for (key, value) in storage.kv_list(&namespace).await? {
        let keep = match serde_json::from_value::<VideoRecord>(value) {
            Ok(record) => {
                record.touched_at >= before
                    || record.scheduled_start.is_some_and(|start| start > now)
            }
            Err(_) => false,
        };
        if !keep && storage.kv_delete(&namespace, &key).await? {
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Keeps the shared schedule (`stargazer_core::schedule`) in step with a video's new
/// record: a stream that became upcoming, moved or went live is recorded; one that is no
/// longer upcoming or live is forgotten. Re-pushes of the same state write nothing.
pub(crate) async fn update_schedule(
    storage: &dyn StateStore,
    task: &crate::batcher::TaskRef,
    video_id: &str,
    prev: Option<&VideoRecord>,
    record: &VideoRecord,
    video: Option<&crate::data_api::Video>,
) -> Result<(), StorageError> {
    use crate::classify::VideoState;
    use stargazer_core::contract::{format, source};
    use stargazer_core::schedule::{self, ScheduledStream, StreamState};

    let state = match record.state {
        VideoState::Upcoming => StreamState::Upcoming,
        VideoState::Live => StreamState::Live,
        _ => {
            if prev.is_some_and(|p| matches!(p.state, VideoState::Upcoming | VideoState::Live)) {
                schedule::forget(storage, source::YOUTUBE, video_id).await?;
            }
            return Ok(());
        }
    };
    let unchanged = prev
        .is_some_and(|p| p.state == record.state && p.scheduled_start == record.scheduled_start);
    let live = video.and_then(|v| v.live.as_ref());
    let Some(scheduled_start) = record
        .scheduled_start
        .or_else(|| live.and_then(|l| l.actual_start_time))
    else {
        return Ok(());
    };
    if unchanged {
        return Ok(());
    }
    let title = video
        .and_then(|v| v.snippet.as_ref())
        .map(|s| s.title.clone())
        .unwrap_or_default();
    let stream = ScheduledStream {
        source: source::YOUTUBE.to_owned(),
        id: video_id.to_owned(),
        entity: task.entity,
        task: task.task_id,
        title,
        link: format!("https://www.youtube.com/watch?v={video_id}"),
        scheduled_start,
        actual_start: live.and_then(|l| l.actual_start_time),
        state,
        format: record
            .format
            .clone()
            .unwrap_or_else(|| format::STREAM.to_owned()),
        members_only: crate::classify::members_only(video),
        updated_at: Utc::now(),
    };
    schedule::record(storage, &stream).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_leases_are_clamped() {
        assert_eq!(parse_lease_seconds("0"), Some(MIN_LEASE_SECONDS));
        assert_eq!(parse_lease_seconds("-5"), Some(MIN_LEASE_SECONDS));
        assert_eq!(parse_lease_seconds("86400"), Some(86_400));
        assert_eq!(
            parse_lease_seconds("99999999999999999999999999"),
            Some(MAX_LEASE_SECONDS)
        );
        assert_eq!(
            parse_lease_seconds(&u64::MAX.to_string()),
            Some(MAX_LEASE_SECONDS)
        );
        assert_eq!(parse_lease_seconds("ten"), None);
        assert_eq!(parse_lease_seconds("-"), None);
        assert_eq!(lease_span(u64::MAX), chrono::Duration::days(10));
    }
}
