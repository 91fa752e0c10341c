//! How N live-check instances share the held videos (docs/ARCHITECTURE.md §5
//! middleware-live-check): the videos are split into fixed shards by a hash of the video
//! id, and each shard is polled by the one instance holding its lease in the state store.
//!
//! Leases live in the lease namespace named like the held events' key/value namespace:
//! `shard.NNNN` for each shard and `member.<owner>` for each running instance. Every
//! `term / 3` an instance renews its membership, counts the live members, and takes or
//! gives up shards so that it holds its fair share, `ceil(shards / members)`: surplus
//! shards are released (the others take them at their next round), free or run-out ones
//! are acquired. An instance that dies stops renewing; its leases run out after one term
//! and the survivors' next round takes them over. A graceful stop releases everything at
//! once.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use stargazer_core::storage::{Lease, StateStore, StorageError};
use stargazer_core::sync::lock;
use stargazer_core::wait::sleep_unless_cancelled;
use stargazer_core::CancellationToken;

/// Prefix of the shard leases' names (`shard.0007`).
const SHARD_PREFIX: &str = "shard.";
/// Prefix of the instances' membership leases' names (`member.<owner>`).
const MEMBER_PREFIX: &str = "member.";

/// Claim settings.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// Whether shards are claimed at all; without claims every instance polls every
    /// held video (one instance only: with more, each video is polled and released by
    /// every instance).
    pub enabled: bool,
    /// How many shards the held videos are split into; every instance must agree.
    pub shards: u32,
    /// A lease's term; renewed every third of it.
    pub term: Duration,
    /// The lease namespace.
    pub namespace: String,
    /// This instance's name as a lease owner: unique per process, so that a restarted
    /// instance is a new member.
    pub owner: String,
}

/// The shard of `video`: FNV-1a over the id's bytes, so every instance (and every build)
/// agrees, unlike the standard library's hasher whose algorithm may change.
pub fn shard_of(video: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in video.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below `shards`, a u32.
    u32::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
}

/// The lease name of `shard`.
pub fn shard_lease_name(shard: u32) -> String {
    format!("{SHARD_PREFIX}{shard:04}")
}

fn parse_shard(name: &str) -> Option<u32> {
    name.strip_prefix(SHARD_PREFIX)?.parse().ok()
}

/// This instance's claims on shards.
pub(crate) struct Claims {
    storage: Arc<dyn StateStore>,
    options: ClaimOptions,
    // A std Mutex: only map operations under it, never an `.await`. Shard → the end of
    // this instance's term on it, as granted by the store.
    held: Mutex<BTreeMap<u32, DateTime<Utc>>>,
}

impl Claims {
    /// Claims for the instance `options.owner`.
    pub(crate) fn new(storage: Arc<dyn StateStore>, options: ClaimOptions) -> Self {
        Self {
            storage,
            options,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    fn held(&self) -> MutexGuard<'_, BTreeMap<u32, DateTime<Utc>>> {
        lock(&self.held)
    }

    /// How many shards the videos are split into.
    pub(crate) fn shards(&self) -> u32 {
        self.options.shards.max(1)
    }

    /// Whether this instance may poll and release the videos of `shard` at `now`: its
    /// term on the shard runs beyond `now` (always, with claims off).
    pub(crate) fn owns(&self, shard: u32, now: DateTime<Utc>) -> bool {
        !self.options.enabled || self.held().get(&shard).is_some_and(|until| *until > now)
    }

    /// How many shards this instance holds now.
    pub(crate) fn held_count(&self) -> usize {
        let now = Utc::now();
        self.held().values().filter(|until| **until > now).count()
    }

    fn member_name(&self) -> String {
        format!("{MEMBER_PREFIX}{}", self.options.owner)
    }

    fn term(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.options.term).unwrap_or(chrono::Duration::minutes(1))
    }

