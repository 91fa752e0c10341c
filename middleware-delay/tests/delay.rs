//! middleware-delay against real backends: RabbitMQ and the in-process bus, SQLite and
//! MongoDB storage. Holding until due, stripping control fields, replace and cancel by id,
//! and kill-and-restart with 1,000 pending messages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::Event;
use stargazer_core::storage::Storage;
use stargazer_core::topology::FIRST_DEATH_QUEUE_HEADER;
use stargazer_middleware_delay::{DelayConfig, DelayService};
use stargazer_testkit::backends::{event, now_ms, BusKind, Env, RunningService, StoreKind};
use stargazer_testkit::matrix;
use uuid::Uuid;

/// A running delay middleware.
struct Running {
    service: RunningService,
}

impl Running {
    fn start(queue: &str, storage: Arc<dyn Storage>, bus: Arc<dyn Bus>) -> Self {
        let config = DelayConfig {
            queue: queue.to_owned(),
            retry_delay_ms: 100,
            ..DelayConfig::default()
        };
        let service = Box::new(DelayService::new(config));
        Self {
            service: RunningService::start(service, Some(storage), Some(bus)),
        }
    }

    /// `stargazer_delay_pending`: what this instance holds in its timer.
    fn pending(&self) -> i64 {
        self.service
            .registry
            .gather()
            .iter()
            .find(|family| family.name() == "stargazer_delay_pending")
            .and_then(|family| {
                family
                    .get_metric()
                    .first()
                    .map(|m| m.get_gauge().value() as i64)
            })
            .unwrap_or(0)
    }

    async fn wait_pending(&self, want: i64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while self.pending() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{} pending, waited for {want}",
                self.pending()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.service.stop().await;
    }

    async fn kill(self) {
        self.service.kill().await;
    }
}

async fn publish(bus: &Arc<dyn Bus>, key: &str, event: &Event) {
    bus.publish(key, &event.to_bytes()).await.expect("publish");
}

async fn stored_count(storage: &Arc<dyn Storage>) -> usize {
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let page = storage
            .list_delayed(after.as_deref(), 500)
            .await
            .expect("list delayed");
        count += page.len();
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.id.clone()),
            _ => return count,
        }
    }
}

async fn wait_for_stored(storage: &Arc<dyn Storage>, want: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have = stored_count(storage).await;
        if have == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{have} stored, waited for {want}"
        );
        // Listing is not free on the MongoDB side: poll gently.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn holds_until_due_and_strips_control_fields(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let queue = env.middleware_queue("delay").await;
    let mut ready = env.ready().await;
    let running = Running::start(&queue, env.storage.clone(), env.bus.clone());

    let at = now_ms() + 3000;
    let held = event(
        "youtube.reminder",
        json!({"x-delay-at": at, "x-translate-to": ["en"]}),
    );
    let due = event("youtube.reminder", json!({"x-delay-at": now_ms() - 60_000}));
    publish(&env.bus, "youtube.delay", &held).await;
    publish(&env.bus, "youtube.delay", &due).await;
    let ours: HashSet<Uuid> = [held.id, due.id].into();

    let got = ready.collect_n(&ours, 2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "both delivered: {got:?}");
    assert_eq!(
        got[0].event.id, due.id,
        "an overdue message goes straight on"
    );
    assert_eq!(got[1].event.id, held.id);
    assert!(
        got[1].at_ms >= at,
        "delivered {} ms before x-delay-at",
        at - got[1].at_ms
    );
    for r in &got {
        assert_eq!(r.routing_key, "youtube");
        assert!(
            r.event.control.keys().all(|k| !k.starts_with("x-delay")),
            "{:?}",
            r.event.control
        );
    }
    // Control fields of other middlewares stay.
    assert_eq!(got[1].event.control["x-translate-to"], json!(["en"]));
    // Fired messages leave storage (the delete follows the publish) and the pending
    // gauge.
    wait_for_stored(&env.storage, 0).await;
    running.wait_pending(0).await;
    running.stop().await;
    env.close().await;
}
matrix!(holds_until_due_and_strips_control_fields);

