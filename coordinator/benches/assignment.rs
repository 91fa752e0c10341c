//! Assignment benchmark (`cargo bench -p stargazer-coordinator`).
//!
//! Part 1 drives the assignment state machine directly (no I/O; every command is
//! acknowledged at once) with 100,000 tasks over 50 workers, for several virtual-node
//! counts: time of the initial assignment, tasks moved when a 51st worker joins against
//! the ideal 100,000/51, and load spread (max/mean tasks per worker). The same-run
//! baseline is naive `hash % workers` placement, which spreads well but moves almost
//! everything on a join.
//!
//! Part 2 measures failure handling end to end: a real coordinator (`run`, SQLite in
//! memory, 200 ms heartbeats, 2 misses) with 10 real workers (core worker runtime, each
//! behind its own TCP forwarder) and 5,000 tasks. One worker dies per round, at a random
//! point of the heartbeat cycle, either by crashing (connection dropped, no `leave`) or
//! by hanging (connection open, silent); the time until every one of its tasks runs on
//! another worker is reported in heartbeat intervals.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use async_trait::async_trait;
use stargazer_coordinator::assignment::{Action, Assignment, ConnId, Timing};
use stargazer_coordinator::{CoordinatorConfig, CoordinatorService};
use stargazer_core::auth::hash_password;
use stargazer_core::model::{Access, Credential, Entity, Permissions, Task, TaskKind, TaskParams};
use stargazer_core::protocol::CoordinatorMessage;
use stargazer_core::service::Service;
use stargazer_core::worker_runtime::{run_worker, TaskError, TaskRunner, WorkerRuntimeConfig};
use stargazer_core::CancellationToken;
use stargazer_testkit::backends::service_context;
use tokio::time::Instant;
use uuid::Uuid;

const TASKS: usize = 100_000;
const WORKERS: usize = 50;

fn tasks(count: usize) -> Vec<Task> {
    (0..count)
        .map(|n| Task {
            id: Uuid::new_v4(),
            entity: Uuid::new_v4(),
            params: TaskParams::Youtube {
                channel_id: format!("UC{n:022}"),
            },
        })
        .collect()
}

/// Acknowledges every command (and the follow-ups they cause); returns how many tasks
/// were sent in assigns and unassigns.
fn settle(
    state: &mut Assignment,
    conns: &HashMap<ConnId, String>,
    actions: Vec<Action>,
) -> (usize, usize) {
    let (mut assigned, mut unassigned) = (0, 0);
    let mut actions = actions;
    while !actions.is_empty() {
        let mut next = Vec::new();
        for action in actions {
            let Action::Send { conn, message } = action else {
                continue;
            };
            let seq = match message {
                CoordinatorMessage::Assign { seq, tasks } => {
                    assigned += tasks.len();
                    seq
                }
                CoordinatorMessage::Unassign { seq, tasks } => {
                    unassigned += tasks.len();
                    seq
                }
                _ => continue,
            };
            next.extend(state.ack(&conns[&conn], conn, seq, &[], Instant::now()));
        }
        actions = next;
    }
    (assigned, unassigned)
}

struct RingFigures {
    initial: Duration,
    join: Duration,
    moved: usize,
    spread_max: f64,
    spread_min: f64,
}

fn ring_run(virtual_nodes: u32, all: &[Task]) -> RingFigures {
    let timing = Timing {
        eviction_timeout: Duration::from_secs(3600),
        reconnect_window: Duration::from_secs(3600),
        ack_timeout: Duration::from_secs(3600),
    };
    let mut state = Assignment::new(virtual_nodes, timing, None);
    let mut conns = HashMap::new();
    let now = Instant::now();
    for w in 0..WORKERS {
        let name = format!("worker-{w:02}");
        state.connect(&name, TaskKind::Youtube, w as ConnId, &[], now);
        conns.insert(w as ConnId, name);
    }
    let started = StdInstant::now();
    let actions = state.load_tasks(all.to_vec(), now);
    let initial = started.elapsed();
    let (assigned, _) = settle(&mut state, &conns, actions);
    assert_eq!(assigned, all.len());

    let status = state.status(false, now);
    let counts: Vec<usize> = status.workers.iter().map(|w| w.tasks).collect();
    let mean = all.len() as f64 / WORKERS as f64;
    let spread_max = *counts.iter().max().unwrap_or(&0) as f64 / mean;
    let spread_min = *counts.iter().min().unwrap_or(&0) as f64 / mean;

    let newcomer = WORKERS as ConnId;
    conns.insert(newcomer, format!("worker-{WORKERS:02}"));
    let started = StdInstant::now();
    let actions = state.connect(&conns[&newcomer], TaskKind::Youtube, newcomer, &[], now);
    let join = started.elapsed();
    let (assigned, unassigned) = settle(&mut state, &conns, actions);
    assert_eq!(
        assigned, unassigned,
        "every move is one unassign and one assign"
    );
    assert!(state.status(false, now).settled);
    RingFigures {
        initial,
        join,
        moved: assigned,
        spread_max,
        spread_min,
    }
}

