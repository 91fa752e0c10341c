//! Publishing with deduplication: a group of messages goes out only if this process is the
//! first to record its claim in the seen window (so a restart, a re-push or another worker
//! holding the same task does not publish it twice). A publish that fails after the claim
//! is kept in the outbox and retried, so the claim never swallows a message.

use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use stargazer_core::bus::Bus;
use stargazer_core::model::Event;
use stargazer_core::storage::{Storage, StorageError};
use uuid::Uuid;

use crate::classify::{Group, Outgoing};
use crate::metrics::Metrics;
use crate::store::{OUTBOX_NAMESPACE, SEEN_NAMESPACE};

#[derive(Serialize, Deserialize)]
struct OutboxEntry {
    routing_key: String,
    event: Event,
}

/// Claims and publishes groups.
#[derive(Clone)]
pub(crate) struct Publisher {
    storage: Arc<dyn Storage>,
    bus: Arc<dyn Bus>,
    metrics: Metrics,
}

impl Publisher {
    pub(crate) fn new(storage: Arc<dyn Storage>, bus: Arc<dyn Bus>, metrics: Metrics) -> Self {
        Self {
            storage,
            bus,
            metrics,
        }
    }

    /// Publishes `group` unless its claim was recorded before; `Ok(false)` when skipped.
    pub(crate) async fn publish_group(
        &self,
        entity: Uuid,
        group: &Group,
    ) -> Result<bool, StorageError> {
        let claim = format!("{entity}/{}", group.claim);
        if !self
            .storage
            .mark_seen(SEEN_NAMESPACE, &claim, Utc::now())
            .await?
        {
            tracing::debug!(%entity, claim, "already published");
            return Ok(false);
        }
        for message in &group.messages {
            self.publish(message).await;
        }
        Ok(true)
    }

    async fn publish(&self, message: &Outgoing) {
        let event = &message.event;
        match self
            .bus
            .publish(&message.routing_key, &event.to_bytes())
            .await
        {
            Ok(()) => {
                tracing::info!(
                    event_id = %event.id,
                    entity_id = %event.entity,
                    kind = %event.kind,
                    routing_key = %message.routing_key,
                    "published"
                );
                self.metrics.published(&event.kind);
            }
            Err(err) => {
                self.metrics.publish_failed();
                tracing::error!(event_id = %event.id, cause = %err, "publish failed; keeping it in the outbox");
                let entry = OutboxEntry {
                    routing_key: message.routing_key.clone(),
                    event: event.clone(),
                };
                let key = format!("{}:{}", event.id, message.routing_key);
                let stored = match serde_json::to_value(&entry) {
                    Ok(value) => self.storage.kv_put(OUTBOX_NAMESPACE, &key, &value).await,
                    Err(err) => Err(StorageError::Corrupt(err.to_string())),
                };
                if let Err(err) = stored {
                    tracing::error!(event_id = %event.id, cause = %err, "could not store the failed publish; event lost");
                }
            }
        }
    }

    /// Retries every message in the outbox; returns how many went out.
    pub(crate) async fn flush_outbox(&self) -> Result<usize, StorageError> {
        let mut sent = 0;
        for (key, value) in self.storage.kv_list(OUTBOX_NAMESPACE).await? {
            let entry: OutboxEntry = match serde_json::from_value(value) {
                Ok(entry) => entry,
                Err(err) => {
                    tracing::error!(key, cause = %err, "dropping unreadable outbox entry");
                    self.storage.kv_delete(OUTBOX_NAMESPACE, &key).await?;
                    continue;
                }
            };
            match self
                .bus
                .publish(&entry.routing_key, &entry.event.to_bytes())
                .await
            {
                Ok(()) => {
                    self.metrics.published(&entry.event.kind);
                    self.storage.kv_delete(OUTBOX_NAMESPACE, &key).await?;
                    sent += 1;
                }
                Err(err) => {
                    tracing::warn!(key, cause = %err, "outbox publish failed again");
                    break;
                }
            }
        }
        Ok(sent)
    }
}
