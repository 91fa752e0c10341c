//! SQLite: key/value entries and seen windows ([`StateStore`]).

use super::*;
use crate::storage::{Lease, StateStore};

/// A lease row's `until` in unix milliseconds: integers compare exactly in SQL.
fn until_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn lease_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    let until: i64 = row.get(2)?;
    let epoch: i64 = row.get(3)?;
    Ok(Lease {
        name: row.get(0)?,
        owner: row.get(1)?,
        until: DateTime::<Utc>::from_timestamp_millis(until).unwrap_or(DateTime::UNIX_EPOCH),
        epoch: u64::try_from(epoch).unwrap_or(0),
    })
}

#[async_trait]
impl StateStore for SqliteStorage {
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

    async fn lease_acquire(
        &self,
        namespace: &str,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Lease>> {
        let (namespace, name, owner) = (namespace.to_owned(), name.to_owned(), owner.to_owned());
        let (now, until) = (until_ms(now), until_ms(until));
        self.call(move |conn| {
            // One statement decides and writes, so other processes on the same file see
            // either the old holder or the new one: the row is inserted when absent,
            // taken over (a new epoch) when its term ended before `now`, renewed (same
            // epoch) when `owner` holds it, and left alone otherwise.
            conn.prepare_cached(
                "INSERT INTO leases (namespace, name, owner, until_ms, epoch)
                 VALUES (?1, ?2, ?3, ?5, 1)
                 ON CONFLICT (namespace, name) DO UPDATE SET
                     epoch = CASE WHEN owner = excluded.owner THEN epoch ELSE epoch + 1 END,
                     owner = excluded.owner,
                     until_ms = excluded.until_ms
                 WHERE owner = excluded.owner OR until_ms < ?4",
            )
            .db()?
            .execute(params![namespace, name, owner, now, until])
            .db()?;
            let lease = conn
                .query_row(
                    "SELECT name, owner, until_ms, epoch FROM leases
                     WHERE namespace = ?1 AND name = ?2",
                    [&namespace, &name],
                    lease_from_row,
                )
                .optional()
                .db()?;
            // The statement wrote the row exactly when `owner` holds it now.
            Ok(lease.filter(|lease| lease.owner == owner))
        })
        .await
    }

    async fn add_to_counter(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> Result<i64> {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.call(move |conn| {
            // One statement: SQLite runs it under its single writer, so concurrent adds
            // from any number of connections each see the others.
            conn.prepare_cached(
                "INSERT INTO counters (namespace, key, count, at) VALUES (?1, ?2, max(?3, 0), ?4)
                 ON CONFLICT (namespace, key) DO UPDATE
                 SET count = max(0, CASE WHEN counters.at >= ?5 THEN counters.count ELSE 0 END + ?3),
                     at = ?4
                 RETURNING count",
            )
            .db()?
            .query_row(
                params![namespace, key, delta, time_text(now), time_text(window_start)],
                |row| row.get(0),
            )
            .db()
        })
        .await
    }

    async fn lease_release(&self, namespace: &str, name: &str, owner: &str) -> Result<bool> {
        let (namespace, name, owner) = (namespace.to_owned(), name.to_owned(), owner.to_owned());
        self.call(move |conn| {
            // The row stays (with its epoch), its term ended at the epoch of time: the
            // next holder's epoch is still a new one.
            let n = conn
                .prepare_cached(
                    "UPDATE leases SET until_ms = ?4
                     WHERE namespace = ?1 AND name = ?2 AND owner = ?3",
                )
                .db()?
                .execute(params![namespace, name, owner, 0])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn lease_list(&self, namespace: &str) -> Result<Vec<Lease>> {
        let namespace = namespace.to_owned();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, owner, until_ms, epoch FROM leases
                     WHERE namespace = ?1 ORDER BY name",
                )
                .db()?;
            let rows = stmt.query_map([namespace], lease_from_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
        .await
    }

    async fn purge_counters(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64> {
        let namespace = namespace.to_owned();
        self.call(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM counters WHERE namespace = ?1 AND at < ?2")
                .db()?
                .execute([namespace, time_text(before)])
                .db()?;
            Ok(n as u64)
        })
        .await
    }
}
