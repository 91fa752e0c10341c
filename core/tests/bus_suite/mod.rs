//! The bus contract: behaviour every [`Bus`] implementation must show, written once and
//! instantiated per implementation by [`bus_contract_tests!`].
//!
//! Each test gets a bus of its own (on RabbitMQ: in a vhost of its own), made with
//! [`test_options`]; it still uses its own queue names and routing-key words
//! (`t<uuid>`) and, on `stargazer.dead`, looks only for its own message by body.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stargazer_core::bus::{Bus, BusError, BusOptions, Consumer, Delivery, QueueSpec};
use stargazer_core::topology::{
    self, DEAD_REASON_HEADER, DEAD_ROUTING_KEY_HEADER, FIRST_DEATH_QUEUE_HEADER,
    FIRST_DEATH_REASON_HEADER,
};

/// Bus options of the suite: one quick retry of an unroutable message.
pub(crate) fn test_options() -> BusOptions {
    BusOptions {
        unroutable_retries: 1,
        unroutable_delay: Duration::from_millis(20),
        ..BusOptions::default()
    }
}

/// Reads `stargazer.dead` until the message with `body`, handing the others back.
pub(crate) async fn dead_letter_with_body(bus: &Arc<dyn Bus>, body: &str) -> Delivery {
    let mut dead_consumer = bus
        .consume(&topology::dead_letter_queue(1000))
        .await
        .expect("consume dead");
    let mut others = Vec::new();
    let ours = loop {
        let delivery = next(&mut dead_consumer).await;
        if text(&delivery) == body {
            break delivery;
        }
        others.push(delivery);
    };
    for other in others {
        other
            .requeue()
            .await
            .expect("hand back another dead letter");
    }
    ours
}

/// How long a test waits for a delivery that must come. Generous: it bounds a failure, it
/// does not measure speed.
pub(crate) const MUST_ARRIVE: Duration = Duration::from_secs(15);

/// How long a test waits to conclude that a delivery that must NOT come did not.
pub(crate) const MUST_NOT_ARRIVE: Duration = Duration::from_millis(700);

/// A fresh word for queue names and routing keys: `t` + 32 hex digits.
pub(crate) fn unique() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// A test queue name.
pub(crate) fn queue_name(word: &str, role: &str) -> String {
    format!("stargazer.test.{word}.{role}")
}

/// The next delivery, failing the test if none comes in time or the consumer ended.
pub(crate) async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    match tokio::time::timeout(MUST_ARRIVE, consumer.next()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("consumer ended while a delivery was expected"),
        Err(_) => panic!("no delivery within {MUST_ARRIVE:?}"),
    }
}

/// Asserts that no delivery comes within [`MUST_NOT_ARRIVE`].
pub(crate) async fn assert_quiet(consumer: &mut Box<dyn Consumer>, why: &str) {
    if let Ok(Some(delivery)) = tokio::time::timeout(MUST_NOT_ARRIVE, consumer.next()).await {
        panic!(
            "{why}: unexpected delivery {:?} with body {:?}",
            delivery.routing_key,
            String::from_utf8_lossy(&delivery.body)
        );
    }
}

fn text(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.body).into_owned()
}

/// Reads and acks deliveries until the one whose body is `fence`, returning the bodies
/// before it in arrival order.
async fn drain_until(consumer: &mut Box<dyn Consumer>, fence: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let delivery = next(consumer).await;
        let body = text(&delivery);
        delivery.ack().await.expect("ack");
        if body == fence {
            return seen;
        }
        seen.push(body);
    }
}

