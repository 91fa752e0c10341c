//! Test harness: a coordinator on port 0 over in-memory SQLite, real workers (the core
//! worker runtime) with recording runners, a TCP proxy that can be cut or re-pointed, a
//! raw WebSocket client, and a convergence check run after every step.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use stargazer_coordinator::{CoordinatorConfig, CoordinatorService};
use stargazer_core::auth::hash_password;
use stargazer_core::model::{Access, Credential, Entity, Permissions, Task, TaskKind, TaskParams};
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use stargazer_core::service::{Service, ServiceError};
use stargazer_core::storage::Storage;
use stargazer_core::worker_runtime::{run_worker, TaskError, TaskRunner, WorkerRuntimeConfig};
use stargazer_core::CancellationToken;
use stargazer_testkit::backends::service_context;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

pub(crate) const USER: &str = "worker";
pub(crate) const PASSWORD: &str = "worker-secret";

/// How long any convergence may take before a test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Short heartbeats, yet long enough that a busy 2-core machine neither evicts healthy
/// workers nor misses a reconnect window (one interval).
pub(crate) fn test_config() -> CoordinatorConfig {
    CoordinatorConfig {
        heartbeat_interval_ms: 400,
        heartbeat_misses: 3,
        virtual_nodes: 64,
        snapshot_interval_ms: 200,
        ack_timeout_ms: 10_000,
        startup_hold_ms: Some(0),
        ..CoordinatorConfig::default()
    }
}

/// Fresh in-memory storage holding the worker credential.
pub(crate) async fn storage() -> Arc<dyn Storage> {
    let storage = stargazer_core::storage::connect("sqlite::memory:")
        .await
        .unwrap();
    add_credential(
        &storage,
        USER,
        PASSWORD,
        Permissions {
            coordinator: Some(Access::Ro),
            mq: Some(Access::Rw),
            ..Default::default()
        },
    )
    .await;
    storage
}

pub(crate) async fn add_credential(
    storage: &Arc<dyn Storage>,
    username: &str,
    password: &str,
    permissions: Permissions,
) {
    storage
        .insert_credential(&Credential {
            username: username.into(),
            hash: hash_password(password, 1_000).unwrap(),
            permissions,
            queues: Vec::new(),
        })
        .await
        .unwrap();
}

pub(crate) fn make_task(kind: TaskKind, n: usize) -> Task {
    // Storage allows one task per account: a random prefix keeps calls that reuse `n`
    // (several batches in one database) apart.
    let salt = Uuid::new_v4().as_u128() % 1_000_000_000;
    let params = match kind {
        TaskKind::Youtube => TaskParams::Youtube {
            channel_id: format!("UC{salt:09}{n:013}"),
        },
        TaskKind::Twitter => TaskParams::Twitter {
            user_id: format!("{salt}{n:07}"),
        },
        TaskKind::Twitch => TaskParams::Twitch {
            broadcaster_id: format!("{}{n:07}", salt + 1),
        },
        TaskKind::Bilibili => TaskParams::Bilibili {
            uid: format!("{}{n:07}", salt + 1),
        },
    };
    Task {
        id: Uuid::new_v4(),
        entity: Uuid::nil(),
        params,
    }
}

/// Inserts one entity per task; returns the tasks by id.
pub(crate) async fn add_tasks(
    storage: &Arc<dyn Storage>,
    kind: TaskKind,
    count: usize,
) -> HashMap<Uuid, Task> {
    let mut added = HashMap::new();
    for n in 0..count {
        let entity_id = Uuid::new_v4();
        let mut task = make_task(kind, n);
        task.entity = entity_id;
        let entity = Entity {
            id: entity_id,
            names: BTreeMap::from([("en".to_owned(), format!("streamer {n}"))]),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![task.clone()],
        };
        storage.insert_entity(&entity).await.unwrap();
        added.insert(task.id, task);
    }
    added
}