async fn replace_and_cancel_by_id(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let queue = env.middleware_queue("delay").await;
    let mut ready = env.ready().await;
    let running = Running::start(&queue, env.storage.clone(), env.bus.clone());

    // Due times leave seconds of slack: every message below must be stored before the
    // first one falls due, even on a slow machine with the MongoDB-wire test server.
    let key = format!("stream-{}", Uuid::new_v4());
    let first = event(
        "youtube.reminder",
        json!({"x-delay-at": now_ms() + 4100, "x-delay-id": key}),
    );
    let second = event(
        "youtube.reminder",
        json!({"x-delay-at": now_ms() + 4400, "x-delay-id": key}),
    );
    let doomed_key = format!("stream-{}", Uuid::new_v4());
    let doomed = event(
        "youtube.reminder",
        json!({"x-delay-at": now_ms() + 4100, "x-delay-id": doomed_key}),
    );
    let cancel = event(
        "youtube.reminder",
        json!({"x-delay-id": doomed_key, "x-delay-cancel": true}),
    );
    // Replaced by its own event id (the default delay id) with a later time.
    let by_event_id = event("youtube.reminder", json!({"x-delay-at": now_ms() + 4000}));
    let mut moved = by_event_id.clone();
    moved
        .control
        .insert("x-delay-at".into(), json!(now_ms() + 4500));
    moved.fields.insert("version".into(), json!(2));
    let sentinel = event("youtube.reminder", json!({"x-delay-at": now_ms() + 4800}));
    for e in [
        &first,
        &second,
        &doomed,
        &cancel,
        &by_event_id,
        &moved,
        &sentinel,
    ] {
        publish(&env.bus, "youtube.delay", e).await;
    }
    let ours: HashSet<Uuid> = [
        first.id,
        second.id,
        doomed.id,
        cancel.id,
        by_event_id.id,
        sentinel.id,
    ]
    .into();

    let got = ready
        .collect_until(&ours, Duration::from_secs(20), |kept| {
            kept.iter().any(|r| r.event.id == sentinel.id)
        })
        .await;
    let mut rest = ready.collect_for(&ours, Duration::from_millis(500)).await;
    let mut all = got;
    all.append(&mut rest);
    let ids: Vec<Uuid> = all.iter().map(|r| r.event.id).collect();
    // The two replacements are due 100 ms apart, too close to promise their order on a
    // loaded machine; the sentinel, due last by 300 ms, comes last.
    let replacements: HashSet<Uuid> = ids.iter().take(2).copied().collect();
    assert_eq!(
        (replacements, ids.len(), ids.last()),
        ([second.id, by_event_id.id].into(), 3, Some(&sentinel.id)),
        "only the replacements and the sentinel fire: {ids:?}"
    );
    let replaced = all
        .iter()
        .find(|r| r.event.id == by_event_id.id)
        .expect("the replacement fired");
    assert_eq!(
        replaced.event.fields["version"],
        json!(2),
        "the replacement's body fires"
    );
    assert!(env
        .storage
        .get_delayed(&doomed_key)
        .await
        .unwrap()
        .is_none());
    wait_for_stored(&env.storage, 0).await;
    running.stop().await;
    env.close().await;
}
matrix!(replace_and_cancel_by_id);

/// 1,000 messages pending; the middleware is killed (task aborted), restarted (reloading
/// all 1,000), sent a due-soon replacement for each, stopped gracefully while those fire,
/// and restarted again: every replacement arrives exactly once and no original ever does.
async fn kill_and_restart_with_1000_pending(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let queue = env.middleware_queue("delay").await;
    let mut ready = env.ready().await;
    let first = Running::start(&queue, env.storage.clone(), env.bus.clone());

    let count = 1000;
    let run = Uuid::new_v4().simple().to_string();
    let far = now_ms() + 3_600_000;
    let mut originals = HashSet::new();
    for i in 0..count {
        let e = event(
            "youtube.reminder",
            json!({"x-delay-at": far, "x-delay-id": format!("{run}-{i}")}),
        );
        originals.insert(e.id);
        publish(&env.bus, "youtube.delay", &e).await;
    }
    first.wait_pending(count as i64).await;
    first.kill().await;
    assert_eq!(
        stored_count(&env.storage).await,
        count,
        "held messages are stored"
    );

    let second = Running::start(&queue, env.reopen_storage().await, env.bus.clone());
    second.wait_pending(count as i64).await;
    let mut ours = HashSet::new();
    let soon = now_ms() + 2_000;
    for i in 0..count {
        // Spread over 3 s, so the graceful stop below lands while firing.
        let at = soon + i as i64 * 3;
        let e = event(
            "youtube.reminder",
            json!({"x-delay-at": at, "x-delay-id": format!("{run}-{i}")}),
        );
        ours.insert(e.id);
        publish(&env.bus, "youtube.delay", &e).await;
    }
    let watched: HashSet<Uuid> = ours.union(&originals).copied().collect();
    let mut got = ready
        .collect_n(&watched, 300, Duration::from_secs(120))
        .await;
    assert!(
        got.len() >= 300,
        "{} delivered before the graceful stop",
        got.len()
    );
    second.stop().await;

    let third = Running::start(&queue, env.reopen_storage().await, env.bus.clone());
    let mut seen: HashSet<Uuid> = got.iter().map(|r| r.event.id).collect();
    got.extend(
        ready
            .collect_until(&watched, Duration::from_secs(120), |kept| {
                seen.extend(kept.last().map(|r| r.event.id));
                seen.len() >= count
            })
            .await,
    );
    // Anything fired twice would arrive right behind.
    got.extend(ready.collect_for(&watched, Duration::from_secs(1)).await);
    let mut times: HashMap<Uuid, usize> = HashMap::new();
    for r in &got {
        assert!(
            !originals.contains(&r.event.id),
            "a replaced original fired"
        );
        *times.entry(r.event.id).or_default() += 1;
    }
    assert_eq!(times.len(), count, "every replacement delivered");
    let repeated: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    wait_for_stored(&env.storage, 0).await;
    third.stop().await;
    env.close().await;
}
matrix!(kill_and_restart_with_1000_pending);

