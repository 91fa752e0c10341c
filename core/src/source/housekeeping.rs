//! The periodic chores of a source's publishing: forget old claims, retry the outbox.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Publisher;
use crate::outbox::FLUSH_MIN_AGE;
use crate::wait::sleep_until_unless_cancelled;

/// How often [`housekeeping`] purges the seen window unless a source says otherwise:
/// purging costs a delete over the namespace, and a claim lives for days, so rarely.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

/// How often [`housekeeping`] flushes the outbox unless a source says otherwise: every
/// [`FLUSH_MIN_AGE`], the age from which an entry counts as left behind. A worker killed
/// between a group's first confirm and its last leaves the rest in the outbox (a stream's
/// reminder after its "scheduled" went out, say); the instances still running send it
/// within a minute of the crash instead of at their next purge. An empty outbox costs one
/// listing per round.
pub const OUTBOX_FLUSH_INTERVAL: Duration = FLUSH_MIN_AGE;

/// What [`housekeeping`] keeps and how often it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Housekeeping {
    /// How long a claim stays in the seen window; older ones are purged.
    pub seen_window: chrono::Duration,
    /// Time between the starts of two purges of the seen window.
    pub every: Duration,
    /// Time between the starts of two outbox flushes.
    pub flush_every: Duration,
}

impl Housekeeping {
    /// Claims kept for `seen_window`, purged every [`HOUSEKEEPING_INTERVAL`]; the outbox
    /// flushed every [`OUTBOX_FLUSH_INTERVAL`].
    pub fn new(seen_window: chrono::Duration) -> Self {
        Self {
            seen_window,
            every: HOUSEKEEPING_INTERVAL,
            flush_every: OUTBOX_FLUSH_INTERVAL,
        }
    }
}

/// Until `shutdown`: purges the claims of `publisher`'s seen window older than the window
/// every `schedule.every`, and flushes its outbox every `schedule.flush_every`.
///
/// The first round of both runs at once, so what a crash or a broker outage left in the
/// outbox goes out when the worker starts rather than one interval later. Rounds are paced
/// from their starts, so a slow flush does not push the next one back. Failures are logged
/// and left to the next round: both chores are idempotent.
pub async fn housekeeping(
    publisher: Publisher,
    schedule: Housekeeping,
    shutdown: CancellationToken,
) {
    let mut next_purge = Instant::now();
    let mut next_flush = Instant::now();
    loop {
        if sleep_until_unless_cancelled(next_purge.min(next_flush), &shutdown)
            .await
            .is_cancelled()
        {
            return;
        }
        if next_purge <= Instant::now() {
            match publisher
                .purge_seen(Utc::now() - schedule.seen_window)
                .await
            {
                Ok(purged) if purged > 0 => tracing::debug!(purged, "seen window purged"),
                Ok(_) => {}
                Err(err) => tracing::warn!(cause = %err, "seen window purge failed"),
            }
            // A round that overran its interval is not made up for with a burst of rounds.
            next_purge = (next_purge + schedule.every).max(Instant::now());
        }
        if next_flush <= Instant::now() {
            match publisher.flush_outbox().await {
                Ok(sent) if sent > 0 => tracing::info!(sent, "outbox flushed"),
                Ok(_) => {}
                Err(err) => tracing::warn!(cause = %err, "outbox flush failed"),
            }
            next_flush = (next_flush + schedule.flush_every).max(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use prometheus::Registry;

    use crate::bus::memory::MemoryBus;
    use crate::source::{Namespaces, PublishMetrics};
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::Storage;

    const NAMESPACES: Namespaces = Namespaces {
        seen: "test.seen",
        outbox: "test.outbox",
    };

    #[tokio::test]
    async fn purges_old_claims_at_once_and_stops_on_shutdown() {
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().await.unwrap());
        let old = Utc::now() - chrono::Duration::days(40);
        storage
            .mark_seen(NAMESPACES.seen, "e/old", old)
            .await
            .unwrap();
        storage
            .mark_seen(NAMESPACES.seen, "e/fresh", Utc::now())
            .await
            .unwrap();
        let publisher = Publisher::new(
            storage.clone(),
            Arc::new(MemoryBus::new()),
            NAMESPACES,
            PublishMetrics::register(&Registry::new(), "stargazer_test"),
        );
        let shutdown = CancellationToken::new();
        // An interval far longer than the test: only the first round can purge.
        let schedule = Housekeeping {
            every: Duration::from_secs(3600),
            ..Housekeeping::new(chrono::Duration::days(30))
        };
        let task = tokio::spawn(housekeeping(publisher, schedule, shutdown.clone()));
        // Recording a claim succeeds only once it is no longer held, i.e. purged.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !storage
            .mark_seen(NAMESPACES.seen, "e/old", old)
            .await
            .unwrap()
        {
            assert!(Instant::now() < deadline, "the first round did not purge");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !storage
                .mark_seen(NAMESPACES.seen, "e/fresh", Utc::now())
                .await
                .unwrap(),
            "a claim inside the window is kept"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("housekeeping ends on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn the_outbox_is_flushed_between_purges() {
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().await.unwrap());
        let bus = MemoryBus::new();
        crate::bus::Bus::declare(&bus, &crate::bus::QueueSpec::new("q", "#", 10))
            .await
            .unwrap();
        let publisher = Publisher::new(
            storage.clone(),
            Arc::new(bus.clone()),
            NAMESPACES,
            PublishMetrics::register(&Registry::new(), "stargazer_test"),
        );
        let shutdown = CancellationToken::new();
        // Purges far apart, flushes 50 ms apart.
        let schedule = Housekeeping {
            every: Duration::from_secs(3600),
            flush_every: Duration::from_millis(50),
            ..Housekeeping::new(chrono::Duration::days(30))
        };
        let task = tokio::spawn(housekeeping(publisher, schedule, shutdown.clone()));
        // What a worker killed between a group's confirms leaves, after the first round:
        // an entry stashed longer ago than the flush's minimum age.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let event = crate::model::Event {
            id: uuid::Uuid::new_v4(),
            kind: "youtube.reminder".into(),
            entity: uuid::Uuid::new_v4(),
            time: Utc::now(),
            fields: Default::default(),
            control: Default::default(),
        };
        let left = serde_json::json!({
            "message": { "routing_key": "youtube", "event": event },
            "stashed_at_ms": 0,
        });
        storage
            .kv_put(NAMESPACES.outbox, &format!("{}:youtube", event.id), &left)
            .await
            .unwrap();
        // Sent, then removed from the outbox.
        let deadline = Instant::now() + Duration::from_secs(10);
        while bus.queue_len("q") == 0
            || !storage.kv_list(NAMESPACES.outbox).await.unwrap().is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "a later flush round sent what was left in the outbox"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(bus.queue_len("q"), 1);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("housekeeping ends on shutdown")
            .unwrap();
    }
}
