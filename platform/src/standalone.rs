//! Every service in one process: what `stargazer standalone` runs.
//!
//! The binary opens embedded backends by default (SQLite file + in-process bus), so a
//! newcomer needs no servers, or the production ones when given their URLs. Services whose
//! external account is not configured (Data API key, X bearer token, Telegram token) are
//! reported as disabled in the start-up summary instead of failing the whole process;
//! without a DeepL key the translate stage passes events on untranslated (with
//! `x-translate-error`) so they still reach the chats. Internal service accounts (workers
//! → coordinator, bot → api) are created fresh at every start with random passwords that
//! never leave the process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stargazer_core::auth;
use stargazer_core::bus::Bus;
use stargazer_core::config::{redact_url, redact_url_list};
use stargazer_core::model::{Access, Credential, Permissions};
use stargazer_core::service::{Listen, Service, ServiceContext, StorageGrant};
use stargazer_core::storage::Storage;
use stargazer_core::{CancellationToken, Uuid};
use tokio::task::JoinSet;

use crate::backends::{bind, connect_addr, open_bus, open_storage, parse_addr};
use crate::services::{Mode, ServiceRow, SERVICES};
use crate::settings::{Settings, WorkerSection};
use crate::{Error, Result};

/// How long services get to finish in-flight work after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// PBKDF2 rounds for the internal accounts' random passwords.
const INTERNAL_ACCOUNT_ITERATIONS: u32 = 1_000;

/// The internal account the in-process workers log in to the coordinator with.
pub const WORKER_ACCOUNT: &str = "standalone-worker";
/// The internal account the in-process bot calls the api with.
pub const BOT_ACCOUNT: &str = "standalone-bot";

/// One line of the start-up summary: a service and where or how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryLine {
    /// The service's role name, or `storage` / `bus`.
    pub service: &'static str,
    /// Its address, its external API, or why it is disabled.
    pub status: String,
}

