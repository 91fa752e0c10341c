//! MongoDB: delayed messages ([`DelayStore`]).

use super::*;
use crate::storage::DelayStore;

#[async_trait]
impl DelayStore for MongoStorage {
    async fn put_delayed(&self, message: &DelayedMessage) -> Result<()> {
        let d = doc! {
            "_id": &message.id,
            "routing_key": &message.routing_key,
            "body": Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: message.body.clone() }),
            "fire_at_ms": message.fire_at_ms,
        };
        upsert(
            &self.delayed,
            doc! { "_id": &message.id },
            d,
            "writing a delayed message",
            || format!("delayed message {}", message.id),
        )
        .await
    }

    async fn delete_delayed(&self, id: &str) -> Result<bool> {
        let result = self
            .delayed
            .delete_one(doc! { "_id": id })
            .await
            .map_err(|e| db_err("deleting a delayed message", e))?;
        Ok(result.deleted_count > 0)
    }

    async fn get_delayed(&self, id: &str) -> Result<Option<DelayedMessage>> {
        self.delayed
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| db_err("reading a delayed message", e))?
            .as_ref()
            .map(decode_delayed)
            .transpose()
    }

    async fn list_delayed(&self, after: Option<&str>, limit: u32) -> Result<Vec<DelayedMessage>> {
        // A limit of 0 means "no limit" to MongoDB.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match after {
            Some(after) => doc! { "_id": { "$gt": after } },
            None => doc! {},
        };
        let docs: Vec<Document> = self
            .delayed
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(i64::from(limit))
            .await
            .map_err(|e| db_err("reading delayed messages", e))?
            .try_collect()
            .await
            .map_err(|e| db_err("reading delayed messages", e))?;
        docs.iter().map(decode_delayed).collect()
    }
}
