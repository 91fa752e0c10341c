//! The delay middleware proper: stores held messages, keeps the ones this instance has
//! claimed as `(fire_at, id, revision)` in the one [`Timer`], and runs the firing loop
//! that republishes them when due, the claim loop that takes due-soon messages from
//! storage, and the renew loop that keeps its claims (docs/ARCHITECTURE.md §5
//! middleware-delay).
//!
//! Several instances share one store: each message is fired by the instance whose lease
//! on it is live, and only the revision it claimed (a replacement or a cancel that landed
//! first wins). Memory per instance is bounded by [`ClaimOptions::max_held`] and by what
//! falls due within [`ClaimOptions::horizon`].
//!
//! Per-id ordering: storing, cancelling and firing the same id are serialised by a
//! striped async lock, so a replacement that arrives while its predecessor is firing
//! either lands before (and is what fires) or after (and waits its own turn): the stored
//! row is never deleted from under a newer schedule.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use stargazer_core::backoff::Backoff;
use stargazer_core::bus::Bus;
use stargazer_core::middleware::{Incoming, Middleware, Outcome};
use stargazer_core::model::{DelayLease, DelayedMessage};
use stargazer_core::storage::DelayStore;
use stargazer_core::wait::{backoff_unless_cancelled, sleep_unless_cancelled};
use stargazer_core::CancellationToken;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::control::{take_request, Request};
use crate::timer::{Held, Timer};
use stargazer_core::sync::lock;

/// Number of per-id lock stripes; ids hash onto them.
const STRIPES: usize = 1024;

/// Longest single sleep of the firing loop: it re-reads the wall clock at least this often,
/// so a clock step never leaves a message waiting for a stale deadline.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Current wall-clock time in unix milliseconds (0 for a clock set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Metrics of the delay middleware.
#[derive(Clone)]
pub struct DelayMetrics {
    /// `stargazer_delay_pending`: messages held now.
    pub pending: IntGauge,
    /// `stargazer_delay_fired_total`: messages republished when due.
    pub fired: IntCounter,
    /// `stargazer_delay_cancelled_total`: `x-delay-cancel` requests that removed a message.
    pub cancelled: IntCounter,
    /// `stargazer_delay_lateness_seconds`: publish time minus `x-delay-at`.
    pub lateness: Histogram,
}

impl DelayMetrics {
    /// Creates the metrics and registers them in `registry` (a second registration in the
    /// same registry is logged and the metrics kept private).
    pub fn register(registry: &Registry) -> Self {
        // Names and help texts are fixed valid literals, so construction cannot fail.
        let metrics = Self {
            pending: IntGauge::new(
                "stargazer_delay_pending",
                "Messages held by middleware-delay.",
            )
            .expect("valid metric"),
            fired: IntCounter::new(
                "stargazer_delay_fired_total",
                "Delayed messages republished.",
            )
            .expect("valid metric"),
            cancelled: IntCounter::new(
                "stargazer_delay_cancelled_total",
                "Pending delayed messages removed by x-delay-cancel.",
            )
            .expect("valid metric"),
            lateness: Histogram::with_opts(
                HistogramOpts::new(
                    "stargazer_delay_lateness_seconds",
                    "Time between x-delay-at and the republish.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 60.0,
                ]),
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.pending.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.fired.clone()),
            Box::new(metrics.cancelled.clone()),
            Box::new(metrics.lateness.clone()),
        ] {
            if let Err(err) = registry.register(collector) {
                tracing::warn!(cause = %err, "delay metric not registered");
            }
        }
        metrics
    }
}

/// Tuning of the firing side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireOptions {
    /// Messages fetched, published and deleted at once.
    pub concurrency: usize,
    /// How long firings in progress may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// Tuning of the claims that let several instances share one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOptions {
    /// How long a claim holds unless renewed; renewed every third of it.
    pub lease: Duration,
    /// How often storage is asked for messages due within the horizon.
    pub interval: Duration,
    /// How far ahead messages are claimed (and held in memory).
    pub horizon: Duration,
    /// Messages claimed per storage call.
    pub batch: u32,
    /// Most messages held in memory at once: claiming stops there, and received ones are
    /// stored unclaimed.
    pub max_held: usize,
}

impl ClaimOptions {
    fn lease_ms(&self) -> i64 {
        duration_ms(self.lease)
    }

