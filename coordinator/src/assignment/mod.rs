//! The assignment state machine: which worker should run each task (its *target*, from
//! the kind's ring) and which workers actually hold it (*holders*, from announces, acks
//! and sent commands). Every operation moves holders towards targets and returns the
//! [`Action`]s (messages, closes) that do it; nothing here does I/O or reads the clock, so
//! the engine, the tests and the benchmark drive it alike.
//!
//! Rules that keep a task on at most one worker:
//! - a task is assigned only when it has no holder at all; a holder that should not have
//!   it is sent `unassign` first, and the task moves once that is acknowledged;
//! - a worker that disconnects without `leave` keeps its tasks and its ring points for a
//!   reconnect window (one heartbeat interval), so a network blip moves nothing, while a
//!   crashed process is replaced within that window; a worker whose connection stays
//!   open but silent is evicted `misses × interval` after its last message; a worker that
//!   stops acknowledging commands is evicted after the ack timeout; eviction (or `leave`)
//!   forgets its holdings and hands its arcs on;
//! - a reconnecting worker's announce replaces what it is believed to hold.
//!
//! Nothing is assigned before the first full task list is loaded, nor during the start-up
//! hold (see [`Assignment::new`]), so workers reconnecting to a restarted coordinator are
//! all back on the ring before anything moves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use stargazer_core::model::{Task, TaskChange, TaskKind};
use stargazer_core::protocol::{CoordinatorMessage, TaskFailure};
use tokio::time::Instant;
use uuid::Uuid;

use crate::ring::Ring;
use crate::snapshot::{Snapshot, SnapshotWorker, SNAPSHOT_VERSION};

/// A worker's announced identity.
pub type WorkerId = Arc<str>;

/// Identifies one WebSocket connection (a worker may reconnect under a new one).
pub type ConnId = u64;

/// Most tasks carried by one `assign` or `unassign` message.
pub const MAX_BATCH: usize = 1000;

/// Most unassigned task ids listed in a [`Status`].
pub const STATUS_UNASSIGNED_LIMIT: usize = 1000;

/// Liveness limits the state machine enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A worker not heard from for this long is evicted (`misses × interval`).
    pub eviction_timeout: Duration,
    /// A worker whose connection dropped (without `leave`) and that has not reconnected
    /// within this long is evicted (one heartbeat interval).
    pub reconnect_window: Duration,
    /// A connected worker that makes no progress on its unacknowledged commands for this
    /// long is evicted.
    pub ack_timeout: Duration,
}

/// Something the engine must do on behalf of the state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send `message` on connection `conn`.
    Send {
        /// Target connection.
        conn: ConnId,
        /// The message.
        message: CoordinatorMessage,
    },
    /// Close connection `conn`, telling the worker `reason`.
    Close {
        /// Target connection.
        conn: ConnId,
        /// Why (sent as a protocol `error` before the close).
        reason: String,
    },
}

/// Running totals, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Tasks sent in `assign` messages.
    pub assigned: u64,
    /// Tasks sent in `unassign` messages.
    pub unassigned: u64,
    /// Workers evicted (missed heartbeats or acks).
    pub evicted: u64,
    /// Tasks workers reported they could not start.
    pub start_failures: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldState {
    /// `assign` sent, not acknowledged yet.
    Assigning,
    /// The worker runs it (acknowledged or announced).
    Held,
    /// `unassign` sent, not acknowledged yet.
    Unassigning,
}

#[derive(Debug, Clone)]
struct Holder {
    worker: WorkerId,
    state: HoldState,
    /// The task's parameters changed since this holder got it: it must restart.
    stale: bool,
}

#[derive(Debug, Default)]
struct TaskEntry {
    /// `None`: deleted (or not loaded yet) but still held somewhere.
    task: Option<Task>,
    target: Option<WorkerId>,
    holders: Vec<Holder>,
}

#[derive(Debug)]
struct Pending {
    sent_at: Instant,
    assign: Vec<Uuid>,
    unassign: Vec<Uuid>,
}

#[derive(Debug)]
struct WorkerEntry {
    kind: TaskKind,
    conn: Option<ConnId>,
    last_seen: Instant,
    /// When its connection dropped, while it has not reconnected.
    dropped_at: Option<Instant>,
    /// Last ack (or connect): commands are applied in order, so the oldest pending one
    /// has been in the works since then at most.
    last_progress: Instant,
    /// Tasks listing this worker among their holders.
    held: HashSet<Uuid>,
    /// Tasks whose target is this worker.
    targeted: HashSet<Uuid>,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
}

impl WorkerEntry {
    fn new(kind: TaskKind, now: Instant) -> Self {
        Self {
            kind,
            conn: None,
            last_seen: now,
            dropped_at: None,
            last_progress: now,
            held: HashSet::new(),
            targeted: HashSet::new(),
            next_seq: 1,
            pending: BTreeMap::new(),
        }
    }