type ServiceTasks = JoinSet<(&'static str, Result<()>)>;

/// Every service running in this process, started by [`Standalone::start`] and awaited
/// with [`Standalone::run`].
pub struct Standalone {
    tasks: ServiceTasks,
    services: CancellationToken,
    bus: Arc<dyn Bus>,
    summary: Vec<SummaryLine>,
    /// Where the api listens.
    pub api_addr: SocketAddr,
    /// Where the coordinator listens.
    pub coordinator_addr: SocketAddr,
    /// Where the YouTube worker takes WebSub callbacks, when it runs.
    pub youtube_addr: Option<SocketAddr>,
    /// The ids the in-process workers announce to the coordinator.
    pub worker_ids: Vec<String>,
}

impl Standalone {
    /// Opens the configured backends (waiting for them while unreachable) and starts
    /// every service on them.
    pub async fn start(settings: Settings, shutdown: &CancellationToken) -> Result<Self> {
        settings.common.validate()?;
        let storage = open_storage(&settings.common.storage_url(), shutdown).await?;
        let bus_options = settings.bus_options();
        let bus = open_bus(&settings.common.bus_url(), &bus_options, shutdown).await?;
        // The in-process bus declared these at creation; on RabbitMQ make sure they exist
        // before the workers publish (passively first, see docs/ARCHITECTURE.md §4).
        for queue in &bus_options.topology.queues {
            bus.declare(queue).await.map_err(|err| Error::Service {
                service: "bus",
                source: Box::new(err),
            })?;
        }
        Self::start_with(settings, storage, bus, shutdown).await
    }

    /// Starts every service of the service table on the given backends: binds the api's
    /// and the coordinator's listeners, creates the internal accounts that connect the
    /// workers and the bot to them, and spawns each service whose configuration allows
    /// it. The services stop when `shutdown` is cancelled or when [`Standalone::run`]
    /// sees one of them fail.
    pub async fn start_with(
        settings: Settings,
        storage: Arc<dyn Storage>,
        bus: Arc<dyn Bus>,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        Self::start_table(settings, storage, bus, shutdown, SERVICES).await
    }

    /// [`Standalone::start_with`] with another table of services (the api's and the
    /// coordinator's listeners are bound whatever the table holds: the internal accounts
    /// point at them).
    pub async fn start_table(
        settings: Settings,
        storage: Arc<dyn Storage>,
        bus: Arc<dyn Bus>,
        shutdown: &CancellationToken,
        table: &[ServiceRow],
    ) -> Result<Self> {
        let mut bound = Bound::default();
        let api_addr = bound.bind("api.listen", settings.api.listen).await?;
        let coordinator_listen = parse_addr(&settings.coordinator.listen, "coordinator.listen")?;
        let coordinator_addr = bound.bind("coordinator.listen", coordinator_listen).await?;
        let settings = wired(settings, &storage, api_addr, coordinator_addr).await?;

        // One registry for every service: the api's `/metrics` serves them all.
        let registry = prometheus::Registry::new();
        bus.metrics().register(&registry);
        storage.register_metrics(&registry);
        let shared = Shared {
            storage,
            bus,
            registry,
        };
        let mut running = Self::empty(&settings, &shared.bus, shutdown, api_addr, coordinator_addr);
        for row in table {
            match (row.build)(&settings, Mode::Standalone) {
                Ok(service) => running.start_service(service, &mut bound, &shared).await?,
                Err(why) => running.disabled(row.name, why),
            }
        }
        running.summary.push(SummaryLine {
            service: "settings page",
            status: settings_page_status(&settings, api_addr),
        });
        Ok(running)
    }

    /// Nothing running yet: the summary names the backends.
    fn empty(
        settings: &Settings,
        bus: &Arc<dyn Bus>,
        shutdown: &CancellationToken,
        api_addr: SocketAddr,
        coordinator_addr: SocketAddr,
    ) -> Self {
        Self {
            tasks: JoinSet::new(),
            services: shutdown.child_token(),
            bus: bus.clone(),
            summary: vec![
                SummaryLine {
                    service: "storage",
                    status: redact_url(&settings.common.storage_url()),
                },
                SummaryLine {
                    service: "bus",
                    status: redact_url_list(&settings.common.bus_url()),
                },
            ],
            api_addr,
            coordinator_addr,
            youtube_addr: None,
            worker_ids: Vec::new(),
        }
    }

    /// Hands `service` its listeners (bound earlier or now) and the shared backends, and
    /// spawns it.
    async fn start_service(
        &mut self,
        service: Box<dyn Service>,
        bound: &mut Bound,
        shared: &Shared,
    ) -> Result<()> {
        let needs = service.needs();
        let mut listeners = Vec::with_capacity(needs.listeners.len());
        for listen in &needs.listeners {
            let listener = bound.take_or_bind(listen).await?;
            if listen.key == "youtube.listen" {
                self.youtube_addr = Some(local_addr(&listener, listen.key)?);
            }
            listeners.push(listener);
        }
        let cx = ServiceContext {
            storage: needs
                .uses_storage()
                .then(|| StorageGrant::new(shared.storage.clone(), &needs.storage)),
            bus: needs.bus.then(|| shared.bus.clone()),
            listeners,
            registry: shared.registry.clone(),
            shutdown: self.services.clone(),
        };
        self.worker_ids
            .extend(service.worker_id().map(str::to_owned));
        let name = service.name();
        self.spawn(name, service.describe(), async move {
            service.run(cx).await.map_err(|source| Error::Service {
                service: name,
                source,
            })
        });
        Ok(())
    }

    fn spawn(
        &mut self,
        service: &'static str,
        status: String,
        run: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) {
        self.tasks.spawn(async move { (service, run.await) });
        self.summary.push(SummaryLine { service, status });
    }

    fn disabled(&mut self, service: &'static str, why: impl std::fmt::Display) {
        self.summary.push(SummaryLine {
            service,
            status: format!("disabled: {why}"),
        });
    }

    /// What runs where, one line per service, as printed at start-up.
    pub fn summary(&self) -> &[SummaryLine] {
        &self.summary
    }

    /// The summary as text for the terminal.
    pub fn summary_text(&self) -> String {
        let width = self
            .summary
            .iter()
            .map(|line| line.service.len())
            .max()
            .unwrap_or(0);
        let mut text = String::from("stargazer standalone (Ctrl-C to stop):");
        for line in &self.summary {
            text.push_str(&format!("\n  {:width$}  {}", line.service, line.status));
        }
        text
    }

    /// Runs until `shutdown` (the token given to start) is cancelled or a service
    /// fails; then stops the others, giving them [`SHUTDOWN_GRACE`] to finish in-flight
    /// work, and closes the bus. Returns the first failure.
    pub async fn run(mut self, shutdown: &CancellationToken) -> Result<()> {
        let mut failure = None;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(joined) = self.tasks.join_next() => {
                failure = describe_exit(joined).err();
            }
        }
        self.services.cancel();
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(joined) = tasks.join_next().await {
                if let Err(err) = describe_exit(joined) {
                    tracing::error!("{err}");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "some services did not stop in time");
            self.tasks.abort_all();
        }
        self.bus.close().await;
        match failure {
            Some(err) => Err(err),
            None => {
                tracing::info!("standalone stopped cleanly");
                Ok(())
            }
        }
    }
}

