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
use stargazer_core::config::redact_url;
use stargazer_core::model::{Access, Credential, Permissions, TaskKind};
use stargazer_core::storage::Storage;
use stargazer_core::{CancellationToken, Uuid};
use tokio::task::JoinSet;

use crate::backends::{bind, connect_addr, open_bus, open_storage, parse_addr};
use crate::roles::{live_check_config, worker_runtime};
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
    /// The coordinator worker ids of the in-process workers, by kind.
    pub worker_ids: Vec<(TaskKind, String)>,
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

    /// Starts every service on the given backends: binds the listeners, creates the
    /// internal accounts, and spawns each service whose configuration allows it. The
    /// services stop when `shutdown` is cancelled or when [`Standalone::run`] sees one
    /// of them fail.
    pub async fn start_with(
        settings: Settings,
        storage: Arc<dyn Storage>,
        bus: Arc<dyn Bus>,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        let api_listener = bind(settings.api.listen, "api.listen").await?;
        let api_addr = local_addr(&api_listener, "api.listen")?;
        let coordinator_addr = parse_addr(&settings.coordinator.listen, "coordinator.listen")?;
        let coordinator_listener = bind(coordinator_addr, "coordinator.listen").await?;
        let coordinator_addr = local_addr(&coordinator_listener, "coordinator.listen")?;

        let worker_password = internal_account(
            &storage,
            WORKER_ACCOUNT,
            Permissions {
                coordinator: Some(Access::Ro),
                mq: Some(Access::Rw),
                ..Permissions::default()
            },
        )
        .await?;
        let bot_password = internal_account(
            &storage,
            BOT_ACCOUNT,
            Permissions {
                api: Some(Access::Rw),
                mq: Some(Access::Ro),
                ..Permissions::default()
            },
        )
        .await?;
        let worker = WorkerSection {
            coordinator_url: format!("ws://{}/v1/worker", connect_addr(coordinator_addr)),
            username: WORKER_ACCOUNT.to_owned(),
            password: worker_password,
            id: if settings.worker.id.is_empty() {
                stored_worker_id(&storage).await?
            } else {
                settings.worker.id.clone()
            },
        };

        // One registry for every service: the api's `/metrics` serves them all.
        let registry = prometheus::Registry::new();
        bus.metrics().register(&registry);
        let services = shutdown.child_token();
        let mut running = Self {
            tasks: JoinSet::new(),
            services: services.clone(),
            bus: bus.clone(),
            summary: vec![
                SummaryLine {
                    service: "storage",
                    status: redact_url(&settings.common.storage_url()),
                },
                SummaryLine {
                    service: "bus",
                    status: redact_url(&settings.common.bus_url()),
                },
            ],
            api_addr,
            coordinator_addr,
            youtube_addr: None,
            worker_ids: Vec::new(),
        };

        {
            let (config, storage, token) =
                (settings.api.clone(), storage.clone(), services.clone());
            let registry = registry.clone();
            running.spawn(
                "api",
                format!("http://{api_addr} (RPC /v1/…, /openapi.json, /healthz, /metrics of every service)"),
                async move {
                    stargazer_api::run_with_registry(config, api_listener, storage, &registry, token)
                        .await
                        .map_err(Error::service("api"))
                },
            );
        }
        running.summary.push(SummaryLine {
            service: "settings page",
            status: match settings
                .api
                .frontend_dir
                .as_ref()
                .filter(|dir| dir.is_dir())
            {
                Some(dir) => format!(
                    "http://{}/ (from {})",
                    connect_addr(api_addr),
                    dir.display()
                ),
                None => format!(
                    "http://{}/ says how to build it (cd frontend && npm ci && npm run build)",
                    connect_addr(api_addr)
                ),
            },
        });
        {
            let (config, storage, token) = (
                settings.coordinator.clone(),
                storage.clone(),
                services.clone(),
            );
            let registry = registry.clone();
            running.spawn(
                "coordinator",
                format!("ws://{coordinator_addr}/v1/worker"),
                async move {
                    stargazer_coordinator::run_with_registry(
                        config,
                        coordinator_listener,
                        storage,
                        &registry,
                        token,
                    )
                    .await
                    .map_err(Error::service("coordinator"))
                },
            );
        }
        {
            let (config, storage, bus, token) = (
                settings.delay.clone(),
                storage.clone(),
                bus.clone(),
                services.clone(),
            );
            let registry = registry.clone();
            running.spawn("middleware-delay", "running".to_owned(), async move {
                stargazer_middleware_delay::run_with_registry(
                    config, storage, bus, &registry, token,
                )
                .await
                .map_err(Error::service("middleware-delay"))
            });
        }
        {
            let (config, storage, bus, token) = (
                settings.translate.clone(),
                storage.clone(),
                bus.clone(),
                services.clone(),
            );
            let disabled = config.validate().err();
            let status = match &disabled {
                None => format!("DeepL at {}", config.deepl_base_url),
                Some(why) => format!("pass-through, events go on untranslated: {why}"),
            };
            let registry = registry.clone();
            running.spawn("middleware-translate", status, async move {
                let result = match disabled {
                    None => {
                        stargazer_middleware_translate::run_with_registry(
                            config, storage, bus, &registry, token,
                        )
                        .await
                    }
                    Some(why) => {
                        let reason = format!("translation disabled: {why}");
                        stargazer_middleware_translate::run_untranslated(
                            config, bus, &registry, &reason, token,
                        )
                        .await
                    }
                };
                result.map_err(Error::service("middleware-translate"))
            });
        }
        let live_check = live_check_config(&settings);
        if let Err(why) = live_check.validate() {
            running.disabled("middleware-live-check", why);
        } else {
            let (storage, bus, token) = (storage.clone(), bus.clone(), services.clone());
            let registry = registry.clone();
            running.spawn("middleware-live-check", "running".to_owned(), async move {
                stargazer_middleware_live_check::run_with_registry(
                    live_check, storage, bus, &registry, token,
                )
                .await
                .map_err(Error::service("middleware-live-check"))
            });
        }
        if settings.youtube.api_key.trim().is_empty() {
            running.disabled(
                "worker-youtube",
                "youtube.api_key is not set (STARGAZER_YOUTUBE_API_KEY)",
            );
        } else {
            let listener = bind(settings.youtube.listen, "youtube.listen").await?;
            let callback_addr = local_addr(&listener, "youtube.listen")?;
            running.youtube_addr = Some(callback_addr);
            let runtime = running.worker_runtime(&worker, TaskKind::Youtube);
            let (config, storage, bus, token) = (
                settings.youtube.clone(),
                storage.clone(),
                bus.clone(),
                services.clone(),
            );
            let status = if config.websub_enabled() {
                format!(
                    "WebSub callbacks on {callback_addr} as {}",
                    config.public_url
                )
            } else {
                format!(
                    "feed polling only (youtube.public_url unset); callbacks on {callback_addr}"
                )
            };
            let registry = registry.clone();
            running.spawn("worker-youtube", status, async move {
                stargazer_worker_youtube::run_with_registry(
                    config, runtime, listener, storage, bus, &registry, token,
                )
                .await
                .map_err(Error::service("worker-youtube"))
            });
        }
        if settings.twitter.bearer_token.trim().is_empty() {
            running.disabled(
                "worker-twitter",
                "twitter.bearer_token is not set (STARGAZER_TWITTER_BEARER_TOKEN)",
            );
        } else {
            let runtime = running.worker_runtime(&worker, TaskKind::Twitter);
            let (config, storage, bus, token) = (
                settings.twitter.clone(),
                storage.clone(),
                bus.clone(),
                services.clone(),
            );
            let status = format!("X API at {}", config.api_base);
            let registry = registry.clone();
            running.spawn("worker-twitter", status, async move {
                stargazer_worker_twitter::run_with_registry(
                    config, runtime, storage, bus, &registry, token,
                )
                .await
                .map_err(Error::service("worker-twitter"))
            });
        }
        let mut telegram = settings.telegram.clone();
        telegram.stargazer_api_url = format!("http://{}", connect_addr(api_addr));
        telegram.frontend_url = settings_link_base(&telegram.frontend_url, api_addr);
        telegram.stargazer_api_username = BOT_ACCOUNT.to_owned();
        telegram.stargazer_api_password = bot_password;
        if let Err(why) = telegram.validate() {
            running.disabled("bot-telegram", why);
        } else {
            let status = format!("Bot API at {}", telegram.api_url);
            let (storage, bus, token) = (storage.clone(), bus.clone(), services.clone());
            let registry = registry.clone();
            running.spawn("bot-telegram", status, async move {
                stargazer_bot_telegram::run_with_registry(telegram, storage, bus, &registry, token)
                    .await
                    .map_err(Error::service("bot-telegram"))
            });
        }
        Ok(running)
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

    /// The runtime settings of the in-process worker of `kind`. Each kind gets its own
    /// id: the coordinator treats one id announcing two kinds as a worker that changed
    /// kind.
    fn worker_runtime(
        &mut self,
        worker: &WorkerSection,
        kind: TaskKind,
    ) -> stargazer_core::worker_runtime::WorkerRuntimeConfig {
        let mut runtime = worker_runtime(worker, kind);
        runtime.worker_id = format!("{}-{kind}", worker.id);
        self.worker_ids.push((kind, runtime.worker_id.clone()));
        runtime
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

/// Replaces an internal account with a fresh random password and returns the password.
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
