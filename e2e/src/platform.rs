//! The whole platform for one test, started through `stargazer-platform`: exactly what
//! the `stargazer` binary runs, with every external base URL pointed at the
//! [`crate::servers`] and timings compressed through configuration (heartbeats, poll
//! intervals and retry pauses in milliseconds).
//!
//! Two shapes:
//! - [`Platform::start_all`] runs `stargazer standalone` ([`Standalone`]) on the test's
//!   backends: every service in one "process", sharing them.
//! - `start_api`, `start_coordinator`, `start_youtube_worker`, … each run one
//!   `stargazer <role>` ([`run_role`]) as a [`Process`] of its own, opening its own
//!   connections from the configured URLs, so a test can stop, kill and restart one while
//!   the others carry on. Those need the production pair: separate processes cannot
//!   share an in-process bus.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use stargazer_api::client::ApiClient;
use stargazer_api::types::{AddUser, Entity, ErrorCode, NewEntity, TaskParams, UpdateSubscription};
use stargazer_api::ApiConfig;
use stargazer_bot_telegram::BotConfig;
use stargazer_coordinator::CoordinatorConfig;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::config::CommonConfig;
use stargazer_core::contract::tag;
use stargazer_core::model::{Access, Permissions};
use stargazer_core::routing;
use stargazer_core::storage::Storage;
use stargazer_middleware_delay::DelayConfig;
use stargazer_middleware_live_check::LiveCheckConfig;
use stargazer_middleware_translate::TranslateConfig;
use stargazer_platform::roles::{run_role, Role};
use stargazer_platform::settings::{Settings, WorkerSection};
use stargazer_platform::standalone::{replace_credential, Standalone};
use stargazer_worker_bilibili::BilibiliConfig;
use stargazer_worker_twitch::TwitchConfig;
use stargazer_worker_twitter::TwitterConfig;
use stargazer_worker_youtube::YoutubeConfig;
use uuid::Uuid;

use crate::backends::{Backends, Pair, Source};
use crate::process::Process;
use crate::servers::bilibili::BilibiliServer;
use crate::servers::deepl::Deepl;
use crate::servers::hub::Hub;
use crate::servers::telegram::TelegramServer;
use crate::servers::twitch::TwitchServer;
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

/// The `[worker] id` of [`Platform::start_all`]: standalone's workers announce themselves
/// as `<id>-youtube`, `<id>-twitter`, `<id>-twitch` and `<id>-bilibili`.
pub const STANDALONE_WORKER_ID: &str = "standalone-e2e";

/// The EventSub secret the Twitch worker gives the Twitch server.
pub const EVENTSUB_SECRET: &str = "e2e-eventsub-secret";

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
    /// Twitch: OAuth, Helix and the EventSub sender.
    pub twitch: TwitchServer,
    /// Bilibili: room status, signing keys and space dynamics.
    pub bilibili: BilibiliServer,
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
            twitch: TwitchServer::start(&format!("e2e-client-{id}"), &format!("e2e-secret-{id}"))
                .await?,
            bilibili: BilibiliServer::start().await?,
            deepl: Deepl::start(&format!("{id}:fx")).await?,
            telegram: TelegramServer::start(&format!(
                "{}:AAE2E{id}",
                crate::servers::telegram::BOT_ID
            ))
            .await?,
        })
    }
}

/// The configuration every service of a test starts from.
pub type Configs = Settings;

