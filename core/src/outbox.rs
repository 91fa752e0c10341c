//! Publishing for event sources: once per happening, and never lost.
//!
//! A source may see the same happening many times (a WebSub re-push, a feed poll, a second
//! worker briefly holding the same task after a reassignment), so each group of messages
//! is published only by whoever first records its *claim* in a seen window. Claiming
//! first and publishing second would lose the messages if the process died in between, so
//! the messages are stashed in an outbox in storage before the claim, and removed only once
//! the broker confirmed them; [`Outbox::flush`] (run at start and periodically) publishes
//! whatever a crash or a broker outage left behind. The price is a possible duplicate after
//! a crash, which consumers drop by event id.

use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::bus::{Bus, BusError};
use crate::model::Event;
use crate::storage::{StateStore, StorageError};

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Routing key, tags included.
    pub routing_key: String,
    /// The event.
    pub event: Event,
}

impl OutboxMessage {
    /// The outbox key: event id and routing key (one event may go out under several keys).
    fn key(&self) -> String {
        format!("{}:{}", self.event.id, self.routing_key)
    }
}

/// An outbox entry: the message and when it was stashed.
#[derive(Debug, Serialize, Deserialize)]
struct Stashed {
    message: OutboxMessage,
    stashed_at_ms: i64,
}

/// How old an entry must be before [`Outbox::flush`] takes it over: younger ones belong to
/// a publish still in progress (here or in another worker), and flushing them would only
/// make duplicates.
pub const FLUSH_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// What became of one message of a claimed group.
#[derive(Debug)]
pub enum Sent {
    /// Confirmed by the broker.
    Published,
    /// Not confirmed; it stays in the outbox for [`Outbox::flush`].
    Deferred(BusError),
}

/// The claim window and the outbox of one source, in two storage namespaces.
#[derive(Clone)]
pub struct Outbox {
    storage: Arc<dyn StateStore>,
    bus: Arc<dyn Bus>,
    outbox_namespace: &'static str,
    seen_namespace: &'static str,
}

impl Outbox {
    /// An outbox keeping pending messages in `outbox_namespace` (key/value) and claims in
    /// `seen_namespace` (seen window).
    pub fn new(
        storage: Arc<dyn StateStore>,
        bus: Arc<dyn Bus>,
        outbox_namespace: &'static str,
        seen_namespace: &'static str,
    ) -> Self {
        Self {
            storage,
            bus,
            outbox_namespace,
            seen_namespace,
        }
    }

    /// Publishes `messages` unless `claim` was recorded before. `Ok(None)` when it was
    /// (nothing published); otherwise what became of each message, in order.
    pub async fn publish_once(
        &self,
        claim: &str,
        messages: &[OutboxMessage],
    ) -> Result<Option<Vec<Sent>>, StorageError> {
        // Stash first; remember which entries this call created, so that losing the claim
        // removes only those and never one a crashed earlier attempt left for `flush`.
        let mut created = Vec::new();
        for message in messages {
            let key = message.key();
            if self
                .storage
                .kv_get(self.outbox_namespace, &key)
                .await?
                .is_some()
            {
                continue;
            }
            let stashed = Stashed {
                message: message.clone(),
                stashed_at_ms: Utc::now().timestamp_millis(),
            };
            let value = serde_json::to_value(&stashed)
                .map_err(|err| StorageError::Corrupt(err.to_string()))?;
            self.storage
                .kv_put(self.outbox_namespace, &key, &value)
                .await?;
            created.push(key);
        }
        if !self
            .storage
            .mark_seen(self.seen_namespace, claim, Utc::now())
            .await?
        {
            for key in created {
                self.storage.kv_delete(self.outbox_namespace, &key).await?;
            }
            return Ok(None);
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            outcomes.push(self.send(message).await?);
        }
        Ok(Some(outcomes))
    }

    /// Publishes every message left in the outbox for at least [`FLUSH_MIN_AGE`]; returns
    /// those that went out. Stops at the first unconfirmed publish (the broker is likely
    /// down; the next flush retries).
    pub async fn flush(&self) -> Result<Vec<OutboxMessage>, StorageError> {
        let mut sent = Vec::new();
        let cutoff = Utc::now().timestamp_millis() - FLUSH_MIN_AGE.as_millis() as i64;
        for (key, value) in self.storage.kv_list(self.outbox_namespace).await? {
            let message = match serde_json::from_value::<Stashed>(value) {
                Ok(stashed) if stashed.stashed_at_ms > cutoff => continue,
                Ok(stashed) => stashed.message,
                Err(err) => {
                    tracing::error!(key, cause = %err, "dropping unreadable outbox entry");
                    self.storage.kv_delete(self.outbox_namespace, &key).await?;
                    continue;
                }
            };
            match self.send(&message).await? {
                Sent::Published => sent.push(message),
                Sent::Deferred(err) => {
                    tracing::warn!(key, cause = %err, "outbox publish failed again");
                    break;
                }
            }
        }
        Ok(sent)
    }

