//! The whole platform wired like `stargazer standalone` (stargazer/src/standalone.rs):
//! api, coordinator, YouTube and X workers, the three middlewares and the Telegram bot,
//! each started through its library `run`, with service accounts created in storage, every
//! external base URL pointed at the [`crate::servers`] and timings compressed through
//! configuration (heartbeats, poll intervals and retry pauses in milliseconds).
//!
//! Unlike standalone, each service runs as a [`Process`] so a test can stop, kill and
//! restart one while the others carry on; on the production pair each also opens its own
//! storage and bus connections, as separate processes do.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use stargazer_api::client::ApiClient;
use stargazer_api::types::{AddUser, Entity, ErrorCode, NewEntity, TaskParams, UpdateSubscription};
use stargazer_api::ApiConfig;
use stargazer_bot_telegram::BotConfig;
use stargazer_coordinator::CoordinatorConfig;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::{Access, Credential, Permissions, TaskKind};
use stargazer_core::routing;
use stargazer_core::storage::Storage;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_middleware_delay::DelayConfig;
use stargazer_middleware_live_check::LiveCheckConfig;
use stargazer_middleware_translate::TranslateConfig;
use stargazer_worker_twitter::TwitterConfig;
use stargazer_worker_youtube::YoutubeConfig;
use uuid::Uuid;

use crate::backends::{Backends, Pair, Source};
use crate::process::Process;
use crate::servers::deepl::Deepl;
use crate::servers::hub::Hub;
use crate::servers::telegram::TelegramServer;
use crate::servers::x::XServer;
use crate::servers::youtube::Youtube;
use crate::{Error, Result};

/// The admin account (entity CRUD through the api).
pub const ADMIN_USER: &str = "e2e-admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "e2e-admin-password";
/// The bot's service account (api rw, mq ro).
pub const BOT_USER: &str = "e2e-bot";
/// Its password.
pub const BOT_PASSWORD: &str = "e2e-bot-password";
/// The workers' service account (coordinator ro, mq rw).
pub const WORKER_USER: &str = "e2e-worker";
/// Its password.
pub const WORKER_PASSWORD: &str = "e2e-worker-password";

/// PBKDF2 rounds of the test accounts: the passwords are test constants, so stretching
/// would only slow every login down.
const ITERATIONS: u32 = 1_000;

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn text(err: impl std::fmt::Display) -> String {
    err.to_string()
}

fn service_error(service: &str, reason: impl std::fmt::Display) -> Error {
    Error::Service {
        service: service.to_owned(),
        reason: reason.to_string(),
    }
}

/// The external services, played by local servers.
pub struct Externals {
    /// The WebSub hub.
    pub hub: Hub,
    /// YouTube: Data API and channel feeds.
    pub youtube: Youtube,
    /// X API v2.
    pub x: XServer,
    /// DeepL.
    pub deepl: Deepl,
    /// The Telegram Bot API.
    pub telegram: TelegramServer,
}

impl Externals {
    /// Starts every server with fresh credentials.
    pub async fn start() -> Result<Self> {
        let id = crate::unique();
        Ok(Self {
            hub: Hub::start().await?,
            youtube: Youtube::start(&format!("AIza-e2e-{id}")).await?,
            x: XServer::start(&format!("AAAA-e2e-{id}")).await?,
            deepl: Deepl::start(&format!("{id}:fx")).await?,
            telegram: TelegramServer::start(&format!(
                "{}:AAE2E{id}",
                crate::servers::telegram::BOT_ID
            ))
            .await?,
        })
    }
}

/// Every service's configuration section.
#[derive(Debug, Clone)]
pub struct Configs {
    /// `[api]`.
    pub api: ApiConfig,
    /// `[coordinator]`.
    pub coordinator: CoordinatorConfig,
    /// `[youtube]` (listen address and public URL are set per worker).
    pub youtube: YoutubeConfig,
    /// `[twitter]`.
    pub twitter: TwitterConfig,
    /// `[delay]`.
    pub delay: DelayConfig,
    /// `[translate]`.
    pub translate: TranslateConfig,
    /// `[live_check]`.
    pub live_check: LiveCheckConfig,
    /// `[telegram]`.
    pub telegram: BotConfig,
}

