//! [`TimedStorage`]: every call of another storage, bounded in time.
//!
//! A database that stops answering (a partitioned network, a stuck lock) must not hold a
//! request for the driver's own timeouts (30 s and more): past the bound the call fails
//! with [`StorageError::Backend`], which services answer as "unavailable, retry later"
//! (docs/ARCHITECTURE.md §3). A write that timed out may still complete in the database;
//! retrying it is as safe as retrying after a lost connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus::Registry;

use super::{
    AccessStore, DelayStore, DeliveryStore, EntityStore, Result, StateStore, Storage, StorageError,
    StorageHealth, UserStore,
};

/// Delegates to `inner`, failing any call that takes longer than `limit`.
pub struct TimedStorage {
    inner: Arc<dyn Storage>,
    limit: Duration,
}

impl TimedStorage {
    /// Bounds every call of `inner` by `limit`.
    pub fn new(inner: Arc<dyn Storage>, limit: Duration) -> Self {
        Self { inner, limit }
    }

    /// The bound of each call.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    async fn bounded<T>(&self, method: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    method,
                    limit_ms = self.limit.as_millis() as u64,
                    "storage call timed out"
                );
                Err(StorageError::Backend(format!(
                    "no answer within {} ms ({method})",
                    self.limit.as_millis()
                )))
            }
        }
    }
}

macro_rules! bounded {
    ($(impl $capability:ident { $(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)* })*) => {
        $(
            #[async_trait]
            impl $capability for TimedStorage {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> $ret {
                        self.bounded(stringify!($name), self.inner.$name($($arg),*)).await
                    }
                )*
            }
        )*
    };
}

impl Storage for TimedStorage {}

#[async_trait]
impl StorageHealth for TimedStorage {
    async fn ping(&self) -> Result<()> {
        self.bounded("ping", self.inner.ping()).await
    }

    fn register_metrics(&self, registry: &Registry) {
        self.inner.register_metrics(registry);
    }
}

