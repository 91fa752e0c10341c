//! SQLite implementation of [`Storage`](super::Storage), for single-process deployments
//! (`standalone`) and tests: one file (or an in-memory database) behind one connection.
//!
//! Layout: one table per collection, UUIDs as hyphenated lowercase text (so text order is
//! UUID byte order, the order MongoDB uses), times as fixed-width RFC 3339 with nanoseconds
//! (so text order is time order), maps and lists as JSON text. The schema is created on
//! open and versioned in `PRAGMA user_version`. Version 2 adds each task's `account`
//! (its platform-side id) and the unique index on `(kind, account)`; opening a version-1
//! file where two tasks watch one account fails with [`StorageError::Inconsistent`]
//! naming them, and changes nothing.
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

use super::{MalformedRecords, Result, Storage, StorageError, Subscriber};
use crate::model::{
    Credential, DelayedMessage, DeliveryRecord, Entity, Group, Session, Subscription, Task,
    TaskChange, TaskKind, TaskParams, User, UserSettings,
};

/// The schema version this build creates and understands.
const SCHEMA_VERSION: i64 = 2;

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
    user   TEXT NOT NULL,
    entity TEXT NOT NULL,
    kinds  TEXT NOT NULL,
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
    id          TEXT PRIMARY KEY NOT NULL,
    routing_key TEXT NOT NULL,
    body        BLOB NOT NULL,
    fire_at_ms  INTEGER NOT NULL
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
CREATE TABLE IF NOT EXISTS deliveries (
    event   TEXT NOT NULL,
    im      TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    status  TEXT NOT NULL,
    at      TEXT NOT NULL,
    PRIMARY KEY (event, im, chat_id)
) WITHOUT ROWID;
";

/// SQLite-backed storage. Cloning is cheap and shares the connection.
///
/// Differences from MongoDB worth knowing: [`Storage::watch_tasks`] sees changes made
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
    /// [`FOREIGN_POLL`] for as long as the storage is open.
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
    if version < 2 {
        add_task_accounts(&tx)?;
    }
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

// ---------------------------------------------------------------- errors and columns

/// Converts rusqlite results into storage results.
trait Db<T> {
    /// Maps the error: undecodable columns are `Corrupt`, the rest `Backend`.
    fn db(self) -> Result<T>;
    /// Like [`Db::db`], but a unique-key violation is `Conflict(what())`.
    fn unique(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(db_error)
    }

    fn unique(self, what: impl FnOnce() -> String) -> Result<T> {
        match self {
            Err(e) if is_unique_violation(&e) => Err(StorageError::Conflict(what())),
            other => other.db(),
        }
    }
}

/// Undecodable columns are `Corrupt`; everything else is `Backend`.
fn db_error(e: rusqlite::Error) -> StorageError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(column, _, cause) => {
            StorageError::Corrupt(format!("column {column}: {cause}"))
        }
        rusqlite::Error::InvalidColumnType(column, name, ty) => {
            StorageError::Corrupt(format!("column {column} `{name}` holds {ty}"))
        }
        other => StorageError::Backend(other.to_string()),
    }
}

/// Names the record a `Corrupt` error was found in (`entity <id>: column 1: …`).
fn in_record(e: StorageError, what: &str, id: impl std::fmt::Display) -> StorageError {
    match e {
        StorageError::Corrupt(detail) => StorageError::Corrupt(format!("{what} {id}: {detail}")),
        other => other,
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

fn conversion(
    column: usize,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(cause))
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// Fixed width (nanoseconds, `Z`), so comparing texts compares times for years 0–9999.
fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StorageError::Backend(format!("cannot encode value as JSON: {e}")))
}

fn col_uuid(row: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(i)?;
    Uuid::parse_str(&text).map_err(|e| conversion(i, e))
}

fn col_opt_uuid(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    let text: Option<String> = row.get(i)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| conversion(i, e)))
        .transpose()
}

fn col_time(row: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(i)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| conversion(i, e))
}

fn col_json<T: DeserializeOwned>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| conversion(i, e))
}

