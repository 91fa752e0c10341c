//! Stargazer coordinator: spreads tasks over the live workers of their kind.
//!
//! Workers connect over WebSocket (`/v1/worker`, HTTP Basic with `coordinator: ro`),
//! announce `{worker_id, kind, tasks}`, and receive `assign`/`unassign` commands they
//! acknowledge (protocol: [`stargazer_core::protocol`]). Each kind has a consistent-hash
//! ring with virtual nodes, so a join or leave moves only the tasks that must move; task
//! changes in storage touch only the changed tasks; heartbeats evict dead workers; and an
//! assignment snapshot in storage lets a restarted coordinator, or a standby taking over
//! from a dead leader, resume without churn.
//!
//! - `config`: the `[coordinator]` section ([`CoordinatorConfig`]).
//! - [`assignment`]: the state machine (targets, holders, the one-holder rule), free of
//!   I/O so the benchmark can drive it directly.
//! - `ring`: the per-kind `hashring` rings.
//! - `snapshot`: what is persisted for restarts.
//! - `election`: the leader lease; only the leader serves workers, a standby refuses
//!   them naming the leader and takes over when the lease runs out or is released.
//! - `engine`: the single task owning the state (one per leadership term); `tasks`: the
//!   storage watcher.
//! - `http`: the worker socket, `GET /v1/status`, `/metrics`, `/healthz`, `/readyz`; `auth`: Basic
//!   credentials with a verified-password cache.

pub mod assignment;
mod auth;
mod config;
mod election;
mod engine;
mod http;
mod metrics;
mod ring;
mod snapshot;
mod tasks;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use stargazer_core::config::ConfigError;
use stargazer_core::service::{
    Capability, ContextError, Listen, Needs, Service, ServiceContext, ServiceError,
};
use stargazer_core::storage::{AccessStore, EntityStore, StateStore, StorageHealth};
use stargazer_core::throttle::{LoginThrottle, SharedCounts};
use stargazer_core::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

pub use config::CoordinatorConfig;

/// Errors that stop the coordinator. Storage outages are not among them: the coordinator
/// keeps serving with what it knows and retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed.
    #[error("coordinator server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Queue depth between connection handlers and the engine; a full queue slows the
/// sockets' reads rather than dropping events.
const ENGINE_QUEUE: usize = 4096;

/// The storage capabilities the coordinator uses, each narrowed to what it does with it.
#[derive(Clone)]
struct Stores {
    /// The tasks to assign and their change stream.
    tasks: Arc<dyn EntityStore>,
    /// Worker credentials, checked when a worker connects.
    credentials: Arc<dyn AccessStore>,
    /// The assignment snapshot.
    state: Arc<dyn StateStore>,
    /// Whether the database answers, for `/readyz`.
    health: Arc<dyn StorageHealth>,
}

/// Serves `listener` until `shutdown` is cancelled, with its metrics in `registry`: takes
/// part in the leader election, serves workers while it leads and refuses them while it
/// is a standby. On shutdown a leader closes every worker connection (workers keep their
/// tasks and reconnect to the next coordinator), stores a final snapshot and releases the
/// lease, then `run` returns.
async fn serve_workers(
    config: CoordinatorConfig,
    listener: TcpListener,
    stores: Stores,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::new(registry.clone())?);
    let readiness = stargazer_core::readiness::Readiness::of(Some(stores.health), None);
    // Cancelled on any exit, so a failing server still stops the tasks below.
    let stop = shutdown.child_token();
    let identity = election::Identity::from_config(&config);
    let (role_tx, role_rx) = watch::channel(election::Role::Standby { leader: None });
    let election = tokio::spawn(
        election::Election {
            config: config.clone(),
            identity: identity.clone(),
            state: stores.state.clone(),
            tasks: stores.tasks,
            metrics: metrics.clone(),
            role: role_tx,
        }
        .run(stop.clone()),
    );

    let sockets = TaskTracker::new();
    let state = http::AppState {
        config: config.clone(),
        auth: Arc::new(auth::Authenticator::new(
            stores.credentials,
            Duration::from_secs(config.auth_cache_ttl_secs),
            LoginThrottle::new(config.login_throttle()),
            SharedCounts::new(stores.state.clone(), config.login_throttle()),
            config.auth_max_pending,
        )),
        metrics,
        identity: Arc::new(identity),
        role: role_rx,
        next_conn: Arc::new(AtomicU64::new(1)),
        sockets: sockets.clone(),
        readiness,
    };
    let purger = tokio::spawn(purge_login_counters(state.auth.clone(), stop.clone()));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "coordinator listening");
    }
    let served = axum::serve(
        listener,
        http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned())
    .await;
    if let Err(err) = &served {
        tracing::error!(cause = %err, "coordinator server failed");
    }
    stop.cancel();
    // The election ends the term (which closes the sockets) before it returns.
    if let Err(err) = election.await {
        tracing::error!(cause = %err, "coordinator election failed");
    }
    sockets.close();
    sockets.wait().await;
    if let Err(err) = purger.await {
        tracing::error!(cause = %err, "login counter purge failed");
    }
    served.map_err(Error::Serve)
}

/// How often login attempts counted in storage past their window are forgotten.
const PURGE_LOGIN_COUNTERS_EVERY: Duration = Duration::from_secs(60);

/// Forgets the shared login counters past the throttle's window until `stop`.
async fn purge_login_counters(auth: Arc<auth::Authenticator>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(PURGE_LOGIN_COUNTERS_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => auth.purge_shared().await,
        }
    }
}

/// The coordinator as a platform service: workers connect to `coordinator.listen`, which
/// also serves `/healthz`, `/readyz` and `/metrics`.
pub struct CoordinatorService {
    config: CoordinatorConfig,
    listen: std::net::SocketAddr,
}

impl CoordinatorService {
    /// The coordinator with these settings; fails if `coordinator.listen` is no address.
    pub fn new(config: CoordinatorConfig) -> Result<Self, ConfigError> {
        let listen = config.listen.parse().map_err(|err| {
            ConfigError::invalid("coordinator.listen", format!("`{}`: {err}", config.listen))
        })?;
        Ok(Self { config, listen })
    }
}

#[async_trait::async_trait]
impl Service for CoordinatorService {
    fn name(&self) -> &'static str {
        "coordinator"
    }

    fn needs(&self) -> Needs {
        Needs {
            storage: vec![Capability::Entities, Capability::Access, Capability::State],
            bus: false,
            listeners: vec![Listen {
                key: "coordinator.listen",
                addr: self.listen,
            }],
            serves_metrics: true,
        }
    }

    fn describe(&self) -> String {
        format!("ws://{}/v1/worker", self.listen)
    }

    async fn run(self: Box<Self>, mut cx: ServiceContext) -> Result<(), ServiceError> {
        let listener = cx
            .take_listeners(1)?
            .into_iter()
            .next()
            .ok_or(ContextError::NoListener(0))?;
        serve_workers(
            self.config,
            listener,
            Stores {
                tasks: cx.entity_store()?,
                credentials: cx.access_store()?,
                state: cx.state_store()?,
                health: cx.storage_health()?,
            },
            &cx.registry,
            cx.shutdown,
        )
        .await?;
        Ok(())
    }
}
