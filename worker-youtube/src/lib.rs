//! Stargazer YouTube worker: turns a set of assigned channels into events on the bus.
//!
//! - `config`: the `[youtube]` section ([`YoutubeConfig`]).
//! - `runner`: [`YoutubeRunner`], the task set the coordinator drives (start/stop).
//! - `job`: per channel, the WebSub subscription life cycle and the fallback feed poll.
//! - `callback`: the HTTP server the hub calls (verification GET, notification POST).
//! - [`signature`]: `X-Hub-Signature` checks.
//! - `atom`: Atom entry and tombstone parsing.
//! - `data_api`: `videos.list` client; `batcher`: ≤ 50 ids per call.
//! - [`quota`]: the Data API units spent per Pacific day, shared through storage.
//! - `classify`: what to publish for a video given its previous state.
//! - [`store`]: what is persisted (leases, video records, markers).
//! - `metrics`: Prometheus counters.
//!
//! [`YoutubeService`] wires it together: callback server, runner, and the connection to
//! the coordinator through the shared worker runtime.

mod atom;
mod batcher;
mod callback;
mod classify;
mod config;
mod data_api;
mod hub;
mod job;
mod metrics;
pub mod quota;
mod runner;
pub mod signature;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use stargazer_core::config::redact_url;
use stargazer_core::service::{
    Capability, ContextError, Listen, Needs, Service, ServiceContext, ServiceError,
};
use stargazer_core::worker_runtime::{run_worker, WorkerRuntimeConfig};

pub use config::YoutubeConfig;
pub use runner::YoutubeRunner;

/// Errors of the YouTube worker: those of every source worker (`Io` is the callback
/// server's).
pub use stargazer_core::source::SourceError as Error;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

stargazer_core::source_task_runner!(YoutubeRunner);

/// The YouTube worker as a platform service: WebSub callbacks (and `/metrics`) on
/// `youtube.listen`, tasks from the coordinator, events on the bus.
pub struct YoutubeService {
    config: YoutubeConfig,
    runtime: WorkerRuntimeConfig,
}

impl YoutubeService {
    /// The worker with these settings, logging in to the coordinator with `runtime`.
    pub fn new(config: YoutubeConfig, runtime: WorkerRuntimeConfig) -> Self {
        Self { config, runtime }
    }
}

#[async_trait]
impl Service for YoutubeService {
    fn name(&self) -> &'static str {
        "worker-youtube"
    }

    fn needs(&self) -> Needs {
        Needs {
            storage: vec![Capability::State],
            bus: true,
            listeners: vec![Listen {
                key: "youtube.listen",
                addr: self.config.listen,
            }],
            serves_metrics: true,
        }
    }

    fn describe(&self) -> String {
        let callbacks = if self.config.websub_enabled() {
            format!(
                "WebSub callbacks on {} as {}, hub {}",
                self.config.listen,
                redact_url(&self.config.public_url),
                redact_url(&self.config.hub_url)
            )
        } else {
            format!(
                "feed polling only (youtube.public_url unset), callbacks on {}",
                self.config.listen
            )
        };
        format!(
            "{callbacks}; Data API {}; feeds {}; coordinator {}",
            redact_url(&self.config.data_api_base),
            redact_url(&self.config.feed_base),
            redact_url(&self.runtime.coordinator_url)
        )
    }

    fn worker_id(&self) -> Option<&str> {
        Some(&self.runtime.worker_id)
    }

    /// Serves the callback server on the `youtube.listen` listener, connects to the
    /// coordinator and runs the channels it assigns. Shutdown keeps the WebSub leases (a
    /// restart reuses them without calling the hub); only an unassignment unsubscribes.
    async fn run(self: Box<Self>, mut cx: ServiceContext) -> Result<(), ServiceError> {
        let bus = cx.bus()?;
        let listener = cx
            .take_listeners(1)?
            .into_iter()
            .next()
            .ok_or(ContextError::NoListener(0))?;
        if !self.config.websub_enabled() {
            tracing::warn!(
                "youtube.public_url is empty: WebSub disabled, relying on feed polls only"
            );
        }
        // A child token so a failing callback server can stop the rest without cancelling
        // the caller's token.
        let inner = cx.shutdown.child_token();
        let (state, health) = (cx.state_store()?, cx.storage_health()?);
        let runner =
            YoutubeRunner::new(self.config, state, health, bus, &cx.registry, inner.clone())?;
        let runtime = self.runtime;
        let server = async {
            let served = runner.serve(listener).await;
            inner.cancel();
            served
        };
        let worker = async {
            let result = run_worker(runtime, Arc::new(runner.clone()), inner.clone()).await;
            if result.is_err() {
                inner.cancel();
            }
            result
        };
        let (served, worked) = tokio::join!(server, worker);
        runner.join().await;
        worked.map_err(Error::from)?;
        served?;
        Ok(())
    }
}
