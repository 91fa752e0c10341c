//! The coordinator ↔ worker WebSocket protocol (docs/ARCHITECTURE.md §5, coordinator).
//!
//! A worker opens `GET /v1/worker` ([`WORKER_PATH`]) with HTTP Basic credentials that
//! grant `coordinator: ro`, then speaks JSON text frames, one message per frame, each an
//! object tagged by `"type"`:
//!
//! ```text
//! worker                                   coordinator
//!   announce {worker_id, kind, tasks} ──►
//!                                     ◄── welcome {heartbeat_interval_ms, heartbeat_misses}
//!                                     ◄── assign {seq, tasks} / unassign {seq, tasks}
//!   ack {seq, failed} ──────────────────►
//!   heartbeat ◄──────────────────────────► heartbeat      (every interval, both ways)
//!   leave ──────────────────────────────►                 (clean shutdown, tasks stopped)
//! ```
//!
//! `announce.tasks` is the set the worker is running right now: empty on a fresh start,
//! its current set after a reconnect. The coordinator reconciles that report against its
//! assignment, so a reconnect (or a coordinator restart) causes no stop/start churn.
//! Every `assign`/`unassign` carries a `seq` the worker echoes in its `ack` once it has
//! applied the change; the coordinator never gives a task to a second worker before the
//! first one has acknowledged giving it up (or has been evicted).
//! Either side treats `heartbeat_misses` intervals without any message as a dead peer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Task, TaskKind};

/// The HTTP path of the worker endpoint on the coordinator.
pub const WORKER_PATH: &str = "/v1/worker";

/// Response header of a standby coordinator's refusal (503) naming the leader's id.
pub const LEADER_ID_HEADER: &str = "x-stargazer-leader";

/// Response header of a standby coordinator's refusal (503) carrying the leader's
/// advertised URL, when it advertises one; a worker given that URL tries it next.
pub const LEADER_URL_HEADER: &str = "x-stargazer-leader-url";

/// Messages a worker sends to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// First message of every connection: who the worker is and what it runs now.
    Announce {
        /// Stable worker identity; a reconnect with the same id resumes its assignment.
        worker_id: String,
        /// The only kind of task the worker accepts.
        kind: TaskKind,
        /// Ids of the tasks the worker is running at this moment.
        #[serde(default)]
        tasks: Vec<Uuid>,
    },
    /// The assign or unassign numbered `seq` has been applied.
    Ack {
        /// The `seq` of the coordinator message being acknowledged.
        seq: u64,
        /// Tasks of an `assign` the worker could not start (it still holds them, so a
        /// later `unassign` is the only way they leave it).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed: Vec<TaskFailure>,
    },
    /// Liveness signal, sent every heartbeat interval.
    Heartbeat,
    /// The worker is shutting down and has stopped every task; reassign them now.
    Leave,
}

/// Messages the coordinator sends to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoordinatorMessage {
    /// Answer to `announce`: the liveness rules of this coordinator.
    Welcome {
        /// How often each side sends a heartbeat, milliseconds.
        heartbeat_interval_ms: u64,
        /// After this many intervals without any message a peer is considered dead.
        heartbeat_misses: u32,
    },
    /// Start these tasks (a task already running with the same parameters is kept).
    Assign {
        /// Sequence number to echo in the `ack`.
        seq: u64,
        /// The tasks, with their parameters.
        tasks: Vec<Task>,
    },
    /// Stop these tasks.
    Unassign {
        /// Sequence number to echo in the `ack`.
        seq: u64,
        /// Ids of the tasks to stop.
        tasks: Vec<Uuid>,
    },
    /// Liveness signal, sent every heartbeat interval.
    Heartbeat,
    /// The connection is refused or ended for the stated reason (followed by a close).
    Error {
        /// Human-readable reason.
        message: String,
    },
}

/// A task a worker failed to start, as reported in an `ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The task id.
    pub task: Uuid,
    /// Why it could not start.
    pub error: String,
}

/// A frame that is not a valid protocol message.
#[derive(Debug, thiserror::Error)]
#[error("invalid protocol message: {0}")]
pub struct ProtocolError(#[from] serde_json::Error);

impl WorkerMessage {
    /// The JSON text frame for this message.
    pub fn to_text(&self) -> String {
        // Enums of strings, numbers and uuids always serialize.
        serde_json::to_string(self).expect("a WorkerMessage always serializes")
    }

    /// Parses a JSON text frame.
    pub fn from_text(text: &str) -> Result<Self, ProtocolError> {
        Ok(serde_json::from_str(text)?)
    }
}

impl CoordinatorMessage {
    /// The JSON text frame for this message.
    pub fn to_text(&self) -> String {
        // Enums of strings, numbers, uuids and tasks always serialize.
        serde_json::to_string(self).expect("a CoordinatorMessage always serializes")
    }

    /// Parses a JSON text frame.
    pub fn from_text(text: &str) -> Result<Self, ProtocolError> {
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskParams;

    #[test]
    fn messages_have_a_type_tag_and_round_trip() {
        let id = Uuid::from_u128(1);
        let announce = WorkerMessage::Announce {
            worker_id: "yt-1".into(),
            kind: TaskKind::Youtube,
            tasks: vec![id],
        };
        let text = announce.to_text();
        assert_eq!(
            text,
            r#"{"type":"announce","worker_id":"yt-1","kind":"youtube","tasks":["00000000-0000-0000-0000-000000000001"]}"#
        );
        assert_eq!(WorkerMessage::from_text(&text).unwrap(), announce);

        let assign = CoordinatorMessage::Assign {
            seq: 7,
            tasks: vec![Task {
                id,
                entity: Uuid::from_u128(2),
                params: TaskParams::Twitter {
                    user_id: "12".into(),
                },
            }],
        };
        let text = assign.to_text();
        assert!(
            text.starts_with(r#"{"type":"assign","seq":7,"tasks":[{"#),
            "{text}"
        );
        assert!(
            text.contains(r#""kind":"twitter","user_id":"12""#),
            "{text}"
        );
        assert_eq!(CoordinatorMessage::from_text(&text).unwrap(), assign);

        assert_eq!(
            WorkerMessage::Heartbeat.to_text(),
            r#"{"type":"heartbeat"}"#
        );
        let ack = WorkerMessage::from_text(r#"{"type":"ack","seq":3}"#).unwrap();
        assert_eq!(
            ack,
            WorkerMessage::Ack {
                seq: 3,
                failed: vec![]
            }
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(WorkerMessage::from_text("{}").is_err());
        assert!(
            WorkerMessage::from_text(r#"{"type":"announce","worker_id":"w","kind":"tiktok"}"#)
                .is_err()
        );
        assert!(CoordinatorMessage::from_text("not json").is_err());
    }
}