/// `*` matches exactly one word and `#` zero or more; one message reaches every queue
/// whose binding matches, and no other.
pub(crate) async fn routes_by_patterns_to_several_queues(bus: Arc<dyn Bus>) -> Vec<String> {
    let src = unique();
    let tag = unique();
    let star = QueueSpec::new(queue_name(&src, "star"), format!("*.{tag}"), 10);
    let hash = QueueSpec::new(queue_name(&src, "hash"), format!("#.{tag}"), 10);
    let source = QueueSpec::new(queue_name(&src, "source"), format!("{src}.#"), 10);
    let mut star_c = bus.consume(&star).await.expect("consume star");
    let mut hash_c = bus.consume(&hash).await.expect("consume hash");
    let mut source_c = bus.consume(&source).await.expect("consume source");

    let one_tag = format!("{src}.{tag}");
    let two_tags = format!("{src}.other.{tag}");
    let tag_not_last = format!("{src}.{tag}.other");
    let foreign = format!("{}.{tag}.x", unique());
    for key in [&one_tag, &two_tags, &tag_not_last] {
        bus.publish(key, format!("to {key}").as_bytes())
            .await
            .expect("publish");
    }
    assert!(
        matches!(
            bus.publish(&foreign, b"to nobody").await,
            Err(BusError::Unroutable { .. })
        ),
        "a key no binding matches is unroutable"
    );
    // Publishes from one task are delivered in order, so a fence routed to every queue
    // marks the end of what each queue received.
    bus.publish(&one_tag, b"fence")
        .await
        .expect("publish fence");

    assert_eq!(
        drain_until(&mut star_c, "fence").await,
        vec![format!("to {one_tag}")],
        "`*.tag` takes exactly one word before the tag"
    );
    assert_eq!(
        drain_until(&mut hash_c, "fence").await,
        vec![format!("to {one_tag}"), format!("to {two_tags}")],
        "`#.tag` takes any words before the tag, and the tag must be last"
    );
    assert_eq!(
        drain_until(&mut source_c, "fence").await,
        vec![
            format!("to {one_tag}"),
            format!("to {two_tags}"),
            format!("to {tag_not_last}")
        ],
        "`src.#` takes every key of that source"
    );
    bus.close().await;
    vec![star.name, hash.name, source.name]
}

/// A declared queue keeps what is published before anyone consumes it; a message
/// published before the declare matched no queue: it is dead-lettered with its reason,
/// not delivered.
pub(crate) async fn declared_queue_keeps_messages_until_consumed(bus: Arc<dyn Bus>) -> Vec<String> {
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "early"), format!("{src}.#"), 10);
    let key = format!("{src}.early");
    match bus.publish(&key, b"before declare").await {
        Err(BusError::Unroutable {
            routing_key,
            attempts,
        }) => {
            assert_eq!(routing_key, key);
            assert_eq!(attempts, 2, "one retry, as the options say");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    bus.declare(&spec).await.expect("declare");
    bus.declare(&spec).await.expect("declare is idempotent");
    bus.publish(&key, b"after declare").await.expect("publish");
    bus.publish(&key, b"fence").await.expect("publish");

    let mut consumer = bus.consume(&spec).await.expect("consume");
    let first = next(&mut consumer).await;
    assert_eq!(first.routing_key, key);
    assert!(!first.redelivered);
    assert_eq!(text(&first), "after declare");
    first.ack().await.expect("ack");
    assert!(drain_until(&mut consumer, "fence").await.is_empty());
    bus.close().await;
    vec![spec.name]
}

/// Two consumers on one queue share the work: each gets distinct messages and together
/// they get every message once.
pub(crate) async fn competing_consumers_get_distinct_messages(bus: Arc<dyn Bus>) -> Vec<String> {
    const COUNT: usize = 20;
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "shared"), format!("{src}.#"), 1);
    bus.declare(&spec).await.expect("declare");
    let mut a = bus.consume(&spec).await.expect("consume a");
    let mut b = bus.consume(&spec).await.expect("consume b");
    for i in 0..COUNT {
        bus.publish(&format!("{src}.work"), format!("{i}").as_bytes())
            .await
            .expect("publish");
    }

    // Each holds one delivery unacked: the other must be given a different message.
    let held_a = next(&mut a).await;
    let held_b = next(&mut b).await;
    assert_ne!(text(&held_a), text(&held_b));
    let mut all = vec![text(&held_a), text(&held_b)];
    held_a.ack().await.expect("ack");
    held_b.ack().await.expect("ack");

    let received = Arc::new(AtomicUsize::new(all.len()));
    let drain = |mut consumer: Box<dyn Consumer>, received: Arc<AtomicUsize>| async move {
        let mut bodies = Vec::new();
        let deadline = tokio::time::Instant::now() + MUST_ARRIVE;
        while received.load(Ordering::SeqCst) < COUNT && tokio::time::Instant::now() < deadline {
            if let Ok(Some(delivery)) =
                tokio::time::timeout(Duration::from_millis(100), consumer.next()).await
            {
                bodies.push(text(&delivery));
                delivery.ack().await.expect("ack");
                received.fetch_add(1, Ordering::SeqCst);
            }
        }
        bodies
    };
    let (from_a, from_b) = tokio::join!(drain(a, received.clone()), drain(b, received.clone()));
    all.extend(from_a);
    all.extend(from_b);
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        COUNT,
        "every message delivered exactly once: {all:?}"
    );
    assert_eq!(distinct.len(), COUNT, "no message delivered twice: {all:?}");
    bus.close().await;
    vec![spec.name]
}