impl Configs {
    /// Settings pointing at `ext` with timings compressed from minutes to milliseconds.
    fn compressed(ext: &Externals, api_addr: SocketAddr) -> Self {
        Self {
            api: ApiConfig {
                listen: api_addr,
                pbkdf2_iterations: ITERATIONS,
                ..ApiConfig::default()
            },
            coordinator: CoordinatorConfig {
                heartbeat_interval_ms: 300,
                heartbeat_misses: 2,
                snapshot_interval_ms: 300,
                startup_hold_ms: Some(0),
                ack_timeout_ms: 10_000,
                ..CoordinatorConfig::default()
            },
            youtube: YoutubeConfig {
                api_key: ext.youtube.api_key.clone(),
                data_api_base: ext.youtube.base.clone(),
                hub_url: ext.hub.url.clone(),
                feed_base: ext.youtube.base.clone(),
                verify_timeout_seconds: 5,
                hub_retry_initial_ms: 100,
                hub_retry_max_seconds: 2,
                // WebSub only; tests that rely on the fallback poll turn it on.
                poll_interval_seconds: 0,
                batch_window_ms: 50,
                api_retry_initial_ms: 100,
                quota_retry_initial_seconds: 1,
                api_retry_max_seconds: 2,
                http_timeout_seconds: 5,
                ..YoutubeConfig::default()
            },
            twitter: TwitterConfig {
                bearer_token: ext.x.token.clone(),
                api_base: ext.x.base.clone(),
                poll_interval_seconds: 1,
                auth_backoff_initial_seconds: 1,
                rate_limit_fallback_seconds: 2,
                error_backoff_max_seconds: 2,
                http_timeout_seconds: 5,
                ..TwitterConfig::default()
            },
            delay: DelayConfig {
                retry_delay_ms: 100,
                shutdown_grace_ms: 5_000,
                ..DelayConfig::default()
            },
            translate: TranslateConfig {
                deepl_key: ext.deepl.key.clone(),
                deepl_base_url: ext.deepl.base.clone(),
                backoff_initial_ms: 50,
                backoff_max_ms: 1_000,
                request_timeout_ms: 5_000,
                retry_delay_ms: 100,
                ..TranslateConfig::default()
            },
            live_check: LiveCheckConfig {
                api_base_url: ext.youtube.base.clone(),
                api_key: ext.youtube.api_key.clone(),
                poll_interval_ms: 200,
                give_up_after_ms: 120_000,
                backoff_initial_ms: 100,
                backoff_max_ms: 1_000,
                request_timeout_ms: 5_000,
                retry_delay_ms: 100,
                ..LiveCheckConfig::default()
            },
            telegram: BotConfig {
                token: ext.telegram.token.clone(),
                api_url: ext.telegram.url.clone(),
                stargazer_api_url: format!("http://{api_addr}"),
                stargazer_api_username: BOT_USER.to_owned(),
                stargazer_api_password: BOT_PASSWORD.to_owned(),
                frontend_url: "https://stargazer.example".to_owned(),
                poll_timeout_secs: 1,
                // The local Bot API has no rate limits; Telegram's would make a
                // 10,000-message test take hours.
                global_per_second: 100_000.0,
                chat_interval_ms: 0,
                group_per_minute: 100_000,
                max_in_flight: 64,
                prefetch: 32,
                ..BotConfig::default()
            },
        }
    }
}

/// A running platform for one test.
pub struct Platform {
    // Declared first so the services die before the backends they use are removed.
    processes: Mutex<BTreeMap<String, Process>>,
    /// The external services.
    pub ext: Externals,
    /// Configuration used by the next `start_*` of each service.
    pub configs: Configs,
    /// The test's own storage handle (shared with the services on the in-process pair).
    pub storage: Arc<dyn Storage>,
    /// The test's own bus handle, to publish as a worker would and to observe.
    pub bus: Arc<dyn Bus>,
    /// An api client with the admin account.
    pub admin: ApiClient,
    /// An api client with the bot's account.
    pub service: ApiClient,
    /// The api's base URL (stable across api restarts).
    pub api_url: String,
    api_addr: SocketAddr,
    coordinator_addr: SocketAddr,
    reserved: Mutex<HashMap<SocketAddr, std::net::TcpListener>>,
    worker_urls: Mutex<HashMap<String, String>>,
    http: reqwest::Client,
    source: Source,
    /// The backends (their guards remove the database and virtual host when dropped).
    pub backends: Backends,
}

