//! End-to-end behaviour of the YouTube worker against a local WebSub hub and YouTube
//! server, publishing to the real RabbitMQ exchange.

mod support;

use prometheus::Registry;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, TimeZone, Utc};
use serde_json::json;
use stargazer_core::bus::{self, Bus};
use stargazer_core::model::{Event, Task, TaskParams};
use stargazer_core::storage::{self, Storage};
use stargazer_core::CancellationToken;
use stargazer_testkit::servers::hub::SignatureMethod;
use stargazer_worker_youtube::signature::{sign, Method};
use stargazer_worker_youtube::store::lease_namespace;
use stargazer_worker_youtube::{YoutubeConfig, YoutubeRunner};
use support::*;
use uuid::Uuid;

const KEY: &str = "test-key";
const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(700);

struct Worker {
    runner: YoutubeRunner,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    port: u16,
}

impl Worker {
    async fn start(
        config: YoutubeConfig,
        port: u16,
        storage: Arc<dyn Storage>,
        bus: Arc<dyn Bus>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = YoutubeConfig {
            public_url: format!("http://127.0.0.1:{port}"),
            ..config
        };
        let shutdown = CancellationToken::new();
        let (registry, stop) = (Registry::new(), shutdown.clone());
        let runner =
            YoutubeRunner::new(config, storage.clone(), storage, bus, &registry, stop).unwrap();
        let serving = runner.clone();
        let server = tokio::spawn(async move { serving.serve(listener).await.unwrap() });
        Self {
            runner,
            shutdown,
            server,
            port,
        }
    }

    fn callback_base(&self) -> String {
        format!("http://127.0.0.1:{}/websub", self.port)
    }

    async fn shutdown(self) {
        self.shutdown.cancel();
        self.runner.join().await;
        self.server.await.unwrap();
    }
}

fn config(hub: &Hub, yt: &Youtube) -> YoutubeConfig {
    YoutubeConfig {
        api_key: KEY.into(),
        data_api_base: yt.base.clone(),
        hub_url: hub.url.clone(),
        feed_base: yt.base.clone(),
        batch_window_ms: 100,
        poll_interval_seconds: 0,
        hub_retry_initial_ms: 50,
        hub_retry_max_seconds: 1,
        verify_timeout_seconds: 5,
        // One reminder per stream (the default lead) keeps the event counts below readable.
        reminder_leads_seconds: Vec::new(),
        ..YoutubeConfig::default()
    }
}

fn task(entity: Uuid, channel: &str) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Youtube {
            channel_id: channel.to_owned(),
        },
    }
}

fn video_id() -> String {
    unique()[..11].to_owned()
}

fn updated(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, n).unwrap() + ChronoDuration::nanoseconds(123_456_789)
}

/// The notification the hub pushes for video `id` of `channel` titled `title`, updated at
/// `updated` (the title need not match what the Data API says).
fn push_xml(id: &str, channel: &str, title: &str, updated: DateTime<Utc>) -> String {
    notification_xml(&Video::upload(id, channel, title, updated), updated)
}

async fn amqp() -> Arc<dyn Bus> {
    bus::connect(AMQP_URL).await.unwrap()
}

