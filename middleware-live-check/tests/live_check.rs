//! middleware-live-check against the YouTube Data API test server of `stargazer-testkit`, on
//! RabbitMQ and the in-process bus, SQLite and MongoDB: held until the video goes
//! upcoming → live (across a restart), dropped when deleted / ended / no broadcast / too
//! late, ≤ 50 ids per call, quota errors backed off; and the order of a multi-tag key
//! `youtube.live_check.delay` through both middlewares.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::Event;
use stargazer_core::service::Service;
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use stargazer_middleware_delay::{DelayConfig, DelayService};
use stargazer_middleware_live_check::{LiveCheckConfig, LiveCheckService};
use stargazer_testkit::backends::{
    event, now_ms, service_context, BusKind, Env, RunningService, StoreKind,
};
use stargazer_testkit::matrix;
use stargazer_testkit::servers::youtube::{Broadcast, Video, Youtube};
use uuid::Uuid;

const KEY: &str = "test-api-key";

/// Stores video `id` in state `broadcast`, replacing what the API knew of it.
fn set(api: &Youtube, id: &str, broadcast: Broadcast) {
    api.put_video(
        Video {
            broadcast,
            duration_seconds: 0,
            ..Video::upload(id, "UCliveCheckTestChannel", id, Utc::now())
        },
        false,
    );
}