    /// One round: renew the membership, count the live members, give up the surplus,
    /// renew the rest and take free shards up to the fair share. On an error the shards
    /// already known stay held until their terms run out (and are polled until then).
    pub(crate) async fn round(&self) -> Result<(), StorageError> {
        let namespace = &self.options.namespace;
        let now = Utc::now();
        let until = now + self.term();
        self.storage
            .lease_acquire(
                namespace,
                &self.member_name(),
                &self.options.owner,
                now,
                until,
            )
            .await?;
        let leases = self.storage.lease_list(namespace).await?;
        let members = leases
            .iter()
            .filter(|l| l.name.starts_with(MEMBER_PREFIX) && l.is_held_at(now))
            .count()
            .max(1);
        let shards = self.shards();
        let fair = usize::try_from(shards)
            .unwrap_or(usize::MAX)
            .div_ceil(members);
        let mut mine: Vec<u32> = Vec::new();
        let mut taken: HashSet<u32> = HashSet::new();
        for lease in &leases {
            let Some(shard) = parse_shard(&lease.name) else {
                continue;
            };
            if shard >= shards || !lease.is_held_at(now) {
                continue;
            }
            if lease.owner == self.options.owner {
                mine.push(shard);
            } else {
                taken.insert(shard);
            }
        }
        mine.sort_unstable();
        // The surplus goes first from the top, so the shards kept stay the same from one
        // round to the next.
        while mine.len() > fair {
            let Some(shard) = mine.pop() else { break };
            self.held().remove(&shard);
            self.storage
                .lease_release(namespace, &shard_lease_name(shard), &self.options.owner)
                .await?;
            tracing::info!(shard, fair, members, "live-check shard handed over");
        }
        // Renewals and new claims each go out together: a round costs a few storage
        // round trips, not one per shard.
        let wanted = fair.saturating_sub(mine.len());
        let free: Vec<u32> = (0..shards)
            .filter(|shard| !taken.contains(shard) && !mine.contains(shard))
            .take(wanted)
            .collect();
        let mut granted = BTreeMap::new();
        let renewals = mine.iter().map(|&shard| self.acquire(shard));
        for (shard, lease) in futures::future::join_all(renewals).await {
            if let Some(lease) = lease? {
                granted.insert(shard, lease.until);
            }
        }
        let claims = free.iter().map(|&shard| self.acquire(shard));
        for (shard, lease) in futures::future::join_all(claims).await {
            // Lost to another instance's claim at the same moment: tried again next round.
            if let Some(lease) = lease? {
                tracing::info!(shard, epoch = lease.epoch, "live-check shard claimed");
                granted.insert(shard, lease.until);
            }
        }
        *self.held() = granted;
        Ok(())
    }

    /// Takes or renews `shard` for a term from now (read at the call, so that a slow
    /// round does not shorten the terms it grants).
    async fn acquire(&self, shard: u32) -> (u32, Result<Option<Lease>, StorageError>) {
        let now = Utc::now();
        let result = self
            .storage
            .lease_acquire(
                &self.options.namespace,
                &shard_lease_name(shard),
                &self.options.owner,
                now,
                now + self.term(),
            )
            .await;
        (shard, result)
    }

    /// Ends this instance's terms at once (a graceful stop), so the others need not wait
    /// for them to run out.
    pub(crate) async fn release_all(&self) {
        let shards: Vec<u32> = std::mem::take(&mut *self.held()).into_keys().collect();
        let namespace = &self.options.namespace;
        for shard in shards {
            if let Err(err) = self
                .storage
                .lease_release(namespace, &shard_lease_name(shard), &self.options.owner)
                .await
            {
                tracing::warn!(shard, cause = %err, "releasing a live-check shard failed; it runs out with its term");
            }
        }
        if let Err(err) = self
            .storage
            .lease_release(namespace, &self.member_name(), &self.options.owner)
            .await
        {
            tracing::warn!(cause = %err, "releasing the live-check membership failed; it runs out with its term");
        }
    }

    /// Runs rounds every third of the term until `shutdown`, then releases everything.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.options.enabled {
            return;
        }
        let every = (self.options.term / 3).max(Duration::from_millis(1));
        loop {
            if let Err(err) = self.round().await {
                tracing::warn!(cause = %err, "live-check claim round failed; retrying next round");
            }
            if sleep_unless_cancelled(every, &shutdown)
                .await
                .is_cancelled()
            {
                break;
            }
        }
        self.release_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("dQw4w9WgXcQ", 16), shard_of("dQw4w9WgXcQ", 16));
        assert_eq!(shard_of("anything", 1), 0);
        let mut counts = [0u32; 16];
        for i in 0..1600 {
            counts[shard_of(&format!("vid{i:08}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (50..=150).contains(c)), "{counts:?}");
        assert_eq!(parse_shard(&shard_lease_name(7)), Some(7));
        assert_eq!(parse_shard("member.x"), None);
    }
}