/// A row's key column as text whatever its type, to name a row that does not decode.
fn row_id(row: &Row<'_>, i: usize) -> String {
    use rusqlite::types::ValueRef;
    match row.get_ref(i) {
        Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
        Ok(ValueRef::Integer(n)) => n.to_string(),
        Ok(ValueRef::Real(x)) => x.to_string(),
        Ok(ValueRef::Blob(b)) => hex::encode(b),
        Ok(ValueRef::Null) => "NULL".to_owned(),
        Err(e) => format!("unreadable ({e})"),
    }
}

/// A decoded row, or why it does not decode, named by its key columns.
type Lenient<T> = std::result::Result<T, (String, StorageError)>;

/// Decodes a row with `decode`, turning a decoding failure into a value (naming the row
/// by its columns `key`) so one bad row does not fail a whole listing.
fn lenient<T>(
    row: &Row<'_>,
    key: &[usize],
    decode: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Lenient<T>> {
    match decode(row) {
        Ok(value) => Ok(Ok(value)),
        Err(
            e @ (rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)),
        ) => {
            let id: Vec<String> = key.iter().map(|&i| row_id(row, i)).collect();
            Ok(Err((id.join("/"), db_error(e))))
        }
        Err(e) => Err(e),
    }
}

/// The rows that decode; the others are reported to `malformed` as rows of `table`.
fn keep_decoded<T>(
    rows: impl Iterator<Item = rusqlite::Result<Lenient<T>>>,
    malformed: &MalformedRecords,
    table: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in rows {
        match row.db()? {
            Ok(value) => out.push(value),
            Err((id, cause)) => malformed.skip(table, &id, &cause),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- row mappers

const ENTITY_COLUMNS: &str = "id, names, default_language, group_id, translate_to";

fn entity_from_row(row: &Row<'_>) -> rusqlite::Result<Entity> {
    Ok(Entity {
        id: col_uuid(row, 0)?,
        names: col_json(row, 1)?,
        default_language: row.get(2)?,
        group: col_opt_uuid(row, 3)?,
        translate_to: col_json(row, 4)?,
        tasks: Vec::new(),
    })
}

const TASK_COLUMNS: &str = "id, entity, params";

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: col_uuid(row, 0)?,
        entity: col_uuid(row, 1)?,
        params: col_json::<TaskParams>(row, 2)?,
    })
}

const USER_COLUMNS: &str = "id, im, im_chat_id, name, language, settings, created_at";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: col_uuid(row, 0)?,
        im: row.get(1)?,
        im_chat_id: row.get(2)?,
        name: row.get(3)?,
        language: row.get(4)?,
        settings: col_json::<UserSettings>(row, 5)?,
        created_at: col_time(row, 6)?,
    })
}

const SESSION_COLUMNS: &str = "token_hash, user, created_at, expires_at, max_expires_at";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        token_hash: row.get(0)?,
        user: col_uuid(row, 1)?,
        created_at: col_time(row, 2)?,
        expires_at: col_time(row, 3)?,
        max_expires_at: col_time(row, 4)?,
    })
}

fn credential_from_row(row: &Row<'_>) -> rusqlite::Result<Credential> {
    Ok(Credential {
        username: row.get(0)?,
        hash: row.get(1)?,
        permissions: col_json(row, 2)?,
        queues: col_json(row, 3)?,
    })
}

fn delayed_from_row(row: &Row<'_>) -> rusqlite::Result<DelayedMessage> {
    Ok(DelayedMessage {
        id: row.get(0)?,
        routing_key: row.get(1)?,
        body: row.get(2)?,
        fire_at_ms: row.get(3)?,
    })
}

// ---------------------------------------------------------------- entity helpers

/// Rejects a task list naming one id twice, which would otherwise collapse silently.
fn check_distinct_tasks(entity: &Entity) -> Result<()> {
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
fn owned_task(task: &Task, entity: Uuid) -> Task {
    Task {
        id: task.id,
        entity,
        params: task.params.clone(),
    }
}

fn insert_task(tx: &Transaction<'_>, task: &Task, position: usize) -> Result<()> {
    let inserted = tx.execute(
        "INSERT INTO tasks (id, entity, position, kind, params, account)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            uuid_text(task.id),
            uuid_text(task.entity),
            position as i64,
            task.kind().as_str(),
            json_text(&task.params)?,
            task.params.source_id(),
        ],
    );
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_account_violation(&e) => Err(account_conflict(tx, task)),
        Err(e) => Err(e).unique(|| format!("task {}", task.id)),
    }
}

