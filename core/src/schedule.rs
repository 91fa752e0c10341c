//! The schedule: streams announced but not over yet, across every source, kept in the
//! state store under one namespace so that the api can answer "what is coming" (the iCal
//! feed, the web page's Upcoming view) without reading any worker's private records.
//!
//! A source worker is the only writer: it records a stream when it is scheduled, moved or
//! goes live, and forgets it when it ends or is cancelled. Readers tolerate a record they
//! cannot parse (skipped) and one a worker never cleaned up (past [`STALE_AFTER`] it is
//! not listed).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::storage::{Result, StateStore};

/// The state-store namespace of the schedule.
pub const NAMESPACE: &str = "schedule";

/// How long after its scheduled start a stream that never reported an end stays listed
/// (a live stream's record is rewritten when it goes live, which restarts this clock).
pub const STALE_AFTER: Duration = Duration::hours(12);

/// Where a scheduled stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Scheduled, not started.
    Upcoming,
    /// Live now.
    Live,
}

/// One stream of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledStream {
    /// Source word (`contract::source`).
    pub source: String,
    /// The stream's id at its source (a YouTube video id).
    pub id: String,
    /// The entity streaming.
    pub entity: Uuid,
    /// The task that recorded it (the worker holding that task keeps the record current).
    pub task: Uuid,
    /// Title.
    pub title: String,
    /// Where to watch.
    pub link: String,
    /// Scheduled start.
    pub scheduled_start: DateTime<Utc>,
    /// Actual start, once live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_start: Option<DateTime<Utc>>,
    /// Upcoming or live.
    pub state: StreamState,
    /// `contract::format` of the video (`stream`, `premiere`).
    pub format: String,
    /// Whether only channel members can watch.
    #[serde(default)]
    pub members_only: bool,
    /// When the record was written.
    pub updated_at: DateTime<Utc>,
}

impl ScheduledStream {
    fn key(source: &str, id: &str) -> String {
        format!("{source}:{id}")
    }

    /// The time after which the record is no longer listed: [`STALE_AFTER`] past the
    /// actual start when live, else past the scheduled start.
    pub fn stale_at(&self) -> DateTime<Utc> {
        self.actual_start.unwrap_or(self.scheduled_start) + STALE_AFTER
    }
}

/// Records (or replaces) a stream of the schedule.
pub async fn record(store: &dyn StateStore, stream: &ScheduledStream) -> Result<()> {
    let value = serde_json::to_value(stream)
        .map_err(|err| crate::storage::StorageError::Corrupt(err.to_string()))?;
    store
        .kv_put(
            NAMESPACE,
            &ScheduledStream::key(&stream.source, &stream.id),
            &value,
        )
        .await
}

/// Forgets a stream (ended, cancelled, deleted); `false` when it was not recorded.
pub async fn forget(store: &dyn StateStore, source: &str, id: &str) -> Result<bool> {
    store
        .kv_delete(NAMESPACE, &ScheduledStream::key(source, id))
        .await
}

/// Every stream of the schedule that is not stale at `now`, by scheduled start. Records
/// that do not parse are skipped with a warning.
pub async fn list(store: &dyn StateStore, now: DateTime<Utc>) -> Result<Vec<ScheduledStream>> {
    let mut streams: Vec<ScheduledStream> = store
        .kv_list(NAMESPACE)
        .await?
        .into_iter()
        .filter_map(
            |(key, value)| match serde_json::from_value::<ScheduledStream>(value) {
                Ok(stream) => Some(stream),
                Err(err) => {
                    tracing::warn!(%key, cause = %err, "unreadable schedule record skipped");
                    None
                }
            },
        )
        .filter(|stream| stream.stale_at() > now)
        .collect();
    streams.sort_by(|a, b| {
        a.scheduled_start
            .cmp(&b.scheduled_start)
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(streams)
}

/// Removes the records that went stale before `now` (a worker that missed a stream's
/// end); returns how many.
pub async fn purge_stale(store: &dyn StateStore, now: DateTime<Utc>) -> Result<u64> {
    let mut purged = 0;
    for (key, value) in store.kv_list(NAMESPACE).await? {
        let stale = serde_json::from_value::<ScheduledStream>(value)
            .map(|stream| stream.stale_at() <= now)
            .unwrap_or(true);
        if stale && store.kv_delete(NAMESPACE, &key).await? {
            purged += 1;
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::connect;

    fn stream(id: &str, start: DateTime<Utc>, state: StreamState) -> ScheduledStream {
        ScheduledStream {
            source: "youtube".into(),
            id: id.into(),
            entity: Uuid::from_u128(1),
            task: Uuid::from_u128(2),
            title: format!("title {id}"),
            link: format!("https://www.youtube.com/watch?v={id}"),
            scheduled_start: start,
            actual_start: (state == StreamState::Live).then_some(start),
            state,
            format: "stream".into(),
            members_only: false,
            updated_at: start,
        }
    }

    #[tokio::test]
    async fn lists_by_start_skips_stale_and_unreadable_and_forgets() {
        let storage = connect("sqlite::memory:").await.unwrap();
        let store: &dyn StateStore = storage.as_ref();
        let now = Utc::now();
        record(
            store,
            &stream("b", now + Duration::hours(2), StreamState::Upcoming),
        )
        .await
        .unwrap();
        record(
            store,
            &stream("a", now - Duration::hours(1), StreamState::Live),
        )
        .await
        .unwrap();
        record(
            store,
            &stream("old", now - Duration::hours(13), StreamState::Upcoming),
        )
        .await
        .unwrap();
        store
            .kv_put(
                NAMESPACE,
                "youtube:bad",
                &serde_json::json!({"no": "shape"}),
            )
            .await
            .unwrap();
        let ids: Vec<String> = list(store, now)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(forget(store, "youtube", "b").await.unwrap());
        assert!(!forget(store, "youtube", "b").await.unwrap());
        assert_eq!(purge_stale(store, now).await.unwrap(), 2);
        let ids: Vec<String> = list(store, now)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["a"]);
    }
}