/// When the API was asked about video `id`.
fn asked_about(api: &Youtube, id: &str) -> Vec<Instant> {
    api.list_requests()
        .iter()
        .filter(|c| c.ids.iter().any(|i| i == id))
        .map(|c| c.at)
        .collect()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn start_api() -> (Youtube, String) {
    let api = Youtube::start(KEY).await.unwrap();
    let url = api.base.clone();
    (api, url)
}

struct Running {
    service: RunningService,
}

impl Running {
    fn start(config: LiveCheckConfig, storage: Arc<dyn Storage>, bus: Arc<dyn Bus>) -> Self {
        let service = Box::new(LiveCheckService::new(config));
        Self {
            service: RunningService::start(service, Some(storage), Some(bus)),
        }
    }

    fn metric(&self, name: &str, label: Option<&str>) -> f64 {
        self.service
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)))
            .map(|m| m.get_counter().value() + m.get_gauge().value())
            .sum()
    }

    async fn wait_metric(&self, name: &str, label: Option<&str>, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric(name, label) != want {
            assert!(
                Instant::now() < deadline,
                "{name}{{{label:?}}} = {}, waited for {want}",
                self.metric(name, label)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.service.stop().await;
    }
}

fn config(queue: &str, url: &str, namespace: &str) -> LiveCheckConfig {
    LiveCheckConfig {
        queue: queue.to_owned(),
        api_base_url: url.to_owned(),
        api_key: KEY.to_owned(),
        poll_interval_ms: 100,
        backoff_initial_ms: 300,
        backoff_max_ms: 1000,
        kv_namespace: namespace.to_owned(),
        retry_delay_ms: 100,
        ..LiveCheckConfig::default()
    }
}

fn live_event(video: &str) -> Event {
    event("youtube.live", json!({"x-live-check-video": video}))
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upcoming → (restart) → live: held while upcoming, kept across a restart, forwarded
/// once `actualStartTime` shows; a deleted video's event is dropped with a metric.
async fn holds_until_live_across_a_restart(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let (api, url) = start_api().await;
    let queue = env.middleware_queue("live_check").await;
    let namespace = format!("live_check_{}", Uuid::new_v4().simple());
    let mut ready = env.ready().await;
    let running = Running::start(
        config(&queue, &url, &namespace),
        env.storage.clone(),
        env.bus.clone(),
    );

    let scheduled = Utc::now() + chrono::Duration::minutes(5);
    set(&api, "vidUpcoming1", Broadcast::Upcoming(scheduled));
    let held = live_event("vidUpcoming1");
    let deleted = live_event("vidDeleted01");
    for e in [&held, &deleted] {
        env.bus
            .publish("youtube.live_check", &e.to_bytes())
            .await
            .unwrap();
    }
    let ours: HashSet<Uuid> = [held.id, deleted.id].into();
    running
        .wait_metric("stargazer_live_check_dropped_total", Some("gone"), 1.0)
        .await;
    wait_until("two polls of the upcoming video", || {
        asked_about(&api, "vidUpcoming1").len() >= 2
    })
    .await;
    assert!(
        ready
            .collect_for(&ours, Duration::from_millis(300))
            .await
            .is_empty(),
        "nothing forwarded while upcoming"
    );
    running
        .wait_metric("stargazer_live_check_pending", None, 1.0)
        .await;
    running.stop().await;

    let stored = env.storage.kv_list(&namespace).await.unwrap();
    assert_eq!(stored.len(), 1, "the held event is persisted");
    assert_eq!(stored[0].0, held.id.to_string());

    let running = Running::start(
        config(&queue, &url, &namespace),
        env.reopen_storage().await,
        env.bus.clone(),
    );
    running
        .wait_metric("stargazer_live_check_pending", None, 1.0)
        .await;
    let started = Utc::now();
    set(&api, "vidUpcoming1", Broadcast::Live { scheduled, started });
    let got = ready.collect_n(&ours, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.id, held.id);
    assert_eq!(got[0].routing_key, "youtube");
    assert!(got[0].event.control.get("x-live-check-video").is_none());
    assert_eq!(
        got[0].event.fields["actual_start_time"],
        json!(DateTime::parse_from_rfc3339(&rfc3339(started))
            .unwrap()
            .with_timezone(&Utc)
            .to_rfc3339())
    );
    assert!(
        ready
            .collect_for(&ours, Duration::from_millis(300))
            .await
            .is_empty(),
        "the deleted one never comes"
    );
    running
        .wait_metric("stargazer_live_check_forwarded_total", None, 1.0)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.storage.kv_list(&namespace).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "forwarded event left storage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
    env.close().await;
}
matrix!(holds_until_live_across_a_restart);

/// 120 held videos are polled in calls of at most 50 ids, and all forwarded once live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_at_most_50_ids_per_call() {
    let mut env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let (api, url) = start_api().await;
    let queue = env.middleware_queue("live_check").await;
    let mut ready = env.ready().await;
    let running = Running::start(
        config(&queue, &url, "live_check"),
        env.storage.clone(),
        env.bus.clone(),
    );
    let scheduled = Utc::now() + chrono::Duration::minutes(5);
    let mut ours = HashSet::new();
    for i in 0..120 {
        let video = format!("vid{i:08}");
        set(&api, &video, Broadcast::Upcoming(scheduled));
        let e = live_event(&video);
        ours.insert(e.id);
        env.bus
            .publish("youtube.live_check", &e.to_bytes())
            .await
            .unwrap();
    }
    running
        .wait_metric("stargazer_live_check_pending", None, 120.0)
        .await;
    wait_until("a full round over 120 videos", || {
        let calls = api.list_requests();
        let seen: HashSet<&String> = calls.iter().flat_map(|c| c.ids.iter()).collect();
        seen.len() == 120
    })
    .await;
    for i in 0..120 {
        set(
            &api,
            &format!("vid{i:08}"),
            Broadcast::Live {
                scheduled,
                started: Utc::now(),
            },
        );
    }
    let got = ready.collect_n(&ours, 120, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 120);
    let calls = api.list_requests();
    assert!(
        calls.iter().all(|c| c.ids.len() <= 50),
        "sizes {:?}",
        calls.iter().map(|c| c.ids.len()).collect::<Vec<_>>()
    );
    assert!(calls.iter().all(|c| c.status == 200));
    assert!(
        calls.iter().all(|c| c.parts == ["liveStreamingDetails"]),
        "only the part live-check needs is asked for"
    );
    running.stop().await;
}

/// Quota errors keep everything held and slow polling down; once the API answers again
/// the live video's event is forwarded and nothing was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_errors_back_off_and_keep_pending() {
    let mut env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let (api, url) = start_api().await;
    api.fail_quota(3);
    set(
        &api,
        "vidLive00001",
        Broadcast::Live {
            scheduled: Utc::now(),
            started: Utc::now(),
        },
    );
    let queue = env.middleware_queue("live_check").await;
    let mut ready = env.ready().await;
    let running = Running::start(
        config(&queue, &url, "live_check"),
        env.storage.clone(),
        env.bus.clone(),
    );
    let e = live_event("vidLive00001");
    env.bus
        .publish("youtube.live_check", &e.to_bytes())
        .await
        .unwrap();
    let got = ready
        .collect_n(&[e.id].into(), 1, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 1, "forwarded once the API answers");
    let calls = api.list_requests();
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(&statuses[..4], &[403, 403, 403, 200]);
    for pair in calls[..4].windows(2) {
        // backoff_initial 300 ms with ±20 % jitter, against a 100 ms poll interval.
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(230),
            "backed off after a quota error"
        );
    }
    assert_eq!(
        running.metric("stargazer_live_check_api_calls_total", Some("quota")),
        3.0
    );
    assert_eq!(
        running.metric("stargazer_live_check_dropped_total", None),
        0.0
    );
    running.stop().await;
}