    fn horizon_ms(&self) -> i64 {
        duration_ms(self.horizon)
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Holds delayed messages and fires them; implements [`Middleware`] for the `delay` tag.
pub struct Delayer {
    storage: Arc<dyn DelayStore>,
    bus: Arc<dyn Bus>,
    /// This instance's owner name in claims: fresh per start, so a restarted instance
    /// never mistakes its predecessor's claims for its own.
    instance: String,
    // A std Mutex: every critical section is a few heap/map operations with no `.await`.
    timer: Mutex<Timer>,
    wake: Notify,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    options: FireOptions,
    claims: ClaimOptions,
    metrics: DelayMetrics,
}

impl Delayer {
    /// A delayer holding nothing, with a fresh instance id; run [`Delayer::claim_loop`]
    /// and [`Delayer::renew_loop`] beside [`Delayer::fire_loop`] to pick up stored
    /// messages.
    pub fn new(
        storage: Arc<dyn DelayStore>,
        bus: Arc<dyn Bus>,
        options: FireOptions,
        claims: ClaimOptions,
        metrics: DelayMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            storage,
            bus,
            instance: format!("delay-{}", uuid::Uuid::new_v4().simple()),
            timer: Mutex::new(Timer::new()),
            wake: Notify::new(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            options,
            claims,
            metrics,
        })
    }

    /// This instance's id, the owner of its claims in storage.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How many messages this instance holds in memory.
    pub fn pending(&self) -> usize {
        self.timer().len()
    }

    /// A lease for this instance starting now.
    fn lease_from(&self, now: i64) -> DelayLease {
        DelayLease {
            owner: self.instance.clone(),
            until_ms: now.saturating_add(self.claims.lease_ms()),
        }
    }

    fn timer(&self) -> MutexGuard<'_, Timer> {
        // Poisoning means a panic mid-operation elsewhere; the heap and map are still
        // structurally valid, so keep serving.
        lock(&self.timer)
    }

    fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        // The modulo keeps the index below STRIPES, which fits in usize.
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    fn schedule(&self, id: &str, at_ms: i64, revision: i64) {
        let (earliest, len) = {
            let mut timer = self.timer();
            (timer.schedule(id, at_ms, revision), timer.len())
        };
        self.metrics.pending.set(gauge_value(len));
        if earliest {
            self.wake.notify_one();
        }
    }

    fn unschedule(&self, id: &str) -> bool {
        let (removed, len) = {
            let mut timer = self.timer();
            (timer.cancel(id).is_some(), timer.len())
        };
        self.metrics.pending.set(gauge_value(len));
        removed
    }

    /// Forgets `id` unless what is held is `revision`.
    fn unschedule_unless(&self, id: &str, revision: i64) {
        let len = {
            let mut timer = self.timer();
            timer.cancel_unless(id, revision);
            timer.len()
        };
        self.metrics.pending.set(gauge_value(len));
    }

