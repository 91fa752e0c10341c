//! The coordinator end to end: real WebSocket connections, the real worker runtime with
//! recording runners, in-memory SQLite storage. Every step waits (with a timeout) for the
//! convergence described in `common::check_converged`, which also fails the test if a task
//! ever started on a second live worker.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use futures::SinkExt;
use stargazer_core::model::{Access, Permissions, TaskKind, TaskParams};
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use uuid::Uuid;

fn of_kind(tasks: &HashMap<Uuid, stargazer_core::model::Task>, kind: TaskKind) -> usize {
    tasks.values().filter(|t| t.kind() == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_rejoin_moves_only_what_must_move() {
    init_tracing();
    let storage = storage().await;
    let tasks = add_tasks(&storage, TaskKind::Youtube, 120).await;
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;
    let ledger = Arc::new(Ledger::default());

    let a = Worker::start(&coordinator.url(), "yt-a", TaskKind::Youtube, &ledger);
    converge("a alone", &coordinator, &[&a], &tasks, &ledger).await;
    assert_eq!(a.starts(), 120);

    let b = Worker::start(&coordinator.url(), "yt-b", TaskKind::Youtube, &ledger);
    converge("a and b", &coordinator, &[&a, &b], &tasks, &ledger).await;
    assert!(b.starts() > 0 && b.starts() < 120, "b got {}", b.starts());
    assert_eq!(a.stops(), b.starts(), "only what b took left a");

    let (a_starts, a_stops, b_starts, b_stops) = (a.starts(), a.stops(), b.starts(), b.stops());
    let c = Worker::start(&coordinator.url(), "yt-c", TaskKind::Youtube, &ledger);
    converge("a, b and c", &coordinator, &[&a, &b, &c], &tasks, &ledger).await;
    assert!(c.starts() > 0);
    assert_eq!(
        (a.stops() - a_stops) + (b.stops() - b_stops),
        c.starts(),
        "only what c took moved"
    );
    assert_eq!(
        (a.starts(), b.starts()),
        (a_starts, b_starts),
        "nothing was handed between a and b"
    );

    // b leaves cleanly: only its tasks move; a and c give up nothing.
    let b_held = b.running().len();
    let (a_starts, a_stops, c_starts, c_stops) = (a.starts(), a.stops(), c.starts(), c.stops());
    b.stop().await;
    converge("b left", &coordinator, &[&a, &c], &tasks, &ledger).await;
    assert_eq!((a.stops(), c.stops()), (a_stops, c_stops));
    assert_eq!((a.starts() - a_starts) + (c.starts() - c_starts), b_held);

    // b comes back under the same id and gets its share again.
    let b = Worker::start(&coordinator.url(), "yt-b", TaskKind::Youtube, &ledger);
    converge("b rejoined", &coordinator, &[&a, &b, &c], &tasks, &ledger).await;
    assert_eq!(
        b.running().len(),
        b_held,
        "the same arcs come back to the same id"
    );
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_evicted_and_its_tasks_move() {
    init_tracing();
    let storage = storage().await;
    let tasks = add_tasks(&storage, TaskKind::Youtube, 60).await;
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;
    let ledger = Arc::new(Ledger::default());

    let mut silent = RawClient::connect(coordinator.addr, USER, PASSWORD)
        .await
        .unwrap();
    silent
        .send(&WorkerMessage::Announce {
            worker_id: "silent".into(),
            kind: TaskKind::Youtube,
            tasks: vec![],
        })
        .await;
    assert!(matches!(
        silent.next().await,
        Some(CoordinatorMessage::Welcome {
            heartbeat_interval_ms: 400,
            ..
        })
    ));
    let Some(CoordinatorMessage::Assign {
        seq,
        tasks: assigned,
    }) = silent.next().await
    else {
        panic!("expected an assign");
    };
    assert_eq!(assigned.len(), 60);
    silent
        .send(&WorkerMessage::Ack {
            seq,
            failed: vec![],
        })
        .await;
    eventually("silent holds everything", || async {
        let status = coordinator.status().await;
        (status["settled"] == true && status["workers"][0]["tasks"] == 60)
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;

    // From here on the raw client neither reads nor writes, but keeps its socket open.
    let live = Worker::start(&coordinator.url(), "yt-live", TaskKind::Youtube, &ledger);
    converge("silent evicted", &coordinator, &[&live], &tasks, &ledger).await;
    assert_eq!(live.starts(), 60);
    let metrics = coordinator
        .get("/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stargazer_coordinator_evictions_total 1"),
        "{metrics}"
    );
    drop(silent);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_is_replaced_and_a_network_blip_moves_nothing() {
    init_tracing();
    let storage = storage().await;
    let tasks = add_tasks(&storage, TaskKind::Twitter, 80).await;
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;
    let proxy = Proxy::start(coordinator.addr).await;
    let ledger = Arc::new(Ledger::default());

    let a = Worker::start(&proxy.url(), "tw-a", TaskKind::Twitter, &ledger);
    let b = Worker::start(&proxy.url(), "tw-b", TaskKind::Twitter, &ledger);
    let c = Worker::start(&proxy.url(), "tw-c", TaskKind::Twitter, &ledger);
    converge(
        "three workers",
        &coordinator,
        &[&a, &b, &c],
        &tasks,
        &ledger,
    )
    .await;

    // Every connection drops without a close: the workers reconnect and re-announce what
    // they run, and nothing is stopped or started.
    let before: Vec<(usize, usize)> = [&a, &b, &c]
        .iter()
        .map(|w| (w.starts(), w.stops()))
        .collect();
    proxy.cut();
    converge(
        "after the blip",
        &coordinator,
        &[&a, &b, &c],
        &tasks,
        &ledger,
    )
    .await;
    let after: Vec<(usize, usize)> = [&a, &b, &c]
        .iter()
        .map(|w| (w.starts(), w.stops()))
        .collect();
    assert_eq!(before, after, "a reconnect caused churn");

    // c dies: after its heartbeat deadline its tasks go to a and b, which stop nothing.
    let c_held = c.running().len();
    let (a_stops, b_stops, a_starts, b_starts) = (a.stops(), b.stops(), a.starts(), b.starts());
    c.kill().await;
    converge("c died", &coordinator, &[&a, &b], &tasks, &ledger).await;
    assert_eq!((a.stops(), b.stops()), (a_stops, b_stops));
    assert_eq!((a.starts() - a_starts) + (b.starts() - b_starts), c_held);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_changes_touch_only_the_changed_tasks() {
    init_tracing();
    let storage = storage().await;
    let mut tasks = add_tasks(&storage, TaskKind::Youtube, 40).await;
    tasks.extend(add_tasks(&storage, TaskKind::Twitter, 20).await);
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;
    let ledger = Arc::new(Ledger::default());
    let y1 = Worker::start(&coordinator.url(), "yt-1", TaskKind::Youtube, &ledger);
    let y2 = Worker::start(&coordinator.url(), "yt-2", TaskKind::Youtube, &ledger);
    let t1 = Worker::start(&coordinator.url(), "tw-1", TaskKind::Twitter, &ledger);
    let all = [&y1, &y2, &t1];
    converge("initial", &coordinator, &all, &tasks, &ledger).await;
    let totals = |ws: &[&Worker]| -> (usize, usize) {
        ws.iter()
            .fold((0, 0), |(s, p), w| (s + w.starts(), p + w.stops()))
    };
    // Workers joining one after another may have handed tasks over; count from here.
    let (starts, stops) = totals(&all);
    assert_eq!(starts - stops, 60);

    // Additions: started where they belong, nothing else moves.
    tasks.extend(add_tasks(&storage, TaskKind::Youtube, 10).await);
    tasks.extend(add_tasks(&storage, TaskKind::Twitter, 5).await);
    converge("after additions", &coordinator, &all, &tasks, &ledger).await;
    assert_eq!(totals(&all), (starts + 15, stops));

    // A parameter change restarts that one task.
    let changed = *tasks
        .keys()
        .find(|id| tasks[id].kind() == TaskKind::Youtube)
        .unwrap();
    let mut entity = storage
        .get_entity(tasks[&changed].entity)
        .await
        .unwrap()
        .unwrap();
    entity.tasks[0].params = TaskParams::Youtube {
        channel_id: "UCchangedchangedchanged".into(),
    };
    storage.update_entity(&entity).await.unwrap();
    tasks.insert(changed, entity.tasks[0].clone());
    converge("after a change", &coordinator, &all, &tasks, &ledger).await;
    assert_eq!(totals(&all), (starts + 16, stops + 1));

    // Deletions: stopped, nothing else moves.
    let doomed: Vec<Uuid> = tasks.keys().copied().take(7).collect();
    for id in &doomed {
        let task = tasks.remove(id).unwrap();
        storage.delete_entity(task.entity).await.unwrap();
    }
    converge("after deletions", &coordinator, &all, &tasks, &ledger).await;
    assert_eq!(totals(&all), (starts + 16, stops + 8));
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_worker_leaves_then_a_rejoin_assigns_every_task() {
    init_tracing();
    let storage = storage().await;
    let mut tasks = add_tasks(&storage, TaskKind::Twitter, 30).await;
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;
    let ledger = Arc::new(Ledger::default());

    let x = Worker::start(&coordinator.url(), "tw-x", TaskKind::Twitter, &ledger);
    converge("x alone", &coordinator, &[&x], &tasks, &ledger).await;
    x.stop().await;
    // Nobody left: every task is unbound, and the coordinator keeps serving.
    converge("nobody", &coordinator, &[], &tasks, &ledger).await;
    let status = coordinator.status().await;
    assert_eq!(status["unassigned_count"], 30);
    assert_eq!(status["workers"].as_array().unwrap().len(), 0);
    tasks.extend(add_tasks(&storage, TaskKind::Twitter, 5).await);
    converge("nobody, more tasks", &coordinator, &[], &tasks, &ledger).await;

    let y = Worker::start(&coordinator.url(), "tw-y", TaskKind::Twitter, &ledger);
    converge("y joined", &coordinator, &[&y], &tasks, &ledger).await;
    assert_eq!(y.running().len(), 35);
    assert_eq!(coordinator.get("/healthz", None).await.status(), 200);
    let ready = coordinator.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["storage"]["ready"], true, "{ready}");
    // And once more with the same id as the worker that left.
    y.stop().await;
    converge("nobody again", &coordinator, &[], &tasks, &ledger).await;
    let x = Worker::start(&coordinator.url(), "tw-x", TaskKind::Twitter, &ledger);
    converge("x back", &coordinator, &[&x], &tasks, &ledger).await;
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_resumes_without_churn() {
    init_tracing();
    let storage = storage().await;
    let mut tasks = add_tasks(&storage, TaskKind::Youtube, 150).await;
    tasks.extend(add_tasks(&storage, TaskKind::Twitter, 50).await);
    // No start-up hold: only the snapshot keeps the first worker to reconnect from being
    // handed everything.
    let config = test_config();
    let first = Coordinator::start(storage.clone(), config.clone()).await;
    let proxy = Proxy::start(first.addr).await;
    let ledger = Arc::new(Ledger::default());
    let y1 = Worker::start(&proxy.url(), "yt-1", TaskKind::Youtube, &ledger);
    let y2 = Worker::start(&proxy.url(), "yt-2", TaskKind::Youtube, &ledger);
    let y3 = Worker::start(&proxy.url(), "yt-3", TaskKind::Youtube, &ledger);
    let t1 = Worker::start(&proxy.url(), "tw-1", TaskKind::Twitter, &ledger);
    let all = [&y1, &y2, &y3, &t1];
    converge("before the restart", &first, &all, &tasks, &ledger).await;
    let before: Vec<(usize, usize)> = all.iter().map(|w| (w.starts(), w.stops())).collect();

    // A new coordinator on a new port, same storage; the workers find it through the proxy.
    first.stop().await;
    let second = Coordinator::start(storage.clone(), config).await;
    // The workers come back a little later, within the heartbeat deadline.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    proxy.retarget(second.addr);
    converge("after the restart", &second, &all, &tasks, &ledger).await;
    let after: Vec<(usize, usize)> = all.iter().map(|w| (w.starts(), w.stops())).collect();
    assert_eq!(before, after, "the restart caused stop/start churn");

    // The restarted coordinator is fully functional: a new task lands, a leave moves.
    tasks.extend(add_tasks(&storage, TaskKind::Youtube, 3).await);
    converge("new task after the restart", &second, &all, &tasks, &ledger).await;
    y3.stop().await;
    converge(
        "leave after the restart",
        &second,
        &[&y1, &y2, &t1],
        &tasks,
        &ledger,
    )
    .await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kinds_never_receive_each_others_tasks() {
    init_tracing();
    let storage = storage().await;
    let mut tasks = add_tasks(&storage, TaskKind::Youtube, 60).await;
    tasks.extend(add_tasks(&storage, TaskKind::Twitter, 60).await);
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;
    let ledger = Arc::new(Ledger::default());

    // Only YouTube workers at first: Twitter tasks stay unassigned rather than leak.
    let y1 = Worker::start(&coordinator.url(), "yt-1", TaskKind::Youtube, &ledger);
    let y2 = Worker::start(&coordinator.url(), "yt-2", TaskKind::Youtube, &ledger);
    converge("youtube only", &coordinator, &[&y1, &y2], &tasks, &ledger).await;
    assert_eq!(
        coordinator.status().await["unassigned_count"],
        of_kind(&tasks, TaskKind::Twitter)
    );

    let t1 = Worker::start(&coordinator.url(), "tw-1", TaskKind::Twitter, &ledger);
    let t2 = Worker::start(&coordinator.url(), "tw-2", TaskKind::Twitter, &ledger);
    let all = [&y1, &y2, &t1, &t2];
    converge("both kinds", &coordinator, &all, &tasks, &ledger).await;
    for w in all {
        assert!(
            w.running().values().all(|t| t.kind() == w.kind),
            "{} got a foreign task",
            w.name
        );
    }
    // Losing every YouTube worker leaves the Twitter assignment alone.
    let (t1_stops, t2_stops) = (t1.stops(), t2.stops());
    y1.stop().await;
    y2.stop().await;
    converge("twitter only", &coordinator, &[&t1, &t2], &tasks, &ledger).await;
    assert_eq!((t1.stops(), t2.stops()), (t1_stops, t2_stops));
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_unknown_tasks_in_an_announce_are_taken_back() {
    init_tracing();
    let storage = storage().await;
    let tasks = add_tasks(&storage, TaskKind::Youtube, 5).await;
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;
    let ledger = Arc::new(Ledger::default());
    let youtube = Worker::start(&coordinator.url(), "yt", TaskKind::Youtube, &ledger);
    converge("youtube worker", &coordinator, &[&youtube], &tasks, &ledger).await;

    // A Twitter worker claims to run a YouTube task and a task that does not exist.
    let foreign = *tasks.keys().next().unwrap();
    let unknown = Uuid::new_v4();
    let mut raw = RawClient::connect(coordinator.addr, USER, PASSWORD)
        .await
        .unwrap();
    raw.send(&WorkerMessage::Announce {
        worker_id: "tw-raw".into(),
        kind: TaskKind::Twitter,
        tasks: vec![foreign, unknown],
    })
    .await;
    assert!(matches!(
        raw.next().await,
        Some(CoordinatorMessage::Welcome { .. })
    ));
    let Some(CoordinatorMessage::Unassign {
        seq,
        tasks: mut taken,
    }) = raw.next().await
    else {
        panic!("expected an unassign");
    };
    taken.sort();
    let mut expected = vec![foreign, unknown];
    expected.sort();
    assert_eq!(taken, expected);
    raw.send(&WorkerMessage::Ack {
        seq,
        failed: vec![],
    })
    .await;
    eventually("the raw worker holds nothing", || async {
        let status = coordinator.status().await;
        let raw_entry = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == "tw-raw")
            .cloned();
        match raw_entry {
            Some(entry) if entry["tasks"] == 0 && status["settled"] == true => Ok(()),
            _ => Err(status.to_string()),
        }
    })
    .await;
    assert_eq!(youtube.running().len(), 5);

    // Garbage after the announce is answered with an error, not a dropped connection.
    raw.socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            "{\"type\":\"bogus\"}",
        ))
        .await
        .unwrap();
    assert!(matches!(
        raw.next().await,
        Some(CoordinatorMessage::Error { .. })
    ));
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    init_tracing();
    let storage = storage().await;
    add_credential(
        &storage,
        "bot",
        "bot-secret",
        Permissions {
            api: Some(Access::Rw),
            ..Default::default()
        },
    )
    .await;
    let coordinator = Coordinator::start(storage.clone(), test_config()).await;

    let anonymous = coordinator.get("/v1/status", None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"stargazer-coordinator\""
    );
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        coordinator
            .get("/v1/status", Some((USER, "wrong")))
            .await
            .status(),
        401
    );
    assert_eq!(
        coordinator
            .get("/v1/status", Some(("bot", "bot-secret")))
            .await
            .status(),
        403
    );
    // Twice: the second answer comes from the verified-password cache.
    for _ in 0..2 {
        assert_eq!(
            coordinator
                .get("/v1/status", Some((USER, PASSWORD)))
                .await
                .status(),
            200
        );
    }
    assert_eq!(coordinator.get("/healthz", None).await.status(), 200);
    let metrics = coordinator
        .get("/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stargazer_coordinator_auth_failures_total"),
        "{metrics}"
    );

    match RawClient::connect(coordinator.addr, USER, "wrong").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
    match RawClient::connect(coordinator.addr, "bot", "bot-secret").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a credential without coordinator access was accepted"),
    }

    // A first frame that is not an announce is refused with a reason.
    let mut raw = RawClient::connect(coordinator.addr, USER, PASSWORD)
        .await
        .unwrap();
    raw.send(&WorkerMessage::Heartbeat).await;
    assert!(matches!(
        raw.next().await,
        Some(CoordinatorMessage::Error { .. })
    ));
    assert!(raw.next().await.is_none());
    coordinator.stop().await;
}
