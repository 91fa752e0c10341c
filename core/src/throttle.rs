//! Login throttling that slows guessing down without ever refusing the rightful owner.
//!
//! A lockout ("5 failures, then 429 for 5 minutes") hands every stranger a way to lock a
//! service account out: the bot's own right password is refused because someone else
//! guessed wrong. So failures here only *delay* the next verification of the same
//! username (and of the same source address, where one is known): 0 after no failure,
//! then `base × 2ⁿ⁻¹` after n recent failures, capped at `max`. A correct password is
//! always accepted once its delay has passed, and a pair verified recently skips the
//! throttle altogether (the caller's cache decides that before asking here).
//!
//! Every attempt is **reserved before it is verified**: concurrent guesses each see the
//! failures of the ones started before them, so a burst of 200 parallel guesses does not
//! all pass before the first is counted. A success refunds its reservation; an attempt
//! that ends without a verdict (the database was down) refunds too; an abandoned attempt
//! (the client hung up during its delay) stays counted.
//!
//! Records are forgotten `forget` after their last failure. The table is bounded: when it
//! is full of live records, new keys share one overflow record, so a flood of random
//! usernames slows itself down instead of evicting the records of the usernames it
//! targets.
//!
//! Several instances on one store share one budget through [`SharedCounts`]: every
//! reservation is also counted in the state store, per username and per address, and an
//! attempt waits for the larger of its own and the shared count. Every api and
//! coordinator instance counts under one namespace ([`SHARED_LOGIN_COUNTERS`]), so
//! neither a second instance nor a second surface gives a guesser a second budget for
//! the same account.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::storage::StateStore;

/// The state-store namespace of login attempts counted across instances: one counter per
/// username (`user:<name>`) and per address (`addr:<ip>`), shared by every api and
/// coordinator instance on one store.
pub const SHARED_LOGIN_COUNTERS: &str = "login_attempts";

/// The throttle's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// The delay after the first recent failure; doubled per further failure.
    pub base: Duration,
    /// The longest delay. Zero turns throttling off.
    pub max: Duration,
    /// How long after its last failure a record is forgotten.
    pub forget: Duration,
    /// Records kept at most; beyond it new keys share one overflow record.
    pub capacity: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(4),
            forget: Duration::from_secs(600),
            capacity: 10_000,
        }
    }
}

/// What a record counts failures for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Username(String),
    Source(IpAddr),
}

/// Where a reservation was counted: a keyed record or the shared overflow record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Keyed(Key),
    Overflow,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures (and attempts in flight) within `forget` of `last`.
    count: u32,
    last: Instant,
}

#[derive(Default)]
struct Records {
    keyed: HashMap<Key, Record>,
    overflow: Option<Record>,
}

/// Counts recent failures per username and per source address and says how long the
/// next attempt must wait. Cheap to clone; clones share their records.
#[derive(Clone)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    records: Arc<Mutex<Records>>,
}

/// One reserved login attempt: wait [`Attempt::delay`], verify, then settle it with
/// [`Attempt::succeeded`] or [`Attempt::failed`]. Dropped unsettled, it stays counted as a
/// failure.
#[must_use = "an attempt is settled with succeeded(), failed() or refund()"]
pub struct Attempt {
    throttle: LoginThrottle,
    slots: Vec<Slot>,
    delay: Duration,
}

impl LoginThrottle {
    /// A throttle with `settings`.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self {
            settings,
            records: Arc::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> ThrottleSettings {
        self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way
        // that matters: they are advisory.
        crate::sync::lock(&self.records)
    }

    /// Reserves an attempt for `username` from `source` (when known): counts it now and
    /// returns how long it must wait first.
    pub fn reserve(&self, username: &str, source: Option<IpAddr>) -> Attempt {
        let now = Instant::now();
        let mut keys = vec![Key::Username(username.to_owned())];
        keys.extend(source.map(Key::Source));
        let mut records = self.lock();
        let mut slots = Vec::with_capacity(keys.len());
        let mut before = 0;
        for key in keys {
            let (slot, count) = self.count_in(&mut records, key, now);
            before = before.max(count);
            slots.push(slot);
        }
        drop(records);
        Attempt {
            throttle: self.clone(),
            slots,
            delay: self.delay_after(before),
        }
    }

    /// Counts one attempt under `key` (or the overflow record when the table is full of
    /// live records); returns the slot and the count before this attempt.
    fn count_in(&self, records: &mut Records, key: Key, now: Instant) -> (Slot, u32) {
        let forget = self.settings.forget;
        let fresh = |record: &Record| now.saturating_duration_since(record.last) < forget;
        if !records.keyed.contains_key(&key) && records.keyed.len() >= self.settings.capacity {
            records.keyed.retain(|_, record| fresh(record));
        }
        let (slot, record) =
            if records.keyed.contains_key(&key) || records.keyed.len() < self.settings.capacity {
                let record = records.keyed.entry(key.clone()).or_insert(Record {
                    count: 0,
                    last: now,
                });
                (Slot::Keyed(key), record)
            } else {
                let record = records.overflow.get_or_insert(Record {
                    count: 0,
                    last: now,
                });
                (Slot::Overflow, record)
            };
        if !fresh(record) {
            record.count = 0;
        }
        let before = record.count;
        record.count = record.count.saturating_add(1);
        record.last = now;
        (slot, before)
    }