    /// One claim round: claims messages due within the horizon (unclaimed, or whose
    /// lease lapsed) batch by batch until storage has no more or
    /// [`ClaimOptions::max_held`] is reached, and schedules them. Returns how many were
    /// claimed; a storage failure ends the round early (logged; the next round retries).
    pub async fn claim_round(&self, shutdown: &CancellationToken) -> usize {
        let mut claimed_total = 0;
        loop {
            let room = self.claims.max_held.saturating_sub(self.pending());
            let limit = u32::try_from(room)
                .unwrap_or(u32::MAX)
                .min(self.claims.batch.max(1));
            if limit == 0 || shutdown.is_cancelled() {
                return claimed_total;
            }
            let now = now_ms();
            let claimed = tokio::select! {
                _ = shutdown.cancelled() => return claimed_total,
                claimed = self.storage.claim_delayed(
                    &self.instance,
                    now.saturating_add(self.claims.horizon_ms()),
                    now.saturating_add(self.claims.lease_ms()),
                    now,
                    limit,
                ) => claimed,
            };
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(instance = %self.instance, cause = %err, "claiming delayed messages failed; retrying next round");
                    return claimed_total;
                }
            };
            claimed_total += claimed.len();
            let len = {
                let mut timer = self.timer();
                // A stale claim overwriting a newer schedule of the same id is harmless:
                // the firing compares with storage and follows the revision it holds.
                for message in &claimed {
                    timer.schedule(&message.id, message.fire_at_ms, message.revision);
                }
                timer.len()
            };
            self.metrics.pending.set(gauge_value(len));
            if !claimed.is_empty() {
                self.wake.notify_one();
            }
            if claimed.len() < limit as usize {
                return claimed_total;
            }
        }
    }

    /// Claims due-soon messages every [`ClaimOptions::interval`] (the first round at
    /// once, so overdue messages fire right after a start) until `shutdown`.
    pub async fn claim_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let claimed = self.claim_round(&shutdown).await;
            if claimed > 0 {
                tracing::debug!(instance = %self.instance, claimed, held = self.pending(), "delayed messages claimed");
            }
            if sleep_unless_cancelled(self.claims.interval, &shutdown)
                .await
                .is_cancelled()
            {
                return;
            }
        }
    }

    /// Extends every claim of this instance every third of the lease until `shutdown`.
    /// A failed renewal is logged and retried at the next tick; claims whose lease lapses
    /// meanwhile may be taken by another instance, and the firing check then drops them
    /// here.
    pub async fn renew_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.claims.lease / 3).max(Duration::from_millis(10));
        loop {
            if sleep_unless_cancelled(period, &shutdown)
                .await
                .is_cancelled()
            {
                return;
            }
            let lease = self.lease_from(now_ms());
            let renewed = tokio::select! {
                _ = shutdown.cancelled() => return,
                renewed = self.storage.renew_delayed_claims(&self.instance, lease.until_ms) => renewed,
            };
            match renewed {
                Ok(count) => {
                    tracing::trace!(instance = %self.instance, count, "delay claims renewed");
                }
                Err(err) => {
                    tracing::warn!(instance = %self.instance, cause = %err, "renewing delay claims failed; retrying next period");
                }
            }
        }
    }

    /// Gives this instance's claims back (a graceful stop), so other instances take
    /// them at their next claim round instead of after the lease. Returns how many.
    pub async fn release(&self) -> Option<u64> {
        match self.storage.release_delayed_claims(&self.instance).await {
            Ok(released) => {
                tracing::info!(instance = %self.instance, released, "delay claims released");
                Some(released)
            }
            Err(err) => {
                tracing::warn!(instance = %self.instance, cause = %err, "releasing delay claims failed; they lapse after the lease");
                None
            }
        }
    }

    /// The single firing loop: sleeps until the earliest pending time, then fires what is
    /// due (up to [`FireOptions::concurrency`] at once). Returns after `shutdown`, once the
    /// firings in progress finished or the grace period ran out.
    pub async fn fire_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let mut firing = JoinSet::new();
        loop {
            while let Some(done) = firing.try_join_next() {
                if let Err(err) = done {
                    tracing::error!(cause = %err, "a firing task failed");
                }
            }
            let now = now_ms();
            let next = self.timer().next_fire_at();
            match next {
                Some(at) if at <= now => {
                    let permit = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        permit = slots.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                    };
                    let (due, len) = {
                        let mut timer = self.timer();
                        (timer.pop_due(now_ms()), timer.len())
                    };
                    // A popped message is no longer pending here, whatever its firing
                    // does; a reschedule during it counts it again.
                    self.metrics.pending.set(gauge_value(len));
                    if let Some((id, held)) = due {
                        let this = self.clone();
                        let shutdown = shutdown.clone();
                        firing.spawn(async move {
                            this.fire(&id, held, &shutdown).await;
                            drop(permit);
                        });
                    }
                }
                _ => {
                    let sleep = next.map_or(MAX_SLEEP, |at| {
                        Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(MAX_SLEEP)
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(sleep) => {}
                    }
                }
            }
        }
        let drained = tokio::time::timeout(self.options.shutdown_grace, async {
            while firing.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // What was aborted is still in storage, claimed by this instance until the
            // release that follows the stop (or the lease lapses): another instance (or
            // the next start) fires it.
            tracing::warn!(
                left = firing.len(),
                "firings still running at shutdown were abandoned"
            );
            firing.shutdown().await;
        }
    }

    /// Republishes `id` (popped from the timer as `held`) if storage still holds that
    /// revision claimed by this instance, then deletes that revision.
    async fn fire(&self, id: &str, held: Held, shutdown: &CancellationToken) {
        let _turn = self.stripe(id).lock().await;
        if self.timer().held(id).is_some() {
            // Rescheduled after it was popped: the new schedule fires in its own time.
            return;
        }
        let mut backoff = Backoff::default();
        let stored = loop {
            match self.storage.get_delayed(id).await {
                Ok(Some(stored)) => break stored,
                // Cancelled, or fired by another instance.
                Ok(None) => return,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(delay_id = id, cause = %err, ?delay, "cannot read delayed message; retrying");
                    if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                        self.schedule(id, held.at, held.revision);
                        return;
                    }
                }
            }
        };
        let now = now_ms();
        let Some(lease) = stored
            .lease
            .as_ref()
            .filter(|lease| lease.owner == self.instance)
        else {
            // Replaced or released through another instance, or taken over after our
            // lease lapsed: whoever holds it fires it.
            tracing::debug!(
                delay_id = id,
                "delayed message no longer claimed here; dropped"
            );
            return;
        };
        if lease.until_ms - now < self.claims.lease_ms() / 2 {
            // Still ours but the lease is short (renewals failing): publishing now could
            // overlap a takeover right after it lapses. Kept in memory (our renewals, if
            // they recover, keep it ours) and checked again after a claim interval.
            tracing::warn!(
                delay_id = id,
                lease_left_ms = lease.until_ms - now,
                "lease too short to fire safely; retrying"
            );
            self.schedule(
                id,
                now.saturating_add(duration_ms(self.claims.interval)),
                held.revision,
            );
            return;
        }
        if stored.revision != held.revision || stored.message.fire_at_ms > now {
            // A newer revision is ours (a replacement this instance received raced with
            // a claim), or storage holds a later time: follow storage.
            self.schedule(id, stored.message.fire_at_ms, stored.revision);
            return;
        }
        let message = stored.message;
        backoff.reset();
        loop {
            match self.bus.publish(&message.routing_key, &message.body).await {
                Ok(()) => break,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(delay_id = id, cause = %err, ?delay, "republishing delayed message failed; retrying");
                    if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                        self.schedule(id, held.at, held.revision);
                        return;
                    }
                }
            }
        }
        let lateness_ms = (now_ms() - message.fire_at_ms).max(0);
        self.metrics.lateness.observe(lateness_ms as f64 / 1000.0);
        self.metrics.fired.inc();
        tracing::debug!(delay_id = id, routing_key = %message.routing_key, lateness_ms, "delayed message fired");
        backoff.reset();
        for attempt in 1..=5 {
            match self.storage.delete_delayed_if(id, held.revision).await {
                // `false`: replaced meanwhile through another instance; the replacement
                // stays and fires in its own time.
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(delay_id = id, cause = %err, attempt, "deleting a fired message failed");
                    if backoff_unless_cancelled(&mut backoff, shutdown)
                        .await
                        .is_cancelled()
                    {
                        break;
                    }
                }
            }
        }
        // Left in storage (claimed by us until the lease lapses) it fires again later;
        // consumers deduplicate by event id.
        tracing::error!(
            delay_id = id,
            "fired message could not be deleted; it may be delivered again after its lease lapses"
        );
    }
}

