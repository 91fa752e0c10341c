//! MongoDB implementation of [`Storage`]: one collection per record type, UUIDs as BSON
//! binary subtype 4, task changes from a change stream on `tasks`.
//!
//! Layout (every collection lives in one database, `stargazer` unless the URL names one):
//!
//! | collection | `_id` | other fields | indexes |
//! |---|---|---|---|
//! | `entities` | entity id | `names`, `default_language`, `group`, `translate_to`, `tasks` (task ids, in list order) | |
//! | `tasks` | task id | `entity`, `kind`, `channel_id` or `user_id`, `account` (the same id again) | `entity`; `(kind, _id)`; unique `(kind, account)` |
//! | `groups` | group id | `names` | |
//! | `users` | user id | `im`, `im_chat_id`, `name`, `language`, `settings`, `created_at` | unique `(im, im_chat_id)` |
//! | `subscriptions` | generated | `user`, `entity`, `kinds`, `mention` (absent: none) | unique `(user, entity)`; `(entity, user)` |
//! | `sessions` | generated | `token_hash`, `user`, times | unique `token_hash`; `user`; `expires_at` |
//! | `auth` | generated | `username`, `hash`, `permissions` | unique `username` |
//! | `delayed` | message id | `routing_key`, `body`, `fire_at_ms`, `revision`, `owner` (null when unclaimed), `lease_until_ms`, `claim_token` | `fire_at_ms`; `owner` |
//! | `kv` | generated | `namespace`, `key`, `value` (JSON text) | unique `(namespace, key)` |
//! | `seen` | generated | `namespace`, `id`, `at` | unique `(namespace, id)`; `(namespace, at)` |
//! | `counters` | generated | `namespace`, `key`, `count`, `at` | unique `(namespace, key)` |
//! | `deliveries` | generated | `event`, `im`, `chat_id`, `status`, `at`, `owner` and `lease_until` (claims) | unique `(event, im, chat_id)`; `(im, owner, status)` |
//!
//! Tasks have their own collection so the coordinator can watch exactly them; an entity
//! document keeps only the order of its task ids, and reads join the tasks back.
//!
//! Multi-document changes (inserting, updating and deleting an entity with its tasks,
//! deleting a user with their sessions and subscriptions) run in a transaction when the
//! deployment is a replica set or a sharded cluster (SecantusDB, the test server, is a
//! single-node replica set and supports them, including abort and duplicate-key errors
//! inside a transaction). On a standalone server they run as ordered operations arranged
//! so that a failure part-way leaves a state a retry completes, and a failed entity insert
//! removes what it wrote.
//!
//! Times are BSON dates, so they keep millisecond precision.
//!
//! One account is watched by one task (docs/ARCHITECTURE.md §3): the unique `(kind,
//! account)` index makes a second api instance's insert fail with `Conflict`. Opening a
//! database written before the index existed fills in `account` and fails with
//! [`StorageError::Inconsistent`], naming the tasks, if two already share one.
//!
//! Listings skip documents that do not decode (reported through [`MalformedRecords`]);
//! reading one such document by id is a `Corrupt` error naming it. Unless the URL says
//! otherwise (`connectTimeoutMS`, `serverSelectionTimeoutMS`), an unreachable server
//! fails a call after [`SERVER_SELECTION_TIMEOUT`] rather than the driver's 30 s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{
    Error as DriverError, ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{ClientOptions, FullDocumentType};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::{
    check_distinct_tasks, owned_task, MalformedRecords, Result, Storage, StorageError,
    StorageHealth, Subscriber,
};
use crate::backoff::Backoff;
use crate::model::{
    Access, ClaimedDelayed, Credential, DelayLease, DelayedMessage, DeliveryRecord, Entity, Group,
    LocalizedNames, Permissions, Session, StoredDelayed, Subscription, Task, TaskChange, TaskKind,
    TaskParams, User, UserSettings,
};
use codec::*;
use tx::*;
use watch::*;

/// Database used when the URL names none.
pub const DEFAULT_DATABASE: &str = "stargazer";

/// How many times a transaction that failed with a transient error is run again.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

