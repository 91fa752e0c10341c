//! SQLite: delayed messages ([`DelayStore`]).

use super::*;
use crate::storage::DelayStore;

#[async_trait]
impl DelayStore for SqliteStorage {
    async fn put_delayed(
        &self,
        message: &DelayedMessage,
        lease: Option<&DelayLease>,
    ) -> Result<i64> {
        let message = message.clone();
        let (owner, lease_until_ms) = match lease {
            Some(lease) => (Some(lease.owner.clone()), lease.until_ms),
            None => (None, 0),
        };
        let revision = DelayedMessage::new_revision();
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO delayed (id, routing_key, body, fire_at_ms, owner, lease_until_ms, revision)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET routing_key = excluded.routing_key,
                     body = excluded.body, fire_at_ms = excluded.fire_at_ms,
                     owner = excluded.owner, lease_until_ms = excluded.lease_until_ms,
                     revision = excluded.revision",
            )
            .db()?
            .execute(params![
                message.id,
                message.routing_key,
                message.body,
                message.fire_at_ms,
                owner,
                lease_until_ms,
                revision
            ])
            .db()?;
            Ok(revision)
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

    async fn delete_delayed_if(&self, id: &str, revision: i64) -> Result<bool> {
        let id = id.to_owned();
        self.call(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM delayed WHERE id = ?1 AND revision = ?2")
                .db()?
                .execute(params![id, revision])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_delayed(&self, id: &str) -> Result<Option<StoredDelayed>> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.prepare_cached(DELAYED_GET_SQL)
                .db()?
                .query_row([id], stored_delayed_from_row)
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

    async fn claim_delayed(
        &self,
        owner: &str,
        due_before_ms: i64,
        lease_until_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelayed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(CLAIM_DELAYED_SQL).db()?;
            let rows = stmt
                .query_map(
                    params![owner, lease_until_ms, due_before_ms, now_ms, limit],
                    |row| {
                        Ok(ClaimedDelayed {
                            id: row.get(0)?,
                            fire_at_ms: row.get(1)?,
                            revision: row.get(2)?,
                        })
                    },
                )
                .db()?;
            let mut claimed = rows.collect::<rusqlite::Result<Vec<_>>>().db()?;
            // RETURNING gives rows in no promised order.
            claimed.sort_by_key(|c| c.fire_at_ms);
            Ok(claimed)
        })
        .await
    }

    async fn renew_delayed_claims(&self, owner: &str, lease_until_ms: i64) -> Result<u64> {
        let owner = owner.to_owned();
        self.call(move |conn| {
            let n = conn
                .prepare_cached("UPDATE delayed SET lease_until_ms = ?2 WHERE owner = ?1")
                .db()?
                .execute(params![owner, lease_until_ms])
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn release_delayed_claims(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE delayed SET owner = NULL, lease_until_ms = 0 WHERE owner = ?1",
                )
                .db()?
                .execute([owner])
                .db()?;
            Ok(n as u64)
        })
        .await
    }
}
