//! Waiting for conditions with a deadline. Tests assert that something happens, never how
//! fast: the deadlines are generous bounds that only turn a hang into a failure.

use std::future::Future;
use std::time::Duration;

/// How often conditions are looked at.
const POLL: Duration = Duration::from_millis(25);

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub async fn until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the async `check` until it yields `Some`; panics naming `what` after `timeout`.
pub async fn until_some<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `count` until it reaches `target`; panics naming `what` once the count has not
/// grown for `stall`. For bulk deliveries whose total time depends on the machine (the
/// MongoDB-wire test server stores a few dozen records a second): a slow run passes, a
/// lost message still fails, because the count stops short of `target`.
pub async fn until_count(what: &str, target: usize, stall: Duration, count: impl Fn() -> usize) {
    let mut last = count();
    let mut last_change = tokio::time::Instant::now();
    while last < target {
        tokio::time::sleep(POLL).await;
        let now = count();
        if now != last {
            last = now;
            last_change = tokio::time::Instant::now();
        }
        assert!(
            last_change.elapsed() < stall,
            "{what}: stuck at {last} of {target} for {stall:?}"
        );
    }
}
