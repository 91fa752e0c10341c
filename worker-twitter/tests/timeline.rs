//! End-to-end behaviour of the X worker against a local X API v2 server, publishing to
//! the real RabbitMQ exchange.

mod support;

use prometheus::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use stargazer_core::bus::{self, Bus};
use stargazer_core::model::{Entity, Event, Task, TaskParams};
use stargazer_core::storage::{self, Storage};
use stargazer_core::CancellationToken;
use stargazer_worker_twitter::runner::CURSOR_NAMESPACE;
use stargazer_worker_twitter::{TwitterConfig, TwitterRunner};
use support::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(2500);

struct Worker {
    runner: TwitterRunner,
    shutdown: CancellationToken,
}

impl Worker {
    fn start(config: TwitterConfig, storage: Arc<dyn Storage>, bus: Arc<dyn Bus>) -> Self {
        let shutdown = CancellationToken::new();
        let (registry, stop) = (Registry::new(), shutdown.clone());
        let runner =
            TwitterRunner::new(config, storage.clone(), storage, bus, &registry, stop).unwrap();
        Self { runner, shutdown }
    }

    async fn shutdown(self) {
        self.shutdown.cancel();
        self.runner.join().await;
    }
}

fn config(x: &XServer) -> TwitterConfig {
    TwitterConfig {
        bearer_token: TOKEN.into(),
        api_base: x.base.clone(),
        poll_interval_seconds: 1,
        max_results: 5,
        auth_backoff_initial_seconds: 1,
        auth_backoff_max_seconds: 2,
        ..TwitterConfig::default()
    }
}

fn task(entity: Uuid, user: &str) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Twitter {
            user_id: user.to_owned(),
        },
    }
}

async fn cursor(storage: &dyn Storage, task: Uuid) -> Option<String> {
    storage
        .kv_get(CURSOR_NAMESPACE, &task.to_string())
        .await
        .unwrap()
        .and_then(|v| v["since_id"].as_str().map(str::to_owned))
}

