//! middleware-delay against real backends: RabbitMQ and the in-process bus, SQLite and
//! MongoDB storage. Holding until due, stripping control fields, replace and cancel by id,
//! kill-and-restart with 1,000 pending messages, and two instances sharing one store
//! (each message fired once, a killed instance's claims taken over, replace and cancel
//! through the instance that does not hold the message).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::middleware::{Incoming, Middleware, Outcome};
use stargazer_core::model::Event;
use stargazer_core::storage::{DelayStore, Storage};
use stargazer_core::topology::FIRST_DEATH_QUEUE_HEADER;
use stargazer_core::CancellationToken;
use stargazer_middleware_delay::{DelayConfig, DelayMetrics, DelayService, Delayer};
use stargazer_testkit::backends::{event, now_ms, BusKind, Env, RunningService, StoreKind};
use stargazer_testkit::matrix;
use uuid::Uuid;

/// A running delay middleware.
struct Running {
    service: RunningService,
}

/// Settings for tests: quick retries, and a short lease and claim interval so a takeover
/// happens within seconds.
fn test_config(queue: &str) -> DelayConfig {
    DelayConfig {
        queue: queue.to_owned(),
        retry_delay_ms: 100,
        lease_seconds: LEASE_SECONDS,
        claim_interval_ms: CLAIM_INTERVAL_MS,
        ..DelayConfig::default()
    }
}

/// The lease of the test instances, seconds.
const LEASE_SECONDS: u64 = 2;
/// The claim interval of the test instances, milliseconds.
const CLAIM_INTERVAL_MS: u64 = 200;

impl Running {
    fn start(queue: &str, storage: Arc<dyn Storage>, bus: Arc<dyn Bus>) -> Self {
        Self::start_with(test_config(queue), storage, bus)
    }

    fn start_with(config: DelayConfig, storage: Arc<dyn Storage>, bus: Arc<dyn Bus>) -> Self {
        let service = Box::new(DelayService::new(config));
        Self {
            service: RunningService::start(service, Some(storage), Some(bus)),
        }
    }

    fn metric(&self, name: &str, value: impl Fn(&prometheus::proto::Metric) -> f64) -> f64 {
        self.service
            .registry
            .gather()
            .iter()
            .find(|family| family.name() == name)
            .and_then(|family| family.get_metric().first().map(&value))
            .unwrap_or(0.0)
    }

    /// `stargazer_delay_pending`: what this instance holds in its timer.
    fn pending(&self) -> i64 {
        self.metric("stargazer_delay_pending", |m| m.get_gauge().value()) as i64
    }

