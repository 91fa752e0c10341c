//! A chat network's overall limit (Telegram's is about 30 messages a second) is per bot
//! token, not per process: N bot instances each pacing at `global_per_second` would send N times that
//! and meet 429s. So the instances count each other and each paces at
//! `global_per_second / N`.
//!
//! Each instance holds one of [`SLOTS`] leases `(bot.<im>.senders, slot-<i>)` in
//! storage, renewed every third of its term, and counts the slots whose term runs on.
//! When an instance dies its slot lapses after one term and the others' share grows back;
//! a graceful stop releases the slot at once. Slots, not one lease per instance, keep the
//! namespace bounded however often instances restart. A storage that cannot be asked
//! leaves the last count in force (the 429 back-off still protects the token).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use stargazer_core::storage::{Result as StorageResult, StateStore};
use tokio_util::sync::CancellationToken;

/// The lease namespace of the sending instances of the bot for `im`.
pub fn namespace(im: &str) -> String {
    format!("bot.{im}.senders")
}
/// Slots counted; a further instance holds none and counts itself on top.
pub const SLOTS: u32 = 32;

/// How many instances share the overall send rate (at least 1); cheap to clone.
#[derive(Clone, Debug)]
pub struct SenderCount(Arc<AtomicU32>);

impl SenderCount {
    /// One sender (this instance alone) until counted.
    pub fn alone() -> Self {
        Self(Arc::new(AtomicU32::new(1)))
    }

    /// The instances sharing the rate now.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    fn set(&self, count: u32) {
        self.0.store(count.max(1), Ordering::Relaxed);
    }
}

fn slot_name(slot: u32) -> String {
    format!("slot-{slot}")
}

/// Holds a slot in `namespace` for `owner` and keeps `count` (and the `gauge` showing it) up to date
/// every third of `term` until `shutdown`; then releases the slot.
pub async fn run(
    state: Arc<dyn StateStore>,
    namespace: String,
    owner: String,
    term: Duration,
    count: SenderCount,
    gauge: IntGauge,
    shutdown: CancellationToken,
) {
    let mut held: Option<u32> = None;
    loop {
        match round(state.as_ref(), &namespace, &owner, term, held).await {
            Ok((slot, counted)) => {
                if slot.is_none() && held.is_some() {
                    tracing::warn!("lost the sender slot; counting this instance on top");
                }
                held = slot;
                if counted != count.get() {
                    tracing::info!(instances = counted, "bot instances sharing the send rate");
                }
                count.set(counted);
                gauge.set(i64::from(count.get()));
            }
            Err(err) => tracing::warn!(cause = %err, "could not count the sending instances"),
        }
        if stargazer_core::wait::sleep_unless_cancelled(term / 3, &shutdown)
            .await
            .is_cancelled()
        {
            break;
        }
    }
    if let Some(slot) = held {
        if let Err(err) = state
            .lease_release(&namespace, &slot_name(slot), &owner)
            .await
        {
            tracing::warn!(cause = %err, "could not release the sender slot");
        }
    }
}

/// Renews the slot held (or takes the first free one) and counts the live slots; answers
/// the slot now held and how many instances send.
async fn round(
    state: &dyn StateStore,
    namespace: &str,
    owner: &str,
    term: Duration,
    held: Option<u32>,
) -> StorageResult<(Option<u32>, u32)> {
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::from_std(term).unwrap_or(chrono::Duration::seconds(60));
    let mut slot = None;
    if let Some(mine) = held {
        if state
            .lease_acquire(namespace, &slot_name(mine), owner, now, until)
            .await?
            .is_some()
        {
            slot = Some(mine);
        }
    }
    let leases = state.lease_list(namespace).await?;
    if slot.is_none() {
        let taken: std::collections::HashSet<&str> = leases
            .iter()
            .filter(|lease| lease.until > now)
            .map(|lease| lease.name.as_str())
            .collect();
        for candidate in (0..SLOTS).filter(|s| !taken.contains(slot_name(*s).as_str())) {
            if state
                .lease_acquire(namespace, &slot_name(candidate), owner, now, until)
                .await?
                .is_some()
            {
                slot = Some(candidate);
                break;
            }
        }
    }
    let others = leases
        .iter()
        .filter(|lease| lease.until > now && lease.owner != owner)
        .count();
    let others = u32::try_from(others).unwrap_or(u32::MAX);
    Ok((slot, others.saturating_add(1)))
}
