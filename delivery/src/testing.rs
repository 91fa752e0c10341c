//! Test support for the bots' delivery tests (feature `testing`): the real api over a
//! storage, with a bot credential; a broker queue of one test's own; chats registered
//! and subscribed straight in storage. [`Harness`] holds all of it for one test; what a
//! bot talks to on its own network (its test server, its configuration) stays with the
//! bot's tests.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::Registry;
use stargazer_api::{ApiConfig, Listeners};
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::{
    Access, Credential, Entity, Event, Permissions, Subscription, Task, TaskParams, User,
    UserSettings,
};
use stargazer_core::service::{Capability, Service, ServiceContext, StorageGrant};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::api::Api;
use crate::Stores;

/// The broker every bus test uses.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Password of the bot credential [`serve_api`] creates.
pub const BOT_PASSWORD: &str = "bot-secret";

/// Serves the real api over `storage` on a free port until `stop` (cheap hashes, no read
/// cache), with an api-rw credential `username` / [`BOT_PASSWORD`]; answers its URL.
pub async fn serve_api(
    storage: &Arc<dyn Storage>,
    username: &str,
    stop: &CancellationToken,
) -> String {
    let hash = stargazer_core::auth::hash_password(BOT_PASSWORD, 1_000).expect("hash");
    storage
        .insert_credential(&Credential {
            username: username.into(),
            hash,
            permissions: Permissions {
                api: Some(Access::Rw),
                mq: Some(Access::Ro),
                ..Default::default()
            },
            queues: Vec::new(),
        })
        .await
        .expect("bot credential");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    let config = ApiConfig {
        pbkdf2_iterations: 1_000,
        read_cache_ms: 0,
        ..Default::default()
    };
    let listeners = Listeners {
        public: listener,
        internal: None,
    };
    let (storage, stop) = (storage.clone(), stop.clone());
    tokio::spawn(async move {
        if let Err(err) =
            stargazer_api::serve(config, listeners, storage, &Registry::new(), stop).await
        {
            panic!("api failed: {err}");
        }
    });
    url
}

/// Registers chat `chat_id` of `im` reading `language` and subscribes it to every kind
/// of `entity`; answers the user id.
pub async fn subscribed_chat(
    storage: &Arc<dyn Storage>,
    im: &str,
    chat_id: &str,
    language: &str,
    entity: Uuid,
) -> Uuid {
    let user = User {
        id: Uuid::new_v4(),
        im: im.into(),
        im_chat_id: chat_id.into(),
        name: format!("chat {chat_id}"),
        language: language.into(),
        settings: UserSettings::default(),
        created_at: Utc::now(),
    };
    storage.insert_user(&user).await.expect("insert user");
    storage
        .put_subscription(&Subscription {
            user: user.id,
            entity,
            kinds: vec![],
            mention: None,
        })
        .await
        .expect("insert subscription");
    user.id
}

/// A broker queue bound to `*` that no other test uses; deleted when dropped.
pub struct TestQueue {
    /// The queue name.
    pub name: String,
}

