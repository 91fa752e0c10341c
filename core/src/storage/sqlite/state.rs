//! SQLite: key/value entries and seen windows ([`StateStore`]).

use super::*;
use crate::storage::StateStore;

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