/// Ended, plain (no broadcast) and too-late videos are dropped, each with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_cancelled_and_late_broadcasts_are_dropped() {
    let mut env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let (api, url) = start_api().await;
    let now = Utc::now();
    set(
        &api,
        "vidEnded0001",
        Broadcast::Ended {
            started: now - chrono::Duration::hours(2),
            ended: now,
        },
    );
    set(&api, "vidPlain0001", Broadcast::Upload);
    set(
        &api,
        "vidLate00001",
        Broadcast::Upcoming(now - chrono::Duration::minutes(10)),
    );
    let queue = env.middleware_queue("live_check").await;
    let mut ready = env.ready().await;
    let running = Running::start(
        LiveCheckConfig {
            give_up_after_ms: 400,
            ..config(&queue, &url, "live_check")
        },
        env.storage.clone(),
        env.bus.clone(),
    );
    let events: Vec<Event> = ["vidEnded0001", "vidPlain0001", "vidLate00001"]
        .iter()
        .map(|v| live_event(v))
        .collect();
    for e in &events {
        env.bus
            .publish("youtube.live_check", &e.to_bytes())
            .await
            .unwrap();
    }
    for reason in ["ended", "not_broadcast", "timeout"] {
        running
            .wait_metric("stargazer_live_check_dropped_total", Some(reason), 1.0)
            .await;
    }
    running
        .wait_metric("stargazer_live_check_pending", None, 0.0)
        .await;
    let ours: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert!(ready
        .collect_for(&ours, Duration::from_millis(300))
        .await
        .is_empty());
    assert!(env.storage.kv_list("live_check").await.unwrap().is_empty());
    running.stop().await;
}

