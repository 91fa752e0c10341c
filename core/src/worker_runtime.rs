//! The worker side of the coordinator protocol ([`crate::protocol`]), shared by the
//! YouTube and X workers.
//!
//! A worker service implements [`TaskRunner`] (start/stop one task's job) and calls
//! [`run_worker`], which connects to the coordinator with backoff, authenticates with
//! HTTP Basic, announces itself with the tasks it is running, applies `assign`/`unassign`
//! through the runner and acknowledges them, and exchanges heartbeats.
//!
//! `coordinator_url` may list several coordinators (comma-separated): one leads, the
//! others are standbys that refuse workers with 503 naming the leader
//! ([`crate::protocol::LEADER_ID_HEADER`], [`crate::protocol::LEADER_URL_HEADER`]). Each
//! connect tries the URLs in turn, starting with the last one that served (or the one a
//! refusal names), and backs off only after a full round without success.
//!
//! Losing the coordinator does not stop anything: running tasks keep running while the
//! runtime reconnects, and the new connection's `announce` reports the current set so the
//! coordinator can carry on without churn. Tasks stop only when the coordinator says so or
//! when the worker shuts down (then the runtime stops every task and sends `leave`).
//!
//! Each connection has two halves that run side by side: the socket loop (frames,
//! heartbeats, liveness) and an applier that calls the runner one command at a time, so a
//! slow `start` never delays a heartbeat. When a connection ends, the command being
//! applied finishes and the ones queued behind it are dropped unacknowledged; the next
//! `announce` reports exactly what was applied.
//!
//! [`JobSet`] ([`jobs`]) is the per-task job bookkeeping a [`TaskRunner`] builds on.

pub mod jobs;

pub use jobs::{JobSet, JobTokens};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::model::{Task, TaskKind};
use crate::protocol::{
    CoordinatorMessage, TaskFailure, WorkerMessage, LEADER_ID_HEADER, LEADER_URL_HEADER,
    WORKER_PATH,
};
use crate::wait::backoff_unless_cancelled;

/// Why a task could not be started or stopped. Boxed because the runtime never branches
/// on it: it logs the text and reports it to the coordinator.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// What a worker service plugs into the runtime: start and stop one task's job.
///
/// Both calls should return promptly (spawn the long-running job, signal it to stop);
/// the runtime applies commands one at a time. `stop` of a task that is not running must
/// succeed, and `start` is only called for a task that is not running.
#[async_trait]
pub trait TaskRunner: Send + Sync + 'static {
    /// Starts the job of `task`.
    async fn start(&self, task: Task) -> Result<(), TaskError>;
    /// Stops the job of the task with this id.
    async fn stop(&self, task_id: Uuid) -> Result<(), TaskError>;
}

/// Settings of [`run_worker`].
#[derive(Clone)]
pub struct WorkerRuntimeConfig {
    /// WebSocket URL of the coordinator, e.g. `ws://coordinator:8090/v1/worker`
    /// (`wss://` works too); a URL without a path gets `/v1/worker` appended. Several
    /// coordinators (a leader and standbys) are listed comma-separated.
    pub coordinator_url: String,
    /// Username of a credential with `coordinator: ro`.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Stable identity of this worker (e.g. the host or pod name); a restart with the same
    /// id gets the same share of tasks back. Empty means a random id per process.
    pub worker_id: String,
    /// The kind of tasks this worker runs.
    pub kind: TaskKind,
    /// Limit on opening the connection (TCP, TLS and the WebSocket handshake).
    pub connect_timeout: Duration,
    /// First delay before reconnecting; doubles on each failure.
    pub reconnect_initial: Duration,
    /// Longest delay between reconnect attempts. Keep it below the coordinator's heartbeat
    /// cycle so a restarted coordinator sees its workers back within its grace period.
    pub reconnect_max: Duration,
    /// Heartbeat interval used until the coordinator's `welcome` states its own.
    pub heartbeat_interval: Duration,
    /// Missed intervals before the coordinator is considered gone, until `welcome`.
    pub heartbeat_misses: u32,
}