    /// `stargazer_delay_fired_total`: what this instance republished.
    fn fired(&self) -> u64 {
        self.metric("stargazer_delay_fired_total", |m| m.get_counter().value()) as u64
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
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
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

/// 1,000 messages pending (stored, beyond the claim horizon); the middleware is killed
/// (task aborted), restarted, sent a due-soon replacement for each, stopped gracefully while those fire,
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
    wait_for_stored(&env.storage, count).await;
    // Due in an hour, beyond the claim horizon: stored, not held in memory.
    assert_eq!(first.pending(), 0, "only what is due soon is held");
    first.kill().await;
    assert_eq!(
        stored_count(&env.storage).await,
        count,
        "held messages are stored"
    );

    let second = Running::start(&queue, env.reopen_storage().await, env.bus.clone());
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

/// Every arrival of `ids` once, none before its `x-delay-at` (kept in the `due` field).
#[track_caller]
fn assert_once_and_not_early(got: &[stargazer_testkit::backends::Received], want: usize) {
    let mut times: HashMap<Uuid, usize> = HashMap::new();
    for r in got {
        *times.entry(r.event.id).or_default() += 1;
        let due = r.event.fields["due"].as_i64().expect("due field");
        assert!(r.at_ms >= due, "fired {} ms early", due - r.at_ms);
    }
    let repeated: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "fired more than once: {repeated:?}");
    assert_eq!(times.len(), want, "every message fired");
}

/// An event due at `at`, its due time also in a field (control fields are stripped).
fn due_event(at: i64, delay_id: &str) -> Event {
    let mut e = event(
        "youtube.reminder",
        json!({"x-delay-at": at, "x-delay-id": delay_id}),
    );
    e.fields.insert("due".into(), json!(at));
    e
}

/// Two instances on one store and one queue: every message fires exactly once and none
/// early. The horizon is one second, so most messages are stored unclaimed by the
/// receiving instance and then claimed by racing claim rounds of both. Run with claims
/// disabled (every instance taking every due message) this fails with repeats.
async fn two_instances_fire_each_message_exactly_once(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let queue = env.middleware_queue("delay").await;
    let mut ready = env.ready().await;
    let config = DelayConfig {
        claim_horizon_seconds: 1,
        claim_interval_ms: 100,
        ..test_config(&queue)
    };
    let a = Running::start_with(config.clone(), env.storage.clone(), env.bus.clone());
    let b = Running::start_with(config, env.reopen_storage().await, env.bus.clone());

    // The MongoDB-wire test server takes tens of milliseconds a write on this machine.
    let count = if store == StoreKind::Mongo { 60 } else { 300 };
    let run = Uuid::new_v4().simple().to_string();
    let start = now_ms() + 1_500;
    let mut ours = HashSet::new();
    for i in 0..count {
        // Spread over 3 s: some within the horizon on arrival, most not.
        let e = due_event(
            start + i as i64 * 3000 / count as i64,
            &format!("{run}-{i}"),
        );
        ours.insert(e.id);
        publish(&env.bus, "youtube.delay", &e).await;
    }
    let mut got = ready.collect_n(&ours, count, Duration::from_secs(90)).await;
    // Anything fired twice would arrive right behind.
    got.extend(ready.collect_for(&ours, Duration::from_secs(2)).await);
    assert_once_and_not_early(&got, count);
    assert_eq!(a.fired() + b.fired(), count as u64);
    wait_for_stored(&env.storage, 0).await;
    a.wait_pending(0).await;
    b.wait_pending(0).await;
    a.stop().await;
    b.stop().await;
    env.close().await;
}
matrix!(two_instances_fire_each_message_exactly_once);

/// One instance holds (has claimed) 200 due-soon messages (40 on MongoDB) and is killed: it never
/// releases them, and the other instance fires every one once its lease lapsed, within
/// lease + claim interval of the kill (or at the message's time, if later).
async fn a_killed_instance_messages_are_fired_by_the_other(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let queue = env.middleware_queue("delay").await;
    let mut ready = env.ready().await;
    let a = Running::start(&queue, env.storage.clone(), env.bus.clone());

    // The MongoDB-wire test server takes tens of milliseconds a write on this machine.
    let count = if store == StoreKind::Mongo { 40 } else { 200 };
    let run = Uuid::new_v4().simple().to_string();
    // Far enough that the kill below comes first even on a slow machine, near enough to
    // be within the horizon (so held by the receiving instance at once).
    let due = now_ms() + 8_000;
    let mut ours = HashSet::new();
    for i in 0..count {
        let e = due_event(due + i as i64, &format!("{run}-{i}"));
        ours.insert(e.id);
        publish(&env.bus, "youtube.delay", &e).await;
    }
    a.wait_pending(count as i64).await;
    let b = Running::start(&queue, env.reopen_storage().await, env.bus.clone());
    let killed_at = now_ms();
    assert!(
        killed_at < due,
        "the kill must come before the messages fall due"
    );
    a.kill().await;

    let mut got = ready.collect_n(&ours, count, Duration::from_secs(60)).await;
    got.extend(ready.collect_for(&ours, Duration::from_secs(1)).await);
    assert_once_and_not_early(&got, count);
    assert_eq!(b.fired(), count as u64, "the survivor fired them all");
    // The documented bound, with slack for a loaded machine and the MongoDB-wire server.
    let bound = killed_at + LEASE_SECONDS as i64 * 1000 + CLAIM_INTERVAL_MS as i64;
    for r in &got {
        let due = r.event.fields["due"].as_i64().expect("due field");
        assert!(
            r.at_ms <= due.max(bound) + 5_000,
            "fired {} ms after its takeover bound",
            r.at_ms - due.max(bound)
        );
    }
    wait_for_stored(&env.storage, 0).await;
    b.stop().await;
    env.close().await;
}
matrix!(a_killed_instance_messages_are_fired_by_the_other);

/// A delayer driven directly (no queue), so a test chooses which instance receives
/// which message.
struct Direct {
    delayer: Arc<Delayer>,
    stop: CancellationToken,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Direct {
    fn start(storage: Arc<dyn Storage>, bus: Arc<dyn Bus>) -> Self {
        let config = test_config("unused");
        let storage: Arc<dyn DelayStore> = storage;
        let delayer = Delayer::new(
            storage,
            bus,
            config.fire_options(),
            config.claim_options(),
            DelayMetrics::register(&prometheus::Registry::new()),
        );
        let stop = CancellationToken::new();
        let loops = vec![
            tokio::spawn(delayer.clone().fire_loop(stop.clone())),
            tokio::spawn(delayer.clone().claim_loop(stop.clone())),
            tokio::spawn(delayer.clone().renew_loop(stop.clone())),
        ];
        Self {
            delayer,
            stop,
            loops,
        }
    }

    /// Hands `event` to this instance as if consumed from `<rest_key>.delay`.
    async fn receive(&self, event: &Event, rest_key: &str) -> Outcome {
        self.delayer
            .handle(Incoming {
                event: event.clone(),
                rest_key: rest_key.to_owned(),
                redelivered: false,
            })
            .await
    }

    async fn wait_pending(&self, want: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.delayer.pending() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{} held, waited for {want}",
                self.delayer.pending()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.loops {
            task.await.expect("delay loop ended cleanly");
        }
        self.delayer.release().await;
    }
}

/// Two instances on one store: a message held (claimed) by one is replaced, or
/// cancelled, through the other. The replacement fires once, from the instance that
/// received it, and neither the original nor the cancelled message ever fires.
async fn replace_and_cancel_through_the_other_instance(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let mut ready = env.ready().await;
    let a = Direct::start(env.storage.clone(), env.bus.clone());
    let b = Direct::start(env.reopen_storage().await, env.bus.clone());

    let (key, doomed_key) = (
        format!("stream-{}", Uuid::new_v4()),
        format!("stream-{}", Uuid::new_v4()),
    );
    let original = due_event(now_ms() + 4_000, &key);
    let doomed = due_event(now_ms() + 4_000, &doomed_key);
    for e in [&original, &doomed] {
        assert!(matches!(a.receive(e, "youtube").await, Outcome::Hold));
    }
    assert_eq!(a.delayer.pending(), 2, "held by the receiving instance");

    let mut replacement = due_event(now_ms() + 4_500, &key);
    replacement.fields.insert("version".into(), json!(2));
    let cancel = event(
        "youtube.reminder",
        json!({"x-delay-id": doomed_key, "x-delay-cancel": true}),
    );
    assert!(matches!(
        b.receive(&replacement, "twitter").await,
        Outcome::Hold
    ));
    assert!(matches!(b.receive(&cancel, "twitter").await, Outcome::Hold));
    assert_eq!(
        b.delayer.pending(),
        1,
        "the replacement is held by its receiver"
    );
    let sentinel = due_event(now_ms() + 5_000, &format!("sentinel-{}", Uuid::new_v4()));
    assert!(matches!(
        a.receive(&sentinel, "youtube").await,
        Outcome::Hold
    ));

    let ours: HashSet<Uuid> = [
        original.id,
        doomed.id,
        replacement.id,
        cancel.id,
        sentinel.id,
    ]
    .into();
    let mut got = ready
        .collect_until(&ours, Duration::from_secs(30), |kept| {
            kept.iter().any(|r| r.event.id == sentinel.id)
        })
        .await;
    got.extend(ready.collect_for(&ours, Duration::from_secs(1)).await);
    let ids: HashSet<Uuid> = got.iter().map(|r| r.event.id).collect();
    assert_eq!(
        (ids, got.len()),
        ([replacement.id, sentinel.id].into(), 2),
        "only the replacement and the sentinel fire: {got:?}"
    );
    let fired = got
        .iter()
        .find(|r| r.event.id == replacement.id)
        .expect("the replacement fired");
    assert_eq!(fired.routing_key, "twitter");
    assert_eq!(fired.event.fields["version"], json!(2));
    assert!(fired.at_ms >= replacement.fields["due"].as_i64().unwrap_or(i64::MAX));
    wait_for_stored(&env.storage, 0).await;
    a.wait_pending(0).await;
    b.wait_pending(0).await;
    a.stop().await;
    b.stop().await;
    env.close().await;
}
matrix!(replace_and_cancel_through_the_other_instance);

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
