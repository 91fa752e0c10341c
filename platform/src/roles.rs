//! One service per process: what `stargazer <role>` runs against the configured
//! production backends.

use prometheus::Registry;
use stargazer_core::readiness::Readiness;
use std::sync::Arc;

use stargazer_core::bus::Bus;
use stargazer_core::service::{Listen, Needs, ServiceContext, StorageGrant};
use stargazer_core::CancellationToken;
use tokio::net::TcpListener;

use crate::backends::{bind, open_bus, open_storage};
use crate::metrics::MetricsServer;
use crate::services::{Mode, ServiceRow, SERVICES};
use crate::settings::Settings;
use crate::{Error, Result};

/// One service of [`SERVICES`] to run alone. The binary's subcommands are derived from
/// the table: each row is a subcommand named after the service, its `about` the help.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    row: &'static ServiceRow,
}

impl Role {
    /// The service of that name (`worker-youtube`), if the table has it.
    pub fn named(name: &str) -> Option<Self> {
        SERVICES
            .iter()
            .find(|row| row.name == name)
            .map(|row| Self { row })
    }

    /// The role's name as on the command line and in logs.
    pub fn name(self) -> &'static str {
        self.row.name
    }

    /// Its row of the table.
    pub fn row(self) -> &'static ServiceRow {
        self.row
    }
}

impl clap::FromArgMatches for Role {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let name = matches.subcommand_name().unwrap_or_default();
        Self::named(name).ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidSubcommand,
                format!("no service named `{name}`\n"),
            )
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Subcommand for Role {
    fn augment_subcommands(command: clap::Command) -> clap::Command {
        SERVICES.iter().fold(command, |command, row| {
            command.subcommand(clap::Command::new(row.name).about(row.about))
        })
    }

    fn augment_subcommands_for_update(command: clap::Command) -> clap::Command {
        Self::augment_subcommands(command)
    }

    fn has_subcommand(name: &str) -> bool {
        Self::named(name).is_some()
    }
}

/// Runs one service until `shutdown`: builds it from its row of the service table (a
/// missing or bad setting is a configuration error before any connection), binds its
/// listeners, serves its metrics on `metrics_listen` when it serves none itself, opens
/// the backends it needs (waiting for them) and runs it.
pub async fn run_role(settings: &Settings, role: Role, shutdown: CancellationToken) -> Result<()> {
    run_service(settings, role.row(), shutdown).await
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
    let readiness = Readiness::expecting(needs.uses_storage(), needs.bus);
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
) -> Result<(Option<StorageGrant>, Option<Arc<dyn Bus>>)> {
    let storage = match needs.uses_storage() {
        true => {
            let storage = open_storage(&settings.common.storage_url(), shutdown).await?;
            storage.register_metrics(registry);
            readiness.provide_storage(storage.clone());
            Some(StorageGrant::new(storage, &needs.storage))
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
