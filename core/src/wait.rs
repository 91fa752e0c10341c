//! One vocabulary for waiting: sleep, unless a [`CancellationToken`] says stop first.
//!
//! Every retry, backoff and pacing loop in Stargazer waits the same way: a timer raced
//! against a shutdown (or stop, or close) token. Writing that race by hand as a
//! `tokio::select!` each time invited small disagreements (which branch wins a tie, what
//! a returned `bool` means), so the race lives here once and says what happened with
//! [`Waited`] instead of a `bool`.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// How a wait ended.
///
/// An enum rather than a `bool` because callers disagreed on whether `true` meant "slept"
/// or "cancelled"; `#[must_use]` because ignoring it is almost always a missed shutdown.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The full delay passed without the token being cancelled.
    Elapsed,
    /// The token was cancelled before (or exactly when) the delay passed.
    Cancelled,
}

impl Waited {
    /// Whether the token cut the wait short: the caller should stop what it is doing.
    pub fn is_cancelled(self) -> bool {
        self == Waited::Cancelled
    }

    /// Whether the whole delay passed: the caller may carry on.
    pub fn is_elapsed(self) -> bool {
        self == Waited::Elapsed
    }
}

/// Sleeps for `delay` unless `token` is cancelled first.
///
/// Cancellation wins a tie (an already cancelled token with a zero delay reports
/// [`Waited::Cancelled`]), so a loop that waits between attempts never starts one more
/// attempt after shutdown was asked for.
pub async fn sleep_unless_cancelled(delay: Duration, token: &CancellationToken) -> Waited {
    tokio::select! {
        biased;
        _ = token.cancelled() => Waited::Cancelled,
        _ = tokio::time::sleep(delay) => Waited::Elapsed,
    }
}

/// Sleeps until `deadline` unless `token` is cancelled first; cancellation wins a tie.
///
/// For loops that pace themselves against a fixed point in time, so the time spent
/// working is not added to the wait.
pub async fn sleep_until_unless_cancelled(deadline: Instant, token: &CancellationToken) -> Waited {
    tokio::select! {
        biased;
        _ = token.cancelled() => Waited::Cancelled,
        _ = tokio::time::sleep_until(deadline) => Waited::Elapsed,
    }
}

/// Sleeps for the next delay of `backoff` unless `token` is cancelled first.
///
/// The backoff advances even when the wait is cancelled, as it would with a hand-written
/// `sleep(backoff.next_delay())`; a cancelled caller is leaving anyway.
pub async fn backoff_unless_cancelled(backoff: &mut Backoff, token: &CancellationToken) -> Waited {
    sleep_unless_cancelled(backoff.next_delay(), token).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn elapses_after_the_delay() {
        let token = CancellationToken::new();
        let start = Instant::now();
        let waited = sleep_unless_cancelled(Duration::from_secs(5), &token).await;
        assert_eq!(waited, Waited::Elapsed);
        assert!(waited.is_elapsed() && !waited.is_cancelled());
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_already_cancelled_token_returns_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let start = Instant::now();
        let waited = sleep_unless_cancelled(Duration::from_secs(3600), &token).await;
        assert_eq!(waited, Waited::Cancelled);
        assert!(waited.is_cancelled() && !waited.is_elapsed());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_while_waiting_ends_the_wait_promptly() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let start = Instant::now();
        let waited = sleep_unless_cancelled(Duration::from_secs(3600), &token).await;
        assert_eq!(waited, Waited::Cancelled);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_wins_a_tie_with_a_zero_delay() {
        let token = CancellationToken::new();
        token.cancel();
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        // An unbiased select picks either ready branch at random: repeat so that such a
        // regression fails here with near certainty, not half the time.
        for _ in 0..32 {
            let now = Instant::now();
            assert!(sleep_unless_cancelled(Duration::ZERO, &token)
                .await
                .is_cancelled());
            assert!(sleep_until_unless_cancelled(now, &token)
                .await
                .is_cancelled());
            assert!(backoff_unless_cancelled(&mut backoff, &token)
                .await
                .is_cancelled());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_until_the_deadline() {
        let token = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(7);
        assert_eq!(
            sleep_until_unless_cancelled(deadline, &token).await,
            Waited::Elapsed
        );
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_until_is_cut_short_by_cancellation() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            canceller.cancel();
        });
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3600);
        assert_eq!(
            sleep_until_unless_cancelled(deadline, &token).await,
            Waited::Cancelled
        );
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_sleeps_its_next_delay_and_advances() {
        let token = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(
            backoff_unless_cancelled(&mut backoff, &token).await,
            Waited::Elapsed
        );
        let first = start.elapsed();
        // ±20 % jitter around 10 s.
        assert!(
            first >= Duration::from_secs(8) && first <= Duration::from_secs(12),
            "{first:?}"
        );
        let start = Instant::now();
        assert_eq!(
            backoff_unless_cancelled(&mut backoff, &token).await,
            Waited::Elapsed
        );
        let second = start.elapsed();
        // The delay doubled: ±20 % around 20 s.
        assert!(
            second >= Duration::from_secs(16) && second <= Duration::from_secs(24),
            "{second:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_cut_short_by_cancellation() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let mut backoff = Backoff::new(Duration::from_secs(600), Duration::from_secs(600));
        let start = Instant::now();
        assert_eq!(
            backoff_unless_cancelled(&mut backoff, &token).await,
            Waited::Cancelled
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
