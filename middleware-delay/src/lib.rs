//! Stargazer middleware-delay: holds messages tagged `delay` until their `x-delay-at`
//! (docs/ARCHITECTURE.md §4, §5).
//!
//! - `control`: the `x-delay-at` / `x-delay-id` / `x-delay-cancel` fields.
//! - `timer`: the one timer structure (a heap of `(fire_at, id)` with lazy deletion).
//! - [`delayer`]: storage before ack, the firing loop, reload after a restart.
//!
//! A held message is written to storage (`put_delayed`) before its delivery is acked, so a
//! crash never loses it; only its id and fire time stay in memory, which keeps a million
//! pending messages within about 150 MB (see `benches/delay_million.rs`). At start every
//! stored message is reloaded and overdue ones fire at once. A message with the same `x-delay-id` (default: the event id)
//! replaces the pending one; `x-delay-cancel: true` removes it and publishes nothing; a
//! message already due on arrival goes straight on. Control fields are removed before the
//! message is republished with the rest of its routing key.
//!
//! Messages with the same delay id are handled in queue order (the runtime chains them by
//! [`Middleware::order_key`](stargazer_core::middleware::Middleware::order_key)), so a
//! replacement is never overtaken by the message it replaces. Run one instance per storage: every instance reloads every
//! stored message at start, so a second one would fire them twice (consumers deduplicate
//! by event id, but the work is wasted).

mod control;
pub mod delayer;
mod timer;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{ConfigError, Section};
use stargazer_core::middleware::{self, MiddlewareError, RuntimeMetrics, RuntimeOptions};
use stargazer_core::routing;
use stargazer_core::service::{Capability, Needs, Service, ServiceContext, ServiceError};

pub use delayer::{DelayMetrics, Delayer, FireOptions};

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
    /// `delay.reload_page_size` / `STARGAZER_DELAY__RELOAD_PAGE_SIZE`: stored messages read
    /// per page when reloading after a start; default 5000.
    pub reload_page_size: u32,
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
            reload_page_size: 5000,
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
        if self.reload_page_size == 0 {
            return Err(ConfigError::invalid(
                "delay.reload_page_size",
                "must be at least 1",
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

    /// Reloads stored messages (firing overdue ones meanwhile), then consumes `#.delay`.
    /// Returns once consuming stopped and the firings in progress finished.
    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        let (config, storage, bus, registry) =
            (self.config, cx.delay_store()?, cx.bus()?, &cx.registry);
        config.validate().map_err(Error::from)?;
        let delayer = Delayer::new(
            storage,
            bus.clone(),
            config.fire_options(),
            DelayMetrics::register(registry),
        );
        let runtime_metrics = RuntimeMetrics::register(TAG, registry);
        // A child token so that a failing consumer also stops the firing loop.
        let stop = cx.shutdown.child_token();
        // Dropping this future (an aborted task) also stops the firing loop.
        let _stop_on_drop = stop.clone().drop_guard();
        let firing = tokio::spawn(delayer.clone().fire_loop(stop.clone()));
        let result = match delayer.reload(config.reload_page_size, &stop).await {
            Some(_) => {
                middleware::run(
                    delayer,
                    bus,
                    config.runtime_options(),
                    runtime_metrics,
                    stop.clone(),
                )
                .await
            }
            None => Ok(()),
        };
        stop.cancel();
        if let Err(err) = firing.await {
            tracing::error!(cause = %err, "delay firing loop failed");
        }
        result.map_err(Error::from)?;
        Ok(())
    }
}