/// A message that fell due while the middleware was down fires at once after the restart,
/// with the rest of its key (`youtube.live_check`).
async fn overdue_after_restart_fire_at_once(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let queue = env.middleware_queue("delay").await;
    let next_queue = env.middleware_queue("live_check").await;
    let mut next_hop = env
        .bus
        .consume(&QueueSpec::new(next_queue, "#.live_check", 10))
        .await
        .unwrap();
    let running = Running::start(&queue, env.storage.clone(), env.bus.clone());
    let at = now_ms() + 3000;
    let e = event(
        "youtube.live",
        json!({"x-delay-at": at, "x-live-check-video": "abc"}),
    );
    publish(&env.bus, "youtube.live_check.delay", &e).await;
    running.wait_pending(1).await;
    running.stop().await;
    // Down past the due time.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let restarted_at = now_ms();
    let running = Running::start(&queue, env.reopen_storage().await, env.bus.clone());
    let (key, fired) = loop {
        let d = tokio::time::timeout(Duration::from_secs(15), next_hop.next())
            .await
            .expect("overdue message fired after restart")
            .expect("bus open");
        let parsed = Event::from_bytes(&d.body).ok();
        let key = d.routing_key.clone();
        d.ack().await.unwrap();
        if let Some(parsed) = parsed.filter(|p| p.id == e.id) {
            break (key, parsed);
        }
    };
    assert!(restarted_at > at);
    assert_eq!(key, "youtube.live_check");
    assert_eq!(fired.control.get("x-live-check-video"), Some(&json!("abc")));
    assert!(fired.control.get("x-delay-at").is_none());
    running.stop().await;
    env.close().await;
}
matrix!(overdue_after_restart_fire_at_once);

/// Bad control values are dead-lettered (rejected: the bus moves them to `stargazer.dead`;
/// the reason is logged) and counted.
#[tokio::test]
async fn invalid_control_values_are_dead_lettered() {
    let env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let bus = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let mut dead = bus
        .consume(&stargazer_core::topology::dead_letter_queue(10))
        .await
        .unwrap();
    let queue = "stargazer.middleware.delay";
    bus.declare(&QueueSpec::new(queue, "#.delay", 10))
        .await
        .unwrap();
    let running = Running::start(queue, env.storage.clone(), bus.clone());
    let cases = [
        (json!({"x-delay-at": "tomorrow"}), "x-delay-at must be"),
        (json!({}), "x-delay-at is missing"),
        (
            json!({"x-delay-at": 1, "x-delay-cancel": "yes"}),
            "x-delay-cancel must be a boolean",
        ),
    ];
    let mut sent = Vec::new();
    for (control, _) in &cases {
        let e = event("youtube.reminder", control.clone());
        sent.push(e.to_bytes());
        publish(&bus, "youtube.delay", &e).await;
    }
    bus.publish("youtube.delay", b"not json").await.unwrap();
    sent.push(b"not json".to_vec());
    let mut dead_bodies = Vec::new();
    for _ in 0..4 {
        let d = tokio::time::timeout(Duration::from_secs(5), dead.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.header(FIRST_DEATH_QUEUE_HEADER), Some(queue));
        dead_bodies.push(d.body.clone());
        d.ack().await.unwrap();
    }
    dead_bodies.sort();
    sent.sort();
    assert_eq!(dead_bodies, sent, "every bad message is dead-lettered");
    assert_eq!(bus.metrics().dead_lettered(queue, "rejected"), 4);
    running.stop().await;
    env.close().await;
}