fn gauge_value(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

#[async_trait]
impl Middleware for Delayer {
    fn order_key(&self, message: &Incoming) -> Option<String> {
        match message.event.control.get(crate::control::DELAY_ID) {
            Some(serde_json::Value::String(id)) => Some(id.clone()),
            _ => Some(message.event.id.to_string()),
        }
    }

    async fn handle(&self, message: Incoming) -> Outcome {
        let mut event = message.event;
        let request = match take_request(&mut event) {
            Ok(request) => request,
            Err(reason) => return Outcome::Reject(reason),
        };
        match request {
            Request::Cancel { id } => {
                let _turn = self.stripe(&id).lock().await;
                match self.storage.delete_delayed(&id).await {
                    Ok(existed) => {
                        let held = self.unschedule(&id);
                        if existed || held {
                            self.metrics.cancelled.inc();
                        }
                        tracing::info!(delay_id = %id, existed, "delayed message cancelled");
                        Outcome::Hold
                    }
                    Err(err) => Outcome::Retry(format!("cancelling {id}: {err}")),
                }
            }
            Request::Schedule { id, at_ms } if at_ms <= now_ms() => {
                // Due already: it goes on now, and replaces whatever was pending under
                // its id, which therefore must not fire any more.
                let _turn = self.stripe(&id).lock().await;
                if let Err(err) = self.storage.delete_delayed(&id).await {
                    return Outcome::Retry(format!("replacing {id}: {err}"));
                }
                self.unschedule(&id);
                Outcome::Forward(event)
            }
            Request::Schedule { id, at_ms } => {
                let stored = DelayedMessage {
                    id,
                    routing_key: message.rest_key,
                    body: event.to_bytes(),
                    fire_at_ms: at_ms,
                };
                let _turn = self.stripe(&stored.id).lock().await;
                let now = now_ms();
                // Due within the horizon: held here at once, so a short delay is not late
                // by a claim interval. Later ones are stored unclaimed for whichever
                // instance's claim round reaches them.
                let hold_here = at_ms <= now.saturating_add(self.claims.horizon_ms())
                    && self.pending() < self.claims.max_held;
                let lease = hold_here.then(|| self.lease_from(now));
                let revision = match self.storage.put_delayed(&stored, lease.as_ref()).await {
                    Ok(revision) => revision,
                    Err(err) => return Outcome::Retry(format!("storing {}: {err}", stored.id)),
                };
                if hold_here {
                    self.schedule(&stored.id, at_ms, revision);
                } else {
                    // The predecessor held here must not fire; a claim of this very
                    // revision that already landed stays.
                    self.unschedule_unless(&stored.id, revision);
                }
                tracing::debug!(delay_id = %stored.id, fire_at_ms = at_ms, held = hold_here, "message stored");
                Outcome::Hold
            }
        }
    }
}
