//! The shared state every handler receives through axum's `State`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stargazer_core::model;
use stargazer_core::schedule::ScheduledStream;
use stargazer_core::storage::timeout::TimedStorage;
use stargazer_core::storage::Storage;
use stargazer_core::throttle::LoginThrottle;
use uuid::Uuid;

use crate::auth::credentials::{CheckLimits, CredentialVerifier};
use crate::cache::ReadCache;
use crate::config::ApiConfig;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::mq_auth::Grants;

/// Configuration, storage and the in-memory helpers of one api process. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) credentials: Arc<CredentialVerifier>,
    /// Broker grants by username, for RabbitMQ's checks that carry no password.
    pub(crate) grants: Arc<Grants>,
    pub(crate) metrics: Arc<Metrics>,
    /// The serialized `getEntities` result.
    pub(crate) entities: Arc<ReadCache<()>>,
    /// Serialized `getEntity` results by entity id.
    pub(crate) entity_by_id: Arc<ReadCache<Uuid>>,
    /// Serialized `getSubscribers` results by `(entity, kind, im)`.
    pub(crate) subscribers: Arc<ReadCache<(Uuid, String, String)>>,
    /// The schedule (every user's feed filters the same list).
    pub(crate) schedule: Arc<ReadCache<(), Arc<Vec<ScheduledStream>>>>,
    /// Every entity by id, for the names in the schedule.
    pub(crate) entity_names: Arc<ReadCache<(), Arc<HashMap<Uuid, model::Entity>>>>,
    /// Serializes entity writes of this process, so its own writers never race for an
    /// account (across processes the storage's unique index decides).
    pub(crate) entity_writes: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    /// Builds the state after validating `config`.
    /// The api's metrics (and the storage's) are registered in `registry`, which
    /// `/metrics` serves. Every storage call is bounded by `storage_timeout_ms`.
    pub fn new(
        config: ApiConfig,
        storage: Arc<dyn Storage>,
        registry: &prometheus::Registry,
    ) -> Result<Self> {
        config.validate()?;
        storage.register_metrics(registry);
        let storage: Arc<dyn Storage> =
            Arc::new(TimedStorage::new(storage, config.storage_timeout()));
        let read_ttl = Duration::from_millis(config.read_cache_ms);
        let capacity = config.read_cache_capacity;
        let metrics = Arc::new(Metrics::new(registry.clone())?);
        Ok(Self {
            credentials: Arc::new(CredentialVerifier::new(
                storage.clone(),
                Duration::from_secs(config.credential_cache_secs),
                LoginThrottle::new(config.login_throttle()),
                CheckLimits {
                    concurrency: config.pbkdf2_concurrency,
                    wait: Duration::from_millis(config.pbkdf2_wait_ms),
                },
                metrics.clone(),
            )),
            grants: Arc::new(Grants::new(
                storage.clone(),
                Duration::from_secs(config.credential_cache_secs),
            )),
            metrics,
            entities: Arc::new(ReadCache::new(read_ttl, 1)),
            entity_by_id: Arc::new(ReadCache::new(read_ttl, capacity)),
            subscribers: Arc::new(ReadCache::new(read_ttl, capacity)),
            schedule: Arc::new(ReadCache::new(read_ttl, 1)),
            entity_names: Arc::new(ReadCache::new(read_ttl, 1)),
            entity_writes: Arc::default(),
            config: Arc::new(config),
            storage,
        })
    }

    /// Called after any entity write: the entity list, single entities and the subscriber
    /// lookups (which depend on entities existing) are stale.
    pub(crate) fn entities_changed(&self) {
        self.entities.clear();
        self.entity_by_id.clear();
        self.subscribers.clear();
        self.entity_names.clear();
    }

    /// Called after any user or subscription write.
    pub(crate) fn users_changed(&self) {
        self.subscribers.clear();
    }
}
