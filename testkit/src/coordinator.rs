//! A minimal coordinator speaking the worker protocol (`GET /v1/worker`, HTTP Basic,
//! JSON frames): it records what the worker says and sends what the test asks.

use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use tokio::sync::mpsc;

/// The worker user name the coordinator accepts.
pub const USER: &str = "worker";
/// The worker password the coordinator accepts.
pub const PASSWORD: &str = "secret";
/// `Basic base64("worker:secret")`.
const EXPECTED_AUTH: &str = "Basic d29ya2VyOnNlY3JldA==";

#[derive(Clone)]
struct CoordState {
    received: Arc<Mutex<Vec<WorkerMessage>>>,
    outbox: Arc<Mutex<Option<mpsc::UnboundedReceiver<CoordinatorMessage>>>>,
}

/// A coordinator on 127.0.0.1 serving one worker session at a time.
pub struct FakeCoordinator {
    /// The `ws://` base URL to give the worker.
    pub url: String,
    received: Arc<Mutex<Vec<WorkerMessage>>>,
    tx: mpsc::UnboundedSender<CoordinatorMessage>,
}

async fn upgrade(
    State(state): State<CoordState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(EXPECTED_AUTH) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    ws.on_upgrade(move |socket| session(socket, state))
}

async fn session(mut socket: WebSocket, state: CoordState) {
    let Some(mut outbox) = state.outbox.lock().unwrap().take() else {
        return;
    };
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                if let Message::Text(text) = frame {
                    let message = WorkerMessage::from_text(text.as_str()).expect("valid worker frame");
                    if matches!(message, WorkerMessage::Announce { .. }) {
                        let welcome = CoordinatorMessage::Welcome { heartbeat_interval_ms: 500, heartbeat_misses: 10 };
                        socket.send(Message::Text(welcome.to_text().into())).await.unwrap();
                    }
                    state.received.lock().unwrap().push(message);
                }
            }
            Some(out) = outbox.recv() => {
                if socket.send(Message::Text(out.to_text().into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

impl FakeCoordinator {
    /// Starts serving on a free port.
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = CoordState {
            received: received.clone(),
            outbox: Arc::new(Mutex::new(Some(rx))),
        };
        let router = Router::new()
            .route("/v1/worker", get(upgrade))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            url: format!("ws://{addr}"),
            received,
            tx,
        }
    }

    /// Queues `message` for the worker's session.
    pub fn send(&self, message: CoordinatorMessage) {
        self.tx.send(message).unwrap();
    }

    /// Every frame the worker sent so far.
    pub fn received(&self) -> Vec<WorkerMessage> {
        self.received.lock().unwrap().clone()
    }

    /// Whether the worker acknowledged `seq` with no failures.
    pub fn acked(&self, seq: u64) -> bool {
        self.received()
            .iter()
            .any(|m| matches!(m, WorkerMessage::Ack { seq: s, failed } if *s == seq && failed.is_empty()))
    }
}
