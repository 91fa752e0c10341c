//! Backends and helpers for the middleware integration tests: the real RabbitMQ and the
//! in-process bus, SQLite files and fresh MongoDB databases, a reader of ready messages,
//! and cleanup of what a test left on the servers.
//!
//! RabbitMQ is shared by every test run on the machine, and a middleware consumes every
//! message matching its pattern: two tests' delay middlewares on one vhost would each fire
//! the other's messages. So each RabbitMQ test gets a virtual host of its own (created with
//! `rabbitmqctl`, deleted when the test ends); queues are still uniquely named and readers
//! still filter by event id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, Consumer, QueueSpec};
use stargazer_core::model::Event;
use stargazer_core::service::{Service, ServiceContext, ServiceError, StorageGrant};
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

/// A fresh 32-hex-digit suffix for names that must not clash between tests or runs.
pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

/// The RabbitMQ URL: `STARGAZER_TEST_AMQP_URL`, or guest on 127.0.0.1:5672, vhost `/`.
pub fn amqp_url() -> String {
    std::env::var("STARGAZER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `amqp_url()` pointed at virtual host `vhost`.
fn amqp_url_for(vhost: &str) -> String {
    let base = amqp_url();
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base.as_str(),
    };
    format!("{root}/{vhost}")
}

/// A `rabbitmqctl` command that could not run or failed, with its output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RabbitmqctlError(String);

fn rabbitmqctl(args: &[&str]) -> Result<String, RabbitmqctlError> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| RabbitmqctlError(format!("cannot run rabbitmqctl: {e}")))?;
    if !output.status.success() {
        return Err(RabbitmqctlError(format!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A RabbitMQ virtual host for one test, where guest may do anything; deleted (with
/// everything in it) when dropped.
#[derive(Debug)]
pub struct TestVhost {
    /// The virtual host name.
    pub name: String,
}

impl TestVhost {
    /// Creates `sgtest-<random>` and gives `guest` full rights in it. Blocks on
    /// `rabbitmqctl`; call from `spawn_blocking` in async code.
    pub fn create() -> Result<Self, RabbitmqctlError> {
        let vhost = Self {
            name: format!("sgtest-{}", unique()),
        };
        rabbitmqctl(&["add_vhost", &vhost.name])?;
        let guest_may_do_anything = ["-p", &vhost.name, "guest", ".*", ".*", ".*"];
        rabbitmqctl(&[&["set_permissions"][..], &guest_may_do_anything].concat())?;
        Ok(vhost)
    }

    /// The AMQP URL of this virtual host.
    pub fn amqp_url(&self) -> String {
        amqp_url_for(&self.name)
    }

    /// `rabbitmqctl close_all_connections` for this virtual host. Blocks.
    pub fn close_all_connections(&self, explanation: &str) -> Result<(), RabbitmqctlError> {
        close_all_connections(&self.name, explanation)
    }

    /// Messages waiting in `queue` of this virtual host. Blocks.
    pub fn queue_depth(&self, queue: &str) -> Result<Option<u64>, RabbitmqctlError> {
        queue_depth(&self.name, queue)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(err) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("could not delete test vhost {}: {err}", self.name);
        }
    }
}

/// `rabbitmqctl close_all_connections` for virtual host `vhost` only: every client in it
/// loses its connection at once, as when the broker restarts. Blocks.
pub fn close_all_connections(vhost: &str, explanation: &str) -> Result<(), RabbitmqctlError> {
    let args = ["close_all_connections", "-p", vhost, "--limit", "10000"];
    rabbitmqctl(&[&args[..], &[explanation]].concat()).map(drop)
}

/// Messages waiting in `queue` of `vhost` (ready plus unacknowledged); `None` if there
/// is no such queue. Blocks.
pub fn queue_depth(vhost: &str, queue: &str) -> Result<Option<u64>, RabbitmqctlError> {
    let listing = rabbitmqctl(&[
        "list_queues",
        "-p",
        vhost,
        "-q",
        "--no-table-headers",
        "name",
        "messages",
    ])?;
    Ok(listing.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next() == Some(queue))
            .then(|| cols.next().and_then(|n| n.parse().ok()))
            .flatten()
    }))
}

/// A database on the MongoDB-wire test server for one test, dropped when the guard drops.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database name.
    pub name: String,
}

impl TestDatabase {
    /// A fresh database name (the database appears with its first write).
    pub fn new() -> Self {
        Self {
            name: format!("sgtest_{}", unique()),
        }
    }

