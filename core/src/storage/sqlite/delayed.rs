//! SQLite: delayed messages ([`DelayStore`]).

use super::*;
use crate::storage::DelayStore;

#[async_trait]
impl DelayStore for SqliteStorage {
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
}
