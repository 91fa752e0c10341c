//! Dynamics against the Bilibili API double, publishing to the real RabbitMQ exchange:
//! no history on the first poll, new posts once each in order across pages, pinned posts,
//! videos, translation tagging, WBI keys and restarts.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stargazer_core::model::{Entity, Event};
use stargazer_core::storage::{self, Storage};
use stargazer_worker_bilibili::metrics::DYNAMIC;
use stargazer_worker_bilibili::runner::CURSOR_NAMESPACE;
use support::*;
use uuid::Uuid;

async fn cursor(storage: &dyn Storage, task: Uuid) -> Option<String> {
    storage
        .kv_get(CURSOR_NAMESPACE, &task.to_string())
        .await
        .unwrap()
        .and_then(|v| v["newest"].as_str().map(str::to_owned))
}

async fn wait_cursor(storage: &dyn Storage, task: Uuid, expected: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while cursor(storage, task).await != Some(expected.to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor never reached {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn video(n: u32) -> Post {
    Post::Video {
        bvid: format!("BV1test{n}"),
        title: format!("動画 {n}"),
        desc: format!("説明 {n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_poll_skips_history_then_new_posts_come_once_in_order_across_pages() {
    let server = BilibiliServer::start().await.unwrap();
    server.set_page_size(2);
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let uid = new_uid();
    let old_pinned = server.post(
        uid,
        Post::Text {
            text: "固定".into(),
        },
    );
    for i in 0..3 {
        server.post(
            uid,
            Post::Text {
                text: format!("history {i}"),
            },
        );
    }
    let history_newest = server.post(uid, video(0));
    server.pin(uid, old_pinned);
    let worker = Worker::start(config(&server), storage.clone(), rabbit().await);
    let entity = Uuid::new_v4();
    let task = task(entity, uid);
    worker.runner.start(task.clone()).await.unwrap();
    wait_cursor(storage.as_ref(), task.id, history_newest).await;
    assert!(
        observer
            .settle(entity, Duration::from_millis(1500))
            .await
            .is_empty(),
        "history was published"
    );

    // Five posts: three pages of two, with the pinned old post on top of the first.
    let pictures = vec![
        "https://i0.hdslb.com/bfs/new_dyn/a.jpg".to_owned(),
        "https://i0.hdslb.com/bfs/new_dyn/b.jpg".to_owned(),
    ];
    let ids = [
        server.post(uid, video(1)),
        server.post(
            uid,
            Post::Picture {
                text: "絵".into(),
                pictures: pictures.clone(),
            },
        ),
        server.post(
            uid,
            Post::Text {
                text: "こんにちは".into(),
            },
        ),
        server.post(
            uid,
            Post::Repost {
                text: "見て".into(),
                orig: history_newest,
            },
        ),
        server.post(
            uid,
            Post::Article {
                title: "not published".into(),
            },
        ),
    ];
    let events = observer.wait_for(entity, 4, WAIT).await;
    wait_cursor(storage.as_ref(), task.id, ids[4]).await;
    let events = [
        events,
        observer.settle(entity, Duration::from_millis(1500)).await,
    ]
    .concat();
    let events = &events[events.len() - 4..];
    assert_eq!(observer.of(entity).len(), 4, "published more than once");
    let published: Vec<String> = events
        .iter()
        .map(|(_, e)| e.fields["dynamic_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = ids[..4].iter().map(u64::to_string).collect();
    assert_eq!(
        published, expected,
        "oldest first, each once, the pinned post not again"
    );
    assert_eq!(
        kinds(events),
        [
            "bilibili.video",
            "bilibili.dynamic",
            "bilibili.dynamic",
            "bilibili.dynamic"
        ]
    );
    for (key, event) in events {
        assert_eq!(key, "bilibili");
        assert!(event.control.is_empty());
    }
    let video = &events[0].1;
    assert_eq!(
        video.id,
        Event::make_id("bilibili.video", &ids[0].to_string(), None)
    );
    assert_eq!(video.fields["bvid"], "BV1test1");
    assert_eq!(video.fields["title"], "動画 1");
    assert_eq!(video.fields["text"], "説明 1");
    assert_eq!(
        video.fields["link"],
        "https://www.bilibili.com/video/BV1test1"
    );
    assert_eq!(
        video.fields["thumbnail"],
        "http://i0.hdslb.com/bfs/archive/BV1test1.jpg"
    );
    assert_eq!(
        video.fields["media"],
        json!(["http://i0.hdslb.com/bfs/archive/BV1test1.jpg"])
    );
    let picture = &events[1].1;
    assert_eq!(picture.fields["text"], "絵");
    assert_eq!(picture.fields["media"], json!(pictures));
    assert_eq!(
        picture.fields["link"],
        format!("https://t.bilibili.com/{}", ids[1])
    );
    assert_eq!(events[2].1.fields["text"], "こんにちは");
    assert_eq!(
        events[3].1.fields["forwarded_id"],
        history_newest.to_string()
    );
    assert_eq!(events[3].1.fields["text"], "見て");

    // Every feed request was signed well enough for the server, and the poll paged on.
    let calls = server.feed_calls(uid);
    assert!(calls.iter().all(|c| c.code == 0), "{calls:#?}");
    assert!(calls.iter().any(|c| !c.offset.is_empty()), "never paged");
    assert_eq!(worker.runner.metrics().published_of("bilibili.video"), 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamics_are_tagged_for_translation_when_the_entity_wants_it() {
    let server = BilibiliServer::start().await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let uid = new_uid();
    let entity = Uuid::new_v4();
    let task = task(entity, uid);
    storage
        .insert_entity(&Entity {
            id: entity,
            names: BTreeMap::from([("zh".to_owned(), "测试".to_owned())]),
            default_language: "zh".into(),
            group: None,
            translate_to: vec!["en".into(), "ja".into()],
            tasks: vec![task.clone()],
        })
        .await
        .unwrap();
    let worker = Worker::start(config(&server), storage.clone(), rabbit().await);
    worker.runner.start(task.clone()).await.unwrap();
    // A user without any dynamic yet: the first one after the first poll is news.
    eventually("first poll", WAIT, || !server.feed_calls(uid).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.post(uid, video(2));
    server.post(
        uid,
        Post::Text {
            text: "晚上好".into(),
        },
    );
    let events = observer.wait_for(entity, 2, WAIT).await;
    let (key, video) = &events[0];
    assert_eq!(key, "bilibili.translate");
    assert_eq!(video.kind, "bilibili.video");
    assert_eq!(
        video.control["x-translate-fields"],
        json!(["/fields/text", "/fields/title"])
    );
    assert_eq!(video.control["x-translate-to"], json!(["en", "ja"]));
    let (key, text) = &events[1];
    assert_eq!(key, "bilibili.translate");
    assert_eq!(text.control["x-translate-fields"], json!(["/fields/text"]));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_signing_keys_are_fetched_again_without_a_backoff() {
    let server = BilibiliServer::start().await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let uid = new_uid();
    let worker = Worker::start(config(&server), storage.clone(), rabbit().await);
    let entity = Uuid::new_v4();
    worker.runner.start(task(entity, uid)).await.unwrap();
    eventually("first poll", WAIT, || !server.feed_calls(uid).is_empty()).await;
    let navs = || server.requests().iter().filter(|r| r.path == "nav").count();
    assert_eq!(navs(), 1, "keys are fetched once and kept");
    server.rotate_keys();
    let id = server.post(
        uid,
        Post::Text {
            text: "新しい鍵".into(),
        },
    );
    let events = observer.wait_for(entity, 1, WAIT).await;
    assert_eq!(events[0].1.fields["dynamic_id"], id.to_string());
    let codes: Vec<i64> = server.feed_calls(uid).iter().map(|c| c.code).collect();
    assert!(codes.contains(&-352), "{codes:?}");
    assert_eq!(navs(), 2);
    let metrics = worker.runner.metrics();
    assert!(
        !metrics.risk_control(DYNAMIC),
        "stale keys are no reason to back off"
    );
    assert_eq!(metrics.polls_with(DYNAMIC, "stale_keys"), 1);
    worker.shutdown().await;
}

/// A restart (a new runner on the same storage) publishes what came while it was down,
/// once, and nothing older.
async fn restart_publishes_no_old_dynamics(storage: Arc<dyn Storage>) {
    let server = BilibiliServer::start().await.unwrap();
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let uid = new_uid();
    let first = server.post(
        uid,
        Post::Text {
            text: "before".into(),
        },
    );
    let entity = Uuid::new_v4();
    let task = task(entity, uid);
    let a = Worker::start(config(&server), storage.clone(), rabbit().await);
    a.runner.start(task.clone()).await.unwrap();
    wait_cursor(storage.as_ref(), task.id, first).await;
    let one = server.post(uid, Post::Text { text: "one".into() });
    observer.wait_for(entity, 1, WAIT).await;
    wait_cursor(storage.as_ref(), task.id, one).await;
    a.shutdown().await;

    // Posts while the worker is down come once after the restart; older ones never.
    let two = server.post(uid, Post::Text { text: "two".into() });
    let three = server.post(uid, video(3));
    let b = Worker::start(config(&server), storage.clone(), rabbit().await);
    b.runner.start(task.clone()).await.unwrap();
    observer.wait_for(entity, 3, WAIT).await;
    wait_cursor(storage.as_ref(), task.id, three).await;
    let events = observer.settle(entity, Duration::from_millis(1500)).await;
    let ids: Vec<String> = events
        .iter()
        .map(|(_, e)| e.fields["dynamic_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [one, two, three].map(|id| id.to_string()));
    b.shutdown().await;
}

stargazer_testkit::storage_matrix!(restart_publishes_no_old_dynamics);