/// A running coordinator.
pub(crate) struct Coordinator {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), ServiceError>>>,
    http: reqwest::Client,
    /// The runtime of an isolated instance ([`Coordinator::start_isolated`]).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        // A runtime must not be dropped inside another; this abandons its tasks at once.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Coordinator {
    pub(crate) async fn start(storage: Arc<dyn Storage>, config: CoordinatorConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let service = Box::new(CoordinatorService::new(config).unwrap());
        let cx = service_context(
            &*service,
            Some(storage),
            None,
            vec![listener],
            shutdown.clone(),
        );
        let handle = tokio::spawn(service.run(cx));
        Self {
            addr,
            shutdown,
            handle: Some(handle),
            http: reqwest::Client::new(),
            runtime: None,
        }
    }

    /// A coordinator as a process of its own: its own runtime and its own connection to
    /// the storage at `storage_url`, advertising its address. [`Coordinator::kill`] drops
    /// it as a crash would: every task stops where it stands and every socket closes,
    /// without a final snapshot or a lease release.
    pub(crate) async fn start_isolated(
        storage_url: &str,
        instance_id: &str,
        mut config: CoordinatorConfig,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let url = storage_url.to_owned();
        let storage = runtime
            .spawn(async move { stargazer_core::storage::connect(&url).await.unwrap() })
            .await
            .unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        config.instance_id = instance_id.to_owned();
        config.advertise_url = format!("ws://{addr}");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = runtime.spawn(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            let service = Box::new(CoordinatorService::new(config).unwrap());
            let cx = service_context(&*service, Some(storage), None, vec![listener], token);
            service.run(cx).await
        });
        Self {
            addr,
            shutdown,
            handle: Some(handle),
            http: reqwest::Client::new(),
            runtime: Some(runtime),
        }
    }

    /// Sudden death of an isolated coordinator (see [`Coordinator::start_isolated`]).
    pub(crate) fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Shuts down and waits until `run` returned.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("stopped once");
        tokio::time::timeout(PATIENCE, handle)
            .await
            .expect("coordinator stops in time")
            .unwrap()
            .unwrap();
    }

    pub(crate) async fn get(&self, path: &str, auth: Option<(&str, &str)>) -> reqwest::Response {
        let mut request = self.http.get(format!("http://{}{path}", self.addr));
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn status(&self) -> Value {
        let response = self
            .get("/v1/status?tasks=true", Some((USER, PASSWORD)))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// Tasks currently running on any live runner, and violations of the one-runner rule.
#[derive(Default)]
pub(crate) struct Ledger {
    owners: Mutex<HashMap<Uuid, String>>,
    violations: Mutex<Vec<String>>,
}

impl Ledger {
    pub(crate) fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    fn violation(&self, text: String) {
        self.violations.lock().unwrap().push(text);
    }
}

/// A runner that records what it runs and checks, at every start, that no other live
/// runner runs the same task.
pub(crate) struct Recorder {
    name: String,
    kind: TaskKind,
    ledger: Arc<Ledger>,
    running: Mutex<HashMap<Uuid, Task>>,
    pub starts: AtomicUsize,
    pub stops: AtomicUsize,
}

impl Recorder {
    pub(crate) fn running(&self) -> HashMap<Uuid, Task> {
        self.running.lock().unwrap().clone()
    }

    /// The process died: it runs nothing any more.
    fn crash(&self) {
        let ids: Vec<Uuid> = self
            .running
            .lock()
            .unwrap()
            .drain()
            .map(|(id, _)| id)
            .collect();
        let mut owners = self.ledger.owners.lock().unwrap();
        for id in ids {
            if owners.get(&id) == Some(&self.name) {
                owners.remove(&id);
            }
        }
    }
}

#[async_trait]
impl TaskRunner for Recorder {
    async fn start(&self, task: Task) -> Result<(), TaskError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        if task.kind() != self.kind {
            self.ledger.violation(format!(
                "{} ({}) got a {} task",
                self.name,
                self.kind,
                task.kind()
            ));
        }
        if self
            .running
            .lock()
            .unwrap()
            .insert(task.id, task.clone())
            .is_some()
        {
            self.ledger
                .violation(format!("{} started {} twice", self.name, task.id));
        }
        let mut owners = self.ledger.owners.lock().unwrap();
        if let Some(other) = owners.insert(task.id, self.name.clone()) {
            if other != self.name {
                self.ledger.violation(format!(
                    "{} started {} while {other} ran it",
                    self.name, task.id
                ));
            }
        }
        Ok(())
    }

    async fn stop(&self, task_id: Uuid) -> Result<(), TaskError> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        self.running.lock().unwrap().remove(&task_id);
        let mut owners = self.ledger.owners.lock().unwrap();
        if owners.get(&task_id) == Some(&self.name) {
            owners.remove(&task_id);
        }
        Ok(())
    }
}