    fn deadline(&self, timing: &Timing) -> Instant {
        self.expiry(timing).0
    }

    /// When this worker is evicted unless something changes, and why.
    fn expiry(&self, timing: &Timing) -> (Instant, &'static str) {
        let mut expiry = (
            self.last_seen + timing.eviction_timeout,
            "missed heartbeats",
        );
        if let Some(dropped) = self.dropped_at {
            let window = dropped + timing.reconnect_window;
            if window < expiry.0 {
                expiry = (window, "connection lost and not re-established");
            }
        }
        if let (Some(_), Some(oldest)) = (self.conn, self.pending.values().map(|p| p.sent_at).min())
        {
            let stalled = oldest.max(self.last_progress) + timing.ack_timeout;
            if stalled < expiry.0 {
                expiry = (stalled, "did not acknowledge commands in time");
            }
        }
        expiry
    }
}

#[derive(Debug, Default)]
struct Outgoing {
    assign: Vec<Task>,
    unassign: Vec<Uuid>,
}

/// The coordinator's whole assignment state. See the module docs for the rules.
#[derive(Debug)]
pub struct Assignment {
    virtual_nodes: u32,
    timing: Timing,
    tasks: HashMap<Uuid, TaskEntry>,
    workers: HashMap<WorkerId, WorkerEntry>,
    rings: HashMap<TaskKind, Ring>,
    tasks_loaded: bool,
    hold_until: Option<Instant>,
    outbox: HashMap<WorkerId, Outgoing>,
    actions: Vec<Action>,
    counters: Counters,
    changed: bool,
}

impl Assignment {
    /// An empty state with `virtual_nodes` ring points per worker. Nothing is assigned
    /// before `hold_until` (when given), so workers starting or reconnecting together all
    /// join the ring before tasks are placed.
    pub fn new(virtual_nodes: u32, timing: Timing, hold_until: Option<Instant>) -> Self {
        Self {
            virtual_nodes,
            timing,
            tasks: HashMap::new(),
            workers: HashMap::new(),
            rings: HashMap::new(),
            tasks_loaded: false,
            hold_until,
            outbox: HashMap::new(),
            actions: Vec::new(),
            counters: Counters::default(),
            changed: false,
        }
    }

    /// Restores the workers of a previous coordinator's snapshot as disconnected members
    /// holding what they held; each must reconnect before its eviction deadline (counted
    /// from `now`) or its tasks move.
    pub fn restore(&mut self, snapshot: &Snapshot, now: Instant) {
        for saved in &snapshot.workers {
            if saved.id.is_empty() || self.workers.contains_key(saved.id.as_str()) {
                continue;
            }
            let id: WorkerId = Arc::from(saved.id.as_str());
            let mut entry = WorkerEntry::new(saved.kind, now);
            for task in &saved.tasks {
                entry.held.insert(*task);
                self.tasks.entry(*task).or_default().holders.push(Holder {
                    worker: id.clone(),
                    state: HoldState::Held,
                    stale: false,
                });
            }
            self.ring_mut(saved.kind).add(&id);
            self.workers.insert(id, entry);
        }
        for kind in TaskKind::ALL {
            self.retarget(kind);
        }
    }

