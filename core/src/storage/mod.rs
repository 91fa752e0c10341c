//! Persistent state behind one trait, [`Storage`], made of one trait per capability:
//!
//! | capability | what | used by |
//! |---|---|---|
//! | [`EntityStore`] | entities, groups, tasks, the task change stream | api, coordinator |
//! | [`UserStore`] | chat users, subscriptions, the subscriber lookup | api, bots |
//! | [`AccessStore`] | sessions, credentials | api, coordinator |
//! | [`DelayStore`] | messages held until their time | middleware-delay |
//! | [`StateStore`] | key/value entries, seen windows, windowed counters | workers, coordinator, middlewares, bots |
//! | [`DeliveryStore`] | the delivery log | bots |
//!
//! Two implementations: MongoDB ([`mongo::MongoStorage`], production) and SQLite
//! ([`sqlite::SqliteStorage`], embedded). Each backend is a folder with one file per
//! capability beside its codec and plumbing (`mod.rs`: connection and schema; `codec.rs`:
//! records to and from the model; MongoDB's `tx.rs` and `watch.rs`: transactions and the
//! change stream). Invariants both enforce live here (`check_distinct_tasks`,
//! `owned_task`, the conflict messages). Both pass the same contract suite
//! (`core/tests/storage_suite/`, one file per capability).
//!
//! Methods of every capability can be called on an `Arc<dyn Storage>` without importing
//! the capability trait (trait-object methods include their supertraits'); a concrete
//! backend type needs the trait in scope.
//!
//! [`connect`] picks the implementation from the URL scheme: `mongodb://…`,
//! `mongodb+srv://…`, `sqlite://path` or `sqlite::memory:`. [`timeout::TimedStorage`]
//! bounds every call of another storage.
//!
//! Reads degrade rather than fail (docs/ARCHITECTURE.md §3): a stored record that does
//! not decode is left out of listings with a warning naming it, counted in
//! `stargazer_storage_malformed_total{collection}` ([`MalformedRecords`]).

pub mod mongo;
pub mod sqlite;
pub mod timeout;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use prometheus::{IntCounterVec, Opts, Registry};
use uuid::Uuid;

use crate::model::{
    ClaimState, ClaimedDelayed, Credential, DelayLease, DelayedMessage, DeliveryClaim,
    DeliveryRecord, Entity, Group, Session, StoredDelayed, Subscription, Task, TaskChange,
    TaskKind, User,
};

/// Errors every storage implementation maps its driver errors into.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique key is already taken (`what` names the record and key).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The record to update or delete does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The storage URL is not one this build understands.
    #[error("invalid storage url `{0}`: expected mongodb://, sqlite://PATH or sqlite::memory:")]
    InvalidUrl(String),
    /// A stored document could not be decoded into the model.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The stored data breaks an invariant the storage enforces (two tasks watching one
    /// account); found when opening, and fixing it needs an operator. The message names
    /// the records.
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
    /// The database could not be reached or failed.
    #[error("database error: {0}")]
    Backend(String),
}

/// Result alias for storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A chat user together with their subscription, as returned by the fan-out lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    /// The user to deliver to.
    pub user: User,
    /// The subscription that matched.
    pub subscription: Subscription,
}

/// Everything the services persist, as one object: every capability below. Implementations
/// are cheap to share (`Arc<dyn Storage>`); a service that needs one capability can hold
/// just that (`Arc<dyn DelayStore>`, upcast from `Arc<dyn Storage>`).
///
/// Each capability's semantics are pinned down by the contract suite
/// (`core/tests/storage_suite/`), organised the same way.
pub trait Storage:
    StorageHealth + EntityStore + UserStore + AccessStore + DelayStore + StateStore + DeliveryStore
{
}

/// Whether the database answers, and its metrics: not a capability (it reads and writes
/// nothing), so every service that holds any capability may check it for `/readyz`.
#[async_trait]
pub trait StorageHealth: Send + Sync + 'static {
    /// Checks that the database answers (a round trip, no data read): each backend sends
    /// its cheapest command.
    async fn ping(&self) -> Result<()>;

    /// Registers this storage's metrics (malformed records skipped) in `registry`.
    /// Registering one storage in one registry twice is harmless.
    fn register_metrics(&self, registry: &Registry) {
        let _ = registry;
    }
}