/// Whether `e` is a collision on the unique `(kind, account)` index.
fn is_account_violation(e: &rusqlite::Error) -> bool {
    is_unique_violation(e) && e.to_string().contains("tasks.account")
}

/// The `Conflict` for a task whose account another task already watches, naming the
/// account and (when it can be read) the entity that owns it.
fn account_conflict(conn: &Connection, task: &Task) -> StorageError {
    let owner: Option<String> = conn
        .query_row(
            "SELECT entity FROM tasks WHERE kind = ?1 AND account = ?2",
            [task.kind().as_str(), task.params.source_id()],
            |row| row.get(0),
        )
        .optional()
        .ok()
        .flatten();
    StorageError::Conflict(super::account_taken(task, owner.as_deref()))
}

fn write_entity_row(tx: &Transaction<'_>, entity: &Entity, insert: bool) -> Result<usize> {
    let sql = if insert {
        "INSERT INTO entities (id, names, default_language, group_id, translate_to)
         VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "UPDATE entities SET names = ?2, default_language = ?3, group_id = ?4, translate_to = ?5
         WHERE id = ?1"
    };
    tx.execute(
        sql,
        params![
            uuid_text(entity.id),
            json_text(&entity.names)?,
            entity.default_language,
            entity.group.map(uuid_text),
            json_text(&entity.translate_to)?,
        ],
    )
    .unique(|| format!("entity {}", entity.id))
}

/// The tasks of `entity` that decode, in list order.
fn tasks_of(conn: &Connection, entity: Uuid, malformed: &MalformedRecords) -> Result<Vec<Task>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE entity = ?1 ORDER BY position"
        ))
        .db()?;
    let rows = stmt
        .query_map([uuid_text(entity)], |row| lenient(row, &[0], task_from_row))
        .db()?;
    keep_decoded(rows, malformed, "tasks")
}

// ---------------------------------------------------------------- hot queries

/// The fan-out lookup. `INDEXED BY` pins the plan to walking `(entity, user)`, which
/// yields rows already in user order and touches only this entity's subscribers; without
/// statistics the planner might instead walk every user of the platform.
const SUBSCRIBERS_SQL: &str = "
SELECT u.id, u.im, u.im_chat_id, u.name, u.language, u.settings, u.created_at, s.entity, s.kinds
FROM subscriptions AS s INDEXED BY subscriptions_by_entity
JOIN users AS u ON u.id = s.user
WHERE s.entity = ?1
  AND u.im = ?3
  AND u.paused = 0
  AND (json_array_length(s.kinds) = 0
       OR EXISTS (SELECT 1 FROM json_each(s.kinds) WHERE json_each.value = ?2))
ORDER BY s.user";

/// Keyset pagination on the primary-key index: a page costs O(limit · log n) however deep
/// the cursor is, which matters when reloading a million pending messages.
const DELAYED_AFTER_SQL: &str =
    "SELECT id, routing_key, body, fire_at_ms FROM delayed WHERE id > ?1 ORDER BY id LIMIT ?2";

/// The first page of [`DELAYED_AFTER_SQL`].
const DELAYED_FIRST_SQL: &str =
    "SELECT id, routing_key, body, fire_at_ms FROM delayed ORDER BY id LIMIT ?1";

/// Logs one delivery unless `(event, im, chat_id)` already is (then nothing changes).
const INSERT_DELIVERY_SQL: &str = "
INSERT INTO deliveries (event, im, chat_id, status, at) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (event, im, chat_id) DO NOTHING";

/// The parameters of [`INSERT_DELIVERY_SQL`].
fn delivery_params(record: DeliveryRecord) -> [String; 5] {
    [
        uuid_text(record.event),
        record.im,
        record.chat_id,
        record.status,
        time_text(record.at),
    ]
}

