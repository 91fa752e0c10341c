//! Reconciliation after a restart, against the Twitch test server: 1,000 broadcasters held,
//! Twitch already listing some of their subscriptions (half enabled, a fifth failed, the
//! rest missing, plus subscriptions of broadcasters no task watches any more), beside the
//! baseline of creating all 3,000 subscriptions from nothing. Prints the Helix calls made
//! (list pages, creates, deletes) and the time until every held broadcaster's three
//! subscriptions are enabled.
//!
//! `cargo bench -p stargazer-worker-twitch --bench reconcile`

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::model::{Entity, Task, TaskParams};
use stargazer_core::storage::{self, Storage};
use stargazer_core::CancellationToken;
use stargazer_testkit::servers::twitch::TwitchServer;
use stargazer_worker_twitch::{TwitchConfig, TwitchRunner, CALLBACK_PATH};
use uuid::Uuid;

const BROADCASTERS: usize = 1000;
const ENABLED: usize = 500;
const FAILED: usize = 200;
const ORPHANS: usize = 50;
const SECRET: &str = "bench-eventsub-secret";
const TYPES: [&str; 3] = ["stream.online", "stream.offline", "channel.update"];

struct Outcome {
    pages: usize,
    creates: usize,
    deletes: usize,
    seconds: f64,
}

async fn run(seeded: bool) -> Outcome {
    let twitch = TwitchServer::start("bench-client", "bench-secret")
        .await
        .unwrap();
    // Helix's default is 800 points a minute; the bench measures calls, not the bucket.
    twitch.set_bucket(1_000_000, 60);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}{CALLBACK_PATH}", listener.local_addr().unwrap());
    let ids: Vec<String> = (0..BROADCASTERS)
        .map(|i| twitch.add_user(&format!("streamer{i}")))
        .collect();
    if seeded {
        for (i, id) in ids.iter().enumerate() {
            let status = if i < ENABLED {
                "enabled"
            } else if i < ENABLED + FAILED {
                if i % 2 == 0 {
                    "webhook_callback_verification_failed"
                } else {
                    "notification_failures_exceeded"
                }
            } else {
                continue;
            };
            for kind in TYPES {
                twitch.seed_subscription(kind, id, &callback, SECRET, status);
            }
        }
        for i in 0..ORPHANS {
            let gone = twitch.add_user(&format!("gone{i}"));
            for kind in TYPES {
                twitch.seed_subscription(kind, &gone, &callback, SECRET, "enabled");
            }
        }
    }
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let entity = Uuid::new_v4();
    let tasks: Vec<Task> = ids
        .iter()
        .map(|id| Task {
            id: Uuid::new_v4(),
            entity,
            params: TaskParams::Twitch {
                broadcaster_id: id.clone(),
            },
        })
        .collect();
    storage
        .insert_entity(&Entity {
            id: entity,
            names: [("en".to_owned(), "Bench".to_owned())].into(),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: tasks.clone(),
        })
        .await
        .unwrap();
    let config = TwitchConfig {
        client_id: "bench-client".into(),
        client_secret: "bench-secret".into(),
        eventsub_secret: SECRET.into(),
        callback_url: callback.clone(),
        helix_base: twitch.helix_base.clone(),
        id_base: twitch.id_base.clone(),
        reconcile_delay_ms: 100,
        ..TwitchConfig::default()
    };
    let shutdown = CancellationToken::new();
    let storage: Arc<dyn Storage> = storage;
    let runner = TwitchRunner::new(
        config,
        storage.clone(),
        storage,
        None,
        Arc::new(MemoryBus::new()),
        &Registry::new(),
        shutdown.clone(),
    )
    .unwrap();
    let serving = runner.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await });
    let held: HashSet<&String> = ids.iter().collect();
    let started = Instant::now();
    for task in tasks {
        runner.start(task).await.unwrap();
    }
    loop {
        let subs = twitch.subscriptions();
        let enabled = subs
            .iter()
            .filter(|s| held.contains(&s.broadcaster) && s.status == "enabled")
            .count();
        let orphans = subs
            .iter()
            .filter(|s| !held.contains(&s.broadcaster))
            .count();
        if enabled == 3 * BROADCASTERS && orphans == 0 && subs.len() == 3 * BROADCASTERS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "did not converge: {enabled} enabled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let count = |method| {
        twitch
            .requests_to(method, "/helix/eventsub/subscriptions")
            .len()
    };
    let outcome = Outcome {
        pages: count("GET"),
        creates: count("POST"),
        deletes: count("DELETE"),
        seconds,
    };
    shutdown.cancel();
    runner.join().await;
    let _ = server.await;
    outcome
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let baseline = run(false).await;
        let restart = run(true).await;
        println!("twitch reconcile bench: {BROADCASTERS} broadcasters held (3 subscriptions each)");
        println!(
            "  from nothing          : {:>4} list pages, {:>4} creates, {:>4} deletes, {:>5} Helix calls, {:.2} s",
            baseline.pages,
            baseline.creates,
            baseline.deletes,
            baseline.pages + baseline.creates + baseline.deletes,
            baseline.seconds
        );
        println!(
            "  restart (listed: {ENABLED} enabled, {FAILED} failed, {} missing, {ORPHANS} orphans): {:>4} list pages, {:>4} creates, {:>4} deletes, {:>5} Helix calls, {:.2} s",
            BROADCASTERS - ENABLED - FAILED,
            restart.pages,
            restart.creates,
            restart.deletes,
            restart.pages + restart.creates + restart.deletes,
            restart.seconds
        );
    });
}