    /// The wait after `failures` recent failures (counted elsewhere too, e.g. in storage
    /// shared by several processes).
    pub fn delay_for(&self, failures: u32) -> Duration {
        self.delay_after(failures)
    }

    /// The wait after `failures` recent failures.
    fn delay_after(&self, failures: u32) -> Duration {
        if failures == 0 || self.settings.max.is_zero() {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(31);
        self.settings
            .base
            .saturating_mul(1u32 << doublings)
            .min(self.settings.max)
    }

    /// Takes one reservation back from each slot.
    fn refund(&self, slots: &[Slot]) {
        let mut records = self.lock();
        for slot in slots {
            match slot {
                Slot::Keyed(key) => {
                    if let Some(record) = records.keyed.get_mut(key) {
                        record.count = record.count.saturating_sub(1);
                        if record.count == 0 {
                            records.keyed.remove(key);
                        }
                    }
                }
                Slot::Overflow => {
                    if let Some(record) = records.overflow.as_mut() {
                        record.count = record.count.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// The delay the next attempt for `username` from `source` would wait, without
    /// reserving one.
    pub fn pending_delay(&self, username: &str, source: Option<IpAddr>) -> Duration {
        let now = Instant::now();
        let forget = self.settings.forget;
        let records = self.lock();
        let count = |key: &Key| {
            records
                .keyed
                .get(key)
                .or(records.overflow.as_ref().filter(|_| {
                    records.keyed.len() >= self.settings.capacity
                        && !records.keyed.contains_key(key)
                }))
                .filter(|record| now.saturating_duration_since(record.last) < forget)
                .map_or(0, |record| record.count)
        };
        let mut before = count(&Key::Username(username.to_owned()));
        if let Some(source) = source {
            before = before.max(count(&Key::Source(source)));
        }
        drop(records);
        self.delay_after(before)
    }

    /// Forgets records older than `forget` (call periodically).
    pub fn sweep(&self) {
        let now = Instant::now();
        let forget = self.settings.forget;
        let mut records = self.lock();
        records
            .keyed
            .retain(|_, record| now.saturating_duration_since(record.last) < forget);
        if records
            .overflow
            .is_some_and(|record| now.saturating_duration_since(record.last) >= forget)
        {
            records.overflow = None;
        }
    }

    /// Keyed records held (the overflow record not included).
    pub fn len(&self) -> usize {
        self.lock().keyed.len()
    }

    /// Whether no keyed record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Attempt {
    /// How long to wait before verifying.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Waits out [`Attempt::delay`].
    pub async fn wait(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    /// Waits out the longer of [`Attempt::delay`] and the delay `shared` recent failures
    /// ask for (counted by [`SharedCounts`] across instances; `None` when they could not
    /// be counted, so the local count stands alone).
    pub async fn wait_with(&self, shared: Option<u32>) {
        let delay = shared.map_or(self.delay, |failures| {
            self.delay.max(self.throttle.delay_after(failures))
        });
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The password was right: the reservation is taken back.
    pub fn succeeded(mut self) {
        self.refund_now();
    }

    /// The attempt ended without a verdict (storage down, server busy): not the caller's
    /// failure, so the reservation is taken back.
    pub fn refund(mut self) {
        self.refund_now();
    }

    /// The password was wrong or the username unknown: the reservation stays counted.
    pub fn failed(mut self) {
        self.slots.clear();
    }

    fn refund_now(&mut self) {
        let slots = std::mem::take(&mut self.slots);
        self.throttle.refund(&slots);
    }
}

/// Login attempts counted in the state store, so that every instance on one store sees
/// the others' failures: the counterpart of a [`LoginThrottle`] that spans processes.
///
/// Reserve an attempt with [`SharedCounts::add`] (`+1`, before the check) and take it back
/// the same way (`-1`) when it succeeded or ended without a verdict, exactly as the local
/// [`Attempt`] is settled. A store that cannot count is logged and leaves the local
/// throttle to bound the attempt alone: a broken store must not lock the owner out.
#[derive(Clone)]
pub struct SharedCounts {
    state: Arc<dyn StateStore>,
    settings: ThrottleSettings,
}

impl SharedCounts {
    /// Counts in `state` with the window and on/off switch of `settings`.
    pub fn new(state: Arc<dyn StateStore>, settings: ThrottleSettings) -> Self {
        Self { state, settings }
    }

    fn window_start(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        let window =
            chrono::Duration::from_std(self.settings.forget).unwrap_or(chrono::Duration::MAX);
        now.checked_sub_signed(window).unwrap_or(now)
    }

    /// Adds `delta` to the counters of `username` and of `source` (when known): a
    /// reservation (`1`) or a refund (`-1`). Answers the larger count before a
    /// reservation; `None` when throttling is off or the store could not count (logged).
    pub async fn add(&self, username: &str, source: Option<IpAddr>, delta: i64) -> Option<u32> {
        if self.settings.max.is_zero() {
            return None;
        }
        let now = chrono::Utc::now();
        let window_start = self.window_start(now);
        let mut keys = vec![format!("user:{username}")];
        keys.extend(source.map(|ip| format!("addr:{ip}")));
        // Every counter at once: a login waits for one round trip, not two.
        let counted = futures::future::join_all(keys.iter().map(|key| {
            self.state
                .add_to_counter(SHARED_LOGIN_COUNTERS, key, delta, now, window_start)
        }))
        .await;
        let mut before = 0;
        for counted in counted {
            match counted {
                Ok(count) => {
                    let prior = (count - delta.max(0)).max(0);
                    before = before.max(u32::try_from(prior).unwrap_or(u32::MAX));
                }
                Err(cause) => {
                    tracing::warn!(%cause, "login attempts not counted in storage");
                    return None;
                }
            }
        }
        Some(before)
    }

    /// Forgets counters past the window (call periodically).
    pub async fn purge(&self) {
        let before = self.window_start(chrono::Utc::now());
        if let Err(cause) = self
            .state
            .purge_counters(SHARED_LOGIN_COUNTERS, before)
            .await
        {
            tracing::warn!(%cause, "purging login counters failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(capacity: usize) -> LoginThrottle {
        LoginThrottle::new(ThrottleSettings {
            capacity,
            ..ThrottleSettings::default()
        })
    }

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));
    const OTHER_IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)));

    #[tokio::test(start_paused = true)]
    async fn failures_double_the_delay_up_to_the_cap() {
        let throttle = throttle(100);
        let mut delays = Vec::new();
        for _ in 0..7 {
            let attempt = throttle.reserve("bot", None);
            delays.push(attempt.delay().as_millis());
            attempt.failed();
        }
        assert_eq!(delays, [0, 250, 500, 1000, 2000, 4000, 4000]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_guesses_each_see_the_ones_before_them() {
        let throttle = throttle(100);
        let attempts: Vec<_> = (0..5).map(|_| throttle.reserve("bot", IP)).collect();
        let delays: Vec<_> = attempts.iter().map(|a| a.delay().as_millis()).collect();
        assert_eq!(delays, [0, 250, 500, 1000, 2000]);
        for attempt in attempts {
            attempt.failed();
        }
        assert_eq!(
            throttle.pending_delay("bot", None),
            Duration::from_secs(4),
            "five failures counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_refunds_only_its_own_reservation() {
        let throttle = throttle(100);
        for _ in 0..3 {
            throttle.reserve("bot", IP).failed();
        }
        let owner = throttle.reserve("bot", OTHER_IP);
        assert_eq!(
            owner.delay(),
            Duration::from_secs(1),
            "the owner is slowed, not refused"
        );
        owner.succeeded();
        assert_eq!(
            throttle.pending_delay("bot", None),
            Duration::from_secs(1),
            "the guesser's failures still count"
        );
        throttle.reserve("bot", IP).refund();
        assert_eq!(throttle.pending_delay("bot", None), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn sources_and_usernames_count_separately() {
        let throttle = throttle(100);
        for n in 0..4 {
            throttle.reserve(&format!("user{n}"), IP).failed();
        }
        assert_eq!(
            throttle.reserve("fresh", IP).delay(),
            Duration::from_secs(2),
            "the guessing address is slowed for every username"
        );
        // The attempt above was dropped unsettled (the client hung up): it stays counted
        // for `fresh`, and nothing is counted for another address.
        assert_eq!(
            throttle.pending_delay("fresh", None),
            Duration::from_millis(250)
        );
        assert_eq!(throttle.pending_delay("other", OTHER_IP), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_forgotten_after_the_window() {
        let throttle = throttle(100);
        for _ in 0..5 {
            throttle.reserve("bot", IP).failed();
        }
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(throttle.pending_delay("bot", None), Duration::from_secs(4));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(throttle.pending_delay("bot", None), Duration::ZERO);
        throttle.sweep();
        assert!(throttle.is_empty());
        assert_eq!(throttle.reserve("bot", None).delay(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_sends_new_keys_to_a_shared_record() {
        let throttle = throttle(10);
        for _ in 0..3 {
            throttle.reserve("target", None).failed();
        }
        for n in 0..50 {
            throttle.reserve(&format!("random{n}"), None).failed();
        }
        assert_eq!(throttle.len(), 10, "bounded");
        assert_eq!(
            throttle.pending_delay("target", None),
            Duration::from_millis(1000),
            "the flood did not evict the targeted username's record"
        );
        assert_eq!(
            throttle.reserve("random-new", None).delay(),
            Duration::from_secs(4),
            "the flood shares one record and slows itself down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_maximum_turns_throttling_off() {
        let throttle = LoginThrottle::new(ThrottleSettings {
            max: Duration::ZERO,
            ..ThrottleSettings::default()
        });
        for _ in 0..10 {
            throttle.reserve("bot", IP).failed();
        }
        assert_eq!(throttle.reserve("bot", IP).delay(), Duration::ZERO);
    }
}