/// Which of a JSON array of chat ids are logged for `(event, im)`: one lookup on the
/// primary key `(event, im, chat_id)` per candidate, whatever the number of candidates,
/// with one statement text (so it stays prepared).
const DELIVERED_CHATS_SQL: &str = "
SELECT chat_id FROM deliveries
WHERE event = ?1 AND im = ?2 AND chat_id IN (SELECT value FROM json_each(?3))";

// ---------------------------------------------------------------- the trait

#[async_trait]
impl Storage for SqliteStorage {
    async fn ping(&self) -> Result<()> {
        self.call(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).db())
            .await
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        self.inner.malformed.register(registry);
    }

    async fn insert_entity(&self, entity: &Entity) -> Result<()> {
        check_distinct_tasks(entity)?;
        let entity = entity.clone();
        let changes = self
            .call(move |conn| {
                let tx = conn.transaction().db()?;
                write_entity_row(&tx, &entity, true)?;
                let mut changes = Vec::with_capacity(entity.tasks.len());
                for (position, task) in entity.tasks.iter().enumerate() {
                    let task = owned_task(task, entity.id);
                    insert_task(&tx, &task, position)?;
                    changes.push(TaskChange::Upserted(task));
                }
                tx.commit().db()?;
                Ok(changes)
            })
            .await?;
        self.announce(changes);
        Ok(())
    }

    async fn get_entity(&self, id: Uuid) -> Result<Option<Entity>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let entity = conn
                .query_row(
                    &format!("SELECT {ENTITY_COLUMNS} FROM entities WHERE id = ?1"),
                    [uuid_text(id)],
                    entity_from_row,
                )
                .optional()
                .db()
                .map_err(|e| in_record(e, "entity", id))?;
            match entity {
                Some(mut entity) => {
                    entity.tasks = tasks_of(conn, id, &malformed)?;
                    Ok(Some(entity))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_entities(&self) -> Result<Vec<Entity>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let tx = conn.transaction().db()?;
            let mut by_entity: HashMap<Uuid, Vec<Task>> = HashMap::new();
            {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT {TASK_COLUMNS} FROM tasks ORDER BY entity, position"
                    ))
                    .db()?;
                let rows = stmt
                    .query_map([], |row| lenient(row, &[0], task_from_row))
                    .db()?;
                for task in keep_decoded(rows, &malformed, "tasks")? {
                    by_entity.entry(task.entity).or_default().push(task);
                }
            }
            let mut entities = {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT {ENTITY_COLUMNS} FROM entities ORDER BY id"
                    ))
                    .db()?;
                let rows = stmt
                    .query_map([], |row| lenient(row, &[0], entity_from_row))
                    .db()?;
                keep_decoded(rows, &malformed, "entities")?
            };
            for entity in &mut entities {
                entity.tasks = by_entity.remove(&entity.id).unwrap_or_default();
            }
            tx.commit().db()?;
            Ok(entities)
        })
        .await
    }

    async fn update_entity(&self, entity: &Entity) -> Result<()> {
        check_distinct_tasks(entity)?;
        let entity = entity.clone();
        let malformed = self.malformed();
        let changes = self
            .call(move |conn| {
                let tx = conn.transaction().db()?;
                if write_entity_row(&tx, &entity, false)? == 0 {
                    return Err(StorageError::NotFound(format!("entity {}", entity.id)));
                }
                let old: HashMap<Uuid, Task> = tasks_of(&tx, entity.id, &malformed)?
                    .into_iter()
                    .map(|t| (t.id, t))
                    .collect();
                let wanted: HashSet<Uuid> = entity.tasks.iter().map(|t| t.id).collect();
                let mut changes = Vec::new();

                for id in old.keys().filter(|id| !wanted.contains(id)) {
                    tx.execute("DELETE FROM tasks WHERE id = ?1", [uuid_text(*id)])
                        .db()?;
                    changes.push(TaskChange::Deleted(*id));
                }
                for (position, task) in entity.tasks.iter().enumerate() {
                    let task = owned_task(task, entity.id);
                    match old.get(&task.id) {
                        None => {
                            // Taken by another entity: the insert names the task in `Conflict`.
                            insert_task(&tx, &task, position)?;
                            changes.push(TaskChange::Upserted(task));
                        }
                        Some(previous) => {
                            let updated = tx.execute(
                                "UPDATE tasks SET position = ?2, kind = ?3, params = ?4,
                                     account = ?5
                                 WHERE id = ?1",
                                params![
                                    uuid_text(task.id),
                                    position as i64,
                                    task.kind().as_str(),
                                    json_text(&task.params)?,
                                    task.params.source_id(),
                                ],
                            );
                            match updated {
                                Ok(_) => {}
                                Err(e) if is_account_violation(&e) => {
                                    return Err(account_conflict(&tx, &task))
                                }
                                Err(e) => return Err(db_error(e)),
                            }
                            if *previous != task {
                                changes.push(TaskChange::Upserted(task));
                            }
                        }
                    }
                }
                tx.commit().db()?;
                Ok(changes)
            })
            .await?;
        self.announce(changes);
        Ok(())
    }

    async fn delete_entity(&self, id: Uuid) -> Result<()> {
        let changes = self
            .call(move |conn| {
                let tx = conn.transaction().db()?;
                let key = uuid_text(id);
                // Every task row goes, decodable or not: announce each by its id.
                let tasks: Vec<Uuid> = {
                    let mut stmt = tx.prepare("SELECT id FROM tasks WHERE entity = ?1").db()?;
                    let rows = stmt.query_map([&key], |row| col_uuid(row, 0)).db()?;
                    rows.filter_map(|id| id.ok()).collect()
                };
                if tx
                    .execute("DELETE FROM entities WHERE id = ?1", [&key])
                    .db()?
                    == 0
                {
                    return Err(StorageError::NotFound(format!("entity {id}")));
                }
                tx.execute("DELETE FROM tasks WHERE entity = ?1", [&key])
                    .db()?;
                tx.execute("DELETE FROM subscriptions WHERE entity = ?1", [&key])
                    .db()?;
                tx.commit().db()?;
                Ok(tasks.into_iter().map(TaskChange::Deleted).collect())
            })
            .await?;
        self.announce(changes);
        Ok(())
    }

    async fn upsert_group(&self, group: &Group) -> Result<()> {
        let id = uuid_text(group.id);
        let names = json_text(&group.names)?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO groups (id, names) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET names = excluded.names",
                params![id, names],
            )
            .db()?;
            Ok(())
        })
        .await
    }

    async fn list_groups(&self) -> Result<Vec<Group>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, names FROM groups ORDER BY id")
                .db()?;
            let rows = stmt
                .query_map([], |row| {
                    lenient(row, &[0], |row| {
                        Ok(Group {
                            id: col_uuid(row, 0)?,
                            names: col_json(row, 1)?,
                        })
                    })
                })
                .db()?;
            keep_decoded(rows, &malformed, "groups")
        })
        .await
    }

    async fn list_tasks(&self, kind: Option<TaskKind>) -> Result<Vec<Task>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let decode = |row: &Row<'_>| lenient(row, &[0], task_from_row);
            match kind {
                Some(kind) => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {TASK_COLUMNS} FROM tasks WHERE kind = ?1 ORDER BY id"
                        ))
                        .db()?;
                    let rows = stmt.query_map([kind.as_str()], decode).db()?;
                    keep_decoded(rows, &malformed, "tasks")
                }
                None => all_tasks(conn, &malformed),
            }
        })
        .await
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                [uuid_text(id)],
                task_from_row,
            )
            .optional()
            .db()
            .map_err(|e| in_record(e, "task", id))
        })
        .await
    }

    async fn watch_tasks(&self) -> Result<BoxStream<'static, Result<TaskChange>>> {
        let receiver = self.inner.changes.subscribe();
        self.watch_other_processes().await?;
        let stream = BroadcastStream::new(receiver).map(|item| {
            item.map_err(|BroadcastStreamRecvError::Lagged(missed)| {
                StorageError::Backend(format!(
                    "lagged: {missed} task changes were missed; resynchronise with list_tasks"
                ))
            })
        });
        Ok(stream.boxed())
    }

    async fn insert_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        let settings = json_text(&user.settings)?;
        self.call(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}, paused) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    uuid_text(user.id),
                    user.im,
                    user.im_chat_id,
                    user.name,
                    user.language,
                    settings,
                    time_text(user.created_at),
                    user.settings.paused,
                ],
            )
            .map_err(|e| user_conflict(e, &user))?;
            Ok(())
        })
        .await
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [uuid_text(id)],
                user_from_row,
            )
            .optional()
            .db()
            .map_err(|e| in_record(e, "user", id))
        })
        .await
    }

    async fn find_user_by_chat(&self, im: &str, chat_id: &str) -> Result<Option<User>> {
        let (im, chat_id) = (im.to_owned(), chat_id.to_owned());
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE im = ?1 AND im_chat_id = ?2"),
                [im, chat_id],
                user_from_row,
            )
            .optional()
            .db()
        })
        .await
    }

    async fn update_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        let settings = json_text(&user.settings)?;
        self.call(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE users SET im = ?2, im_chat_id = ?3, name = ?4, language = ?5,
                     settings = ?6, paused = ?7 WHERE id = ?1",
                    params![
                        uuid_text(user.id),
                        user.im,
                        user.im_chat_id,
                        user.name,
                        user.language,
                        settings,
                        user.settings.paused,
                    ],
                )
                .map_err(|e| user_conflict(e, &user))?;
            if changed == 0 {
                return Err(StorageError::NotFound(format!("user {}", user.id)));
            }
            Ok(())
        })
        .await
    }

    async fn delete_user(&self, id: Uuid) -> Result<()> {
        self.call(move |conn| {
            let tx = conn.transaction().db()?;
            let key = uuid_text(id);
            if tx.execute("DELETE FROM users WHERE id = ?1", [&key]).db()? == 0 {
                return Err(StorageError::NotFound(format!("user {id}")));
            }
            tx.execute("DELETE FROM sessions WHERE user = ?1", [&key])
                .db()?;
            tx.execute("DELETE FROM subscriptions WHERE user = ?1", [&key])
                .db()?;
            tx.commit().db()
        })
        .await
    }

    async fn list_users(&self, im: Option<&str>) -> Result<Vec<User>> {
        let im = im.map(str::to_owned);
        let malformed = self.malformed();
        self.call(move |conn| {
            let decode = |row: &Row<'_>| lenient(row, &[0], user_from_row);
            match im {
                Some(im) => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {USER_COLUMNS} FROM users WHERE im = ?1 ORDER BY id"
                        ))
                        .db()?;
                    let rows = stmt.query_map([im], decode).db()?;
                    keep_decoded(rows, &malformed, "users")
                }
                None => {
                    let mut stmt = conn
                        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
                        .db()?;
                    let rows = stmt.query_map([], decode).db()?;
                    keep_decoded(rows, &malformed, "users")
                }
            }
        })
        .await
    }

    async fn put_subscription(&self, subscription: &Subscription) -> Result<()> {
        let user = uuid_text(subscription.user);
        let entity = uuid_text(subscription.entity);
        let kinds = json_text(&subscription.kinds)?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO subscriptions (user, entity, kinds) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, entity) DO UPDATE SET kinds = excluded.kinds",
                params![user, entity, kinds],
            )
            .db()?;
            Ok(())
        })
        .await
    }

    async fn delete_subscription(&self, user: Uuid, entity: Uuid) -> Result<bool> {
        self.call(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM subscriptions WHERE user = ?1 AND entity = ?2",
                    [uuid_text(user), uuid_text(entity)],
                )
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_subscriptions(&self, user: Uuid) -> Result<Vec<Subscription>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT user, entity, kinds FROM subscriptions WHERE user = ?1 ORDER BY entity",
                )
                .db()?;
            let rows = stmt
                .query_map([uuid_text(user)], |row| {
                    lenient(row, &[0, 1], |row| {
                        Ok(Subscription {
                            user: col_uuid(row, 0)?,
                            entity: col_uuid(row, 1)?,
                            kinds: col_json(row, 2)?,
                        })
                    })
                })
                .db()?;
            keep_decoded(rows, &malformed, "subscriptions")
        })
        .await
    }

    async fn subscribers(&self, entity: Uuid, kind: &str, im: &str) -> Result<Vec<Subscriber>> {
        let (kind, im) = (kind.to_owned(), im.to_owned());
        let malformed = self.malformed();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(SUBSCRIBERS_SQL).db()?;
            let rows = stmt
                .query_map(params![uuid_text(entity), kind, im], |row| {
                    // One undecodable user must not stop the fan-out to the others.
                    lenient(row, &[0], |row| {
                        let user = user_from_row(row)?;
                        let subscription = Subscription {
                            user: user.id,
                            entity: col_uuid(row, 7)?,
                            kinds: col_json(row, 8)?,
                        };
                        Ok(Subscriber { user, subscription })
                    })
                })
                .db()?;
            keep_decoded(rows, &malformed, "users")
        })
        .await
    }

    async fn insert_session(&self, session: &Session) -> Result<()> {
        let session = session.clone();
        self.call(move |conn| {
            conn.execute(
                &format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![
                    session.token_hash,
                    uuid_text(session.user),
                    time_text(session.created_at),
                    time_text(session.expires_at),
                    time_text(session.max_expires_at),
                ],
            )
            // The hash identifies a bearer token: never echo it in errors.
            .unique(|| "session with this token hash".to_owned())?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = ?1"),
                [token_hash],
                session_from_row,
            )
            .optional()
            .db()
        })
        .await
    }

    async fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute(
                    "UPDATE sessions SET expires_at = ?2 WHERE token_hash = ?1",
                    [token_hash, time_text(expires_at)],
                )
                .db()?;
            if n == 0 {
                return Err(StorageError::NotFound("session".into()));
            }
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        self.call(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM sessions WHERE expires_at <= ?1",
                    [time_text(now)],
                )
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn insert_credential(&self, credential: &Credential) -> Result<()> {
        let credential = credential.clone();
        let permissions = json_text(&credential.permissions)?;
        let queues = json_text(&credential.queues)?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO credentials (username, hash, permissions, queues) VALUES (?1, ?2, ?3, ?4)",
                params![credential.username, credential.hash, permissions, queues],
            )
            .unique(|| format!("credential {}", credential.username))?;
            Ok(())
        })
        .await
    }

    async fn get_credential(&self, username: &str) -> Result<Option<Credential>> {
        let username = username.to_owned();
        self.call(move |conn| {
            conn.query_row(
                "SELECT username, hash, permissions, queues FROM credentials WHERE username = ?1",
                [username],
                credential_from_row,
            )
            .optional()
            .db()
        })
        .await
    }

    async fn delete_credential(&self, username: &str) -> Result<bool> {
        let username = username.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute("DELETE FROM credentials WHERE username = ?1", [username])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_credentials(&self) -> Result<Vec<Credential>> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT username, hash, permissions, queues FROM credentials ORDER BY username",
                )
                .db()?;
            let rows = stmt.query_map([], credential_from_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
        .await
    }

    async fn put_delayed(&self, message: &DelayedMessage) -> Result<()> {
        let message = message.clone();
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO delayed (id, routing_key, body, fire_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET routing_key = excluded.routing_key,
                     body = excluded.body, fire_at_ms = excluded.fire_at_ms",
            )
            .db()?
            .execute(params![
                message.id,
                message.routing_key,
                message.body,
                message.fire_at_ms
            ])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn delete_delayed(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.call(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM delayed WHERE id = ?1")
                .db()?
                .execute([id])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_delayed(&self, id: &str) -> Result<Option<DelayedMessage>> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.query_row(
                "SELECT id, routing_key, body, fire_at_ms FROM delayed WHERE id = ?1",
                [id],
                delayed_from_row,
            )
            .optional()
            .db()
        })
        .await
    }

    async fn list_delayed(&self, after: Option<&str>, limit: u32) -> Result<Vec<DelayedMessage>> {
        let after = after.map(str::to_owned);
        self.call(move |conn| {
            let rows = match after {
                Some(after) => {
                    let mut stmt = conn.prepare_cached(DELAYED_AFTER_SQL).db()?;
                    let rows = stmt
                        .query_map(params![after, limit], delayed_from_row)
                        .db()?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                }
                None => {
                    let mut stmt = conn.prepare_cached(DELAYED_FIRST_SQL).db()?;
                    let rows = stmt.query_map([limit], delayed_from_row).db()?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                }
            };
            rows.db()
        })
        .await
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<serde_json::Value>> {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.call(move |conn| {
            conn.query_row(
                "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2",
                [namespace, key],
                |row| col_json(row, 0),
            )
            .optional()
            .db()
        })
        .await
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        let value = json_text(value)?;
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            )
            .db()?
            .execute([namespace, key, value])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.call(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM kv WHERE namespace = ?1 AND key = ?2",
                    [namespace, key],
                )
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn kv_list(&self, namespace: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let namespace = namespace.to_owned();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT key, value FROM kv WHERE namespace = ?1 ORDER BY key")
                .db()?;
            let rows = stmt
                .query_map([namespace], |row| Ok((row.get(0)?, col_json(row, 1)?)))
                .db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
        .await
    }

    async fn mark_seen(&self, namespace: &str, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let (namespace, id) = (namespace.to_owned(), id.to_owned());
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO seen (namespace, id, at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (namespace, id) DO NOTHING",
                )
                .db()?
                .execute([namespace, id, time_text(at)])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn purge_seen(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64> {
        let namespace = namespace.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM seen WHERE namespace = ?1 AND at < ?2",
                    [namespace, time_text(before)],
                )
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn record_delivery(&self, record: &DeliveryRecord) -> Result<bool> {
        let record = record.clone();
        self.call(move |conn| {
            let n = conn
                .prepare_cached(INSERT_DELIVERY_SQL)
                .db()?
                .execute(delivery_params(record))
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<Vec<bool>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let records = records.to_vec();
        self.call(move |conn| {
            // One transaction: one commit (one sync of the file) for the whole batch.
            let tx = conn.transaction().db()?;
            let mut new = Vec::with_capacity(records.len());
            {
                let mut insert = tx.prepare_cached(INSERT_DELIVERY_SQL).db()?;
                for record in records {
                    new.push(insert.execute(delivery_params(record)).db()? > 0);
                }
            }
            tx.commit().db()?;
            Ok(new)
        })
        .await
    }

    async fn get_delivery(
        &self,
        event: Uuid,
        im: &str,
        chat_id: &str,
    ) -> Result<Option<DeliveryRecord>> {
        let (im, chat_id) = (im.to_owned(), chat_id.to_owned());
        self.call(move |conn| {
            conn.query_row(
                "SELECT event, im, chat_id, status, at FROM deliveries
                 WHERE event = ?1 AND im = ?2 AND chat_id = ?3",
                [uuid_text(event), im, chat_id],
                |row| {
                    Ok(DeliveryRecord {
                        event: col_uuid(row, 0)?,
                        im: row.get(1)?,
                        chat_id: row.get(2)?,
                        status: row.get(3)?,
                        at: col_time(row, 4)?,
                    })
                },
            )
            .optional()
            .db()
        })
        .await
    }

    async fn delivered_chats(
        &self,
        event: Uuid,
        im: &str,
        chats: &[String],
    ) -> Result<HashSet<String>> {
        if chats.is_empty() {
            return Ok(HashSet::new());
        }
        let (im, chats) = (im.to_owned(), json_text(chats)?);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(DELIVERED_CHATS_SQL).db()?;
            let rows = stmt
                .query_map([uuid_text(event), im, chats], |row| row.get(0))
                .db()?;
            rows.collect::<rusqlite::Result<HashSet<String>>>().db()
        })
        .await
    }
}

/// Names which of a user's two unique keys collided.
fn user_conflict(e: rusqlite::Error, user: &User) -> StorageError {
    if !is_unique_violation(&e) {
        return db_error(e);
    }
    let message = e.to_string();
    if message.contains("users.im_chat_id") {
        StorageError::Conflict(format!("user with chat {}:{}", user.im, user.im_chat_id))
    } else {
        StorageError::Conflict(format!("user {}", user.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "SELECT user, entity, kinds FROM subscriptions WHERE user = ?1 ORDER BY entity",
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
