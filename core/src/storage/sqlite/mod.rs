//! SQLite implementation of [`Storage`](super::Storage), for single-process deployments
//! (`standalone`) and tests: one file (or an in-memory database) behind one connection.
//!
//! Layout: one table per collection, UUIDs as hyphenated lowercase text (so text order is
//! UUID byte order, the order MongoDB uses), times as fixed-width RFC 3339 with nanoseconds
//! (so text order is time order), maps and lists as JSON text. The schema is created on
//! open and versioned in `PRAGMA user_version`. Version 2 adds each task's `account`
//! (its platform-side id) and the unique index on `(kind, account)`; opening a version-1
//! file where two tasks watch one account fails with [`StorageError::Inconsistent`]
//! naming them, and changes nothing. Version 3 adds the claim columns of delayed messages
//! (`owner`, `lease_until_ms`, `revision`; existing rows become unclaimed, revision 0)
//! and the delivery claims (`deliveries.owner`,
//! `deliveries.lease_until` and a partial index on the unsettled ones); rows from before
//! keep their status and so count as settled. Columns that older builds can ignore
//! (`credentials.queues`, `subscriptions.mention`) are added on open without a new
//! version.
//!
//! Listings skip rows that do not decode (reported through [`MalformedRecords`]).
//!
//! Every rusqlite call runs on the blocking pool under a std [`Mutex`]: sections are short
//! and never await, and one connection keeps SQLite's single-writer rule trivially true.
//! Task changes are announced in-process on a broadcast channel after each commit. Writes
//! by other processes on the same file (the admin CLI, a second api) are noticed through
//! `PRAGMA data_version`, which changes when another connection commits: once someone
//! watches, it is read every [`FOREIGN_POLL`], and on a change the task set is listed and
//! its difference from the last known one announced.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use rusqlite::types::Type;
use rusqlite::{
    ffi, params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::{
    check_distinct_tasks, owned_task, MalformedRecords, Result, Storage, StorageError,
    StorageHealth, Subscriber,
};
use crate::model::{
    ClaimedDelayed, Credential, DelayLease, DelayedMessage, DeliveryRecord, Entity, Group, Session,
    StoredDelayed, Subscription, Task, TaskChange, TaskKind, TaskParams, User, UserSettings,
};

/// The schema version this build creates and understands.
const SCHEMA_VERSION: i64 = 3;

/// How long a statement waits for another process's write lock on a file database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Task changes buffered per watcher before it is told it lagged.
const CHANGE_BUFFER: usize = 4096;

/// How often a watched file database is checked for commits by other processes.
pub const FOREIGN_POLL: Duration = Duration::from_secs(1);

/// Version 1 of the schema (later versions migrate from it). Every statement is
/// idempotent.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (
    id               TEXT PRIMARY KEY NOT NULL,
    names            TEXT NOT NULL,
    default_language TEXT NOT NULL,
    group_id         TEXT,
    translate_to     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id       TEXT PRIMARY KEY NOT NULL,
    entity   TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    params   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_entity ON tasks (entity, position);
CREATE INDEX IF NOT EXISTS tasks_by_kind ON tasks (kind, id);
CREATE TABLE IF NOT EXISTS groups (
    id    TEXT PRIMARY KEY NOT NULL,
    names TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id         TEXT PRIMARY KEY NOT NULL,
    im         TEXT NOT NULL,
    im_chat_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    language   TEXT NOT NULL,
    settings   TEXT NOT NULL,
    paused     INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (im, im_chat_id)
);
CREATE INDEX IF NOT EXISTS users_by_im ON users (im, id);
CREATE TABLE IF NOT EXISTS subscriptions (
    user    TEXT NOT NULL,
    entity  TEXT NOT NULL,
    kinds   TEXT NOT NULL,
    mention TEXT,
    PRIMARY KEY (user, entity)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_entity ON subscriptions (entity, user);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash     TEXT PRIMARY KEY NOT NULL,
    user           TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    max_expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS credentials (
    username    TEXT PRIMARY KEY NOT NULL,
    hash        TEXT NOT NULL,
    permissions TEXT NOT NULL,
    queues      TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS delayed (
    id             TEXT PRIMARY KEY NOT NULL,
    routing_key    TEXT NOT NULL,
    body           BLOB NOT NULL,
    fire_at_ms     INTEGER NOT NULL,
    owner          TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    revision       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    namespace TEXT NOT NULL,
    id        TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_time ON seen (namespace, at);
CREATE TABLE IF NOT EXISTS leases (
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    owner     TEXT NOT NULL,
    until_ms  INTEGER NOT NULL,
    epoch     INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    count     INTEGER NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    event   TEXT NOT NULL,
    im      TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    status  TEXT NOT NULL,
    at      TEXT NOT NULL,
    owner   TEXT,
    lease_until TEXT,
    PRIMARY KEY (event, im, chat_id)
) WITHOUT ROWID;
";

/// SQLite-backed storage. Cloning is cheap and shares the connection.
///
/// Differences from MongoDB worth knowing: [`EntityStore::watch_tasks`](crate::storage::EntityStore::watch_tasks) sees changes made
/// through this process's handles at once and other processes' within about
/// [`FOREIGN_POLL`] (as upserts and deletions of whole tasks, not the individual writes),
/// and a task's `entity` is always stored as the id of the entity whose list carries it.
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    changes: broadcast::Sender<TaskChange>,
    malformed: MalformedRecords,
    /// Whether this is a file other processes may write to.
    shared_file: bool,
    /// The task set as last announced, once other processes' writes are watched for.
    known_tasks: Mutex<Option<HashMap<Uuid, Task>>>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path`, in WAL mode.
    pub async fn open(path: &str) -> Result<Self> {
        let path = path.to_owned();
        let conn = blocking(move || {
            if path.is_empty() {
                return Err(StorageError::InvalidUrl("sqlite://".into()));
            }
            let conn = Connection::open(Path::new(&path))
                .map_err(|e| StorageError::Backend(format!("cannot open `{path}`: {e}")))?;
            conn.busy_timeout(BUSY_TIMEOUT).db()?;
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .db()?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %path, mode = %mode, "sqlite database is not in WAL mode");
            }
            conn.pragma_update(None, "synchronous", "NORMAL").db()?;
            Ok(conn)
        })
        .await?;
        Self::from_connection(conn, true).await
    }

    /// Opens a private in-memory database, gone when the last clone is dropped.
    pub async fn open_in_memory() -> Result<Self> {
        let conn = blocking(|| Connection::open_in_memory().db()).await?;
        Self::from_connection(conn, false).await
    }

    async fn from_connection(conn: Connection, shared_file: bool) -> Result<Self> {
        let conn = blocking(move || {
            let mut conn = conn;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                changes,
                malformed: MalformedRecords::new(),
                shared_file,
                known_tasks: Mutex::new(None),
            }),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            // A panic mid-call leaves nothing half-done: an open transaction rolls back
            // when dropped, so the connection stays usable.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
    }

    /// The reporter of skipped rows, for a closure run by [`SqliteStorage::call`].
    fn malformed(&self) -> MalformedRecords {
        self.inner.malformed.clone()
    }

    /// Announces committed task changes; having no watcher is fine.
    fn announce(&self, changes: Vec<TaskChange>) {
        let mut known = self
            .inner
            .known_tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            if let Some(known) = known.as_mut() {
                match &change {
                    TaskChange::Upserted(task) => {
                        known.insert(task.id, task.clone());
                    }
                    TaskChange::Deleted(id) => {
                        known.remove(id);
                    }
                }
            }
            let _ = self.inner.changes.send(change);
        }
    }

    /// Starts watching for other processes' commits (once per database handle): records
    /// the task set and the data version now, then polls the version every
    /// [`FOREIGN_POLL`] while the storage is open and someone watches. When the last
    /// watcher is gone the poll stops and forgets the task set; the next watcher starts
    /// it afresh.
    async fn watch_other_processes(&self) -> Result<()> {
        if !self.inner.shared_file
            || self
                .inner
                .known_tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
        {
            return Ok(());
        }
        let malformed = self.malformed();
        let (version, tasks) = self
            .call(move |conn| Ok((data_version(conn)?, all_tasks(conn, &malformed)?)))
            .await?;
        {
            let mut known = self
                .inner
                .known_tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if known.is_some() {
                // Another watcher started it meanwhile.
                return Ok(());
            }
            *known = Some(tasks.into_iter().map(|task| (task.id, task)).collect());
        }
        let storage = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut version = version;
            loop {
                tokio::time::sleep(FOREIGN_POLL).await;
                // Ends once every handle of the storage is dropped.
                let Some(inner) = storage.upgrade() else {
                    return;
                };
                {
                    // Checked under the lock a new watcher takes after subscribing, so it
                    // either keeps this poll alive or finds the set forgotten and starts
                    // its own.
                    let mut known = inner
                        .known_tasks
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if inner.changes.receiver_count() == 0 {
                        *known = None;
                        return;
                    }
                }
                let storage = SqliteStorage { inner };
                match storage.foreign_changes(version).await {
                    Ok((seen, changes)) => {
                        version = seen;
                        if !changes.is_empty() {
                            tracing::debug!(
                                changes = changes.len(),
                                "task changes by another process"
                            );
                            storage.announce(changes);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(cause = %err, "could not check for other processes' task changes")
                    }
                }
            }
        });
        Ok(())
    }

    /// The data version now and, when it moved past `version`, the task changes since the
    /// last known task set.
    async fn foreign_changes(&self, version: i64) -> Result<(i64, Vec<TaskChange>)> {
        let malformed = self.malformed();
        let (seen, tasks) = self
            .call(move |conn| {
                let seen = data_version(conn)?;
                if seen == version {
                    return Ok((seen, None));
                }
                Ok((seen, Some(all_tasks(conn, &malformed)?)))
            })
            .await?;
        let Some(tasks) = tasks else {
            return Ok((seen, Vec::new()));
        };
        let known = self
            .inner
            .known_tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(known) = known.as_ref() else {
            return Ok((seen, Vec::new()));
        };
        let now: HashMap<Uuid, Task> = tasks.into_iter().map(|task| (task.id, task)).collect();
        let mut changes: Vec<TaskChange> = known
            .keys()
            .filter(|id| !now.contains_key(id))
            .map(|id| TaskChange::Deleted(*id))
            .collect();
        changes.extend(
            now.into_values()
                .filter(|task| known.get(&task.id) != Some(task))
                .map(TaskChange::Upserted),
        );
        Ok((seen, changes))
    }
}

/// `PRAGMA data_version`: changes whenever another connection commits.
fn data_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
        .db()
}

/// Every task that decodes, in id order.
fn all_tasks(conn: &Connection, malformed: &MalformedRecords) -> Result<Vec<Task>> {
    let decode = |row: &Row<'_>| lenient(row, &[0], task_from_row);
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"))
        .db()?;
    let rows = stmt.query_map([], decode).db()?;
    keep_decoded(rows, malformed, "tasks")
}

/// Opens the file at `path` (in memory when `None`) as a shared [`super::Storage`].
pub async fn open_shared(path: Option<&str>) -> Result<Arc<dyn Storage>> {
    let storage = match path {
        Some(path) => SqliteStorage::open(path).await?,
        None => SqliteStorage::open_in_memory().await?,
    };
    Ok(Arc::new(storage))
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Backend(format!("sqlite call did not finish: {e}")))?
}

/// Brings the schema to [`SCHEMA_VERSION`], refusing databases from a newer build.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .db()?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this build supports ({SCHEMA_VERSION})"
        )));
    }
    tx.execute_batch(SCHEMA).db()?;
    add_credential_queues(&tx)?;
    add_subscription_mentions(&tx)?;
    if version < 2 {
        add_task_accounts(&tx)?;
    }
    add_delayed_claims(&tx)?;
    add_delivery_claims(&tx)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .db()?;
    tx.commit().db()
}

/// Adds `credentials.queues` to a database created before it existed; the column's
/// default makes existing credentials own no queue. Checked by name, so it runs once
/// whatever `user_version` says.
fn add_credential_queues(tx: &Transaction<'_>) -> Result<()> {
    let present: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('credentials') WHERE name = 'queues')",
            [],
            |row| row.get(0),
        )
        .db()?;
    if !present {
        tx.execute_batch("ALTER TABLE credentials ADD COLUMN queues TEXT NOT NULL DEFAULT '[]'")
            .db()?;
    }
    Ok(())
}

/// Adds the nullable `subscriptions.mention` to a database created before it existed;
/// existing subscriptions have none. Checked by name, so it runs once whatever
/// `user_version` says; builds without it ignore the column (their writes keep it), so
/// the schema version stays.
fn add_subscription_mentions(tx: &Transaction<'_>) -> Result<()> {
    let present: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('subscriptions') WHERE name = 'mention')",
            [],
            |row| row.get(0),
        )
        .db()?;
    if !present {
        tx.execute_batch("ALTER TABLE subscriptions ADD COLUMN mention TEXT")
            .db()?;
    }
    Ok(())
}

/// Version 3: the claim columns of delayed messages (docs/ARCHITECTURE.md §5
/// middleware-delay) and the indexes of the claim query. Existing rows become unclaimed
/// with revision 0. Checked by column name, so it runs once whatever `user_version` says;
/// the indexes are created here rather than in [`SCHEMA`] because on an old file the
/// columns they name exist only after the `ALTER TABLE`.
fn add_delayed_claims(tx: &Transaction<'_>) -> Result<()> {
    let present: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('delayed') WHERE name = 'revision')",
            [],
            |row| row.get(0),
        )
        .db()?;
    if !present {
        tx.execute_batch(
            "ALTER TABLE delayed ADD COLUMN owner TEXT;
             ALTER TABLE delayed ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE delayed ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;",
        )
        .db()?;
    }
    // Only claimed rows are in the owner index: renewing and releasing touch what one
    // instance holds, not the whole table.
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS delayed_by_fire_at ON delayed (fire_at_ms);
         CREATE INDEX IF NOT EXISTS delayed_by_owner ON delayed (owner) WHERE owner IS NOT NULL;",
    )
    .db()
}

/// Version 3: delivery claims. Adds `deliveries.owner` and `deliveries.lease_until` to a
/// table created before them (checked by name, so it runs once whatever `user_version`
/// says) and the index renewing and releasing an owner's claims walks. Existing rows keep
/// their final status: they count as settled.
fn add_delivery_claims(tx: &Transaction<'_>) -> Result<()> {
    let present: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('deliveries') WHERE name = 'owner')",
            [],
            |row| row.get(0),
        )
        .db()?;
    if !present {
        tx.execute_batch(
            "ALTER TABLE deliveries ADD COLUMN owner TEXT;
             ALTER TABLE deliveries ADD COLUMN lease_until TEXT;",
        )
        .db()?;
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS deliveries_claimed ON deliveries (im, owner, event)
         WHERE status = 'claimed'",
    )
    .db()
}

/// Version 2: each task's account in its own column, unique per kind. Rows whose params
/// are not JSON get no account (NULLs never collide) and are skipped when read, as before.
fn add_task_accounts(tx: &Transaction<'_>) -> Result<()> {
    tx.execute_batch(
        "ALTER TABLE tasks ADD COLUMN account TEXT;
         UPDATE tasks SET account = CASE WHEN json_valid(params)
             THEN coalesce(json_extract(params, '$.channel_id'), json_extract(params, '$.user_id'))
         END;",
    )
    .db()?;
    let duplicates: Vec<(String, String, String)> = {
        let mut stmt = tx
            .prepare(
                "SELECT kind, account, group_concat('task ' || id || ' of entity ' || entity, ', ')
                 FROM tasks WHERE account IS NOT NULL
                 GROUP BY kind, account HAVING count(*) > 1 ORDER BY kind, account",
            )
            .db()?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .db()?;
        rows.collect::<rusqlite::Result<_>>().db()?
    };
    if !duplicates.is_empty() {
        let list: Vec<String> = duplicates
            .iter()
            .map(|(kind, account, tasks)| format!("{kind} account {account} is watched by {tasks}"))
            .collect();
        return Err(StorageError::Inconsistent(format!(
            "{}; keep one task per account (remove the others) and start again",
            list.join("; ")
        )));
    }
    tx.execute_batch(TASK_ACCOUNT_INDEX).db()
}

/// One task per account and platform, whichever entity asks (docs/ARCHITECTURE.md §3).
const TASK_ACCOUNT_INDEX: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_account ON tasks (kind, account);";

impl Storage for SqliteStorage {}

#[async_trait]
impl StorageHealth for SqliteStorage {
    async fn ping(&self) -> Result<()> {
        self.call(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).db())
            .await
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        self.inner.malformed.register(registry);
    }
}

// One file per capability.
mod access;
mod codec;
mod delayed;
mod deliveries;
mod entities;
mod state;
mod users;

use codec::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::AccessStore;

    /// The plan of `sql`, one detail line per step.
    async fn plan(storage: &SqliteStorage, sql: &'static str) -> Vec<String> {
        storage
            .call(move |conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).db()?;
                // The plan does not depend on values, so every parameter is NULL.
                let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(nulls), |row| {
                        row.get::<_, String>(3)
                    })
                    .db()?;
                rows.collect::<rusqlite::Result<Vec<_>>>().db()
            })
            .await
            .unwrap()
    }

    /// Every table is reached through an index and nothing is sorted afterwards.
    #[track_caller]
    fn assert_indexed(plan: &[String]) {
        for step in plan {
            let scans_table = step.starts_with("SCAN") && !step.contains("VIRTUAL TABLE");
            assert!(!scans_table, "full scan in {plan:?}");
            assert!(!step.contains("TEMP B-TREE"), "sort in {plan:?}");
        }
    }

    #[tokio::test]
    async fn hot_queries_use_indexes() {
        let s = SqliteStorage::open_in_memory().await.unwrap();
        let subscribers = plan(&s, SUBSCRIBERS_SQL).await;
        assert_indexed(&subscribers);
        assert!(
            subscribers
                .iter()
                .any(|step| step.contains("subscriptions_by_entity (entity=?)")),
            "{subscribers:?}"
        );
        assert_indexed(&plan(&s, DELAYED_AFTER_SQL).await);
        let claim = plan(&s, CLAIM_DELAYED_SQL).await;
        assert_indexed(&claim);
        assert!(
            claim.iter().any(|step| step.contains("delayed_by_fire_at")),
            "{claim:?}"
        );
        for sql in [
            "UPDATE delayed SET lease_until_ms = ?2 WHERE owner = ?1",
            "UPDATE delayed SET owner = NULL, lease_until_ms = 0 WHERE owner = ?1",
        ] {
            let steps = plan(&s, sql).await;
            assert!(
                steps.iter().any(|step| step.contains("delayed_by_owner")),
                "{sql}: {steps:?}"
            );
        }
        let delivered = plan(&s, DELIVERED_CHATS_SQL).await;
        assert_indexed(&delivered);
        assert!(
            delivered.iter().any(|step| step
                .contains("SEARCH deliveries USING PRIMARY KEY (event=? AND im=? AND chat_id=?)")),
            "{delivered:?}"
        );
        // The first page walks the id index from its start and stops at the limit.
        let first = plan(&s, DELAYED_FIRST_SQL).await;
        assert_eq!(
            first,
            ["SCAN delayed USING INDEX sqlite_autoindex_delayed_1"]
        );
        for sql in [
            "SELECT id, entity, params FROM tasks WHERE entity = ?1 ORDER BY position",
            "SELECT id, entity, params FROM tasks WHERE kind = ?1 ORDER BY id",
            "SELECT id FROM users WHERE im = ?1 ORDER BY id",
            "SELECT user, entity, kinds, mention FROM subscriptions WHERE user = ?1 ORDER BY entity",
            "DELETE FROM sessions WHERE expires_at <= ?1",
            "DELETE FROM sessions WHERE user = ?1",
            "DELETE FROM subscriptions WHERE entity = ?1",
            "DELETE FROM seen WHERE namespace = ?1 AND at < ?2",
            "SELECT key, value FROM kv WHERE namespace = ?1 ORDER BY key",
        ] {
            assert_indexed(&plan(&s, sql).await);
        }
    }

    #[tokio::test]
    async fn delayed_messages_from_before_claims_are_migrated() {
        use crate::storage::DelayStore;
        let dir = std::env::temp_dir().join(format!("sg-sqlite-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE delayed (id TEXT PRIMARY KEY NOT NULL, routing_key TEXT NOT NULL, \
                 body BLOB NOT NULL, fire_at_ms INTEGER NOT NULL); \
                 INSERT INTO delayed VALUES ('old', 'youtube.live', x'7b7d', 5); \
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let path = path.to_str().unwrap().to_owned();
        let storage = SqliteStorage::open(&path).await.unwrap();
        let old = storage.get_delayed("old").await.unwrap().unwrap();
        assert_eq!(
            (old.revision, old.lease),
            (0, None),
            "unclaimed, revision 0"
        );
        let claimed = storage.claim_delayed("me", 10, 1000, 0, 10).await.unwrap();
        assert_eq!(
            claimed,
            [ClaimedDelayed {
                id: "old".into(),
                fire_at_ms: 5,
                revision: 0
            }]
        );
        assert!(storage.delete_delayed_if("old", 0).await.unwrap());
        drop(storage);
        // Opening again finds the columns and indexes in place.
        SqliteStorage::open(&path).await.unwrap();
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn credentials_from_before_queues_are_migrated() {
        let dir = std::env::temp_dir().join(format!("sg-sqlite-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE credentials (username TEXT PRIMARY KEY NOT NULL, \
                 hash TEXT NOT NULL, permissions TEXT NOT NULL); \
                 INSERT INTO credentials VALUES ('bot', 'h', '{\"mq\":\"ro\"}'); \
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let path = path.to_str().unwrap().to_owned();
        let storage = SqliteStorage::open(&path).await.unwrap();
        let old = storage.get_credential("bot").await.unwrap().unwrap();
        assert!(old.queues.is_empty());
        assert_eq!(old.permissions.mq, Some(crate::model::Access::Ro));
        let new = Credential {
            username: "mw".into(),
            hash: "h".into(),
            permissions: Default::default(),
            queues: vec!["middleware.delay".into()],
        };
        storage.insert_credential(&new).await.unwrap();
        drop(storage);
        // Opening again finds the column in place and keeps what was stored.
        let storage = SqliteStorage::open(&path).await.unwrap();
        assert_eq!(storage.get_credential("mw").await.unwrap(), Some(new));
        assert_eq!(storage.list_credentials().await.unwrap().len(), 2);
        drop(storage);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A subscriptions table from before mentions gains the column on open; its
    /// subscriptions read without one and can be given one.
    #[tokio::test]
    async fn subscriptions_from_before_mentions_are_migrated() {
        use crate::storage::UserStore;

        let dir = std::env::temp_dir().join(format!("sg-sqlite-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old-subscriptions.db");
        let (user, entity) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE subscriptions (user TEXT NOT NULL, entity TEXT NOT NULL, \
                 kinds TEXT NOT NULL, PRIMARY KEY (user, entity)) WITHOUT ROWID; \
                 INSERT INTO subscriptions VALUES ('{user}', '{entity}', '[\"youtube.live\"]'); \
                 PRAGMA user_version = 3;"
            ))
            .unwrap();
        }
        let path = path.to_str().unwrap().to_owned();
        let storage = SqliteStorage::open(&path).await.unwrap();
        let old = Subscription {
            user,
            entity,
            kinds: vec!["youtube.live".into()],
            mention: None,
        };
        assert_eq!(
            storage.list_subscriptions(user).await.unwrap(),
            std::slice::from_ref(&old)
        );
        let mentioned = Subscription {
            mention: Some("42".into()),
            ..old
        };
        storage.put_subscription(&mentioned).await.unwrap();
        drop(storage);
        // Opening again finds the column in place and keeps what was stored.
        let storage = SqliteStorage::open(&path).await.unwrap();
        assert_eq!(storage.list_subscriptions(user).await.unwrap(), [mentioned]);
        drop(storage);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A version-2 file's delivery log gains the claim columns; its records keep their
    /// status and count as settled for claims.
    #[tokio::test]
    async fn deliveries_from_before_claims_count_as_settled() {
        use crate::model::{ClaimState, DeliveryClaim};
        use crate::storage::DeliveryStore;

        let dir = std::env::temp_dir().join(format!("sg-sqlite-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old-deliveries.db");
        let event = Uuid::new_v4();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE deliveries (event TEXT NOT NULL, im TEXT NOT NULL, \
                 chat_id TEXT NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL, \
                 PRIMARY KEY (event, im, chat_id)) WITHOUT ROWID; \
                 INSERT INTO deliveries VALUES ('{event}', 'telegram', '7', 'sent', \
                 '2026-01-01T00:00:00.000000000Z'); \
                 PRAGMA user_version = 2;"
            ))
            .unwrap();
        }
        let path = path.to_str().unwrap().to_owned();
        let storage = SqliteStorage::open(&path).await.unwrap();
        let now = Utc::now();
        let claim = DeliveryClaim {
            event,
            im: "telegram".into(),
            owner: "a".into(),
            now,
            lease_until: now + chrono::Duration::seconds(60),
        };
        let chats = ["7".to_owned(), "8".to_owned()];
        assert_eq!(
            storage.claim_deliveries(&claim, &chats).await.unwrap(),
            [ClaimState::Settled("sent".into()), ClaimState::Won]
        );
        drop(storage);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The poll for other processes' commits runs while someone watches and stops with
    /// the last watcher; a later watcher starts it again and sees later commits.
    #[tokio::test]
    async fn the_foreign_commit_poll_lives_as_long_as_its_watchers() {
        use crate::storage::EntityStore;
        use futures::StreamExt;

        let dir = std::env::temp_dir().join(format!("sg-sqlite-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("poll.db");
        let path = path.to_str().unwrap().to_owned();
        let storage = SqliteStorage::open(&path).await.unwrap();
        let polling = |s: &SqliteStorage| {
            s.inner
                .known_tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
        };
        let stream = storage.watch_tasks().await.unwrap();
        assert!(polling(&storage));
        drop(stream);
        let stopped = async {
            while polling(&storage) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(FOREIGN_POLL * 3, stopped)
            .await
            .expect("the poll stops once nobody watches");

        // Watching again starts it again: a task another process adds is announced.
        let mut stream = storage.watch_tasks().await.unwrap();
        assert!(polling(&storage));
        let other = SqliteStorage::open(&path).await.unwrap();
        let entity = crate::model::Entity {
            id: Uuid::new_v4(),
            names: [("en".to_owned(), "Poll".to_owned())].into_iter().collect(),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![Task {
                id: Uuid::new_v4(),
                entity: Uuid::nil(),
                params: crate::model::TaskParams::Bilibili { uid: "77".into() },
            }],
        };
        other.insert_entity(&entity).await.unwrap();
        let change = tokio::time::timeout(FOREIGN_POLL * 5, stream.next())
            .await
            .expect("the other process's task is announced")
            .unwrap()
            .unwrap();
        assert!(
            matches!(&change, TaskChange::Upserted(task) if task.params.source_id() == "77"),
            "{change:?}"
        );
        drop((stream, storage, other));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn time_text_orders_like_time() {
        let a = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.5Z").unwrap();
        let b = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123456789Z").unwrap();
        let c = DateTime::parse_from_rfc3339("2026-01-01T00:00:01Z").unwrap();
        let (a, b, c) = (a.to_utc(), b.to_utc(), c.to_utc());
        assert!(time_text(b) < time_text(a) && time_text(a) < time_text(c));
        assert_eq!(time_text(b), "2026-01-01T00:00:00.123456789Z");
    }
}