impl WorkerRuntimeConfig {
    /// A configuration with default timings: 10 s connect timeout, reconnect backoff from
    /// 100 ms to 2 s, 5 s heartbeats with 2 misses allowed (until the coordinator says).
    pub fn new(
        coordinator_url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
        worker_id: impl Into<String>,
        kind: TaskKind,
    ) -> Self {
        Self {
            coordinator_url: coordinator_url.into(),
            username: username.into(),
            password: password.into(),
            worker_id: worker_id.into(),
            kind,
            connect_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_misses: 2,
        }
    }

    /// The worker endpoint of every listed coordinator, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.coordinator_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(endpoint_of)
            .collect()
    }
}

/// The worker endpoint of a coordinator URL: `/v1/worker` appended when it has no path.
fn endpoint_of(url: &str) -> String {
    let url = url.trim();
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        None => format!("{url}{WORKER_PATH}"),
        Some(slash) if url[after_scheme + slash..] == *"/" => {
            format!("{}{WORKER_PATH}", &url[..after_scheme + slash])
        }
        Some(_) => url.to_owned(),
    }
}

impl std::fmt::Debug for WorkerRuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRuntimeConfig")
            .field("coordinator_url", &self.coordinator_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("worker_id", &self.worker_id)
            .field("kind", &self.kind)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_misses", &self.heartbeat_misses)
            .finish()
    }
}

/// Configuration problems [`run_worker`] refuses to start with. Connection failures are
/// never errors: the runtime retries them until shutdown.
#[derive(Debug, thiserror::Error)]
pub enum WorkerRuntimeError {
    /// The coordinator URL is not a `ws://` or `wss://` URL.
    #[error("invalid coordinator url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Username or password contain something an HTTP header cannot carry.
    #[error("invalid coordinator credentials: {0}")]
    InvalidCredentials(String),
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A command from the coordinator, queued for the applier.
enum Command {
    Assign { seq: u64, tasks: Vec<Task> },
    Unassign { seq: u64, tasks: Vec<Uuid> },
}

/// How a connection ended.
enum SessionEnd {
    /// The worker is shutting down.
    Shutdown,
    /// The connection was lost or closed; reconnect.
    Lost(String),
}

/// Timing rules in force on one connection.
#[derive(Clone, Copy)]
struct Liveness {
    interval: Duration,
    misses: u32,
}

impl Liveness {
    fn timeout(self) -> Duration {
        self.interval * self.misses.max(1)
    }
}

/// Runs the worker side of the protocol until `shutdown` is cancelled, then stops every
/// task, tells the coordinator (`leave`) and returns.
pub async fn run_worker(
    config: WorkerRuntimeConfig,
    runner: Arc<dyn TaskRunner>,
    shutdown: CancellationToken,
) -> Result<(), WorkerRuntimeError> {
    let mut config = config;
    if config.worker_id.trim().is_empty() {
        config.worker_id = format!("{}-{}", config.kind, Uuid::new_v4());
        tracing::warn!(
            worker_id = %config.worker_id,
            "no worker id configured: using a random one, so a restart reshuffles this worker's tasks"
        );
    }
    let targets = build_requests(&config)?;
    let span =
        tracing::info_span!("worker_runtime", worker_id = %config.worker_id, kind = %config.kind);
    connect_loop(&config, &targets, runner.as_ref(), &shutdown)
        .instrument(span)
        .await;
    Ok(())
}

/// One coordinator to try: its endpoint and the prepared handshake request.
struct Target {
    url: String,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
}

/// What one connection attempt came to.
enum Attempt {
    /// Connected.
    Connected(Box<Socket>),
    /// Failed; try the next URL.
    Failed,
    /// A standby refused, naming the leader's URL when it knows one we were given.
    Standby(Option<usize>),
}

/// Connects, runs a session, reconnects; returns once shutdown has stopped every task.
async fn connect_loop(
    config: &WorkerRuntimeConfig,
    targets: &[Target],
    runner: &dyn TaskRunner,
    shutdown: &CancellationToken,
) {
    let mut assigned: BTreeMap<Uuid, Task> = BTreeMap::new();
    let mut backoff = Backoff::new(
        config.reconnect_initial,
        config.reconnect_max.max(config.reconnect_initial),
    );
    // The URL to try next, and how many tries the current round has made.
    let mut next = 0;
    let mut tried = 0;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let target = &targets[next % targets.len()];
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            attempt = try_connect(config, target, targets) => attempt,
        };
        let mut socket = match attempt {
            Attempt::Connected(socket) => *socket,
            failed => {
                tried += 1;
                next = match failed {
                    Attempt::Standby(Some(leader)) => leader,
                    _ => next + 1,
                } % targets.len();
                // Back off only once every URL has had its try this round.
                if tried >= targets.len() {
                    tried = 0;
                    if backoff_unless_cancelled(&mut backoff, shutdown)
                        .await
                        .is_cancelled()
                    {
                        break;
                    }
                }
                continue;
            }
        };
        tried = 0;
        tracing::info!(url = %target.url, tasks = assigned.len(), "connected to the coordinator");
        let end = session(
            config,
            &mut socket,
            &mut assigned,
            runner,
            shutdown,
            &mut backoff,
        )
        .await;
        match end {
            SessionEnd::Shutdown => {
                stop_all(&mut assigned, runner).await;
                // The coordinator may already be gone; the leave is a courtesy that lets
                // it reassign at once instead of after the heartbeat timeout.
                let _ = socket
                    .send(Message::text(WorkerMessage::Leave.to_text()))
                    .await;
                let _ = socket
                    .close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "worker shutting down".into(),
                    }))
                    .await;
                tracing::info!("left the coordinator");
                return;
            }
            SessionEnd::Lost(reason) => {
                tracing::warn!(%reason, tasks = assigned.len(), "lost the coordinator; tasks keep running, reconnecting");
                let _ = tokio::time::timeout(Duration::from_millis(200), socket.close(None)).await;
                if backoff_unless_cancelled(&mut backoff, shutdown)
                    .await
                    .is_cancelled()
                {
                    break;
                }
            }
        }
    }
    stop_all(&mut assigned, runner).await;
}