fn local_addr(listener: &tokio::net::TcpListener, key: &str) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        key: key.to_owned(),
        source,
    })
}

fn describe_exit(
    joined: std::result::Result<(&'static str, Result<()>), tokio::task::JoinError>,
) -> Result<()> {
    match joined {
        Ok((service, Ok(()))) => {
            tracing::info!(service, "service stopped");
            Ok(())
        }
        Ok((_, Err(err))) => Err(err),
        Err(err) => Err(Error::Panicked(err.to_string())),
    }
}

/// What every in-process service shares.
struct Shared {
    storage: Arc<dyn Storage>,
    bus: Arc<dyn Bus>,
    registry: prometheus::Registry,
}

/// Listeners standalone binds before building the services (the addresses the others
/// are wired to), handed to the service that asks for the same key.
#[derive(Default)]
struct Bound {
    listeners: Vec<(&'static str, tokio::net::TcpListener)>,
}

impl Bound {
    /// Binds `addr` for config key `key` and returns the address it got.
    async fn bind(&mut self, key: &'static str, addr: SocketAddr) -> Result<SocketAddr> {
        let listener = bind(addr, key).await?;
        let bound = local_addr(&listener, key)?;
        self.listeners.push((key, listener));
        Ok(bound)
    }

    /// The listener bound earlier for `listen.key`, or a new one.
    async fn take_or_bind(&mut self, listen: &Listen) -> Result<tokio::net::TcpListener> {
        match self
            .listeners
            .iter()
            .position(|(key, _)| *key == listen.key)
        {
            Some(index) => Ok(self.listeners.swap_remove(index).1),
            None => bind(listen.addr, listen.key).await,
        }
    }
}

/// The settings standalone's services run with: the bound api and coordinator addresses,
/// internal accounts for the workers (→ coordinator) and the bot (→ api), and `/settings`
/// links that lead somewhere.
async fn wired(
    mut settings: Settings,
    storage: &Arc<dyn Storage>,
    api_addr: SocketAddr,
    coordinator_addr: SocketAddr,
) -> Result<Settings> {
    settings.api.listen = api_addr;
    settings.coordinator.listen = coordinator_addr.to_string();
    let worker_password = internal_account(
        storage,
        WORKER_ACCOUNT,
        Permissions {
            coordinator: Some(Access::Ro),
            mq: Some(Access::Rw),
            ..Permissions::default()
        },
    )
    .await?;
    let bot_password = internal_account(
        storage,
        BOT_ACCOUNT,
        Permissions {
            api: Some(Access::Rw),
            mq: Some(Access::Ro),
            ..Permissions::default()
        },
    )
    .await?;
    settings.worker = WorkerSection {
        coordinator_url: format!("ws://{}/v1/worker", connect_addr(coordinator_addr)),
        username: WORKER_ACCOUNT.to_owned(),
        password: worker_password,
        id: if settings.worker.id.is_empty() {
            stored_worker_id(storage).await?
        } else {
            settings.worker.id.clone()
        },
    };
    let telegram = &mut settings.telegram;
    telegram.stargazer_api_url = format!("http://{}", connect_addr(api_addr));
    telegram.frontend_url = settings_link_base(&telegram.frontend_url, api_addr);
    telegram.stargazer_api_username = BOT_ACCOUNT.to_owned();
    telegram.stargazer_api_password = bot_password.clone();
    let api_url = format!("http://{}", connect_addr(api_addr));
    settings.discord.frontend_url = settings_link_base(&settings.discord.frontend_url, api_addr);
    settings.qq.frontend_url = settings_link_base(&settings.qq.frontend_url, api_addr);
    settings.discord.stargazer_api_url = api_url.clone();
    settings.discord.stargazer_api_username = BOT_ACCOUNT.to_owned();
    settings.discord.stargazer_api_password = bot_password.clone();
    settings.qq.stargazer_api_url = api_url;
    settings.qq.stargazer_api_username = BOT_ACCOUNT.to_owned();
    settings.qq.stargazer_api_password = bot_password;
    Ok(settings)
}

/// Where the settings page is, for the summary.
fn settings_page_status(settings: &Settings, api_addr: SocketAddr) -> String {
    let page = format!("http://{}/", connect_addr(api_addr));
    match settings
        .api
        .frontend_dir
        .as_ref()
        .filter(|dir| dir.is_dir())
    {
        Some(dir) => format!("{page} (from {})", dir.display()),
        None => {
            format!("{page} says how to build it (cd frontend && npm ci && npm run build)")
        }
    }
}

/// Where standalone's `/settings` links point: the configured frontend URL, unless it is
/// the bot's default (on which nothing listens in standalone); then the api's own address,
/// which serves the page (or says how to build it).
fn settings_link_base(configured: &str, api_addr: SocketAddr) -> String {
    if configured == stargazer_bot_telegram::BotConfig::default().frontend_url {
        format!("http://{}/", connect_addr(api_addr))
    } else {
        configured.to_owned()
    }
}

/// Storage namespace and key of the standalone worker's identity.
const WORKER_ID_NAMESPACE: &str = "standalone";
const WORKER_ID_KEY: &str = "worker_id";

/// The standalone worker's id, kept in storage: created at the first start, the same after
/// every restart on that storage. The in-process coordinator's snapshot assigns the
/// channels to this id, so a restarted worker gets them back at once instead of after the
/// old id's heartbeat timeout (during which the hub's pushes would find nobody).
async fn stored_worker_id(storage: &Arc<dyn Storage>) -> Result<String> {
    if let Some(serde_json::Value::String(id)) =
        storage.kv_get(WORKER_ID_NAMESPACE, WORKER_ID_KEY).await?
    {
        if !id.trim().is_empty() {
            return Ok(id);
        }
    }
    let id = format!("standalone-{}", Uuid::new_v4().simple());
    storage
        .kv_put(
            WORKER_ID_NAMESPACE,
            WORKER_ID_KEY,
            &serde_json::Value::String(id.clone()),
        )
        .await?;
    Ok(id)
}

/// Replaces an internal account with a fresh random password and returns the password.
async fn internal_account(
    storage: &Arc<dyn Storage>,
    username: &str,
    permissions: Permissions,
) -> Result<String> {
    let password = auth::new_password();
    // These passwords are 192 random bits that never leave the process: key stretching
    // adds nothing against guessing them, so a low round count keeps start-up quick.
    replace_credential(
        storage,
        username,
        &password,
        permissions,
        INTERNAL_ACCOUNT_ITERATIONS,
    )
    .await?;
    Ok(password)
}

/// Stores credential `username` with `password` hashed in `iterations` PBKDF2 rounds
/// (off the async threads) and `permissions`, replacing one of that name.
pub async fn replace_credential(
    storage: &Arc<dyn Storage>,
    username: &str,
    password: &str,
    permissions: Permissions,
    iterations: u32,
) -> Result<()> {
    let account_error = |reason: String| Error::Account {
        username: username.to_owned(),
        reason,
    };
    let to_hash = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&to_hash, iterations))
        .await
        .map_err(|e| account_error(e.to_string()))?
        .map_err(|e| account_error(e.to_string()))?;
    storage.delete_credential(username).await?;
    storage
        .insert_credential(&Credential {
            username: username.to_owned(),
            hash,
            permissions,
            queues: Vec::new(),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_links_point_at_the_api_unless_configured() {
        let api: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let default = stargazer_bot_telegram::BotConfig::default().frontend_url;
        assert_eq!(settings_link_base(&default, api), "http://127.0.0.1:8080/");
        // Every bot's default is the same, so each is pointed at the api.
        assert_eq!(
            stargazer_bot_discord::DiscordConfig::default().frontend_url,
            default
        );
        assert_eq!(stargazer_bot_qq::QqConfig::default().frontend_url, default);
        assert_eq!(
            settings_link_base("https://settings.example/", api),
            "https://settings.example/"
        );
    }

    #[tokio::test]
    async fn the_worker_id_survives_a_restart_on_the_same_storage() {
        let dir = std::env::temp_dir().join(format!("sg-standalone-id-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("db.sqlite").display());
        let first = {
            let storage = stargazer_core::storage::connect(&url).await.unwrap();
            stored_worker_id(&storage).await.unwrap()
        };
        assert!(first.starts_with("standalone-"), "{first}");
        let storage = stargazer_core::storage::connect(&url).await.unwrap();
        assert_eq!(stored_worker_id(&storage).await.unwrap(), first);
        let other = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        assert_ne!(stored_worker_id(&other).await.unwrap(), first);
        let _ = std::fs::remove_dir_all(dir);
    }
}