fn kinds(events: &[(String, Event)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = events
        .iter()
        .map(|(key, e)| (e.kind.clone(), key.clone()))
        .collect();
    out.sort();
    out
}

fn assert_unique_ids(events: &[(String, Event)]) {
    let mut ids: Vec<(Uuid, String)> = events.iter().map(|(k, e)| (e.id, k.clone())).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "duplicate events: {events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_verifies_and_turns_signed_notifications_into_events() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube", "youtube.#"]).await;
    let worker = Worker::start(config(&hub, &yt), 0, storage.clone(), amqp().await).await;

    let channel = new_channel_id();
    yt.add_channel(&channel);
    let entity = Uuid::new_v4();
    let task = task(entity, &channel);
    let topic = topic(&channel);
    worker.runner.start(task.clone()).await.unwrap();
    eventually("subscription verified", WAIT, || {
        hub.subscriptions(&topic).len() == 1 && worker.runner.metrics().active_subscriptions() == 1
    })
    .await;
    let sub = hub.subscriptions(&topic).remove(0);
    assert!(sub.callback.starts_with(&worker.callback_base()));
    assert_eq!(sub.lease_seconds, 432_000);
    assert!(sub.secret.len() >= 32, "secret should be long and random");

    // Verification requests the worker did not ask for are refused.
    let http = reqwest::Client::new();
    for (mode, topic_asked) in [
        ("subscribe", support::topic(&new_channel_id())),
        ("unsubscribe", topic.clone()),
        ("subscribe", format!("{topic}&x=1")),
    ] {
        let status = http
            .get(&sub.callback)
            .query(&[
                ("hub.mode", mode),
                ("hub.topic", topic_asked.as_str()),
                ("hub.challenge", "c"),
                ("hub.lease_seconds", "60"),
            ])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{mode} {topic_asked}");
    }
    let stranger = format!("{}/{}", worker.callback_base(), Uuid::new_v4());
    let status = http
        .get(&stranger)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", topic.as_str()),
            ("hub.challenge", "c"),
        ])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // A plain upload.
    let now = Utc::now();
    let v1 = video_id();
    yt.put_video(
        Video::upload(
            &v1,
            &channel,
            "First upload",
            now - ChronoDuration::minutes(10),
        ),
        false,
    );
    assert_eq!(
        hub.publish_now(&topic, &push_xml(&v1, &channel, "First upload", updated(1)))
            .await,
        vec![Some(202)]
    );
    let events = observer.wait_for(entity, 1, WAIT).await;
    let (key, event) = &events[0];
    assert_eq!(key, "youtube");
    assert_eq!(event.kind, "youtube.video");
    assert_eq!(event.id, Event::make_id("youtube.video", &v1, None));
    assert_eq!(event.fields["title"], "First upload");
    assert_eq!(
        event.fields["link"],
        format!("https://www.youtube.com/watch?v={v1}")
    );
    assert_eq!(
        event.fields["thumbnail"],
        format!("https://i.ytimg.com/vi/{v1}/hqdefault.jpg")
    );
    assert!(event.control.is_empty());

    // Forged and unsigned notifications are ignored, still answered 2xx.
    let v2 = video_id();
    let v3 = video_id();
    yt.put_video(Video::upload(&v2, &channel, "forged", now), false);
    yt.put_video(Video::upload(&v3, &channel, "unsigned", now), false);
    let forged = push_xml(&v2, &channel, "forged", updated(2));
    assert_eq!(
        hub.post(
            &sub.callback,
            &forged,
            Some(sign(Method::Sha1, b"not the secret", forged.as_bytes()))
        )
        .await,
        202
    );
    let unsigned = push_xml(&v3, &channel, "unsigned", updated(3));
    assert_eq!(hub.post(&sub.callback, &unsigned, None).await, 202);
    // A signature over other bytes is as forged as a wrong key.
    let tampered = push_xml(&v2, &channel, "forged!", updated(2));
    assert_eq!(
        hub.post(
            &sub.callback,
            &tampered,
            Some(sign(Method::Sha1, sub.secret.as_bytes(), forged.as_bytes()))
        )
        .await,
        202
    );
    assert_eq!(observer.settle(entity, QUIET).await.len(), 1);
    assert_eq!(worker.runner.metrics().notifications_with("forged"), 2);
    assert_eq!(worker.runner.metrics().notifications_with("unsigned"), 1);

    // sha256 signatures are accepted too.
    let v6 = video_id();
    yt.put_video(Video::upload(&v6, &channel, "sha256", now), false);
    let body = push_xml(&v6, &channel, "sha256", updated(6));
    assert_eq!(
        hub.post(
            &sub.callback,
            &body,
            Some(sign(Method::Sha256, sub.secret.as_bytes(), body.as_bytes()))
        )
        .await,
        202
    );
    observer.wait_for(entity, 2, WAIT).await;

    // A scheduled stream: scheduled (ready), reminder (delay), live (live_check.delay).
    let start = (now + ChronoDuration::hours(2))
        .duration_trunc(ChronoDuration::seconds(1))
        .unwrap();
    let v4 = video_id();
    yt.put_video(Video::upcoming(&v4, &channel, "Stream soon", start), false);
    hub.publish_now(&topic, &push_xml(&v4, &channel, "Stream soon", updated(4)))
        .await;
    let events = observer.wait_for(entity, 5, WAIT).await;
    let scheduled: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.fields["video_id"] == v4.as_str())
        .collect();
    assert_eq!(
        kinds(
            &scheduled
                .iter()
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect::<Vec<_>>()
        ),
        vec![
            ("youtube.live".into(), "youtube.live_check.delay".into()),
            ("youtube.reminder".into(), "youtube.delay".into()),
            ("youtube.scheduled".into(), "youtube".into()),
        ]
    );
    let schedule = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (key, e) in &scheduled {
        match e.kind.as_str() {
            "youtube.scheduled" => {
                assert_eq!(
                    e.id,
                    Event::make_id("youtube.scheduled", &v4, Some(&schedule))
                );
                assert!(e.control.is_empty());
                assert_eq!(e.time, start);
            }
            "youtube.reminder" => {
                assert_eq!(key, "youtube.delay");
                assert_eq!(
                    e.control["x-delay-at"],
                    json!((start - ChronoDuration::minutes(30)).timestamp_millis())
                );
                assert_eq!(
                    e.control["x-delay-id"],
                    json!(format!("reminder:{v4}:1800"))
                );
            }
            "youtube.live" => {
                assert_eq!(e.id, Event::make_id("youtube.live", &v4, Some(&schedule)));
                assert_eq!(e.control["x-delay-at"], json!(start.timestamp_millis()));
                assert_eq!(e.control["x-delay-id"], json!(format!("live:{v4}")));
                assert_eq!(e.control["x-live-check-video"], json!(v4));
            }
            other => panic!("unexpected {other}"),
        }
    }

    // Already live: youtube.live, ready.
    let v5 = video_id();
    yt.put_video(
        Video::live(&v5, &channel, "Live now", now - ChronoDuration::minutes(1)),
        false,
    );
    hub.publish_now(&topic, &push_xml(&v5, &channel, "Live now", updated(5)))
        .await;
    let events = observer.wait_for(entity, 6, WAIT).await;
    let live: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.fields["video_id"] == v5.as_str())
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].0, "youtube");
    assert_eq!(live[0].1.kind, "youtube.live");

    // A title edit (new `updated`) is classified again but publishes nothing; the very same
    // push again does not even cost a Data API call.
    yt.put_video(
        Video::upload(
            &v1,
            &channel,
            "First upload (edited)",
            now - ChronoDuration::minutes(10),
        ),
        false,
    );
    hub.publish_now(
        &topic,
        &push_xml(&v1, &channel, "First upload (edited)", updated(11)),
    )
    .await;
    assert_eq!(observer.settle(entity, QUIET).await.len(), 6);
    let calls = yt.list_calls();
    hub.publish_now(
        &topic,
        &push_xml(&v1, &channel, "First upload (edited)", updated(11)),
    )
    .await;
    assert_eq!(observer.settle(entity, QUIET).await.len(), 6);
    assert_eq!(
        yt.list_calls(),
        calls,
        "an identical re-push must not cost quota"
    );

    // Rescheduled: a rescheduled event, delayed messages under the same delay ids.
    let later = start + ChronoDuration::hours(1);
    yt.put_video(Video::upcoming(&v4, &channel, "Stream soon", later), false);
    hub.publish_now(&topic, &push_xml(&v4, &channel, "Stream soon", updated(14)))
        .await;
    let events = observer.wait_for(entity, 9, WAIT).await;
    let resched: Vec<_> = events[6..].to_vec();
    let later_s = later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (_, e) in &resched {
        match e.kind.as_str() {
            "youtube.rescheduled" => {
                assert_eq!(
                    e.id,
                    Event::make_id(
                        "youtube.rescheduled",
                        &v4,
                        Some(&format!("{schedule}>{later_s}"))
                    )
                );
                assert_eq!(e.fields["previous_start"], json!(start.to_rfc3339()));
                assert_eq!(e.fields["scheduled_start"], json!(later.to_rfc3339()));
            }
            "youtube.reminder" => {
                assert_eq!(
                    e.control["x-delay-id"],
                    json!(format!("reminder:{v4}:1800"))
                );
                assert_eq!(
                    e.control["x-delay-at"],
                    json!((later - ChronoDuration::minutes(30)).timestamp_millis())
                );
            }
            "youtube.live" => {
                assert_eq!(e.control["x-delay-id"], json!(format!("live:{v4}")));
                assert_eq!(e.control["x-delay-at"], json!(later.timestamp_millis()));
            }
            other => panic!("unexpected {other}"),
        }
    }

    // Deleted before it started: both delayed messages are cancelled, and the chats told.
    hub.publish_now(&topic, &tombstone_xml(&v4, &channel)).await;
    let events = observer.wait_for(entity, 12, WAIT).await;
    let mut cancels: Vec<_> = events[9..].to_vec();
    assert_eq!(
        kinds(&cancels),
        vec![
            ("youtube.cancelled".into(), "youtube".into()),
            ("youtube.live".into(), "youtube.live_check.delay".into()),
            ("youtube.reminder".into(), "youtube.delay".into()),
        ]
    );
    cancels.retain(|(_, e)| e.kind != "youtube.cancelled");
    for (_, e) in &cancels {
        assert_eq!(e.control["x-delay-cancel"], json!(true));
    }
    let ids: Vec<_> = cancels
        .iter()
        .map(|(_, e)| e.control["x-delay-id"].clone())
        .collect();
    assert!(
        ids.contains(&json!(format!("reminder:{v4}:1800")))
            && ids.contains(&json!(format!("live:{v4}")))
    );

    // A hub signing with sha384 or sha512 (Flask-WebSub's default) is heard as well.
    for (n, method) in [(21, SignatureMethod::Sha384), (22, SignatureMethod::Sha512)] {
        hub.sign_with(method);
        let id = video_id();
        let title = format!("{method:?}");
        yt.put_video(Video::upload(&id, &channel, &title, now), false);
        assert_eq!(
            hub.publish_now(&topic, &push_xml(&id, &channel, &title, updated(n)))
                .await,
            vec![Some(202)]
        );
        let events = observer.wait_for(entity, n as usize - 8, WAIT).await;
        assert!(
            events
                .iter()
                .any(|(_, e)| e.fields["video_id"] == id.as_str()),
            "{method:?}-signed push delivered"
        );
    }

    let all = observer.settle(entity, QUIET).await;
    assert_eq!(all.len(), 14, "{all:#?}");
    assert_unique_ids(&all);
    // Every call stayed within the API's 50-id limit.
    assert!(yt.list_requests().iter().all(|r| r.ids.len() <= 50));
    worker.shutdown().await;
}

