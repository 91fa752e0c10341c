//! Two coordinators on one storage (a SQLite file, or a database on the MongoDB-wire
//! server), each in a runtime of its own as a separate process would be, with workers
//! given both URLs: one leads and the other refuses workers naming it; a leader that dies
//! is replaced within two heartbeat intervals and the workers keep every task; a graceful
//! stop hands over at once; a leader whose lease is taken steps down.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use stargazer_coordinator::CoordinatorConfig;
use stargazer_core::model::{Access, Permissions, Task, TaskKind};
use stargazer_core::protocol::{LEADER_ID_HEADER, LEADER_URL_HEADER};
use stargazer_core::storage::Storage;
use stargazer_testkit::backends::{open_storage, TestDatabase, TestSqliteFile};
use uuid::Uuid;

/// Storage with the worker credential and `count` YouTube tasks.
async fn seeded(url: &str, count: usize) -> (Arc<dyn Storage>, HashMap<Uuid, Task>) {
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
    let tasks = add_tasks(&storage, TaskKind::Youtube, count).await;
    (storage, tasks)
}

/// Whether `coordinator` says it leads.
async fn leads(coordinator: &Coordinator) -> bool {
    coordinator.status().await["leader"] == Value::Bool(true)
}

/// Waits until `coordinator` leads, for at most `within`; panics otherwise.
async fn wait_until_leading(coordinator: &Coordinator, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    while !leads(coordinator).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} does not lead within {within:?}: {}",
            coordinator.addr,
            coordinator.status().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What each worker runs, by worker name.
fn holdings(workers: &[&Worker]) -> HashMap<String, HashSet<Uuid>> {
    workers
        .iter()
        .map(|w| (w.name.clone(), w.running().keys().copied().collect()))
        .collect()
}

/// Every worker's (starts, stops).
fn churn(workers: &[&Worker]) -> Vec<(usize, usize)> {
    workers.iter().map(|w| (w.starts(), w.stops())).collect()
}

/// Asserts that a standby refuses a worker with 503, naming `leader` and its URL.
async fn assert_refuses(standby: &Coordinator, leader: &Coordinator, leader_id: &str) {
    let refused = RawClient::connect(standby.addr, USER, PASSWORD).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("the standby accepted a worker: two coordinators lead");
    };
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[LEADER_ID_HEADER], leader_id);
    assert_eq!(response.headers()[LEADER_URL_HEADER], leader.url().as_str());
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
        .expect("a JSON body");
    assert_eq!(body["error"]["code"], "not_leader");
    assert_eq!(body["error"]["leader_id"], leader_id);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(leader_id)),
        "{body}"
    );
}