/// Entities with their tasks, groups, and the task change stream (the api writes them;
/// the coordinator reads and watches tasks).
#[async_trait]
pub trait EntityStore: Send + Sync + 'static {
    // ---- entities and groups ----

    /// Inserts an entity and its tasks; `Conflict` if the id or a task id exists, or if
    /// another entity's task watches the same account (`(kind, account)` is unique: the
    /// message names the account and the entity that owns it).
    async fn insert_entity(&self, entity: &Entity) -> Result<()>;
    /// The entity with its tasks.
    async fn get_entity(&self, id: Uuid) -> Result<Option<Entity>>;
    /// Every entity with its tasks, ordered by id. Entities and tasks whose stored form
    /// does not decode are skipped (and reported), as in every listing.
    async fn list_entities(&self) -> Result<Vec<Entity>>;
    /// Replaces an entity and its task list (tasks not in the list are deleted, new ones
    /// inserted); `NotFound` if absent, `Conflict` as for [`EntityStore::insert_entity`].
    async fn update_entity(&self, entity: &Entity) -> Result<()>;
    /// Deletes an entity, its tasks and every subscription to it; `NotFound` if absent.
    async fn delete_entity(&self, id: Uuid) -> Result<()>;
    /// Inserts or replaces a group.
    async fn upsert_group(&self, group: &Group) -> Result<()>;
    /// Every group, ordered by id.
    async fn list_groups(&self) -> Result<Vec<Group>>;

    // ---- tasks ----

    /// Every task, optionally of one kind, ordered by id.
    async fn list_tasks(&self, kind: Option<TaskKind>) -> Result<Vec<Task>>;
    /// One task.
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>>;
    /// A stream of task inserts, updates and deletes made after the call returns (by any
    /// process for MongoDB; by this process for SQLite). The stream ends only when the
    /// storage is dropped; a lagging reader gets `Err` and should resynchronise with
    /// [`EntityStore::list_tasks`].
    async fn watch_tasks(&self) -> Result<BoxStream<'static, Result<TaskChange>>>;
}

/// Chat users and their subscriptions, and the fan-out lookup of subscribers (the api and the bots).
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    // ---- users ----

    /// Inserts a user; `Conflict` if the id or `(im, im_chat_id)` exists.
    async fn insert_user(&self, user: &User) -> Result<()>;
    /// One user by id.
    async fn get_user(&self, id: Uuid) -> Result<Option<User>>;
    /// One user by IM platform and chat id.
    async fn find_user_by_chat(&self, im: &str, chat_id: &str) -> Result<Option<User>>;
    /// Replaces a user's fields (name, language, settings, chat id); `NotFound` if absent,
    /// `Conflict` if the new `(im, im_chat_id)` belongs to someone else.
    async fn update_user(&self, user: &User) -> Result<()>;
    /// Deletes a user, their sessions and subscriptions; `NotFound` if absent.
    async fn delete_user(&self, id: Uuid) -> Result<()>;
    /// Every user of one IM platform (all when `None`), ordered by id.
    async fn list_users(&self, im: Option<&str>) -> Result<Vec<User>>;

    // ---- subscriptions ----

    /// Inserts or replaces the subscription of `(user, entity)`, its mention included
    /// (`None` stores none).
    async fn put_subscription(&self, subscription: &Subscription) -> Result<()>;
    /// Sets the kinds of the subscription of `(user, entity)` in one step, keeping its
    /// mention; inserts the subscription, without mention, if there is none.
    async fn put_subscription_kinds(
        &self,
        user: Uuid,
        entity: Uuid,
        kinds: &[String],
    ) -> Result<()>;
    /// Removes the subscription of `(user, entity)`; `Ok(false)` if there was none.
    async fn delete_subscription(&self, user: Uuid, entity: Uuid) -> Result<bool>;
    /// A user's subscriptions, ordered by entity id.
    async fn list_subscriptions(&self, user: Uuid) -> Result<Vec<Subscription>>;
    /// Users on `im` subscribed to `entity` whose kinds include `kind` (or are empty),
    /// excluding paused users, ordered by user id.
    async fn subscribers(&self, entity: Uuid, kind: &str, im: &str) -> Result<Vec<Subscriber>>;
}

