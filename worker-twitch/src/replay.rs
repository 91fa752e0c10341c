//! The message ids seen recently, so a redelivered message (same
//! `Twitch-Eventsub-Message-Id`) is acknowledged without being processed twice.
//!
//! Ids are kept at least [`MAX_AGE`](crate::signature::MAX_AGE) plus a margin: a message
//! older than that is refused by its timestamp anyway, so together the two checks cover
//! every replay. Memory is bounded by a cap: past it the oldest ids go first (a replay
//! of one of those still cannot publish twice, as events are claimed by stream id in the
//! seen window).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use stargazer_core::sync::lock;
use tokio::time::Instant;

struct Inner {
    ids: HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

/// A time-ordered set of message ids with a size cap.
pub(crate) struct ReplayWindow {
    keep: Duration,
    cap: usize,
    inner: Mutex<Inner>,
}

impl ReplayWindow {
    pub(crate) fn new(keep: Duration, cap: usize) -> Self {
        Self {
            keep,
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                ids: HashSet::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.keep && inner.order.len() <= self.cap {
                break;
            }
            if let Some((_, id)) = inner.order.pop_front() {
                inner.ids.remove(&id);
            }
        }
    }

    /// Whether `id` was recorded within the window.
    pub(crate) fn contains(&self, id: &str) -> bool {
        let mut inner = lock(&self.inner);
        self.expire(&mut inner, Instant::now());
        inner.ids.contains(id)
    }

    /// Records `id` as handled.
    pub(crate) fn record(&self, id: &str) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        if inner.ids.insert(id.to_owned()) {
            inner.order.push_back((now, id.to_owned()));
        }
        self.expire(&mut inner, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ids_are_forgotten_after_the_window_and_past_the_cap() {
        let window = ReplayWindow::new(Duration::from_secs(60), 3);
        window.record("a");
        assert!(window.contains("a"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!window.contains("a"));
        for id in ["b", "c", "d", "e"] {
            window.record(id);
        }
        assert!(!window.contains("b"), "the oldest id left at the cap");
        assert!(window.contains("e") && window.contains("c"));
    }
}
