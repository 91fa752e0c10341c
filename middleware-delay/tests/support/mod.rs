//! Backends and helpers for the integration tests: the real RabbitMQ and the in-process
//! bus, SQLite files and fresh MongoDB databases, a reader of ready messages, and cleanup
//! of what a test left on the servers.
//!
//! RabbitMQ is shared by every test run on the machine, so each test consumes its own
//! uniquely named queues (bound to the contract patterns) and tolerates foreign messages
//! there: it filters what it reads by event id.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, Consumer, QueueSpec};
use stargazer_core::model::Event;
use stargazer_core::storage::mongo::MongoStorage;
use stargazer_core::storage::{self, Storage};
use uuid::Uuid;

/// Which bus a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// The in-process router.
    Memory,
    /// RabbitMQ at `STARGAZER_TEST_AMQP_URL` (default 127.0.0.1:5672).
    Amqp,
}

/// Which storage a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file in the temp directory.
    Sqlite,
    /// A fresh database on the MongoDB-wire server at `STARGAZER_TEST_MONGO_URL`.
    Mongo,
}

pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

pub fn amqp_url() -> String {
    std::env::var("STARGAZER_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub fn mongo_base() -> String {
    std::env::var("STARGAZER_TEST_MONGO_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Everything a test opened; cleans the servers up when dropped.
pub struct Env {
    pub bus_kind: BusKind,
    pub bus: Arc<dyn Bus>,
    pub storage: Arc<dyn Storage>,
    pub storage_url: String,
    queues: Vec<String>,
    sqlite_file: Option<std::path::PathBuf>,
    mongo_db: Option<String>,
}

impl Env {
    pub async fn new(bus_kind: BusKind, store: StoreKind) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let bus: Arc<dyn Bus> = match bus_kind {
            BusKind::Memory => Arc::new(MemoryBus::new()),
            BusKind::Amqp => Arc::new(
                AmqpBus::connect_named(&amqp_url(), &format!("sgtest-{}", unique()))
                    .await
                    .expect("connect to RabbitMQ"),
            ),
        };
        let (storage_url, sqlite_file, mongo_db) = match store {
            StoreKind::Sqlite => {
                let path = std::env::temp_dir().join(format!("sgtest-{}.db", unique()));
                (format!("sqlite://{}", path.display()), Some(path), None)
            }
            StoreKind::Mongo => {
                let db = format!("sgtest_{}", unique());
                (format!("{}/{db}", mongo_base()), None, Some(db))
            }
        };
        let storage = storage::connect(&storage_url).await.expect("open storage");
        Self {
            bus_kind,
            bus,
            storage,
            storage_url,
            queues: Vec::new(),
            sqlite_file,
            mongo_db,
        }
    }

    /// A second storage handle on the same database, as a restarted process would open.
    pub async fn reopen_storage(&self) -> Arc<dyn Storage> {
        storage::connect(&self.storage_url).await.expect("reopen storage")
    }

    /// A unique queue name for a middleware (bound to the contract pattern), declared now
    /// so that messages published before the middleware consumes wait for it.
    pub async fn middleware_queue(&mut self, tag: &str) -> String {
        let name = format!("sgtest.middleware.{tag}.{}", unique());
        self.bus
            .declare(&QueueSpec::new(name.clone(), format!("#.{tag}"), 16))
            .await
            .expect("declare middleware queue");
        self.queues.push(name.clone());
        name
    }

    /// A reader of ready messages (`*`) on a queue of its own.
    pub async fn ready(&mut self) -> Ready {
        let name = format!("sgtest.ready.{}", unique());
        let consumer = self
            .bus
            .consume(&QueueSpec::new(name.clone(), "*", 200))
            .await
            .expect("consume ready queue");
        self.queues.push(name);
        Ready { consumer }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let amqp = self.bus_kind == BusKind::Amqp;
        let mongo_db = self.mongo_db.take();
        if let Some(path) = self.sqlite_file.take() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        // Cleanup needs async clients; run it on a runtime of its own so it works from
        // inside or outside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if amqp && !queues.is_empty() {
                    delete_queues(&queues).await;
                }
                if let Some(db) = mongo_db {
                    if let Ok(mongo) = MongoStorage::connect_db(&mongo_base(), &db).await {
                        let _ = mongo.database().drop().await;
                    }
                }
            });
        })
        .join();
    }
}

async fn delete_queues(queues: &[String]) {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let Ok(connection) = Connection::connect(&amqp_url(), properties).await else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in queues {
            let _ = channel.queue_delete(queue, QueueDeleteOptions::default()).await;
        }
    }
    let _ = connection.close(200, "test done").await;
}

/// One ready message.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub event: Event,
    pub at_ms: i64,
}

/// Reads the test's ready queue, keeping only the events the test published.
pub struct Ready {
    consumer: Box<dyn Consumer>,
}

impl Ready {
    /// Reads until `done` holds for what was kept, or `timeout` passes.
    pub async fn collect_until(
        &mut self,
        ours: &HashSet<Uuid>,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        while !done(&kept) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Ok(Some(delivery)) = tokio::time::timeout(left, self.consumer.next()).await else {
                break;
            };
            let at_ms = now_ms();
            let routing_key = delivery.routing_key.clone();
            let event = Event::from_bytes(&delivery.body).ok();
            delivery.ack().await.expect("ack ready message");
            if let Some(event) = event.filter(|e| ours.contains(&e.id)) {
                kept.push(Received { routing_key, event, at_ms });
            }
        }
        kept
    }

    /// Everything of ours that arrives within `window`.
    pub async fn collect_for(&mut self, ours: &HashSet<Uuid>, window: Duration) -> Vec<Received> {
        self.collect_until(ours, window, |_| false).await
    }

    /// Reads until `count` of ours arrived (or `timeout`).
    pub async fn collect_n(&mut self, ours: &HashSet<Uuid>, count: usize, timeout: Duration) -> Vec<Received> {
        self.collect_until(ours, timeout, |kept| kept.len() >= count).await
    }
}

/// An event of `kind` with a fresh id and the given control values.
pub fn event(kind: &str, control: serde_json::Value) -> Event {
    let mut value = serde_json::json!({
        "id": Uuid::new_v4(),
        "kind": kind,
        "entity": Uuid::new_v4(),
        "time": "2026-01-01T00:00:00Z",
        "fields": {"title": "test"},
    });
    if let Some(control) = control.as_object() {
        for (key, v) in control {
            value[key] = v.clone();
        }
    }
    serde_json::from_value(value).expect("valid test event")
}

/// Runs a test body once per backend pair, as separate tests.
#[macro_export]
macro_rules! matrix {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory_sqlite() {
                $name(BusKind::Memory, StoreKind::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory_mongo() {
                $name(BusKind::Memory, StoreKind::Mongo).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp_sqlite() {
                $name(BusKind::Amqp, StoreKind::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp_mongo() {
                $name(BusKind::Amqp, StoreKind::Mongo).await;
            }
        }
    };
}
