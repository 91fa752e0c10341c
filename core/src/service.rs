//! The one shape every service has.
//!
//! A service crate (a source, a middleware, a bot, the api, the coordinator) implements
//! [`Service`] once: it says what it needs ([`Needs`]: the storage capabilities it uses,
//! the bus, listeners, whether it serves its own `/metrics`), describes the endpoints it
//! talks to for the start-up summary, and runs on a [`ServiceContext`] until the
//! context's shutdown token is cancelled. The platform holds one table of services and
//! builds both single-role processes and standalone from it, so a new service is a crate
//! implementing this trait, a configuration [`Section`](crate::config::Section) and one
//! row in that table.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::storage::{
    AccessStore, DelayStore, DeliveryStore, EntityStore, StateStore, Storage, StorageHealth,
    UserStore,
};

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

/// One capability of the storage (docs/ARCHITECTURE.md §3): what a service declares in
/// [`Needs::storage`] and gets from [`ServiceContext`], and nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Entities, groups, tasks and the task change stream ([`EntityStore`]).
    Entities,
    /// Chat users and subscriptions ([`UserStore`]).
    Users,
    /// Sessions and credentials ([`AccessStore`]).
    Access,
    /// Messages held until their time ([`DelayStore`]).
    Delayed,
    /// Key/value entries and seen windows ([`StateStore`]).
    State,
    /// The delivery log ([`DeliveryStore`]).
    Deliveries,
}

impl Capability {
    /// Every capability: what a service that serves all of the storage (the api) needs.
    pub const ALL: &'static [Capability] = &[
        Capability::Entities,
        Capability::Users,
        Capability::Access,
        Capability::Delayed,
        Capability::State,
        Capability::Deliveries,
    ];
}

/// What a service needs the platform to provide before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The storage capabilities it uses; none means the process opens no database (the
    /// translate middleware keeps its cache in memory).
    pub storage: Vec<Capability>,
    /// The message bus (every service but the api and the coordinator).
    pub bus: bool,
    /// Listeners, handed over in this order in [`ServiceContext::listeners`].
    pub listeners: Vec<Listen>,
    /// Whether the service serves `/metrics` itself (on one of its listeners); otherwise
    /// a single-role process serves its registry and `/readyz` on `metrics_listen`.
    pub serves_metrics: bool,
}

impl Needs {
    /// These storage capabilities and the bus, no listener, metrics served by the
    /// platform: what a consumer or a polling source needs.
    pub fn storage_and_bus(capabilities: &[Capability]) -> Self {
        Self {
            storage: capabilities.to_vec(),
            bus: true,
            ..Self::default()
        }
    }

    /// Whether the service uses the storage at all.
    pub fn uses_storage(&self) -> bool {
        !self.storage.is_empty()
    }
}

/// The shared storage together with the capabilities a service declared: the only way a
/// service reaches the storage, so it reaches only what it declared.
#[derive(Clone)]
pub struct StorageGrant {
    storage: Arc<dyn Storage>,
    capabilities: Vec<Capability>,
}

impl StorageGrant {
    /// Grants `capabilities` of `storage`.
    pub fn new(storage: Arc<dyn Storage>, capabilities: &[Capability]) -> Self {
        Self {
            storage,
            capabilities: capabilities.to_vec(),
        }
    }

    fn check(&self, capability: Capability) -> Result<(), ContextError> {
        match self.capabilities.contains(&capability) {
            true => Ok(()),
            false => Err(ContextError::NotGranted(capability)),
        }
    }
}

/// Everything the platform hands a service when it starts it.
pub struct ServiceContext {
    /// The storage every instance shares, limited to the capabilities [`Needs::storage`]
    /// declared (`None` when it declared none).
    pub storage: Option<StorageGrant>,
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
    /// The service asked for a storage capability it did not declare.
    #[error("storage capability {0:?} not granted (the service must list it in `Needs::storage`)")]
    NotGranted(Capability),
    /// The service asked for the bus but the context holds none.
    #[error("no bus in the service context (the service must declare `Needs::bus`)")]
    NoBus,
    /// Fewer listeners than the service declared.
    #[error("listener {0} missing from the service context")]
    NoListener(usize),
}

