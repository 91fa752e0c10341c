//! Publishing for a source: once per happening, never lost, counted per kind.
//!
//! A group of messages goes out only if this process is the first to record its claim in
//! the seen window (so a restart before the source's cursor was saved, a re-push, or
//! another worker briefly holding the same task does not publish it twice), and a crash or
//! broker outage between the claim and the confirm leaves the messages in the outbox for
//! [`Publisher::flush_outbox`] instead of losing them (see [`crate::outbox`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PublishMetrics;
use crate::bus::Bus;
use crate::model::Event;
use crate::outbox::{Outbox, OutboxMessage, Sent};
use crate::storage::{StateStore, StorageError};

/// The two storage namespaces of a source's publishing.
///
/// Each source has its own (`youtube.seen`, `twitter.outbox`…) so that one source's
/// claims never shadow another's and each outbox is flushed by the workers of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    /// Seen-window namespace of claims, keyed `<entity>/<claim>`.
    pub seen: &'static str,
    /// Key/value namespace of messages awaiting a broker confirm.
    pub outbox: &'static str,
}

/// Claims and publishes a source's messages. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    storage: Arc<dyn StateStore>,
    outbox: Outbox,
    namespaces: Namespaces,
    metrics: PublishMetrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher keeping its claims and outbox in `namespaces` and counting in `metrics`.
    pub fn new(
        storage: Arc<dyn StateStore>,
        bus: Arc<dyn Bus>,
        namespaces: Namespaces,
        metrics: PublishMetrics,
    ) -> Self {
        Self {
            outbox: Outbox::new(storage.clone(), bus, namespaces.outbox, namespaces.seen),
            storage,
            namespaces,
            metrics,
        }
    }

    /// The namespaces this publisher works in.
    pub fn namespaces(&self) -> Namespaces {
        self.namespaces
    }

    /// Publishes `messages` unless `claim` was recorded before for `entity`; `Ok(false)`
    /// when skipped. A message the broker did not confirm is logged, counted as a publish
    /// failure and left in the outbox; it still counts as published here, since the claim
    /// is taken and the outbox will send it.
    ///
    /// The claim is scoped to the entity because claims are ids from the outside service
    /// (a video id, a tweet's event id) and two entities may watch the same account.
    pub async fn publish_once(
        &self,
        entity: Uuid,
        claim: &str,
        messages: &[OutboxMessage],
    ) -> Result<bool, StorageError> {
        let claim = format!("{entity}/{claim}");
        let Some(outcomes) = self.outbox.publish_once(&claim, messages).await? else {
            tracing::debug!(%entity, claim, "already published");
            return Ok(false);
        };
        for (message, sent) in messages.iter().zip(outcomes) {
            let event = &message.event;
            match sent {
                Sent::Published => {
                    tracing::info!(
                        event_id = %event.id,
                        entity_id = %event.entity,
                        kind = %event.kind,
                        routing_key = %message.routing_key,
                        "published"
                    );
                    self.metrics.published(&event.kind);
                }
                Sent::Deferred(err) => {
                    self.metrics.publish_failed(&event.kind);
                    tracing::error!(event_id = %event.id, cause = %err, "publish failed; kept in the outbox");
                }
            }
        }
        Ok(true)
    }

    /// Publishes one event under `routing_key` unless it was published before, claimed by
    /// its event id: for sources where one happening is one event (a tweet).
    pub async fn publish_event(
        &self,
        routing_key: &str,
        event: &Event,
    ) -> Result<bool, StorageError> {
        let message = OutboxMessage {
            routing_key: routing_key.to_owned(),
            event: event.clone(),
        };
        self.publish_once(
            event.entity,
            &event.id.to_string(),
            std::slice::from_ref(&message),
        )
        .await
    }

    /// Retries every message left in the outbox; returns how many went out.
    pub async fn flush_outbox(&self) -> Result<usize, StorageError> {
        let sent = self.outbox.flush().await?;
        for message in &sent {
            self.metrics.published(&message.event.kind);
        }
        Ok(sent.len())
    }

    /// Forgets claims recorded before `before`; returns how many. The window must outlast
    /// the longest a source may see the same happening again (a re-push, a feed page).
    pub async fn purge_seen(&self, before: DateTime<Utc>) -> Result<u64, StorageError> {
        self.storage.purge_seen(self.namespaces.seen, before).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use crate::bus::QueueSpec;
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::Storage;
    use prometheus::Registry;

    const NAMESPACES: Namespaces = Namespaces {
        seen: "test.seen",
        outbox: "test.outbox",
    };

    fn event(kind: &str) -> Event {
        Event {
            id: Event::make_id(kind, "v1", None),
            kind: kind.into(),
            entity: Uuid::new_v4(),
            time: Utc::now(),
            fields: Default::default(),
            control: Default::default(),
        }
    }

    async fn storage() -> Arc<dyn Storage> {
        Arc::new(SqliteStorage::open_in_memory().await.unwrap())
    }

    #[tokio::test]
    async fn an_event_is_published_once_and_counted_by_kind() {
        let storage = storage().await;
        let bus = MemoryBus::new();
        bus.declare(&QueueSpec::new("q", "#", 10)).await.unwrap();
        let metrics = PublishMetrics::register(&Registry::new(), "stargazer_test");
        let publisher = Publisher::new(
            storage.clone(),
            Arc::new(bus.clone()),
            NAMESPACES,
            metrics.clone(),
        );
        let tweet = event("test.tweet");
        assert!(publisher.publish_event("test", &tweet).await.unwrap());
        assert!(!publisher.publish_event("test", &tweet).await.unwrap());
        assert_eq!(bus.queue_len("q"), 1);
        assert_eq!(metrics.published_of("test.tweet"), 1);
        assert_eq!(metrics.publish_failures_of("test.tweet"), 0);
        // The claim is `<entity>/<event id>` in the source's own seen window.
        let claim = format!("{}/{}", tweet.entity, tweet.id);
        assert!(!storage
            .mark_seen(NAMESPACES.seen, &claim, Utc::now())
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn an_unconfirmed_publish_is_counted_with_its_kind_and_kept() {
        let storage = storage().await;
        let closed = MemoryBus::new();
        closed.close().await;
        let metrics = PublishMetrics::register(&Registry::new(), "stargazer_test");
        let publisher = Publisher::new(
            storage.clone(),
            Arc::new(closed),
            NAMESPACES,
            metrics.clone(),
        );
        let video = event("test.video");
        let messages = [OutboxMessage {
            routing_key: "test".into(),
            event: video.clone(),
        }];
        assert!(publisher
            .publish_once(video.entity, "v1", &messages)
            .await
            .unwrap());
        assert_eq!(metrics.publish_failures_of("test.video"), 1);
        assert_eq!(metrics.published_of("test.video"), 0);
        assert_eq!(storage.kv_list(NAMESPACES.outbox).await.unwrap().len(), 1);
    }
}
