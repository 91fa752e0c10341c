//! Assignment benchmark (`cargo bench -p stargazer-coordinator`).
//!
//! Part 1 drives the assignment state machine directly (no I/O; every command is
//! acknowledged at once) with 100,000 tasks over 50 workers, for several virtual-node
//! counts: time of the initial assignment, tasks moved when a 51st worker joins against
//! the ideal 100,000/51, and load spread (max/mean tasks per worker). The same-run
//! baseline is naive `hash % workers` placement, which spreads well but moves almost
//! everything on a join.
//!
//! Part 2 measures failure detection end to end: a real coordinator (`run`, SQLite in
//! memory, 200 ms heartbeats, 2 misses) with 10 real workers (core worker runtime) and
//! 5,000 tasks; one worker process is killed (its connection drops, no `leave`), and the
//! time until every one of its tasks runs on another worker is reported in heartbeat
//! intervals. Repeated a few times.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use async_trait::async_trait;
use stargazer_coordinator::assignment::{Action, Assignment, ConnId, Timing};
use stargazer_coordinator::CoordinatorConfig;
use stargazer_core::auth::hash_password;
use stargazer_core::model::{Access, Credential, Entity, Permissions, Task, TaskKind, TaskParams};
use stargazer_core::protocol::CoordinatorMessage;
use stargazer_core::worker_runtime::{run_worker, TaskError, TaskRunner, WorkerRuntimeConfig};
use stargazer_core::CancellationToken;
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
fn settle(state: &mut Assignment, conns: &HashMap<ConnId, String>, actions: Vec<Action>) -> (usize, usize) {
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
    virtual_nodes: u32,
    initial: Duration,
    join: Duration,
    moved: usize,
    spread_max: f64,
    spread_min: f64,
}

fn ring_run(virtual_nodes: u32, all: &[Task]) -> RingFigures {
    let timing = Timing {
        eviction_timeout: Duration::from_secs(3600),
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
    assert_eq!(assigned, unassigned, "every move is one unassign and one assign");
    assert!(state.status(false, now).settled);
    RingFigures {
        virtual_nodes,
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

/// A worker process of part 2: its runner, shutdown token and runtime task.
type LiveWorker = (
    Arc<Counting>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), stargazer_core::worker_runtime::WorkerRuntimeError>>,
);

#[derive(Default)]
struct Counting {
    running: Mutex<HashSet<Uuid>>,
}

#[async_trait]
impl TaskRunner for Counting {
    async fn start(&self, task: Task) -> Result<(), TaskError> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(task.id);
        Ok(())
    }

    async fn stop(&self, task_id: Uuid) -> Result<(), TaskError> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&task_id);
        Ok(())
    }
}

impl Counting {
    fn snapshot(&self) -> HashSet<Uuid> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn death_run(rounds: usize) -> Vec<f64> {
    const LIVE_TASKS: usize = 5_000;
    const LIVE_WORKERS: usize = 10;
    let interval = Duration::from_millis(200);
    let storage = stargazer_core::storage::connect("sqlite::memory:").await.expect("sqlite");
    storage
        .insert_credential(&Credential {
            username: "bench".into(),
            hash: hash_password("bench", 1_000).expect("hash"),
            permissions: Permissions {
                coordinator: Some(Access::Ro),
                ..Default::default()
            },
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let coordinator = tokio::spawn(stargazer_coordinator::run(config, listener, storage, shutdown.clone()));

    let spawn = |name: String| -> LiveWorker {
        let runner = Arc::new(Counting::default());
        let config = WorkerRuntimeConfig::new(url.clone(), "bench", "bench", name, TaskKind::Youtube);
        let dyn_runner: Arc<dyn TaskRunner> = runner.clone();
        let token = CancellationToken::new();
        let handle = tokio::spawn(run_worker(config, dyn_runner, token.clone()));
        (runner, token, handle)
    };
    let mut workers: Vec<LiveWorker> = (0..LIVE_WORKERS).map(|i| spawn(format!("w{i}"))).collect();
    let mut figures = Vec::new();
    for round in 0..rounds {
        wait_for_full_cover(&workers, &all).await;
        let (runner, _token, handle) = workers.remove(0);
        let orphaned = runner.snapshot();
        let killed_at = StdInstant::now();
        handle.abort();
        loop {
            let covered: HashSet<Uuid> = workers.iter().flat_map(|(r, _, _)| r.snapshot()).collect();
            if orphaned.iter().all(|id| covered.contains(id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        figures.push(killed_at.elapsed().as_secs_f64() / interval.as_secs_f64());
        // Keep the pool at full size for the next round.
        workers.push(spawn(format!("w{}", LIVE_WORKERS + round)));
    }
    for (_, token, handle) in workers {
        token.cancel();
        let _ = handle.await;
    }
    shutdown.cancel();
    let _ = coordinator.await;
    figures
}

async fn wait_for_full_cover(workers: &[LiveWorker], all: &HashSet<Uuid>) {
    loop {
        let sets: Vec<HashSet<Uuid>> = workers.iter().map(|(r, _, _)| r.snapshot()).collect();
        let total: usize = sets.iter().map(HashSet::len).sum();
        let covered: HashSet<&Uuid> = sets.iter().flatten().collect();
        if total == all.len() && covered.len() == all.len() && sets.iter().all(|s| !s.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let all = tasks(TASKS);
    println!("# coordinator assignment benchmark: {TASKS} tasks over {WORKERS} workers");
    println!();
    println!("## part 1: state machine (in process, every command acknowledged at once)");
    let ideal = TASKS as f64 / (WORKERS + 1) as f64;
    println!(
        "{:>13} {:>12} {:>10} {:>10} {:>14} {:>9} {:>9}",
        "virtual_nodes", "initial_ms", "join_ms", "moved", "moved/ideal", "max/mean", "min/mean"
    );
    for virtual_nodes in [100, 200, 400, 800, 1600] {
        let f = ring_run(virtual_nodes, &all);
        println!(
            "{:>13} {:>12.1} {:>10.1} {:>10} {:>14.3} {:>9.3} {:>9.3}",
            f.virtual_nodes,
            f.initial.as_secs_f64() * 1e3,
            f.join.as_secs_f64() * 1e3,
            f.moved,
            f.moved as f64 / ideal,
            f.spread_max,
            f.spread_min,
        );
    }
    let (elapsed, moved, spread) = modulo_baseline(&all);
    println!(
        "{:>13} {:>12.1} {:>10} {:>10} {:>14.3} {:>9.3} {:>9}",
        "baseline%N",
        elapsed.as_secs_f64() * 1e3,
        "-",
        moved,
        moved as f64 / ideal,
        spread,
        "-"
    );
    println!("ideal moved on the 51st join: {ideal:.0} tasks; goals: moved/ideal <= 1.1, max/mean <= 1.15");
    println!();
    println!("## part 2: worker death to full reassignment (real coordinator and workers over WebSocket)");
    println!("10 workers, 5000 tasks, heartbeat 200 ms, 2 misses; one worker killed per round");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let figures = runtime.block_on(death_run(5));
    let shown: Vec<String> = figures.iter().map(|f| format!("{f:.2}")).collect();
    let worst = figures.iter().copied().fold(0.0, f64::max);
    let mean = figures.iter().sum::<f64>() / figures.len().max(1) as f64;
    println!("death -> all its tasks running elsewhere, in heartbeat intervals: [{}]", shown.join(", "));
    println!("mean {mean:.2}, worst {worst:.2}; goal <= 2");
}