    /// The MongoDB URL selecting this database.
    pub fn url(&self) -> String {
        format!("{}/{}", mongo_base(), self.name)
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await and may run inside a runtime: drop on a thread of its own.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let mongo = MongoStorage::connect_db(&mongo_base(), &name)
                    .await
                    .map_err(|e| e.to_string())?;
                mongo.database().drop().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// A SQLite database file in the temporary directory for one test, deleted (with its
/// journal files) when the guard drops.
#[derive(Debug)]
pub struct TestSqliteFile {
    /// The database file.
    pub path: std::path::PathBuf,
}

impl TestSqliteFile {
    /// A fresh file name (the file appears when the storage opens it).
    pub fn new() -> Self {
        Self {
            path: std::env::temp_dir().join(format!("sgtest-{}.db", unique())),
        }
    }

    /// The storage URL of this file.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Default for TestSqliteFile {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestSqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The context the platform would hand `service`: `storage` narrowed to the capabilities
/// the service declares (so a test fails as production would if it uses one it did not
/// declare), `bus`, `listeners` in the order the service declared them, a fresh metrics
/// registry (clone it before the service takes the context, to read its metrics) and
/// `shutdown`.
pub fn service_context(
    service: &dyn Service,
    storage: Option<Arc<dyn Storage>>,
    bus: Option<Arc<dyn Bus>>,
    listeners: Vec<tokio::net::TcpListener>,
    shutdown: tokio_util::sync::CancellationToken,
) -> ServiceContext {
    let needs = service.needs();
    ServiceContext {
        storage: storage.map(|storage| StorageGrant::new(storage, &needs.storage)),
        bus,
        listeners,
        registry: prometheus::Registry::new(),
        shutdown,
    }
}

/// A service running on a test's backends, started through [`service_context`].
pub struct RunningService {
    /// The service's metrics.
    pub registry: prometheus::Registry,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl RunningService {
    /// Spawns `service` on `storage` (narrowed to what it declares) and `bus`.
    pub fn start(
        service: Box<dyn Service>,
        storage: Option<Arc<dyn Storage>>,
        bus: Option<Arc<dyn Bus>>,
    ) -> Self {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let cx = service_context(&*service, storage, bus, Vec::new(), shutdown.clone());
        let registry = cx.registry.clone();
        let task = tokio::spawn(service.run(cx));
        Self {
            registry,
            shutdown,
            task,
        }
    }

    /// Asks it to stop and waits until it returned: within 30 s, without a panic, `Ok`.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stops within 30 s")
            .expect("no panic")
            .expect("run returned Ok");
    }

    /// Drops it where it stands, as a crash would (its future is aborted).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The MongoDB-wire server URL without a database: `STARGAZER_TEST_MONGO_URL`, or
/// 127.0.0.1:27017.
pub fn mongo_base() -> String {
    std::env::var("STARGAZER_TEST_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

/// The wall clock in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Everything a test opened; cleans the servers up when dropped.
pub struct Env {
    /// Which bus `bus` is.
    pub bus_kind: BusKind,
    /// The bus (on a virtual host of its own for RabbitMQ).
    pub bus: Arc<dyn Bus>,
    /// The storage opened on `storage_url`.
    pub storage: Arc<dyn Storage>,
    /// The storage URL, for reopening it as a restarted process would.
    pub storage_url: String,
    /// Dropped after `bus` and `storage` (fields drop in order): the connections close
    /// before their vhost and database go.
    _vhost: Option<TestVhost>,
    _database: Option<TestDatabase>,
    sqlite_file: Option<std::path::PathBuf>,
}

impl Env {
    /// Opens the bus and storage a test asked for (and a tracing subscriber honouring
    /// `RUST_LOG`, once per process).
    pub async fn new(bus_kind: BusKind, store: StoreKind) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let mut vhost = None;
        let bus: Arc<dyn Bus> = match bus_kind {
            BusKind::Memory => Arc::new(MemoryBus::new()),
            BusKind::Amqp => {
                let created = tokio::task::spawn_blocking(TestVhost::create).await;
                let created = created
                    .expect("vhost task")
                    .expect("a RabbitMQ virtual host of the test's own");
                let url = created.amqp_url();
                vhost = Some(created);
                Arc::new(
                    AmqpBus::connect_named(&url, &format!("sgtest-{}", unique()))
                        .await
                        .expect("connect to RabbitMQ"),
                )
            }
        };
        let (storage_url, sqlite_file, database) = match store {
            StoreKind::Sqlite => {
                let path = std::env::temp_dir().join(format!("sgtest-{}.db", unique()));
                (format!("sqlite://{}", path.display()), Some(path), None)
            }
            StoreKind::Mongo => {
                let database = TestDatabase::new();
                (database.url(), None, Some(database))
            }
        };
        let storage = storage::connect(&storage_url).await.expect("open storage");
        Self {
            bus_kind,
            bus,
            storage,
            storage_url,
            _vhost: vhost,
            _database: database,
            sqlite_file,
        }
    }

    /// The AMQP URL of the test's virtual host (RabbitMQ only), for a second connection
    /// as another process would open.
    pub fn amqp_url(&self) -> Option<String> {
        self._vhost.as_ref().map(TestVhost::amqp_url)
    }

    /// A second storage handle on the same database, as a restarted process would open.
    pub async fn reopen_storage(&self) -> Arc<dyn Storage> {
        storage::connect(&self.storage_url)
            .await
            .expect("reopen storage")
    }

    /// A unique queue name for a middleware (bound to the contract pattern), declared now
    /// so that messages published before the middleware consumes wait for it.
    pub async fn middleware_queue(&mut self, tag: &str) -> String {
        let name = format!("sgtest.middleware.{tag}.{}", unique());
        self.bus
            .declare(&QueueSpec::new(name.clone(), format!("#.{tag}"), 16))
            .await
            .expect("declare middleware queue");
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
        Ready { consumer }
    }

    /// Closes the bus connection before the test's runtime goes away.
    pub async fn close(&self) {
        self.bus.close().await;
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The vhost and database guards clean up the servers after this.
        if let Some(path) = self.sqlite_file.take() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

/// One ready message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The routing key it arrived with.
    pub routing_key: String,
    /// The event it carried.
    pub event: Event,
    /// When it was read, in unix milliseconds.
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
                kept.push(Received {
                    routing_key,
                    event,
                    at_ms,
                });
            }
        }
        kept
    }

    /// Everything of ours that arrives within `window`.
    pub async fn collect_for(&mut self, ours: &HashSet<Uuid>, window: Duration) -> Vec<Received> {
        self.collect_until(ours, window, |_| false).await
    }

    /// Reads until `count` of ours arrived (or `timeout`).
    pub async fn collect_n(
        &mut self,
        ours: &HashSet<Uuid>,
        count: usize,
        timeout: Duration,
    ) -> Vec<Received> {
        self.collect_until(ours, timeout, |kept| kept.len() >= count)
            .await
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

/// Runs a test body once per backend pair, as separate tests: `matrix!(body)` where
/// `body` is an `async fn(BusKind, StoreKind)` in scope, giving tests `body::memory_sqlite`,
/// `body::memory_mongo`, `body::amqp_sqlite` and `body::amqp_mongo`.
#[macro_export]
macro_rules! matrix {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory_sqlite() {
                $name(
                    $crate::backends::BusKind::Memory,
                    $crate::backends::StoreKind::Sqlite,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory_mongo() {
                $name(
                    $crate::backends::BusKind::Memory,
                    $crate::backends::StoreKind::Mongo,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp_sqlite() {
                $name(
                    $crate::backends::BusKind::Amqp,
                    $crate::backends::StoreKind::Sqlite,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp_mongo() {
                $name(
                    $crate::backends::BusKind::Amqp,
                    $crate::backends::StoreKind::Mongo,
                )
                .await;
            }
        }
    };
}

/// Runs a test body once per storage backend, as separate tests: `storage_matrix!(body)`
/// where `body` is an `async fn(Arc<dyn Storage>)` in scope, giving tests `body::sqlite`
/// (a fresh file, deleted afterwards) and `body::mongo` (a fresh database, dropped).
#[macro_export]
macro_rules! storage_matrix {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let file = $crate::backends::TestSqliteFile::new();
                $name($crate::backends::open_storage(&file.url()).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mongo() {
                let database = $crate::backends::TestDatabase::new();
                $name($crate::backends::open_storage(&database.url()).await).await;
            }
        }
    };
}

/// Opens the storage at `url` (panics if it cannot).
pub async fn open_storage(url: &str) -> Arc<dyn Storage> {
    storage::connect(url)
        .await
        .unwrap_or_else(|e| panic!("storage {url}: {e}"))
}

/// Runs a test body once per bus, as separate tests (storage: SQLite): `bus_matrix!(body)`
/// gives tests `body::memory` and `body::amqp`.
#[macro_export]
macro_rules! bus_matrix {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                $name(
                    $crate::backends::BusKind::Memory,
                    $crate::backends::StoreKind::Sqlite,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp() {
                $name(
                    $crate::backends::BusKind::Amqp,
                    $crate::backends::StoreKind::Sqlite,
                )
                .await;
            }
        }
    };
}
