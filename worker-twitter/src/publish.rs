//! Publishing with deduplication: an event goes out only if this process is the first to
//! record it in the seen window (`twitter.seen`, keyed `<entity>/<event id>`), so a restart
//! before the cursor was saved, or another worker holding the task, does not publish it
//! twice. A publish that fails after the claim is kept in the outbox (`twitter.outbox`)
//! and retried.

use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use stargazer_core::bus::Bus;
use stargazer_core::model::Event;
use stargazer_core::storage::{Storage, StorageError};

use crate::metrics::Metrics;

/// Seen-window namespace of published events.
pub const SEEN_NAMESPACE: &str = "twitter.seen";
/// Namespace of failed publishes awaiting a retry.
pub const OUTBOX_NAMESPACE: &str = "twitter.outbox";

#[derive(Serialize, Deserialize)]
struct OutboxEntry {
    routing_key: String,
    event: Event,
}

/// Claims and publishes events.
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

    /// Publishes `event` unless it was published before; `Ok(false)` when skipped.
    pub(crate) async fn publish_once(
        &self,
        routing_key: &str,
        event: &Event,
    ) -> Result<bool, StorageError> {
        let claim = format!("{}/{}", event.entity, event.id);
        if !self
            .storage
            .mark_seen(SEEN_NAMESPACE, &claim, Utc::now())
            .await?
        {
            tracing::debug!(event_id = %event.id, "already published");
            return Ok(false);
        }
        match self.bus.publish(routing_key, &event.to_bytes()).await {
            Ok(()) => {
                tracing::info!(event_id = %event.id, entity_id = %event.entity, kind = %event.kind, routing_key, "published");
                self.metrics.published(&event.kind);
            }
            Err(err) => {
                self.metrics.publish_failed(&event.kind);
                tracing::error!(event_id = %event.id, cause = %err, "publish failed; keeping it in the outbox");
                let entry = OutboxEntry {
                    routing_key: routing_key.to_owned(),
                    event: event.clone(),
                };
                let value = serde_json::to_value(&entry)
                    .map_err(|err| StorageError::Corrupt(err.to_string()))?;
                self.storage
                    .kv_put(
                        OUTBOX_NAMESPACE,
                        &format!("{}:{routing_key}", event.id),
                        &value,
                    )
                    .await?;
            }
        }
        Ok(true)
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