    /// Replaces the task set with `tasks` (the first load, or a resynchronisation after a
    /// broken change stream): only tasks that differ are touched.
    pub fn load_tasks(&mut self, tasks: Vec<Task>, now: Instant) -> Vec<Action> {
        let first = !self.tasks_loaded;
        let listed: HashSet<Uuid> = tasks.iter().map(|t| t.id).collect();
        let gone: Vec<Uuid> = self
            .tasks
            .iter()
            .filter(|(id, entry)| entry.task.is_some() && !listed.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let mut dirty = Vec::new();
        for id in gone {
            self.delete_inner(id);
            dirty.push(id);
        }
        for task in tasks {
            let id = task.id;
            if self.upsert_inner(task) {
                dirty.push(id);
            }
        }
        self.tasks_loaded = true;
        if first {
            self.reconcile_all();
        } else {
            self.reconcile_many(dirty);
        }
        self.finish(now)
    }

    /// Applies one change from the task stream.
    pub fn apply_change(&mut self, change: TaskChange, now: Instant) -> Vec<Action> {
        let id = match change {
            TaskChange::Upserted(task) => {
                let id = task.id;
                if !self.upsert_inner(task) {
                    return self.finish(now);
                }
                id
            }
            TaskChange::Deleted(id) => {
                self.delete_inner(id);
                id
            }
        };
        self.reconcile_many(vec![id]);
        self.finish(now)
    }

    /// A worker announced itself on `conn`, running `reported` right now. A previous
    /// connection of the same worker is closed; a previous kind is forgotten.
    pub fn connect(
        &mut self,
        worker: &str,
        kind: TaskKind,
        conn: ConnId,
        reported: &[Uuid],
        now: Instant,
    ) -> Vec<Action> {
        if self.workers.get(worker).is_some_and(|w| w.kind != kind) {
            tracing::warn!(worker_id = worker, %kind, "worker re-announced with another kind");
            self.remove_worker(worker, "re-announced with another kind", true);
        }
        let mut dirty = Vec::new();
        let id: WorkerId = match self.workers.get_key_value(worker) {
            Some((id, _)) => id.clone(),
            None => {
                let id: WorkerId = Arc::from(worker);
                self.workers.insert(id.clone(), WorkerEntry::new(kind, now));
                self.ring_mut(kind).add(&id);
                dirty.extend(self.retarget(kind));
                tracing::info!(worker_id = worker, %kind, "worker joined");
                id
            }
        };
        let entry = self.workers.get_mut(worker).expect("inserted above");
        if let Some(old) = entry.conn.replace(conn) {
            if old != conn {
                self.actions.push(Action::Close {
                    conn: old,
                    reason: "replaced by a newer connection of the same worker".into(),
                });
            }
        }
        entry.last_seen = now;
        entry.last_progress = now;
        entry.dropped_at = None;
        entry.pending.clear();
        let reported: HashSet<Uuid> = reported.iter().copied().collect();
        let old_held = std::mem::replace(&mut entry.held, reported.clone());
        dirty.extend(entry.targeted.iter().copied());
        for task in old_held.difference(&reported) {
            if let Some(task_entry) = self.tasks.get_mut(task) {
                task_entry.holders.retain(|h| h.worker != id);
            }
            dirty.push(*task);
        }
        for task in &reported {
            let task_entry = self.tasks.entry(*task).or_default();
            match task_entry.holders.iter_mut().find(|h| h.worker == id) {
                // Whatever was in flight on the old connection is settled by the report.
                Some(holder) => holder.state = HoldState::Held,
                None => task_entry.holders.push(Holder {
                    worker: id.clone(),
                    state: HoldState::Held,
                    stale: false,
                }),
            }
            dirty.push(*task);
        }
        self.changed = true;
        self.reconcile_many(dirty);
        self.finish(now)
    }

    /// Any message arrived from `worker` on `conn`: it is alive.
    pub fn heard(&mut self, worker: &str, conn: ConnId, now: Instant) {
        if let Some(entry) = self.workers.get_mut(worker) {
            if entry.conn == Some(conn) {
                entry.last_seen = now;
            }
        }
    }

    /// `worker` acknowledged command `seq` on `conn`.
    pub fn ack(
        &mut self,
        worker: &str,
        conn: ConnId,
        seq: u64,
        failed: &[TaskFailure],
        now: Instant,
    ) -> Vec<Action> {
        let Some(id) = self.workers.get_key_value(worker).map(|(id, _)| id.clone()) else {
            return self.finish(now);
        };
        let entry = self.workers.get_mut(&id).expect("looked up above");
        if entry.conn != Some(conn) {
            return self.finish(now);
        }
        entry.last_seen = now;
        entry.last_progress = now;
        let Some(pending) = entry.pending.remove(&seq) else {
            tracing::warn!(worker_id = worker, seq, "ack for an unknown command");
            return self.finish(now);
        };
        for failure in failed {
            tracing::warn!(worker_id = worker, task_id = %failure.task, error = %failure.error, "worker could not start a task");
        }
        self.counters.start_failures += failed.len() as u64;
        for task in pending.assign {
            if let Some(holder) = self.holder_mut(task, &id) {
                if holder.state == HoldState::Assigning {
                    holder.state = HoldState::Held;
                }
            }
        }
        let mut dirty = Vec::new();
        for task in pending.unassign {
            let released = self.tasks.get_mut(&task).is_some_and(|entry| {
                let before = entry.holders.len();
                entry
                    .holders
                    .retain(|h| !(h.worker == id && h.state == HoldState::Unassigning));
                entry.holders.len() != before
            });
            if released {
                if let Some(worker) = self.workers.get_mut(&id) {
                    worker.held.remove(&task);
                }
                dirty.push(task);
            }
        }
        self.changed = true;
        self.reconcile_many(dirty);
        self.finish(now)
    }

    /// Connection `conn` of `worker` ended. After a `leave` (`clean`) the worker has
    /// stopped everything and its tasks move at once; otherwise it keeps them for the
    /// reconnect window, in case it comes back.
    pub fn disconnect(
        &mut self,
        worker: &str,
        conn: ConnId,
        clean: bool,
        now: Instant,
    ) -> Vec<Action> {
        let Some(entry) = self.workers.get_mut(worker) else {
            return self.finish(now);
        };
        if entry.conn != Some(conn) {
            return self.finish(now);
        }
        if clean {
            tracing::info!(worker_id = worker, "worker left");
            self.remove_worker(worker, "left", false);
        } else {
            tracing::info!(
                worker_id = worker,
                "worker disconnected; keeping its tasks for the reconnect window"
            );
            entry.conn = None;
            entry.dropped_at = Some(now);
            entry.pending.clear();
        }
        self.finish(now)
    }

    /// Ends the start-up hold and evicts workers past their deadlines.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        if self.hold_until.is_some_and(|until| now >= until) {
            self.hold_until = None;
            self.reconcile_all();
        }
        let expired: Vec<(WorkerId, &'static str)> = self
            .workers
            .iter()
            .filter_map(|(id, w)| {
                let (deadline, reason) = w.expiry(&self.timing);
                (now >= deadline).then(|| (id.clone(), reason))
            })
            .collect();
        for (id, reason) in expired {
            tracing::warn!(worker_id = %id, reason, "evicting worker");
            self.counters.evicted += 1;
            self.remove_worker(&id, reason, true);
        }
        self.finish(now)
    }