fn modulo_baseline(all: &[Task]) -> (Duration, usize, f64) {
    let place = |id: &Uuid, n: u64| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        hasher.finish() % n
    };
    let started = StdInstant::now();
    let before: Vec<u64> = all.iter().map(|t| place(&t.id, WORKERS as u64)).collect();
    let elapsed = started.elapsed();
    let mut counts = vec![0usize; WORKERS];
    for w in &before {
        counts[*w as usize] += 1;
    }
    let moved = all
        .iter()
        .zip(&before)
        .filter(|(t, w)| place(&t.id, WORKERS as u64 + 1) != **w)
        .count();
    let spread = *counts.iter().max().unwrap_or(&0) as f64 / (all.len() as f64 / WORKERS as f64);
    (elapsed, moved, spread)
}

// ---- part 2: real connections ----

/// How a worker dies in part 2.
#[derive(Debug, Clone, Copy)]
enum Death {
    /// The process is gone: its connection drops without a `leave`.
    Crash,
    /// The process hangs: its connection stays open but nothing flows any more.
    Hang,
}

#[derive(Default)]
struct Counting {
    running: Mutex<HashSet<Uuid>>,
}

#[async_trait]
impl TaskRunner for Counting {
    async fn start(&self, task: Task) -> Result<(), TaskError> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task.id);
        Ok(())
    }

    async fn stop(&self, task_id: Uuid) -> Result<(), TaskError> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&task_id);
        Ok(())
    }
}

