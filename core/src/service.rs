//! The one shape every service has.
//!
//! A service crate (a source, a middleware, a bot, the api, the coordinator) implements
//! [`Service`] once: it says what it needs ([`Needs`]: the bus, listeners, whether it
//! serves its own `/metrics`), describes the endpoints it talks to for the start-up
//! summary, and runs on a [`ServiceContext`] until the context's shutdown token is
//! cancelled. The platform holds one table of services and builds both single-role
//! processes and standalone from it, so a new service is a crate implementing this trait,
//! a configuration [`Section`](crate::config::Section) and one row in that table.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::storage::Storage;

/// A service's own error, boxed: the platform only names the service and logs it.
pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// A listener a service needs, bound by the platform before the service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The configuration key of the address (`api.listen`), named in bind errors.
    pub key: &'static str,
    /// Where to bind (port 0 picks a free port).
    pub addr: SocketAddr,
}

/// What a service needs the platform to provide before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The shared storage (every service but the translate middleware, which keeps its
    /// cache in memory).
    pub storage: bool,
    /// The message bus (every service but the api and the coordinator).
    pub bus: bool,
    /// Listeners, handed over in this order in [`ServiceContext::listeners`].
    pub listeners: Vec<Listen>,
    /// Whether the service serves `/metrics` itself (on one of its listeners); otherwise
    /// a single-role process serves its registry and `/readyz` on `metrics_listen`.
    pub serves_metrics: bool,
}

impl Needs {
    /// Storage and bus, no listener, metrics served by the platform: what a consumer or
    /// a polling source needs.
    pub fn storage_and_bus() -> Self {
        Self {
            storage: true,
            bus: true,
            ..Self::default()
        }
    }
}

/// Everything the platform hands a service when it starts it.
pub struct ServiceContext {
    /// The storage every instance shares, when [`Needs::storage`] asked for it.
    pub storage: Option<Arc<dyn Storage>>,
    /// The bus, when [`Needs::bus`] asked for it.
    pub bus: Option<Arc<dyn Bus>>,
    /// The listeners of [`Needs::listeners`], bound, in the same order.
    pub listeners: Vec<TcpListener>,
    /// Where the service registers its metrics (standalone shares one between all).
    pub registry: Registry,
    /// Cancelled when the service should finish in-flight work and return.
    pub shutdown: CancellationToken,
}

/// A need the platform did not meet: a bug in the wiring, reported instead of a panic.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The service asked for storage but the context holds none.
    #[error("no storage in the service context (the service must declare `Needs::storage`)")]
    NoStorage,
    /// The service asked for the bus but the context holds none.
    #[error("no bus in the service context (the service must declare `Needs::bus`)")]
    NoBus,
    /// Fewer listeners than the service declared.
    #[error("listener {0} missing from the service context")]
    NoListener(usize),
}

impl ServiceContext {
    /// The storage, or [`ContextError::NoStorage`].
    pub fn storage(&self) -> Result<Arc<dyn Storage>, ContextError> {
        self.storage.clone().ok_or(ContextError::NoStorage)
    }

    /// The bus, or [`ContextError::NoBus`].
    pub fn bus(&self) -> Result<Arc<dyn Bus>, ContextError> {
        self.bus.clone().ok_or(ContextError::NoBus)
    }

    /// Takes the listeners out of the context, checking that there are `count` of them.
    pub fn take_listeners(&mut self, count: usize) -> Result<Vec<TcpListener>, ContextError> {
        if self.listeners.len() < count {
            return Err(ContextError::NoListener(self.listeners.len()));
        }
        Ok(std::mem::take(&mut self.listeners))
    }
}

/// A service of the platform.
#[async_trait]
pub trait Service: Send + 'static {
    /// The role name, as on the command line and in logs (`worker-youtube`).
    fn name(&self) -> &'static str;

    /// What the platform must provide before [`Service::run`].
    fn needs(&self) -> Needs;

    /// One line for the start-up summary: the external endpoints it talks to or where it
    /// serves, secrets redacted.
    fn describe(&self) -> String;

    /// The id a worker announces to the coordinator; `None` for services that are not
    /// workers.
    fn worker_id(&self) -> Option<&str> {
        None
    }

    /// Runs until `cx.shutdown` is cancelled (then finishes in-flight work) or a fatal
    /// error.
    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError>;
}
