//! The two backend pairs the platform runs on, one fresh instance per test.
//!
//! - [`Pair::InProcess`]: SQLite in memory + the in-process bus. Like `stargazer
//!   standalone`, every service shares ONE storage and ONE bus instance (a second
//!   `sqlite::memory:` or `memory://` would be a different, empty world).
//! - [`Pair::Production`]: the MongoDB-wire server at 127.0.0.1:27017 and RabbitMQ at
//!   127.0.0.1:5672. Each service opens its own connections, as separate processes do.
//!   The test gets a database of its own (dropped afterwards) and a RabbitMQ virtual host
//!   of its own (deleted afterwards): the exchange, the services' default queue names and
//!   `rabbitmqctl close_all_connections` are then scoped to the test, so tests run in
//!   parallel without stealing each other's messages or leaving durable queues behind.

use std::process::Command;
use std::sync::Arc;

use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::Bus;
use stargazer_core::storage::Storage;

use crate::{Error, Result};

/// The RabbitMQ the tests use, without the virtual host.
pub const AMQP_SERVER: &str = "amqp://guest:guest@127.0.0.1:5672";
/// The MongoDB-wire server the tests use, without the database.
pub const MONGO_SERVER: &str = "mongodb://127.0.0.1:27017";

/// Which backends a platform runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// SQLite + in-process bus, shared by every service.
    InProcess,
    /// MongoDB + RabbitMQ, connected to by each service on its own.
    Production,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pair::InProcess => "sqlite + in-process bus",
            Pair::Production => "mongodb + rabbitmq",
        })
    }
}

fn rabbitmqctl(args: &[&str]) -> Result<String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| Error::Broker(format!("cannot run rabbitmqctl: {e}")))?;
    if !output.status.success() {
        return Err(Error::Broker(format!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A RabbitMQ virtual host for one test, deleted (with everything in it) when dropped.
#[derive(Debug)]
pub struct TestVhost {
    /// The virtual host name.
    pub name: String,
}

impl TestVhost {
    /// Creates `sg-e2e-<random>` and gives `guest` full rights in it. Blocks on
    /// `rabbitmqctl`; call from `spawn_blocking` in async code.
    pub fn create() -> Result<Self> {
        let name = format!("sg-e2e-{}", crate::unique());
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }

    /// The AMQP URL of this virtual host.
    pub fn amqp_url(&self) -> String {
        format!("{AMQP_SERVER}/{}", self.name)
    }

    /// `rabbitmqctl close_all_connections` for this virtual host. Blocks.
    pub fn close_all_connections(&self, explanation: &str) -> Result<()> {
        close_all_connections(&self.name, explanation)
    }

    /// Messages waiting in `queue` of this virtual host. Blocks.
    pub fn queue_depth(&self, queue: &str) -> Result<Option<u64>> {
        queue_depth(&self.name, queue)
    }
}

/// `rabbitmqctl close_all_connections` for virtual host `vhost` only: every client in it
/// loses its connection at once, as when the broker restarts. Blocks.
pub fn close_all_connections(vhost: &str, explanation: &str) -> Result<()> {
    rabbitmqctl(&[
        "close_all_connections",
        "-p",
        vhost,
        "--limit",
        "10000",
        explanation,
    ])
    .map(|_| ())
}

/// Messages waiting in `queue` of `vhost` (ready plus unacknowledged); `None` if there
/// is no such queue. Blocks.
pub fn queue_depth(vhost: &str, queue: &str) -> Result<Option<u64>> {
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

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(err) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("could not delete test vhost {}: {err}", self.name);
        }
    }
}

/// A MongoDB database for one test, dropped when the guard drops.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database name.
    pub name: String,
}

impl TestDatabase {
    /// A fresh database name (the database appears with its first write).
    pub fn new() -> Self {
        Self {
            name: format!("sg_e2e_{}", crate::unique()),
        }
    }

    /// The MongoDB URL selecting this database.
    pub fn url(&self) -> String {
        format!("{MONGO_SERVER}/{}", self.name)
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
        // Drop cannot await, and may run inside a runtime: drop on a thread of its own.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let client = mongodb::Client::with_uri_str(MONGO_SERVER)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .database(&name)
                    .drop()
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// How a service gets its backends: the shared in-process pair, or its own connections.
#[derive(Clone)]
pub enum Source {
    /// Every service uses these instances.
    Shared {
        /// The one storage.
        storage: Arc<dyn Storage>,
        /// The one bus.
        bus: Arc<dyn Bus>,
    },
    /// Every service connects itself.
    Connect {
        /// `mongodb://…/<db>`.
        storage_url: String,
        /// `amqp://…/<vhost>`.
        bus_url: String,
    },
}

impl Source {
    /// The storage for a service.
    pub async fn storage(&self) -> Result<Arc<dyn Storage>> {
        match self {
            Source::Shared { storage, .. } => Ok(storage.clone()),
            Source::Connect { storage_url, .. } => {
                Ok(stargazer_core::storage::connect(storage_url).await?)
            }
        }
    }

    /// The bus for service `name` (named on the broker so `rabbitmqctl list_connections`
    /// tells them apart).
    pub async fn bus(&self, name: &str) -> Result<Arc<dyn Bus>> {
        match self {
            Source::Shared { bus, .. } => Ok(bus.clone()),
            Source::Connect { bus_url, .. } => {
                Ok(Arc::new(AmqpBus::connect_named(bus_url, name).await?))
            }
        }
    }
}

/// One test's backends and the guards that remove them afterwards.
pub struct Backends {
    /// Which pair.
    pub pair: Pair,
    /// How services reach them.
    pub source: Source,
    /// The virtual host (production pair).
    pub vhost: Option<TestVhost>,
    /// The database (production pair).
    pub database: Option<TestDatabase>,
}

impl Backends {
    /// Fresh backends of `pair`.
    pub async fn new(pair: Pair) -> Result<Self> {
        match pair {
            Pair::InProcess => {
                let storage = stargazer_core::storage::connect("sqlite::memory:").await?;
                let bus = stargazer_core::bus::connect("memory://").await?;
                Ok(Self {
                    pair,
                    source: Source::Shared { storage, bus },
                    vhost: None,
                    database: None,
                })
            }
            Pair::Production => {
                let vhost = tokio::task::spawn_blocking(TestVhost::create)
                    .await
                    .map_err(|e| Error::Broker(e.to_string()))??;
                let database = TestDatabase::new();
                Ok(Self {
                    pair,
                    source: Source::Connect {
                        storage_url: database.url(),
                        bus_url: vhost.amqp_url(),
                    },
                    vhost: Some(vhost),
                    database: Some(database),
                })
            }
        }
    }
}
