//! Short-lived memory of serialized hot reads (the entity list, single entities,
//! subscriber lookups).
//!
//! Bots ask `getEntity` and `getSubscribers` for every event and the frontend lists
//! entities on every page load; all of them change rarely. An entry lives `read_cache_ms`; writes made through this
//! process clear the affected cache at once, writes made elsewhere (another api instance,
//! the admin command) show after at most the lifetime. Concurrent misses of one key share
//! one load. A lifetime of zero disables the cache.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::error::Result;

/// Keys beyond which stale entries are swept on insert.
const SOFT_CAP: usize = 4096;

struct Slot {
    created: Instant,
    value: Arc<OnceCell<Bytes>>,
}

/// Serialized values by key, each for at most `ttl`.
pub(crate) struct ReadCache<K> {
    ttl: Duration,
    slots: Mutex<HashMap<K, Slot>>,
}

impl<K: Eq + Hash + Clone> ReadCache<K> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::default(),
        }
    }

    /// The cached value of `key`, or the result of `load` (remembered when it succeeds).
    pub(crate) async fn get_or_load<F, Fut>(&self, key: K, load: F) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>>,
    {
        if self.ttl.is_zero() {
            return load().await;
        }
        let cell = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(&key) {
                Some(slot) if slot.created.elapsed() < self.ttl => slot.value.clone(),
                _ => {
                    if slots.len() >= SOFT_CAP {
                        let ttl = self.ttl;
                        slots.retain(|_, slot| slot.created.elapsed() < ttl);
                    }
                    let value = Arc::new(OnceCell::new());
                    slots.insert(
                        key,
                        Slot {
                            created: Instant::now(),
                            value: value.clone(),
                        },
                    );
                    value
                }
            }
        };
        cell.get_or_try_init(load).await.cloned()
    }

    /// Forgets everything (after a write that may change any entry).
    pub(crate) fn clear(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn serves_from_memory_until_expiry_or_clear() {
        let cache = ReadCache::new(Duration::from_secs(2));
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
        let cache = ReadCache::new(Duration::from_secs(60));
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
        let off = ReadCache::new(Duration::ZERO);
        off.get_or_load(1, || async { Ok(Bytes::from_static(b"1")) })
            .await
            .unwrap();
        let again = off
            .get_or_load(1, || async { Ok(Bytes::from_static(b"2")) })
            .await
            .unwrap();
        assert_eq!(again, Bytes::from_static(b"2"));
    }
}
