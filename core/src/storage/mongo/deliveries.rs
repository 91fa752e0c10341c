//! MongoDB: the delivery log ([`DeliveryStore`]).

use super::*;
use crate::storage::DeliveryStore;

#[async_trait]
impl DeliveryStore for MongoStorage {
    async fn record_delivery(&self, record: &DeliveryRecord) -> Result<bool> {
        let result = self.deliveries.insert_one(delivery_doc(record)).await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(db_err("recording a delivery", e)),
        }
    }

    async fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<Vec<bool>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Unordered: a record already in the log must not stop the ones after it.
        let result = self
            .deliveries
            .insert_many(records.iter().map(delivery_doc))
            .ordered(false)
            .await;
        let e = match result {
            Ok(_) => return Ok(vec![true; records.len()]),
            Err(e) => e,
        };
        if let ErrorKind::InsertMany(failure) = e.kind.as_ref() {
            let errors = failure.write_errors.as_deref().unwrap_or_default();
            let only_duplicates = failure.write_concern_error.is_none()
                && errors.iter().all(|w| w.code == DUPLICATE_KEY);
            if only_duplicates {
                let mut new = vec![true; records.len()];
                for error in errors {
                    if let Some(slot) = new.get_mut(error.index) {
                        *slot = false;
                    }
                }
                return Ok(new);
            }
        }
        Err(db_err("recording deliveries", e))
    }

    async fn get_delivery(
        &self,
        event: Uuid,
        im: &str,
        chat_id: &str,
    ) -> Result<Option<DeliveryRecord>> {
        let Some(d) = self
            .deliveries
            .find_one(doc! { "event": uuid_bson(event), "im": im, "chat_id": chat_id })
            .await
            .map_err(|e| db_err("reading a delivery", e))?
        else {
            return Ok(None);
        };
        const WHAT: &str = "delivery";
        Ok(Some(DeliveryRecord {
            event: get_uuid(&d, "event", WHAT)?,
            im: get_string(&d, "im", WHAT)?,
            chat_id: get_string(&d, "chat_id", WHAT)?,
            status: get_string(&d, "status", WHAT)?,
            at: get_time(&d, "at", WHAT)?,
        }))
    }

    async fn delivered_chats(
        &self,
        event: Uuid,
        im: &str,
        chats: &[String],
    ) -> Result<HashSet<String>> {
        let mut delivered = HashSet::new();
        // Equality on `event` and `im` plus `$in` on `chat_id` is answered from the unique
        // `(event, im, chat_id)` index alone (the projection keeps it covered).
        for chunk in chats.chunks(CHATS_PER_DELIVERY_QUERY) {
            let docs = self
                .deliveries
                .find(doc! {
                    "event": uuid_bson(event),
                    "im": im,
                    "chat_id": { "$in": chunk },
                })
                .projection(doc! { "_id": 0, "chat_id": 1 })
                .await
                .map_err(|e| db_err("reading deliveries", e))?
                .try_collect::<Vec<Document>>()
                .await
                .map_err(|e| db_err("reading deliveries", e))?;
            for d in &docs {
                delivered.insert(get_string(d, "chat_id", "delivery")?);
            }
        }
        Ok(delivered)
    }
}
