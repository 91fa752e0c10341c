//! Storage outages: a database that stops answering turns requests into 503
//! `unavailable` (and RabbitMQ auth checks into a non-200 deny), never a 500 or a hang.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use stargazer_core::model::{
    Credential, DelayedMessage, DeliveryRecord, Entity, Group, Session, Subscription, Task,
    TaskChange, TaskKind, User,
};
use stargazer_core::storage::{Result, Storage, StorageError, Subscriber};
use uuid::Uuid;

use common::{assert_error, Auth, Backend, RawBody, TestServer};

/// Delegates to a real storage until switched off, then fails like an unreachable server.
struct Switchable {
    inner: Arc<dyn Storage>,
    down: AtomicBool,
}

impl Switchable {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(StorageError::Backend(
                "connection refused (10.1.2.3:27017)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

macro_rules! delegate {
    ($(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)*) => {
        #[async_trait]
        impl Storage for Switchable {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.check()?;
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

delegate! {
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
    fn insert_session(&self, session: &Session) -> Result<()>;
    fn get_session(&self, token_hash: &str) -> Result<Option<Session>>;
    fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()>;
    fn delete_session(&self, token_hash: &str) -> Result<bool>;
    fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64>;
    fn insert_credential(&self, credential: &Credential) -> Result<()>;
    fn get_credential(&self, username: &str) -> Result<Option<Credential>>;
    fn delete_credential(&self, username: &str) -> Result<bool>;
    fn list_credentials(&self) -> Result<Vec<Credential>>;
    fn put_delayed(&self, message: &DelayedMessage) -> Result<()>;
    fn delete_delayed(&self, id: &str) -> Result<bool>;
    fn get_delayed(&self, id: &str) -> Result<Option<DelayedMessage>>;
    fn list_delayed(&self, after: Option<&str>, limit: u32) -> Result<Vec<DelayedMessage>>;
    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<serde_json::Value>>;
    fn kv_put(&self, namespace: &str, key: &str, value: &serde_json::Value) -> Result<()>;
    fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool>;
    fn kv_list(&self, namespace: &str) -> Result<Vec<(String, serde_json::Value)>>;
    fn mark_seen(&self, namespace: &str, id: &str, at: DateTime<Utc>) -> Result<bool>;
    fn purge_seen(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64>;
    fn record_delivery(&self, record: &DeliveryRecord) -> Result<bool>;
    fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<Vec<bool>>;
    fn get_delivery(&self, event: Uuid, im: &str, chat_id: &str) -> Result<Option<DeliveryRecord>>;
    fn delivered_chats(&self, event: Uuid, im: &str, chats: &[String]) -> Result<HashSet<String>>;
}

async fn storage_outage_is_503(backend: Backend) {
    let switchable = Arc::new(Switchable {
        inner: backend.connect().await,
        down: AtomicBool::new(false),
    });
    let server = TestServer::with_config(switchable.clone(), common::test_config()).await;
    let bot = server.bot().await;
    let user = bot
        .add_user(&stargazer_api::types::AddUser {
            im: "telegram".into(),
            chat_id: "1".into(),
            name: String::new(),
            language: "en".into(),
        })
        .await
        .unwrap();
    let token = bot.new_session(user.id).await.unwrap().token;
    server
        .credential(
            "fresh",
            common::perms(&[("api", stargazer_core::model::Access::Ro)]),
        )
        .await;

    switchable.down.store(true, Ordering::SeqCst);
    // A verified (cached) credential reaches the method, which fails.
    let cached = server
        .post(
            "/v1/getUser",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(serde_json::json!({"user": user.id})),
        )
        .await;
    assert_error(&cached, 503, "unavailable");
    assert!(
        !cached.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.1.2.3"),
        "driver detail leaked"
    );
    // An uncached credential cannot be checked.
    let fresh = server
        .post(
            "/v1/getEntities",
            Auth::Basic("fresh", "pw-fresh"),
            RawBody::Empty,
        )
        .await;
    assert_error(&fresh, 503, "unavailable");
    // Sessions cannot be looked up.
    let session = server
        .post("/v1/getSettings", Auth::Bearer(&token), RawBody::Empty)
        .await;
    assert_error(&session, 503, "unavailable");
    // RabbitMQ gets a non-200 (which it treats as deny).
    let mq = server
        .http
        .post(format!("{}/auth/user", server.base))
        .form(&[("username", "fresh"), ("password", "pw-fresh")])
        .send()
        .await
        .unwrap();
    assert_eq!(mq.status(), 503);
    assert_eq!(mq.text().await.unwrap(), "deny");

    switchable.down.store(false, Ordering::SeqCst);
    assert_eq!(bot.get_user(user.id).await.unwrap().id, user.id);
    server.stop().await;
}

both_backends!(storage_outage_is_503);