async fn wait_cursor(storage: &dyn Storage, task: Uuid, expected: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if cursor(storage, task).await == Some(expected.to_string()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor never reached {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_unique(events: &[(String, Event)]) {
    let mut ids: Vec<Uuid> = events.iter().map(|(_, e)| e.id).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(n, ids.len(), "duplicates: {events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_skips_history_then_publishes_new_tweets_oldest_first() {
    let x = XServer::start(TOKEN).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["twitter", "twitter.#"]).await;
    let user = new_user_id();
    x.add_user(&user, "vtuber");
    for i in 0..3 {
        x.post(&user, &format!("history {i}"), "en");
    }
    let history_newest = x.post(&user, "history newest", "en");
    let worker = Worker::start(
        config(&x),
        storage.clone(),
        bus::connect(AMQP_URL).await.unwrap(),
    );
    let entity = Uuid::new_v4();
    let task = task(entity, &user);
    worker.runner.start(task.clone()).await.unwrap();
    wait_cursor(storage.as_ref(), task.id, history_newest).await;
    assert!(
        observer
            .settle(entity, Duration::from_millis(1500))
            .await
            .is_empty(),
        "history was published"
    );

    // Seven new tweets: more than one page of five.
    let mut new_ids = Vec::new();
    for i in 0..5 {
        new_ids.push(x.post(&user, &format!("new {i}"), "en"));
    }
    let original = 1_700_000_000_000_000_000u64;
    new_ids.push(x.post_with(
        &user,
        "RT @other: the original text, trunc…",
        "en",
        Some(Retweeted {
            id: original,
            text: "the original text, in full".into(),
            author_id: "42".into(),
        }),
        vec![],
    ));
    new_ids.push(x.post_with(
        &user,
        "with pictures",
        "en",
        None,
        vec![
            Media {
                key: "3_1".into(),
                kind: "photo".into(),
                url: "https://pbs.twimg.com/media/one.jpg".into(),
            },
            Media {
                key: "7_2".into(),
                kind: "video".into(),
                url: "https://pbs.twimg.com/ext_tw_video_thumb/two.jpg".into(),
            },
        ],
    ));
    let events = observer.wait_for(entity, 7, WAIT).await;
    let published: Vec<u64> = events
        .iter()
        .map(|(_, e)| e.fields["tweet_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(published, new_ids, "published oldest first, each once");
    for (key, event) in &events {
        assert_eq!(key, "twitter");
        assert!(event.control.is_empty());
        let id = event.fields["tweet_id"].as_str().unwrap();
        assert_eq!(
            event.fields["link"],
            format!("https://x.com/i/web/status/{id}")
        );
        assert_eq!(event.fields["author_id"], user.as_str());
        assert_eq!(event.fields["author_username"], "vtuber");
    }
    let (_, retweet) = &events[5];
    assert_eq!(retweet.kind, "twitter.retweet");
    assert_eq!(
        retweet.id,
        Event::make_id("twitter.retweet", &new_ids[5].to_string(), None)
    );
    assert_eq!(retweet.fields["text"], "the original text, in full");
    assert_eq!(retweet.fields["retweeted_id"], original.to_string());
    assert_eq!(retweet.fields["retweeted_author_username"], "user42");
    let (_, pictures) = &events[6];
    assert_eq!(pictures.kind, "twitter.tweet");
    assert_eq!(
        pictures.fields["media"],
        json!([
            "https://pbs.twimg.com/media/one.jpg",
            "https://pbs.twimg.com/ext_tw_video_thumb/two.jpg"
        ])
    );
    wait_cursor(storage.as_ref(), task.id, *new_ids.last().unwrap()).await;

    // The requests followed the protocol: since_id from the cursor, then the next page.
    let requests = x.requests_for(&user);
    assert!(requests.iter().all(|r| r.query.contains_key("max_results")));
    assert!(
        !requests[0].query.contains_key("since_id"),
        "first run asks without since_id"
    );
    assert!(
        requests.iter().any(
            |r| r.query.get("since_id") == Some(&history_newest.to_string())
                && r.query.contains_key("pagination_token")
        ),
        "second page requested with since_id"
    );
    let fields = &requests[0].query["tweet.fields"];
    for field in ["created_at", "referenced_tweets", "attachments", "entities"] {
        assert!(fields.contains(field), "{fields}");
    }
    assert!(requests[0].query["expansions"].contains("attachments.media_keys"));
    assert!(requests[0].query["expansions"].contains("referenced_tweets.id"));
    assert!(requests[0].query["media.fields"].contains("preview_image_url"));

    assert_eq!(observer.settle(entity, QUIET).await.len(), 7);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tweets_of_an_entity_with_translation_are_tagged_translate() {
    let x = XServer::start(TOKEN).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["twitter", "twitter.#"]).await;
    let user = new_user_id();
    x.add_user(&user, "jp_vtuber");
    let entity = Uuid::new_v4();
    let task = task(entity, &user);
    storage
        .insert_entity(&Entity {
            id: entity,
            names: BTreeMap::from([("ja".to_owned(), "テスト".to_owned())]),
            default_language: "ja".into(),
            group: None,
            translate_to: vec!["en".into(), "zh".into()],
            tasks: vec![task.clone()],
        })
        .await
        .unwrap();
    let worker = Worker::start(
        config(&x),
        storage.clone(),
        bus::connect(AMQP_URL).await.unwrap(),
    );
    worker.runner.start(task.clone()).await.unwrap();
    // An account without any tweet yet: the first tweet after the first run is news.
    eventually("first run", WAIT, || !x.requests_for(&user).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = x.post(&user, "こんにちは", "ja");
    let events = observer.wait_for(entity, 1, WAIT).await;
    let (key, event) = &events[0];
    assert_eq!(key, "twitter.translate");
    assert_eq!(event.kind, "twitter.tweet");
    assert_eq!(event.fields["tweet_id"], id.to_string());
    assert_eq!(event.control["x-translate-fields"], json!(["/fields/text"]));
    assert_eq!(event.control["x-translate-to"], json!(["en", "zh"]));
    worker.shutdown().await;
}

async fn restart_and_reassignment(storage: Arc<dyn Storage>) {
    let x = XServer::start(TOKEN).await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["twitter", "twitter.#"]).await;
    let bus = bus::connect(AMQP_URL).await.unwrap();
    let user = new_user_id();
    x.add_user(&user, "vt");
    let first = x.post(&user, "before the task", "en");
    let entity = Uuid::new_v4();
    let task = task(entity, &user);

    let a = Worker::start(config(&x), storage.clone(), bus.clone());
    a.runner.start(task.clone()).await.unwrap();
    wait_cursor(storage.as_ref(), task.id, first).await;
    let t1 = x.post(&user, "one", "en");
    observer.wait_for(entity, 1, WAIT).await;
    wait_cursor(storage.as_ref(), task.id, t1).await;
    a.shutdown().await;

    // Tweets while the worker is down come once after the restart.
    let t2 = x.post(&user, "two", "en");
    let t3 = x.post(&user, "three", "en");
    let a = Worker::start(config(&x), storage.clone(), bus.clone());
    a.runner.start(task.clone()).await.unwrap();
    observer.wait_for(entity, 3, WAIT).await;
    wait_cursor(storage.as_ref(), task.id, t3).await;

    // A crash between publishing and saving the cursor: the cursor is behind, the same
    // tweets come back from the API, and nothing is published twice.
    a.shutdown().await;
    storage
        .kv_put(
            CURSOR_NAMESPACE,
            &task.id.to_string(),
            &json!({"since_id": first.to_string()}),
        )
        .await
        .unwrap();
    let a = Worker::start(config(&x), storage.clone(), bus.clone());
    a.runner.start(task.clone()).await.unwrap();
    wait_cursor(storage.as_ref(), task.id, t3).await;

    // Reassignment: stop on A, start on B, same storage.
    a.runner.stop(task.id).await.unwrap();
    assert!(a.runner.tasks().is_empty());
    let b = Worker::start(config(&x), storage.clone(), bus.clone());
    b.runner.start(task.clone()).await.unwrap();
    let t4 = x.post(&user, "four", "en");
    observer.wait_for(entity, 4, WAIT).await;
    wait_cursor(storage.as_ref(), task.id, t4).await;
    let events = observer.settle(entity, QUIET).await;
    let ids: Vec<String> = events
        .iter()
        .map(|(_, e)| e.fields["tweet_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        vec![
            t1.to_string(),
            t2.to_string(),
            t3.to_string(),
            t4.to_string()
        ]
    );
    assert_unique(&events);
    a.shutdown().await;
    b.shutdown().await;
}

stargazer_testkit::storage_matrix!(restart_and_reassignment);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_and_429_hold_requests_until_the_reset() {
    let x = XServer::start(TOKEN).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let user = new_user_id();
    x.add_user(&user, "vt");
    x.post(&user, "history", "en");
    // Two requests left in this window, which resets in 3 s.
    x.set_rate_limit(2);
    let reset = Utc::now().timestamp() + 3;
    x.set_rate_window(2, reset);
    let worker = Worker::start(config(&x), storage, bus::connect(AMQP_URL).await.unwrap());
    worker
        .runner
        .start(task(Uuid::new_v4(), &user))
        .await
        .unwrap();
    eventually("budget spent", WAIT, || x.requests_for(&user).len() >= 2).await;
    // The server counts the request before the worker has read the answer's headers.
    eventually(
        "remaining 0 closes the gate",
        Duration::from_secs(2),
        || worker.runner.rate_limited_until().is_some(),
    )
    .await;
    x.set_rate_limit(1500);
    eventually("resumed after the reset", WAIT, || {
        x.requests_for(&user).len() >= 3
    })
    .await;
    let requests = x.requests_for(&user);
    assert!(
        requests[2].at.timestamp() >= reset,
        "a request went out before the reset: {:?}",
        requests[2].at
    );
    assert_eq!(x.violations(), 0);

    // A 429: nothing more until its reset, no busy loop.
    x.force_rate_limited(1, 3);
    eventually("429 served", WAIT, || {
        x.requests_for(&user).iter().any(|r| r.status == 429)
    })
    .await;
    let limited = x.requests_for(&user);
    let at = limited.iter().find(|r| r.status == 429).unwrap().at;
    let reset = x.rate_reset_at();
    eventually("resumed after the 429", WAIT, || {
        x.requests_for(&user).len() > limited.len()
    })
    .await;
    let after = x.requests_for(&user);
    let next = &after[limited.len()];
    assert!(
        next.at.timestamp() >= reset,
        "request at {} before reset {reset} (429 at {at})",
        next.at
    );
    assert_eq!(x.violations(), 0);
    worker.shutdown().await;
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// Current-thread runtime so the thread-local log subscriber sees the worker's tasks.
#[tokio::test]
async fn unauthorized_is_logged_once_and_backs_off() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let x = XServer::start(TOKEN).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let user = new_user_id();
    x.add_user(&user, "vt");
    let cfg = TwitterConfig {
        bearer_token: "wrong".into(),
        ..config(&x)
    };
    let worker = Worker::start(cfg, storage, bus::connect(AMQP_URL).await.unwrap());
    worker
        .runner
        .start(task(Uuid::new_v4(), &user))
        .await
        .unwrap();
    eventually("three refusals", WAIT, || x.requests_for(&user).len() >= 3).await;
    let requests = x.requests_for(&user);
    assert!(requests.iter().all(|r| r.status == 401));
    // Backoff of 1 s then 2 s between attempts: never a tight loop.
    for pair in requests.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= chrono::Duration::milliseconds(700),
            "{requests:?}"
        );
    }
    worker.shutdown().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("refused the bearer token").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("STARGAZER_TWITTER_BEARER_TOKEN"),
        "the message says what to fix"
    );
}
