//! Stargazer middleware-delay: holds messages tagged `delay` until their `x-delay-at`
//! (docs/ARCHITECTURE.md §4, §5).
//!
//! - `control`: the `x-delay-at` / `x-delay-id` / `x-delay-cancel` fields.
//! - `timer`: the one timer structure (a heap of `(fire_at, id)` with lazy deletion).
//! - [`delayer`]: storage before ack, the firing loop, reload after a restart.
//!
//! A held message is written to storage (`put_delayed`) before its delivery is acked, so a
//! crash never loses it. Several instances share one store (docs/ARCHITECTURE.md §5
//! middleware-delay): each keeps in memory only the messages it has claimed in storage
//! with a lease (`[delay] lease_seconds`), those due within `claim_horizon_seconds` (at
//! most `max_held`, about 150 bytes each: see `benches/delay_million.rs`); a claim round
//! every `claim_interval_ms` takes due-soon messages that are unclaimed or whose lease
//! lapsed, so an instance that dies has its messages fired by the others within
//! `lease_seconds + claim_interval_ms` of its death (or at their time, if later). A
//! graceful stop releases the claims at once. Overdue messages fire as soon as they are
//! claimed, so right after a start. A message with the same `x-delay-id` (default: the
//! event id) replaces the pending one, whichever instance receives it; `x-delay-cancel:
//! true` removes it and publishes nothing; a message already due on arrival goes straight
//! on. Control fields are removed before the message is republished with the rest of its
//! routing key.
//!
//! Messages with the same delay id are handled in queue order (the runtime chains them by
//! [`Middleware::order_key`](stargazer_core::middleware::Middleware::order_key)), so a
//! replacement is never overtaken by the message it replaces.

mod control;
pub mod delayer;
mod timer;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{ConfigError, Section};
use stargazer_core::middleware::{self, MiddlewareError, RuntimeMetrics, RuntimeOptions};
use stargazer_core::routing;
use stargazer_core::service::{Capability, Needs, Service, ServiceContext, ServiceError};
use stargazer_core::CancellationToken;

pub use delayer::{ClaimOptions, DelayMetrics, Delayer, FireOptions};

/// The tag this middleware pops.
pub use stargazer_core::contract::tag::DELAY as TAG;

/// Configuration section `[delay]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DelayConfig {
    /// `delay.queue` / `STARGAZER_DELAY__QUEUE`: queue consumed, bound to `#.delay`;
    /// default `stargazer.middleware.delay`.
    pub queue: String,
    /// `delay.prefetch` / `STARGAZER_DELAY__PREFETCH`: unacknowledged deliveries held;
    /// default 64.
    pub prefetch: u16,
    /// `delay.concurrency` / `STARGAZER_DELAY__CONCURRENCY`: incoming messages stored at
    /// once (messages with the same delay id are always handled in queue order); default 16.
    pub concurrency: usize,
    /// `delay.fire_concurrency` / `STARGAZER_DELAY__FIRE_CONCURRENCY`: due messages
    /// fetched, republished and deleted at once; default 64.
    pub fire_concurrency: usize,
    /// `delay.lease_seconds` / `STARGAZER_DELAY__LEASE_SECONDS`: how long this instance's
    /// claim on a stored message holds unless renewed (renewed every third of it); an
    /// instance that dies has its messages fired by the others after at most this plus
    /// `claim_interval_ms`; seconds, default 15.
    pub lease_seconds: u64,
    /// `delay.claim_interval_ms` / `STARGAZER_DELAY__CLAIM_INTERVAL_MS`: how often
    /// storage is asked for due-soon messages nobody (alive) holds; milliseconds,
    /// default 1000.
    pub claim_interval_ms: u64,
    /// `delay.claim_horizon_seconds` / `STARGAZER_DELAY__CLAIM_HORIZON_SECONDS`: messages
    /// due within this are claimed and held in memory (later ones stay in storage only);
    /// seconds, default 60.
    pub claim_horizon_seconds: u64,
    /// `delay.claim_batch` / `STARGAZER_DELAY__CLAIM_BATCH`: messages claimed per storage
    /// call (rounds repeat while batches come back full); default 5000.
    pub claim_batch: u32,
    /// `delay.max_held` / `STARGAZER_DELAY__MAX_HELD`: most messages one instance holds in
    /// memory (about 150 bytes each); beyond it, claiming pauses and received messages are
    /// stored unclaimed for other instances; default 1000000.
    pub max_held: usize,
    /// `delay.retry_delay_ms` / `STARGAZER_DELAY__RETRY_DELAY_MS`: pause before a message
    /// that could not be stored is requeued, milliseconds; default 1000.
    pub retry_delay_ms: u64,
    /// `delay.delivery_attempts` / `STARGAZER_DELAY__DELIVERY_ATTEMPTS`: attempts (a
    /// failure to process or a panic each) after which a message is dead-lettered instead
    /// of requeued; default 5.
    pub delivery_attempts: u32,
    /// `delay.shutdown_grace_ms` / `STARGAZER_DELAY__SHUTDOWN_GRACE_MS`: how long
    /// firings in progress may take to finish at shutdown, milliseconds; default 10000.
    pub shutdown_grace_ms: u64,
}