/// One connection attempt to `target`.
async fn try_connect(config: &WorkerRuntimeConfig, target: &Target, targets: &[Target]) -> Attempt {
    let connecting = tokio_tungstenite::connect_async(target.request.clone());
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok((socket, _response))) => Attempt::Connected(Box::new(socket)),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response)))
            if response.status() == StatusCode::SERVICE_UNAVAILABLE
                && response.headers().contains_key(LEADER_ID_HEADER) =>
        {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .filter(|value| !value.is_empty())
                    .map(str::to_owned)
            };
            let (leader_id, leader_url) = (header(LEADER_ID_HEADER), header(LEADER_URL_HEADER));
            // Only URLs this worker was given are followed: its credentials go nowhere else.
            let leader = leader_url
                .as_deref()
                .map(endpoint_of)
                .and_then(|leader| targets.iter().position(|t| t.url == leader));
            tracing::info!(url = %target.url, leader_id = ?leader_id, leader_url = ?leader_url, "a standby coordinator refused the connection; trying the leader");
            Attempt::Standby(leader)
        }
        Ok(Err(err)) => {
            log_connect_error(config, &target.url, &err);
            Attempt::Failed
        }
        Err(_) => {
            tracing::warn!(url = %target.url, timeout = ?config.connect_timeout, "coordinator connection timed out");
            Attempt::Failed
        }
    }
}

/// A handshake request per listed coordinator; fails on the first unusable URL.
fn build_requests(config: &WorkerRuntimeConfig) -> Result<Vec<Target>, WorkerRuntimeError> {
    let urls = config.endpoints();
    if urls.is_empty() {
        return Err(WorkerRuntimeError::InvalidUrl {
            url: config.coordinator_url.clone(),
            reason: "no coordinator URL given".into(),
        });
    }
    urls.into_iter()
        .map(|url| {
            let request = build_request(config, &url)?;
            Ok(Target { url, request })
        })
        .collect()
}

fn build_request(
    config: &WorkerRuntimeConfig,
    url: &str,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, WorkerRuntimeError> {
    let url = url.to_owned();
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(WorkerRuntimeError::InvalidUrl {
            url,
            reason: "expected a ws:// or wss:// URL".into(),
        });
    }
    let mut request =
        url.as_str()
            .into_client_request()
            .map_err(|err| WorkerRuntimeError::InvalidUrl {
                url: url.clone(),
                reason: err.to_string(),
            })?;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", config.username, config.password));
    let value = HeaderValue::from_str(&format!("Basic {basic}"))
        .map_err(|err| WorkerRuntimeError::InvalidCredentials(err.to_string()))?;
    request.headers_mut().insert(header::AUTHORIZATION, value);
    Ok(request)
}