/// Settings pointing at `ext` with timings compressed from minutes to milliseconds. The
/// top-level keys (backend URLs) and `[worker]` are filled in per service.
fn compressed(ext: &Externals, api_addr: SocketAddr) -> Settings {
    Settings {
        common: CommonConfig::default(),
        worker: WorkerSection::default(),
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
        twitch: TwitchConfig {
            client_id: ext.twitch.client_id.clone(),
            client_secret: ext.twitch.client_secret.clone(),
            eventsub_secret: EVENTSUB_SECRET.to_owned(),
            // Filled in with the worker's listener when it starts.
            callback_url: "http://127.0.0.1:1/twitch/eventsub".to_owned(),
            helix_base: ext.twitch.helix_base.clone(),
            id_base: ext.twitch.id_base.clone(),
            batch_window_ms: 50,
            lookup_timeout_ms: 2_000,
            reconcile_delay_ms: 50,
            revocation_backoff_seconds: 1,
            retry_initial_ms: 100,
            retry_max_seconds: 2,
            rate_limit_fallback_seconds: 2,
            http_timeout_seconds: 5,
            ..TwitchConfig::default()
        },
        bilibili: BilibiliConfig {
            live_base: ext.bilibili.base.clone(),
            api_base: ext.bilibili.base.clone(),
            live_poll_interval_seconds: 1,
            dynamic_poll_interval_seconds: 1,
            live_cooldown_seconds: 1,
            min_request_gap_ms: 10,
            risk_backoff_initial_seconds: 1,
            risk_backoff_max_seconds: 2,
            http_timeout_seconds: 5,
            ..BilibiliConfig::default()
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
        // Not configured: the Discord and QQ bots stay off, and no queue is declared for
        // them.
        discord: Default::default(),
        qq: Default::default(),
    }
}

/// The services that consume a queue of their own.
const CONSUMERS: [&str; 4] = [
    "middleware-delay",
    "middleware-translate",
    "middleware-live-check",
    "bot-telegram",
];

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
    /// Where the second coordinator of [`Platform::start_coordinator_pair`] listens.
    standby_coordinator_addr: SocketAddr,
    /// Whether a coordinator pair runs: workers are then given both URLs.
    coordinator_pair: std::sync::atomic::AtomicBool,
    reserved: Mutex<HashMap<SocketAddr, std::net::TcpListener>>,
    worker_urls: Mutex<HashMap<String, String>>,
    metrics_addrs: Mutex<HashMap<String, SocketAddr>>,
    http: reqwest::Client,
    source: Source,
    /// When set, `start_*` run `stargazer <role>` as OS processes of this binary.
    binary: Option<PathBuf>,
    /// Where OS processes' configuration files and logs go.
    process_dir: PathBuf,
    /// The backends (their guards remove the database and virtual host when dropped).
    pub backends: Backends,
}

async fn add_credential(
    storage: &Arc<dyn Storage>,
    username: &str,
    password: &str,
    permissions: Permissions,
) -> Result<()> {
    replace_credential(storage, username, password, permissions, ITERATIONS)
        .await
        .map_err(|e| service_error("credentials", e))
}

