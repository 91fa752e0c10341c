//! Short-lived memory of hot reads (the entity list, single entities, subscriber
//! lookups, serialized; the schedule and entity names for the calendar feed, as values).
//!
//! Bots ask `getEntity` and `getSubscribers` for every event and the frontend lists
//! entities on every page load; all of them change rarely. An entry lives `read_cache_ms`; writes made through this
//! process clear the affected cache at once, writes made elsewhere (another api instance,
//! the admin command) show after at most the lifetime. Concurrent misses of one key share
//! one load. A lifetime of zero disables the cache.
//!
//! Each cache holds at most `read_cache_capacity` keys, evicting the least recently used,
//! and a load that fails (an unknown id, a storage error) leaves no slot behind: callers
//! spraying random ids cost one lookup each and leave nothing in memory.

use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use hashlink::LruCache;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::error::Result;
use stargazer_core::sync::lock;

struct Slot<V> {
    created: Instant,
    value: Arc<OnceCell<V>>,
}

/// Values (by default serialized JSON) by key, each for at most `ttl`, at most
/// `capacity` keys. Values are cloned out, so large ones are held behind an `Arc`.
pub(crate) struct ReadCache<K: Eq + Hash, V = Bytes> {
    ttl: Duration,
    slots: Mutex<LruCache<K, Slot<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> ReadCache<K, V> {
    /// A cache keeping values for `ttl` (zero disables it) and at most `capacity` keys
    /// (at least one).
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            slots: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, LruCache<K, Slot<V>>> {
        // Sections under the lock never panic half-way; a poisoned map is still whole.
        lock(&self.slots)
    }

    /// The cached value of `key`, or the result of `load` (remembered when it succeeds).
    pub(crate) async fn get_or_load<F, Fut>(&self, key: K, load: F) -> Result<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        if self.ttl.is_zero() {
            return load().await;
        }
        let cell = {
            let mut slots = self.slots();
            match slots.get(&key) {
                Some(slot) if slot.created.elapsed() < self.ttl => slot.value.clone(),
                _ => {
                    let value = Arc::new(OnceCell::new());
                    // Evicts the least recently used key when full.
                    slots.insert(
                        key.clone(),
                        Slot {
                            created: Instant::now(),
                            value: value.clone(),
                        },
                    );
                    value
                }
            }
        };
        let loaded = cell.get_or_try_init(load).await.cloned();
        if loaded.is_err() {
            // Forget the slot this call made (unless a later load filled or replaced it),
            // so failed and unknown keys take no room.
            let mut slots = self.slots();
            let ours = slots
                .peek(&key)
                .is_some_and(|slot| Arc::ptr_eq(&slot.value, &cell) && !cell.initialized());
            if ours {
                slots.remove(&key);
            }
        }
        loaded
    }

    /// Forgets everything (after a write that may change any entry).
    pub(crate) fn clear(&self) {
        self.slots().clear();
    }

    /// How many keys are held (values and loads in flight).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn serves_from_memory_until_expiry_or_clear() {
        let cache = ReadCache::new(Duration::from_secs(2), 16);
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from_static(b"[]"))
        };
        cache.get_or_load(1, load).await.unwrap();
        cache.get_or_load(1, load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(3)).await;
        cache.get_or_load(1, load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        cache.clear();
        cache.get_or_load(1, load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn failed_loads_are_not_remembered_and_zero_ttl_disables() {
        let cache = ReadCache::new(Duration::from_secs(60), 16);
        let err = cache
            .get_or_load(1, || async {
                Err(crate::error::Error::Internal("x".into()))
            })
            .await;
        assert!(err.is_err());
        let ok = cache
            .get_or_load(1, || async { Ok(Bytes::from_static(b"1")) })
            .await
            .unwrap();
        assert_eq!(ok, Bytes::from_static(b"1"));
        let off = ReadCache::new(Duration::ZERO, 16);
        off.get_or_load(1, || async { Ok(Bytes::from_static(b"1")) })
            .await
            .unwrap();
        let again = off
            .get_or_load(1, || async { Ok(Bytes::from_static(b"2")) })
            .await
            .unwrap();
        assert_eq!(again, Bytes::from_static(b"2"));
    }

    #[tokio::test]
    async fn random_keys_stay_bounded_and_misses_leave_nothing() {
        let cache = ReadCache::new(Duration::from_secs(60), 100);
        // Unknown ids: every load fails, nothing is kept.
        for _ in 0..10_000 {
            let id = uuid::Uuid::new_v4();
            let miss = cache
                .get_or_load(id, || async move {
                    Err(crate::error::Error::NotFound(format!("no entity {id}")))
                })
                .await;
            assert!(miss.is_err());
        }
        assert_eq!(cache.len(), 0);
        // Known ids: at most the capacity, the most recently used kept.
        let ids: Vec<uuid::Uuid> = (0..1000).map(|_| uuid::Uuid::new_v4()).collect();
        for id in &ids {
            cache
                .get_or_load(*id, || async { Ok(Bytes::from_static(b"{}")) })
                .await
                .unwrap();
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        let loads = AtomicUsize::new(0);
        let count = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from_static(b"{}"))
        };
        cache.get_or_load(ids[999], count).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 0, "recent key still cached");
        cache.get_or_load(ids[0], count).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1, "oldest key was evicted");
        assert_eq!(cache.len(), 100);
    }

    #[tokio::test]
    async fn a_failed_load_does_not_drop_a_value_loaded_meanwhile() {
        let cache = Arc::new(ReadCache::new(Duration::from_secs(60), 16));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();
        let failing = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(7, || async move {
                        let _ = started_tx.send(());
                        let _ = fail_rx.await;
                        Err(crate::error::Error::Internal("down".into()))
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        cache.clear();
        cache
            .get_or_load(7, || async { Ok(Bytes::from_static(b"new")) })
            .await
            .unwrap();
        fail_tx.send(()).unwrap();
        assert!(failing.await.unwrap().is_err());
        assert_eq!(cache.len(), 1);
        let kept = cache
            .get_or_load(7, || async { Ok(Bytes::from_static(b"other")) })
            .await
            .unwrap();
        assert_eq!(kept, Bytes::from_static(b"new"));
    }
}