fn log_connect_error(
    config: &WorkerRuntimeConfig,
    url: &str,
    err: &tokio_tungstenite::tungstenite::Error,
) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match err {
        WsError::Http(response) if response.status() == StatusCode::UNAUTHORIZED => {
            tracing::error!(%url, username = %config.username, "coordinator rejected the credentials (401)");
        }
        WsError::Http(response) if response.status() == StatusCode::FORBIDDEN => {
            tracing::error!(%url, username = %config.username, "credential lacks coordinator access (403)");
        }
        other => {
            tracing::warn!(%url, cause = %other, "cannot reach the coordinator")
        }
    }
}

async fn stop_all(assigned: &mut BTreeMap<Uuid, Task>, runner: &dyn TaskRunner) {
    for (id, _) in std::mem::take(assigned) {
        if let Err(err) = runner.stop(id).await {
            tracing::warn!(task_id = %id, cause = %err, "task did not stop cleanly");
        }
    }
}

/// One connection: announce, then socket loop and applier side by side.
async fn session(
    config: &WorkerRuntimeConfig,
    socket: &mut Socket,
    assigned: &mut BTreeMap<Uuid, Task>,
    runner: &dyn TaskRunner,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> SessionEnd {
    let announce = WorkerMessage::Announce {
        worker_id: config.worker_id.clone(),
        kind: config.kind,
        tasks: assigned.keys().copied().collect(),
    };
    if let Err(err) = socket.send(Message::text(announce.to_text())).await {
        return SessionEnd::Lost(format!("sending announce: {err}"));
    }
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let applier_stop = CancellationToken::new();
    let socket_side = async {
        let end = socket_loop(config, socket, command_tx, ack_rx, shutdown, backoff).await;
        applier_stop.cancel();
        end
    };
    let applier = apply_commands(
        config.kind,
        assigned,
        runner,
        command_rx,
        ack_tx,
        applier_stop.clone(),
    );
    let (end, ()) = tokio::join!(socket_side, applier);
    end
}

async fn socket_loop(
    config: &WorkerRuntimeConfig,
    socket: &mut Socket,
    commands: mpsc::UnboundedSender<Command>,
    mut acks: mpsc::UnboundedReceiver<WorkerMessage>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> SessionEnd {
    let mut liveness = Liveness {
        interval: config.heartbeat_interval,
        misses: config.heartbeat_misses,
    };
    let mut heartbeat = heartbeat_timer(liveness.interval);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            Some(ack) = acks.recv() => {
                if let Err(err) = socket.send(Message::text(ack.to_text())).await {
                    return SessionEnd::Lost(format!("sending ack: {err}"));
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > liveness.timeout() {
                    return SessionEnd::Lost(format!("no message from the coordinator for {:?}", liveness.timeout()));
                }
                if let Err(err) = socket.send(Message::text(WorkerMessage::Heartbeat.to_text())).await {
                    return SessionEnd::Lost(format!("sending heartbeat: {err}"));
                }
            }
            frame = socket.next() => {
                let text = match frame {
                    None => return SessionEnd::Lost("connection closed".into()),
                    Some(Err(err)) => return SessionEnd::Lost(format!("connection failed: {err}")),
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        return SessionEnd::Lost(format!("closed by the coordinator: {reason}"));
                    }
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => {
                        // Pings are answered by the library; binary frames are not part of
                        // the protocol but still prove the peer is alive.
                        last_heard = Instant::now();
                        continue;
                    }
                };
                last_heard = Instant::now();
                match CoordinatorMessage::from_text(&text) {
                    Ok(CoordinatorMessage::Welcome { heartbeat_interval_ms, heartbeat_misses }) => {
                        backoff.reset();
                        if heartbeat_interval_ms > 0 {
                            liveness = Liveness {
                                interval: Duration::from_millis(heartbeat_interval_ms),
                                misses: heartbeat_misses.max(1),
                            };
                            heartbeat = heartbeat_timer(liveness.interval);
                        }
                        tracing::debug!(interval = ?liveness.interval, misses = liveness.misses, "welcomed by the coordinator");
                    }
                    Ok(CoordinatorMessage::Assign { seq, tasks }) => {
                        let _ = commands.send(Command::Assign { seq, tasks });
                    }
                    Ok(CoordinatorMessage::Unassign { seq, tasks }) => {
                        let _ = commands.send(Command::Unassign { seq, tasks });
                    }
                    Ok(CoordinatorMessage::Heartbeat) => {}
                    Ok(CoordinatorMessage::Error { message }) => {
                        tracing::error!(%message, "coordinator refused this worker");
                    }
                    Err(err) => {
                        // A newer coordinator may send messages this build does not know;
                        // ignoring them keeps the connection usable.
                        tracing::warn!(cause = %err, "ignoring an unreadable coordinator message");
                    }
                }
            }
        }
    }
}