fn reserve() -> Result<std::net::TcpListener> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?)
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
        let standby_coordinator_listener = reserve()?;
        let standby_coordinator_addr = standby_coordinator_listener.local_addr()?;
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
        let configs = compressed(&ext, api_addr);
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
            standby_coordinator_addr,
            coordinator_pair: std::sync::atomic::AtomicBool::new(false),
            reserved: Mutex::new(HashMap::from([
                (api_addr, api_listener),
                (coordinator_addr, coordinator_listener),
                (standby_coordinator_addr, standby_coordinator_listener),
            ])),
            worker_urls: Mutex::new(HashMap::new()),
            metrics_addrs: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| service_error("http client", e))?,
            source,
            backends,
            binary: None,
            process_dir: std::env::temp_dir().join(format!("stargazer-e2e-{}", crate::unique())),
        };
        for spec in platform.queue_specs() {
            platform.bus.declare(&spec).await?;
        }
        Ok(platform)
    }

    /// The queues of the middlewares and the bot, as configured now.
    pub fn queue_specs(&self) -> Vec<QueueSpec> {
        CONSUMERS.iter().map(|role| self.queue_spec(role)).collect()
    }

    /// The queue consuming service `role` reads, as configured now.
    fn queue_spec(&self, role: &str) -> QueueSpec {
        let c = &self.configs;
        match role {
            "middleware-delay" => QueueSpec::new(
                c.delay.queue.clone(),
                routing::middleware_pattern(tag::DELAY),
                c.delay.prefetch,
            ),
            "middleware-translate" => QueueSpec::new(
                c.translate.queue.clone(),
                routing::middleware_pattern(tag::TRANSLATE),
                c.translate.prefetch,
            ),
            "middleware-live-check" => QueueSpec::new(
                c.live_check.queue.clone(),
                routing::middleware_pattern(tag::LIVE_CHECK),
                c.live_check.prefetch,
            ),
            _ => QueueSpec::new(
                c.telegram.queue.clone(),
                routing::READY_PATTERN,
                c.telegram.prefetch,
            ),
        }
    }

    /// Which backend pair this platform runs on.
    pub fn pair(&self) -> Pair {
        self.backends.pair
    }

    /// Frees `addr` if this platform still holds it, so a service can bind it. After a
    /// restart the previous instance has closed its listener and the address is free.
    fn release(&self, addr: SocketAddr) {
        drop(crate::servers::lock(&self.reserved).remove(&addr));
    }

    /// The settings `stargazer <role>` would read for a service of this platform: the
    /// compressed configs plus the URLs of the test's own database and virtual host.
    fn role_settings(&self) -> Result<Settings> {
        let Source::Connect {
            storage_url,
            bus_url,
            queue_type,
        } = &self.source
        else {
            return Err(service_error(
                "platform",
                "separate service processes need the production pair",
            ));
        };
        let mut settings = self.configs.clone();
        settings.common.mongo_url = Some(storage_url.clone());
        settings.common.amqp_url = Some(bus_url.clone());
        settings.common.amqp_queue_type = *queue_type;
        Ok(settings)
    }

    /// Keeps `process` under its name; one that ran under that name before is killed.
    fn insert(&self, process: Process) {
        let name = process.name().to_owned();
        if let Some(previous) = crate::servers::lock(&self.processes).insert(name, process) {
            previous.kill();
        }
    }

    /// From now on, `start_*` run each service as a real OS process: `binary` (the
    /// `stargazer` executable) with `--config <file> <role>`, the file written from the
    /// settings the service would have run with. Their configuration files and logs are
    /// in [`Platform::process_dir`].
    pub fn run_as_processes(&mut self, binary: PathBuf) -> Result<()> {
        std::fs::create_dir_all(&self.process_dir)?;
        self.binary = Some(binary);
        Ok(())
    }

    /// Where OS processes' configuration files (`<name>.toml`) and logs (`<name>.log`)
    /// are written.
    pub fn process_dir(&self) -> &std::path::Path {
        &self.process_dir
    }

    /// The last `lines` lines of OS process `name`'s log (empty when there is none).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.process_dir.join(format!("{name}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `stargazer <role>` with `settings` as process `name`, with `metrics_listen`
    /// on a free port (see [`Platform::metrics`]).
    fn start_role(&self, name: &str, role: &str, mut settings: Settings) -> Result<()> {
        let role_named = Role::named(role).ok_or_else(|| Error::Service {
            service: role.to_owned(),
            reason: "no such service in the table".to_owned(),
        })?;
        let metrics_addr = reserve()?.local_addr()?;
        settings.common.metrics_listen = Some(metrics_addr.to_string());
        crate::servers::lock(&self.metrics_addrs).insert(name.to_owned(), metrics_addr);
        if let Some(binary) = &self.binary {
            let config = self.process_dir.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                settings
                    .to_toml()
                    .map_err(text)
                    .map_err(|e| service_error(name, e))?,
            )?;
            let log = self.process_dir.join(format!("{name}.log"));
            self.insert(Process::spawn(name, binary, &config, &[role], &log)?);
            return Ok(());
        }
        self.insert(Process::start(name, move |token| async move {
            run_role(&settings, role_named, token).await.map_err(text)
        })?);
        Ok(())
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
            .get_mut(service)
            .is_some_and(Process::is_finished)
    }

    /// Starts `stargazer api` on its fixed address and waits for `/healthz`.
    pub async fn start_api(&self) -> Result<()> {
        let mut settings = self.role_settings()?;
        settings.api.listen = self.api_addr;
        self.release(self.api_addr);
        self.start_role("api", "api", settings)?;
        self.wait_healthy("api", &format!("{}/healthz", self.api_url))
            .await
    }

    /// Starts `stargazer coordinator` on its fixed address and waits for `/healthz`.
    pub async fn start_coordinator(&self) -> Result<()> {
        let mut settings = self.role_settings()?;
        settings.coordinator.listen = self.coordinator_addr.to_string();
        self.release(self.coordinator_addr);
        self.start_role("coordinator", "coordinator", settings)?;
        self.wait_healthy(
            "coordinator",
            &format!("http://{}/healthz", self.coordinator_addr),
        )
        .await
    }

    /// Starts two coordinators, `coordinator-1` on the fixed coordinator address and
    /// `coordinator-2` on an address of its own, each with its instance id and advertised
    /// URL, and waits until both answer `/healthz` and one leads. Workers started after
    /// this are given both URLs and follow the leader.
    pub async fn start_coordinator_pair(&self) -> Result<()> {
        for (name, addr) in [
            ("coordinator-1", self.coordinator_addr),
            ("coordinator-2", self.standby_coordinator_addr),
        ] {
            let mut settings = self.role_settings()?;
            settings.coordinator.listen = addr.to_string();
            settings.coordinator.instance_id = name.to_owned();
            settings.coordinator.advertise_url = format!("ws://{addr}/v1/worker");
            self.release(addr);
            self.start_role(name, "coordinator", settings)?;
            self.wait_healthy(name, &format!("http://{addr}/healthz"))
                .await?;
        }
        self.coordinator_pair
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while self.coordinator_status().await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(service_error("coordinator", "neither instance leads"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    /// The coordinator addresses workers are given: one, or both of a pair.
    fn coordinator_addrs(&self) -> Vec<SocketAddr> {
        if self
            .coordinator_pair
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            vec![self.coordinator_addr, self.standby_coordinator_addr]
        } else {
            vec![self.coordinator_addr]
        }
    }

    /// `[worker]` of a worker process with id `id`.
    fn worker_section(&self, id: &str) -> WorkerSection {
        WorkerSection {
            coordinator_url: self
                .coordinator_addrs()
                .iter()
                .map(|addr| format!("ws://{addr}/v1/worker"))
                .collect::<Vec<_>>()
                .join(","),
            username: WORKER_USER.to_owned(),
            password: WORKER_PASSWORD.to_owned(),
            id: id.to_owned(),
        }
    }

    /// Starts `stargazer worker-youtube` as worker `id`, with its own callback server,
    /// and waits until the coordinator sees it. Its service name and worker id are both
    /// `worker-youtube-<id>` (worker ids must differ across kinds: the coordinator evicts
    /// a worker that re-announces with another kind). Returns its public URL: the prefix
    /// of every WebSub callback it registers.
    pub async fn start_youtube_worker(&self, id: &str) -> Result<String> {
        let name = format!("worker-youtube-{id}");
        let addr = reserve()?.local_addr()?;
        let mut settings = self.role_settings()?;
        settings.worker = self.worker_section(&name);
        settings.youtube.listen = addr;
        settings.youtube.public_url = format!("http://{addr}");
        let public_url = settings.youtube.public_url.clone();
        self.start_role(&name, "worker-youtube", settings)?;
        crate::servers::lock(&self.worker_urls).insert(id.to_owned(), public_url.clone());
        self.wait_worker_connected(&name, &name).await?;
        Ok(public_url)
    }

    /// Starts `stargazer worker-twitch` as worker `id` (service name and worker id
    /// `worker-twitch-<id>`), its EventSub callback on a listener of its own, and waits
    /// until the coordinator sees it. Returns its callback URL.
    pub async fn start_twitch_worker(&self, id: &str) -> Result<String> {
        let name = format!("worker-twitch-{id}");
        let addr = reserve()?.local_addr()?;
        let mut settings = self.role_settings()?;
        settings.worker = self.worker_section(&name);
        settings.twitch.listen = addr;
        settings.twitch.callback_url = format!("http://{addr}/twitch/eventsub");
        let callback = settings.twitch.callback_url.clone();
        self.start_role(&name, "worker-twitch", settings)?;
        self.wait_worker_connected(&name, &name).await?;
        Ok(callback)
    }

    /// Starts `stargazer worker-twitter` as worker `id` (service name and worker id
    /// `worker-twitter-<id>`) and waits until the coordinator sees it.
    pub async fn start_twitter_worker(&self, id: &str) -> Result<()> {
        let name = format!("worker-twitter-{id}");
        let mut settings = self.role_settings()?;
        settings.worker = self.worker_section(&name);
        self.start_role(&name, "worker-twitter", settings)?;
        self.wait_worker_connected(&name, &name).await
    }

    /// Starts `stargazer worker-bilibili` as worker `id` (service name and worker id
    /// `worker-bilibili-<id>`) and waits until the coordinator sees it.
    pub async fn start_bilibili_worker(&self, id: &str) -> Result<()> {
        let name = format!("worker-bilibili-{id}");
        let mut settings = self.role_settings()?;
        settings.worker = self.worker_section(&name);
        self.start_role(&name, "worker-bilibili", settings)?;
        self.wait_worker_connected(&name, &name).await
    }

    /// Waits until the coordinator reports worker `id` connected; `service` is the
    /// process that runs it.
    async fn wait_worker_connected(&self, service: &str, id: &str) -> Result<()> {
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

    /// Declares the queue of a consuming service, so what the test publishes before it
    /// consumes is kept, then runs `stargazer <role>`.
    async fn start_consumer(&self, role: &str) -> Result<()> {
        self.start_consumer_instance(role, role).await
    }

    /// Starts one more instance of consuming service `role` (a middleware or the bot)
    /// under service name `name`, sharing the role's queue with the others.
    pub async fn start_consumer_instance(&self, role: &str, name: &str) -> Result<()> {
        let settings = self.role_settings()?;
        self.bus.declare(&self.queue_spec(role)).await?;
        self.start_role(name, role, settings)
    }

    /// Starts `stargazer middleware-delay`.
    pub async fn start_delay(&self) -> Result<()> {
        self.start_consumer("middleware-delay").await
    }

    /// Starts `stargazer middleware-translate`.
    pub async fn start_translate(&self) -> Result<()> {
        self.start_consumer("middleware-translate").await
    }

    /// Starts `stargazer middleware-live-check`.
    pub async fn start_live_check(&self) -> Result<()> {
        self.start_consumer("middleware-live-check").await
    }

    /// Starts `stargazer bot-telegram`.
    pub async fn start_bot(&self) -> Result<()> {
        self.start_consumer("bot-telegram").await
    }

    /// Starts `stargazer standalone` on this platform's backends (the in-process pair's
    /// shared storage and bus, or the production pair's database and virtual host) as
    /// process `standalone`, and waits until the api answers, every worker is connected
    /// to the coordinator and the bot polls Telegram.
    pub async fn start_all(&self) -> Result<()> {
        let mut settings = self.configs.clone();
        settings.api.listen = self.api_addr;
        settings.coordinator.listen = self.coordinator_addr.to_string();
        settings.worker.id = STANDALONE_WORKER_ID.to_owned();
        let youtube_addr = reserve()?.local_addr()?;
        settings.youtube.listen = youtube_addr;
        settings.youtube.public_url = format!("http://{youtube_addr}");
        crate::servers::lock(&self.worker_urls)
            .insert("standalone".to_owned(), settings.youtube.public_url.clone());
        let twitch_addr = reserve()?.local_addr()?;
        settings.twitch.listen = twitch_addr;
        settings.twitch.callback_url = format!("http://{twitch_addr}/twitch/eventsub");
        self.release(self.api_addr);
        self.release(self.coordinator_addr);
        let source = self.source.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        self.insert(Process::start("standalone", move |token| async move {
            let storage = source.storage().await.map_err(text)?;
            let bus = source.bus("standalone").await.map_err(text)?;
            let running = Standalone::start_with(settings, storage, bus, &token)
                .await
                .map_err(text)?;
            // The test proceeds once it knows the worker ids; a dropped sender means
            // start-up failed, which `has_exited` reports.
            let _ = ready_tx.send(running.worker_ids.clone());
            running.run(&token).await.map_err(text)
        })?);
        let worker_ids = tokio::time::timeout(READY_TIMEOUT, ready_rx)
            .await
            .map_err(|_| service_error("standalone", "did not start in time"))?
            .map_err(|_| service_error("standalone", "exited during start-up"))?;
        self.wait_healthy("standalone", &format!("{}/healthz", self.api_url))
            .await?;
        for id in &worker_ids {
            self.wait_worker_connected("standalone", id).await?;
        }
        self.ext.telegram.wait_polling(READY_TIMEOUT).await;
        Ok(())
    }

    /// The public URL of YouTube worker `id` (`standalone` for the one of
    /// [`Platform::start_all`]).
    pub fn worker_url(&self, id: &str) -> Option<String> {
        crate::servers::lock(&self.worker_urls).get(id).cloned()
    }

    /// Whether service `name` is running (started and not yet returned).
    pub fn is_running(&self, name: &str) -> bool {
        crate::servers::lock(&self.processes)
            .get_mut(name)
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
            n if n.starts_with("coordinator") => 3,
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

    /// `GET /healthz` and then `GET /metrics` of process `name`, started by a `start_*`
    /// other than [`Platform::start_all`], on its `metrics_listen` address: the text
    /// exposition of its metrics.
    pub async fn metrics(&self, name: &str) -> Result<String> {
        let addr = crate::servers::lock(&self.metrics_addrs)
            .get(name)
            .copied()
            .ok_or_else(|| service_error(name, "was not started as a role"))?;
        let get = |path: &'static str| {
            let request = self.http.get(format!("http://{addr}/{path}"));
            async move {
                let response = request.send().await.map_err(|e| service_error(name, e))?;
                if !response.status().is_success() {
                    return Err(service_error(
                        name,
                        format!("/{path} answered {}", response.status()),
                    ));
                }
                response.text().await.map_err(|e| service_error(name, e))
            }
        };
        get("healthz").await?;
        get("metrics").await
    }

    /// `GET /v1/status?tasks=true` of the coordinator; of a pair, the one that leads
    /// (an error while neither does).
    pub async fn coordinator_status(&self) -> Result<Value> {
        let mut last = service_error("coordinator", "no coordinator address");
        for addr in self.coordinator_addrs() {
            let status: Result<Value> = async {
                let response = self
                    .http
                    .get(format!("http://{addr}/v1/status?tasks=true"))
                    .basic_auth(WORKER_USER, Some(WORKER_PASSWORD))
                    .send()
                    .await
                    .map_err(|e| service_error("coordinator", e))?;
                response
                    .json()
                    .await
                    .map_err(|e| service_error("coordinator", e))
            }
            .await;
            match status {
                Ok(status) if status["leader"] != false => return Ok(status),
                Ok(_) => last = service_error("coordinator", format!("{addr} is a standby")),
                Err(err) => last = err,
            }
        }
        Err(last)
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
                mention: None,
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
