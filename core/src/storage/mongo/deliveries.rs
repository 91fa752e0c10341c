//! MongoDB: the delivery log ([`DeliveryStore`]).

use super::*;
use crate::model::{ClaimState, DeliveryClaim, DELIVERY_CLAIMED};
use crate::storage::DeliveryStore;

#[async_trait]
impl DeliveryStore for MongoStorage {
    async fn record_delivery(&self, record: &DeliveryRecord) -> Result<bool> {
        let result = self.deliveries.insert_one(delivery_doc(record)).await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(self
                .settle_claims(std::slice::from_ref(record))
                .await?
                .first()
                .copied()
                .unwrap_or(false)),
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
                // Taken keys are settled if they are mere claims (the usual case: the bot
                // claimed before sending), in one update per (event, im, status).
                let mut new = vec![true; records.len()];
                let mut taken: Vec<usize> = errors.iter().map(|w| w.index).collect();
                taken.sort_unstable();
                taken.dedup();
                let taken_records: Vec<DeliveryRecord> = taken
                    .iter()
                    .filter_map(|&i| records.get(i).cloned())
                    .collect();
                let settled = self.settle_claims(&taken_records).await?;
                for (&i, settled) in taken.iter().zip(settled) {
                    if let Some(slot) = new.get_mut(i) {
                        *slot = settled;
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
        // Equality on `event` and `im` plus `$in` on `chat_id` walks the unique
        // `(event, im, chat_id)` index; mere claims are filtered out.
        for chunk in chats.chunks(CHATS_PER_DELIVERY_QUERY) {
            let docs = self
                .deliveries
                .find(doc! {
                    "event": uuid_bson(event),
                    "im": im,
                    "chat_id": { "$in": chunk },
                    "status": { "$ne": DELIVERY_CLAIMED },
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

    async fn claim_deliveries(
        &self,
        claim: &DeliveryClaim,
        chats: &[String],
    ) -> Result<Vec<ClaimState>> {
        if chats.is_empty() {
            return Ok(Vec::new());
        }
        let claim_doc = |chat: &String| {
            doc! {
                "event": uuid_bson(claim.event),
                "im": &claim.im,
                "chat_id": chat,
                "status": DELIVERY_CLAIMED,
                "at": time_bson(claim.now),
                "owner": &claim.owner,
                "lease_until": time_bson(claim.lease_until),
            }
        };
        // The usual case is one write: every chat new, claimed by one unordered insert.
        let result = self
            .deliveries
            .insert_many(chats.iter().map(claim_doc))
            .ordered(false)
            .await;
        let taken: HashSet<&str> = match result {
            Ok(_) => return Ok(vec![ClaimState::Won; chats.len()]),
            Err(e) => {
                let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
                    return Err(db_err("claiming deliveries", e));
                };
                let errors = failure.write_errors.as_deref().unwrap_or_default();
                if failure.write_concern_error.is_some()
                    || errors.iter().any(|w| w.code != DUPLICATE_KEY)
                {
                    return Err(db_err("claiming deliveries", e));
                }
                errors
                    .iter()
                    .filter_map(|w| chats.get(w.index).map(String::as_str))
                    .collect()
            }
        };
        // The chats already recorded: read them together, then take over (one conditional
        // update each, rare) the claims that are ours or whose lease ran out.
        let mut found: HashMap<String, Document> = HashMap::new();
        let taken_list: Vec<&str> = taken.iter().copied().collect();
        for chunk in taken_list.chunks(CHATS_PER_DELIVERY_QUERY) {
            let docs = self
                .deliveries
                .find(doc! {
                    "event": uuid_bson(claim.event),
                    "im": &claim.im,
                    "chat_id": { "$in": chunk },
                })
                .await
                .map_err(|e| db_err("reading claims", e))?
                .try_collect::<Vec<Document>>()
                .await
                .map_err(|e| db_err("reading claims", e))?;
            for d in docs {
                found.insert(get_string(&d, "chat_id", "delivery")?, d);
            }
        }
        let mut states = Vec::with_capacity(chats.len());
        let mut decided: HashMap<&str, ClaimState> = HashMap::new();
        for chat in chats {
            if let Some(state) = decided.get(chat.as_str()) {
                states.push(state.clone());
                continue;
            }
            let state = if !taken.contains(chat.as_str()) {
                ClaimState::Won
            } else {
                self.claim_taken(claim, chat, found.get(chat)).await?
            };
            decided.insert(chat, state.clone());
            states.push(state);
        }
        Ok(states)
    }

    async fn renew_claims(&self, im: &str, owner: &str, lease_until: DateTime<Utc>) -> Result<u64> {
        let result = self
            .deliveries
            .update_many(
                doc! { "im": im, "owner": owner, "status": DELIVERY_CLAIMED },
                doc! { "$set": { "lease_until": time_bson(lease_until) } },
            )
            .await
            .map_err(|e| db_err("renewing claims", e))?;
        Ok(result.matched_count)
    }

    async fn release_claims(&self, im: &str, owner: &str, event: Option<Uuid>) -> Result<u64> {
        let mut filter = doc! { "im": im, "owner": owner, "status": DELIVERY_CLAIMED };
        if let Some(event) = event {
            filter.insert("event", uuid_bson(event));
        }
        let result = self
            .deliveries
            .delete_many(filter)
            .await
            .map_err(|e| db_err("releasing claims", e))?;
        Ok(result.deleted_count)
    }
}

impl MongoStorage {
    /// Settles the taken keys of `records` that are mere claims, in one update per
    /// `(event, im, status)`: for each record, whether it settled its key.
    async fn settle_claims(&self, records: &[DeliveryRecord]) -> Result<Vec<bool>> {
        let mut groups: HashMap<(Uuid, &str, &str), Vec<&str>> = HashMap::new();
        for record in records {
            groups
                .entry((record.event, &record.im, &record.status))
                .or_default()
                .push(&record.chat_id);
        }
        let mut settled: HashSet<(Uuid, &str, &str)> = HashSet::new();
        for ((event, im, status), chats) in groups {
            // Which are claims: only those are settled (and answered new).
            let filter = doc! {
                "event": uuid_bson(event),
                "im": im,
                "chat_id": { "$in": &chats },
                "status": DELIVERY_CLAIMED,
            };
            let claimed = self
                .deliveries
                .find(filter.clone())
                .projection(doc! { "_id": 0, "chat_id": 1 })
                .await
                .map_err(|e| db_err("reading claims", e))?
                .try_collect::<Vec<Document>>()
                .await
                .map_err(|e| db_err("reading claims", e))?;
            if claimed.is_empty() {
                continue;
            }
            let at = records
                .iter()
                .find(|r| r.event == event && r.im == im && r.status == status)
                .map_or_else(Utc::now, |r| r.at);
            self.deliveries
                .update_many(
                    filter,
                    doc! {
                        "$set": { "status": status, "at": time_bson(at) },
                        "$unset": { "lease_until": "" },
                    },
                )
                .await
                .map_err(|e| db_err("settling claims", e))?;
            for d in &claimed {
                let chat = get_string(d, "chat_id", "delivery")?;
                if let Some(chat) = chats.iter().find(|c| **c == chat) {
                    settled.insert((event, im, chat));
                }
            }
        }
        // Of two equal keys, the first settles it.
        let mut seen: HashSet<(Uuid, &str, &str)> = HashSet::new();
        Ok(records
            .iter()
            .map(|r| {
                let key = (r.event, r.im.as_str(), r.chat_id.as_str());
                settled.contains(&key) && seen.insert(key)
            })
            .collect())
    }

    /// The claim of `chat`, which has a record (`found`, as read): taken over when it is
    /// `claim.owner`'s or its lease ran out, by an update conditional on the lease read, so
    /// of two instances taking it over one wins.
    async fn claim_taken(
        &self,
        claim: &DeliveryClaim,
        chat: &str,
        found: Option<&Document>,
    ) -> Result<ClaimState> {
        let mut found = found.cloned();
        // A record changed between the read and the update is read again; a few rounds
        // settle any race (each lost round means another writer made progress).
        for _ in 0..3 {
            let Some(d) = found.as_ref() else {
                // Released meanwhile: claim it afresh.
                return match self
                    .deliveries
                    .insert_one(doc! {
                        "event": uuid_bson(claim.event),
                        "im": &claim.im,
                        "chat_id": chat,
                        "status": DELIVERY_CLAIMED,
                        "at": time_bson(claim.now),
                        "owner": &claim.owner,
                        "lease_until": time_bson(claim.lease_until),
                    })
                    .await
                {
                    Ok(_) => Ok(ClaimState::Won),
                    Err(e) if is_duplicate_key(&e) => {
                        found = self.read_claim(claim, chat).await?;
                        continue;
                    }
                    Err(e) => Err(db_err("claiming a delivery", e)),
                };
            };
            let status = get_string(d, "status", "delivery")?;
            if status != DELIVERY_CLAIMED {
                return Ok(ClaimState::Settled(status));
            }
            let owner = get_opt_string(d, "owner", "delivery")?.unwrap_or_default();
            let lease = match d.get("lease_until") {
                Some(Bson::DateTime(t)) => Some(t.to_chrono()),
                _ => None,
            };
            let takeable = owner == claim.owner || lease.is_none_or(|l| l <= claim.now);
            if !takeable {
                return Ok(ClaimState::Held {
                    owner,
                    lease_until: lease.unwrap_or(claim.now),
                });
            }
            let mut filter = doc! {
                "event": uuid_bson(claim.event),
                "im": &claim.im,
                "chat_id": chat,
                "status": DELIVERY_CLAIMED,
                "owner": d.get("owner").cloned().unwrap_or(Bson::Null),
            };
            filter.insert(
                "lease_until",
                d.get("lease_until").cloned().unwrap_or(Bson::Null),
            );
            let updated = self
                .deliveries
                .update_one(
                    filter,
                    doc! { "$set": {
                        "owner": &claim.owner,
                        "lease_until": time_bson(claim.lease_until),
                        "at": time_bson(claim.now),
                    } },
                )
                .await
                .map_err(|e| db_err("taking over a claim", e))?;
            if updated.matched_count == 1 {
                return Ok(ClaimState::Won);
            }
            found = self.read_claim(claim, chat).await?;
        }
        // Still racing: report what is there now; the caller asks again later.
        let d = self.read_claim(claim, chat).await?;
        Ok(match d {
            Some(d) if get_string(&d, "status", "delivery")? != DELIVERY_CLAIMED => {
                ClaimState::Settled(get_string(&d, "status", "delivery")?)
            }
            Some(d) => ClaimState::Held {
                owner: get_opt_string(&d, "owner", "delivery")?.unwrap_or_default(),
                lease_until: match d.get("lease_until") {
                    Some(Bson::DateTime(t)) => t.to_chrono(),
                    _ => claim.now,
                },
            },
            None => ClaimState::Held {
                owner: String::new(),
                lease_until: claim.now,
            },
        })
    }

    async fn read_claim(&self, claim: &DeliveryClaim, chat: &str) -> Result<Option<Document>> {
        self.deliveries
            .find_one(doc! {
                "event": uuid_bson(claim.event),
                "im": &claim.im,
                "chat_id": chat,
            })
            .await
            .map_err(|e| db_err("reading a claim", e))
    }
}
