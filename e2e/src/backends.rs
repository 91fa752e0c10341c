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
//! - [`Pair::Cluster`]: the same MongoDB-wire server and the 3-node RabbitMQ cluster of
//!   [`stargazer_testkit::cluster`] (a virtual host of its own; services get the list of
//!   the three nodes' URLs and declare quorum queues).

use std::sync::Arc;

use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::{Bus, BusOptions};
use stargazer_core::storage::Storage;
use stargazer_core::topology::{QueueType, Topology};

use crate::{Error, Result};

pub use stargazer_testkit::backends::{
    close_all_connections, queue_depth, service_context, RabbitmqctlError, TestDatabase, TestVhost,
};

/// Which backends a platform runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// SQLite + in-process bus, shared by every service.
    InProcess,
    /// MongoDB + RabbitMQ, connected to by each service on its own.
    Production,
    /// MongoDB + the 3-node RabbitMQ cluster with quorum queues.
    Cluster,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pair::InProcess => "sqlite + in-process bus",
            Pair::Production => "mongodb + rabbitmq",
            Pair::Cluster => "mongodb + 3-node rabbitmq cluster",
        })
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
        /// `amqp://…/<vhost>` (a comma-separated list for a cluster).
        bus_url: String,
        /// The type the services declare their queues with (`amqp_queue_type`).
        queue_type: QueueType,
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
            Source::Connect {
                bus_url,
                queue_type,
                ..
            } => {
                let options = BusOptions {
                    topology: Topology::new(Vec::new()).with_queue_type(*queue_type),
                    ..BusOptions::default()
                };
                Ok(Arc::new(
                    AmqpBus::connect_named_with(bus_url, name, options).await?,
                ))
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
    /// The cluster's virtual host (cluster pair).
    pub cluster_vhost: Option<stargazer_testkit::cluster::ClusterVhost>,
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
                    cluster_vhost: None,
                })
            }
            Pair::Cluster => {
                let vhost = tokio::task::spawn_blocking(|| {
                    stargazer_testkit::cluster::Cluster::shared()?.vhost()
                })
                .await
                .map_err(|e| Error::Broker(e.to_string()))?
                .map_err(|e| Error::Broker(e.to_string()))?;
                let database = TestDatabase::new();
                Ok(Self {
                    pair,
                    source: Source::Connect {
                        storage_url: database.url(),
                        bus_url: vhost.amqp_url_list(),
                        queue_type: QueueType::Quorum,
                    },
                    vhost: None,
                    database: Some(database),
                    cluster_vhost: Some(vhost),
                })
            }
            Pair::Production => {
                let vhost = tokio::task::spawn_blocking(TestVhost::create)
                    .await
                    .map_err(|e| Error::Broker(e.to_string()))?
                    .map_err(|e| Error::Broker(e.to_string()))?;
                let database = TestDatabase::new();
                Ok(Self {
                    pair,
                    source: Source::Connect {
                        storage_url: database.url(),
                        bus_url: vhost.amqp_url(),
                        queue_type: QueueType::Classic,
                    },
                    vhost: Some(vhost),
                    database: Some(database),
                    cluster_vhost: None,
                })
            }
        }
    }
}