fn heartbeat_timer(interval: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + interval, interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// Applies commands in order until the connection ends; the command in progress always
/// completes so `assigned` matches what the runner runs.
async fn apply_commands(
    kind: TaskKind,
    assigned: &mut BTreeMap<Uuid, Task>,
    runner: &dyn TaskRunner,
    mut commands: mpsc::UnboundedReceiver<Command>,
    acks: mpsc::UnboundedSender<WorkerMessage>,
    stop: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            command = commands.recv() => match command {
                Some(command) => command,
                None => return,
            },
        };
        let ack = match command {
            Command::Assign { seq, tasks } => {
                let mut failed = Vec::new();
                for task in tasks {
                    if let Some(error) = assign(kind, assigned, runner, task.clone()).await {
                        tracing::error!(task_id = %task.id, %error, "task failed to start");
                        failed.push(TaskFailure {
                            task: task.id,
                            error,
                        });
                    }
                }
                WorkerMessage::Ack { seq, failed }
            }
            Command::Unassign { seq, tasks } => {
                for id in tasks {
                    if assigned.remove(&id).is_some() {
                        if let Err(err) = runner.stop(id).await {
                            tracing::warn!(task_id = %id, cause = %err, "task did not stop cleanly");
                        } else {
                            tracing::debug!(task_id = %id, "task stopped");
                        }
                    }
                }
                WorkerMessage::Ack {
                    seq,
                    failed: Vec::new(),
                }
            }
        };
        let _ = acks.send(ack);
    }
}