impl Counting {
    fn snapshot(&self) -> HashSet<Uuid> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A per-worker TCP forwarder that can freeze: forwarding stops but every socket stays
/// open, which is what a hung process looks like from the other side.
struct FreezingProxy {
    addr: std::net::SocketAddr,
    frozen: CancellationToken,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let frozen = CancellationToken::new();
        let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        let token = frozen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (token, held) = (token.clone(), held.clone());
                tokio::spawn(async move {
                    if token.is_cancelled() {
                        held.lock().unwrap_or_else(|e| e.into_inner()).push(inbound);
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {
                            let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                            held.push(inbound);
                            held.push(outbound);
                        }
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            frozen,
            accept,
        }
    }
}

/// A worker process of part 2: its runner, proxy and runtime task.
struct LiveWorker {
    runner: Arc<Counting>,
    proxy: FreezingProxy,
    runtime:
        tokio::task::JoinHandle<Result<(), stargazer_core::worker_runtime::WorkerRuntimeError>>,
}

async fn spawn_worker(coordinator: std::net::SocketAddr, name: String) -> LiveWorker {
    let proxy = FreezingProxy::start(coordinator).await;
    let runner = Arc::new(Counting::default());
    let config = WorkerRuntimeConfig::new(
        format!("ws://{}", proxy.addr),
        "bench",
        "bench",
        name,
        TaskKind::Youtube,
    );
    let dyn_runner: Arc<dyn TaskRunner> = runner.clone();
    let runtime = tokio::spawn(run_worker(config, dyn_runner, CancellationToken::new()));
    LiveWorker {
        runner,
        proxy,
        runtime,
    }
}

async fn death_run(death: Death, rounds: usize) -> Vec<f64> {
    use rand::Rng;
    const LIVE_TASKS: usize = 5_000;
    const LIVE_WORKERS: usize = 10;
    let interval = Duration::from_millis(200);
    let storage = stargazer_core::storage::connect("sqlite::memory:")
        .await
        .expect("sqlite");
    storage
        .insert_credential(&Credential {
            username: "bench".into(),
            hash: hash_password("bench", 1_000).expect("hash"),
            permissions: Permissions {
                coordinator: Some(Access::Ro),
                ..Default::default()
            },
            queues: Vec::new(),
        })
        .await
        .expect("credential");
    let mut all = HashSet::new();
    for task in tasks(LIVE_TASKS) {
        all.insert(task.id);
        let entity = Entity {
            id: task.entity,
            names: BTreeMap::from([("en".to_owned(), "x".to_owned())]),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![task],
        };
        storage.insert_entity(&entity).await.expect("insert");
    }
    let config = CoordinatorConfig {
        heartbeat_interval_ms: interval.as_millis() as u64,
        heartbeat_misses: 2,
        startup_hold_ms: Some(0),
        ..CoordinatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let coordinator_addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let service = Box::new(CoordinatorService::new(config).expect("config"));
    let cx = service_context(
        &*service,
        Some(storage),
        None,
        vec![listener],
        shutdown.clone(),
    );
    let coordinator = tokio::spawn(service.run(cx));

    let mut workers = Vec::new();
    for i in 0..LIVE_WORKERS {
        workers.push(spawn_worker(coordinator_addr, format!("w{i}")).await);
    }
    let mut figures = Vec::new();
    for round in 0..rounds {
        wait_for_full_cover(&workers, &all).await;
        // Die at a random point of the heartbeat cycle.
        let phase = rand::thread_rng().gen_range(0.0..1.0);
        tokio::time::sleep(interval.mul_f64(phase)).await;
        let victim = workers.remove(0);
        let orphaned = victim.runner.snapshot();
        let died_at = StdInstant::now();
        match death {
            Death::Crash => victim.runtime.abort(),
            Death::Hang => victim.proxy.frozen.cancel(),
        }
        loop {
            let covered: HashSet<Uuid> = workers.iter().flat_map(|w| w.runner.snapshot()).collect();
            if orphaned.iter().all(|id| covered.contains(id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        figures.push(died_at.elapsed().as_secs_f64() / interval.as_secs_f64());
        victim.runtime.abort();
        victim.proxy.accept.abort();
        // Keep the pool at full size for the next round.
        workers.push(spawn_worker(coordinator_addr, format!("w{}", LIVE_WORKERS + round)).await);
    }
    for worker in workers {
        worker.runtime.abort();
        worker.proxy.accept.abort();
    }
    shutdown.cancel();
    let _ = coordinator.await;
    figures
}

async fn wait_for_full_cover(workers: &[LiveWorker], all: &HashSet<Uuid>) {
    loop {
        let sets: Vec<HashSet<Uuid>> = workers.iter().map(|w| w.runner.snapshot()).collect();
        let total: usize = sets.iter().map(HashSet::len).sum();
        let covered: HashSet<&Uuid> = sets.iter().flatten().collect();
        if total == all.len() && covered.len() == all.len() && sets.iter().all(|s| !s.is_empty()) {
            // Let the last acks land so the next death starts from a settled state.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    const TRIALS: usize = 3;
    println!("# coordinator assignment benchmark: {TASKS} tasks over {WORKERS} workers");
    println!();
    println!("## part 1: state machine (in process, every command acknowledged at once)");
    println!(
        "{TRIALS} trials per row with fresh random task ids; times are means, ratios mean (worst)"
    );
    let ideal = TASKS as f64 / (WORKERS + 1) as f64;
    println!(
        "{:>13} {:>11} {:>8} {:>17} {:>17} {:>10}",
        "virtual_nodes", "initial_ms", "join_ms", "moved/ideal", "max/mean", "min/mean"
    );
    let trials: Vec<Vec<Task>> = (0..TRIALS).map(|_| tasks(TASKS)).collect();
    for virtual_nodes in [100, 200, 400, 1000, 2000] {
        let runs: Vec<RingFigures> = trials
            .iter()
            .map(|all| ring_run(virtual_nodes, all))
            .collect();
        let mean =
            |f: &dyn Fn(&RingFigures) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        let worst = |f: &dyn Fn(&RingFigures) -> f64| runs.iter().map(f).fold(f64::MIN, f64::max);
        let moved = |r: &RingFigures| r.moved as f64 / ideal;
        let spread = |r: &RingFigures| r.spread_max;
        println!(
            "{:>13} {:>11.1} {:>8.1} {:>9.3} ({:.3}) {:>9.3} ({:.3}) {:>10.3}",
            virtual_nodes,
            mean(&|r| r.initial.as_secs_f64() * 1e3),
            mean(&|r| r.join.as_secs_f64() * 1e3),
            mean(&moved),
            worst(&moved),
            mean(&spread),
            worst(&spread),
            runs.iter().map(|r| r.spread_min).fold(f64::MAX, f64::min),
        );
    }
    let (elapsed, moved, spread) = modulo_baseline(&trials[0]);
    println!(
        "{:>13} {:>11.1} {:>8} {:>9.3} {:>7} {:>9.3} {:>7} {:>10}",
        "baseline %N",
        elapsed.as_secs_f64() * 1e3,
        "-",
        moved as f64 / ideal,
        "",
        spread,
        "",
        "-"
    );
    println!("ideal moved on the 51st join: {ideal:.0} tasks; goals: moved/ideal <= 1.1, max/mean <= 1.15");
    println!();
    println!("## part 2: worker death to full reassignment (real coordinator and workers over WebSocket)");
    println!("10 workers, 5000 tasks, heartbeat 200 ms, 2 misses; one worker dies per round at a random phase");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    for death in [Death::Crash, Death::Hang] {
        let figures = runtime.block_on(death_run(death, 6));
        let shown: Vec<String> = figures.iter().map(|f| format!("{f:.2}")).collect();
        let worst = figures.iter().copied().fold(0.0, f64::max);
        let mean = figures.iter().sum::<f64>() / figures.len().max(1) as f64;
        println!(
            "{death:?}: death -> all its tasks running elsewhere, in heartbeat intervals: [{}]; mean {mean:.2}, worst {worst:.2}",
            shown.join(", ")
        );
    }
    println!("goal <= 2 intervals (crash: reconnect window of 1 interval; hang: 2 missed intervals since its last message)");
}
