//! SQLite: errors, columns, row mappers, entity helpers and the hot queries' SQL.

use super::*;

// ---------------------------------------------------------------- errors and columns

/// Converts rusqlite results into storage results.
pub(super) trait Db<T> {
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
pub(super) fn db_error(e: rusqlite::Error) -> StorageError {
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
pub(super) fn in_record(e: StorageError, what: &str, id: impl std::fmt::Display) -> StorageError {
    match e {
        StorageError::Corrupt(detail) => StorageError::Corrupt(format!("{what} {id}: {detail}")),
        other => other,
    }
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

pub(super) fn conversion(
    column: usize,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(cause))
}

pub(super) fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// Fixed width (nanoseconds, `Z`), so comparing texts compares times for years 0–9999.
pub(super) fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(super) fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StorageError::Backend(format!("cannot encode value as JSON: {e}")))
}

pub(super) fn col_uuid(row: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(i)?;
    Uuid::parse_str(&text).map_err(|e| conversion(i, e))
}

pub(super) fn col_opt_uuid(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    let text: Option<String> = row.get(i)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| conversion(i, e)))
        .transpose()
}

pub(super) fn col_time(row: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(i)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| conversion(i, e))
}

pub(super) fn col_json<T: DeserializeOwned>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| conversion(i, e))
}

/// A row's key column as text whatever its type, to name a row that does not decode.
pub(super) fn row_id(row: &Row<'_>, i: usize) -> String {
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
pub(super) type Lenient<T> = std::result::Result<T, (String, StorageError)>;

/// Decodes a row with `decode`, turning a decoding failure into a value (naming the row
/// by its columns `key`) so one bad row does not fail a whole listing.
pub(super) fn lenient<T>(
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
pub(super) fn keep_decoded<T>(
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

pub(super) const ENTITY_COLUMNS: &str = "id, names, default_language, group_id, translate_to";

pub(super) fn entity_from_row(row: &Row<'_>) -> rusqlite::Result<Entity> {
    Ok(Entity {
        id: col_uuid(row, 0)?,
        names: col_json(row, 1)?,
        default_language: row.get(2)?,
        group: col_opt_uuid(row, 3)?,
        translate_to: col_json(row, 4)?,
        tasks: Vec::new(),
    })
}

pub(super) const TASK_COLUMNS: &str = "id, entity, params";

pub(super) fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: col_uuid(row, 0)?,
        entity: col_uuid(row, 1)?,
        params: col_json::<TaskParams>(row, 2)?,
    })
}

pub(super) const USER_COLUMNS: &str = "id, im, im_chat_id, name, language, settings, created_at";

pub(super) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
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

pub(super) const SESSION_COLUMNS: &str = "token_hash, user, created_at, expires_at, max_expires_at";

pub(super) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        token_hash: row.get(0)?,
        user: col_uuid(row, 1)?,
        created_at: col_time(row, 2)?,
        expires_at: col_time(row, 3)?,
        max_expires_at: col_time(row, 4)?,
    })
}

pub(super) fn credential_from_row(row: &Row<'_>) -> rusqlite::Result<Credential> {
    Ok(Credential {
        username: row.get(0)?,
        hash: row.get(1)?,
        permissions: col_json(row, 2)?,
        queues: col_json(row, 3)?,
    })
}

pub(super) fn delayed_from_row(row: &Row<'_>) -> rusqlite::Result<DelayedMessage> {
    Ok(DelayedMessage {
        id: row.get(0)?,
        routing_key: row.get(1)?,
        body: row.get(2)?,
        fire_at_ms: row.get(3)?,
    })
}

/// A row of [`DELAYED_GET_SQL`]: the message, its revision and claim.
pub(super) fn stored_delayed_from_row(row: &Row<'_>) -> rusqlite::Result<StoredDelayed> {
    let owner: Option<String> = row.get(5)?;
    let lease_until_ms: i64 = row.get(6)?;
    Ok(StoredDelayed {
        message: delayed_from_row(row)?,
        revision: row.get(4)?,
        lease: owner.map(|owner| DelayLease {
            owner,
            until_ms: lease_until_ms,
        }),
    })
}

// ---------------------------------------------------------------- entity helpers

