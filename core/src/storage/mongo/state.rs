//! MongoDB: key/value entries and seen windows ([`StateStore`]).

use super::*;
use crate::storage::{Lease, StateStore};

/// How often [`StateStore::lease_acquire`] retries when another writer changed the lease
/// between its read and its conditional write, before answering "held by another".
const LEASE_ATTEMPTS: usize = 3;

fn decode_lease(d: &Document) -> Result<Lease> {
    let epoch = match d.get("epoch") {
        Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
        Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
    .ok_or_else(|| corrupt("lease", d, "epoch", "is not a count"))?;
    Ok(Lease {
        name: get_string(d, "name", "lease")?,
        owner: get_string(d, "owner", "lease")?,
        until: get_time(d, "until", "lease")?,
        epoch,
    })
}

fn epoch_bson(epoch: u64) -> Bson {
    Bson::Int64(i64::try_from(epoch).unwrap_or(i64::MAX))
}

#[async_trait]
impl StateStore for MongoStorage {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<serde_json::Value>> {
        self.kv
            .find_one(doc! { "namespace": namespace, "key": key })
            .await
            .map_err(|e| db_err("reading a value", e))?
            .as_ref()
            .map(|d| decode_kv_value(d, namespace, key))
            .transpose()
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &serde_json::Value) -> Result<()> {
        // Stored as JSON text: any JSON value round-trips exactly (integers beyond i64,
        // object keys starting with `$` or holding dots), which a BSON document cannot promise.
        let text = serde_json::to_string(value)
            .map_err(|e| StorageError::Backend(format!("encoding value {namespace}/{key}: {e}")))?;
        let d = doc! { "namespace": namespace, "key": key, "value": text };
        upsert(
            &self.kv,
            doc! { "namespace": namespace, "key": key },
            d,
            "writing a value",
            || format!("value {namespace}/{key}"),
        )
        .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let result = self
            .kv
            .delete_one(doc! { "namespace": namespace, "key": key })
            .await
            .map_err(|e| db_err("deleting a value", e))?;
        Ok(result.deleted_count > 0)
    }

    async fn kv_list(&self, namespace: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let docs = find_all(
            &self.kv,
            doc! { "namespace": namespace },
            doc! { "key": 1 },
            "reading values",
        )
        .await?;
        docs.iter()
            .map(|d| {
                let key = get_string(d, "key", "value")?;
                let value = decode_kv_value(d, namespace, &key)?;
                Ok((key, value))
            })
            .collect()
    }

    async fn mark_seen(&self, namespace: &str, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let result = self
            .seen
            .update_one(
                doc! { "namespace": namespace, "id": id },
                doc! { "$setOnInsert": { "at": time_bson(at) } },
            )
            .upsert(true)
            .await;
        match result {
            Ok(r) => Ok(r.upserted_id.is_some()),
            // A concurrent first sighting won the insert: this one is a repeat.
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(db_err("recording a seen id", e)),
        }
    }

    async fn purge_seen(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64> {
        let result = self
            .seen
            .delete_many(doc! { "namespace": namespace, "at": { "$lt": time_bson(before) } })
            .await
            .map_err(|e| db_err("purging seen ids", e))?;
        Ok(result.deleted_count)
    }

    async fn lease_acquire(
        &self,
        namespace: &str,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Lease>> {
        // Read, then write on the condition that nothing changed since: a compare-and-set
        // on (owner, epoch, until), which needs no transaction and no pipeline update.
        let key = doc! { "namespace": namespace, "name": name };
        for _ in 0..LEASE_ATTEMPTS {
            let current = self
                .leases
                .find_one(key.clone())
                .await
                .map_err(|e| db_err("reading a lease", e))?;
            let Some(current) = current else {
                let fresh = doc! {
                    "namespace": namespace, "name": name, "owner": owner,
                    "until": time_bson(until), "epoch": epoch_bson(1),
                };
                match self.leases.insert_one(fresh).await {
                    Ok(_) => {
                        return Ok(Some(Lease {
                            name: name.to_owned(),
                            owner: owner.to_owned(),
                            until,
                            epoch: 1,
                        }))
                    }
                    // Another instance created it first: look again.
                    Err(e) if is_duplicate_key(&e) => continue,
                    Err(e) => return Err(db_err("taking a lease", e)),
                }
            };
            let lease = decode_lease(&current)?;
            let epoch = if lease.owner == owner {
                lease.epoch
            } else if lease.until < now {
                lease.epoch.saturating_add(1)
            } else {
                return Ok(None);
            };
            // Owner, epoch and term as read: a renewal in between changes the term, a
            // takeover the owner, so two writers cannot both match.
            let mut filter = key.clone();
            filter.insert("owner", &lease.owner);
            filter.insert("epoch", epoch_bson(lease.epoch));
            filter.insert("until", time_bson(lease.until));
            let update = doc! { "$set": {
                "owner": owner, "until": time_bson(until), "epoch": epoch_bson(epoch),
            } };
            let result = self
                .leases
                .update_one(filter, update)
                .await
                .map_err(|e| db_err("taking a lease", e))?;
            if result.matched_count == 1 {
                return Ok(Some(Lease {
                    name: name.to_owned(),
                    owner: owner.to_owned(),
                    until,
                    epoch,
                }));
            }
        }
        Ok(None)
    }

    async fn lease_release(&self, namespace: &str, name: &str, owner: &str) -> Result<bool> {
        // The document stays (with its epoch), its term ended at the epoch of time: the
        // next holder's epoch is still a new one.
        let result = self
            .leases
            .update_one(
                doc! { "namespace": namespace, "name": name, "owner": owner },
                doc! { "$set": { "until": time_bson(DateTime::UNIX_EPOCH) } },
            )
            .await
            .map_err(|e| db_err("releasing a lease", e))?;
        Ok(result.matched_count > 0)
    }

    async fn lease_list(&self, namespace: &str) -> Result<Vec<Lease>> {
        let docs = find_all(
            &self.leases,
            doc! { "namespace": namespace },
            doc! { "name": 1 },
            "reading leases",
        )
        .await?;
        docs.iter().map(decode_lease).collect()
    }

    async fn add_to_counter(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> Result<i64> {
        let id = doc! { "namespace": namespace, "key": key };
        let start = delta.max(0);
        // A new counter is one insert; a live one one atomic `$inc`; a stale one is
        // restarted by an update conditional on its age. A lost race on any of them is
        // tried again (each loss means another add went through).
        for _ in 0..5 {
            let mut fresh = id.clone();
            fresh.insert("count", start);
            fresh.insert("at", time_bson(now));
            match self.counters.insert_one(fresh).await {
                Ok(_) => return Ok(start),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(db_err("counting", e)),
            }
            let mut live = id.clone();
            live.insert("at", doc! { "$gte": time_bson(window_start) });
            let updated = self
                .counters
                .find_one_and_update(
                    live,
                    doc! { "$inc": { "count": delta }, "$set": { "at": time_bson(now) } },
                )
                .return_document(mongodb::options::ReturnDocument::After)
                .await
                .map_err(|e| db_err("counting", e))?;
            if let Some(d) = updated {
                let count = d.get_i64("count").map_err(|_| {
                    StorageError::Corrupt(format!(
                        "counter {namespace}/{key}: count is not a number"
                    ))
                })?;
                if count < 0 {
                    let mut negative = id.clone();
                    negative.insert("count", doc! { "$lt": 0 });
                    self.counters
                        .update_one(negative, doc! { "$set": { "count": 0_i64 } })
                        .await
                        .map_err(|e| db_err("counting", e))?;
                }
                return Ok(count.max(0));
            }
            let mut stale = id.clone();
            stale.insert("at", doc! { "$lt": time_bson(window_start) });
            let restarted = self
                .counters
                .update_one(
                    stale,
                    doc! { "$set": { "count": start, "at": time_bson(now) } },
                )
                .await
                .map_err(|e| db_err("counting", e))?;
            if restarted.matched_count == 1 {
                return Ok(start);
            }
        }
        Err(StorageError::Backend(format!(
            "counter {namespace}/{key} kept changing under concurrent writers"
        )))
    }

    async fn purge_counters(&self, namespace: &str, before: DateTime<Utc>) -> Result<u64> {
        let result = self
            .counters
            .delete_many(doc! { "namespace": namespace, "at": { "$lt": time_bson(before) } })
            .await
            .map_err(|e| db_err("purging counters", e))?;
        Ok(result.deleted_count)
    }
}
