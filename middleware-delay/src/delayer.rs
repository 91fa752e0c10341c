//! The delay middleware proper: stores held messages, keeps their `(fire_at, id)` in the
//! one [`Timer`], and runs the single firing loop that republishes them when due.
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
use stargazer_core::model::DelayedMessage;
use stargazer_core::storage::DelayStore;
use stargazer_core::wait::{backoff_unless_cancelled, sleep_unless_cancelled, Waited};
use stargazer_core::CancellationToken;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::control::{take_request, Request};
use crate::timer::Timer;
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

/// Holds delayed messages and fires them; implements [`Middleware`] for the `delay` tag.
pub struct Delayer {
    storage: Arc<dyn DelayStore>,
    bus: Arc<dyn Bus>,
    // A std Mutex: every critical section is a few heap/map operations with no `.await`.
    timer: Mutex<Timer>,
    wake: Notify,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    options: FireOptions,
    metrics: DelayMetrics,
}

impl Delayer {
    /// A delayer with nothing pending; call [`Delayer::reload`] to pick up stored messages.
    pub fn new(
        storage: Arc<dyn DelayStore>,
        bus: Arc<dyn Bus>,
        options: FireOptions,
        metrics: DelayMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            storage,
            bus,
            timer: Mutex::new(Timer::new()),
            wake: Notify::new(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            options,
            metrics,
        })
    }

    /// How many messages are pending in memory.
    pub fn pending(&self) -> usize {
        self.timer().len()
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

    fn schedule(&self, id: &str, at_ms: i64) {
        let (earliest, len) = {
            let mut timer = self.timer();
            (timer.schedule(id, at_ms), timer.len())
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

    /// Loads every stored message into the timer, page by page (`page_size` rows at a
    /// time), retrying while storage is unreachable. Overdue ones fire as soon as the
    /// firing loop sees them. Returns how many were loaded, or `None` if shut down first.
    pub async fn reload(&self, page_size: u32, shutdown: &CancellationToken) -> Option<usize> {
        let started = std::time::Instant::now();
        let mut after: Option<String> = None;
        let mut loaded = 0usize;
        let mut backoff = Backoff::default();
        loop {
            let page = tokio::select! {
                _ = shutdown.cancelled() => return None,
                page = self.storage.list_delayed(after.as_deref(), page_size.max(1)) => page,
            };
            let page = match page {
                Ok(page) => {
                    backoff.reset();
                    page
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(cause = %err, ?delay, "reading pending delayed messages failed; retrying");
                    match sleep_unless_cancelled(delay, shutdown).await {
                        Waited::Cancelled => return None,
                        Waited::Elapsed => continue,
                    }
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            loaded += page.len();
            let len = {
                let mut timer = self.timer();
                for message in &page {
                    timer.schedule(&message.id, message.fire_at_ms);
                }
                timer.len()
            };
            self.metrics.pending.set(gauge_value(len));
            self.wake.notify_one();
            if page.len() < page_size.max(1) as usize {
                break;
            }
        }
        tracing::info!(loaded, elapsed = ?started.elapsed(), "pending delayed messages reloaded");
        Some(loaded)
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
                    if let Some((id, at)) = due {
                        let this = self.clone();
                        let shutdown = shutdown.clone();
                        firing.spawn(async move {
                            this.fire(&id, at, &shutdown).await;
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
            // What was aborted is still in storage and fires after the next start.
            tracing::warn!(
                left = firing.len(),
                "firings still running at shutdown were abandoned"
            );
            firing.shutdown().await;
        }
    }

    /// Republishes `id` (popped from the timer at `at`), then deletes it from storage.
    async fn fire(&self, id: &str, at: i64, shutdown: &CancellationToken) {
        let _turn = self.stripe(id).lock().await;
        if self.timer().fire_at(id).is_some() {
            // Rescheduled after it was popped: the new schedule fires in its own time.
            return;
        }
        let mut backoff = Backoff::default();
        let message = loop {
            match self.storage.get_delayed(id).await {
                Ok(Some(message)) => break message,
                // Cancelled, or fired by another instance.
                Ok(None) => return,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(delay_id = id, cause = %err, ?delay, "cannot read delayed message; retrying");
                    if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                        self.schedule(id, at);
                        return;
                    }
                }
            }
        };
        if message.fire_at_ms > now_ms() {
            // Storage holds a later schedule than the one popped (written by another
            // instance): follow storage.
            self.schedule(id, message.fire_at_ms);
            return;
        }
        backoff.reset();
        loop {
            match self.bus.publish(&message.routing_key, &message.body).await {
                Ok(()) => break,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(delay_id = id, cause = %err, ?delay, "republishing delayed message failed; retrying");
                    if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                        self.schedule(id, at);
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
            match self.storage.delete_delayed(id).await {
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
        // Left in storage it fires again after a restart; consumers deduplicate by event id.
        tracing::error!(
            delay_id = id,
            "fired message could not be deleted; it may be delivered again after a restart"
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
                if let Err(err) = self.storage.put_delayed(&stored).await {
                    return Outcome::Retry(format!("storing {}: {err}", stored.id));
                }
                self.schedule(&stored.id, at_ms);
                tracing::debug!(delay_id = %stored.id, fire_at_ms = at_ms, "message held");
                Outcome::Hold
            }
        }
    }
}