/// A worker process: the real runtime driving a [`Recorder`].
pub(crate) struct Worker {
    pub name: String,
    pub kind: TaskKind,
    pub recorder: Arc<Recorder>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) fn start(url: &str, name: &str, kind: TaskKind, ledger: &Arc<Ledger>) -> Self {
        let recorder = Arc::new(Recorder {
            name: name.to_owned(),
            kind,
            ledger: ledger.clone(),
            running: Mutex::default(),
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
        });
        let mut config = WorkerRuntimeConfig::new(url, USER, PASSWORD, name, kind);
        config.reconnect_initial = Duration::from_millis(50);
        config.reconnect_max = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let runner: Arc<dyn TaskRunner> = recorder.clone();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            run_worker(config, runner, token).await.unwrap();
        });
        Self {
            name: name.to_owned(),
            kind,
            recorder,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Clean shutdown: stops its tasks and leaves.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(PATIENCE, handle)
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Sudden death: the connection drops without a leave.
    pub(crate) async fn kill(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            let _ = handle.await;
        }
        self.recorder.crash();
    }

    pub(crate) fn starts(&self) -> usize {
        self.recorder.starts.load(Ordering::SeqCst)
    }

    pub(crate) fn stops(&self) -> usize {
        self.recorder.stops.load(Ordering::SeqCst)
    }

    pub(crate) fn running(&self) -> HashMap<Uuid, Task> {
        self.recorder.running()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Polls `check` until it passes; panics with its last complaint after [`PATIENCE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let outcome = check().await;
        match outcome {
            Ok(()) => return,
            Err(complaint) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not reached within {PATIENCE:?}: {complaint}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The state every step must converge to: each task of a kind with a live worker runs on
/// exactly one live worker of that kind, with its current parameters; the coordinator
/// agrees (settled, same sets per worker, nothing unassigned for served kinds); tasks of
/// kinds without workers are listed as unassigned; no violation was ever recorded.
pub(crate) async fn check_converged(
    coordinator: &Coordinator,
    workers: &[&Worker],
    tasks: &HashMap<Uuid, Task>,
    ledger: &Ledger,
) -> Result<(), String> {
    let violations = ledger.violations();
    if !violations.is_empty() {
        let shown: Vec<&String> = violations.iter().take(5).collect();
        panic!(
            "one-runner rule broken {} times, first: {shown:?}",
            violations.len()
        );
    }
    let served: HashSet<TaskKind> = workers.iter().map(|w| w.kind).collect();
    let mut seen: HashMap<Uuid, &str> = HashMap::new();
    for worker in workers {
        for (id, task) in worker.running() {
            if let Some(other) = seen.insert(id, &worker.name) {
                return Err(format!("{id} runs on {other} and {}", worker.name));
            }
            match tasks.get(&id) {
                None => return Err(format!("{} runs unknown task {id}", worker.name)),
                Some(expected) if *expected != task => {
                    return Err(format!("{} runs stale parameters of {id}", worker.name))
                }
                Some(_) => {}
            }
        }
    }
    for (id, task) in tasks {
        if served.contains(&task.kind()) && !seen.contains_key(id) {
            return Err(format!("{id} ({}) runs nowhere", task.kind()));
        }
    }
    let status = coordinator.status().await;
    if status["settled"] != Value::Bool(true) {
        return Err(format!("coordinator not settled: {}", status["tasks"]));
    }
    let listed: Vec<&Value> = status["workers"].as_array().unwrap().iter().collect();
    let live: HashSet<&str> = workers.iter().map(|w| w.name.as_str()).collect();
    for entry in &listed {
        let id = entry["id"].as_str().unwrap();
        if !live.contains(id) {
            return Err(format!("coordinator still lists {id}"));
        }
        if entry["connected"] != Value::Bool(true) {
            return Err(format!("{id} not connected"));
        }
    }
    for worker in workers {
        let Some(entry) = listed.iter().find(|e| e["id"] == worker.name.as_str()) else {
            return Err(format!("coordinator does not list {}", worker.name));
        };
        let believed: HashSet<Uuid> = entry["task_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect();
        let actual: HashSet<Uuid> = worker.running().keys().copied().collect();
        if believed != actual {
            return Err(format!(
                "coordinator's view of {} differs from its runner",
                worker.name
            ));
        }
    }
    let unassigned = status["unassigned_count"].as_u64().unwrap() as usize;
    let expected_unassigned = tasks
        .values()
        .filter(|t| !served.contains(&t.kind()))
        .count();
    if unassigned != expected_unassigned {
        return Err(format!(
            "{unassigned} unassigned, expected {expected_unassigned}"
        ));
    }
    Ok(())
}

/// Waits for [`check_converged`].
pub(crate) async fn converge(
    what: &str,
    coordinator: &Coordinator,
    workers: &[&Worker],
    tasks: &HashMap<Uuid, Task>,
    ledger: &Ledger,
) {
    eventually(what, || {
        check_converged(coordinator, workers, tasks, ledger)
    })
    .await;
}

/// A TCP forwarder the workers connect through, so a test can cut every connection (a
/// network blip) or point it at another coordinator (a restart on a new port).
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    cut: Arc<Mutex<CancellationToken>>,
    handle: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (t, c) = (target.clone(), cut.clone());
        let handle = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let to = *t.lock().unwrap();
                let token = c.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            target,
            cut,
            handle,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub(crate) fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Drops every proxied connection abruptly (no close frames).
    pub(crate) fn cut(&self) {
        let old = std::mem::replace(&mut *self.cut.lock().unwrap(), CancellationToken::new());
        old.cancel();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// A hand-driven worker speaking the protocol directly.
pub(crate) struct RawClient {
    pub socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl RawClient {
    pub(crate) async fn connect(
        addr: SocketAddr,
        user: &str,
        password: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{addr}/v1/worker")
            .into_client_request()
            .unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket })
    }

    pub(crate) async fn send(&mut self, message: &WorkerMessage) {
        self.socket
            .send(Message::text(message.to_text()))
            .await
            .unwrap();
    }

    /// The next protocol message, skipping heartbeats; `None` when the socket closes.
    pub(crate) async fn next(&mut self) -> Option<CoordinatorMessage> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("a message in time")?;
            match frame {
                Ok(Message::Text(text)) => match CoordinatorMessage::from_text(&text).unwrap() {
                    CoordinatorMessage::Heartbeat => continue,
                    other => return Some(other),
                },
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }
}
