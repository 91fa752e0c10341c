//! The one timer structure behind every message this instance holds (claimed): a min-heap
//! of `(fire_at_ms, id)` with lazy deletion, plus a map from id to its current fire time
//! and the stored revision it stands for.
//!
//! Only the id, the time and the revision live in memory (about 150 bytes a message,
//! measured); bodies stay in storage until the message fires. Replacing or cancelling an id only touches the map:
//! the heap entry it leaves behind is recognised as stale when it reaches the top
//! (its time no longer matches the map) and skipped. When stale entries outnumber live
//! ones the heap is rebuilt, so memory stays proportional to what is pending.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// Pending ids ordered by fire time.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    heap: BinaryHeap<Reverse<(i64, Arc<str>)>>,
    live: HashMap<Arc<str>, Held>,
}

/// What the timer knows of one held id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// When it fires, unix milliseconds.
    pub(crate) at: i64,
    /// The stored revision it fires.
    pub(crate) revision: i64,
}

impl Timer {
    /// An empty timer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Schedules `id` (stored `revision`) at `fire_at_ms`, replacing any earlier
    /// schedule of the same id. Returns whether it is now the earliest pending entry (the
    /// firing task must wake).
    pub(crate) fn schedule(&mut self, id: &str, fire_at_ms: i64, revision: i64) -> bool {
        let key: Arc<str> = match self.live.get_key_value(id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(id),
        };
        let held = Held {
            at: fire_at_ms,
            revision,
        };
        match self.live.entry(key.clone()) {
            Entry::Occupied(mut slot) => {
                let same_time = slot.get().at == fire_at_ms;
                slot.insert(held);
                if same_time {
                    // Its heap entry still stands for it.
                    return false;
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(held);
            }
        }
        self.drop_stale_top();
        let earliest = self
            .heap
            .peek()
            .is_none_or(|Reverse((top, _))| fire_at_ms < *top);
        self.heap.push(Reverse((fire_at_ms, key)));
        self.compact_if_sparse();
        earliest
    }

    /// Removes `id`; returns what was held, if anything.
    pub(crate) fn cancel(&mut self, id: &str) -> Option<Held> {
        let removed = self.live.remove(id);
        if removed.is_some() {
            self.compact_if_sparse();
        }
        removed
    }

    /// Removes `id` unless it holds `revision` (a claim of that very revision that landed
    /// first must stay).
    pub(crate) fn cancel_unless(&mut self, id: &str, revision: i64) -> Option<Held> {
        match self.live.get(id) {
            Some(held) if held.revision != revision => self.cancel(id),
            _ => None,
        }
    }

    /// What is held for `id`.
    pub(crate) fn held(&self, id: &str) -> Option<Held> {
        self.live.get(id).copied()
    }

    /// How many ids are pending.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether nothing is pending.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The earliest pending fire time.
    pub(crate) fn next_fire_at(&mut self) -> Option<i64> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now_ms`.
    pub(crate) fn pop_due(&mut self, now_ms: i64) -> Option<(Arc<str>, Held)> {
        self.drop_stale_top();
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now_ms => {
                let Reverse((_, id)) = self.heap.pop()?;
                let held = self.live.remove(&id)?;
                Some((id, held))
            }
            _ => None,
        }
    }

    fn is_live(&self, id: &str, at: i64) -> bool {
        self.live.get(id).is_some_and(|held| held.at == at)
    }

    fn drop_stale_top(&mut self) {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if self.is_live(id, *at) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from the live map once stale entries dominate.
    fn compact_if_sparse(&mut self) {
        if self.heap.len() > 1024 && self.heap.len() > self.live.len() * 2 {
            let entries: Vec<_> = self
                .live
                .iter()
                .map(|(id, held)| Reverse((held.at, id.clone())))
                .collect();
            self.heap = BinaryHeap::from(entries);
        }
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(timer: &mut Timer, now: i64) -> Vec<(String, i64)> {
        std::iter::from_fn(|| timer.pop_due(now))
            .map(|(id, held)| (id.to_string(), held.at))
            .collect()
    }

    #[test]
    fn fires_in_time_order_and_only_when_due() {
        let mut t = Timer::new();
        assert!(t.schedule("b", 20, 1));
        assert!(t.schedule("a", 10, 1));
        assert!(!t.schedule("c", 30, 1));
        assert_eq!(t.next_fire_at(), Some(10));
        assert_eq!(drain(&mut t, 5), vec![]);
        assert_eq!(drain(&mut t, 20), vec![("a".into(), 10), ("b".into(), 20)]);
        assert_eq!(t.len(), 1);
        assert_eq!(drain(&mut t, 100), vec![("c".into(), 30)]);
        assert!(t.is_empty());
        assert_eq!(t.next_fire_at(), None);
    }

    #[test]
    fn replacing_moves_the_entry_and_the_old_slot_is_skipped() {
        let mut t = Timer::new();
        t.schedule("x", 10, 1);
        t.schedule("y", 15, 1);
        t.schedule("x", 50, 1);
        assert_eq!(t.held("x").map(|held| held.at), Some(50));
        assert_eq!(t.next_fire_at(), Some(15));
        assert_eq!(drain(&mut t, 40), vec![("y".into(), 15)]);
        // Moving earlier works too.
        t.schedule("x", 20, 1);
        assert_eq!(drain(&mut t, 40), vec![("x".into(), 20)]);
        assert_eq!(drain(&mut t, 100), vec![]);
    }

    #[test]
    fn cancel_removes_and_reports() {
        let mut t = Timer::new();
        t.schedule("x", 10, 1);
        assert_eq!(t.cancel("x").map(|held| held.at), Some(10));
        assert_eq!(t.cancel("x"), None);
        assert_eq!(drain(&mut t, 100), vec![]);
        // A cancelled id scheduled again at the same time fires once.
        t.schedule("x", 10, 1);
        t.cancel("x");
        t.schedule("x", 10, 1);
        assert_eq!(drain(&mut t, 100), vec![("x".into(), 10)]);
    }

    #[test]
    fn a_new_revision_at_the_same_time_replaces_the_old_one() {
        let mut t = Timer::new();
        t.schedule("x", 10, 1);
        assert!(!t.schedule("x", 10, 2));
        assert_eq!(t.cancel_unless("x", 2), None, "the same revision stays");
        assert_eq!(t.held("x").map(|held| held.revision), Some(2));
        let popped = t.pop_due(100).map(|(id, held)| (id.to_string(), held));
        assert_eq!(
            popped,
            Some((
                "x".into(),
                Held {
                    at: 10,
                    revision: 2
                }
            ))
        );
        t.schedule("x", 10, 3);
        assert_eq!(t.cancel_unless("x", 4).map(|held| held.revision), Some(3));
        assert!(t.is_empty());
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut t = Timer::new();
        for round in 0..10 {
            for i in 0..1000 {
                t.schedule(&format!("id{i}"), 1_000_000 + round * 10 + i, round);
            }
        }
        assert_eq!(t.len(), 1000);
        assert!(t.heap_len() <= 2 * 1000 + 1024, "heap {}", t.heap_len());
        assert_eq!(drain(&mut t, i64::MAX).len(), 1000);
    }
}
