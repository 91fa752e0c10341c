//! One service per process: what `stargazer <role>` runs against the configured
//! production backends.

use std::future::Future;
use std::sync::Arc;

use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::model::TaskKind;
use stargazer_core::readiness::Readiness;
use stargazer_core::storage::Storage;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_core::CancellationToken;

use crate::backends::{bind, open_both, open_bus, open_storage, parse_addr};
use crate::metrics::MetricsServer;
use crate::settings::{Settings, WorkerSection};
use crate::{Error, Result};

/// The services one process can run; each is a subcommand of the binary (the doc
/// comments are its `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Role {
    /// RPC API, sessions, RabbitMQ HTTP auth backend, OpenAPI, frontend.
    Api,
    /// Assigns tasks to workers over WebSocket by consistent hashing.
    Coordinator,
    /// Watches YouTube channels (WebSub + Data API) and publishes events.
    WorkerYoutube,
    /// Watches X accounts (API v2) and publishes events.
    WorkerTwitter,
    /// Holds messages tagged `delay` until their time.
    MiddlewareDelay,
    /// Translates texts of messages tagged `translate` (DeepL).
    MiddlewareTranslate,
    /// Holds `youtube.live` until the stream has really started.
    MiddlewareLiveCheck,
    /// Telegram bot: chat commands and delivery of ready events.
    BotTelegram,
}

impl Role {
    /// The role's name as on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Coordinator => "coordinator",
            Role::WorkerYoutube => "worker-youtube",
            Role::WorkerTwitter => "worker-twitter",
            Role::MiddlewareDelay => "middleware-delay",
            Role::MiddlewareTranslate => "middleware-translate",
            Role::MiddlewareLiveCheck => "middleware-live-check",
            Role::BotTelegram => "bot-telegram",
        }
    }
}

/// Runs one service until `shutdown`: opens the backends it needs (waiting for them),
/// binds its listeners and calls its library `run`.
pub async fn run_role(settings: &Settings, role: Role, shutdown: CancellationToken) -> Result<()> {
    let storage_url = settings.common.storage_url();
    let bus_url = settings.common.bus_url();
    let name = role.name();
    match role {
        Role::Api => {
            let storage = open_storage(&storage_url, &shutdown).await?;
            let public = bind(settings.api.listen, "api.listen").await?;
            let internal = match settings.api.internal_listen {
                Some(addr) => Some(bind(addr, "api.internal_listen").await?),
                None => None,
            };
            let listeners = stargazer_api::Listeners { public, internal };
            stargazer_api::serve(
                settings.api.clone(),
                listeners,
                storage,
                &Registry::new(),
                shutdown,
            )
            .await
            .map_err(Error::service(name))?;
        }
        Role::Coordinator => {
            let addr = parse_addr(&settings.coordinator.listen, "coordinator.listen")?;
            let storage = open_storage(&storage_url, &shutdown).await?;
            let listener = bind(addr, "coordinator.listen").await?;
            stargazer_coordinator::run(settings.coordinator.clone(), listener, storage, shutdown)
                .await
                .map_err(Error::service(name))?;
        }
        Role::WorkerYoutube => {
            settings.worker.validate()?;
            let runtime = worker_runtime(&settings.worker, TaskKind::Youtube);
            let (storage, bus) =
                open_both(&storage_url, &bus_url, &settings.bus_options(), &shutdown).await?;
            let listener = bind(settings.youtube.listen, "youtube.listen").await?;
            // The worker's callback server serves this registry on `/metrics`.
            let registry = Registry::new();
            bus.metrics().register(&registry);
            stargazer_worker_youtube::run_with_registry(
                settings.youtube.clone(),
                runtime,
                listener,
                storage,
                bus,
                &registry,
                shutdown,
            )
            .await
            .map_err(Error::service(name))?;
        }
        Role::WorkerTwitter => {
            settings.worker.validate()?;
            let runtime = worker_runtime(&settings.worker, TaskKind::Twitter);
            let config = settings.twitter.clone();
            run_with_metrics(
                settings,
                role,
                shutdown,
                |storage, bus, registry, token| async move {
                    stargazer_worker_twitter::run_with_registry(
                        config, runtime, storage, bus, &registry, token,
                    )
                    .await
                },
            )
            .await?;
        }
        Role::MiddlewareDelay => {
            let config = settings.delay.clone();
            run_with_metrics(
                settings,
                role,
                shutdown,
                |storage, bus, registry, token| async move {
                    stargazer_middleware_delay::run_with_registry(
                        config, storage, bus, &registry, token,
                    )
                    .await
                },
            )
            .await?;
        }
        Role::MiddlewareTranslate => {
            let config = settings.translate.clone();
            run_with_metrics(
                settings,
                role,
                shutdown,
                |storage, bus, registry, token| async move {
                    stargazer_middleware_translate::run_with_registry(
                        config, storage, bus, &registry, token,
                    )
                    .await
                },
            )
            .await?;
        }
        Role::MiddlewareLiveCheck => {
            let config = live_check_config(settings);
            run_with_metrics(
                settings,
                role,
                shutdown,
                |storage, bus, registry, token| async move {
                    stargazer_middleware_live_check::run_with_registry(
                        config, storage, bus, &registry, token,
                    )
                    .await
                },
            )
            .await?;
        }
        Role::BotTelegram => {
            let config = settings.telegram.clone();
            run_with_metrics(
                settings,
                role,
                shutdown,
                |storage, bus, registry, token| async move {
                    stargazer_bot_telegram::run_with_registry(
                        config, storage, bus, &registry, token,
                    )
                    .await
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Runs a role that has no HTTP server of its own: serves its metrics and `/readyz` on
/// `metrics_listen`, opens storage and bus, and calls `run` with them, its registry and
/// the shutdown token.
async fn run_with_metrics<F, Fut, E>(
    settings: &Settings,
    role: Role,
    shutdown: CancellationToken,
    run: F,
) -> Result<()>
where
    F: FnOnce(Arc<dyn Storage>, Arc<dyn Bus>, Registry, CancellationToken) -> Fut,
    Fut: Future<Output = std::result::Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let registry = Registry::new();
    let readiness = Readiness::expecting(true, true);
    let metrics = MetricsServer::start(
        settings.common.metrics_listen.as_deref(),
        &registry,
        &readiness,
        &shutdown,
    )
    .await?;
    let storage = open_storage(&settings.common.storage_url(), &shutdown).await?;
    storage.register_metrics(&registry);
    readiness.provide_storage(storage.clone());
    let bus = open_bus(
        &settings.common.bus_url(),
        &settings.bus_options(),
        &shutdown,
    )
    .await?;
    bus.metrics().register(&registry);
    readiness.provide_bus(bus.clone());
    run(storage, bus, registry, shutdown)
        .await
        .map_err(Error::service(role.name()))?;
    metrics.join().await;
    Ok(())
}

/// The live-check config, borrowing the YouTube Data API settings when its own are unset.
pub fn live_check_config(settings: &Settings) -> stargazer_middleware_live_check::LiveCheckConfig {
    let mut config = settings.live_check.clone();
    if config.api_key.is_empty() {
        config.api_key = settings.youtube.api_key.clone();
    }
    config
}

/// The worker runtime settings for a worker of `kind`.
pub fn worker_runtime(section: &WorkerSection, kind: TaskKind) -> WorkerRuntimeConfig {
    WorkerRuntimeConfig::new(
        section.coordinator_url.clone(),
        section.username.clone(),
        section.password.clone(),
        section.id.clone(),
        kind,
    )
}
