//! SQLite: the delivery log ([`DeliveryStore`]).

use super::*;
use crate::model::{ClaimState, DeliveryClaim, DELIVERY_CLAIMED};
use crate::storage::DeliveryStore;

#[async_trait]
impl DeliveryStore for SqliteStorage {
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

    async fn claim_deliveries(
        &self,
        claim: &DeliveryClaim,
        chats: &[String],
    ) -> Result<Vec<ClaimState>> {
        if chats.is_empty() {
            return Ok(Vec::new());
        }
        let (claim, chats) = (claim.clone(), chats.to_vec());
        self.call(move |conn| {
            // One transaction: one commit for the whole batch, and no other writer between
            // a lost claim and the read saying who holds it.
            let tx = conn.transaction().db()?;
            let mut states = Vec::with_capacity(chats.len());
            {
                let mut insert = tx.prepare_cached(CLAIM_DELIVERY_SQL).db()?;
                let mut read = tx
                    .prepare_cached(
                        "SELECT status, owner, lease_until FROM deliveries
                         WHERE event = ?1 AND im = ?2 AND chat_id = ?3",
                    )
                    .db()?;
                let (event, now, lease) = (
                    uuid_text(claim.event),
                    time_text(claim.now),
                    time_text(claim.lease_until),
                );
                for chat in chats {
                    let won = insert
                        .execute([&event, &claim.im, &chat, &now, &claim.owner, &lease])
                        .db()?
                        > 0;
                    if won {
                        states.push(ClaimState::Won);
                        continue;
                    }
                    let state = read
                        .query_row([&event, &claim.im, &chat], |row| {
                            let status: String = row.get(0)?;
                            if status != DELIVERY_CLAIMED {
                                return Ok(ClaimState::Settled(status));
                            }
                            Ok(ClaimState::Held {
                                owner: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                                lease_until: col_time(row, 2)?,
                            })
                        })
                        .db()?;
                    states.push(state);
                }
            }
            tx.commit().db()?;
            Ok(states)
        })
        .await
    }

    async fn renew_claims(&self, im: &str, owner: &str, lease_until: DateTime<Utc>) -> Result<u64> {
        let (im, owner) = (im.to_owned(), owner.to_owned());
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE deliveries SET lease_until = ?3
                     WHERE im = ?1 AND owner = ?2 AND status = 'claimed'",
                )
                .db()?
                .execute([im, owner, time_text(lease_until)])
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn release_claims(&self, im: &str, owner: &str, event: Option<Uuid>) -> Result<u64> {
        let (im, owner) = (im.to_owned(), owner.to_owned());
        self.call(move |conn| {
            let n = match event {
                Some(event) => conn
                    .prepare_cached(
                        "DELETE FROM deliveries
                         WHERE im = ?1 AND owner = ?2 AND event = ?3 AND status = 'claimed'",
                    )
                    .db()?
                    .execute([im, owner, uuid_text(event)])
                    .db()?,
                None => conn
                    .prepare_cached(
                        "DELETE FROM deliveries
                         WHERE im = ?1 AND owner = ?2 AND status = 'claimed'",
                    )
                    .db()?
                    .execute([im, owner])
                    .db()?,
            };
            Ok(n as u64)
        })
        .await
    }
}
