//! Stargazer X (Twitter) worker: polls assigned accounts' timelines through X API v2 and
//! publishes `twitter.tweet` / `twitter.retweet` events.
//!
//! - [`config`]: the `[twitter]` section ([`TwitterConfig`]).
//! - [`api`]: the `GET /2/users/:id/tweets` client and the shared rate-limit gate.
//! - [`events`]: tweet → event (translation tagging included).
//! - [`runner`]: [`TwitterRunner`], the task set the coordinator drives (start/stop), and
//!   the per-account polling job.
//! - [`metrics`]: Prometheus counters.

pub mod api;
pub mod config;
pub mod events;
pub mod metrics;
pub mod runner;

use std::sync::Arc;

use async_trait::async_trait;
use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::config::redact_url;
use stargazer_core::service::{Needs, Service, ServiceContext, ServiceError};
use stargazer_core::storage::Storage;
use stargazer_core::worker_runtime::{run_worker, WorkerRuntimeConfig};
use stargazer_core::CancellationToken;

pub use config::TwitterConfig;
pub use runner::TwitterRunner;

/// Errors of the X worker: those of every source worker.
pub use stargazer_core::source::SourceError as Error;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

stargazer_core::source_task_runner!(TwitterRunner);

/// Runs the worker until `shutdown`: connects to the coordinator with `runtime` and polls
/// the accounts it assigns.
pub async fn run(
    config: TwitterConfig,
    runtime: WorkerRuntimeConfig,
    storage: Arc<dyn Storage>,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> Result<()> {
    run_with_registry(config, runtime, storage, bus, &Registry::new(), shutdown).await
}

/// [`run`] with the worker's metrics registered in `registry`, for the caller to serve.
pub async fn run_with_registry(
    config: TwitterConfig,
    runtime: WorkerRuntimeConfig,
    storage: Arc<dyn Storage>,
    bus: Arc<dyn Bus>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<()> {
    // run_worker returns at shutdown, or at once on a bad runtime config; either way the
    // jobs must end, without cancelling the caller's token.
    let inner = shutdown.child_token();
    let runner = TwitterRunner::with_registry(config, storage, bus, registry, inner.clone())?;
    let worked = run_worker(runtime, Arc::new(runner.clone()), inner.clone()).await;
    inner.cancel();
    runner.join().await;
    worked.map_err(Error::from)
}

/// The X worker as a platform service: tasks from the coordinator, events on the bus.
pub struct TwitterService {
    config: TwitterConfig,
    runtime: WorkerRuntimeConfig,
}

impl TwitterService {
    /// The worker with these settings, logging in to the coordinator with `runtime`.
    pub fn new(config: TwitterConfig, runtime: WorkerRuntimeConfig) -> Self {
        Self { config, runtime }
    }
}

#[async_trait]
impl Service for TwitterService {
    fn name(&self) -> &'static str {
        "worker-twitter"
    }

    fn needs(&self) -> Needs {
        Needs::storage_and_bus()
    }

    fn describe(&self) -> String {
        format!(
            "X API at {}; coordinator {}",
            redact_url(&self.config.api_base),
            redact_url(&self.runtime.coordinator_url)
        )
    }

    fn worker_id(&self) -> Option<&str> {
        Some(&self.runtime.worker_id)
    }

    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        let bus = cx.bus()?;
        run_with_registry(
            self.config,
            self.runtime,
            cx.storage()?,
            bus,
            &cx.registry,
            cx.shutdown,
        )
        .await?;
        Ok(())
    }
}
