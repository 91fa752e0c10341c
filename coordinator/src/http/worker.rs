//! `GET /v1/worker`: the worker WebSocket. A standby answers 503 naming the leader
//! (`not_leader`, headers `x-stargazer-leader` and `x-stargazer-leader-url`). On the
//! leader, after Basic authentication and the upgrade,
//! the first frame must be an `announce`; the handler answers `welcome`, registers the
//! connection with the engine, then relays: engine commands out, acks and heartbeats in,
//! and its own heartbeat every interval. Liveness decisions are the engine's: it closes
//! the connection through the outbox when the worker is evicted. The connection belongs
//! to the leadership term it was accepted in and closes when that term ends.

use std::sync::atomic::Ordering;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::auth::ServiceAuth;
use crate::election::Term;
use crate::engine::{EngineEvent, Outbound};
use crate::http::{AppState, HttpError};

/// Largest frame accepted from a worker: an announce of 100 000 task ids is ~4 MB.
const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// Longest accepted worker id.
const MAX_WORKER_ID_LEN: usize = 200;

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    auth: ServiceAuth,
    ws: WebSocketUpgrade,
) -> Result<Response, HttpError> {
    let term = state.term()?;
    let token = state.sockets.token();
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            serve(socket, state, term, auth.username).await;
            drop(token);
        }))
}

/// How the relay loop ended.
enum End {
    /// The worker sent `leave`: it has stopped its tasks.
    Leave,
    /// The connection dropped or the worker closed it without `leave`.
    Lost,
    /// The engine closed it (eviction, replacement) or is gone.
    ByEngine,
    /// The coordinator is shutting down or stepped down.
    Shutdown,
}

async fn serve(mut socket: WebSocket, state: AppState, term: Term, username: String) {
    let announce_timeout = state.config.eviction_timeout();
    let first = tokio::select! {
        _ = term.stop.cancelled() => return,
        first = tokio::time::timeout(announce_timeout, first_text(&mut socket)) => first,
    };
    let (worker_id, kind, reported) = match first {
        Err(_) => return refuse(socket, "no announce received in time".to_owned()).await,
        Ok(None) => return,
        Ok(Some(text)) => match WorkerMessage::from_text(&text) {
            Ok(WorkerMessage::Announce {
                worker_id,
                kind,
                tasks,
            }) => {
                if worker_id.trim().is_empty() || worker_id.len() > MAX_WORKER_ID_LEN {
                    return refuse(
                        socket,
                        format!("worker_id must be 1 to {MAX_WORKER_ID_LEN} bytes and not blank"),
                    )
                    .await;
                }
                (worker_id, kind, tasks)
            }
            Ok(other) => {
                return refuse(
                    socket,
                    format!("expected announce as the first message, got {other:?}"),
                )
                .await;
            }
            Err(err) => return refuse(socket, err.to_string()).await,
        },
    };
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("worker", worker_id = %worker_id, %kind, conn, %username, epoch = term.epoch);
    relay(socket, state, term, worker_id, kind, reported, conn)
        .instrument(span)
        .await;
}

async fn relay(
    mut socket: WebSocket,
    state: AppState,
    term: Term,
    worker_id: String,
    kind: stargazer_core::model::TaskKind,
    reported: Vec<uuid::Uuid>,
    conn: u64,
) {
    let interval = state.config.heartbeat_interval();
    let welcome = CoordinatorMessage::Welcome {
        heartbeat_interval_ms: interval.as_millis() as u64,
        heartbeat_misses: state.config.heartbeat_misses,
    };
    if socket.send(Message::text(welcome.to_text())).await.is_err() {
        return;
    }
    tracing::info!(reported = reported.len(), "worker announced");
    let (outbox, mut commands) = mpsc::unbounded_channel();
    let connected = EngineEvent::Connected {
        worker: worker_id.clone(),
        kind,
        conn,
        reported,
        outbox,
    };
    if term.engine.send(connected).await.is_err() {
        return close(socket, close_code::AWAY, "coordinator shutting down").await;
    }
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            _ = term.stop.cancelled() => break End::Shutdown,
            command = commands.recv() => match command {
                Some(Outbound::Message(message)) => {
                    if socket.send(Message::text(message.to_text())).await.is_err() {
                        break End::Lost;
                    }
                }
                Some(Outbound::Close(reason)) => {
                    tracing::info!(%reason, "closing worker connection");
                    let error = CoordinatorMessage::Error { message: reason };
                    let _ = socket.send(Message::text(error.to_text())).await;
                    break End::ByEngine;
                }
                None => break End::ByEngine,
            },
            _ = heartbeat.tick() => {
                if socket.send(Message::text(CoordinatorMessage::Heartbeat.to_text())).await.is_err() {
                    break End::Lost;
                }
            }
            frame = socket.recv() => {
                let text = match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break End::Lost,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => {
                        let _ = term.engine.send(EngineEvent::Heard { worker: worker_id.clone(), conn }).await;
                        continue;
                    }
                };
                let event = match WorkerMessage::from_text(&text) {
                    Ok(WorkerMessage::Heartbeat) => EngineEvent::Heard { worker: worker_id.clone(), conn },
                    Ok(WorkerMessage::Ack { seq, failed }) => EngineEvent::Ack { worker: worker_id.clone(), conn, seq, failed },
                    Ok(WorkerMessage::Leave) => break End::Leave,
                    Ok(WorkerMessage::Announce { .. }) => {
                        let error = CoordinatorMessage::Error { message: "announce is only valid as the first message".into() };
                        let _ = socket.send(Message::text(error.to_text())).await;
                        EngineEvent::Heard { worker: worker_id.clone(), conn }
                    }
                    Err(err) => {
                        tracing::warn!(cause = %err, "invalid message from worker");
                        let error = CoordinatorMessage::Error { message: err.to_string() };
                        let _ = socket.send(Message::text(error.to_text())).await;
                        EngineEvent::Heard { worker: worker_id.clone(), conn }
                    }
                };
                if term.engine.send(event).await.is_err() {
                    break End::Shutdown;
                }
            }
        }
    };
    match end {
        End::Shutdown => {
            close(
                socket,
                close_code::AWAY,
                "coordinator shutting down or no longer the leader",
            )
            .await
        }
        End::ByEngine => close(socket, close_code::POLICY, "closed by the coordinator").await,
        End::Leave | End::Lost => {
            let clean = matches!(end, End::Leave);
            tracing::info!(clean, "worker connection ended");
            let _ = term
                .engine
                .send(EngineEvent::Disconnected {
                    worker: worker_id,
                    conn,
                    clean,
                })
                .await;
            if clean {
                close(socket, close_code::NORMAL, "goodbye").await;
            }
        }
    }
}

/// The first text frame (other frames before it are skipped); `None` if the socket ends.
async fn first_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn refuse(mut socket: WebSocket, reason: String) {
    tracing::warn!(%reason, "refusing worker connection");
    let error = CoordinatorMessage::Error { message: reason };
    let _ = socket.send(Message::text(error.to_text())).await;
    close(socket, close_code::POLICY, "refused").await;
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
