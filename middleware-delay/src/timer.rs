//! The one timer structure behind every pending message: a min-heap of
//! `(fire_at_ms, id)` with lazy deletion, plus a map from id to its current fire time.
//!
//! Only the id and the time live in memory (about 150 bytes a message, measured); bodies stay in
//! storage until the message fires. Replacing or cancelling an id only touches the map:
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
    live: HashMap<Arc<str>, i64>,
}

impl Timer {
    /// An empty timer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Schedules `id` at `fire_at_ms`, replacing any earlier schedule of the same id.
    /// Returns whether it is now the earliest pending entry (the firing task must wake).
    pub(crate) fn schedule(&mut self, id: &str, fire_at_ms: i64) -> bool {
        let key: Arc<str> = match self.live.get_key_value(id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(id),
        };
        match self.live.entry(key.clone()) {
            Entry::Occupied(mut slot) => {
                if *slot.get() == fire_at_ms {
                    return false;
                }
                slot.insert(fire_at_ms);
            }
            Entry::Vacant(slot) => {
                slot.insert(fire_at_ms);
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

    /// Removes `id`; returns the time it was scheduled at, if it was pending.
    pub(crate) fn cancel(&mut self, id: &str) -> Option<i64> {
        let removed = self.live.remove(id);
        if removed.is_some() {
            self.compact_if_sparse();
        }
        removed
    }

    /// The time `id` is scheduled at.
    pub(crate) fn fire_at(&self, id: &str) -> Option<i64> {
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
    pub(crate) fn pop_due(&mut self, now_ms: i64) -> Option<(Arc<str>, i64)> {
        self.drop_stale_top();
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now_ms => {
                let Reverse((at, id)) = self.heap.pop()?;
                self.live.remove(&id);
                Some((id, at))
            }
            _ => None,
        }
    }

    fn is_live(&self, id: &str, at: i64) -> bool {
        self.live.get(id) == Some(&at)
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
                .map(|(id, at)| Reverse((*at, id.clone())))
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
            .map(|(id, at)| (id.to_string(), at))
            .collect()
    }

    #[test]
    fn fires_in_time_order_and_only_when_due() {
        let mut t = Timer::new();
        assert!(t.schedule("b", 20));
        assert!(t.schedule("a", 10));
        assert!(!t.schedule("c", 30));
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
        t.schedule("x", 10);
        t.schedule("y", 15);
        t.schedule("x", 50);
        assert_eq!(t.fire_at("x"), Some(50));
        assert_eq!(t.next_fire_at(), Some(15));
        assert_eq!(drain(&mut t, 40), vec![("y".into(), 15)]);
        // Moving earlier works too.
        t.schedule("x", 20);
        assert_eq!(drain(&mut t, 40), vec![("x".into(), 20)]);
        assert_eq!(drain(&mut t, 100), vec![]);
    }

    #[test]
    fn cancel_removes_and_reports() {
        let mut t = Timer::new();
        t.schedule("x", 10);
        assert_eq!(t.cancel("x"), Some(10));
        assert_eq!(t.cancel("x"), None);
        assert_eq!(drain(&mut t, 100), vec![]);
        // A cancelled id scheduled again at the same time fires once.
        t.schedule("x", 10);
        t.cancel("x");
        t.schedule("x", 10);
        assert_eq!(drain(&mut t, 100), vec![("x".into(), 10)]);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut t = Timer::new();
        for round in 0..10 {
            for i in 0..1000 {
                t.schedule(&format!("id{i}"), 1_000_000 + round * 10 + i);
            }
        }
        assert_eq!(t.len(), 1000);
        assert!(t.heap_len() <= 2 * 1000 + 1024, "heap {}", t.heap_len());
        assert_eq!(drain(&mut t, i64::MAX).len(), 1000);
    }
}