/// A requeued delivery comes back flagged `redelivered`.
pub(crate) async fn requeue_redelivers_with_flag(bus: Arc<dyn Bus>) -> Vec<String> {
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "requeue"), format!("{src}.#"), 5);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    bus.publish(&format!("{src}.x"), b"again")
        .await
        .expect("publish");

    let first = next(&mut consumer).await;
    assert!(!first.redelivered);
    assert_eq!(text(&first), "again");
    first.requeue().await.expect("requeue");

    let second = next(&mut consumer).await;
    assert_eq!(text(&second), "again");
    assert_eq!(second.routing_key, format!("{src}.x"));
    assert!(
        second.redelivered,
        "a requeued delivery is flagged redelivered"
    );
    second.ack().await.expect("ack");
    assert_quiet(&mut consumer, "acked message came back").await;
    bus.close().await;
    vec![spec.name]
}

/// A delivery dropped without being settled is delivered again.
pub(crate) async fn dropped_delivery_is_redelivered(bus: Arc<dyn Bus>) -> Vec<String> {
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "drop"), format!("{src}.#"), 5);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    bus.publish(&format!("{src}.x"), b"dropped")
        .await
        .expect("publish");

    let first = next(&mut consumer).await;
    assert_eq!(text(&first), "dropped");
    drop(first);

    let second = next(&mut consumer).await;
    assert_eq!(text(&second), "dropped");
    assert!(second.redelivered);
    second.ack().await.expect("ack");

    // The same holds for a consumer that goes away holding a delivery.
    bus.publish(&format!("{src}.y"), b"orphaned")
        .await
        .expect("publish");
    let held = next(&mut consumer).await;
    assert_eq!(text(&held), "orphaned");
    drop(consumer);
    drop(held);
    let mut other = bus.consume(&spec).await.expect("consume again");
    let again = next(&mut other).await;
    assert_eq!(text(&again), "orphaned");
    assert!(again.redelivered);
    again.ack().await.expect("ack");
    bus.close().await;
    vec![spec.name]
}

/// `dead_letter` rejects the message: the broker moves it through the queue's
/// dead-letter exchange to `stargazer.dead` under its original key, with the broker's
/// headers naming the queue, and removes it from its queue. The bus counts it.
pub(crate) async fn dead_letter_moves_message_with_reason(bus: Arc<dyn Bus>) -> Vec<String> {
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "poison"), format!("{src}.#"), 5);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    let key = format!("{src}.live_check");
    let body = format!("{{\"poison\":\"{src}\"}}");
    bus.publish(&key, body.as_bytes()).await.expect("publish");

    let delivery = next(&mut consumer).await;
    assert_eq!(text(&delivery), body);
    delivery
        .dead_letter("bad json: expected value at line 1")
        .await
        .expect("dead_letter");
    assert_quiet(&mut consumer, "dead-lettered message stayed in its queue").await;

    let ours = dead_letter_with_body(&bus, &body).await;
    assert_eq!(ours.routing_key, key, "dead letters keep their key");
    assert_eq!(ours.header(FIRST_DEATH_REASON_HEADER), Some("rejected"));
    assert_eq!(
        ours.header(FIRST_DEATH_QUEUE_HEADER),
        Some(spec.name.as_str())
    );
    assert!(!ours.redelivered);
    ours.ack().await.expect("ack dead");
    assert_eq!(bus.metrics().dead_lettered(&spec.name, "rejected"), 1);
    bus.close().await;
    vec![spec.name]
}

/// A publish no queue takes is retried, then dead-lettered with its reason and original
/// key as headers, counted, and reported as [`BusError::Unroutable`]; once a queue is
/// bound, the same key is delivered normally.
pub(crate) async fn unroutable_publish_is_dead_lettered_with_reason(
    bus: Arc<dyn Bus>,
) -> Vec<String> {
    let src = unique();
    let key = format!("{src}.nobody");
    let body = format!("{{\"lost\":\"{src}\"}}");
    let published = bus.publish(&key, body.as_bytes()).await;
    assert!(
        matches!(published, Err(BusError::Unroutable { .. })),
        "{published:?}"
    );
    let ours = dead_letter_with_body(&bus, &body).await;
    let reason = ours.header(DEAD_REASON_HEADER).expect("reason header");
    assert!(
        reason.contains("unroutable") && reason.contains(&key),
        "{reason}"
    );
    assert_eq!(ours.header(DEAD_ROUTING_KEY_HEADER), Some(key.as_str()));
    ours.ack().await.expect("ack dead");
    assert_eq!(bus.metrics().dead_lettered("none", "unroutable"), 1);

    let spec = QueueSpec::new(queue_name(&src, "late"), format!("{src}.#"), 5);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    bus.publish(&key, b"now routed").await.expect("publish");
    let delivery = next(&mut consumer).await;
    assert_eq!(text(&delivery), "now routed");
    delivery.ack().await.expect("ack");
    bus.close().await;
    vec![spec.name]
}