async fn a_killed_leader_is_replaced_and_no_task_moves(
    storage_url: String,
    config: CoordinatorConfig,
) {
    init_tracing();
    let heartbeat = config.heartbeat_interval();
    let (_storage, tasks) = seeded(&storage_url, 90).await;
    let a = Coordinator::start_isolated(&storage_url, "coord-a", config.clone()).await;
    wait_until_leading(&a, PATIENCE, "the first coordinator").await;
    let b = Coordinator::start_isolated(&storage_url, "coord-b", config.clone()).await;
    eventually("b knows the leader", || async {
        let status = b.status().await;
        (status["leader"] == false && status["leader_url"] == a.url().as_str())
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    assert_eq!(b.status().await["instance_id"], "coord-b");

    // Only a leads: b refuses workers and is not ready, a is.
    assert_refuses(&b, &a, "coord-a").await;
    let ready = b.get("/readyz", None).await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["leader"], false);
    assert_eq!(ready["checks"]["storage"]["ready"], true);
    let ready = a.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["leader"], true);

    // The workers list the standby first: they follow its refusal to the leader.
    let urls = format!("{},{}", b.url(), a.url());
    let ledger = Arc::new(Ledger::default());
    let w1 = Worker::start(&urls, "yt-1", TaskKind::Youtube, &ledger);
    let w2 = Worker::start(&urls, "yt-2", TaskKind::Youtube, &ledger);
    let w3 = Worker::start(&urls, "yt-3", TaskKind::Youtube, &ledger);
    let workers = [&w1, &w2, &w3];
    converge("three workers on a", &a, &workers, &tasks, &ledger).await;
    // Let a store the settled assignment (written every snapshot interval when changed).
    tokio::time::sleep(config.heartbeat_interval() * 2).await;
    let before = holdings(&workers);
    let churn_before = churn(&workers);
    assert!(!b.status().await["leader"].as_bool().unwrap_or(true));

    // a dies without a word: no release, no final snapshot, sockets cut.
    a.kill();
    wait_until_leading(
        &b,
        (heartbeat * 2).max(config.lease_term() + config.lease_poll())
            + Duration::from_millis(1500),
        "the standby after the leader's death",
    )
    .await;
    converge("three workers on b", &b, &workers, &tasks, &ledger).await;
    assert_eq!(
        holdings(&workers),
        before,
        "a task moved during the takeover"
    );
    assert_eq!(
        churn(&workers),
        churn_before,
        "the takeover stopped or started tasks"
    );
    assert!(b.status().await["epoch"].as_u64().unwrap() >= 2);

    // b is a full leader: a leave moves only the leaver's tasks.
    w3.stop().await;
    converge("w3 left", &b, &[&w1, &w2], &tasks, &ledger).await;
    w1.stop().await;
    w2.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_no_task_moves_sqlite() {
    let file = TestSqliteFile::new();
    a_killed_leader_is_replaced_and_no_task_moves(file.url(), test_config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_no_task_moves_mongo() {
    let database = TestDatabase::new();
    // The MongoDB-wire test server answers a lease call in up to a few hundred
    // milliseconds on a busy machine: a longer heartbeat and term keep renewals in time.
    let config = CoordinatorConfig {
        heartbeat_interval_ms: 1000,
        lease_term_ms: Some(2000),
        ..test_config()
    };
    a_killed_leader_is_replaced_and_no_task_moves(database.url(), config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_over_at_once() {
    init_tracing();
    let file = TestSqliteFile::new();
    let url = file.url();
    // A term far longer than the test's bound: only the release lets b lead in time.
    let config = CoordinatorConfig {
        lease_term_ms: Some(8_000),
        ..test_config()
    };
    let (_storage, tasks) = seeded(&url, 40).await;
    let a = Coordinator::start_isolated(&url, "coord-a", config.clone()).await;
    wait_until_leading(&a, PATIENCE, "the first coordinator").await;
    let b = Coordinator::start_isolated(&url, "coord-b", config.clone()).await;
    let urls = format!("{},{}", a.url(), b.url());
    let ledger = Arc::new(Ledger::default());
    let w1 = Worker::start(&urls, "yt-1", TaskKind::Youtube, &ledger);
    let w2 = Worker::start(&urls, "yt-2", TaskKind::Youtube, &ledger);
    let workers = [&w1, &w2];
    converge("two workers on a", &a, &workers, &tasks, &ledger).await;
    let before = holdings(&workers);
    let churn_before = churn(&workers);

    a.stop().await;
    // b polls every quarter term (2 s here), so it leads at its next poll; without the
    // release it would wait for the 8 s term to run out.
    wait_until_leading(
        &b,
        Duration::from_secs(5),
        "the standby after a graceful stop",
    )
    .await;
    converge("two workers on b", &b, &workers, &tasks, &ledger).await;
    assert_eq!(
        holdings(&workers),
        before,
        "a task moved during the handover"
    );
    assert_eq!(
        churn(&workers),
        churn_before,
        "the handover stopped or started tasks"
    );
    w1.stop().await;
    w2.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_steps_down() {
    init_tracing();
    let file = TestSqliteFile::new();
    let url = file.url();
    let config = test_config();
    let (storage, tasks) = seeded(&url, 30).await;
    let a = Coordinator::start_isolated(&url, "coord-a", config.clone()).await;
    wait_until_leading(&a, PATIENCE, "the coordinator").await;
    let ledger = Arc::new(Ledger::default());
    let worker = Worker::start(&a.url(), "yt-1", TaskKind::Youtube, &ledger);
    converge("the worker on a", &a, &[&worker], &tasks, &ledger).await;
    let before = holdings(&[&worker]);
    let epoch = a.status().await["epoch"].as_u64().unwrap();

    // Another instance whose clock says a's term is over takes the lease.
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let intruder = storage
        .lease_acquire(
            "coordinator",
            "leader",
            "intruder",
            later,
            later + chrono::Duration::seconds(60),
        )
        .await
        .unwrap()
        .expect("granted: a's term is over by the intruder's clock");
    assert_eq!(intruder.epoch, epoch + 1);

    eventually("a steps down", || async {
        let status = a.status().await;
        (status["leader"] == false && status["leader_id"] == "intruder")
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    let refused = RawClient::connect(a.addr, USER, PASSWORD).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("a stepped-down coordinator accepted a worker");
    };
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[LEADER_ID_HEADER], "intruder");
    assert_eq!(a.get("/readyz", None).await.status(), 503);

    // The worker keeps its tasks while nobody serves it; once the intruder lets go, a
    // leads again and the worker is back with the same tasks.
    assert!(storage
        .lease_release("coordinator", "leader", "intruder")
        .await
        .unwrap());
    wait_until_leading(&a, PATIENCE, "a after the release").await;
    converge("the worker back on a", &a, &[&worker], &tasks, &ledger).await;
    assert_eq!(holdings(&[&worker]), before);
    assert!(a.status().await["epoch"].as_u64().unwrap() > epoch + 1);
    worker.stop().await;
    a.stop().await;
}
