//! One service per process: what `stargazer <role>` runs against the configured
//! production backends.

use prometheus::Registry;
use stargazer_core::model::TaskKind;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_core::CancellationToken;

use crate::backends::{bind, open_both, open_storage, parse_addr};
use crate::metrics::MetricsServer;
use crate::settings::{Settings, WorkerSection};
use crate::{Error, Result};

/// The services one process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// RPC API, sessions, RabbitMQ HTTP auth backend, OpenAPI, frontend.
    Api,
    /// Assigns tasks to workers.
    Coordinator,
    /// Watches YouTube channels.
    WorkerYoutube,
    /// Watches X accounts.
    WorkerTwitter,
    /// Holds messages until their time.
    MiddlewareDelay,
    /// Translates texts.
    MiddlewareTranslate,
    /// Holds `youtube.live` until the stream has started.
    MiddlewareLiveCheck,
    /// Telegram bot.
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
            let listener = bind(settings.api.listen, "api.listen").await?;
            stargazer_api::run(settings.api.clone(), listener, storage, shutdown)
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
            let (storage, bus) = open_both(&storage_url, &bus_url, &shutdown).await?;
            let listener = bind(settings.youtube.listen, "youtube.listen").await?;
            stargazer_worker_youtube::run(
                settings.youtube.clone(),
                runtime,
                listener,
                storage,
                bus,
                shutdown,
            )
            .await
            .map_err(Error::service(name))?;
        }
        Role::WorkerTwitter => {
            settings.worker.validate()?;
            let runtime = worker_runtime(&settings.worker, TaskKind::Twitter);
            let registry = Registry::new();
            let metrics = metrics_server(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_both(&storage_url, &bus_url, &shutdown).await?;
            stargazer_worker_twitter::run_with_registry(
                settings.twitter.clone(),
                runtime,
                storage,
                bus,
                &registry,
                shutdown,
            )
            .await
            .map_err(Error::service(name))?;
            metrics.join().await;
        }
        Role::MiddlewareDelay => {
            let registry = Registry::new();
            let metrics = metrics_server(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_both(&storage_url, &bus_url, &shutdown).await?;
            let config = settings.delay.clone();
            stargazer_middleware_delay::run_with_registry(
                config, storage, bus, &registry, shutdown,
            )
            .await
            .map_err(Error::service(name))?;
            metrics.join().await;
        }
        Role::MiddlewareTranslate => {
            let registry = Registry::new();
            let metrics = metrics_server(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_both(&storage_url, &bus_url, &shutdown).await?;
            let config = settings.translate.clone();
            stargazer_middleware_translate::run_with_registry(
                config, storage, bus, &registry, shutdown,
            )
            .await
            .map_err(Error::service(name))?;
            metrics.join().await;
        }
        Role::MiddlewareLiveCheck => {
            let registry = Registry::new();
            let metrics = metrics_server(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_both(&storage_url, &bus_url, &shutdown).await?;
            let config = live_check_config(settings);
            stargazer_middleware_live_check::run_with_registry(
                config, storage, bus, &registry, shutdown,
            )
            .await
            .map_err(Error::service(name))?;
            metrics.join().await;
        }
        Role::BotTelegram => {
            let registry = Registry::new();
            let metrics = metrics_server(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_both(&storage_url, &bus_url, &shutdown).await?;
            stargazer_bot_telegram::run_with_registry(
                settings.telegram.clone(),
                storage,
                bus,
                &registry,
                shutdown,
            )
            .await
            .map_err(Error::service(name))?;
            metrics.join().await;
        }
    }
    Ok(())
}

async fn metrics_server(
    settings: &Settings,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Result<MetricsServer> {
    MetricsServer::start(
        settings.common.metrics_listen.as_deref(),
        registry,
        shutdown,
    )
    .await
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