pub(super) fn insert_task(tx: &Transaction<'_>, task: &Task, position: usize) -> Result<()> {
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
pub(super) fn is_account_violation(e: &rusqlite::Error) -> bool {
    is_unique_violation(e) && e.to_string().contains("tasks.account")
}

/// The `Conflict` for a task whose account another task already watches, naming the
/// account and (when it can be read) the entity that owns it.
pub(super) fn account_conflict(conn: &Connection, task: &Task) -> StorageError {
    let owner: Option<String> = conn
        .query_row(
            "SELECT entity FROM tasks WHERE kind = ?1 AND account = ?2",
            [task.kind().as_str(), task.params.source_id()],
            |row| row.get(0),
        )
        .optional()
        .ok()
        .flatten();
    StorageError::Conflict(crate::storage::account_taken(task, owner.as_deref()))
}

pub(super) fn write_entity_row(
    tx: &Transaction<'_>,
    entity: &Entity,
    insert: bool,
) -> Result<usize> {
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
pub(super) fn tasks_of(
    conn: &Connection,
    entity: Uuid,
    malformed: &MalformedRecords,
) -> Result<Vec<Task>> {
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
pub(super) const SUBSCRIBERS_SQL: &str = "
SELECT u.id, u.im, u.im_chat_id, u.name, u.language, u.settings, u.created_at, s.entity, s.kinds,
       s.mention
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
pub(super) const DELAYED_AFTER_SQL: &str =
    "SELECT id, routing_key, body, fire_at_ms FROM delayed WHERE id > ?1 ORDER BY id LIMIT ?2";

/// The first page of [`DELAYED_AFTER_SQL`].
pub(super) const DELAYED_FIRST_SQL: &str =
    "SELECT id, routing_key, body, fire_at_ms FROM delayed ORDER BY id LIMIT ?1";

/// One message with its revision and claim.
pub(super) const DELAYED_GET_SQL: &str = "SELECT id, routing_key, body, fire_at_ms, revision, \
     owner, lease_until_ms FROM delayed WHERE id = ?1";

/// Claims in one statement (so atomically): the earliest `?5` messages due before `?3`
/// that are unclaimed or whose lease expired before `?4` go to `?1` until `?2`. The
/// candidates are found by walking the fire-time index.
pub(super) const CLAIM_DELAYED_SQL: &str = "
UPDATE delayed SET owner = ?1, lease_until_ms = ?2
WHERE id IN (
    SELECT id FROM delayed
    WHERE fire_at_ms < ?3 AND (owner IS NULL OR lease_until_ms < ?4)
    ORDER BY fire_at_ms LIMIT ?5
)
RETURNING id, fire_at_ms, revision";

/// Logs one settled delivery unless `(event, im, chat_id)` already is settled (then
/// nothing changes); a mere claim is settled by it (the lease goes, the owner stays).
pub(super) const INSERT_DELIVERY_SQL: &str = "
INSERT INTO deliveries (event, im, chat_id, status, at) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (event, im, chat_id) DO UPDATE
SET status = excluded.status, at = excluded.at, lease_until = NULL
WHERE deliveries.status = 'claimed'";

/// Claims `(event, im, chat_id)` (?1–?3) for owner ?5 until ?6 at time ?4: a new row, or
/// an unsettled claim of the same owner or whose lease ended by ?4 taken over. Changes
/// one row exactly when the claim is won.
pub(super) const CLAIM_DELIVERY_SQL: &str = "
INSERT INTO deliveries (event, im, chat_id, status, at, owner, lease_until)
VALUES (?1, ?2, ?3, 'claimed', ?4, ?5, ?6)
ON CONFLICT (event, im, chat_id) DO UPDATE
SET owner = excluded.owner, lease_until = excluded.lease_until, at = excluded.at
WHERE deliveries.status = 'claimed'
  AND (deliveries.owner IS excluded.owner OR deliveries.lease_until IS NULL
       OR deliveries.lease_until <= excluded.at)";

/// The parameters of [`INSERT_DELIVERY_SQL`].
pub(super) fn delivery_params(record: DeliveryRecord) -> [String; 5] {
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
pub(super) const DELIVERED_CHATS_SQL: &str = "
SELECT chat_id FROM deliveries
WHERE event = ?1 AND im = ?2 AND chat_id IN (SELECT value FROM json_each(?3))
  AND status <> 'claimed'";

/// Names which of a user's two unique keys collided.
pub(super) fn user_conflict(e: rusqlite::Error, user: &User) -> StorageError {
    if !is_unique_violation(&e) {
        return db_error(e);
    }
    let on_chat = e.to_string().contains("users.im_chat_id");
    StorageError::Conflict(crate::storage::user_taken(user, on_chat))
}