/// Sessions and credentials: who may log in and what each credential may reach (the api
/// and the coordinator).
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    // ---- sessions ----

    /// Stores a new session; `Conflict` if the token hash exists.
    async fn insert_session(&self, session: &Session) -> Result<()>;
    /// A session by token hash (expired ones included; callers check the time).
    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>>;
    /// Moves a session's sliding expiry; `NotFound` if absent.
    async fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()>;
    /// Deletes one session; `Ok(false)` if there was none.
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;
    /// Deletes sessions expired at `now`; returns how many.
    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64>;

    // ---- credentials ----

    /// Stores a credential; `Conflict` if the username exists.
    async fn insert_credential(&self, credential: &Credential) -> Result<()>;
    /// A credential by username.
    async fn get_credential(&self, username: &str) -> Result<Option<Credential>>;
    /// Deletes a credential; `Ok(false)` if there was none.
    async fn delete_credential(&self, username: &str) -> Result<bool>;
    /// Every credential, ordered by username.
    async fn list_credentials(&self) -> Result<Vec<Credential>>;
}

/// Messages held by middleware-delay until their time, with the claims that let several
/// instances share one store (docs/ARCHITECTURE.md §5 middleware-delay): each pending
/// message has a revision (fresh on every write) and at most one owner whose lease
/// lapses unless renewed.
#[async_trait]
pub trait DelayStore: Send + Sync + 'static {
    // ---- delayed messages ----

    /// Inserts or replaces the pending message with `message.id` under a fresh revision,
    /// returned. The claim is reset: to `lease` when given (the writer holds it at once),
    /// else to unclaimed.
    async fn put_delayed(
        &self,
        message: &DelayedMessage,
        lease: Option<&DelayLease>,
    ) -> Result<i64>;
    /// Removes a pending message whatever its revision (a cancel); `Ok(false)` if there
    /// was none.
    async fn delete_delayed(&self, id: &str) -> Result<bool>;
    /// Removes the pending message `id` only if it is still `revision` (the one that
    /// fired); `Ok(false)` if it was replaced or removed meanwhile.
    async fn delete_delayed_if(&self, id: &str, revision: i64) -> Result<bool>;
    /// One pending message with its revision and claim.
    async fn get_delayed(&self, id: &str) -> Result<Option<StoredDelayed>>;
    /// Pending messages with id greater than `after` (all when `None`), ordered by id,
    /// at most `limit`: a cursor for reading millions without holding them twice.
    async fn list_delayed(&self, after: Option<&str>, limit: u32) -> Result<Vec<DelayedMessage>>;
    /// Gives `owner` (lease until `lease_until_ms`) up to `limit` messages due before
    /// `due_before_ms` that are unclaimed or whose lease expired (`until < now_ms`),
    /// earliest first, and returns exactly those switched to `owner` by this call. Two
    /// concurrent callers never both get one message.
    async fn claim_delayed(
        &self,
        owner: &str,
        due_before_ms: i64,
        lease_until_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelayed>>;
    /// Extends every claim of `owner` to `lease_until_ms` in one write (expired ones
    /// too, as long as nobody took them over); returns how many.
    async fn renew_delayed_claims(&self, owner: &str, lease_until_ms: i64) -> Result<u64>;
    /// Makes every message claimed by `owner` unclaimed (a graceful stop, so other
    /// instances take them at once); returns how many.
    async fn release_delayed_claims(&self, owner: &str) -> Result<u64>;
}

