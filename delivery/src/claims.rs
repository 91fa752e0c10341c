//! Claims on deliveries across bot instances (docs/ARCHITECTURE.md §5): an
//! instance sends to a chat only after winning the `(event, chat)` claim in the delivery
//! log, for a lease it keeps renewing while it lives.
//!
//! An event's chats are claimed together, in one storage write, when the event is queued.
//! A renewer moves the lease of every claim this instance holds, in one write every third
//! of the lease. A job about to send checks that its claim is still known to be leased
//! (taken or renewed less than a lease ago, with a margin); if not — renewals failing, the
//! database away — it claims its chat again before sending, so a claim another instance
//! may already have taken over is never sent on blindly. At shutdown, once every record is
//! written, the instance releases its unsettled claims, so the others need not wait for
//! the leases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use stargazer_core::model::{ClaimState, DeliveryClaim};
use stargazer_core::storage::{DeliveryStore, Result as StorageResult};
use stargazer_core::sync::lock;
use stargazer_core::wait::sleep_unless_cancelled;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Whether a job may still send on its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// This instance holds the claim: go on.
    Held,
    /// Another instance holds it, or the chat is settled: finish with this outcome
    /// without sending.
    Lost(crate::Outcome),
    /// The delivery log could not be asked: try again later.
    Unknown,
}

/// Waits between retries of storage or api calls and of transient send failures: 250 ms
/// doubling with each `attempt`, at most 30 s.
pub fn retry_backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << attempt.min(7));
    Duration::from_millis(ms.min(30_000))
}

/// A claim is trusted for sending only while more than this is left of its lease: the
/// send itself and clock skew between instances eat into it.
const SEND_MARGIN_SHARE: u32 = 3;

/// This instance's claims: who it is, how long a lease lasts, until when its claims are
/// known to be leased.
pub struct Claims {
    storage: Arc<dyn DeliveryStore>,
    /// The IM platform whose deliveries these are.
    im: &'static str,
    owner: String,
    lease: Duration,
    /// When the last successful renewal began, plus the lease: every claim taken before
    /// that renewal is leased at least until then.
    renewed_until: Mutex<Option<Instant>>,
}

impl Claims {
    /// Claims on the deliveries of `im` for a new instance (a fresh owner id per process
    /// run) with `lease`.
    pub fn new(storage: Arc<dyn DeliveryStore>, im: &'static str, lease: Duration) -> Self {
        Self {
            storage,
            im,
            owner: Uuid::new_v4().to_string(),
            lease,
            renewed_until: Mutex::new(None),
        }
    }

    /// This instance's owner id in the delivery log.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claims `chats` for `event` in one write; the answer per chat in order, and when the
    /// claims won are leased until (by this process's clock).
    pub async fn claim(
        &self,
        event: Uuid,
        chats: &[String],
    ) -> StorageResult<(Vec<ClaimState>, Instant)> {
        let started = Instant::now();
        let now = Utc::now();
        let lease_until =
            now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(60));
        let claim = DeliveryClaim {
            event,
            im: self.im.to_owned(),
            owner: self.owner.clone(),
            now,
            lease_until,
        };
        let states = self.storage.claim_deliveries(&claim, chats).await?;
        Ok((states, started + self.lease))
    }

    /// Whether a claim taken with lease end `leased_until` may still be sent on now.
    pub fn still_leased(&self, leased_until: Instant) -> bool {
        let renewed = lock(&self.renewed_until).unwrap_or(leased_until);
        let until = leased_until.max(renewed);
        Instant::now() + self.lease / SEND_MARGIN_SHARE < until
    }

    /// Makes sure this instance still holds `chat`'s claim on `event` before a call that
    /// could deliver: a claim no longer known to be leased (renewals failing, a long wait
    /// in the queue) is claimed again, since another instance may have taken it over;
    /// `leased_until` moves with a claim won again.
    pub async fn recheck(&self, event: Uuid, chat: &str, leased_until: &mut Instant) -> Recheck {
        if self.still_leased(*leased_until) {
            return Recheck::Held;
        }
        match self.claim(event, &[chat.to_owned()]).await {
            Ok((states, until)) => match states.into_iter().next() {
                Some(ClaimState::Won) => {
                    *leased_until = until;
                    Recheck::Held
                }
                Some(ClaimState::Held { owner, lease_until }) => {
                    tracing::info!(event_id = %event, chat_id = chat, %owner, "claim taken over by another instance; not sending");
                    Recheck::Lost(crate::Outcome::Held(lease_until))
                }
                Some(ClaimState::Settled(_)) | None => Recheck::Lost(crate::Outcome::AlreadyDone),
            },
            Err(cause) => {
                tracing::warn!(event_id = %event, chat_id = chat, %cause, "delivery log unavailable; will retry");
                Recheck::Unknown
            }
        }
    }

    /// Gives up this instance's unsettled claims of `event` (all of them when `None`).
    pub async fn release(&self, event: Option<Uuid>) -> StorageResult<u64> {
        self.storage
            .release_claims(self.im, &self.owner, event)
            .await
    }

    /// Renews every claim of this instance every third of the lease until `stop`.
    pub async fn renew_until(self: Arc<Self>, stop: CancellationToken) {
        let every = self.lease / 3;
        loop {
            if sleep_unless_cancelled(every, &stop).await.is_cancelled() {
                return;
            }
            let started = Instant::now();
            let lease_until = Utc::now()
                + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(60));
            match self
                .storage
                .renew_claims(self.im, &self.owner, lease_until)
                .await
            {
                Ok(renewed) => {
                    *lock(&self.renewed_until) = Some(started + self.lease);
                    if renewed > 0 {
                        tracing::debug!(renewed, "delivery claims renewed");
                    }
                }
                // Jobs notice the lease running short and claim again before sending.
                Err(cause) => tracing::warn!(%cause, "could not renew delivery claims"),
            }
        }
    }
}