    /// When [`Assignment::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.workers
            .values()
            .map(|w| w.deadline(&self.timing))
            .chain(self.hold_until)
            .min()
    }

    /// Whether assignments are paused (start-up hold, or tasks not loaded yet).
    pub fn holding(&self) -> bool {
        self.hold_until.is_some() || !self.tasks_loaded
    }

    /// Running totals for metrics.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether workers or holdings changed since the last call (i.e. the snapshot is stale).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The current membership and holdings, for storage.
    pub fn snapshot(&self) -> Snapshot {
        let mut workers: Vec<SnapshotWorker> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let mut tasks: Vec<Uuid> = w.held.iter().copied().collect();
                tasks.sort_unstable();
                SnapshotWorker {
                    id: id.to_string(),
                    kind: w.kind,
                    tasks,
                }
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Snapshot {
            version: SNAPSHOT_VERSION,
            saved_at: chrono::Utc::now(),
            virtual_nodes: self.virtual_nodes,
            workers,
        }
    }

    // ---- internals ----

    fn ring_mut(&mut self, kind: TaskKind) -> &mut Ring {
        let virtual_nodes = self.virtual_nodes;
        self.rings
            .entry(kind)
            .or_insert_with(|| Ring::new(virtual_nodes))
    }

    fn holder_mut(&mut self, task: Uuid, worker: &WorkerId) -> Option<&mut Holder> {
        self.tasks
            .get_mut(&task)?
            .holders
            .iter_mut()
            .find(|h| h.worker == *worker)
    }

    /// Records a task's current version; `false` if nothing changed.
    fn upsert_inner(&mut self, task: Task) -> bool {
        let id = task.id;
        let kind = task.kind();
        let entry = self.tasks.entry(id).or_default();
        if let Some(old) = &entry.task {
            if *old == task {
                return false;
            }
            // Holders run the old parameters (or the old kind): they must let go first.
            for holder in &mut entry.holders {
                holder.stale = true;
            }
        }
        entry.task = Some(task);
        let target = self.rings.get(&kind).and_then(|ring| ring.get(id)).cloned();
        self.set_target(id, target);
        true
    }

    fn delete_inner(&mut self, id: Uuid) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        entry.task = None;
        self.set_target(id, None);
    }

    fn set_target(&mut self, id: Uuid, target: Option<WorkerId>) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        if entry.target == target {
            return;
        }
        if let Some(old) = entry.target.take() {
            if let Some(worker) = self.workers.get_mut(&old) {
                worker.targeted.remove(&id);
            }
        }
        if let Some(new) = &target {
            if let Some(worker) = self.workers.get_mut(new) {
                worker.targeted.insert(id);
            }
        }
        entry.target = target;
    }

    /// Recomputes the target of every task of `kind`; returns the tasks whose target moved.
    fn retarget(&mut self, kind: TaskKind) -> Vec<Uuid> {
        let Some(ring) = self.rings.get(&kind) else {
            return Vec::new();
        };
        let moved: Vec<(Uuid, Option<WorkerId>)> = self
            .tasks
            .iter()
            .filter_map(|(id, entry)| {
                let task = entry.task.as_ref()?;
                if task.kind() != kind {
                    return None;
                }
                let target = ring.get(*id);
                (target != entry.target.as_ref()).then(|| (*id, target.cloned()))
            })
            .collect();
        let ids = moved.iter().map(|(id, _)| *id).collect();
        for (id, target) in moved {
            self.set_target(id, target);
        }
        ids
    }

    /// Forgets a worker (after leave or eviction); its tasks go to the rest of the ring.
    fn remove_worker(&mut self, worker: &str, reason: &str, close: bool) {
        let Some((id, entry)) = self.workers.remove_entry(worker) else {
            return;
        };
        self.outbox.remove(worker);
        if close {
            if let Some(conn) = entry.conn {
                self.actions.push(Action::Close {
                    conn,
                    reason: format!("evicted: {reason}"),
                });
            }
        }
        let mut dirty: Vec<Uuid> = Vec::with_capacity(entry.held.len() + entry.targeted.len());
        for task in &entry.held {
            if let Some(task_entry) = self.tasks.get_mut(task) {
                task_entry.holders.retain(|h| h.worker != id);
            }
            dirty.push(*task);
        }
        // Targets naming the removed worker must not linger even if the ring is rebuilt
        // to the same owners (it cannot be, but the bookkeeping must not depend on it).
        for task in &entry.targeted {
            if let Some(task_entry) = self.tasks.get_mut(task) {
                if task_entry.target.as_ref() == Some(&id) {
                    task_entry.target = None;
                }
            }
        }
        if let Some(ring) = self.rings.get_mut(&entry.kind) {
            ring.remove(&id);
        }
        dirty.extend(self.retarget(entry.kind));
        self.changed = true;
        self.reconcile_many(dirty);
    }

    fn active(&self) -> bool {
        self.tasks_loaded && self.hold_until.is_none()
    }

    fn reconcile_all(&mut self) {
        let ids: Vec<Uuid> = self.tasks.keys().copied().collect();
        self.reconcile_many(ids);
    }

    fn reconcile_many(&mut self, ids: Vec<Uuid>) {
        if !self.active() {
            return;
        }
        for id in ids {
            self.reconcile(id);
        }
    }

    /// Moves one task's holders one step towards its target.
    fn reconcile(&mut self, id: Uuid) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        for holder in &mut entry.holders {
            if holder.state == HoldState::Unassigning {
                continue;
            }
            let wanted = entry.task.is_some()
                && entry.target.as_ref() == Some(&holder.worker)
                && !holder.stale;
            if wanted {
                continue;
            }
            // A disconnected holder is left alone: it either reconnects (and is told
            // then) or is evicted (and forgotten).
            if self
                .workers
                .get(&holder.worker)
                .is_some_and(|w| w.conn.is_some())
            {
                self.outbox
                    .entry(holder.worker.clone())
                    .or_default()
                    .unassign
                    .push(id);
                holder.state = HoldState::Unassigning;
            }
        }
        if entry.holders.is_empty() {
            match (&entry.task, &entry.target) {
                (Some(task), Some(target)) => {
                    if let Some(worker) = self.workers.get_mut(target) {
                        if worker.conn.is_some() {
                            self.outbox
                                .entry(target.clone())
                                .or_default()
                                .assign
                                .push(task.clone());
                            entry.holders.push(Holder {
                                worker: target.clone(),
                                state: HoldState::Assigning,
                                stale: false,
                            });
                            worker.held.insert(id);
                            self.changed = true;
                        }
                    }
                }
                (None, _) => {
                    self.tasks.remove(&id);
                }
                (Some(_), None) => {}
            }
        }
    }

    /// Turns the outbox into numbered messages and returns every pending action.
    fn finish(&mut self, now: Instant) -> Vec<Action> {
        for (worker_id, outgoing) in self.outbox.drain() {
            let Some(worker) = self.workers.get_mut(&worker_id) else {
                continue;
            };
            let Some(conn) = worker.conn else {
                continue;
            };
            // Unassigns first: a worker may be giving up one task while receiving another.
            for chunk in outgoing.unassign.chunks(MAX_BATCH) {
                let seq = worker.next_seq;
                worker.next_seq += 1;
                worker.pending.insert(
                    seq,
                    Pending {
                        sent_at: now,
                        assign: Vec::new(),
                        unassign: chunk.to_vec(),
                    },
                );
                self.counters.unassigned += chunk.len() as u64;
                self.actions.push(Action::Send {
                    conn,
                    message: CoordinatorMessage::Unassign {
                        seq,
                        tasks: chunk.to_vec(),
                    },
                });
            }
            for chunk in outgoing.assign.chunks(MAX_BATCH) {
                let seq = worker.next_seq;
                worker.next_seq += 1;
                worker.pending.insert(
                    seq,
                    Pending {
                        sent_at: now,
                        assign: chunk.iter().map(|t| t.id).collect(),
                        unassign: Vec::new(),
                    },
                );
                self.counters.assigned += chunk.len() as u64;
                self.actions.push(Action::Send {
                    conn,
                    message: CoordinatorMessage::Assign {
                        seq,
                        tasks: chunk.to_vec(),
                    },
                });
            }
        }
        std::mem::take(&mut self.actions)
    }
}