/// Small state of services: key/value entries (worker cursors, WebSub leases, the
/// coordinator's snapshot) and seen windows (dedup of ids within a time window).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    // ---- key/value state ----

    /// The value stored under `(namespace, key)`.
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<serde_json::Value>>;
    /// Stores `value` under `(namespace, key)`, replacing any previous one.
    async fn kv_put(&self, namespace: &str, key: &str, value: &serde_json::Value) -> Result<()>;
    /// Deletes `(namespace, key)`; `Ok(false)` if absent.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool>;
    /// Every `(key, value)` in a namespace, ordered by key.
    async fn kv_list(&self, namespace: &str) -> Result<Vec<(String, serde_json::Value)>>;

    // ---- seen windows ----

    /// Records `id` as seen in `namespace` at `at`; `Ok(true)` if it was not seen before.
    async fn mark_seen(&self, namespace: &str, id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Forgets ids seen before `before` in `namespace`; returns how many.
    async fn purge_seen(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64>;

    // ---- leases ----

    /// Takes or renews the lease `(namespace, name)` for `owner` until `until`: granted
    /// when nobody holds it, when its holder's term ended before `now`, or when `owner`
    /// holds it already (a renewal, which keeps the epoch). Answers the lease as it now
    /// stands when `owner` holds it, `None` when another owner's term runs on. The check
    /// and the write are one atomic step, so of two instances asking at once one wins.
    async fn lease_acquire(
        &self,
        namespace: &str,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Lease>>;
    /// Ends `owner`'s term on `(namespace, name)` at once, so another instance may take
    /// the lease without waiting for it to run out; `Ok(false)` if `owner` did not hold it.
    async fn lease_release(&self, namespace: &str, name: &str, owner: &str) -> Result<bool>;
    /// Every lease of a namespace (held or run out), ordered by name.
    async fn lease_list(&self, namespace: &str) -> Result<Vec<Lease>>;

    // ---- windowed counters ----

    /// Adds `delta` to the counter `(namespace, key)` atomically and answers its new value:
    /// a counter last changed before `window_start` (or absent) starts again from 0, a
    /// result below 0 is stored as 0, and the change time becomes `now`. Counters shared
    /// by every instance on one store (login throttling).
    async fn add_to_counter(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> Result<i64>;
    /// Deletes the counters of `namespace` last changed before `before`; returns how many.
    async fn purge_counters(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64>;
}

/// A named lease in the [`StateStore`]: one owner at a time, for a bounded term.
///
/// Instances of one role share work through leases (docs/ARCHITECTURE.md §3): a holder
/// renews before `until`; one that dies stops renewing and, once `until` has passed,
/// another instance's [`StateStore::lease_acquire`] takes the lease over. Terms compare
/// the callers' clocks, so the clocks of a deployment's machines must agree to well
/// within a term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name within its namespace.
    pub name: String,
    /// Who holds it (or last held it, once `until` has passed).
    pub owner: String,
    /// When the holder's term ends unless renewed.
    pub until: DateTime<Utc>,
    /// Counts changes of holder (1 for the first): a fencing token, so work stamped
    /// with an older epoch can be told from the current holder's.
    pub epoch: u64,
}

impl Lease {
    /// Whether the term still runs at `now`.
    pub fn is_held_at(&self, now: DateTime<Utc>) -> bool {
        self.until >= now
    }
}

/// The bots' delivery log: exactly one message per (event, chat).
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    // ---- delivery log ----

    /// Records that `(event, im, chat_id)` was handled (`record.status` is final: sent,
    /// failed, skipped); `Ok(false)` if it already was. A key only claimed
    /// ([`DELIVERY_CLAIMED`](crate::model::DELIVERY_CLAIMED)) is settled by this, whoever
    /// claimed it, and counts as new.
    async fn record_delivery(&self, record: &DeliveryRecord) -> Result<bool>;
    /// Records several deliveries in one write: for each record, in order, whether it was
    /// new, exactly as [`DeliveryStore::record_delivery`] would say (an already settled one
    /// keeps its first record; of two equal keys in `records`, the first is the new one).
    /// On `Err` some records may be stored and others not; recording them all again is
    /// safe.
    async fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<Vec<bool>>;
    /// Claims `(claim.event, claim.im, chat)` for each of `chats` for `claim.owner` until
    /// `claim.lease_until`, in one write: for each chat, in order, what the claim found.
    /// A chat with no record gets a claim ([`ClaimState::Won`]); a claim of the same owner
    /// is extended (`Won`); another owner's claim whose lease ended at or before
    /// `claim.now` is taken over (`Won`), atomically, so of two instances taking it over
    /// one wins; another owner's live claim is [`ClaimState::Held`]; a settled record
    /// (including records written before claims existed) is [`ClaimState::Settled`].
    /// Repeats in `chats` answer alike. On `Err` some claims may be taken; claiming again
    /// is safe.
    async fn claim_deliveries(
        &self,
        claim: &DeliveryClaim,
        chats: &[String],
    ) -> Result<Vec<ClaimState>>;
    /// Moves the lease of every unsettled claim `owner` holds on `im` to `lease_until`
    /// (one write, whatever their number); returns how many.
    async fn renew_claims(&self, im: &str, owner: &str, lease_until: DateTime<Utc>) -> Result<u64>;
    /// Deletes the unsettled claims `owner` holds on `im` (of `event` only, when given), so
    /// another instance need not wait for their leases; settled records stay. Returns how
    /// many.
    async fn release_claims(&self, im: &str, owner: &str, event: Option<Uuid>) -> Result<u64>;
    /// The record for `(event, im, chat_id)`, if any.
    async fn get_delivery(
        &self,
        event: Uuid,
        im: &str,
        chat_id: &str,
    ) -> Result<Option<DeliveryRecord>>;
    /// Which of `chats` have a settled record (not a mere claim) for `(event, im)`, looked up together in one query
    /// on the delivery log's `(event, im, chat_id)` key (not one lookup per chat). Chats
    /// not in `chats` are never returned, whatever the log holds; repeats in `chats` are
    /// harmless and an empty `chats` is an empty answer.
    async fn delivered_chats(
        &self,
        event: Uuid,
        im: &str,
        chats: &[String],
    ) -> Result<HashSet<String>>;
}

/// Calls macro `$callback!` with every method of the capability traits, grouped by trait:
/// `$callback! { impl EntityStore { fn insert_entity(&self, entity: &Entity) -> Result<()>;
/// … } impl UserStore { … } … }`, types fully qualified. Decorators that wrap every call
/// the same way ([`timeout::TimedStorage`], the test kit's fault-injecting storage) list
/// the methods through this, so a new method is written down here once.
#[macro_export]
macro_rules! with_storage_methods {
    ($callback:ident) => {
        $callback! {
            impl EntityStore {
                fn insert_entity(&self, entity: &$crate::model::Entity) -> $crate::storage::Result<()>;
                fn get_entity(&self, id: $crate::Uuid) -> $crate::storage::Result<Option<$crate::model::Entity>>;
                fn list_entities(&self) -> $crate::storage::Result<Vec<$crate::model::Entity>>;
                fn update_entity(&self, entity: &$crate::model::Entity) -> $crate::storage::Result<()>;
                fn delete_entity(&self, id: $crate::Uuid) -> $crate::storage::Result<()>;
                fn upsert_group(&self, group: &$crate::model::Group) -> $crate::storage::Result<()>;
                fn list_groups(&self) -> $crate::storage::Result<Vec<$crate::model::Group>>;
                fn list_tasks(&self, kind: Option<$crate::model::TaskKind>) -> $crate::storage::Result<Vec<$crate::model::Task>>;
                fn get_task(&self, id: $crate::Uuid) -> $crate::storage::Result<Option<$crate::model::Task>>;
                fn watch_tasks(&self) -> $crate::storage::Result<futures::stream::BoxStream<'static, $crate::storage::Result<$crate::model::TaskChange>>>;
            }
            impl UserStore {
                fn insert_user(&self, user: &$crate::model::User) -> $crate::storage::Result<()>;
                fn get_user(&self, id: $crate::Uuid) -> $crate::storage::Result<Option<$crate::model::User>>;
                fn find_user_by_chat(&self, im: &str, chat_id: &str) -> $crate::storage::Result<Option<$crate::model::User>>;
                fn update_user(&self, user: &$crate::model::User) -> $crate::storage::Result<()>;
                fn delete_user(&self, id: $crate::Uuid) -> $crate::storage::Result<()>;
                fn list_users(&self, im: Option<&str>) -> $crate::storage::Result<Vec<$crate::model::User>>;
                fn put_subscription(&self, subscription: &$crate::model::Subscription) -> $crate::storage::Result<()>;
                fn put_subscription_kinds(&self, user: $crate::Uuid, entity: $crate::Uuid, kinds: &[String]) -> $crate::storage::Result<()>;
                fn delete_subscription(&self, user: $crate::Uuid, entity: $crate::Uuid) -> $crate::storage::Result<bool>;
                fn list_subscriptions(&self, user: $crate::Uuid) -> $crate::storage::Result<Vec<$crate::model::Subscription>>;
                fn subscribers(&self, entity: $crate::Uuid, kind: &str, im: &str) -> $crate::storage::Result<Vec<$crate::storage::Subscriber>>;
            }
            impl AccessStore {
                fn insert_session(&self, session: &$crate::model::Session) -> $crate::storage::Result<()>;
                fn get_session(&self, token_hash: &str) -> $crate::storage::Result<Option<$crate::model::Session>>;
                fn touch_session(&self, token_hash: &str, expires_at: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<()>;
                fn delete_session(&self, token_hash: &str) -> $crate::storage::Result<bool>;
                fn purge_sessions(&self, now: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<u64>;
                fn insert_credential(&self, credential: &$crate::model::Credential) -> $crate::storage::Result<()>;
                fn get_credential(&self, username: &str) -> $crate::storage::Result<Option<$crate::model::Credential>>;
                fn delete_credential(&self, username: &str) -> $crate::storage::Result<bool>;
                fn list_credentials(&self) -> $crate::storage::Result<Vec<$crate::model::Credential>>;
            }
            impl DelayStore {
                fn put_delayed(&self, message: &$crate::model::DelayedMessage, lease: Option<&$crate::model::DelayLease>) -> $crate::storage::Result<i64>;
                fn delete_delayed(&self, id: &str) -> $crate::storage::Result<bool>;
                fn delete_delayed_if(&self, id: &str, revision: i64) -> $crate::storage::Result<bool>;
                fn get_delayed(&self, id: &str) -> $crate::storage::Result<Option<$crate::model::StoredDelayed>>;
                fn list_delayed(&self, after: Option<&str>, limit: u32) -> $crate::storage::Result<Vec<$crate::model::DelayedMessage>>;
                fn claim_delayed(&self, owner: &str, due_before_ms: i64, lease_until_ms: i64, now_ms: i64, limit: u32) -> $crate::storage::Result<Vec<$crate::model::ClaimedDelayed>>;
                fn renew_delayed_claims(&self, owner: &str, lease_until_ms: i64) -> $crate::storage::Result<u64>;
                fn release_delayed_claims(&self, owner: &str) -> $crate::storage::Result<u64>;
            }
            impl StateStore {
                fn kv_get(&self, namespace: &str, key: &str) -> $crate::storage::Result<Option<serde_json::Value>>;
                fn kv_put(&self, namespace: &str, key: &str, value: &serde_json::Value) -> $crate::storage::Result<()>;
                fn kv_delete(&self, namespace: &str, key: &str) -> $crate::storage::Result<bool>;
                fn kv_list(&self, namespace: &str) -> $crate::storage::Result<Vec<(String, serde_json::Value)>>;
                fn mark_seen(&self, namespace: &str, id: &str, at: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<bool>;
                fn purge_seen(&self, namespace: &str, before: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<u64>;
                fn lease_acquire(&self, namespace: &str, name: &str, owner: &str, now: chrono::DateTime<chrono::Utc>, until: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<Option<$crate::storage::Lease>>;
                fn lease_release(&self, namespace: &str, name: &str, owner: &str) -> $crate::storage::Result<bool>;
                fn lease_list(&self, namespace: &str) -> $crate::storage::Result<Vec<$crate::storage::Lease>>;
                fn add_to_counter(&self, namespace: &str, key: &str, delta: i64, now: chrono::DateTime<chrono::Utc>, window_start: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<i64>;
                fn purge_counters(&self, namespace: &str, before: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<u64>;
            }
            impl DeliveryStore {
                fn record_delivery(&self, record: &$crate::model::DeliveryRecord) -> $crate::storage::Result<bool>;
                fn record_deliveries(&self, records: &[$crate::model::DeliveryRecord]) -> $crate::storage::Result<Vec<bool>>;
                fn get_delivery(&self, event: $crate::Uuid, im: &str, chat_id: &str) -> $crate::storage::Result<Option<$crate::model::DeliveryRecord>>;
                fn delivered_chats(&self, event: $crate::Uuid, im: &str, chats: &[String]) -> $crate::storage::Result<std::collections::HashSet<String>>;
                fn claim_deliveries(&self, claim: &$crate::model::DeliveryClaim, chats: &[String]) -> $crate::storage::Result<Vec<$crate::model::ClaimState>>;
                fn renew_claims(&self, im: &str, owner: &str, lease_until: chrono::DateTime<chrono::Utc>) -> $crate::storage::Result<u64>;
                fn release_claims(&self, im: &str, owner: &str, event: Option<$crate::Uuid>) -> $crate::storage::Result<u64>;
            }
        }
    };
}

/// Checks that no task is listed twice in `entity` (both backends refuse it before
/// writing anything).
pub(crate) fn check_distinct_tasks(entity: &Entity) -> Result<()> {
    let mut ids = HashSet::with_capacity(entity.tasks.len());
    for task in &entity.tasks {
        if !ids.insert(task.id) {
            return Err(StorageError::Conflict(format!(
                "task {} (listed twice in entity {})",
                task.id, entity.id
            )));
        }
    }
    Ok(())
}

/// The task as stored: owned by `entity` whatever its own `entity` field said.
pub(crate) fn owned_task(task: &Task, entity: Uuid) -> Task {
    Task {
        id: task.id,
        entity,
        params: task.params.clone(),
    }
}

/// The `Conflict` message for inserting or updating `user`: its chat is taken by another
/// user (`on_chat`), or its id exists.
pub(crate) fn user_taken(user: &User, on_chat: bool) -> String {
    if on_chat {
        format!("user with chat {}:{}", user.im, user.im_chat_id)
    } else {
        format!("user {}", user.id)
    }
}

/// The `Conflict` message for `task`, whose account the task of entity `owner` watches.
pub(crate) fn account_taken(task: &Task, owner: Option<&str>) -> String {
    let (kind, account) = (task.kind(), task.params.source_id());
    match owner {
        Some(owner) => format!("{kind} account {account} is already watched by entity {owner}"),
        None => format!("{kind} account {account} is already watched by another entity"),
    }
}

/// The name of the metric counting skipped records.
pub const MALFORMED_METRIC: &str = "stargazer_storage_malformed_total";

/// Reports stored records that do not decode and are skipped: a warning naming the
/// collection and the record's id, and the counter [`MALFORMED_METRIC`]`{collection}`.
/// Clones share the counter.
#[derive(Clone)]
pub struct MalformedRecords {
    counter: IntCounterVec,
}

impl std::fmt::Debug for MalformedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MalformedRecords").finish_non_exhaustive()
    }
}

impl Default for MalformedRecords {
    fn default() -> Self {
        Self::new()
    }
}

impl MalformedRecords {
    /// A counter at zero, registered nowhere yet.
    pub fn new() -> Self {
        let counter = IntCounterVec::new(
            Opts::new(
                MALFORMED_METRIC,
                "Stored records skipped because they do not decode, by collection.",
            ),
            &["collection"],
        )
        .expect("the metric name and label are valid literals");
        Self { counter }
    }

    /// Logs and counts one skipped record.
    pub fn skip(&self, collection: &str, id: &str, cause: &dyn std::fmt::Display) {
        tracing::warn!(collection, id, %cause, "skipping a malformed stored record");
        self.counter.with_label_values(&[collection]).inc();
    }

    /// How many records of `collection` were skipped so far.
    pub fn count(&self, collection: &str) -> u64 {
        self.counter.with_label_values(&[collection]).get()
    }

    /// Registers the counter in `registry`; already being registered there is fine.
    pub fn register(&self, registry: &Registry) {
        match registry.register(Box::new(self.counter.clone())) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(err) => tracing::warn!(cause = %err, "storage metrics not registered"),
        }
    }
}

/// Opens the storage named by `url`.
pub async fn connect(url: &str) -> Result<Arc<dyn Storage>> {
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        mongo::connect_shared(url).await
    } else if url == "sqlite::memory:" {
        sqlite::open_shared(None).await
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        sqlite::open_shared(Some(path)).await
    } else {
        Err(StorageError::InvalidUrl(url.to_owned()))
    }
}