/// How many times a commit with an unknown outcome is sent again.
const MAX_COMMIT_ATTEMPTS: u32 = 3;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// MongoDB's code for a collection that does not exist.
const NAMESPACE_NOT_FOUND: i32 = 26;

/// How long opening a connection to a server may take, unless the URL says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an operation waits for a usable server, unless the URL says otherwise.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// The name of the unique `(kind, account)` index on `tasks`.
const TASK_ACCOUNT_INDEX: &str = "kind_account";

/// Chat ids per delivery-log query of [`DeliveryStore::delivered_chats`](crate::storage::DeliveryStore::delivered_chats): keeps the `$in` list
/// far below the 16 MiB command limit however long the candidate list is.
const CHATS_PER_DELIVERY_QUERY: usize = 10_000;

/// MongoDB-backed storage. Cheap to share behind an `Arc`; dropping it ends every stream
/// returned by [`EntityStore::watch_tasks`](crate::storage::EntityStore::watch_tasks).
pub struct MongoStorage {
    client: Client,
    db: Database,
    entities: Collection<Document>,
    tasks: Collection<Document>,
    groups: Collection<Document>,
    users: Collection<Document>,
    subscriptions: Collection<Document>,
    sessions: Collection<Document>,
    auth: Collection<Document>,
    delayed: Collection<Document>,
    kv: Collection<Document>,
    seen: Collection<Document>,
    leases: Collection<Document>,
    counters: Collection<Document>,
    deliveries: Collection<Document>,
    /// Whether the deployment supports multi-document transactions.
    transactions: bool,
    /// Reports documents skipped by listings.
    malformed: MalformedRecords,
    /// Cancelled when the storage is dropped; watch streams end on it.
    closed: CancellationToken,
    _close_on_drop: DropGuard,
}

impl std::fmt::Debug for MongoStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStorage")
            .field("database", &self.db.name())
            .field("transactions", &self.transactions)
            .finish_non_exhaustive()
    }
}

