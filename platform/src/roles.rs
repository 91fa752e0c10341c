//! One service per process: what `stargazer <role>` runs against the configured
//! production backends.

use prometheus::Registry;
use stargazer_core::readiness::Readiness;
use std::sync::Arc;

use stargazer_core::bus::Bus;
use stargazer_core::service::{Listen, Needs, ServiceContext};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use tokio::net::TcpListener;

use crate::backends::{bind, open_bus, open_storage};
use crate::metrics::MetricsServer;
use crate::services::{row, Mode, ServiceRow};
use crate::settings::Settings;
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

/// Runs one service until `shutdown`: builds it from its row of the service table (a
/// missing or bad setting is a configuration error before any connection), binds its
/// listeners, serves its metrics on `metrics_listen` when it serves none itself, opens
/// the backends it needs (waiting for them) and runs it.
pub async fn run_role(settings: &Settings, role: Role, shutdown: CancellationToken) -> Result<()> {
    let row = row(role).ok_or(Error::Panicked(format!(
        "no service table row for role {}",
        role.name()
    )))?;
    run_service(settings, row, shutdown).await
}

/// [`run_role`] for any row of a service table.
pub async fn run_service(
    settings: &Settings,
    row: &ServiceRow,
    shutdown: CancellationToken,
) -> Result<()> {
    let service = (row.build)(settings, Mode::Role)?;
    let name = service.name();
    tracing::info!(service = name, endpoints = %service.describe(), "starting");
    let needs = service.needs();
    let registry = Registry::new();
    let readiness = Readiness::expecting(needs.storage, needs.bus);
    let metrics = match needs.serves_metrics {
        true => None,
        false => Some(
            MetricsServer::start(
                settings.common.metrics_listen.as_deref(),
                &registry,
                &readiness,
                &shutdown,
            )
            .await?,
        ),
    };
    let listeners = bind_all(&needs.listeners).await?;
    let (storage, bus) = open_needed(settings, &needs, &registry, &readiness, &shutdown).await?;
    let cx = ServiceContext {
        storage,
        bus,
        listeners,
        registry,
        shutdown,
    };
    service.run(cx).await.map_err(|source| Error::Service {
        service: name,
        source,
    })?;
    if let Some(metrics) = metrics {
        metrics.join().await;
    }
    Ok(())
}

/// Opens the backends the service needs (waiting for them), registers their metrics and
/// tells `/readyz` about them.
async fn open_needed(
    settings: &Settings,
    needs: &Needs,
    registry: &Registry,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<(Option<Arc<dyn Storage>>, Option<Arc<dyn Bus>>)> {
    let storage = match needs.storage {
        true => {
            let storage = open_storage(&settings.common.storage_url(), shutdown).await?;
            // Services with their own `/metrics` register their storage metrics themselves.
            if !needs.serves_metrics {
                storage.register_metrics(registry);
            }
            readiness.provide_storage(storage.clone());
            Some(storage)
        }
        false => None,
    };
    let bus = match needs.bus {
        true => {
            let bus = open_bus(
                &settings.common.bus_url(),
                &settings.bus_options(),
                shutdown,
            )
            .await?;
            bus.metrics().register(registry);
            readiness.provide_bus(bus.clone());
            Some(bus)
        }
        false => None,
    };
    Ok((storage, bus))
}

/// Binds every listener a service asked for, in order.
pub async fn bind_all(listens: &[Listen]) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(listens.len());
    for listen in listens {
        listeners.push(bind(listen.addr, listen.key).await?);
    }
    Ok(listeners)
}
