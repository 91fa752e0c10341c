//! The Helix rate-limit gate: Helix counts an app's requests in one token bucket and says
//! how full it is in `Ratelimit-Remaining` and when it refills in `Ratelimit-Reset` (unix
//! seconds). When it is empty (or a 429 came), every request waits for the reset.

use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::HeaderMap;
use stargazer_core::sync::lock;
use stargazer_core::wait::{sleep_until_unless_cancelled, Waited};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait a reset header can impose: Helix's bucket refills within a minute, so a
/// reset further away is a clock skew or a bogus header, not a reason to stop for hours.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// Holds Helix requests while the bucket is empty.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    closed_until: Mutex<Option<Instant>>,
}

impl RateGate {
    /// Waits until the gate is open; `Cancelled` at shutdown. Returns whether it waited.
    pub(crate) async fn wait(&self, shutdown: &CancellationToken) -> Result<bool, Waited> {
        let until = *lock(&self.closed_until);
        match until {
            Some(until) if until > Instant::now() => {
                match sleep_until_unless_cancelled(until, shutdown).await {
                    Waited::Cancelled => Err(Waited::Cancelled),
                    Waited::Elapsed => Ok(true),
                }
            }
            _ => Ok(false),
        }
    }

    /// Reads the rate-limit headers of a response; closes the gate until the reset when
    /// the bucket is empty or `limited` (a 429). `fallback` applies when a 429 has no
    /// usable reset.
    pub(crate) fn observe(&self, headers: &HeaderMap, limited: bool, fallback: Duration) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        let remaining = number("ratelimit-remaining");
        if !limited && remaining.is_none_or(|r| r > 0) {
            return;
        }
        let wait = match number("ratelimit-reset") {
            // A reset already past still means "now": wait a little for the refill.
            Some(reset) => Duration::from_millis(
                ((reset - Utc::now().timestamp()).max(0) as u64 * 1000).max(200),
            )
            .min(MAX_WAIT),
            None if limited => fallback.min(MAX_WAIT),
            None => return,
        };
        let until = Instant::now() + wait;
        let mut closed = lock(&self.closed_until);
        if closed.is_none_or(|c| c < until) {
            *closed = Some(until);
        }
    }

    /// When the gate opens, if it is closed now.
    pub(crate) fn closed_for(&self) -> Option<Duration> {
        lock(&self.closed_until).and_then(|u| u.checked_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(remaining: i64, reset_in: i64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from(remaining));
        h.insert(
            "ratelimit-reset",
            HeaderValue::from(Utc::now().timestamp() + reset_in),
        );
        h
    }

    #[test]
    fn an_empty_bucket_closes_the_gate_until_the_reset_and_a_bogus_one_is_capped() {
        let gate = RateGate::default();
        gate.observe(&headers(5, 30), false, Duration::from_secs(60));
        assert!(gate.closed_for().is_none());
        gate.observe(&headers(0, 2), false, Duration::from_secs(60));
        let wait = gate.closed_for().unwrap();
        // The header has whole seconds: a second may tick between writing and reading it.
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(2));
        gate.observe(&headers(0, 1_000_000), false, Duration::from_secs(60));
        assert!(gate.closed_for().unwrap() <= MAX_WAIT);
    }

    #[test]
    fn a_429_without_headers_uses_the_fallback() {
        let gate = RateGate::default();
        gate.observe(&HeaderMap::new(), true, Duration::from_secs(3));
        assert!(gate.closed_for().unwrap() > Duration::from_secs(2));
    }
}
