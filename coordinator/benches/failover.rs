//! Coordinator failover time, in heartbeat intervals (goal: at most 2).
//!
//! Failover: two coordinators on one SQLite file, each in a runtime of its own, `N`
//! workers given both URLs; the leader is killed (its runtime dropped: no lease release,
//! sockets cut) and the clock runs until the standby leads and every worker is attached
//! to it holding the same tasks. Baseline, in the same run: a single coordinator killed
//! and restarted at once under the same instance id (today's restart: it takes its own
//! lease back at once), workers reaching it through a re-pointed proxy; the clock runs
//! until every worker is back. Each figure is the median of `RUNS` runs.
//!
//! `cargo bench -p stargazer-coordinator --bench failover`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use stargazer_coordinator::CoordinatorConfig;
use stargazer_core::model::{Access, Permissions, TaskKind};
use stargazer_testkit::backends::{open_storage, TestSqliteFile};
use tokio::time::Instant;
use uuid::Uuid;

const WORKERS: usize = 10;
const TASKS: usize = 1000;
const RUNS: usize = 5;
const HEARTBEAT_MS: u64 = 1000;
/// How long a convergence may take before the bench reports a stall.
const STALL: Duration = Duration::from_secs(60);

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        heartbeat_interval_ms: HEARTBEAT_MS,
        heartbeat_misses: 3,
        virtual_nodes: 64,
        snapshot_interval_ms: 200,
        startup_hold_ms: Some(0),
        ..CoordinatorConfig::default()
    }
}

async fn seeded(url: &str) -> HashMap<Uuid, stargazer_core::model::Task> {
    let storage = open_storage(url).await;
    add_credential(
        &storage,
        USER,
        PASSWORD,
        Permissions {
            coordinator: Some(Access::Ro),
            ..Default::default()
        },
    )
    .await;
    add_tasks(&storage, TaskKind::Youtube, TASKS).await
}

fn holdings(workers: &[Worker]) -> Vec<HashSet<Uuid>> {
    workers
        .iter()
        .map(|w| w.running().keys().copied().collect())
        .collect()
}

/// Polls until `coordinator` leads with every worker attached and settled; the time
/// since `since`.
async fn until_all_attached(
    coordinator: &Coordinator,
    workers: &[Worker],
    tasks: &HashMap<Uuid, stargazer_core::model::Task>,
    ledger: &Ledger,
    since: Instant,
) -> Duration {
    let refs: Vec<&Worker> = workers.iter().collect();
    loop {
        let status = coordinator.status().await;
        let converged = check_converged(coordinator, &refs, tasks, ledger).await;
        if status["leader"] == true && converged.is_ok() {
            return since.elapsed();
        }
        // A stall is a failure to report, not a bench that never ends.
        if since.elapsed() > STALL {
            panic!("not converged {STALL:?} after the start: {converged:?}; status {status}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn failover_once() -> Duration {
    let file = TestSqliteFile::new();
    let url = file.url();
    let tasks = seeded(&url).await;
    let a = Coordinator::start_isolated(&url, "coord-a", config()).await;
    while a.status().await["leader"] != true {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Coordinator::start_isolated(&url, "coord-b", config()).await;
    let urls = format!("{},{}", a.url(), b.url());
    let ledger = Arc::new(Ledger::default());
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|n| Worker::start(&urls, &format!("yt-{n}"), TaskKind::Youtube, &ledger))
        .collect();
    until_all_attached(&a, &workers, &tasks, &ledger, Instant::now()).await;
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
    let before = holdings(&workers);
    let killed = Instant::now();
    a.kill();
    let took = until_all_attached(&b, &workers, &tasks, &ledger, killed).await;
    assert_eq!(holdings(&workers), before, "a task moved during failover");
    for worker in workers {
        worker.stop().await;
    }
    b.stop().await;
    took
}

async fn restart_once() -> Duration {
    let file = TestSqliteFile::new();
    let url = file.url();
    let tasks = seeded(&url).await;
    let first = Coordinator::start_isolated(&url, "coord", config()).await;
    let proxy = Proxy::start(first.addr).await;
    let ledger = Arc::new(Ledger::default());
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|n| Worker::start(&proxy.url(), &format!("yt-{n}"), TaskKind::Youtube, &ledger))
        .collect();
    until_all_attached(&first, &workers, &tasks, &ledger, Instant::now()).await;
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
    let before = holdings(&workers);
    let killed = Instant::now();
    first.kill();
    let second = Coordinator::start_isolated(&url, "coord", config()).await;
    proxy.retarget(second.addr);
    let took = until_all_attached(&second, &workers, &tasks, &ledger, killed).await;
    assert_eq!(
        holdings(&workers),
        before,
        "a task moved during the restart"
    );
    for worker in workers {
        worker.stop().await;
    }
    second.stop().await;
    took
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let heartbeat = Duration::from_millis(HEARTBEAT_MS);
        let mut failovers = Vec::new();
        let mut restarts = Vec::new();
        for _ in 0..RUNS {
            restarts.push(restart_once().await);
            failovers.push(failover_once().await);
        }
        let in_beats = |d: Duration| d.as_secs_f64() / heartbeat.as_secs_f64();
        let (failover, restart) = (median(failovers.clone()), median(restarts.clone()));
        println!(
            "coordinator failover: {WORKERS} workers, {TASKS} tasks, heartbeat {heartbeat:?}, lease term {:?}, median of {RUNS}",
            config().lease_term()
        );
        println!(
            "  baseline  single coordinator killed and restarted at once: {restart:?} = {:.2} heartbeat intervals (runs {restarts:?})",
            in_beats(restart)
        );
        println!(
            "  failover  leader killed, standby leading, all workers back: {failover:?} = {:.2} heartbeat intervals (runs {failovers:?}; goal <= 2)",
            in_beats(failover)
        );
    });
}