    async fn send(&self, message: &OutboxMessage) -> Result<Sent, StorageError> {
        match self
            .bus
            .publish(&message.routing_key, &message.event.to_bytes())
            .await
        {
            Ok(()) => {
                self.storage
                    .kv_delete(self.outbox_namespace, &message.key())
                    .await?;
                Ok(Sent::Published)
            }
            Err(err) => Ok(Sent::Deferred(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use crate::bus::QueueSpec;
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::Storage;

    fn message(key: &str) -> OutboxMessage {
        OutboxMessage {
            routing_key: key.to_owned(),
            event: Event {
                id: Event::make_id("youtube.video", "v1", None),
                kind: "youtube.video".into(),
                entity: uuid::Uuid::new_v4(),
                time: Utc::now(),
                fields: Default::default(),
                control: Default::default(),
            },
        }
    }

    /// Makes every stashed entry look older than [`FLUSH_MIN_AGE`].
    async fn age_entries(storage: &Arc<dyn Storage>) {
        for (key, value) in storage.kv_list("o").await.unwrap() {
            let mut stashed: Stashed = serde_json::from_value(value).unwrap();
            stashed.stashed_at_ms -= FLUSH_MIN_AGE.as_millis() as i64 + 1;
            storage
                .kv_put("o", &key, &serde_json::to_value(&stashed).unwrap())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_claim_publishes_once_and_leaves_nothing_behind() {
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().await.unwrap());
        let memory = MemoryBus::new();
        memory.declare(&QueueSpec::new("q", "#", 10)).await.unwrap();
        let outbox = Outbox::new(storage.clone(), Arc::new(memory.clone()), "o", "s");
        let messages = [message("youtube"), message("youtube.delay")];
        let first = outbox
            .publish_once("claim", &messages)
            .await
            .unwrap()
            .unwrap();
        assert!(first.iter().all(|sent| matches!(sent, Sent::Published)));
        assert!(outbox
            .publish_once("claim", &messages)
            .await
            .unwrap()
            .is_none());
        assert_eq!(memory.queue_len("q"), 2);
        assert!(storage.kv_list("o").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unconfirmed_message_stays_until_flushed() {
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().await.unwrap());
        let closed = MemoryBus::new();
        closed.close().await;
        let outbox = Outbox::new(storage.clone(), Arc::new(closed), "o", "s");
        let sent = outbox
            .publish_once("claim", &[message("twitter")])
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(sent[0], Sent::Deferred(_)));
        assert_eq!(storage.kv_list("o").await.unwrap().len(), 1);

        // Too fresh to take over: it may belong to a publish still in progress.
        assert!(outbox.flush().await.unwrap().is_empty());
        age_entries(&storage).await;

        // As after a restart: a new bus, the same storage.
        let memory = MemoryBus::new();
        memory.declare(&QueueSpec::new("q", "#", 10)).await.unwrap();
        let outbox = Outbox::new(storage.clone(), Arc::new(memory.clone()), "o", "s");
        assert_eq!(outbox.flush().await.unwrap().len(), 1);
        assert_eq!(memory.queue_len("q"), 1);
        assert!(storage.kv_list("o").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_crash_after_the_claim_is_repaired_by_flush() {
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().await.unwrap());
        let memory = MemoryBus::new();
        memory.declare(&QueueSpec::new("q", "#", 10)).await.unwrap();
        // The state a process dying between the claim and the publish leaves behind.
        let pending = message("youtube");
        storage
            .kv_put(
                "o",
                &pending.key(),
                &serde_json::to_value(Stashed {
                    message: pending.clone(),
                    stashed_at_ms: 0,
                })
                .unwrap(),
            )
            .await
            .unwrap();
        storage.mark_seen("s", "claim", Utc::now()).await.unwrap();
        let outbox = Outbox::new(storage, Arc::new(memory.clone()), "o", "s");
        assert!(outbox
            .publish_once("claim", &[pending])
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            outbox.flush().await.unwrap().len(),
            1,
            "the stashed message still goes out"
        );
        assert_eq!(memory.queue_len("q"), 1);
    }
}
