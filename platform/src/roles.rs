//! Running one service role against the configured backends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use stargazer_core::backoff::Backoff;
use stargazer_core::bus::Bus;
use stargazer_core::config::ConfigError;
use stargazer_core::model::TaskKind;
use stargazer_core::storage::Storage;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_core::CancellationToken;
use tokio::net::TcpListener;

use crate::settings::{Settings, WorkerSection};
use crate::Role;

/// Runs one service until `shutdown`.
pub async fn run_role(
    settings: &Settings,
    role: Role,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let storage_url = settings.common.storage_url();
    let bus_url = settings.common.bus_url();
    match role {
        Role::Api => {
            let storage = open_storage(&storage_url, &shutdown).await?;
            let listener = bind(settings.api.listen, "api.listen").await?;
            stargazer_api::run(settings.api.clone(), listener, storage, shutdown).await?;
        }
        Role::Coordinator => {
            let addr = parse_addr(&settings.coordinator.listen, "coordinator.listen")?;
            let storage = open_storage(&storage_url, &shutdown).await?;
            let listener = bind(addr, "coordinator.listen").await?;
            stargazer_coordinator::run(settings.coordinator.clone(), listener, storage, shutdown)
                .await?;
        }
        Role::WorkerYoutube => {
            settings.worker.validate()?;
            let runtime = worker_runtime(&settings.worker, TaskKind::Youtube);
            let (storage, bus) = open_backends(&storage_url, &bus_url, &shutdown).await?;
            let listener = bind(settings.youtube.listen, "youtube.listen").await?;
            stargazer_worker_youtube::run(
                settings.youtube.clone(),
                runtime,
                listener,
                storage,
                bus,
                shutdown,
            )
            .await?;
        }
        Role::WorkerTwitter => {
            settings.worker.validate()?;
            let runtime = worker_runtime(&settings.worker, TaskKind::Twitter);
            let (storage, bus) = open_backends(&storage_url, &bus_url, &shutdown).await?;
            stargazer_worker_twitter::run(
                settings.twitter.clone(),
                runtime,
                storage,
                bus,
                shutdown,
            )
            .await?;
        }
        Role::MiddlewareDelay => {
            let registry = Registry::new();
            let metrics = serve_metrics(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_backends(&storage_url, &bus_url, &shutdown).await?;
            let config = settings.delay.clone();
            stargazer_middleware_delay::run_with_registry(
                config, storage, bus, &registry, shutdown,
            )
            .await?;
            join_metrics(metrics).await;
        }
        Role::MiddlewareTranslate => {
            let registry = Registry::new();
            let metrics = serve_metrics(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_backends(&storage_url, &bus_url, &shutdown).await?;
            let config = settings.translate.clone();
            stargazer_middleware_translate::run_with_registry(
                config, storage, bus, &registry, shutdown,
            )
            .await?;
            join_metrics(metrics).await;
        }
        Role::MiddlewareLiveCheck => {
            let registry = Registry::new();
            let metrics = serve_metrics(settings, &registry, &shutdown).await?;
            let (storage, bus) = open_backends(&storage_url, &bus_url, &shutdown).await?;
            let config = live_check_config(settings);
            stargazer_middleware_live_check::run_with_registry(
                config, storage, bus, &registry, shutdown,
            )
            .await?;
            join_metrics(metrics).await;
        }
        Role::BotTelegram => {
            let (storage, bus) = open_backends(&storage_url, &bus_url, &shutdown).await?;
            stargazer_bot_telegram::run(settings.telegram.clone(), storage, bus, shutdown).await?;
        }
        Role::Standalone(_) | Role::Admin { .. } => unreachable!("handled by main"),
    }
    Ok(())
}

/// Serves `/healthz` and `/metrics` of `registry` on `metrics_listen`, if configured, until
/// `shutdown`.
async fn serve_metrics(
    settings: &Settings,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(listen) = &settings.common.metrics_listen else {
        return Ok(None);
    };
    let listener = bind(parse_addr(listen, "metrics_listen")?, "metrics_listen").await?;
    let app = stargazer_core::telemetry::health_and_metrics_router::<()>(registry.clone());
    let shutdown = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(cause = %err, "metrics server failed");
        }
    })))
}

async fn join_metrics(server: Option<tokio::task::JoinHandle<()>>) {
    if let Some(server) = server {
        if let Err(err) = server.await {
            tracing::error!(cause = %err, "metrics server task failed");
        }
    }
}

/// `stargazer admin …` against the configured storage.
pub async fn admin(
    settings: &Settings,
    command: stargazer_api::admin::AdminCommand,
) -> anyhow::Result<()> {
    let storage = stargazer_core::storage::connect(&settings.common.storage_url())
        .await
        .context("cannot open storage")?;
    let mut out = std::io::stdout();
    stargazer_api::admin::run_admin(command, storage, &mut out).await?;
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

/// Opens storage, retrying with backoff while the database is unreachable.
pub async fn open_storage(
    url: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Storage>> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match stargazer_core::storage::connect(url).await {
            Ok(storage) => return Ok(storage),
            Err(stargazer_core::storage::StorageError::InvalidUrl(url)) => {
                return Err(ConfigError::invalid(
                    "mongo_url",
                    format!("`{url}` is not a storage URL"),
                )
                .into())
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(cause = %err, retry_in = ?delay, "storage unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for storage"),
                }
            }
        }
    }
}

/// Opens the bus, retrying with backoff while the broker is unreachable.
pub async fn open_bus(url: &str, shutdown: &CancellationToken) -> anyhow::Result<Arc<dyn Bus>> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match stargazer_core::bus::connect(url).await {
            Ok(bus) => return Ok(bus),
            Err(stargazer_core::bus::BusError::InvalidUrl(url)) => {
                return Err(
                    ConfigError::invalid("amqp_url", format!("`{url}` is not a bus URL")).into(),
                )
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(cause = %err, retry_in = ?delay, "broker unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for the broker"),
                }
            }
        }
    }
}

/// Opens storage and bus.
pub async fn open_backends(
    storage_url: &str,
    bus_url: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<dyn Storage>, Arc<dyn Bus>)> {
    Ok((
        open_storage(storage_url, shutdown).await?,
        open_bus(bus_url, shutdown).await?,
    ))
}

/// Parses a listen address, as a config error naming `key`.
pub fn parse_addr(value: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|err| {
        ConfigError::invalid(key, format!("`{value}` is not a socket address: {err}"))
    })
}

/// Binds a listener; failure names the config key.
pub async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (config key `{key}`)"))
}