async fn add_credential(
    storage: &Arc<dyn Storage>,
    username: &str,
    password: &str,
    permissions: Permissions,
) -> Result<()> {
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || {
        stargazer_core::auth::hash_password(&password, ITERATIONS)
    })
    .await
    .map_err(|e| service_error("credentials", e))?
    .map_err(|e| service_error("credentials", e))?;
    storage
        .insert_credential(&Credential {
            username: username.to_owned(),
            hash,
            permissions,
        })
        .await?;
    Ok(())
}

fn reserve() -> Result<std::net::TcpListener> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?)
}

fn into_tokio(listener: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

impl Platform {
    /// Fresh backends of `pair`, the external servers, the service accounts, and every
    /// service's queue declared (so nothing published before a consumer starts is lost).
    /// No service runs yet.
    pub async fn new(pair: Pair) -> Result<Self> {
        crate::init_tracing();
        let backends = Backends::new(pair).await?;
        let source = backends.source.clone();
        let storage = source.storage().await?;
        let bus = source.bus("e2e-test").await?;
        let ext = Externals::start().await?;
        let api_listener = reserve()?;
        let api_addr = api_listener.local_addr()?;
        let coordinator_listener = reserve()?;
        let coordinator_addr = coordinator_listener.local_addr()?;
        add_credential(
            &storage,
            ADMIN_USER,
            ADMIN_PASSWORD,
            Permissions {
                api: Some(Access::Rw),
                admin: Some(Access::Rw),
                ..Permissions::default()
            },
        )
        .await?;
        add_credential(
            &storage,
            BOT_USER,
            BOT_PASSWORD,
            Permissions {
                api: Some(Access::Rw),
                mq: Some(Access::Ro),
                ..Permissions::default()
            },
        )
        .await?;
        add_credential(
            &storage,
            WORKER_USER,
            WORKER_PASSWORD,
            Permissions {
                coordinator: Some(Access::Ro),
                mq: Some(Access::Rw),
                ..Permissions::default()
            },
        )
        .await?;
        let configs = Configs::compressed(&ext, api_addr);
        let api_url = format!("http://{api_addr}");
        let admin = ApiClient::new(&api_url)?.with_basic(ADMIN_USER, ADMIN_PASSWORD);
        let service = ApiClient::new(&api_url)?.with_basic(BOT_USER, BOT_PASSWORD);
        let platform = Self {
            processes: Mutex::new(BTreeMap::new()),
            ext,
            configs,
            storage,
            bus,
            admin,
            service,
            api_url,
            api_addr,
            coordinator_addr,
            reserved: Mutex::new(HashMap::from([
                (api_addr, api_listener),
                (coordinator_addr, coordinator_listener),
            ])),
            worker_urls: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| service_error("http client", e))?,
            source,
            backends,
        };
        for spec in platform.queue_specs() {
            platform.bus.declare(&spec).await?;
        }
        Ok(platform)
    }

    /// The queues of the middlewares and the bot, as configured now.
    pub fn queue_specs(&self) -> Vec<QueueSpec> {
        let c = &self.configs;
        vec![
            QueueSpec::new(
                c.delay.queue.clone(),
                routing::middleware_pattern("delay"),
                c.delay.prefetch,
            ),
            QueueSpec::new(
                c.translate.queue.clone(),
                routing::middleware_pattern("translate"),
                c.translate.prefetch,
            ),
            QueueSpec::new(
                c.live_check.queue.clone(),
                routing::middleware_pattern("live_check"),
                c.live_check.prefetch,
            ),
            QueueSpec::new(
                c.telegram.queue.clone(),
                routing::READY_PATTERN,
                c.telegram.prefetch,
            ),
        ]
    }

    /// Which backend pair this platform runs on.
    pub fn pair(&self) -> Pair {
        self.backends.pair
    }

    fn listener_at(&self, addr: SocketAddr) -> Result<std::net::TcpListener> {
        if let Some(listener) = crate::servers::lock(&self.reserved).remove(&addr) {
            return Ok(listener);
        }
        // A restart: the previous instance closed its listener; bind the same address.
        Ok(std::net::TcpListener::bind(addr)?)
    }

    fn insert(&self, process: Process) {
        let name = process.name().to_owned();
        if let Some(previous) = crate::servers::lock(&self.processes).insert(name, process) {
            previous.kill();
        }
    }

    async fn wait_healthy(&self, service: &str, url: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(response) = self.http.get(url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if self.has_exited(service) {
                return Err(service_error(service, "exited during start-up"));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(service_error(service, format!("{url} never answered 200")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn has_exited(&self, service: &str) -> bool {
        crate::servers::lock(&self.processes)
            .get(service)
            .is_some_and(Process::is_finished)
    }

    /// Starts the api on its fixed address and waits for `/healthz`.
    pub async fn start_api(&self) -> Result<()> {
        let listener = self.listener_at(self.api_addr)?;
        let (config, source) = (self.configs.api.clone(), self.source.clone());
        self.insert(Process::start("api", move |token| async move {
            let storage = source.storage().await.map_err(text)?;
            let listener = into_tokio(listener).map_err(text)?;
            stargazer_api::run(config, listener, storage, token)
                .await
                .map_err(text)
        })?);
        self.wait_healthy("api", &format!("{}/healthz", self.api_url))
            .await
    }

    /// Starts the coordinator on its fixed address and waits for `/healthz`.
    pub async fn start_coordinator(&self) -> Result<()> {
        let listener = self.listener_at(self.coordinator_addr)?;
        let mut config = self.configs.coordinator.clone();
        config.listen = self.coordinator_addr.to_string();
        let source = self.source.clone();
        self.insert(Process::start("coordinator", move |token| async move {
            let storage = source.storage().await.map_err(text)?;
            let listener = into_tokio(listener).map_err(text)?;
            stargazer_coordinator::run(config, listener, storage, token)
                .await
                .map_err(text)
        })?);
        self.wait_healthy(
            "coordinator",
            &format!("http://{}/healthz", self.coordinator_addr),
        )
        .await
    }

    fn worker_runtime(&self, id: &str, kind: TaskKind) -> WorkerRuntimeConfig {
        let mut runtime = WorkerRuntimeConfig::new(
            format!("ws://{}/v1/worker", self.coordinator_addr),
            WORKER_USER,
            WORKER_PASSWORD,
            id,
            kind,
        );
        runtime.reconnect_max = Duration::from_millis(300);
        runtime
    }

    /// Starts YouTube worker `id`, with its own callback server, and waits until the
    /// coordinator sees it. Its service name and worker id are both `worker-youtube-<id>`
    /// (worker ids must differ across kinds: the coordinator evicts a worker that
    /// re-announces with another kind). Returns its public URL: the prefix of every
    /// WebSub callback it registers.
    pub async fn start_youtube_worker(&self, id: &str) -> Result<String> {
        let name = format!("worker-youtube-{id}");
        let listener = reserve()?;
        let addr = listener.local_addr()?;
        let mut config = self.configs.youtube.clone();
        config.listen = addr;
        config.public_url = format!("http://{addr}");
        let public_url = config.public_url.clone();
        let runtime = self.worker_runtime(&name, TaskKind::Youtube);
        let (source, bus_name) = (self.source.clone(), name.clone());
        self.insert(Process::start(&name, move |token| async move {
            let storage = source.storage().await.map_err(text)?;
            let bus = source.bus(&bus_name).await.map_err(text)?;
            let listener = into_tokio(listener).map_err(text)?;
            stargazer_worker_youtube::run(config, runtime, listener, storage, bus, token)
                .await
                .map_err(text)
        })?);
        crate::servers::lock(&self.worker_urls).insert(id.to_owned(), public_url.clone());
        self.wait_worker_connected(&name).await?;
        Ok(public_url)
    }

    /// Starts X worker `id` (service name and worker id `worker-twitter-<id>`) and waits
    /// until the coordinator sees it.
    pub async fn start_twitter_worker(&self, id: &str) -> Result<()> {
        let name = format!("worker-twitter-{id}");
        let config = self.configs.twitter.clone();
        let runtime = self.worker_runtime(&name, TaskKind::Twitter);
        let (source, bus_name) = (self.source.clone(), name.clone());
        self.insert(Process::start(&name, move |token| async move {
            let storage = source.storage().await.map_err(text)?;
            let bus = source.bus(&bus_name).await.map_err(text)?;
            stargazer_worker_twitter::run(config, runtime, storage, bus, token)
                .await
                .map_err(text)
        })?);
        self.wait_worker_connected(&name).await
    }

    /// Waits until the coordinator reports worker `id` (its service name) connected.
    async fn wait_worker_connected(&self, id: &str) -> Result<()> {
        let service = id;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(status) = self.coordinator_status().await {
                let connected = status["workers"]
                    .as_array()
                    .is_some_and(|ws| ws.iter().any(|w| w["id"] == id && w["connected"] == true));
                if connected {
                    return Ok(());
                }
            }
            if self.has_exited(service) {
                return Err(service_error(service, "exited during start-up"));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(service_error(service, "never connected to the coordinator"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts middleware-delay.
    pub async fn start_delay(&self) -> Result<()> {
        let config = self.configs.delay.clone();
        self.bus
            .declare(&QueueSpec::new(
                config.queue.clone(),
                routing::middleware_pattern("delay"),
                config.prefetch,
            ))
            .await?;
        let source = self.source.clone();
        self.insert(Process::start(
            "middleware-delay",
            move |token| async move {
                let storage = source.storage().await.map_err(text)?;
                let bus = source.bus("middleware-delay").await.map_err(text)?;
                stargazer_middleware_delay::run(config, storage, bus, token)
                    .await
                    .map_err(text)
            },
        )?);
        Ok(())
    }

    /// Starts middleware-translate.
    pub async fn start_translate(&self) -> Result<()> {
        let config = self.configs.translate.clone();
        self.bus
            .declare(&QueueSpec::new(
                config.queue.clone(),
                routing::middleware_pattern("translate"),
                config.prefetch,
            ))
            .await?;
        let source = self.source.clone();
        self.insert(Process::start(
            "middleware-translate",
            move |token| async move {
                let storage = source.storage().await.map_err(text)?;
                let bus = source.bus("middleware-translate").await.map_err(text)?;
                stargazer_middleware_translate::run(config, storage, bus, token)
                    .await
                    .map_err(text)
            },
        )?);
        Ok(())
    }

    /// Starts middleware-live-check.
    pub async fn start_live_check(&self) -> Result<()> {
        let config = self.configs.live_check.clone();
        self.bus
            .declare(&QueueSpec::new(
                config.queue.clone(),
                routing::middleware_pattern("live_check"),
                config.prefetch,
            ))
            .await?;
        let source = self.source.clone();
        self.insert(Process::start(
            "middleware-live-check",
            move |token| async move {
                let storage = source.storage().await.map_err(text)?;
                let bus = source.bus("middleware-live-check").await.map_err(text)?;
                stargazer_middleware_live_check::run(config, storage, bus, token)
                    .await
                    .map_err(text)
            },
        )?);
        Ok(())
    }

    /// Starts the Telegram bot.
    pub async fn start_bot(&self) -> Result<()> {
        let config = self.configs.telegram.clone();
        self.bus
            .declare(&QueueSpec::new(
                config.queue.clone(),
                routing::READY_PATTERN,
                config.prefetch,
            ))
            .await?;
        let source = self.source.clone();
        self.insert(Process::start("bot-telegram", move |token| async move {
            let storage = source.storage().await.map_err(text)?;
            let bus = source.bus("bot-telegram").await.map_err(text)?;
            stargazer_bot_telegram::run(config, storage, bus, token)
                .await
                .map_err(text)
        })?);
        Ok(())
    }

    /// Starts everything `stargazer standalone` runs, in its order: api, coordinator,
    /// the middlewares, one worker of each kind (id `a`), the bot.
    pub async fn start_all(&self) -> Result<()> {
        self.start_api().await?;
        self.start_coordinator().await?;
        self.start_delay().await?;
        self.start_translate().await?;
        self.start_live_check().await?;
        self.start_youtube_worker("a").await?;
        self.start_twitter_worker("a").await?;
        self.start_bot().await?;
        self.ext.telegram.wait_polling(READY_TIMEOUT).await;
        Ok(())
    }

    /// The public URL of YouTube worker `id`.
    pub fn worker_url(&self, id: &str) -> Option<String> {
        crate::servers::lock(&self.worker_urls).get(id).cloned()
    }

    /// Whether service `name` is running (started and not yet returned).
    pub fn is_running(&self, name: &str) -> bool {
        crate::servers::lock(&self.processes)
            .get(name)
            .is_some_and(|p| !p.is_finished())
    }

    /// Stops service `name` gracefully and returns what its `run` returned.
    pub async fn stop(&self, name: &str) -> Result<()> {
        let process = crate::servers::lock(&self.processes).remove(name);
        match process {
            Some(process) => process.stop().await,
            None => Err(service_error(name, "is not running")),
        }
    }

    /// Kills service `name` as SIGKILL would.
    pub fn kill(&self, name: &str) -> Result<()> {
        match crate::servers::lock(&self.processes).remove(name) {
            Some(process) => {
                process.kill();
                Ok(())
            }
            None => Err(service_error(name, "is not running")),
        }
    }

    /// Stops every service gracefully (bot and workers first, api last), closes the
    /// test's bus handle, and reports the first service that failed or failed to stop.
    pub async fn shutdown(self) -> Result<()> {
        let mut processes: Vec<Process> =
            std::mem::take(&mut *crate::servers::lock(&self.processes))
                .into_values()
                .collect();
        let rank = |name: &str| match name {
            "bot-telegram" => 0,
            n if n.starts_with("worker-") => 1,
            n if n.starts_with("middleware-") => 2,
            "coordinator" => 3,
            _ => 4,
        };
        processes.sort_by_key(|p| rank(p.name()));
        let mut first_failure = None;
        for process in processes {
            if let Err(err) = process.stop().await {
                first_failure.get_or_insert(err);
            }
        }
        self.bus.close().await;
        match first_failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// `GET /v1/status?tasks=true` of the coordinator.
    pub async fn coordinator_status(&self) -> Result<Value> {
        let response = self
            .http
            .get(format!(
                "http://{}/v1/status?tasks=true",
                self.coordinator_addr
            ))
            .basic_auth(WORKER_USER, Some(WORKER_PASSWORD))
            .send()
            .await
            .map_err(|e| service_error("coordinator", e))?;
        response
            .json()
            .await
            .map_err(|e| service_error("coordinator", e))
    }

    /// Creates an entity through the api RPC `newEntity`, as an admin.
    pub async fn new_entity(
        &self,
        id: Option<Uuid>,
        names: &[(&str, &str)],
        translate_to: &[&str],
        tasks: Vec<TaskParams>,
    ) -> Result<Entity> {
        let names: BTreeMap<String, String> = names
            .iter()
            .map(|(l, n)| (l.to_string(), n.to_string()))
            .collect();
        let default_language = names
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| "en".to_owned());
        let request = NewEntity {
            id,
            names,
            default_language,
            group: None,
            translate_to: translate_to.iter().map(|s| s.to_string()).collect(),
            tasks,
        };
        Ok(self.admin.new_entity(&request).await?)
    }

    /// Registers `chat` and subscribes it to `entity` (every kind) through the api, as
    /// the bot does on behalf of a chat.
    pub async fn subscribe_chat(&self, chat: i64, entity: Uuid) -> Result<()> {
        let user = match self.service.find_user("telegram", &chat.to_string()).await {
            Ok(user) => user,
            Err(err) if err.code() == Some(ErrorCode::NotFound) => {
                self.service
                    .add_user(&AddUser {
                        im: "telegram".into(),
                        chat_id: chat.to_string(),
                        name: format!("Viewer{chat}"),
                        language: "en".into(),
                    })
                    .await?
            }
            Err(err) => return Err(err.into()),
        };
        self.service
            .update_subscription(&UpdateSubscription {
                user: Some(user.id),
                entity,
                subscribed: true,
                kinds: vec![],
            })
            .await?;
        Ok(())
    }

    /// A chat user subscribes to the entity named `name` through the bot: `/start`, then
    /// `/subscribe <name>`, then presses `Done` on the kinds keyboard (every kind stays
    /// selected). Panics with the conversation if the bot answers otherwise.
    pub async fn subscribe_through_bot(&self, chat: i64, name: &str) {
        let tg = &self.ext.telegram;
        let timeout = Duration::from_secs(30);
        tg.send_text(chat, chat, "/start");
        tg.wait_for(chat, timeout, |s| s.text.contains("Welcome to Stargazer"))
            .await;
        tg.send_text(chat, chat, &format!("/subscribe {name}"));
        let keyboard = tg
            .wait_for(chat, timeout, |s| {
                s.text.contains(&format!("Which events of {name}"))
            })
            .await;
        let done = keyboard
            .buttons()
            .into_iter()
            .find(|(label, _)| label == "Done")
            .map(|(_, data)| data)
            .unwrap_or_else(|| panic!("no Done button in {:?}", keyboard.buttons()));
        tg.press(chat, keyboard.message_id, chat, &done);
        tg.wait_message(chat, keyboard.message_id, timeout, |m| {
            m["text"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("Subscribed to {name}")))
        })
        .await;
        crate::wait::until("the button press is answered", timeout, || {
            !tg.callback_answers().is_empty()
        })
        .await;
    }
}
