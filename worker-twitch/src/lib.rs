//! Stargazer Twitch worker: holds EventSub webhook subscriptions (`stream.online`,
//! `stream.offline`, `channel.update`) for the broadcasters the coordinator assigns it and
//! publishes `twitch.live`, `twitch.rerun` and `twitch.ended` events.
//!
//! - `config`: the `[twitch]` section ([`TwitchConfig`]).
//! - `auth`: the app access token (client credentials); `ratelimit`: the Helix bucket
//!   gate; `helix`: the Helix client.
//! - `reconcile`: subscriptions listed, repaired, created and deleted.
//! - `callback`: the `/twitch/eventsub` listener; [`signature`]: its checks; `replay`:
//!   message ids seen recently.
//! - `notify`: what a notification or revocation does; `events`: payloads to events;
//!   `lookup`: batched Helix lookups of title, category and preview.
//! - [`runner`]: [`TwitchRunner`], the task set the coordinator drives (start/stop).
//! - `resolve`: [`resolve_logins`] for the admin CLI.
//! - `metrics`: Prometheus counters.

mod auth;
mod callback;
mod config;
mod events;
mod helix;
mod lookup;
mod metrics;
mod notify;
mod ratelimit;
mod reconcile;
mod replay;
mod resolve;
pub mod runner;
pub mod signature;

use std::sync::Arc;

use async_trait::async_trait;
use stargazer_core::config::redact_url;
use stargazer_core::service::{
    Capability, ContextError, Listen, Needs, Service, ServiceContext, ServiceError,
};
use stargazer_core::worker_runtime::{run_worker, WorkerRuntimeConfig};

pub use callback::CALLBACK_PATH;
pub use config::{NonLiveStreams, TwitchConfig};
pub use events::{LiveRecord, BROADCASTER_LOGIN, LIVE_NAMESPACE};
pub use helix::HelixError;
pub use metrics::Metrics;
pub use resolve::{resolve_logins, ResolveError};
pub use runner::TwitchRunner;

/// Errors of the Twitch worker: those of every source worker (`Io` is the callback
/// server's).
pub use stargazer_core::source::SourceError as Error;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

stargazer_core::source_task_runner!(TwitchRunner);

/// The Twitch worker as a platform service: EventSub callbacks (and `/metrics`) on
/// `twitch.listen`, tasks from the coordinator, events on the bus.
pub struct TwitchService {
    config: TwitchConfig,
    runtime: WorkerRuntimeConfig,
}

impl TwitchService {
    /// The worker with these settings, logging in to the coordinator with `runtime`.
    pub fn new(config: TwitchConfig, runtime: WorkerRuntimeConfig) -> Self {
        Self { config, runtime }
    }
}

#[async_trait]
impl Service for TwitchService {
    fn name(&self) -> &'static str {
        "worker-twitch"
    }

    fn needs(&self) -> Needs {
        Needs {
            // State: live records, outbox, seen window; entities (read): which broadcaster
            // belongs to which entity, and which subscriptions nobody wants any more.
            storage: vec![Capability::State, Capability::Entities],
            bus: true,
            listeners: vec![Listen {
                key: "twitch.listen",
                addr: self.config.listen,
            }],
            serves_metrics: true,
        }
    }

    fn describe(&self) -> String {
        format!(
            "EventSub callbacks on {} as {}; Helix {}; OAuth {}; coordinator {}",
            self.config.listen,
            redact_url(&self.config.callback_url),
            redact_url(&self.config.helix_base),
            redact_url(&self.config.id_base),
            redact_url(&self.runtime.coordinator_url)
        )
    }

    fn worker_id(&self) -> Option<&str> {
        Some(&self.runtime.worker_id)
    }

    /// Serves the callback listener on `twitch.listen`, connects to the coordinator and
    /// holds the broadcasters it assigns. Shutdown leaves the subscriptions at Twitch: the
    /// next start (or another worker) finds them by reconciliation.
    async fn run(self: Box<Self>, mut cx: ServiceContext) -> Result<(), ServiceError> {
        let bus = cx.bus()?;
        let listener = cx
            .take_listeners(1)?
            .into_iter()
            .next()
            .ok_or(ContextError::NoListener(0))?;
        // A child token so a failing callback server can stop the rest without cancelling
        // the caller's token.
        let inner = cx.shutdown.child_token();
        let (state, entities, health) =
            (cx.state_store()?, cx.entity_store()?, cx.storage_health()?);
        let runner = TwitchRunner::new(
            self.config,
            state,
            entities,
            Some(health),
            bus,
            &cx.registry,
            inner.clone(),
        )?;
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
