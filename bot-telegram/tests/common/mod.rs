//! Shared test harness: a real api (`stargazer_api::serve` on 127.0.0.1:0 over SQLite), the
//! local Telegram Bot API server of `stargazer-testkit`, the real RabbitMQ, and the bot
//! under test.
//!
//! Every bot consumes its own uniquely named queue bound to `*`, so it receives every
//! ready event published on the broker, other tests' too. Its configuration limits it to
//! the test's own entities (`only_entities`), so foreign events are acked and ignored
//! rather than dead-lettered as unknown; the queue is deleted when the test ends.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::Registry;
use serde_json::json;
use stargazer_api::client::ApiClient;
use stargazer_api::types::{AddUser, NewEntity, UpdateSubscription, User};
use stargazer_api::{ApiConfig, Listeners};
use stargazer_bot_telegram::BotConfig;
use stargazer_core::bus::Bus;
use stargazer_core::model::{Access, Credential, Event, Permissions};
use stargazer_core::service::{Service, ServiceError};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub(crate) use stargazer_testkit::backends::service_context;
#[allow(unused_imports)]
pub(crate) use stargazer_testkit::servers::telegram::{Failure, RateLimits, Sent, TelegramServer};

/// The real api over `storage` on `listener` until `stop` (cheap hashes, no read cache).
async fn serve_api(
    listener: tokio::net::TcpListener,
    storage: Arc<dyn Storage>,
    stop: CancellationToken,
) {
    let config = ApiConfig {
        pbkdf2_iterations: 1_000,
        read_cache_ms: 0,
        ..Default::default()
    };
    let listeners = Listeners {
        public: listener,
        internal: None,
    };
    if let Err(err) = stargazer_api::serve(config, listeners, storage, &Registry::new(), stop).await
    {
        panic!("api failed: {err}");
    }
}

/// The broker every bus test uses.
pub(crate) const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const BOT_USER: &str = "bot-telegram";
const BOT_PASSWORD: &str = "bot-secret";
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";

/// Logs to the test output when `RUST_LOG` is set.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A running api with its storage and clients.
pub(crate) struct Platform {
    /// The storage behind the api (the bot's delivery log lives here too).
    pub storage: Arc<dyn Storage>,
    /// The api's base URL.
    pub api_url: String,
    /// A client with admin rights (entity CRUD).
    pub admin: ApiClient,
    /// A client with the bot's rights.
    pub service: ApiClient,
    entities: std::sync::Mutex<Vec<Uuid>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn credential(
    storage: &Arc<dyn Storage>,
    username: &str,
    password: &str,
    permissions: Permissions,
) {
    let hash = stargazer_core::auth::hash_password(password, 1_000).unwrap();
    storage
        .insert_credential(&Credential {
            username: username.into(),
            hash,
            permissions,
            queues: Vec::new(),
        })
        .await
        .unwrap();
}

impl Platform {
    /// Starts an api over a fresh in-memory SQLite database, with a bot and an admin
    /// credential.
    pub(crate) async fn start() -> Self {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        credential(
            &storage,
            BOT_USER,
            BOT_PASSWORD,
            Permissions {
                api: Some(Access::Rw),
                mq: Some(Access::Ro),
                ..Default::default()
            },
        )
        .await;
        credential(
            &storage,
            ADMIN_USER,
            ADMIN_PASSWORD,
            Permissions {
                api: Some(Access::Rw),
                admin: Some(Access::Rw),
                ..Default::default()
            },
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_api(listener, storage.clone(), stop.clone()));
        let admin = ApiClient::new(&api_url)
            .unwrap()
            .with_basic(ADMIN_USER, ADMIN_PASSWORD);
        let service = ApiClient::new(&api_url)
            .unwrap()
            .with_basic(BOT_USER, BOT_PASSWORD);
        Self {
            storage,
            api_url,
            admin,
            service,
            entities: Default::default(),
            stop,
            task: Some(task),
        }
    }

    /// Serves a second api over the same storage on `listener` (for outage tests: the
    /// bot is pointed at an address where the api only appears later).
    pub(crate) fn serve_api_on(&self, listener: tokio::net::TcpListener) {
        tokio::spawn(serve_api(listener, self.storage.clone(), self.stop.clone()));
    }

    /// Creates an entity with names `(language, name)`, the first language the default.
    pub(crate) async fn entity(&self, names: &[(&str, &str)]) -> Uuid {
        let names: BTreeMap<String, String> = names
            .iter()
            .map(|(l, n)| (l.to_string(), n.to_string()))
            .collect();
        let default_language = names.keys().next().cloned().unwrap();
        let request = NewEntity {
            id: None,
            names,
            default_language,
            group: None,
            translate_to: vec![],
            tasks: vec![],
        };
        let id = self.admin.new_entity(&request).await.unwrap().id;
        self.entities.lock().unwrap().push(id);
        id
    }