impl TestQueue {
    /// Declares a fresh queue for `bot`, so that events published from now on wait for
    /// it even before it consumes.
    pub async fn declare(bus: &Arc<dyn Bus>, bot: &str) -> Self {
        let name = format!("stargazer.test.{bot}.{}", Uuid::new_v4());
        bus.declare(&QueueSpec::new(
            name.clone(),
            stargazer_core::routing::READY_PATTERN,
            8,
        ))
        .await
        .expect("declare test queue");
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
                .build()?;
            runtime.block_on(async move {
                let connection =
                    lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                        .await?;
                let channel = connection.create_channel().await?;
                channel
                    .queue_delete(&name, lapin::options::QueueDeleteOptions::default())
                    .await?;
                connection.close(200, "bye").await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete test queue {}", self.name);
        }
    }
}

/// Waits until `condition` holds, polling every 50 ms; panics with `what` after
/// `timeout`.
pub async fn eventually(
    what: &str,
    timeout: std::time::Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Publishes `event` with its ready routing key.
pub async fn publish(bus: &Arc<dyn Bus>, event: &stargazer_core::model::Event) {
    bus.publish(event.source(), &event.to_bytes())
        .await
        .expect("publish");
}

/// An entity with `names` (`(language, name)`, English the default language) and a task
/// of each of `tasks`.
pub fn entity(names: &[(&str, &str)], tasks: Vec<TaskParams>) -> Entity {
    let id = Uuid::new_v4();
    Entity {
        id,
        names: names
            .iter()
            .map(|(language, name)| ((*language).to_owned(), (*name).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        default_language: "en".into(),
        group: None,
        translate_to: vec![],
        tasks: tasks
            .into_iter()
            .map(|params| Task {
                id: Uuid::new_v4(),
                entity: id,
                params,
            })
            .collect(),
    }
}

/// A ready event of `kind` about `entity`, with `fields` (a JSON object).
pub fn event(kind: &str, entity: Uuid, fields: serde_json::Value) -> Event {
    Event {
        id: Event::make_id(kind, &Uuid::new_v4().to_string(), None),
        kind: kind.into(),
        entity,
        time: Utc::now(),
        fields: fields.as_object().cloned().expect("fields are an object"),
        control: Default::default(),
    }
}

/// A YouTube live event titled `title`, with a link and a thumbnail.
pub fn live(entity: Uuid, title: &str) -> Event {
    event(
        "youtube.live",
        entity,
        serde_json::json!({"title": title, "link": "https://www.youtube.com/watch?v=abc",
                           "thumbnail": "https://i.ytimg.com/vi/abc/hqdefault.jpg"}),
    )
}

/// How many of `items` each key stands for; items whose `key` is `None` are not
/// counted.
pub fn count_by<T, K: Eq + Hash>(
    items: impl IntoIterator<Item = T>,
    mut key: impl FnMut(&T) -> Option<K>,
) -> HashMap<K, usize> {
    let mut counts = HashMap::new();
    for item in items {
        if let Some(key) = key(&item) {
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
}

/// One test's platform for a bot: the real api over an in-memory SQLite storage with the
/// bot's credential, the broker with a queue of the test's own, and the bot's instances.
/// Dropping it stops the api and every instance still running.
pub struct Harness {
    /// The storage behind the api; the bot's delivery log and state live here too.
    pub storage: Arc<dyn Storage>,
    /// The broker.
    pub bus: Arc<dyn Bus>,
    /// The api's base URL.
    pub api_url: String,
    /// The queue the bot consumes.
    pub queue: TestQueue,
    /// The bot's api user (its password is [`BOT_PASSWORD`]).
    pub username: String,
    im: &'static str,
    stop: CancellationToken,
}

impl Harness {
    /// Starts the api with credential `username` for a bot delivering to chats of `im`,
    /// and declares the bot's queue.
    pub async fn start(im: &'static str, username: &str) -> Self {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .expect("in-memory storage");
        let stop = CancellationToken::new();
        let api_url = serve_api(&storage, username, &stop).await;
        let bus = stargazer_core::bus::connect(AMQP_URL)
            .await
            .expect("the broker");
        let queue = TestQueue::declare(&bus, username).await;
        Self {
            storage,
            bus,
            api_url,
            queue,
            username: username.into(),
            im,
            stop,
        }
    }

    /// Stores an entity built by [`entity`]; answers its id.
    pub async fn entity(&self, names: &[(&str, &str)], tasks: Vec<TaskParams>) -> Uuid {
        let entity = entity(names, tasks);
        self.storage
            .insert_entity(&entity)
            .await
            .expect("insert entity");
        entity.id
    }

    /// Registers chat `chat_id` reading `language` and subscribes it to every kind of
    /// `entity`; answers the user id.
    pub async fn subscribe(
        &self,
        chat_id: impl std::fmt::Display,
        language: &str,
        entity: Uuid,
    ) -> Uuid {
        subscribed_chat(
            &self.storage,
            self.im,
            &chat_id.to_string(),
            language,
            entity,
        )
        .await
    }

    /// Publishes `event` with its ready routing key.
    pub async fn publish(&self, event: &Event) {
        publish(&self.bus, event).await;
    }

    /// The api as the bot's credential sees it.
    pub fn api(&self) -> Api {
        Api::new(self.im, &self.api_url, "api", &self.username, BOT_PASSWORD).expect("api client")
    }

    /// The stores a delivery instance runs on.
    pub fn stores(&self) -> Stores {
        Stores {
            deliveries: self.storage.clone(),
            state: self.storage.clone(),
        }
    }

    /// The status the delivery log holds for `event` in chat `chat_id`; `None`: no
    /// record.
    pub async fn delivery_status(&self, event: Uuid, chat_id: &str) -> Option<String> {
        self.storage
            .get_delivery(event, self.im, chat_id)
            .await
            .expect("read the delivery log")
            .map(|record| record.status)
    }

    /// Waits until `user` is paused; panics with `what` after `timeout`.
    pub async fn wait_paused(&self, user: Uuid, what: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.storage.get_user(user).await.expect("read user");
            if found.expect("the user exists").settings.paused {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spawns `run` with a token that stops it (a child of this harness's).
    pub fn spawn<T, F>(&self, run: impl FnOnce(CancellationToken) -> F) -> Instance<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let stop = self.stop.child_token();
        let task = tokio::spawn(run(stop.clone()));
        Instance { stop, task }
    }

    /// Runs `service` on this storage (deliveries and state) and broker, with
    /// `listeners`; its error, if it returns one, as text.
    pub fn run_service(
        &self,
        service: Box<dyn Service>,
        listeners: Vec<tokio::net::TcpListener>,
    ) -> Instance<Result<(), String>> {
        let (storage, bus) = (self.storage.clone(), self.bus.clone());
        self.spawn(move |shutdown| async move {
            let cx = ServiceContext {
                storage: Some(StorageGrant::new(
                    storage,
                    &[Capability::Deliveries, Capability::State],
                )),
                bus: Some(bus),
                listeners,
                registry: Registry::new(),
                shutdown,
            };
            service.run(cx).await.map_err(|err| err.to_string())
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A task [`Harness::spawn`] started.
pub struct Instance<T> {
    stop: CancellationToken,
    task: JoinHandle<T>,
}

impl<T> Instance<T> {
    /// Stops the task and waits until it has returned; panics if that takes longer than
    /// `within` or the task panicked. Answers what it returned.
    pub async fn stop(self, within: Duration) -> T {
        self.stop.cancel();
        tokio::time::timeout(within, self.task)
            .await
            .unwrap_or_else(|_| panic!("the instance did not stop within {within:?}"))
            .expect("the instance panicked")
    }
}
