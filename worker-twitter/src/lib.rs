//! Stargazer X (Twitter) worker: polls assigned accounts' timelines through X API v2 and
//! publishes `twitter.tweet` / `twitter.retweet` events.
//!
//! - `config`: the `[twitter]` section ([`TwitterConfig`]).
//! - `api`: the `GET /2/users/:id/tweets` client and the shared rate-limit gate.
//! - `events`: tweet → event (translation tagging included).
//! - [`runner`]: [`TwitterRunner`], the task set the coordinator drives (start/stop), and
//!   the per-account polling job.
//! - `metrics`: Prometheus counters.

mod api;
mod config;
mod events;
mod metrics;
pub mod runner;

use std::sync::Arc;

use async_trait::async_trait;
use stargazer_core::config::redact_url;
use stargazer_core::service::{Capability, Needs, Service, ServiceContext, ServiceError};
use stargazer_core::worker_runtime::{run_worker, WorkerRuntimeConfig};

pub use config::TwitterConfig;
pub use runner::TwitterRunner;

/// Errors of the X worker: those of every source worker.
pub use stargazer_core::source::SourceError as Error;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

stargazer_core::source_task_runner!(TwitterRunner);

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
        Needs::storage_and_bus(&[Capability::State, Capability::Entities])
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
        let (state, entities, bus) = (cx.state_store()?, cx.entity_store()?, cx.bus()?);
        // run_worker returns at shutdown, or at once on a bad runtime config; either way
        // the jobs must end, without cancelling the caller's token.
        let inner = cx.shutdown.child_token();
        let runner = TwitterRunner::new(
            self.config,
            state,
            entities,
            bus,
            &cx.registry,
            inner.clone(),
        )?;
        let worked = run_worker(self.runtime, Arc::new(runner.clone()), inner.clone()).await;
        inner.cancel();
        runner.join().await;
        worked.map_err(Error::from)?;
        Ok(())
    }
}