    /// Registers `chat` and subscribes it to `entity` (all kinds) through the api.
    pub(crate) async fn subscribed_chat(&self, chat: i64, language: &str, entity: Uuid) -> User {
        let user = self
            .service
            .add_user(&AddUser {
                im: "telegram".into(),
                chat_id: chat.to_string(),
                name: format!("chat {chat}"),
                language: language.into(),
            })
            .await
            .unwrap();
        self.service
            .update_subscription(&UpdateSubscription {
                user: Some(user.id),
                entity,
                subscribed: true,
                kinds: vec![],
                mention: None,
            })
            .await
            .unwrap();
        user
    }

    /// The bot's configuration against this api and `telegram`, consuming `queue`.
    pub(crate) fn bot_config(&self, telegram: &TelegramServer, queue: &str) -> BotConfig {
        BotConfig {
            token: telegram.token.clone(),
            api_url: telegram.url.clone(),
            stargazer_api_url: self.api_url.clone(),
            stargazer_api_username: BOT_USER.into(),
            stargazer_api_password: BOT_PASSWORD.into(),
            frontend_url: "https://stargazer.example".into(),
            queue: queue.into(),
            poll_timeout_secs: 1,
            only_entities: self.entities.lock().unwrap().clone(),
            ..Default::default()
        }
    }
}

/// A bot running in the background.
pub(crate) struct RunningBot {
    /// Cancel to stop it.
    pub stop: CancellationToken,
    /// Its metrics.
    pub registry: prometheus::Registry,
    task: JoinHandle<Result<(), ServiceError>>,
}

impl RunningBot {
    /// Starts the bot.
    pub(crate) fn start(config: BotConfig, storage: Arc<dyn Storage>, bus: Arc<dyn Bus>) -> Self {
        let stop = CancellationToken::new();
        let service = Box::new(stargazer_bot_telegram::TelegramService::new(config));
        let cx = service_context(&*service, Some(storage), Some(bus), vec![], stop.clone());
        let registry = cx.registry.clone();
        let task = tokio::spawn(service.run(cx));
        Self {
            stop,
            registry,
            task,
        }
    }

    /// The value of the gauge or counter `name` (without labels), if registered.
    pub(crate) fn metric(&self, name: &str) -> Option<f64> {
        self.registry
            .gather()
            .iter()
            .find(|family| family.name() == name)
            .and_then(|family| family.get_metric().first())
            .map(|metric| metric.get_gauge().value() + metric.get_counter().value())
    }

    /// Stops it and waits until it has returned.
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("bot did not stop within 30 s")
            .expect("bot panicked");
        result.expect("bot returned an error");
    }
}

/// A queue name no other test uses; deleted from the broker when the guard drops.
pub(crate) struct TestQueue {
    /// The queue name.
    pub name: String,
}

impl TestQueue {
    /// A fresh queue, declared and bound to `*` so that events published from now on
    /// wait for the bot even before it consumes.
    pub(crate) async fn declare(bus: &Arc<dyn Bus>) -> Self {
        let name = format!("stargazer.test.bot-telegram.{}", Uuid::new_v4());
        let spec = stargazer_core::bus::QueueSpec::new(
            name.clone(),
            stargazer_core::routing::READY_PATTERN,
            8,
        );
        bus.declare(&spec).await.unwrap();
        Self { name }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await: delete on a thread with its own runtime.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let connection =
                    lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                        .await?;
                let channel = connection.create_channel().await?;
                channel
                    .queue_delete(&name, lapin::options::QueueDeleteOptions::default())
                    .await?;
                connection.close(200, "bye").await
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete test queue {}", self.name);
        }
    }
}

/// Connects to the real broker.
pub(crate) async fn rabbit() -> Arc<dyn Bus> {
    stargazer_core::bus::connect(AMQP_URL).await.unwrap()
}

/// A ready event of `kind` about `entity`.
pub(crate) fn event(kind: &str, entity: Uuid, fields: serde_json::Value) -> Event {
    Event {
        id: Event::make_id(kind, &Uuid::new_v4().to_string(), None),
        kind: kind.into(),
        entity,
        time: Utc::now(),
        fields: fields.as_object().cloned().unwrap_or_default(),
        control: Default::default(),
    }
}

/// Publishes `event` with its ready routing key.
pub(crate) async fn publish(bus: &Arc<dyn Bus>, event: &Event) {
    bus.publish(event.source(), &event.to_bytes())
        .await
        .unwrap();
}

/// A live event with a title and link.
pub(crate) fn live(entity: Uuid, title: &str) -> Event {
    event(
        "youtube.live",
        entity,
        json!({"title": title, "link": "https://www.youtube.com/watch?v=abc"}),
    )
}

/// Waits until `condition` holds, polling; panics with `what` after `timeout`.
pub(crate) async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the delivery log has `(event, chat)` settled (not merely claimed) and
/// returns its status.
pub(crate) async fn logged_status(
    storage: &Arc<dyn Storage>,
    event: Uuid,
    chat: i64,
    timeout: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(record) = storage
            .get_delivery(event, "telegram", &chat.to_string())
            .await
            .unwrap()
            .filter(|r| r.status != stargazer_core::model::DELIVERY_CLAIMED)
        {
            return record.status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "({event}, {chat}) never logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
