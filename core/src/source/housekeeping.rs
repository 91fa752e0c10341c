//! The periodic chores of a source's publishing: forget old claims, retry the outbox.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Publisher;
use crate::wait::sleep_until_unless_cancelled;

/// How often [`housekeeping`] runs unless a source says otherwise: often enough that an
/// outbox left by a broker outage drains within minutes, rarely enough that purging and
/// listing the outbox cost nothing noticeable.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

/// What [`housekeeping`] keeps and how often it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Housekeeping {
    /// How long a claim stays in the seen window; older ones are purged.
    pub seen_window: chrono::Duration,
    /// Time between the starts of two rounds.
    pub every: Duration,
}

impl Housekeeping {
    /// Claims kept for `seen_window`, a round every [`HOUSEKEEPING_INTERVAL`].
    pub fn new(seen_window: chrono::Duration) -> Self {
        Self {
            seen_window,
            every: HOUSEKEEPING_INTERVAL,
        }
    }
}

/// Until `shutdown`: purges the claims of `publisher`'s seen window older than the window,
/// then flushes its outbox, every `schedule.every`.
///
/// The first round runs at once, so what a crash or a broker outage left in the outbox
/// goes out when the worker starts rather than one interval later. Rounds are paced from
/// their starts, so a slow flush does not push the next one back. Failures are logged and
/// left to the next round: both chores are idempotent.
pub async fn housekeeping(
    publisher: Publisher,
    schedule: Housekeeping,
    shutdown: CancellationToken,
) {
    let mut next = Instant::now();
    loop {
        if sleep_until_unless_cancelled(next, &shutdown)
            .await
            .is_cancelled()
        {
            return;
        }
        match publisher
            .purge_seen(Utc::now() - schedule.seen_window)
            .await
        {
            Ok(purged) if purged > 0 => tracing::debug!(purged, "seen window purged"),
            Ok(_) => {}
            Err(err) => tracing::warn!(cause = %err, "seen window purge failed"),
        }
        match publisher.flush_outbox().await {
            Ok(sent) if sent > 0 => tracing::info!(sent, "outbox flushed"),
            Ok(_) => {}
            Err(err) => tracing::warn!(cause = %err, "outbox flush failed"),
        }
        // A round that overran its interval is not made up for with a burst of rounds.
        next = (next + schedule.every).max(Instant::now());
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
}
