//! MongoDB: delayed messages and their claims ([`DelayStore`]).
//!
//! MongoDB has no multi-document "update with a limit and return what changed", so a
//! claim is three steps: find candidate ids (earliest first, on the `fire_at_ms` index),
//! `update_many` those ids with the candidate filter checked again and a fresh claim
//! token, then read back by ids and token. Each document is updated atomically, so of
//! two instances claiming at once only one switches a given document, and only the
//! documents this call switched carry its token. Documents written before claims existed
//! have no `owner` (read as unclaimed: `{owner: null}` matches a missing field) and no
//! `revision` (read as 0).

use super::*;
use crate::storage::DelayStore;

/// Attempts at reading back what a claim switched before giving up. Giving up after an
/// update whose answer was lost leaves claims their owner does not know of: its renewals
/// keep them until it stops or dies (docs/ARCHITECTURE.md §5 middleware-delay).
const CLAIM_READ_BACK_ATTEMPTS: u32 = 5;

/// The filter "unclaimed, or its lease expired before `now_ms`".
fn claimable(now_ms: i64) -> Document {
    doc! { "$or": [ { "owner": Bson::Null }, { "lease_until_ms": { "$lt": now_ms } } ] }
}

#[async_trait]
impl DelayStore for MongoStorage {
    async fn put_delayed(
        &self,
        message: &DelayedMessage,
        lease: Option<&DelayLease>,
    ) -> Result<i64> {
        let revision = DelayedMessage::new_revision();
        let (owner, lease_until_ms) = match lease {
            Some(lease) => (Bson::String(lease.owner.clone()), lease.until_ms),
            None => (Bson::Null, 0),
        };
        // A whole-document replace: a stale `claim_token` does not survive it.
        let d = doc! {
            "_id": &message.id,
            "routing_key": &message.routing_key,
            "body": Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: message.body.clone() }),
            "fire_at_ms": message.fire_at_ms,
            "revision": revision,
            "owner": owner,
            "lease_until_ms": lease_until_ms,
        };
        upsert(
            &self.delayed,
            doc! { "_id": &message.id },
            d,
            "writing a delayed message",
            || format!("delayed message {}", message.id),
        )
        .await?;
        Ok(revision)
    }

    async fn delete_delayed(&self, id: &str) -> Result<bool> {
        let result = self
            .delayed
            .delete_one(doc! { "_id": id })
            .await
            .map_err(|e| db_err("deleting a delayed message", e))?;
        Ok(result.deleted_count > 0)
    }

    async fn delete_delayed_if(&self, id: &str, revision: i64) -> Result<bool> {
        let filter = if revision == 0 {
            // Revision 0 is how a document without the field reads.
            doc! { "_id": id, "revision": { "$in": [0_i64, Bson::Null] } }
        } else {
            doc! { "_id": id, "revision": revision }
        };
        let result = self
            .delayed
            .delete_one(filter)
            .await
            .map_err(|e| db_err("deleting a fired delayed message", e))?;
        Ok(result.deleted_count > 0)
    }

    async fn get_delayed(&self, id: &str) -> Result<Option<StoredDelayed>> {
        self.delayed
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| db_err("reading a delayed message", e))?
            .as_ref()
            .map(decode_stored_delayed)
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
        const CONTEXT: &str = "claiming delayed messages";
        let mut candidate_filter = claimable(now_ms);
        candidate_filter.insert("fire_at_ms", doc! { "$lt": due_before_ms });
        let candidates: Vec<Document> = self
            .delayed
            .find(candidate_filter.clone())
            .sort(doc! { "fire_at_ms": 1 })
            .limit(i64::from(limit))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(|e| db_err(CONTEXT, e))?
            .try_collect()
            .await
            .map_err(|e| db_err(CONTEXT, e))?;
        let ids: Vec<Bson> = candidates
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let token = Uuid::new_v4().simple().to_string();
        // Checked again per document: another instance may have claimed, or a writer
        // replaced, a candidate since it was found.
        candidate_filter.insert("_id", doc! { "$in": ids.clone() });
        let updated = self
            .delayed
            .update_many(
                candidate_filter,
                doc! { "$set": {
                    "owner": owner,
                    "lease_until_ms": lease_until_ms,
                    "claim_token": &token,
                } },
            )
            .await;
        if let Err(e) = &updated {
            // The update may have been applied even though its answer was lost; the
            // read-back below finds what it switched, so no claim is left unknown to its
            // owner (it would be renewed but never fired).
            tracing::warn!(cause = %e, "claim update failed; reading back what it switched");
        }
        let read_back = doc! { "_id": { "$in": ids }, "claim_token": &token, "owner": owner };
        let mut backoff = crate::backoff::Backoff::default();
        let mut attempts = 0;
        let docs: Vec<Document> = loop {
            attempts += 1;
            let found = async {
                self.delayed
                    .find(read_back.clone())
                    .projection(doc! { "_id": 1, "fire_at_ms": 1, "revision": 1 })
                    .await?
                    .try_collect::<Vec<Document>>()
                    .await
            }
            .await;
            match found {
                Ok(docs) => break docs,
                Err(e) if attempts >= CLAIM_READ_BACK_ATTEMPTS => return Err(db_err(CONTEXT, e)),
                Err(e) => {
                    tracing::warn!(cause = %e, attempts, "reading back claimed messages failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        if let Err(e) = updated {
            if docs.is_empty() {
                return Err(db_err(CONTEXT, e));
            }
        }
        let mut claimed = Vec::with_capacity(docs.len());
        for d in &docs {
            const WHAT: &str = "delayed message";
            let int = |field: &str| match d.get(field) {
                Some(Bson::Int64(n)) => Ok(*n),
                Some(Bson::Int32(n)) => Ok(i64::from(*n)),
                None | Some(Bson::Null) if field == "revision" => Ok(0),
                _ => Err(corrupt(WHAT, d, field, "is not an integer")),
            };
            let decoded = (|| {
                Ok::<_, StorageError>(ClaimedDelayed {
                    id: get_string(d, "_id", WHAT)?,
                    fire_at_ms: int("fire_at_ms")?,
                    revision: int("revision")?,
                })
            })();
            match decoded {
                Ok(c) => claimed.push(c),
                // Claimed but undecodable: left claimed, it lapses and is retried; the
                // firing would fail to decode it the same way.
                Err(err) => self.malformed.skip("delayed", &doc_id(d), &err),
            }
        }
        claimed.sort_by_key(|c| c.fire_at_ms);
        Ok(claimed)
    }

    async fn renew_delayed_claims(&self, owner: &str, lease_until_ms: i64) -> Result<u64> {
        let result = self
            .delayed
            .update_many(
                doc! { "owner": owner },
                doc! { "$set": { "lease_until_ms": lease_until_ms } },
            )
            .await
            .map_err(|e| db_err("renewing delayed message claims", e))?;
        Ok(result.matched_count)
    }

    async fn release_delayed_claims(&self, owner: &str) -> Result<u64> {
        let result = self
            .delayed
            .update_many(
                doc! { "owner": owner },
                doc! { "$set": { "owner": Bson::Null, "lease_until_ms": 0_i64 } },
            )
            .await
            .map_err(|e| db_err("releasing delayed message claims", e))?;
        Ok(result.modified_count)
    }
}
