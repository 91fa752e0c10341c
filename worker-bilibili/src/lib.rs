//! Stargazer Bilibili worker: watches the Bilibili users the coordinator assigns it and
//! publishes `bilibili.live` / `bilibili.ended` (room status, polled in batches for all
//! held users) and `bilibili.dynamic` / `bilibili.video` (the user's space feed, WBI
//! signed).
//!
//! - `config`: the `[bilibili]` section ([`BilibiliConfig`]).
//! - `api`: the web API client (status batch, `/nav` keys, space feed).
//! - [`wbi`]: WBI request signing.
//! - `gate`: per-endpoint pacing and risk-control backoff.
//! - [`live`]: a room's stream life and the flapping rule.
//! - `events`: what is seen → events (translation tagging included).
//! - [`runner`]: [`BilibiliRunner`], the status poller and the per-task dynamics jobs.
//! - [`metrics`]: Prometheus metrics.

mod api;
mod config;
mod events;
mod gate;
pub mod live;
pub mod metrics;
pub mod runner;
pub mod wbi;

use std::sync::Arc;

use async_trait::async_trait;
use stargazer_core::config::redact_url;
use stargazer_core::service::{Capability, Needs, Service, ServiceContext, ServiceError};
use stargazer_core::worker_runtime::{run_worker, WorkerRuntimeConfig};

pub use config::{BilibiliConfig, BROWSER_USER_AGENT};
pub use runner::BilibiliRunner;

/// Errors of the Bilibili worker: those of every source worker.
pub use stargazer_core::source::SourceError as Error;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

stargazer_core::source_task_runner!(BilibiliRunner);

/// The Bilibili worker as a platform service: tasks from the coordinator, events on the bus.
pub struct BilibiliService {
    config: BilibiliConfig,
    runtime: WorkerRuntimeConfig,
}

impl BilibiliService {
    /// The worker with these settings, logging in to the coordinator with `runtime`.
    pub fn new(config: BilibiliConfig, runtime: WorkerRuntimeConfig) -> Self {
        Self { config, runtime }
    }
}

#[async_trait]
impl Service for BilibiliService {
    fn name(&self) -> &'static str {
        "worker-bilibili"
    }

    fn needs(&self) -> Needs {
        Needs::storage_and_bus(&[Capability::State, Capability::Entities])
    }

    fn describe(&self) -> String {
        format!(
            "Bilibili live API at {}, web API at {}; coordinator {}",
            redact_url(&self.config.live_base),
            redact_url(&self.config.api_base),
            redact_url(&self.runtime.coordinator_url)
        )
    }

    fn worker_id(&self) -> Option<&str> {
        Some(&self.runtime.worker_id)
    }

    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        let (state, entities, bus) = (cx.state_store()?, cx.entity_store()?, cx.bus()?);
        let inner = cx.shutdown.child_token();
        let runner = BilibiliRunner::new(
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
