//! Publishing with deduplication, through the shared [`Outbox`]: a group of messages
//! goes out only if this process is the first to record its claim in the seen window (so a
//! restart, a re-push or another worker holding the same task does not publish it twice),
//! and a crash or broker outage between the claim and the confirm leaves the messages in
//! the outbox for [`Publisher::flush_outbox`] instead of losing them.

use std::sync::Arc;

use stargazer_core::bus::Bus;
use stargazer_core::outbox::{Outbox, Sent};
use stargazer_core::storage::{Storage, StorageError};
use uuid::Uuid;

use crate::classify::Group;
use crate::metrics::Metrics;
use crate::store::{OUTBOX_NAMESPACE, SEEN_NAMESPACE};

/// Claims and publishes groups.
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

    /// Publishes `group` unless its claim was recorded before; `Ok(false)` when skipped.
    pub(crate) async fn publish_group(
        &self,
        entity: Uuid,
        group: &Group,
    ) -> Result<bool, StorageError> {
        let claim = format!("{entity}/{}", group.claim);
        let Some(outcomes) = self.outbox.publish_once(&claim, &group.messages).await? else {
            tracing::debug!(%entity, claim, "already published");
            return Ok(false);
        };
        for (message, sent) in group.messages.iter().zip(outcomes) {
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
                    self.metrics.publish_failed();
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
