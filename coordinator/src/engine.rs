//! The engine: one task that owns the [`Assignment`] and applies, in order, worker events
//! from the connection handlers, task changes from the watcher and its own deadlines
//! (evictions, the start-up hold), then hands the resulting messages to the connections.
//! Owning the state in one task means no locks and a single order of events.
//!
//! It also writes the snapshot: every `snapshot_interval` when something changed (by a
//! separate writer task, so storage latency never stalls assignment), and hands the final
//! state back when it stops, after that writer is done: the election stores it on a
//! graceful shutdown (so the last word in storage is the final state) and drops it when
//! the coordinator steps down (the new leader's snapshot must not be overwritten).
//!
//! One engine runs per leadership term (`election`): a standby has none.

use std::collections::HashMap;
use std::sync::Arc;

use stargazer_core::model::TaskKind;
use stargazer_core::protocol::{CoordinatorMessage, TaskFailure};
use stargazer_core::storage::StateStore;
use stargazer_core::CancellationToken;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

use crate::assignment::{Action, Assignment, ConnId, Status, Timing};
use crate::config::CoordinatorConfig;
use crate::metrics::Metrics;
use crate::snapshot::{self, Snapshot};
use crate::tasks::TaskFeed;

/// What a connection handler tells the engine.
#[derive(Debug)]
pub(crate) enum EngineEvent {
    /// A worker announced itself; `outbox` carries what the engine sends it.
    Connected {
        worker: String,
        kind: TaskKind,
        conn: ConnId,
        reported: Vec<Uuid>,
        outbox: mpsc::UnboundedSender<Outbound>,
    },
    /// A heartbeat (or any other sign of life) arrived.
    Heard { worker: String, conn: ConnId },
    /// An ack arrived.
    Ack {
        worker: String,
        conn: ConnId,
        seq: u64,
        failed: Vec<TaskFailure>,
    },
    /// The connection ended; `clean` after a `leave`.
    Disconnected {
        worker: String,
        conn: ConnId,
        clean: bool,
    },
    /// `GET /v1/status` wants a report.
    Status {
        detail: bool,
        reply: oneshot::Sender<Status>,
    },
}

/// What the engine tells a connection handler.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Send this message.
    Message(CoordinatorMessage),
    /// Send an error with this reason and close.
    Close(String),
}

/// Runs the engine until `shutdown`; answers the final assignment snapshot.
pub(crate) async fn run(
    config: Arc<CoordinatorConfig>,
    storage: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    mut events: mpsc::Receiver<EngineEvent>,
    mut feed: mpsc::Receiver<TaskFeed>,
    shutdown: CancellationToken,
) -> Snapshot {
    let start = Instant::now();
    let hold = config.startup_hold();
    let timing = Timing {
        eviction_timeout: config.eviction_timeout(),
        reconnect_window: config.heartbeat_interval(),
        ack_timeout: std::time::Duration::from_millis(config.ack_timeout_ms),
    };
    let mut state = Assignment::new(
        config.virtual_nodes,
        timing,
        (!hold.is_zero()).then(|| start + hold),
    );
    match snapshot::load(&storage).await {
        Ok(Some(saved)) => {
            tracing::info!(
                workers = saved.workers.len(),
                saved_at = %saved.saved_at,
                "restoring the previous assignment; waiting for its workers to reconnect"
            );
            state.restore(&saved, start);
        }
        Ok(None) => tracing::info!("no previous assignment; starting fresh"),
        Err(err) => {
            tracing::warn!(cause = %err, "cannot read the previous assignment; starting fresh")
        }
    }

    let (snapshot_tx, snapshot_rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
    let writer = tokio::spawn(write_snapshots(storage.clone(), snapshot_rx));
    let mut snapshot_timer = tokio::time::interval(std::time::Duration::from_millis(
        config.snapshot_interval_ms,
    ));
    snapshot_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conns: HashMap<ConnId, mpsc::UnboundedSender<Outbound>> = HashMap::new();

    loop {
        let deadline = state.next_deadline();
        let before = state.counters();
        let actions = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => handle_event(&mut state, &mut conns, event),
                None => break,
            },
            item = feed.recv() => match item {
                Some(TaskFeed::Resync(tasks)) => state.load_tasks(tasks, Instant::now()),
                Some(TaskFeed::Change(change)) => state.apply_change(change, Instant::now()),
                // The watcher only stops on shutdown.
                None => break,
            },
            _ = sleep_until(deadline) => state.tick(Instant::now()),
            _ = snapshot_timer.tick() => {
                metrics.observe(&state.status(false, Instant::now()));
                if state.take_changed() {
                    snapshot_tx.send_replace(Some(Arc::new(state.snapshot())));
                }
                Vec::new()
            }
        };
        metrics.count(before, state.counters());
        dispatch(&mut conns, actions);
    }

    drop(snapshot_tx);
    if let Err(err) = writer.await {
        tracing::error!(cause = %err, "snapshot writer failed");
    }
    tracing::info!("engine stopped");
    state.snapshot()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn handle_event(
    state: &mut Assignment,
    conns: &mut HashMap<ConnId, mpsc::UnboundedSender<Outbound>>,
    event: EngineEvent,
) -> Vec<Action> {
    let now = Instant::now();
    match event {
        EngineEvent::Connected {
            worker,
            kind,
            conn,
            reported,
            outbox,
        } => {
            conns.insert(conn, outbox);
            state.connect(&worker, kind, conn, &reported, now)
        }
        EngineEvent::Heard { worker, conn } => {
            state.heard(&worker, conn, now);
            Vec::new()
        }
        EngineEvent::Ack {
            worker,
            conn,
            seq,
            failed,
        } => state.ack(&worker, conn, seq, &failed, now),
        EngineEvent::Disconnected {
            worker,
            conn,
            clean,
        } => {
            conns.remove(&conn);
            state.disconnect(&worker, conn, clean, now)
        }
        EngineEvent::Status { detail, reply } => {
            let _ = reply.send(state.status(detail, now));
            Vec::new()
        }
    }
}

fn dispatch(conns: &mut HashMap<ConnId, mpsc::UnboundedSender<Outbound>>, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Send { conn, message } => {
                // A connection that just ended is gone from the map or has dropped its
                // receiver; its disconnect event is queued and settles the state.
                if let Some(outbox) = conns.get(&conn) {
                    let _ = outbox.send(Outbound::Message(message));
                }
            }
            Action::Close { conn, reason } => {
                if let Some(outbox) = conns.remove(&conn) {
                    let _ = outbox.send(Outbound::Close(reason));
                }
            }
        }
    }
}

async fn write_snapshots(
    storage: Arc<dyn StateStore>,
    mut latest: watch::Receiver<Option<Arc<Snapshot>>>,
) {
    while latest.changed().await.is_ok() {
        let Some(snapshot) = latest.borrow_and_update().clone() else {
            continue;
        };
        if let Err(err) = snapshot::save(&storage, &snapshot).await {
            // The next change writes a newer one; a restart meanwhile only waits longer.
            tracing::warn!(cause = %err, "cannot store the assignment snapshot");
        }
    }
}