/// Restart on the same storage, then reassignment to another worker (with overlap):
/// no duplicate subscriptions, no duplicate events.
async fn restart_and_reassignment(storage: Arc<dyn Storage>) {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube", "youtube.#"]).await;
    let bus = amqp().await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let topic = topic(&channel);
    let entity = Uuid::new_v4();
    let task = task(entity, &channel);

    let a = Worker::start(config(&hub, &yt), 0, storage.clone(), bus.clone()).await;
    let port = a.port;
    a.runner.start(task.clone()).await.unwrap();
    eventually("A subscribed", WAIT, || {
        hub.subscriptions(&topic).len() == 1
    })
    .await;
    eventually("A verified", WAIT, || {
        a.runner.metrics().active_subscriptions() == 1
    })
    .await;
    let v1 = video_id();
    yt.put_video(Video::upload(&v1, &channel, "one", Utc::now()), false);
    hub.publish_now(&topic, &push_xml(&v1, &channel, "one", updated(1)))
        .await;
    observer.wait_for(entity, 1, WAIT).await;
    a.shutdown().await;

    // Restart: same public URL, same storage → the lease is reused, the hub is not asked.
    // A push arriving before the task is handed back is refused with a retryable 503 and
    // delivered by the hub's retry once the worker holds the subscription again.
    let a = Worker::start(config(&hub, &yt), port, storage.clone(), bus.clone()).await;
    let v2 = video_id();
    yt.put_video(Video::upload(&v2, &channel, "two", Utc::now()), false);
    let attempts_before = hub.attempts().len();
    assert_eq!(
        hub.publish(&topic, &push_xml(&v2, &channel, "two", updated(2))),
        1
    );
    eventually("the early push refused with 503", WAIT, || {
        hub.attempts()[attempts_before..]
            .iter()
            .any(|attempt| attempt.status == Some(503))
    })
    .await;
    assert_eq!(a.runner.metrics().notifications_with("accepted"), 0);
    a.runner.start(task.clone()).await.unwrap();
    eventually("lease reused", WAIT, || {
        a.runner.metrics().active_subscriptions() == 1
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        hub.subscribe_requests(),
        1,
        "a restart must not subscribe again"
    );
    assert_eq!(hub.subscriptions(&topic).len(), 1);
    observer.wait_for(entity, 2, WAIT).await;
    hub.publish_now(&topic, &push_xml(&v1, &channel, "one", updated(1)))
        .await;

    // Reassignment with overlap: B starts before A stops; both receive the next push.
    let b = Worker::start(config(&hub, &yt), 0, storage.clone(), bus.clone()).await;
    b.runner.start(task.clone()).await.unwrap();
    eventually("B subscribed", WAIT, || {
        hub.subscriptions(&topic).len() == 2
    })
    .await;
    eventually("B verified", WAIT, || {
        b.runner.metrics().active_subscriptions() == 1
    })
    .await;
    let v3 = video_id();
    yt.put_video(Video::upload(&v3, &channel, "three", Utc::now()), false);
    let statuses = hub
        .publish_now(&topic, &push_xml(&v3, &channel, "three", updated(3)))
        .await;
    assert_eq!(statuses, vec![Some(202), Some(202)]);
    observer.wait_for(entity, 3, WAIT).await;

    a.runner.stop(task.id).await.unwrap();
    a.runner.wait_stopped(task.id).await;
    assert_eq!(hub.unsubscribe_requests(), 1);
    eventually("A unsubscribed", WAIT, || {
        hub.subscriptions(&topic).len() == 1
    })
    .await;
    let remaining = hub.subscriptions(&topic);
    assert!(remaining[0].callback.starts_with(&b.callback_base()));
    let leases = storage.kv_list(&lease_namespace(task.id)).await.unwrap();
    assert_eq!(leases.len(), 1, "only B's lease remains: {leases:?}");
    assert_eq!(a.runner.metrics().active_subscriptions(), 0);

    // B dedups against what A published; new videos come once.
    yt.put_video(
        Video::upload(&v1, &channel, "one (edited)", Utc::now()),
        false,
    );
    hub.publish_now(
        &topic,
        &push_xml(&v1, &channel, "one (edited)", updated(21)),
    )
    .await;
    hub.publish_now(&topic, &push_xml(&v3, &channel, "three", updated(3)))
        .await;
    let v4 = video_id();
    yt.put_video(Video::upload(&v4, &channel, "four", Utc::now()), false);
    hub.publish_now(&topic, &push_xml(&v4, &channel, "four", updated(4)))
        .await;
    observer.wait_for(entity, 4, WAIT).await;
    let all = observer.settle(entity, QUIET).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    assert_unique_ids(&all);
    for v in [&v1, &v2, &v3, &v4] {
        assert_eq!(
            all.iter()
                .filter(|(_, e)| e.fields["video_id"] == v.as_str())
                .count(),
            1
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

stargazer_testkit::storage_matrix!(restart_and_reassignment);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_errors_are_retried_and_leases_renewed_before_expiry() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let worker = Worker::start(config(&hub, &yt), 0, storage.clone(), amqp().await).await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let topic = topic(&channel);
    // Two refusals (a 503 and a 409) before the hub accepts; then a 4 s lease.
    hub.refuse_next(&[503, 409]);
    hub.grant_lease(4);
    let task = task(Uuid::new_v4(), &channel);
    worker.runner.start(task.clone()).await.unwrap();
    eventually("verified after retries", WAIT, || {
        hub.subscriptions(&topic).len() == 1
    })
    .await;
    assert_eq!(
        worker
            .runner
            .metrics()
            .hub_requests_with("subscribe", "failed"),
        2
    );
    let first = hub.subscriptions(&topic)[0].verified_at;
    // Renewal happens at most half a lease before expiry: well before the 4 s run out.
    eventually("renewed", WAIT, || {
        hub.subscriptions(&topic)[0].verified_at > first
    })
    .await;
    let renewed = hub.subscriptions(&topic)[0].clone();
    assert!(
        renewed.verified_at - first < ChronoDuration::seconds(4),
        "renewed only after expiry"
    );
    // Renewals keep one subscription with the same callback and secret.
    assert_eq!(hub.subscriptions(&topic).len(), 1);
    let lease = storage.kv_list(&lease_namespace(task.id)).await.unwrap();
    assert_eq!(lease.len(), 1);
    assert_eq!(lease[0].1["secret"], json!(renewed.secret));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_errors_back_off_and_the_videos_are_classified_later() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube", "youtube.#"]).await;
    let cfg = YoutubeConfig {
        quota_retry_initial_seconds: 1,
        ..config(&hub, &yt)
    };
    let worker = Worker::start(cfg, 0, storage, amqp().await).await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let topic = topic(&channel);
    let entity = Uuid::new_v4();
    worker.runner.start(task(entity, &channel)).await.unwrap();
    eventually("verified", WAIT, || {
        worker.runner.metrics().active_subscriptions() == 1
    })
    .await;
    yt.fail_quota(2);
    let v1 = video_id();
    yt.put_video(Video::upload(&v1, &channel, "quota", Utc::now()), false);
    hub.publish_now(&topic, &push_xml(&v1, &channel, "quota", updated(1)))
        .await;
    let events = observer.wait_for(entity, 1, WAIT).await;
    assert_eq!(events[0].1.kind, "youtube.video");
    assert_eq!(worker.runner.metrics().api_errors_with("quota"), 2);
    assert_eq!(observer.settle(entity, QUIET).await.len(), 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_poll_catches_missed_pushes_without_flooding_history() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube", "youtube.#"]).await;
    let cfg = YoutubeConfig {
        poll_interval_seconds: 1,
        ..config(&hub, &yt)
    };
    let channel = new_channel_id();
    let old = video_id();
    let upcoming = video_id();
    let now = Utc::now();
    yt.put_video(
        Video::upload(&old, &channel, "history", now - ChronoDuration::hours(1)),
        false,
    );
    let start = (now + ChronoDuration::hours(3))
        .duration_trunc(ChronoDuration::seconds(1))
        .unwrap();
    yt.put_video(
        Video::upcoming(&upcoming, &channel, "tomorrow", start),
        false,
    );
    yt.set_feed(
        &channel,
        &[(upcoming.as_str(), updated(2)), (old.as_str(), updated(1))],
    );
    let worker = Worker::start(cfg, 0, storage, amqp().await).await;
    let entity = Uuid::new_v4();
    worker.runner.start(task(entity, &channel)).await.unwrap();

    // First sync: the pending stream is announced, the existing upload is history.
    let events = observer.wait_for(entity, 3, WAIT).await;
    assert!(
        events
            .iter()
            .all(|(_, e)| e.fields["video_id"] == upcoming.as_str()),
        "{events:#?}"
    );
    let calls_after_sync = yt.list_calls();
    assert_eq!(
        calls_after_sync, 1,
        "the first sync classifies the whole feed in one call"
    );

    // A push that never arrived: the next poll finds it.
    let missed = video_id();
    yt.put_video(
        Video::upload(&missed, &channel, "missed push", Utc::now()),
        false,
    );
    yt.set_feed(
        &channel,
        &[
            (missed.as_str(), updated(3)),
            (upcoming.as_str(), updated(2)),
            (old.as_str(), updated(1)),
        ],
    );
    let events = observer.wait_for(entity, 4, WAIT).await;
    assert!(events
        .iter()
        .any(|(_, e)| e.kind == "youtube.video" && e.fields["video_id"] == missed.as_str()));
    // Later polls of the unchanged feed spend nothing and publish nothing.
    let polls = worker.runner.metrics().feed_polls_with("ok");
    eventually("two more polls", WAIT, || {
        worker.runner.metrics().feed_polls_with("ok") >= polls + 2
    })
    .await;
    assert_eq!(observer.of(entity).len(), 4);
    assert_eq!(yt.list_calls(), calls_after_sync + 1);
    worker.shutdown().await;
}

/// `hub.lease_seconds` of any size is clamped to [2 s, 10 days]: zero, negative and huge
/// values (which used to overflow `as i64` and panic the handler) are all confirmed and
/// stored within the bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_lease_seconds_are_clamped() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let worker = Worker::start(config(&hub, &yt), 0, storage.clone(), amqp().await).await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let topic = topic(&channel);
    let task = task(Uuid::new_v4(), &channel);
    worker.runner.start(task.clone()).await.unwrap();
    eventually("subscription verified", WAIT, || {
        hub.subscriptions(&topic).len() == 1 && worker.runner.metrics().active_subscriptions() == 1
    })
    .await;
    let callback = hub.subscriptions(&topic).remove(0).callback;
    let http = reqwest::Client::new();
    const TEN_DAYS: i64 = 10 * 86_400;
    for (given, granted) in [
        ("18446744073709551615", TEN_DAYS),
        ("99999999999999999999999999999", TEN_DAYS),
        ("9223372036854775807", TEN_DAYS),
        ("864001", TEN_DAYS),
        ("-9223372036854775808", 2),
        ("-1", 2),
        ("0", 2),
    ] {
        let verified = hub.verified();
        let before = Utc::now();
        let response = http
            .get(&callback)
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.topic", topic.as_str()),
                ("hub.challenge", "clamp"),
                ("hub.lease_seconds", given),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "lease {given}");
        assert_eq!(response.text().await.unwrap(), "clamp");
        let after = Utc::now();
        let leases = storage.kv_list(&lease_namespace(task.id)).await.unwrap();
        assert_eq!(leases.len(), 1, "{leases:?}");
        let lease = &leases[0].1;
        assert_eq!(lease["granted_seconds"], json!(granted), "lease {given}");
        let expires: DateTime<Utc> = serde_json::from_value(lease["expires_at"].clone()).unwrap();
        assert!(
            expires >= before + ChronoDuration::seconds(granted)
                && expires <= after + ChronoDuration::seconds(granted),
            "lease {given}: expires {expires}"
        );
        if granted == 2 {
            // A 2 s lease is renewed within a second: wait for that renewal to finish so
            // it cannot overwrite the next case's lease while it is being checked. The hub
            // counts a verification once the worker answered it, after storing the lease.
            eventually("2 s lease renewed", WAIT, || hub.verified() > verified).await;
        }
    }
    // The server is still answering after all of them.
    assert_eq!(
        http.get(format!("http://127.0.0.1:{}/healthz", worker.port))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    worker.shutdown().await;
}

/// Idle, a push is classified at once (one call for its one id) though the batch window is
/// far longer than the test waits; pushes right behind it are batched (here: until
/// `batch_max`), so a burst costs one call per `batch_max` ids after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_push_is_classified_at_once_and_a_burst_is_batched() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube"]).await;
    let cfg = YoutubeConfig {
        // Nothing that waits the window can arrive within `WAIT`.
        batch_window_ms: 120_000,
        batch_max: 3,
        ..config(&hub, &yt)
    };
    let worker = Worker::start(cfg, 0, storage, amqp().await).await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let topic = topic(&channel);
    let entity = Uuid::new_v4();
    worker.runner.start(task(entity, &channel)).await.unwrap();
    eventually("subscription verified", WAIT, || {
        worker.runner.metrics().active_subscriptions() == 1
    })
    .await;
    let calls_before = yt.list_requests().len();
    let now = Utc::now();

    let first = video_id();
    yt.put_video(Video::upload(&first, &channel, "idle", now), false);
    hub.publish_now(&topic, &push_xml(&first, &channel, "idle", updated(1)))
        .await;
    observer.wait_for(entity, 1, WAIT).await;
    let calls = yt.list_requests();
    assert_eq!(calls.len(), calls_before + 1);
    assert_eq!(calls[calls_before].ids, vec![first.clone()]);

    // Right behind it: not idle any more, so the next three share one call.
    let burst: Vec<String> = (0..3).map(|_| video_id()).collect();
    for (n, id) in burst.iter().enumerate() {
        yt.put_video(Video::upload(id, &channel, "burst", now), false);
        hub.publish_now(
            &topic,
            &push_xml(id, &channel, "burst", updated(2 + n as u32)),
        )
        .await;
    }
    observer.wait_for(entity, 4, WAIT).await;
    let calls = yt.list_requests();
    assert_eq!(calls.len(), calls_before + 2, "{calls:#?}");
    let mut batched = calls[calls_before + 1].ids.clone();
    batched.sort();
    let mut expected = burst.clone();
    expected.sort();
    assert_eq!(batched, expected);
    worker.shutdown().await;
}

/// A channel out of touch for longer than `catch_up_after_seconds` is polled as soon as its
/// task starts again, even with polling off: an upload whose push was lost while the worker
/// was down is announced (and the channel's history still is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_long_outage_polls_the_feed_at_once() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube"]).await;
    let cfg = YoutubeConfig {
        catch_up_after_seconds: 1,
        ..config(&hub, &yt)
    };
    assert_eq!(cfg.poll_interval_seconds, 0, "periodic polling is off");
    let channel = new_channel_id();
    let old = video_id();
    yt.put_video(
        Video::upload(
            &old,
            &channel,
            "history",
            Utc::now() - ChronoDuration::hours(1),
        ),
        true,
    );
    let entity = Uuid::new_v4();
    let task = task(entity, &channel);

    let worker = Worker::start(cfg.clone(), 0, storage.clone(), amqp().await).await;
    worker.runner.start(task.clone()).await.unwrap();
    eventually("the first sync", WAIT, || {
        worker.runner.metrics().feed_polls_with("ok") == 1
    })
    .await;
    worker.shutdown().await;

    // While the worker is down, an upload whose push nobody receives.
    let missed = video_id();
    yt.put_video(
        Video::upload(&missed, &channel, "missed push", Utc::now()),
        true,
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let worker = Worker::start(cfg, 0, storage, amqp().await).await;
    worker.runner.start(task).await.unwrap();
    let events = observer.wait_for(entity, 1, WAIT).await;
    assert_eq!(events[0].1.fields["video_id"], missed.as_str());
    assert_eq!(observer.settle(entity, QUIET).await.len(), 1);
    assert_eq!(worker.runner.metrics().feed_polls_with("ok"), 1);
    worker.shutdown().await;
}

/// A first feed poll that fails leaves the channel unsynced without turning news into
/// history: the first poll that succeeds announces what was published after the channel
/// began to be tracked, and only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_poll_does_not_turn_news_into_history() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube"]).await;
    // No feed yet: the test server answers 404.
    let channel = new_channel_id();
    let entity = Uuid::new_v4();
    let task = task(entity, &channel);
    let old = video_id();
    yt.put_video(
        Video::upload(
            &old,
            &channel,
            "history",
            Utc::now() - ChronoDuration::hours(1),
        ),
        false,
    );

    let worker = Worker::start(config(&hub, &yt), 0, storage.clone(), amqp().await).await;
    worker.runner.start(task.clone()).await.unwrap();
    eventually("the first poll failed", WAIT, || {
        worker.runner.metrics().feed_polls_with("failed") == 1
    })
    .await;
    worker.shutdown().await;

    // Published after tracking began, while the feed could not be read.
    let fresh = video_id();
    yt.put_video(Video::upload(&fresh, &channel, "news", Utc::now()), false);
    yt.set_feed(
        &channel,
        &[(fresh.as_str(), updated(2)), (old.as_str(), updated(1))],
    );

    let worker = Worker::start(config(&hub, &yt), 0, storage, amqp().await).await;
    worker.runner.start(task).await.unwrap();
    let events = observer.wait_for(entity, 1, WAIT).await;
    assert_eq!(events[0].1.fields["video_id"], fresh.as_str());
    assert_eq!(observer.settle(entity, QUIET).await.len(), 1);
    worker.shutdown().await;
}

/// The day's Data API units are counted (metric and storage); with few left, batching
/// widens; with none left, no call is made and a new upload is announced from the
/// notification's own data instead of waiting for the quota to reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_falls_back_to_the_feed_for_uploads() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube"]).await;
    let cfg = YoutubeConfig {
        daily_quota_units: 2,
        quota_reserve_units: 1,
        ..config(&hub, &yt)
    };
    let worker = Worker::start(cfg, 0, storage.clone(), amqp().await).await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let topic = topic(&channel);
    let entity = Uuid::new_v4();
    worker.runner.start(task(entity, &channel)).await.unwrap();
    eventually("subscription verified", WAIT, || {
        worker.runner.metrics().active_subscriptions() == 1
    })
    .await;
    let metrics = worker.runner.metrics();
    assert_eq!(metrics.quota_remaining_units(), 2);

    let mut ids = Vec::new();
    for n in 1..=3u32 {
        let id = video_id();
        let title = format!("upload {n}");
        // Published now: the notification's own data must make it news.
        let video = Video::upload(&id, &channel, &title, Utc::now());
        let body = notification_xml(&video, Utc::now());
        yt.put_video(video, false);
        hub.publish_now(&topic, &body).await;
        let events = observer.wait_for(entity, n as usize, WAIT).await;
        assert!(events
            .iter()
            .any(|(_, e)| e.fields["video_id"] == id.as_str()));
        ids.push(id);
    }
    // Two calls spent the budget; the third upload came from the notification alone.
    assert_eq!(yt.list_calls(), 2);
    assert_eq!(metrics.quota_used_units(), 2);
    assert_eq!(metrics.quota_remaining_units(), 0);
    let events = observer.settle(entity, QUIET).await;
    let third = events
        .iter()
        .find(|(_, e)| e.fields["video_id"] == ids[2].as_str())
        .unwrap();
    assert_eq!(third.1.kind, "youtube.video");
    assert_eq!(third.1.fields["title"], "upload 3");
    // The count is in storage, under today's Pacific date, for other workers and restarts.
    let today = stargazer_worker_youtube::quota::quota_day(Utc::now());
    let stored: u64 = storage
        .kv_list(&stargazer_worker_youtube::quota::quota_namespace(today))
        .await
        .unwrap()
        .iter()
        .filter_map(|(_, units)| units.as_u64())
        .sum();
    assert_eq!(stored, 2);
    worker.shutdown().await;
}