/// A consumer never holds more unacked deliveries than its prefetch; acking frees room.
pub(crate) async fn prefetch_limits_unacked_deliveries(bus: Arc<dyn Bus>) -> Vec<String> {
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "window"), format!("{src}.#"), 2);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    for i in 0..4 {
        bus.publish(&format!("{src}.x"), format!("{i}").as_bytes())
            .await
            .expect("publish");
    }
    let first = next(&mut consumer).await;
    let second = next(&mut consumer).await;
    assert_quiet(&mut consumer, "a third delivery beyond prefetch 2").await;

    first.ack().await.expect("ack");
    let third = next(&mut consumer).await;
    assert_quiet(&mut consumer, "a delivery beyond prefetch 2 after one ack").await;
    second.ack().await.expect("ack");
    third.ack().await.expect("ack");
    let fourth = next(&mut consumer).await;
    fourth.ack().await.expect("ack");
    bus.close().await;
    vec![spec.name]
}

/// After `close`, waiting consumers end with `None` and further calls fail with `Closed`.
pub(crate) async fn close_ends_consumers(bus: Arc<dyn Bus>) -> Vec<String> {
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "close"), format!("{src}.#"), 5);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    let waiting = tokio::spawn(async move {
        let first = consumer.next().await.map(|d| text(&d));
        (first, consumer)
    });
    // Let the consumer start waiting before closing under it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.close().await;
    let (first, mut consumer) = tokio::time::timeout(MUST_ARRIVE, waiting)
        .await
        .expect("waiting consumer ends after close")
        .expect("consumer task");
    assert_eq!(first, None);
    assert!(consumer.next().await.is_none(), "next after close");
    assert!(matches!(
        bus.publish(&format!("{src}.x"), b"late").await,
        Err(BusError::Closed)
    ));
    assert!(matches!(bus.consume(&spec).await, Err(BusError::Closed)));
    assert!(matches!(bus.declare(&spec).await, Err(BusError::Closed)));
    vec![spec.name]
}

/// Many concurrent publishers are all confirmed and every message arrives once.
pub(crate) async fn concurrent_publishers_all_arrive(bus: Arc<dyn Bus>) -> Vec<String> {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "fanin"), format!("{src}.#"), 100);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    let mut publishers = Vec::new();
    for task in 0..TASKS {
        let bus = bus.clone();
        let key = format!("{src}.p{task}");
        publishers.push(tokio::spawn(async move {
            for i in 0..EACH {
                bus.publish(&key, format!("{task}-{i}").as_bytes())
                    .await
                    .expect("publish");
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }
    let mut seen = HashSet::new();
    while seen.len() < TASKS * EACH {
        let delivery = next(&mut consumer).await;
        assert!(seen.insert(text(&delivery)), "duplicate delivery");
        delivery.ack().await.expect("ack");
    }
    assert_quiet(&mut consumer, "more messages than published").await;
    bus.close().await;
    vec![spec.name]
}

/// Instantiates every contract test for the bus built by the async factory `$factory`
/// (a path to an `async fn() -> (Arc<dyn Bus>, Scope)`); after a passing test,
/// `$cleanup` (an `async fn(Scope)`) removes what it left.
macro_rules! bus_contract_tests {
    ($factory:path, $cleanup:path) => {
        bus_contract_tests!(@each $factory, $cleanup;
            routes_by_patterns_to_several_queues,
            declared_queue_keeps_messages_until_consumed,
            competing_consumers_get_distinct_messages,
            requeue_redelivers_with_flag,
            dropped_delivery_is_redelivered,
            dead_letter_moves_message_with_reason,
            unroutable_publish_is_dead_lettered_with_reason,
            prefetch_limits_unacked_deliveries,
            close_ends_consumers,
            concurrent_publishers_all_arrive,
        );
    };
    (@each $factory:path, $cleanup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (bus, scope) = $factory().await;
                bus_suite::$name(bus).await;
                $cleanup(scope).await;
            }
        )*
    };
}
