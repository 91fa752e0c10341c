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