crate::with_storage_methods!(bounded);

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::{DateTime, Utc};
    use futures::stream::BoxStream;
    use uuid::Uuid;

    use super::*;
    use crate::model::{
        ClaimedDelayed, Credential, DelayLease, DelayedMessage, DeliveryRecord, Entity, Group,
        Session, StoredDelayed, Subscription, Task, TaskChange, TaskKind, User,
    };
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::Subscriber;

    /// A storage whose every call waits forever, like a database that stopped answering.
    struct Silent;

    #[async_trait]
    impl EntityStore for Silent {
        async fn insert_entity(&self, _: &Entity) -> Result<()> {
            std::future::pending().await
        }
        async fn get_entity(&self, _: Uuid) -> Result<Option<Entity>> {
            std::future::pending().await
        }
        async fn list_entities(&self) -> Result<Vec<Entity>> {
            std::future::pending().await
        }
        async fn update_entity(&self, _: &Entity) -> Result<()> {
            std::future::pending().await
        }
        async fn delete_entity(&self, _: Uuid) -> Result<()> {
            std::future::pending().await
        }
        async fn upsert_group(&self, _: &Group) -> Result<()> {
            std::future::pending().await
        }
        async fn list_groups(&self) -> Result<Vec<Group>> {
            std::future::pending().await
        }
        async fn list_tasks(&self, _: Option<TaskKind>) -> Result<Vec<Task>> {
            std::future::pending().await
        }
        async fn get_task(&self, _: Uuid) -> Result<Option<Task>> {
            std::future::pending().await
        }
        async fn watch_tasks(&self) -> Result<BoxStream<'static, Result<TaskChange>>> {
            std::future::pending().await
        }
    }

    #[async_trait]
    impl UserStore for Silent {
        async fn insert_user(&self, _: &User) -> Result<()> {
            std::future::pending().await
        }
        async fn get_user(&self, _: Uuid) -> Result<Option<User>> {
            std::future::pending().await
        }
        async fn find_user_by_chat(&self, _: &str, _: &str) -> Result<Option<User>> {
            std::future::pending().await
        }
        async fn update_user(&self, _: &User) -> Result<()> {
            std::future::pending().await
        }
        async fn delete_user(&self, _: Uuid) -> Result<()> {
            std::future::pending().await
        }
        async fn list_users(&self, _: Option<&str>) -> Result<Vec<User>> {
            std::future::pending().await
        }
        async fn put_subscription(&self, _: &Subscription) -> Result<()> {
            std::future::pending().await
        }
        async fn put_subscription_kinds(&self, _: Uuid, _: Uuid, _: &[String]) -> Result<()> {
            std::future::pending().await
        }
        async fn delete_subscription(&self, _: Uuid, _: Uuid) -> Result<bool> {
            std::future::pending().await
        }
        async fn list_subscriptions(&self, _: Uuid) -> Result<Vec<Subscription>> {
            std::future::pending().await
        }
        async fn subscribers(&self, _: Uuid, _: &str, _: &str) -> Result<Vec<Subscriber>> {
            std::future::pending().await
        }
    }

    #[async_trait]
    impl AccessStore for Silent {
        async fn insert_session(&self, _: &Session) -> Result<()> {
            std::future::pending().await
        }
        async fn get_session(&self, _: &str) -> Result<Option<Session>> {
            std::future::pending().await
        }
        async fn touch_session(&self, _: &str, _: DateTime<Utc>) -> Result<()> {
            std::future::pending().await
        }
        async fn delete_session(&self, _: &str) -> Result<bool> {
            std::future::pending().await
        }
        async fn purge_sessions(&self, _: DateTime<Utc>) -> Result<u64> {
            std::future::pending().await
        }
        async fn insert_credential(&self, _: &Credential) -> Result<()> {
            std::future::pending().await
        }
        async fn get_credential(&self, _: &str) -> Result<Option<Credential>> {
            std::future::pending().await
        }
        async fn delete_credential(&self, _: &str) -> Result<bool> {
            std::future::pending().await
        }
        async fn list_credentials(&self) -> Result<Vec<Credential>> {
            std::future::pending().await
        }
    }

    #[async_trait]
    impl DelayStore for Silent {
        async fn put_delayed(&self, _: &DelayedMessage, _: Option<&DelayLease>) -> Result<i64> {
            std::future::pending().await
        }
        async fn delete_delayed(&self, _: &str) -> Result<bool> {
            std::future::pending().await
        }
        async fn delete_delayed_if(&self, _: &str, _: i64) -> Result<bool> {
            std::future::pending().await
        }
        async fn get_delayed(&self, _: &str) -> Result<Option<StoredDelayed>> {
            std::future::pending().await
        }
        async fn list_delayed(&self, _: Option<&str>, _: u32) -> Result<Vec<DelayedMessage>> {
            std::future::pending().await
        }
        async fn claim_delayed(
            &self,
            _: &str,
            _: i64,
            _: i64,
            _: i64,
            _: u32,
        ) -> Result<Vec<ClaimedDelayed>> {
            std::future::pending().await
        }
        async fn renew_delayed_claims(&self, _: &str, _: i64) -> Result<u64> {
            std::future::pending().await
        }
        async fn release_delayed_claims(&self, _: &str) -> Result<u64> {
            std::future::pending().await
        }
    }

    #[async_trait]
    impl StateStore for Silent {
        async fn kv_get(&self, _: &str, _: &str) -> Result<Option<serde_json::Value>> {
            std::future::pending().await
        }
        async fn kv_put(&self, _: &str, _: &str, _: &serde_json::Value) -> Result<()> {
            std::future::pending().await
        }
        async fn kv_delete(&self, _: &str, _: &str) -> Result<bool> {
            std::future::pending().await
        }
        async fn kv_list(&self, _: &str) -> Result<Vec<(String, serde_json::Value)>> {
            std::future::pending().await
        }
        async fn mark_seen(&self, _: &str, _: &str, _: DateTime<Utc>) -> Result<bool> {
            std::future::pending().await
        }
        async fn purge_seen(&self, _: &str, _: DateTime<Utc>) -> Result<u64> {
            std::future::pending().await
        }
        async fn lease_acquire(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<Option<crate::storage::Lease>> {
            std::future::pending().await
        }
        async fn lease_release(&self, _: &str, _: &str, _: &str) -> Result<bool> {
            std::future::pending().await
        }
        async fn lease_list(&self, _: &str) -> Result<Vec<crate::storage::Lease>> {
            std::future::pending().await
        }

        async fn add_to_counter(
            &self,
            _: &str,
            _: &str,
            _: i64,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<i64> {
            std::future::pending().await
        }
        async fn purge_counters(&self, _: &str, _: DateTime<Utc>) -> Result<u64> {
            std::future::pending().await
        }
    }

    #[async_trait]
    impl DeliveryStore for Silent {
        async fn record_delivery(&self, _: &DeliveryRecord) -> Result<bool> {
            std::future::pending().await
        }
        async fn record_deliveries(&self, _: &[DeliveryRecord]) -> Result<Vec<bool>> {
            std::future::pending().await
        }
        async fn get_delivery(&self, _: Uuid, _: &str, _: &str) -> Result<Option<DeliveryRecord>> {
            std::future::pending().await
        }
        async fn delivered_chats(&self, _: Uuid, _: &str, _: &[String]) -> Result<HashSet<String>> {
            std::future::pending().await
        }
        async fn claim_deliveries(
            &self,
            _: &crate::model::DeliveryClaim,
            _: &[String],
        ) -> Result<Vec<crate::model::ClaimState>> {
            std::future::pending().await
        }
        async fn renew_claims(&self, _: &str, _: &str, _: DateTime<Utc>) -> Result<u64> {
            std::future::pending().await
        }
        async fn release_claims(&self, _: &str, _: &str, _: Option<Uuid>) -> Result<u64> {
            std::future::pending().await
        }
    }

    impl Storage for Silent {}

    #[async_trait]
    impl StorageHealth for Silent {
        async fn ping(&self) -> Result<()> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_database_fails_at_the_bound() {
        let timed = TimedStorage::new(Arc::new(Silent), Duration::from_millis(1500));
        let started = tokio::time::Instant::now();
        match timed.list_entities().await {
            Err(StorageError::Backend(message)) => {
                assert!(message.contains("1500 ms"), "{message}");
                assert!(message.contains("list_entities"), "{message}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
        // The default ping goes through the inner storage too, and is bounded.
        assert!(matches!(timed.ping().await, Err(StorageError::Backend(_))));
    }

    #[tokio::test]
    async fn answers_within_the_bound_pass_through() {
        let inner: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().await.unwrap());
        let timed = TimedStorage::new(inner, Duration::from_secs(5));
        timed
            .kv_put("ns", "k", &serde_json::json!(1))
            .await
            .unwrap();
        assert_eq!(
            timed.kv_get("ns", "k").await.unwrap(),
            Some(serde_json::json!(1))
        );
        timed.ping().await.unwrap();
    }
}
