//! Live rooms against the Bilibili API double, publishing to the real RabbitMQ exchange:
//! live → ended, reruns, flapping, batching, risk control and restarts.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stargazer_core::model::Event;
use stargazer_core::storage::{self, Storage};
use stargazer_worker_bilibili::metrics::{DYNAMIC, LIVE};
use stargazer_worker_bilibili::BilibiliConfig;
use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_then_ended_share_the_stream_id_and_a_rerun_is_never_live() {
    let server = BilibiliServer::start().await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let (uid, rerun_uid) = (new_uid(), new_uid());
    server.add_room(uid, 5050);
    server.add_room(rerun_uid, 6060);
    server.set_rerun(rerun_uid);
    let worker = Worker::start(config(&server), storage.clone(), rabbit().await);
    let (entity, rerun_entity) = (Uuid::new_v4(), Uuid::new_v4());
    worker.runner.start(task(entity, uid)).await.unwrap();
    worker
        .runner
        .start(task(rerun_entity, rerun_uid))
        .await
        .unwrap();

    let started = server.set_live(uid, "歌回");
    let events = observer.wait_for(entity, 1, WAIT).await;
    let (key, live) = &events[0];
    assert_eq!(key, "bilibili");
    assert_eq!(live.kind, "bilibili.live");
    let stream_id = format!("5050:{started}");
    assert_eq!(live.fields["stream_id"], stream_id.as_str());
    assert_eq!(live.id, Event::make_id("bilibili.live", &stream_id, None));
    assert_eq!(live.fields["title"], "歌回");
    assert_eq!(live.fields["category"], "虚拟Singer");
    assert_eq!(live.fields["link"], "https://live.bilibili.com/5050");
    assert_eq!(
        live.fields["thumbnail"],
        "https://i0.hdslb.com/bfs/live/new_room_cover/5050.jpg"
    );
    assert_eq!(live.fields["room_id"], "5050");
    let start = chrono::DateTime::from_timestamp(started, 0).unwrap();
    assert_eq!(
        live.fields["actual_start"],
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    eventually("rooms live gauge", WAIT, || {
        worker.runner.metrics().rooms_live() == 1
    })
    .await;

    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.set_off(uid);
    let events = observer.wait_for(entity, 2, WAIT).await;
    let (key, ended) = &events[1];
    assert_eq!(key, "bilibili");
    assert_eq!(ended.kind, "bilibili.ended");
    assert_eq!(ended.fields["stream_id"], stream_id.as_str());
    assert_eq!(ended.fields["actual_start"], live.fields["actual_start"]);
    let end = chrono::DateTime::parse_from_rfc3339(ended.fields["actual_end"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(ended.fields["duration_seconds"], end - started);
    assert!(end - started >= 1, "{}", ended.fields["duration_seconds"]);
    assert_eq!(ended.fields["link"], "https://live.bilibili.com/5050");
    assert_eq!(ended.fields["category"], "虚拟Singer");

    // A rerun loop after the stream, and a room that only ever reruns: nothing.
    server.set_rerun(uid);
    let quiet = Duration::from_millis(2500);
    assert_eq!(
        kinds(&observer.settle(entity, quiet).await),
        ["bilibili.live", "bilibili.ended"]
    );
    assert!(
        observer.of(rerun_entity).is_empty(),
        "a rerun loop was announced"
    );
    assert_eq!(worker.runner.metrics().rooms_live(), 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_room_is_notified_once() {
    let server = BilibiliServer::start().await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let uid = new_uid();
    server.add_room(uid, 7070);
    let worker = Worker::start(
        BilibiliConfig {
            live_cooldown_seconds: 4,
            ..config(&server)
        },
        storage,
        rabbit().await,
    );
    let entity = Uuid::new_v4();
    worker.runner.start(task(entity, uid)).await.unwrap();
    let first = server.set_live(uid, "配信");
    observer.wait_for(entity, 1, WAIT).await;
    // Drops for a couple of polls, comes back with a new live_time within the cooldown.
    server.set_off(uid);
    let polls = server.status_calls().len();
    eventually("a poll saw the room off", WAIT, || {
        server.status_calls().len() >= polls + 2
    })
    .await;
    server.set_live_at(uid, "配信（再）", first + 2);
    let polls = server.status_calls().len();
    eventually("a poll saw it back", WAIT, || {
        server.status_calls().len() >= polls + 2
    })
    .await;
    // And an unseen flap: a new live_time with no poll seeing the room off.
    server.set_live_at(uid, "配信（再）", first + 3);
    let events = observer.settle(entity, Duration::from_millis(2500)).await;
    assert_eq!(kinds(&events), ["bilibili.live"], "{events:#?}");
    server.set_off(uid);
    let events = observer.wait_for(entity, 2, WAIT).await;
    assert_eq!(kinds(&events), ["bilibili.live", "bilibili.ended"]);
    assert_eq!(events[1].1.fields["stream_id"], format!("7070:{first}"));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_of_many_rooms_is_asked_in_batches() {
    let server = BilibiliServer::start().await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let worker = Worker::start(
        BilibiliConfig {
            // Dynamics out of the way: their first poll is a random share of a year away,
            // so 160 uids put one inside the few seconds measured once in ~30,000 runs.
            dynamic_poll_interval_seconds: 365 * 24 * 3600,
            ..config(&server)
        },
        storage,
        rabbit().await,
    );
    let uids: Vec<u64> = (0..160).map(|_| new_uid()).collect();
    for (i, uid) in uids.iter().enumerate() {
        server.add_room(*uid, 100_000 + i as u64);
        worker
            .runner
            .start(task(Uuid::new_v4(), *uid))
            .await
            .unwrap();
    }
    // Let a cycle that began while tasks were being added pass, then count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.clear_requests();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let calls = server.status_calls();
    let sizes: Vec<usize> = calls.iter().map(|c| c.uids).collect();
    assert!(sizes.len() >= 4, "{sizes:?}");
    // ceil(160 / 100) = 2 calls a cycle: 100 uids, then 60, cycle after cycle.
    let mut full = sizes.clone();
    full.retain(|&n| n == 100);
    let mut rest = sizes.clone();
    rest.retain(|&n| n == 60);
    assert_eq!(full.len() + rest.len(), sizes.len(), "{sizes:?}");
    assert!(full.len().abs_diff(rest.len()) <= 1, "{sizes:?}");
    assert!(server.requests_to(Endpoint::Dynamic).is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_risk_answer_backs_off_that_endpoint_only_and_recovers() {
    let server = BilibiliServer::start().await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let uid = new_uid();
    server.add_room(uid, 8080);
    let worker = Worker::start(
        BilibiliConfig {
            min_request_gap_ms: 100,
            ..config(&server)
        },
        storage,
        rabbit().await,
    );
    let entity = Uuid::new_v4();
    worker.runner.start(task(entity, uid)).await.unwrap();
    eventually("dynamics first poll", WAIT, || {
        !server.feed_calls(uid).is_empty()
    })
    .await;
    eventually("a status poll", WAIT, || !server.status_calls().is_empty()).await;

    // One refusal: whatever reaches the endpoint during the backoff would be answered,
    // and show up below.
    server.set_risk(Endpoint::Live, Risk::Next(1));
    eventually("a -412", WAIT, || {
        server.status_calls().iter().any(|c| c.code == -412)
    })
    .await;
    let metrics = worker.runner.metrics();
    eventually("the gauge", WAIT, || metrics.risk_control(LIVE)).await;
    assert!(!metrics.risk_control(DYNAMIC));
    assert_eq!(metrics.risk_answers(LIVE, -412), 1);
    let refused_at = Instant::now();
    // The dynamics endpoint carries on meanwhile.
    let id = server.post(
        uid,
        Post::Text {
            text: "まだ大丈夫".into(),
        },
    );
    let events = observer.wait_for(entity, 1, WAIT).await;
    assert_eq!(events[0].1.fields["dynamic_id"], id.to_string());
    server.set_risk(Endpoint::Live, Risk::Off);
    eventually("recovery", WAIT, || {
        server.status_calls().last().is_some_and(|c| c.code == 0)
    })
    .await;
    assert!(refused_at.elapsed() < WAIT);
    eventually("the gauge back to 0", WAIT, || !metrics.risk_control(LIVE)).await;

    // Exactly one refused call, and the next one only after the backoff (2 s ± 20 %).
    let live = server.status_calls();
    let refused: Vec<usize> = (0..live.len()).filter(|&i| live[i].code == -412).collect();
    assert_eq!(
        refused.len(),
        1,
        "requests went out during the backoff: {live:#?}"
    );
    let i = refused[0];
    let gap = live[i + 1].at - live[i].at;
    assert!(gap >= Duration::from_millis(1500), "{gap:?}");
    let feeds = server.requests_to(Endpoint::Dynamic);
    assert!(
        feeds
            .iter()
            .any(|r| r.at > live[i].at && r.at < live[i + 1].at),
        "dynamics stopped during the live backoff"
    );
    // Requests to one endpoint never closer than the least gap (100 ms, arrival jitter aside).
    for requests in [live, feeds] {
        for pair in requests.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(gap >= Duration::from_millis(80), "{gap:?}");
        }
    }
    assert_eq!(metrics.polls_with(LIVE, "risk_control"), 1);
    worker.shutdown().await;
}

/// A new runner on the same storage (a restart, or another worker taking the task over)
/// neither announces a stream again nor forgets it.
async fn a_restart_does_not_announce_a_stream_again(storage: Arc<dyn Storage>) {
    let server = BilibiliServer::start().await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let uid = new_uid();
    server.add_room(uid, 9090);
    let entity = Uuid::new_v4();
    let task = task(entity, uid);
    let a = Worker::start(config(&server), storage.clone(), rabbit().await);
    a.runner.start(task.clone()).await.unwrap();
    server.set_live(uid, "長時間配信");
    observer.wait_for(entity, 1, WAIT).await;
    a.shutdown().await;

    // Another runner on the same storage (a restart, or another worker taking over).
    let b = Worker::start(config(&server), storage.clone(), rabbit().await);
    b.runner.start(task.clone()).await.unwrap();
    let polls = server.status_calls().len();
    eventually("b polled", WAIT, || {
        server.status_calls().len() >= polls + 2
    })
    .await;
    let events = observer.settle(entity, Duration::from_millis(500)).await;
    assert_eq!(kinds(&events), ["bilibili.live"]);
    assert_eq!(b.runner.metrics().published_of("bilibili.live"), 0);
    assert_eq!(b.runner.metrics().rooms_live(), 1);
    // It still knows the stream: its end is published, with the first runner's id.
    server.set_off(uid);
    let events = observer.wait_for(entity, 2, WAIT).await;
    assert_eq!(events[1].1.kind, "bilibili.ended");
    assert_eq!(
        events[1].1.fields["stream_id"],
        events[0].1.fields["stream_id"]
    );
    b.shutdown().await;
}

stargazer_testkit::storage_matrix!(a_restart_does_not_announce_a_stream_again);