// The status report (`GET /v1/status`), in a file of its own.
mod status;

pub use status::{KindStatus, Status, WorkerStatus};

#[cfg(test)]
mod tests {
    use stargazer_core::model::TaskParams;

    use super::*;

    const TIMING: Timing = Timing {
        eviction_timeout: Duration::from_secs(10),
        reconnect_window: Duration::from_secs(5),
        ack_timeout: Duration::from_secs(30),
    };

    fn task(n: u128, kind: TaskKind) -> Task {
        let id = Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) + 1);
        let params = match kind {
            TaskKind::Youtube => TaskParams::Youtube {
                channel_id: format!("UC{n:022}"),
            },
            TaskKind::Twitter => TaskParams::Twitter {
                user_id: n.to_string(),
            },
            TaskKind::Twitch => TaskParams::Twitch {
                broadcaster_id: n.to_string(),
            },
            TaskKind::Bilibili => TaskParams::Bilibili { uid: n.to_string() },
        };
        Task {
            id,
            entity: Uuid::from_u128(n),
            params,
        }
    }

    /// Acknowledges every command in `actions` as `worker` would; returns follow-ups.
    fn ack_all(
        state: &mut Assignment,
        worker: &str,
        conn: ConnId,
        actions: &[Action],
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for action in actions {
            if let Action::Send { conn: c, message } = action {
                let seq = match message {
                    CoordinatorMessage::Assign { seq, .. }
                    | CoordinatorMessage::Unassign { seq, .. } => *seq,
                    _ => continue,
                };
                if *c == conn {
                    out.extend(state.ack(worker, conn, seq, &[], now));
                }
            }
        }
        out
    }

    /// Acknowledges everything the listed workers are sent until nothing more is sent.
    fn settle(
        state: &mut Assignment,
        workers: &[(&str, ConnId)],
        actions: Vec<Action>,
        now: Instant,
    ) {
        let mut actions = actions;
        while !actions.is_empty() {
            let mut next = Vec::new();
            for (worker, conn) in workers {
                next.extend(ack_all(state, worker, *conn, &actions, now));
            }
            actions = next;
        }
    }

    fn sent_to(actions: &[Action], conn: ConnId) -> (Vec<Uuid>, Vec<Uuid>) {
        let (mut assigned, mut unassigned) = (Vec::new(), Vec::new());
        for action in actions {
            if let Action::Send { conn: c, message } = action {
                if *c != conn {
                    continue;
                }
                match message {
                    CoordinatorMessage::Assign { tasks, .. } => {
                        assigned.extend(tasks.iter().map(|t| t.id))
                    }
                    CoordinatorMessage::Unassign { tasks, .. } => {
                        unassigned.extend(tasks.iter().copied())
                    }
                    _ => {}
                }
            }
        }
        (assigned, unassigned)
    }

    #[test]
    fn a_move_waits_for_the_unassign_ack() {
        let now = Instant::now();
        let mut state = Assignment::new(64, TIMING, None);
        let tasks: Vec<Task> = (0..200).map(|n| task(n, TaskKind::Youtube)).collect();
        state.load_tasks(tasks.clone(), now);
        let first = state.connect("a", TaskKind::Youtube, 1, &[], now);
        assert_eq!(sent_to(&first, 1).0.len(), 200);
        assert!(ack_all(&mut state, "a", 1, &first, now).is_empty());
        assert!(state.status(false, now).settled);

        let joined = state.connect("b", TaskKind::Youtube, 2, &[], now);
        let (to_b, _) = sent_to(&joined, 2);
        let (_, from_a) = sent_to(&joined, 1);
        assert!(to_b.is_empty(), "nothing reaches b before a lets go");
        assert!(!from_a.is_empty() && from_a.len() < 200);
        let follow = ack_all(&mut state, "a", 1, &joined, now);
        let (to_b, _) = sent_to(&follow, 2);
        let mut expected = from_a.clone();
        expected.sort_unstable();
        let mut got = to_b.clone();
        got.sort_unstable();
        assert_eq!(got, expected);
        ack_all(&mut state, "b", 2, &follow, now);
        let status = state.status(true, now);
        assert!(status.settled);
        assert_eq!(status.workers.iter().map(|w| w.tasks).sum::<usize>(), 200);
    }

    #[test]
    fn last_worker_leaving_unbinds_and_a_rejoin_rebinds_everything() {
        let now = Instant::now();
        let mut state = Assignment::new(16, TIMING, None);
        state.load_tasks((0..50).map(|n| task(n, TaskKind::Twitter)).collect(), now);
        let actions = state.connect("x", TaskKind::Twitter, 1, &[], now);
        ack_all(&mut state, "x", 1, &actions, now);
        assert!(state.disconnect("x", 1, true, now).is_empty());
        let status = state.status(false, now);
        assert_eq!(status.unassigned_count, 50);
        assert!(status.workers.is_empty());
        let actions = state.connect("y", TaskKind::Twitter, 2, &[], now);
        assert_eq!(sent_to(&actions, 2).0.len(), 50);
        ack_all(&mut state, "y", 2, &actions, now);
        assert!(state.status(false, now).settled);
    }

    #[test]
    fn silent_workers_are_evicted_and_quick_reconnects_move_nothing() {
        let start = Instant::now();
        let mut state = Assignment::new(32, TIMING, None);
        state.load_tasks(
            (0..100).map(|n| task(n, TaskKind::Youtube)).collect(),
            start,
        );
        let both = [("a", 1), ("b", 2)];
        for (w, conn) in both {
            let actions = state.connect(w, TaskKind::Youtube, conn, &[], start);
            settle(&mut state, &both, actions, start);
        }
        assert!(state.status(false, start).settled);
        let held_by_a = state.status(true, start).workers[0]
            .task_ids
            .clone()
            .unwrap();

        // a drops its connection and comes back within its window: nothing moves.
        let t1 = start + Duration::from_secs(3);
        state.heard("b", 2, t1);
        assert!(state.disconnect("a", 1, false, t1).is_empty());
        assert_eq!(state.next_deadline(), Some(t1 + TIMING.reconnect_window));
        let back = state.connect(
            "a",
            TaskKind::Youtube,
            3,
            &held_by_a,
            t1 + Duration::from_secs(1),
        );
        assert!(back.is_empty(), "{back:?}");
        let t1 = t1 + Duration::from_secs(1);

        // a goes silent: at its deadline it is evicted and b gets everything.
        let t2 = t1 + TIMING.eviction_timeout;
        state.heard("b", 2, t2);
        assert_eq!(state.next_deadline(), Some(t2));
        let evicted = state.tick(t2);
        assert!(evicted.contains(&Action::Close {
            conn: 3,
            reason: "evicted: missed heartbeats".into()
        }));
        assert_eq!(sent_to(&evicted, 2).0.len(), held_by_a.len());
        ack_all(&mut state, "b", 2, &evicted, t2);
        assert!(state.status(false, t2).settled);
        assert_eq!(state.counters().evicted, 1);

        // a comes back, then its process dies: evicted when the reconnect window closes.
        let t3 = t2 + Duration::from_secs(1);
        let actions = state.connect("a", TaskKind::Youtube, 4, &[], t3);
        settle(&mut state, &[("a", 4), ("b", 2)], actions, t3);
        state.disconnect("a", 4, false, t3);
        let t4 = t3 + TIMING.reconnect_window;
        state.heard("b", 2, t4);
        assert!(state.tick(t4 - Duration::from_millis(1)).is_empty());
        let evicted = state.tick(t4);
        assert_eq!(sent_to(&evicted, 2).0.len(), held_by_a.len());
        assert_eq!(state.counters().evicted, 2);
    }

    #[test]
    fn a_worker_stuck_on_a_command_is_evicted_but_a_slow_one_is_not() {
        let start = Instant::now();
        let mut state = Assignment::new(16, TIMING, None);
        state.load_tasks(
            (0..(3 * MAX_BATCH as u128))
                .map(|n| task(n, TaskKind::Twitter))
                .collect(),
            start,
        );
        let actions = state.connect("slow", TaskKind::Twitter, 1, &[], start);
        let seqs: Vec<u64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    message: CoordinatorMessage::Assign { seq, .. },
                    ..
                } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs.len(), 3, "batches of at most {MAX_BATCH}");
        // Each batch takes most of the ack timeout, but the worker keeps making progress.
        let mut now = start;
        for seq in seqs {
            now += TIMING.ack_timeout - Duration::from_secs(1);
            state.heard("slow", 1, now);
            assert!(state.tick(now).is_empty());
            state.ack("slow", 1, seq, &[], now);
        }
        assert!(state.status(false, now).settled);

        // A command that is never acknowledged gets the worker evicted, heartbeats or not.
        let extra = task(999_999, TaskKind::Twitter);
        state.apply_change(TaskChange::Upserted(extra), now);
        let stuck = now + TIMING.ack_timeout;
        state.heard("slow", 1, stuck);
        let evicted = state.tick(stuck);
        assert!(evicted.contains(&Action::Close {
            conn: 1,
            reason: "evicted: did not acknowledge commands in time".into()
        }));
    }

    #[test]
    fn a_resync_touches_only_what_differs() {
        let now = Instant::now();
        let mut state = Assignment::new(16, TIMING, None);
        let mut tasks: Vec<Task> = (0..20).map(|n| task(n, TaskKind::Youtube)).collect();
        state.load_tasks(tasks.clone(), now);
        let actions = state.connect("a", TaskKind::Youtube, 1, &[], now);
        settle(&mut state, &[("a", 1)], actions, now);
        // The change stream broke; meanwhile one task went, one came, one changed.
        let removed = tasks.remove(0);
        tasks.push(task(100, TaskKind::Youtube));
        tasks[0].params = TaskParams::Youtube {
            channel_id: "UCother".into(),
        };
        let actions = state.load_tasks(tasks.clone(), now);
        let (mut assigned, mut unassigned) = sent_to(&actions, 1);
        assigned.sort_unstable();
        unassigned.sort_unstable();
        assert_eq!(assigned, vec![tasks[19].id]);
        let mut expected = vec![removed.id, tasks[0].id];
        expected.sort_unstable();
        assert_eq!(unassigned, expected);
        settle(&mut state, &[("a", 1)], actions, now);
        let status = state.status(true, now);
        assert!(status.settled);
        assert_eq!(status.workers[0].tasks, 20);
    }

    #[test]
    fn kinds_never_mix_and_foreign_or_deleted_reports_are_unassigned() {
        let now = Instant::now();
        let mut state = Assignment::new(16, TIMING, None);
        let yt = task(1, TaskKind::Youtube);
        let tw = task(2, TaskKind::Twitter);
        state.load_tasks(vec![yt.clone(), tw.clone()], now);
        let ghost = Uuid::from_u128(99);
        let from_y = state.connect("y", TaskKind::Youtube, 1, &[tw.id, ghost], now);
        let (assigned, mut unassigned) = sent_to(&from_y, 1);
        assert_eq!(assigned, vec![yt.id]);
        unassigned.sort_unstable();
        let mut expected = vec![tw.id, ghost];
        expected.sort_unstable();
        assert_eq!(unassigned, expected);
        // The twitter task waits for the youtube worker to let go.
        let actions = state.connect("t", TaskKind::Twitter, 2, &[], now);
        assert!(sent_to(&actions, 2).0.is_empty());
        let follow = ack_all(&mut state, "y", 1, &from_y, now);
        assert_eq!(sent_to(&follow, 2), (vec![tw.id], vec![]));
        assert!(sent_to(&follow, 1).0.is_empty());
        ack_all(&mut state, "t", 2, &follow, now);
        let status = state.status(true, now);
        assert!(status.settled);
        assert_eq!(status.workers[0].task_ids.as_deref(), Some(&[tw.id][..]));
        assert_eq!(status.workers[1].task_ids.as_deref(), Some(&[yt.id][..]));
    }

    #[test]
    fn param_change_restarts_on_the_same_worker_and_delete_unassigns() {
        let now = Instant::now();
        let mut state = Assignment::new(16, TIMING, None);
        let mut t = task(5, TaskKind::Youtube);
        state.load_tasks(vec![t.clone()], now);
        let actions = state.connect("a", TaskKind::Youtube, 1, &[], now);
        ack_all(&mut state, "a", 1, &actions, now);
        t.params = TaskParams::Youtube {
            channel_id: "UCchanged".into(),
        };
        let actions = state.apply_change(TaskChange::Upserted(t.clone()), now);
        assert_eq!(sent_to(&actions, 1), (vec![], vec![t.id]));
        let follow = ack_all(&mut state, "a", 1, &actions, now);
        assert_eq!(sent_to(&follow, 1), (vec![t.id], vec![]));
        ack_all(&mut state, "a", 1, &follow, now);
        let actions = state.apply_change(TaskChange::Deleted(t.id), now);
        assert_eq!(sent_to(&actions, 1), (vec![], vec![t.id]));
        ack_all(&mut state, "a", 1, &actions, now);
        let status = state.status(false, now);
        assert!(status.settled);
        assert_eq!(status.tasks[&TaskKind::Youtube].total, 0);
    }

    #[test]
    fn a_restored_snapshot_with_the_same_workers_sends_nothing() {
        let now = Instant::now();
        let tasks: Vec<Task> = (0..300).map(|n| task(n, TaskKind::Youtube)).collect();
        let mut old = Assignment::new(64, TIMING, None);
        old.load_tasks(tasks.clone(), now);
        let all = [("a", 1), ("b", 2), ("c", 3)];
        for (w, conn) in all {
            let actions = old.connect(w, TaskKind::Youtube, conn, &[], now);
            settle(&mut old, &all, actions, now);
        }
        assert!(old.status(false, now).settled);
        let snapshot = old.snapshot();

        let mut new = Assignment::new(64, TIMING, Some(now + Duration::from_secs(1)));
        new.restore(&snapshot, now);
        let mut sent = Vec::new();
        for (i, saved) in snapshot.workers.iter().enumerate() {
            sent.extend(new.connect(&saved.id, saved.kind, 10 + i as u64, &saved.tasks, now));
        }
        sent.extend(new.load_tasks(tasks, now));
        sent.extend(new.tick(now + Duration::from_secs(1)));
        assert!(sent.is_empty(), "{sent:?}");
        assert!(new.status(false, now).settled);
    }
}
