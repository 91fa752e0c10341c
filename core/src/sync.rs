//! Locking that survives a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data even if a thread panicked while holding it.
///
/// Every mutex in Stargazer guards plain bookkeeping (maps, counters, caches) that each
/// critical section leaves consistent at every step, so a panic in one request must not
/// turn every later lock into a second panic.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
