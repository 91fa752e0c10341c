//! The pacing of one Bilibili endpoint: a least gap between requests, and a closed gate
//! while the endpoint is backing off after a risk-control answer.
//!
//! Bilibili's risk control answers clients that ask too often with `-412` (or `-352`),
//! and keeps refusing a client that carries on. So every request to an endpoint first
//! passes its gate: requests start at least `min_gap` apart (a slot is reserved under the
//! lock, so concurrent callers queue rather than burst), and after a risk answer no
//! request at all goes out until the backoff has passed. The backoff doubles on each
//! further risk answer and starts over after a success.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::IntGauge;
use stargazer_core::backoff::Backoff;
use stargazer_core::sync::lock;
use stargazer_core::wait::{sleep_until_unless_cancelled, Waited};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct GateState {
    /// When the next request may start.
    next_slot: Instant,
    /// Until when the endpoint is backing off, if it is.
    closed_until: Option<Instant>,
    backoff: Backoff,
}

enum Step {
    Go,
    Slot(Instant),
    Closed(Instant),
}

/// One endpoint's gate. Shared by every job calling the endpoint.
pub(crate) struct Gate {
    min_gap: Duration,
    state: Mutex<GateState>,
    /// 1 while backing off.
    risk: IntGauge,
}

impl Gate {
    pub(crate) fn new(min_gap: Duration, backoff: (Duration, Duration), risk: IntGauge) -> Self {
        risk.set(0);
        Self {
            min_gap,
            state: Mutex::new(GateState {
                next_slot: Instant::now(),
                closed_until: None,
                backoff: Backoff::new(backoff.0, backoff.1),
            }),
            risk,
        }
    }

    /// Waits for this caller's slot: past any backoff and `min_gap` after the previous
    /// request's slot. Returns [`Waited::Cancelled`] when `stop` ends the wait.
    pub(crate) async fn pass(&self, stop: &CancellationToken) -> Waited {
        loop {
            let (until, reserved) = match self.step() {
                Step::Go => return Waited::Elapsed,
                Step::Slot(slot) => (slot, true),
                Step::Closed(until) => (until, false),
            };
            if sleep_until_unless_cancelled(until, stop)
                .await
                .is_cancelled()
            {
                return Waited::Cancelled;
            }
            // A risk answer that came in during the wait for a slot closes the gate.
            if reserved && !self.is_backing_off() {
                return Waited::Elapsed;
            }
        }
    }

    /// Reserves the next slot when the gate is open, so a concurrent caller takes the one
    /// after; never holds the lock across a wait.
    fn step(&self) -> Step {
        let now = Instant::now();
        let mut state = lock(&self.state);
        if let Some(closed) = state.closed_until {
            if closed > now {
                return Step::Closed(closed);
            }
            state.closed_until = None;
            self.risk.set(0);
        }
        let slot = state.next_slot.max(now);
        state.next_slot = slot + self.min_gap;
        if slot <= now {
            Step::Go
        } else {
            Step::Slot(slot)
        }
    }

    /// A risk-control answer: close the gate for the next backoff delay; returns it.
    pub(crate) fn risk_answer(&self) -> Duration {
        let mut state = lock(&self.state);
        let delay = state.backoff.next_delay();
        let until = Instant::now() + delay;
        // A later answer never shortens a backoff already running.
        state.closed_until = Some(state.closed_until.map_or(until, |c| c.max(until)));
        self.risk.set(1);
        delay
    }

    /// A normal answer: the next risk answer starts the backoff over.
    pub(crate) fn success(&self) {
        let mut state = lock(&self.state);
        state.backoff.reset();
        if state.closed_until.is_none_or(|c| c <= Instant::now()) {
            state.closed_until = None;
            self.risk.set(0);
        }
    }

    /// Whether the gate is closed by a backoff now.
    pub(crate) fn is_backing_off(&self) -> bool {
        lock(&self.state)
            .closed_until
            .is_some_and(|c| c > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(gap_ms: u64) -> Gate {
        Gate::new(
            Duration::from_millis(gap_ms),
            (Duration::from_secs(60), Duration::from_secs(1800)),
            IntGauge::new("g", "g").unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_gap() {
        let gate = gate(250);
        let stop = CancellationToken::new();
        let start = Instant::now();
        for _ in 0..4 {
            assert!(gate.pass(&stop).await.is_elapsed());
        }
        assert_eq!(start.elapsed(), Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn a_risk_answer_closes_the_gate_for_the_backoff_then_reopens() {
        let gate = gate(0);
        let stop = CancellationToken::new();
        assert!(gate.pass(&stop).await.is_elapsed());
        let delay = gate.risk_answer();
        assert!(delay >= Duration::from_secs(48) && delay <= Duration::from_secs(72));
        assert!(gate.is_backing_off());
        assert_eq!(gate.risk.get(), 1);
        let start = Instant::now();
        assert!(gate.pass(&stop).await.is_elapsed());
        assert!(start.elapsed() >= delay);
        assert_eq!(gate.risk.get(), 0);
        // The second answer in a row doubles the pause.
        let second = gate.risk_answer();
        assert!(second >= Duration::from_secs(96), "{second:?}");
        gate.success();
        assert!(
            gate.is_backing_off(),
            "a success elsewhere does not cut a backoff short"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let gate = gate(0);
        gate.risk_answer();
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(gate.pass(&stop).await.is_cancelled());
    }
}