/// `youtube.live_check.delay`: delay first (the Data API hears of the video only after
/// `x-delay-at`), then live-check, then ready; no hop ever skips a tag.
async fn multi_tag_key_runs_delay_then_live_check(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let (api, url) = start_api().await;
    set(
        &api,
        "vidPipeline1",
        Broadcast::Live {
            scheduled: Utc::now(),
            started: Utc::now(),
        },
    );
    let delay_queue = env.middleware_queue("delay").await;
    let live_queue = env.middleware_queue("live_check").await;
    let namespace = format!("live_check_{}", Uuid::new_v4().simple());
    let mut ready = env.ready().await;
    // Spies on the intermediate keys.
    let spy_name = format!("sgtest.spy.{}", Uuid::new_v4().simple());
    let mut spy = env
        .bus
        .consume(&QueueSpec {
            name: spy_name,
            bindings: vec!["youtube.live_check".into(), "youtube.delay".into()],
            prefetch: 10,
            kind: Default::default(),
        })
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let delay = Box::new(DelayService::new(DelayConfig {
        queue: delay_queue,
        ..DelayConfig::default()
    }));
    let (storage, bus) = (Some(env.storage.clone()), Some(env.bus.clone()));
    let cx = service_context(&*delay, storage, bus, vec![], shutdown.clone());
    let delay = tokio::spawn(delay.run(cx));
    let live = Running::start(
        config(&live_queue, &url, &namespace),
        env.storage.clone(),
        env.bus.clone(),
    );

    let at = now_ms() + 1500;
    let e = event(
        "youtube.live",
        json!({"x-delay-at": at, "x-live-check-video": "vidPipeline1"}),
    );
    let published = Instant::now();
    env.bus
        .publish("youtube.live_check.delay", &e.to_bytes())
        .await
        .unwrap();
    let got = ready
        .collect_n(&[e.id].into(), 1, Duration::from_secs(20))
        .await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.routing_key, "youtube");
    assert!(r.at_ms >= at, "ready only after x-delay-at");
    assert!(
        r.event.control.is_empty(),
        "both middlewares removed their fields: {:?}",
        r.event.control
    );
    let asked = asked_about(&api, "vidPipeline1");
    assert!(!asked.is_empty());
    assert!(
        asked[0].duration_since(published) >= Duration::from_millis(1400),
        "live-check saw the video only after the delay"
    );
    // The one intermediate hop: after delay, before live-check.
    let mut hops = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), spy.next()).await {
        if Event::from_bytes(&d.body)
            .map(|x| x.id == e.id)
            .unwrap_or(false)
        {
            hops.push(d.routing_key.clone());
        }
        d.ack().await.unwrap();
    }
    assert_eq!(hops, vec!["youtube.live_check".to_owned()]);
    shutdown.cancel();
    delay.await.unwrap().unwrap();
    live.stop().await;
    env.close().await;
}
matrix!(multi_tag_key_runs_delay_then_live_check);

/// Calls are counted on the Data API quota shared with the YouTube worker (its units
/// included); once the day's quota is spent no call is made, and an event whose start
/// passed is released unverified (marked so) rather than dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_stops_calls_and_releases_due_events_unverified() {
    use stargazer_core::quota::{quota_day, quota_namespace};
    let mut env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let (api, url) = start_api().await;
    let day = quota_namespace(quota_day(Utc::now()));
    // The worker spent one unit of three today.
    env.storage
        .kv_put(&day, "youtube-worker", &json!(1))
        .await
        .unwrap();
    let scheduled = Utc::now() - chrono::Duration::minutes(1);
    set(&api, "vidLateStart", Broadcast::Upcoming(scheduled));
    let queue = env.middleware_queue("live_check").await;
    let mut ready = env.ready().await;
    let running = Running::start(
        LiveCheckConfig {
            daily_quota_units: 3,
            quota_reserve_units: 1,
            ..config(&queue, &url, "live_check")
        },
        env.storage.clone(),
        env.bus.clone(),
    );
    let e = live_event("vidLateStart");
    env.bus
        .publish("youtube.live_check", &e.to_bytes())
        .await
        .unwrap();
    let got = ready
        .collect_n(&[e.id].into(), 1, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 1, "released once the quota is spent");
    assert_eq!(got[0].event.fields["live_unverified"], json!(true));
    assert!(got[0].event.fields.get("actual_start_time").is_none());
    // Two calls (the third unit was the worker's), then none.
    assert_eq!(asked_about(&api, "vidLateStart").len(), 2);
    let counted: u64 = env
        .storage
        .kv_list(&day)
        .await
        .unwrap()
        .iter()
        .filter_map(|(_, units)| units.as_u64())
        .sum();
    assert_eq!(counted, 3, "the live check's calls are on the shared count");
    let held = live_event("vidLateStart");
    env.bus
        .publish("youtube.live_check", &held.to_bytes())
        .await
        .unwrap();
    let again = ready
        .collect_n(&[held.id].into(), 1, Duration::from_secs(30))
        .await;
    assert_eq!(again.len(), 1);
    assert_eq!(api.list_calls(), 2, "no call with the quota spent");
    running.stop().await;
    env.close().await;
}