/// The schedule once `done` holds for it, or as it is after `WAIT` (the worker writes it
/// after publishing the events the test waits for).
async fn schedule_when(
    storage: &Arc<dyn Storage>,
    done: impl Fn(&[stargazer_core::schedule::ScheduledStream]) -> bool,
) -> Vec<stargazer_core::schedule::ScheduledStream> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = stargazer_core::schedule::list(storage.as_ref(), Utc::now())
            .await
            .unwrap();
        if done(&listed) || std::time::Instant::now() > deadline {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stream's life through real pushes: a members-only stream scheduled → live early →
/// ended with its duration, the shared schedule following it; a premiere and a Short (linked
/// `/shorts/` in the push) told apart by their own kinds; a deleted premiere cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_s_life_premieres_shorts_and_the_schedule() {
    use stargazer_core::schedule::StreamState;
    use stargazer_testkit::servers::youtube::Broadcast;
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start(KEY).await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube", "youtube.#"]).await;
    let worker = Worker::start(config(&hub, &yt), 0, storage.clone(), amqp().await).await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let entity = Uuid::new_v4();
    let topic = topic(&channel);
    worker.runner.start(task(entity, &channel)).await.unwrap();
    eventually("subscription verified", WAIT, || {
        worker.runner.metrics().active_subscriptions() == 1
    })
    .await;
    let of = |events: &[(String, Event)], kind: &str| -> Vec<Event> {
        events
            .iter()
            .filter(|(key, e)| key == "youtube" && e.kind == kind)
            .map(|(_, e)| e.clone())
            .collect()
    };

    let now = Utc::now()
        .duration_trunc(ChronoDuration::seconds(1))
        .unwrap();
    let start = now + ChronoDuration::hours(2);
    let stream = video_id();
    let title = "【メン限】Karaoke";
    yt.put_video(Video::upcoming(&stream, &channel, title, start), false);
    hub.publish_now(&topic, &push_xml(&stream, &channel, title, updated(1)))
        .await;
    let events = observer.wait_for(entity, 3, WAIT).await;
    let scheduled = of(&events, "youtube.scheduled");
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].fields["members_only"], json!(true));
    assert_eq!(scheduled[0].fields["format"], json!("stream"));
    let listed = schedule_when(&storage, |l| l.len() == 1).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].id.as_str(),
            listed[0].state,
            listed[0].scheduled_start
        ),
        (stream.as_str(), StreamState::Upcoming, start)
    );
    assert!(listed[0].members_only);

    // Live two hours early: the delayed messages are cancelled, live goes out ready.
    let started = Utc::now()
        .duration_trunc(ChronoDuration::seconds(1))
        .unwrap();
    assert!(yt.set_broadcast(
        &stream,
        Broadcast::Live {
            scheduled: start,
            started
        }
    ));
    hub.publish_now(&topic, &push_xml(&stream, &channel, title, updated(2)))
        .await;
    let events = observer.wait_for(entity, 6, WAIT).await;
    assert_eq!(of(&events, "youtube.live").len(), 1);
    let listed = schedule_when(&storage, |l| {
        l.first().is_some_and(|s| s.state == StreamState::Live)
    })
    .await;
    assert_eq!(listed[0].state, StreamState::Live);
    assert_eq!(listed[0].actual_start, Some(started));

    // Over after 2 h 13 min: `youtube.ended` with the duration; the schedule forgets it.
    let ended = started + ChronoDuration::minutes(133);
    assert!(yt.set_broadcast(&stream, Broadcast::Ended { started, ended }));
    hub.publish_now(&topic, &push_xml(&stream, &channel, title, updated(3)))
        .await;
    let events = observer.wait_for(entity, 7, WAIT).await;
    let over = of(&events, "youtube.ended");
    assert_eq!(over.len(), 1);
    assert_eq!(over[0].fields["duration_seconds"], json!(133 * 60));
    assert_eq!(over[0].fields["format"], json!("stream"));
    assert!(schedule_when(&storage, |l| l.is_empty()).await.is_empty());

    // A premiere: a finished video (non-zero duration) scheduled to be shown.
    let premiere = video_id();
    yt.put_video(
        Video {
            duration_seconds: 250,
            ..Video::upcoming(&premiere, &channel, "MV premiere", start)
        },
        false,
    );
    hub.publish_now(&topic, &push_xml(&premiere, &channel, "MV", updated(4)))
        .await;
    let events = observer.wait_for(entity, 10, WAIT).await;
    assert_eq!(of(&events, "youtube.premiere").len(), 1);
    assert!(
        of(&events, "youtube.scheduled").len() == 1,
        "no second scheduled"
    );

    // A Short: the push links it as /shorts/.
    let short = Video {
        duration_seconds: 42,
        short: true,
        ..Video::upload(&video_id(), &channel, "cat", Utc::now())
    };
    yt.put_video(short.clone(), false);
    hub.publish_now(&topic, &notification_xml(&short, updated(5)))
        .await;
    let events = observer.wait_for(entity, 11, WAIT).await;
    assert_eq!(of(&events, "youtube.short").len(), 1);
    assert!(of(&events, "youtube.video").is_empty());

    // The premiere is deleted: its reminder and live check are cancelled, chats are told.
    hub.publish_now(&topic, &tombstone_xml(&premiere, &channel))
        .await;
    let events = observer.wait_for(entity, 14, WAIT).await;
    let cancelled = of(&events, "youtube.cancelled");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].fields["format"], json!("premiere"));
    assert!(schedule_when(&storage, |l| l.is_empty()).await.is_empty());
    assert_unique_ids(&observer.settle(entity, QUIET).await);
    worker.shutdown().await;
}
