//! The status report of the assignment: workers, task counts per kind, unassigned tasks.

use super::*;

impl Assignment {
    /// A report of workers, task counts and unassigned tasks; `detail` lists each
    /// worker's task ids.
    pub fn status(&self, detail: bool, now: Instant) -> Status {
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let task_ids = detail.then(|| {
                    let mut ids: Vec<Uuid> = w.held.iter().copied().collect();
                    ids.sort_unstable();
                    ids
                });
                WorkerStatus {
                    id: id.to_string(),
                    kind: w.kind,
                    connected: w.conn.is_some(),
                    tasks: w.held.len(),
                    targeted: w.targeted.len(),
                    pending_acks: w.pending.len(),
                    last_seen_ms_ago: now.saturating_duration_since(w.last_seen).as_millis() as u64,
                    task_ids,
                }
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        let mut kinds: BTreeMap<TaskKind, KindStatus> = TaskKind::ALL
            .iter()
            .map(|k| (*k, KindStatus::default()))
            .collect();
        let mut unassigned = Vec::new();
        let mut settled = self.tasks_loaded;
        for (id, entry) in &self.tasks {
            let Some(task) = &entry.task else {
                // A deleted task some worker still has to give up.
                settled = false;
                continue;
            };
            let kind = kinds.entry(task.kind()).or_default();
            kind.total += 1;
            if entry.holders.is_empty() {
                kind.unassigned += 1;
                unassigned.push(*id);
            }
            let in_place = match (&entry.target, entry.holders.as_slice()) {
                (Some(target), [holder]) => {
                    holder.worker == *target && holder.state == HoldState::Held && !holder.stale
                }
                (None, []) => true,
                _ => false,
            };
            if !in_place {
                kind.moving += 1;
                settled = false;
            }
        }
        unassigned.sort_unstable();
        let unassigned_count = unassigned.len();
        unassigned.truncate(STATUS_UNASSIGNED_LIMIT);
        Status {
            workers,
            tasks: kinds,
            unassigned_count,
            unassigned,
            holding: self.holding(),
            settled,
        }
    }
}

/// What `GET /v1/status` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Every worker on a ring, connected or within its reconnect window, by id.
    pub workers: Vec<WorkerStatus>,
    /// Task counts per kind.
    pub tasks: BTreeMap<TaskKind, KindStatus>,
    /// How many tasks no worker holds.
    pub unassigned_count: usize,
    /// Ids of unassigned tasks, sorted, at most [`STATUS_UNASSIGNED_LIMIT`].
    pub unassigned: Vec<Uuid>,
    /// Assignments are paused (start-up hold, or the task list is not loaded yet).
    pub holding: bool,
    /// Every task sits acknowledged on its target and nothing is in flight.
    pub settled: bool,
}

/// One worker in a [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// The announced id.
    pub id: String,
    /// Its kind.
    pub kind: TaskKind,
    /// Whether it has a live connection (otherwise it is within its reconnect window, or
    /// restored from a snapshot and not back yet).
    pub connected: bool,
    /// Tasks it holds (including ones being assigned or unassigned).
    pub tasks: usize,
    /// Tasks its ring arcs cover.
    pub targeted: usize,
    /// Commands sent and not yet acknowledged.
    pub pending_acks: usize,
    /// Time since its last message, milliseconds.
    pub last_seen_ms_ago: u64,
    /// The held task ids, sorted (only when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ids: Option<Vec<Uuid>>,
}

/// Task counts of one kind in a [`Status`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindStatus {
    /// Tasks of this kind in storage.
    pub total: usize,
    /// Held by no worker.
    pub unassigned: usize,
    /// Not (yet) acknowledged by exactly their target worker.
    pub moving: usize,
}
