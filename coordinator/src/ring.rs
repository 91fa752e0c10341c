//! One consistent-hash ring (crate `hashring`) per task kind, with virtual nodes.
//!
//! Each worker owns `virtual_nodes` points on the ring; a task belongs to the worker owning
//! the first point at or after the task id's hash. Adding a worker therefore takes over
//! only the arcs its new points cover (~1/N of the tasks), and removing one hands only its
//! arcs to the neighbours. Hashes use fixed SipHash keys over explicit bytes, so every
//! coordinator process (including a restarted one) computes the same ring from the same
//! membership: that is what lets a restart reconcile without moving anything.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use hashring::HashRing;
use uuid::Uuid;

use crate::assignment::WorkerId;

/// One point of a worker on the ring.
#[derive(Debug, Clone)]
struct VirtualNode {
    worker: WorkerId,
    index: u32,
}

impl Hash for VirtualNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Explicit bytes (not the derived impl) so the point never depends on how std
        // feeds a `str` to the hasher. The fixed-width index keeps `("w1", 10)` and
        // `("w11", 0)` distinct.
        state.write(self.worker.as_bytes());
        state.write(&self.index.to_le_bytes());
    }
}

/// The ring key of a task: its id's 16 bytes.
struct TaskKey(Uuid);

impl Hash for TaskKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// A ring of workers of one kind.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    virtual_nodes: u32,
    members: BTreeSet<WorkerId>,
    ring: HashRing<VirtualNode>,
}

impl Ring {
    /// An empty ring giving each worker `virtual_nodes` points (at least one).
    pub(crate) fn new(virtual_nodes: u32) -> Self {
        Self {
            virtual_nodes: virtual_nodes.max(1),
            members: BTreeSet::new(),
            ring: HashRing::new(),
        }
    }

    /// Adds a worker; `false` if it was already a member.
    pub(crate) fn add(&mut self, worker: &WorkerId) -> bool {
        if !self.members.insert(worker.clone()) {
            return false;
        }
        // One sort for all points instead of one per point.
        self.ring.batch_add(self.points(worker));
        true
    }

    /// Removes a worker; `false` if it was not a member.
    pub(crate) fn remove(&mut self, worker: &WorkerId) -> bool {
        if !self.members.remove(worker) {
            return false;
        }
        // `HashRing::remove` shifts the whole vector per point; rebuilding sorts once.
        let mut ring = HashRing::new();
        let points: Vec<VirtualNode> = self
            .members
            .iter()
            .flat_map(|member| self.points(member))
            .collect();
        ring.batch_add(points);
        self.ring = ring;
        true
    }

    /// The worker a task belongs to, `None` when the ring is empty.
    pub(crate) fn get(&self, task: Uuid) -> Option<&WorkerId> {
        self.ring.get(&TaskKey(task)).map(|node| &node.worker)
    }

    fn points(&self, worker: &WorkerId) -> Vec<VirtualNode> {
        (0..self.virtual_nodes)
            .map(|index| VirtualNode {
                worker: worker.clone(),
                index,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ids(n: u128) -> Vec<Uuid> {
        (0..n)
            .map(|i| Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect()
    }

    #[test]
    fn same_membership_gives_the_same_owners_in_any_order() {
        let (a, b, c): (WorkerId, WorkerId, WorkerId) =
            (Arc::from("a"), Arc::from("b"), Arc::from("c"));
        let mut first = Ring::new(64);
        for w in [&a, &b, &c] {
            first.add(w);
        }
        let mut second = Ring::new(64);
        for w in [&c, &a, &b] {
            second.add(w);
        }
        second.add(&Arc::from("d"));
        second.remove(&Arc::from("d"));
        for id in ids(2000) {
            assert_eq!(first.get(id), second.get(id));
        }
    }

    #[test]
    fn a_join_moves_only_tasks_to_the_newcomer() {
        let mut ring = Ring::new(128);
        for i in 0..10 {
            ring.add(&Arc::from(format!("w{i}")));
        }
        let tasks = ids(20_000);
        let before: Vec<WorkerId> = tasks
            .iter()
            .map(|t| ring.get(*t).unwrap().clone())
            .collect();
        let newcomer: WorkerId = Arc::from("w10");
        ring.add(&newcomer);
        let mut moved = 0;
        for (task, old) in tasks.iter().zip(&before) {
            let now = ring.get(*task).unwrap();
            if now != old {
                assert_eq!(now, &newcomer);
                moved += 1;
            }
        }
        // About 1/11 of the tasks, far from a reshuffle.
        assert!(
            moved > 20_000 / 11 / 2 && moved < 20_000 / 11 * 2,
            "{moved}"
        );
    }

    #[test]
    fn empty_ring_owns_nothing() {
        let mut ring = Ring::new(0);
        assert!(ring.get(Uuid::nil()).is_none());
        let w: WorkerId = Arc::from("w");
        assert!(ring.add(&w));
        assert!(!ring.add(&w));
        assert_eq!(ring.get(Uuid::nil()), Some(&w));
        assert!(ring.remove(&w));
        assert!(!ring.remove(&w));
        assert!(ring.get(Uuid::nil()).is_none());
    }
}
