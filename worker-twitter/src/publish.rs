//! Publishing with deduplication, through the shared [`Outbox`]: an event goes out only if
//! this process is the first to record it in the seen window (`twitter.seen`, keyed
//! `<entity>/<event id>`), so a restart before the cursor was saved, or another worker
//! holding the task, does not publish it twice; a crash or broker outage between the claim
//! and the confirm leaves it in the outbox (`twitter.outbox`) for
//! [`Publisher::flush_outbox`] instead of losing it.

use std::sync::Arc;

use stargazer_core::bus::Bus;
use stargazer_core::model::Event;
use stargazer_core::outbox::{Outbox, OutboxMessage, Sent};
use stargazer_core::storage::{Storage, StorageError};

use crate::metrics::Metrics;

/// Seen-window namespace of published events.
pub const SEEN_NAMESPACE: &str = "twitter.seen";
/// Namespace of publishes awaiting a broker confirm.
pub const OUTBOX_NAMESPACE: &str = "twitter.outbox";

/// Claims and publishes events.
#[derive(Clone)]
pub(crate) struct Publisher {
    outbox: Outbox,
    metrics: Metrics,
}

impl Publisher {
    pub(crate) fn new(storage: Arc<dyn Storage>, bus: Arc<dyn Bus>, metrics: Metrics) -> Self {
        Self {
            outbox: Outbox::new(storage, bus, OUTBOX_NAMESPACE, SEEN_NAMESPACE),
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
        let message = OutboxMessage {
            routing_key: routing_key.to_owned(),
            event: event.clone(),
        };
        let Some(outcomes) = self
            .outbox
            .publish_once(&claim, std::slice::from_ref(&message))
            .await?
        else {
            tracing::debug!(event_id = %event.id, "already published");
            return Ok(false);
        };
        for sent in outcomes {
            match sent {
                Sent::Published => {
                    tracing::info!(event_id = %event.id, entity_id = %event.entity, kind = %event.kind, routing_key, "published");
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

    /// Retries every message in the outbox; returns how many went out.
    pub(crate) async fn flush_outbox(&self) -> Result<usize, StorageError> {
        let sent = self.outbox.flush().await?;
        for message in &sent {
            self.metrics.published(&message.event.kind);
        }
        Ok(sent.len())
    }
}