impl ServiceContext {
    fn grant(&self, capability: Capability) -> Result<Arc<dyn Storage>, ContextError> {
        let grant = self.storage.as_ref().ok_or(ContextError::NoStorage)?;
        grant.check(capability)?;
        Ok(grant.storage.clone())
    }

    /// Entities, groups and tasks, when [`Capability::Entities`] was declared.
    pub fn entity_store(&self) -> Result<Arc<dyn EntityStore>, ContextError> {
        Ok(self.grant(Capability::Entities)?)
    }

    /// Chat users and subscriptions, when [`Capability::Users`] was declared.
    pub fn user_store(&self) -> Result<Arc<dyn UserStore>, ContextError> {
        Ok(self.grant(Capability::Users)?)
    }

    /// Sessions and credentials, when [`Capability::Access`] was declared.
    pub fn access_store(&self) -> Result<Arc<dyn AccessStore>, ContextError> {
        Ok(self.grant(Capability::Access)?)
    }

    /// Delayed messages, when [`Capability::Delayed`] was declared.
    pub fn delay_store(&self) -> Result<Arc<dyn DelayStore>, ContextError> {
        Ok(self.grant(Capability::Delayed)?)
    }

    /// Key/value entries and seen windows, when [`Capability::State`] was declared.
    pub fn state_store(&self) -> Result<Arc<dyn StateStore>, ContextError> {
        Ok(self.grant(Capability::State)?)
    }

    /// The delivery log, when [`Capability::Deliveries`] was declared.
    pub fn delivery_store(&self) -> Result<Arc<dyn DeliveryStore>, ContextError> {
        Ok(self.grant(Capability::Deliveries)?)
    }

    /// Whether the storage answers (for a service's own `/readyz`): granted with any
    /// capability, since it reads and writes nothing.
    pub fn storage_health(&self) -> Result<Arc<dyn StorageHealth>, ContextError> {
        let grant = self.storage.as_ref().ok_or(ContextError::NoStorage)?;
        Ok(grant.storage.clone())
    }

    /// The whole storage, for a service that declared every capability
    /// ([`Capability::ALL`]: the api, which serves all of it).
    pub fn storage(&self) -> Result<Arc<dyn Storage>, ContextError> {
        for capability in Capability::ALL {
            self.grant(*capability)?;
        }
        self.grant(Capability::Entities)
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn context(capabilities: &[Capability]) -> ServiceContext {
        let storage = crate::storage::connect("sqlite::memory:").await.unwrap();
        ServiceContext {
            storage: Some(StorageGrant::new(storage, capabilities)),
            bus: None,
            listeners: Vec::new(),
            registry: Registry::new(),
            shutdown: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn a_service_reaches_only_the_capabilities_it_declared() {
        let cx = context(&[Capability::Delayed, Capability::State]).await;
        assert!(cx.delay_store().is_ok());
        assert!(cx.state_store().is_ok());
        for refused in [
            cx.entity_store().err(),
            cx.user_store().err(),
            cx.access_store().err(),
            cx.delivery_store().err(),
            cx.storage().err(),
        ] {
            assert!(
                matches!(refused, Some(ContextError::NotGranted(_))),
                "{refused:?}"
            );
        }
        let err = cx.user_store().err().unwrap();
        assert!(err.to_string().contains("Users"), "{err}");
    }

    #[tokio::test]
    async fn the_whole_storage_needs_every_capability() {
        assert!(context(Capability::ALL).await.storage().is_ok());
        let cx = ServiceContext {
            storage: None,
            ..context(&[]).await
        };
        assert!(matches!(cx.state_store(), Err(ContextError::NoStorage)));
    }
}