impl Default for DelayConfig {
    fn default() -> Self {
        Self {
            queue: routing::middleware_queue(TAG),
            prefetch: 64,
            concurrency: 16,
            fire_concurrency: 64,
            lease_seconds: 15,
            claim_interval_ms: 1000,
            claim_horizon_seconds: 60,
            claim_batch: 5000,
            max_held: 1_000_000,
            retry_delay_ms: 1000,
            delivery_attempts: middleware::DEFAULT_DELIVERY_ATTEMPTS,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl Section for DelayConfig {
    const NAME: &'static str = "delay";

    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
}

impl DelayConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue.trim().is_empty() {
            return Err(ConfigError::invalid("delay.queue", "must not be empty"));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::invalid("delay.prefetch", "must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::invalid(
                "delay.concurrency",
                "must be at least 1",
            ));
        }
        if self.fire_concurrency == 0 {
            return Err(ConfigError::invalid(
                "delay.fire_concurrency",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("delay.lease_seconds", self.lease_seconds),
            ("delay.claim_interval_ms", self.claim_interval_ms),
            ("delay.claim_batch", u64::from(self.claim_batch)),
            ("delay.max_held", self.max_held as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.claim_interval_ms >= self.lease_seconds.saturating_mul(1000) {
            // Otherwise a lapsed claim would wait more than a lease for the next round.
            return Err(ConfigError::invalid(
                "delay.claim_interval_ms",
                "must be shorter than delay.lease_seconds",
            ));
        }
        Ok(())
    }

    /// The firing options these settings select.
    pub fn fire_options(&self) -> FireOptions {
        FireOptions {
            concurrency: self.fire_concurrency,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        }
    }

    /// The claim options these settings select.
    pub fn claim_options(&self) -> ClaimOptions {
        ClaimOptions {
            lease: Duration::from_secs(self.lease_seconds),
            interval: Duration::from_millis(self.claim_interval_ms),
            horizon: Duration::from_secs(self.claim_horizon_seconds),
            batch: self.claim_batch,
            max_held: self.max_held,
        }
    }

    fn runtime_options(&self) -> RuntimeOptions {
        RuntimeOptions {
            queue: self.queue.clone(),
            prefetch: self.prefetch,
            concurrency: self.concurrency,
            retry_delay: Duration::from_millis(self.retry_delay_ms),
            delivery_attempts: self.delivery_attempts,
            ..RuntimeOptions::new(TAG)
        }
    }
}

/// Errors of the middleware-delay service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The consuming loop failed.
    #[error(transparent)]
    Middleware(#[from] MiddlewareError),
}

/// The delay middleware as a platform service.
pub struct DelayService {
    config: DelayConfig,
}

impl DelayService {
    /// The middleware with these settings.
    pub fn new(config: DelayConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Service for DelayService {
    fn name(&self) -> &'static str {
        "middleware-delay"
    }

    fn needs(&self) -> Needs {
        Needs::storage_and_bus(&[Capability::Delayed])
    }

    fn describe(&self) -> String {
        format!(
            "queue {}: holds `{TAG}`-tagged messages in storage until their time",
            self.config.queue
        )
    }

    /// Claims due-soon stored messages (firing overdue ones at once) while consuming
    /// `#.delay`. Returns once consuming stopped, the firings in progress finished and
    /// this instance's claims were released.
    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        let (config, storage, bus, registry) =
            (self.config, cx.delay_store()?, cx.bus()?, &cx.registry);
        config.validate().map_err(Error::from)?;
        let delayer = Delayer::new(
            storage,
            bus.clone(),
            config.fire_options(),
            config.claim_options(),
            DelayMetrics::register(registry),
        );
        tracing::info!(
            instance = delayer.instance(),
            lease_seconds = config.lease_seconds,
            claim_horizon_seconds = config.claim_horizon_seconds,
            "middleware-delay instance starting"
        );
        let runtime_metrics = RuntimeMetrics::register(TAG, registry);
        // A child token so that a failing consumer also stops the loops.
        let stop = cx.shutdown.child_token();
        // Dropping this future (an aborted task) also stops the loops; the claims are then
        // not released and lapse after the lease.
        let _stop_on_drop = stop.clone().drop_guard();
        // Renewing goes on until the firings in progress have finished, so a graceful
        // stop never lets a claim lapse while its message is being published.
        let keep_claims = CancellationToken::new();
        let _keep_on_drop = keep_claims.clone().drop_guard();
        let firing = tokio::spawn(delayer.clone().fire_loop(stop.clone()));
        let claiming = tokio::spawn(delayer.clone().claim_loop(stop.clone()));
        let renewing = tokio::spawn(delayer.clone().renew_loop(keep_claims.clone()));
        let result = middleware::run(
            delayer.clone(),
            bus,
            config.runtime_options(),
            runtime_metrics,
            stop.clone(),
        )
        .await;
        stop.cancel();
        for (name, task) in [("claim", claiming), ("firing", firing)] {
            if let Err(err) = task.await {
                tracing::error!(cause = %err, loop_name = name, "delay loop failed");
            }
        }
        keep_claims.cancel();
        if let Err(err) = renewing.await {
            tracing::error!(cause = %err, "delay renew loop failed");
        }
        delayer.release().await;
        result.map_err(Error::from)?;
        Ok(())
    }
}
