//! [`FaultyStorage`]: a storage that delegates to a real one and fails the calls a test
//! chooses, the way an unreachable database fails them, to prove a service survives
//! storage outages (503s, retries, nothing lost).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use stargazer_core::model::{
    Credential, DelayedMessage, DeliveryRecord, Entity, Group, Session, Subscription, Task,
    TaskChange, TaskKind, User,
};
use stargazer_core::storage::{
    AccessStore, DelayStore, DeliveryStore, EntityStore, Result, StateStore, Storage, StorageError,
    Subscriber, UserStore,
};
use uuid::Uuid;

/// Decides, per call, whether it fails: given the [`Storage`] method's name, `true` makes
/// the call fail with a connection error instead of reaching the real storage.
pub type FaultPolicy = dyn Fn(&'static str) -> bool + Send + Sync;

/// Delegates every [`Storage`] call to `inner` unless the policy fails it.
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    policy: Box<FaultPolicy>,
}

impl FaultyStorage {
    /// Wraps `inner`; `policy` is asked before every call.
    pub fn new(
        inner: Arc<dyn Storage>,
        policy: impl Fn(&'static str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            policy: Box::new(policy),
        }
    }

    fn check(&self, method: &'static str) -> Result<()> {
        if (self.policy)(method) {
            Err(StorageError::Backend(format!(
                "connection refused (10.1.2.3:27017) during {method}"
            )))
        } else {
            Ok(())
        }
    }
}

macro_rules! delegate {
    ($(impl $capability:ident { $(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)* })*) => {
        $(
            #[async_trait]
            impl $capability for FaultyStorage {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> $ret {
                        self.check(stringify!($name))?;
                        self.inner.$name($($arg),*).await
                    }
                )*
            }
        )*
    };
}

// `ping` keeps the default, which reads through `kv_get` (and so fails with it).
#[async_trait]
impl Storage for FaultyStorage {}

delegate! {
    impl EntityStore {
        fn insert_entity(&self, entity: &Entity) -> Result<()>;
        fn get_entity(&self, id: Uuid) -> Result<Option<Entity>>;
        fn list_entities(&self) -> Result<Vec<Entity>>;
        fn update_entity(&self, entity: &Entity) -> Result<()>;
        fn delete_entity(&self, id: Uuid) -> Result<()>;
        fn upsert_group(&self, group: &Group) -> Result<()>;
        fn list_groups(&self) -> Result<Vec<Group>>;
        fn list_tasks(&self, kind: Option<TaskKind>) -> Result<Vec<Task>>;
        fn get_task(&self, id: Uuid) -> Result<Option<Task>>;
        fn watch_tasks(&self) -> Result<BoxStream<'static, Result<TaskChange>>>;
    }
    impl UserStore {
        fn insert_user(&self, user: &User) -> Result<()>;
        fn get_user(&self, id: Uuid) -> Result<Option<User>>;
        fn find_user_by_chat(&self, im: &str, chat_id: &str) -> Result<Option<User>>;
        fn update_user(&self, user: &User) -> Result<()>;
        fn delete_user(&self, id: Uuid) -> Result<()>;
        fn list_users(&self, im: Option<&str>) -> Result<Vec<User>>;
        fn put_subscription(&self, subscription: &Subscription) -> Result<()>;
        fn delete_subscription(&self, user: Uuid, entity: Uuid) -> Result<bool>;
        fn list_subscriptions(&self, user: Uuid) -> Result<Vec<Subscription>>;
        fn subscribers(&self, entity: Uuid, kind: &str, im: &str) -> Result<Vec<Subscriber>>;
    }
    impl AccessStore {
        fn insert_session(&self, session: &Session) -> Result<()>;
        fn get_session(&self, token_hash: &str) -> Result<Option<Session>>;
        fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()>;
        fn delete_session(&self, token_hash: &str) -> Result<bool>;
        fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64>;
        fn insert_credential(&self, credential: &Credential) -> Result<()>;
        fn get_credential(&self, username: &str) -> Result<Option<Credential>>;
        fn delete_credential(&self, username: &str) -> Result<bool>;
        fn list_credentials(&self) -> Result<Vec<Credential>>;
    }
    impl DelayStore {
        fn put_delayed(&self, message: &DelayedMessage) -> Result<()>;
        fn delete_delayed(&self, id: &str) -> Result<bool>;
        fn get_delayed(&self, id: &str) -> Result<Option<DelayedMessage>>;
        fn list_delayed(&self, after: Option<&str>, limit: u32) -> Result<Vec<DelayedMessage>>;
    }
    impl StateStore {
        fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<serde_json::Value>>;
        fn kv_put(&self, namespace: &str, key: &str, value: &serde_json::Value) -> Result<()>;
        fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool>;
        fn kv_list(&self, namespace: &str) -> Result<Vec<(String, serde_json::Value)>>;
        fn mark_seen(&self, namespace: &str, id: &str, at: DateTime<Utc>) -> Result<bool>;
        fn purge_seen(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64>;
    }
    impl DeliveryStore {
        fn record_delivery(&self, record: &DeliveryRecord) -> Result<bool>;
        fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<Vec<bool>>;
        fn get_delivery(&self, event: Uuid, im: &str, chat_id: &str) -> Result<Option<DeliveryRecord>>;
        fn delivered_chats(&self, event: Uuid, im: &str, chats: &[String]) -> Result<HashSet<String>>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn chosen_calls_fail_and_the_others_reach_the_real_storage() {
        let inner = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let switch = down.clone();
        let storage = FaultyStorage::new(inner, move |method| {
            method == "list_entities" && switch.load(Ordering::SeqCst)
        });
        assert!(storage.list_entities().await.unwrap().is_empty());
        down.store(true, Ordering::SeqCst);
        let err = storage.list_entities().await.unwrap_err();
        assert!(err.to_string().contains("list_entities"), "{err}");
        assert!(storage.list_groups().await.is_ok());
    }
}