impl MongoStorage {
    /// Connects to `url` and uses the database named in its path (`stargazer` when none),
    /// creating the indexes it needs.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = parse_url(url).await?;
        let name = database_name(&options);
        Self::with_options(options, &name).await
    }

    /// Connects to `url` and uses database `db_name`, whatever the URL path says (tests
    /// use a fresh database each).
    pub async fn connect_db(url: &str, db_name: &str) -> Result<Self> {
        let options = parse_url(url).await?;
        Self::with_options(options, db_name).await
    }

    async fn with_options(mut options: ClientOptions, db_name: &str) -> Result<Self> {
        if options.app_name.is_none() {
            options.app_name = Some("stargazer".to_owned());
        }
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        let client =
            Client::with_options(options).map_err(|e| db_err("creating the MongoDB client", e))?;
        let db = client.database(db_name);
        let hello = db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| db_err("reaching MongoDB", e))?;
        // Transactions need a replica set member or a mongos; a standalone server has
        // neither a set name nor the `isdbgrid` marker.
        let transactions =
            hello.get_str("setName").is_ok() || hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
        let closed = CancellationToken::new();
        let storage = Self {
            entities: db.collection("entities"),
            tasks: db.collection("tasks"),
            groups: db.collection("groups"),
            users: db.collection("users"),
            subscriptions: db.collection("subscriptions"),
            sessions: db.collection("sessions"),
            auth: db.collection("auth"),
            delayed: db.collection("delayed"),
            kv: db.collection("kv"),
            seen: db.collection("seen"),
            leases: db.collection("leases"),
            counters: db.collection("counters"),
            deliveries: db.collection("deliveries"),
            client,
            db,
            transactions,
            malformed: MalformedRecords::new(),
            _close_on_drop: closed.clone().drop_guard(),
            closed,
        };
        storage.ensure_indexes().await?;
        Ok(storage)
    }

    /// The database this storage uses.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Whether multi-document changes run in transactions on this deployment.
    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    /// Runs multi-document changes as ordered operations even where transactions exist,
    /// as on a standalone server (lets tests cover that path on a replica set).
    pub fn without_transactions(mut self) -> Self {
        self.transactions = false;
        self
    }

    /// Creates every index; creating an index that exists with the same spec is a no-op.
    async fn ensure_indexes(&self) -> Result<()> {
        let plain = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name(name.to_owned())
                        .build(),
                )
                .build()
        };
        let unique = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(true)
                        .build(),
                )
                .build()
        };
        self.prepare_task_accounts().await?;
        // Partial: a task document without a string `account` (written by hand, not
        // decodable) is not indexed, so it cannot block the index or another task.
        let account_index = IndexModel::builder()
            .keys(doc! { "kind": 1, "account": 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .name(TASK_ACCOUNT_INDEX.to_owned())
                    .unique(true)
                    .partial_filter_expression(doc! { "account": { "$type": "string" } })
                    .build(),
            )
            .build();
        if let Err(e) = self.tasks.create_index(account_index).await {
            // A writer without the index slipped a duplicate in since the check.
            return Err(if is_duplicate_key(&e) {
                StorageError::Inconsistent(format!(
                    "two tasks watch one account ({e}); keep one task per account and start again"
                ))
            } else {
                db_err("creating the task account index", e)
            });
        }
        let plan: Vec<(&Collection<Document>, Vec<IndexModel>)> = vec![
            (
                &self.tasks,
                vec![
                    plain(doc! { "entity": 1 }, "entity"),
                    plain(doc! { "kind": 1, "_id": 1 }, "kind_id"),
                ],
            ),
            (
                &self.users,
                vec![unique(doc! { "im": 1, "im_chat_id": 1 }, "im_chat")],
            ),
            (
                &self.subscriptions,
                vec![
                    unique(doc! { "user": 1, "entity": 1 }, "user_entity"),
                    plain(doc! { "entity": 1, "user": 1 }, "entity_user"),
                ],
            ),
            (
                &self.sessions,
                vec![
                    unique(doc! { "token_hash": 1 }, "token_hash"),
                    plain(doc! { "user": 1 }, "user"),
                    plain(doc! { "expires_at": 1 }, "expires_at"),
                ],
            ),
            (&self.auth, vec![unique(doc! { "username": 1 }, "username")]),
            (
                &self.delayed,
                vec![
                    plain(doc! { "fire_at_ms": 1 }, "fire_at_ms"),
                    plain(doc! { "owner": 1 }, "owner"),
                ],
            ),
            (
                &self.kv,
                vec![unique(doc! { "namespace": 1, "key": 1 }, "namespace_key")],
            ),
            (
                &self.seen,
                vec![
                    unique(doc! { "namespace": 1, "id": 1 }, "namespace_id"),
                    plain(doc! { "namespace": 1, "at": 1 }, "namespace_at"),
                ],
            ),
            (
                &self.leases,
                vec![unique(doc! { "namespace": 1, "name": 1 }, "namespace_name")],
            ),
            (
                &self.counters,
                vec![unique(doc! { "namespace": 1, "key": 1 }, "namespace_key")],
            ),
            (
                &self.deliveries,
                vec![
                    unique(doc! { "event": 1, "im": 1, "chat_id": 1 }, "event_im_chat"),
                    plain(doc! { "im": 1, "owner": 1, "status": 1 }, "im_owner_status"),
                ],
            ),
        ];
        for (collection, indexes) in plan {
            collection
                .create_indexes(indexes)
                .await
                .map_err(|e| db_err(&format!("creating indexes on `{}`", collection.name()), e))?;
        }
        // `entities`, `groups` and `delayed` need only `_id` but are created here too:
        // MongoDB before 4.4 cannot create a collection inside a transaction, and the
        // first entity insert runs in one.
        let existing = self
            .db
            .list_collection_names()
            .await
            .map_err(|e| db_err("listing collections", e))?;
        for collection in [&self.entities, &self.groups, &self.delayed] {
            if !existing.iter().any(|name| name == collection.name()) {
                if let Err(e) = self.db.create_collection(collection.name()).await {
                    // Another process created it between the listing and now.
                    if !is_code(&e, 48) {
                        return Err(db_err(
                            &format!("creating collection `{}`", collection.name()),
                            e,
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Before the unique account index exists: gives every task written without an
    /// `account` one, and refuses (naming them) tasks that already share an account,
    /// which the index would reject. Nothing is deleted: choosing is the operator's call.
    async fn prepare_task_accounts(&self) -> Result<()> {
        let names = match self.tasks.list_index_names().await {
            Ok(names) => names,
            Err(e) if is_code(&e, NAMESPACE_NOT_FOUND) => Vec::new(),
            Err(e) => return Err(db_err("listing task indexes", e)),
        };
        if names.iter().any(|name| name == TASK_ACCOUNT_INDEX) {
            return Ok(());
        }
        let unfilled = find_all(
            &self.tasks,
            doc! { "account": { "$exists": false } },
            doc! {},
            "reading tasks",
        )
        .await?;
        for d in &unfilled {
            match decode_task(d) {
                Ok(task) => {
                    self.tasks
                        .update_one(
                            doc! { "_id": uuid_bson(task.id) },
                            doc! { "$set": { "account": task.params.source_id() } },
                        )
                        .await
                        .map_err(|e| db_err("filling in task accounts", e))?;
                }
                Err(e) => self.malformed.skip("tasks", &doc_id(d), &e),
            }
        }
        let indexed = find_all(
            &self.tasks,
            doc! { "account": { "$type": "string" } },
            doc! { "_id": 1 },
            "reading tasks",
        )
        .await?;
        let mut owners: HashMap<(String, String), Vec<String>> = HashMap::new();
        for d in &indexed {
            let (Ok(kind), Ok(account)) = (d.get_str("kind"), d.get_str("account")) else {
                continue;
            };
            let entity =
                get_uuid(d, "entity", "task").map_or_else(|_| "?".to_owned(), |u| u.to_string());
            owners
                .entry((kind.to_owned(), account.to_owned()))
                .or_default()
                .push(format!("task {} of entity {entity}", doc_id(d)));
        }
        let mut duplicates: Vec<String> = owners
            .into_iter()
            .filter(|(_, tasks)| tasks.len() > 1)
            .map(|((kind, account), tasks)| {
                format!(
                    "{kind} account {account} is watched by {}",
                    tasks.join(", ")
                )
            })
            .collect();
        if duplicates.is_empty() {
            return Ok(());
        }
        duplicates.sort();
        Err(StorageError::Inconsistent(format!(
            "{}; keep one task per account (remove the others) and start again",
            duplicates.join("; ")
        )))
    }

    /// The `Conflict` for `task`, whose account another task already watches, naming
    /// the account and (when it can be read) the entity that owns it.
    async fn account_conflict(&self, task: &Task) -> StorageError {
        let owner = self
            .tasks
            .find_one(doc! { "kind": task.kind().as_str(), "account": task.params.source_id() })
            .await
            .ok()
            .flatten()
            .and_then(|d| get_uuid(&d, "entity", "task").ok())
            .map(|owner| owner.to_string());
        StorageError::Conflict(super::account_taken(task, owner.as_deref()))
    }

    /// Decodes every document, leaving out (and reporting) those of `collection` that
    /// do not decode.
    fn decode_each<T>(
        &self,
        collection: &str,
        docs: &[Document],
        mut decode: impl FnMut(&Document) -> Result<T>,
    ) -> Vec<T> {
        docs.iter()
            .filter_map(|d| match decode(d) {
                Ok(value) => Some(value),
                Err(e) => {
                    self.malformed.skip(collection, &doc_id(d), &e);
                    None
                }
            })
            .collect()
    }

    // ---------------------------------------------------------------- transactions

    /// Starts a transaction when the deployment supports them.
    async fn begin(&self) -> Result<Option<ClientSession>> {
        if !self.transactions {
            return Ok(None);
        }
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(|e| db_err("starting a session", e))?;
        session
            .start_transaction()
            .await
            .map_err(|e| db_err("starting a transaction", e))?;
        Ok(Some(session))
    }

    /// Commits or aborts after a transaction body ran; `None` means "run it again".
    async fn finish<T>(
        &self,
        session: Option<ClientSession>,
        outcome: Result<T, TxError>,
        attempt: u32,
    ) -> Option<Result<T>> {
        let Some(mut session) = session else {
            return Some(outcome.map_err(|e| e.error));
        };
        let value = match outcome {
            Ok(value) => value,
            Err(e) => {
                // The server may already have aborted; a failing abort changes nothing.
                let _ = session.abort_transaction().await;
                if e.retry && attempt < MAX_TRANSACTION_ATTEMPTS {
                    tracing::debug!(attempt, error = %e.error, "retrying transaction");
                    return None;
                }
                return Some(Err(e.error));
            }
        };
        let mut commits = 0;
        loop {
            commits += 1;
            match session.commit_transaction().await {
                Ok(()) => return Some(Ok(value)),
                Err(e)
                    if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                        && commits < MAX_COMMIT_ATTEMPTS => {}
                Err(e)
                    if e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                        && attempt < MAX_TRANSACTION_ATTEMPTS =>
                {
                    return None
                }
                Err(e) => return Some(Err(db_err("committing a transaction", e))),
            }
        }
    }

    // ---------------------------------------------------------------- entity bodies

    async fn insert_entity_in(&self, tx: &mut Tx<'_>, entity: &Entity) -> Result<(), TxError> {
        tx.insert_one(&self.entities, entity_doc(entity))
            .await
            .map_err(|e| {
                TxError::unique(e, "inserting an entity", || format!("entity {}", entity.id))
            })?;
        if entity.tasks.is_empty() {
            return Ok(());
        }
        let docs: Vec<Document> = entity
            .tasks
            .iter()
            .map(|t| task_doc(t, entity.id))
            .collect();
        if let Err(e) = tx.insert_many(&self.tasks, docs).await {
            let failed_at = duplicate_index(&e).filter(|&i| i < entity.tasks.len());
            let on_account = is_account_duplicate(&e);
            let mut error = TxError::unique(e, "inserting tasks", || match failed_at {
                Some(i) => format!("task {}", entity.tasks[i].id),
                None => format!("a task of entity {}", entity.id),
            });
            if let (true, Some(i), StorageError::Conflict(_)) =
                (on_account, failed_at, &error.error)
            {
                error.error = self.account_conflict(&entity.tasks[i]).await;
            }
            if !tx.atomic() {
                // No transaction to roll back: remove what this call wrote. Filtering on
                // the owner keeps another entity's task with a colliding id.
                let ids: Vec<Bson> = entity.tasks.iter().map(|t| uuid_bson(t.id)).collect();
                let undo_tasks = tx
                    .delete_many(
                        &self.tasks,
                        doc! { "_id": { "$in": ids }, "entity": uuid_bson(entity.id) },
                    )
                    .await;
                let undo_entity = tx
                    .delete_one(&self.entities, doc! { "_id": uuid_bson(entity.id) })
                    .await;
                if let Err(undo) = undo_tasks.and(undo_entity) {
                    tracing::error!(entity_id = %entity.id, error = %undo,
                        "could not undo a partly inserted entity");
                }
            }
            return Err(error);
        }
        Ok(())
    }

    async fn update_entity_in(&self, tx: &mut Tx<'_>, entity: &Entity) -> Result<(), TxError> {
        let key = uuid_bson(entity.id);
        if tx
            .find_one(&self.entities, doc! { "_id": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "reading an entity"))?
            .is_none()
        {
            return Err(StorageError::NotFound(format!("entity {}", entity.id)).into());
        }
        let wanted: Vec<Bson> = entity.tasks.iter().map(|t| uuid_bson(t.id)).collect();

        // Refuse ids owned by another entity before writing anything, so that even
        // without a transaction a refused update changes nothing.
        let foreign = tx
            .find(
                &self.tasks,
                doc! { "_id": { "$in": wanted.clone() }, "entity": { "$ne": key.clone() } },
            )
            .await
            .map_err(|e| TxError::driver(e, "checking task owners"))?;
        if let Some(other) = foreign.first() {
            let task = decode_task(other)?;
            return Err(StorageError::Conflict(format!(
                "task {} (belongs to entity {})",
                task.id, task.entity
            ))
            .into());
        }
        // Likewise accounts another entity's task watches (the index catches a race).
        let accounts: Vec<Document> = entity
            .tasks
            .iter()
            .map(|t| doc! { "kind": t.kind().as_str(), "account": t.params.source_id() })
            .collect();
        if !accounts.is_empty() {
            let taken = tx
                .find(
                    &self.tasks,
                    doc! { "$or": accounts, "entity": { "$ne": key.clone() } },
                )
                .await
                .map_err(|e| TxError::driver(e, "checking task accounts"))?;
            if let Some(other) = taken.first() {
                let owner = get_uuid(other, "entity", "task")?;
                let kind = other.get_str("kind").unwrap_or_default();
                let account = other.get_str("account").unwrap_or_default();
                return Err(StorageError::Conflict(format!(
                    "{kind} account {account} is already watched by entity {owner}"
                ))
                .into());
            }
        }

        let old: HashMap<Uuid, Task> = tx
            .find(&self.tasks, doc! { "entity": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "reading tasks"))?
            .iter()
            .map(|d| decode_task(d).map(|t| (t.id, t)))
            .collect::<Result<_>>()?;
        if old
            .keys()
            .any(|id| !entity.tasks.iter().any(|t| t.id == *id))
        {
            tx.delete_many(
                &self.tasks,
                doc! { "entity": key.clone(), "_id": { "$nin": wanted } },
            )
            .await
            .map_err(|e| TxError::driver(e, "deleting removed tasks"))?;
        }
        for task in &entity.tasks {
            let owned = owned_task(task, entity.id);
            if old.get(&task.id) == Some(&owned) {
                // Untouched tasks are not rewritten: watchers see only real changes.
                continue;
            }
            // The filter names the owner, so an id another entity took meanwhile fails
            // the upsert with a duplicate key instead of being moved here.
            if let Err(e) = tx
                .replace_one(
                    &self.tasks,
                    doc! { "_id": uuid_bson(task.id), "entity": key.clone() },
                    task_doc(task, entity.id),
                    true,
                )
                .await
            {
                let on_account = is_account_duplicate(&e);
                let mut error =
                    TxError::unique(e, "writing a task", || format!("task {}", task.id));
                if on_account && matches!(error.error, StorageError::Conflict(_)) {
                    error.error = self.account_conflict(task).await;
                }
                return Err(error);
            }
        }
        tx.replace_one(
            &self.entities,
            doc! { "_id": key },
            entity_doc(entity),
            false,
        )
        .await
        .map_err(|e| TxError::driver(e, "writing an entity"))?;
        Ok(())
    }

    async fn delete_entity_in(&self, tx: &mut Tx<'_>, id: Uuid) -> Result<(), TxError> {
        let key = uuid_bson(id);
        if tx
            .find_one(&self.entities, doc! { "_id": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "reading an entity"))?
            .is_none()
        {
            return Err(StorageError::NotFound(format!("entity {id}")).into());
        }
        // The entity goes last: without a transaction, a retry after a failure still
        // finds it and finishes the cascade.
        tx.delete_many(&self.tasks, doc! { "entity": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "deleting tasks"))?;
        tx.delete_many(&self.subscriptions, doc! { "entity": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "deleting subscriptions"))?;
        tx.delete_one(&self.entities, doc! { "_id": key })
            .await
            .map_err(|e| TxError::driver(e, "deleting an entity"))?;
        Ok(())
    }

    async fn delete_user_in(&self, tx: &mut Tx<'_>, id: Uuid) -> Result<(), TxError> {
        let key = uuid_bson(id);
        if tx
            .find_one(&self.users, doc! { "_id": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "reading a user"))?
            .is_none()
        {
            return Err(StorageError::NotFound(format!("user {id}")).into());
        }
        tx.delete_many(&self.sessions, doc! { "user": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "deleting sessions"))?;
        tx.delete_many(&self.subscriptions, doc! { "user": key.clone() })
            .await
            .map_err(|e| TxError::driver(e, "deleting subscriptions"))?;
        tx.delete_one(&self.users, doc! { "_id": key })
            .await
            .map_err(|e| TxError::driver(e, "deleting a user"))?;
        Ok(())
    }

    /// Tasks of the given entities (all when `None`), grouped by entity.
    async fn tasks_by_entity(&self, entity: Option<Uuid>) -> Result<HashMap<Uuid, Vec<Task>>> {
        let filter = match entity {
            Some(id) => doc! { "entity": uuid_bson(id) },
            None => doc! {},
        };
        let docs = find_all(&self.tasks, filter, doc! { "_id": 1 }, "reading tasks").await?;
        let mut grouped: HashMap<Uuid, Vec<Task>> = HashMap::new();
        for task in self.decode_each("tasks", &docs, decode_task) {
            grouped.entry(task.entity).or_default().push(task);
        }
        Ok(grouped)
    }
}

/// Connects to `url` as a shared [`Storage`].
pub async fn connect_shared(url: &str) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(MongoStorage::connect(url).await?))
}

/// The database named in the URL path, or [`DEFAULT_DATABASE`].
fn database_name(options: &ClientOptions) -> String {
    options
        .default_database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_owned())
}

async fn parse_url(url: &str) -> Result<ClientOptions> {
    // The driver's message never repeats the URL, which may hold a password.
    ClientOptions::parse(url)
        .await
        .map_err(|e| StorageError::Backend(format!("cannot use the MongoDB url: {e}")))
}

/// Runs `$body` (an expression using `$tx: Tx`) in a transaction when the deployment has
/// them, again while it fails with a transient error.
macro_rules! atomically {
    ($storage:expr, $tx:ident => $body:expr) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut session = $storage.begin().await?;
            let outcome = {
                let mut $tx = Tx {
                    session: session.as_mut(),
                };
                $body.await
            };
            if let Some(result) = $storage.finish(session, outcome, attempt).await {
                break result;
            }
        }
    }};
}