/// Starts one task (restarting it if its parameters changed); returns the failure text.
/// A failed task is still recorded as held, so the coordinator's view and the next
/// announce agree, and only an unassign releases it.
async fn assign(
    kind: TaskKind,
    assigned: &mut BTreeMap<Uuid, Task>,
    runner: &dyn TaskRunner,
    task: Task,
) -> Option<String> {
    match assigned.get(&task.id) {
        Some(current) if *current == task => return None,
        Some(_) => {
            if let Err(err) = runner.stop(task.id).await {
                tracing::warn!(task_id = %task.id, cause = %err, "task did not stop cleanly before its restart");
            }
        }
        None => {}
    }
    assigned.insert(task.id, task.clone());
    if task.kind() != kind {
        return Some(format!("a {} task sent to a {kind} worker", task.kind()));
    }
    match runner.start(task).await {
        Ok(()) => None,
        Err(err) => Some(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::TaskParams;

    #[derive(Default)]
    struct Calls(Mutex<Vec<String>>);

    #[async_trait]
    impl TaskRunner for Calls {
        async fn start(&self, task: Task) -> Result<(), TaskError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {}", task.params.source_id()));
            if task.params.source_id() == "UCbroken" {
                return Err("channel is gone".into());
            }
            Ok(())
        }

        async fn stop(&self, task_id: Uuid) -> Result<(), TaskError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("stop {}", task_id.as_u128()));
            Ok(())
        }
    }

    fn yt(n: u128, channel: &str) -> Task {
        Task {
            id: Uuid::from_u128(n),
            entity: Uuid::nil(),
            params: TaskParams::Youtube {
                channel_id: channel.into(),
            },
        }
    }

    #[tokio::test]
    async fn commands_are_applied_in_order_and_acknowledged() {
        let runner = Calls::default();
        let mut assigned = BTreeMap::new();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ack_tx, mut acks) = mpsc::unbounded_channel();
        let tweet = Task {
            id: Uuid::from_u128(9),
            entity: Uuid::nil(),
            params: TaskParams::Twitter {
                user_id: "1".into(),
            },
        };
        let send = |c| commands.send(c).unwrap();
        send(Command::Assign {
            seq: 1,
            tasks: vec![yt(1, "UCa"), yt(2, "UCbroken"), tweet],
        });
        // Same parameters again: nothing to do; changed parameters: restart.
        send(Command::Assign {
            seq: 2,
            tasks: vec![yt(1, "UCa")],
        });
        send(Command::Assign {
            seq: 3,
            tasks: vec![yt(1, "UCb")],
        });
        send(Command::Unassign {
            seq: 4,
            tasks: vec![Uuid::from_u128(2), Uuid::from_u128(77)],
        });
        drop(commands);
        apply_commands(
            TaskKind::Youtube,
            &mut assigned,
            &runner,
            command_rx,
            ack_tx,
            CancellationToken::new(),
        )
        .await;

        let calls = runner.0.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                "start UCa",
                "start UCbroken",
                "stop 1",
                "start UCb",
                "stop 2"
            ]
        );
        let Some(WorkerMessage::Ack { seq: 1, failed }) = acks.recv().await else {
            panic!("first ack")
        };
        let failed: Vec<u128> = failed.iter().map(|f| f.task.as_u128()).collect();
        assert_eq!(
            failed,
            [2, 9],
            "a failing start and a foreign kind are reported"
        );
        for expected in 2..=4 {
            assert!(
                matches!(acks.recv().await, Some(WorkerMessage::Ack { seq, .. }) if seq == expected)
            );
        }
        // Failed tasks stay held until unassigned, so the next announce matches the
        // coordinator's view.
        let held: Vec<u128> = assigned.keys().map(|id| id.as_u128()).collect();
        assert_eq!(held, [1, 9]);
        assert_eq!(assigned[&Uuid::from_u128(1)].params.source_id(), "UCb");
    }

    #[test]
    fn endpoint_gets_the_worker_path_when_the_url_has_none() {
        let mut config = WorkerRuntimeConfig::new("ws://h:1", "u", "p", "w", TaskKind::Youtube);
        assert_eq!(config.endpoints(), ["ws://h:1/v1/worker"]);
        config.coordinator_url = "ws://h:1/".into();
        assert_eq!(config.endpoints(), ["ws://h:1/v1/worker"]);
        config.coordinator_url = "wss://h/proxy/worker".into();
        assert_eq!(config.endpoints(), ["wss://h/proxy/worker"]);
        config.coordinator_url = " ws://a:1 , ws://b:2/v1/worker,".into();
        assert_eq!(
            config.endpoints(),
            ["ws://a:1/v1/worker", "ws://b:2/v1/worker"]
        );
    }

    #[test]
    fn bad_urls_and_secrets_are_refused() {
        let config = WorkerRuntimeConfig::new("http://h:1", "u", "p", "w", TaskKind::Youtube);
        assert!(matches!(
            build_requests(&config),
            Err(WorkerRuntimeError::InvalidUrl { .. })
        ));
        let config =
            WorkerRuntimeConfig::new("ws://h:1,http://h:2", "u", "p", "w", TaskKind::Youtube);
        assert!(matches!(
            build_requests(&config),
            Err(WorkerRuntimeError::InvalidUrl { .. })
        ));
        let config = WorkerRuntimeConfig::new(" , ", "u", "p", "w", TaskKind::Youtube);
        assert!(matches!(
            build_requests(&config),
            Err(WorkerRuntimeError::InvalidUrl { .. })
        ));
        let config = WorkerRuntimeConfig::new("ws://h:1", "u", "p", "w", TaskKind::Youtube);
        let targets = build_requests(&config).unwrap();
        assert_eq!(
            targets[0].request.headers()[header::AUTHORIZATION],
            "Basic dTpw"
        );
        assert!(!format!("{config:?}").contains("\"p\""));
    }
}