impl Storage for MongoStorage {}

#[async_trait]
impl StorageHealth for MongoStorage {
    async fn ping(&self) -> Result<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(|e| db_err("pinging MongoDB", e))
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        self.malformed.register(registry);
    }
}

// One file per capability; the macro above must be defined before them.
mod access;
mod codec;
mod delayed;
mod deliveries;
mod entities;
mod state;
mod tx;
mod users;
mod watch;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn database_comes_from_the_url_path() {
        let named = parse_url("mongodb://127.0.0.1:27017/tracker?w=majority")
            .await
            .unwrap();
        assert_eq!(database_name(&named), "tracker");
        let bare = parse_url("mongodb://127.0.0.1:27017/").await.unwrap();
        assert_eq!(database_name(&bare), DEFAULT_DATABASE);
        assert!(matches!(
            parse_url("mongodb://host:notaport/").await,
            Err(StorageError::Backend(_))
        ));
    }

    #[test]
    fn uuids_encode_as_subtype_4_and_decode_back() {
        let id = Uuid::new_v4();
        let d = doc! { "_id": uuid_bson(id) };
        assert!(matches!(
            d.get("_id"),
            Some(Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                ..
            }))
        ));
        assert_eq!(get_uuid(&d, "_id", "thing").unwrap(), id);
        let legacy = doc! { "_id": Bson::Binary(Binary {
            subtype: BinarySubtype::UuidOld,
            bytes: id.as_bytes().to_vec(),
        }) };
        assert!(matches!(
            get_uuid(&legacy, "_id", "thing"),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn entity_tasks_follow_the_stored_order() {
        let entity = Uuid::new_v4();
        let task = |n: u128| Task {
            id: Uuid::from_u128(n),
            entity,
            params: TaskParams::Twitter {
                user_id: n.to_string(),
            },
        };
        let mut e = Entity {
            id: entity,
            names: LocalizedNames::new(),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![task(3), task(1), task(2)],
        };
        let d = entity_doc(&e);
        // Task 9 exists but the list does not name it: it comes last.
        let decoded = decode_entity(&d, vec![task(9), task(1), task(2), task(3)]).unwrap();
        e.tasks.push(task(9));
        assert_eq!(decoded, e);
    }
}
