//! The bus contract suite against RabbitMQ ([`AmqpBus`]) at `STARGAZER_TEST_AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`), each test in a vhost of its own,
//! plus what only the broker shows: message properties, durability, refused declarations
//! and broker-side consumer cancellation.

mod broker;
#[macro_use]
mod bus_suite;

use std::sync::Arc;

use broker::TestVhost;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::{self, Bus, BusError, QueueSpec};

use bus_suite::{next, queue_name, unique};

/// A bus with the suite's options on `vhost`.
async fn bus_on(vhost: &TestVhost) -> Arc<dyn Bus> {
    let name = format!("stargazer-test-{}", unique());
    Arc::new(
        AmqpBus::connect_named_with(&vhost.url(), &name, bus_suite::test_options())
            .await
            .expect("connect to RabbitMQ"),
    )
}

async fn amqp_bus() -> (Arc<dyn Bus>, TestVhost) {
    let vhost = TestVhost::create().await;
    (bus_on(&vhost).await, vhost)
}

/// A plain lapin connection for looking at the broker from outside the bus.
async fn raw_connection(url: &str) -> Connection {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, properties)
        .await
        .expect("raw connection")
}

bus_contract_tests!(amqp_bus, TestVhost::delete);

#[tokio::test]
async fn bad_urls_and_unreachable_brokers_fail_precisely() {
    assert!(matches!(
        AmqpBus::connect("amqp://guest:guest@127.0.0.1:notaport/").await,
        Err(BusError::InvalidUrl(_))
    ));
    match AmqpBus::connect("amqp://guest:secret@127.0.0.1:1/%2f").await {
        Err(BusError::Broker(message)) => {
            assert!(message.contains("127.0.0.1:1"), "{message}");
            assert!(!message.contains("secret"), "password leaked: {message}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    let vhost = TestVhost::create().await;
    let bus = bus::connect(&vhost.url()).await.expect("amqp url");
    bus.close().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_persistent_json_in_durable_queues() {
    let (bus, vhost) = amqp_bus().await;
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "props"), format!("{src}.#"), 5);
    bus.declare(&spec).await.expect("declare");
    bus.publish(&format!("{src}.x"), br#"{"id":1}"#)
        .await
        .expect("publish");

    let raw = raw_connection(&vhost.url()).await;
    let channel = raw.create_channel().await.expect("channel");
    let got = channel
        .basic_get(&spec.name, BasicGetOptions { no_ack: true })
        .await
        .expect("basic_get")
        .expect("a message waits in the declared queue");
    assert_eq!(got.delivery.exchange.as_str(), "stargazer");
    assert_eq!(got.delivery.data, br#"{"id":1}"#);
    assert_eq!(*got.delivery.properties.delivery_mode(), Some(2));
    assert_eq!(
        got.delivery
            .properties
            .content_type()
            .as_ref()
            .map(|t| t.as_str()),
        Some("application/json")
    );

    // Redeclaring as non-durable is refused only because the queue is durable.
    let refused = channel
        .queue_declare(
            &spec.name,
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(refused.is_err(), "queue must be durable");
    let channel = raw.create_channel().await.expect("channel");
    let refused = channel
        .exchange_declare(
            "stargazer",
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(refused.is_err(), "exchange must be durable");
    let channel = raw.create_channel().await.expect("channel");
    channel
        .queue_delete(&spec.name, QueueDeleteOptions::default())
        .await
        .expect("cleanup");
    raw.close(200, "done").await.expect("close raw");
    bus.close().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_declaration_fails_instead_of_retrying() {
    let (bus, vhost) = amqp_bus().await;
    let src = unique();
    let name = queue_name(&src, "transient");
    let raw = raw_connection(&vhost.url()).await;
    let channel = raw.create_channel().await.expect("channel");
    channel
        .queue_declare(
            &name,
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("non-durable queue");
    let spec = QueueSpec::new(name.clone(), format!("{src}.#"), 5);
    let declared = tokio::time::timeout(bus_suite::MUST_ARRIVE, bus.declare(&spec))
        .await
        .expect("a refused declare returns instead of retrying");
    assert!(matches!(declared, Err(BusError::Broker(_))), "{declared:?}");
    let consumed = tokio::time::timeout(bus_suite::MUST_ARRIVE, bus.consume(&spec))
        .await
        .expect("a refused consume returns instead of retrying");
    assert!(matches!(consumed, Err(BusError::Broker(_))));

    // The bus is still usable after the broker refused one of its channels.
    let ok = QueueSpec::new(queue_name(&src, "fine"), format!("{src}.#"), 5);
    bus.declare(&ok).await.expect("declare after a refusal");
    bus.publish(&format!("{src}.x"), b"still works")
        .await
        .expect("publish after a refusal");
    raw.close(200, "done").await.expect("close raw");
    bus.close().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_recovers_when_its_queue_is_deleted() {
    let (bus, vhost) = amqp_bus().await;
    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "deleted"), format!("{src}.#"), 5);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    bus.publish(&format!("{src}.x"), b"one")
        .await
        .expect("publish");
    let first = next(&mut consumer).await;
    first.ack().await.expect("ack");

    // Deleting the queue makes the broker cancel the consumer; the bus re-declares the
    // queue (with its binding) and consumes again behind the same Consumer.
    let raw = raw_connection(&vhost.url()).await;
    let channel = raw.create_channel().await.expect("channel");
    channel
        .queue_delete(&spec.name, QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    let waiting = tokio::spawn(async move {
        let delivery = next(&mut consumer).await;
        let body = delivery.body.clone();
        delivery.ack().await.expect("ack after re-consume");
        body
    });
    // Keep publishing until the re-declared queue catches one: messages sent while the
    // queue does not exist are unroutable (and dead-lettered).
    let key = format!("{src}.x");
    let body = loop {
        match bus.publish(&key, b"two").await {
            Ok(()) | Err(BusError::Unroutable { .. }) => {}
            Err(other) => panic!("publish: {other}"),
        }
        if waiting.is_finished() {
            break waiting.await.expect("consumer task");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(body, b"two");
    raw.close(200, "done").await.expect("close raw");
    bus.close().await;
    vhost.delete().await;
}

/// The bus proposes small frames (the broker's 128 KiB default would make lapin pin 8 MiB
/// of buffers per connection), an explicit `?frame_max=` in the URL still wins, and a
/// body much larger than a frame crosses the broker intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_frames_by_default_and_large_bodies_still_pass() {
    let small_name = format!("stargazer-test-{}", unique());
    let large_name = format!("stargazer-test-{}", unique());
    let vhost = TestVhost::create().await;
    let base = vhost.url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let small = AmqpBus::connect_named(&base, &small_name)
        .await
        .expect("connect with the default frame size");
    let large = AmqpBus::connect_named(&format!("{base}{separator}frame_max=65536"), &large_name)
        .await
        .expect("connect with frame_max in the URL");

    let names = [small_name.clone(), large_name.clone()];
    let reported =
        tokio::task::spawn_blocking(move || broker::connections_named("frame_max", &names))
            .await
            .expect("rabbitmqctl task");
    let mut expected = vec![
        (
            small_name.clone(),
            stargazer_core::bus::amqp::DEFAULT_FRAME_MAX.to_string(),
        ),
        (large_name.clone(), "65536".to_owned()),
    ];
    expected.sort();
    assert_eq!(reported, expected);

    let src = unique();
    let spec = QueueSpec::new(queue_name(&src, "large"), format!("{src}.#"), 5);
    small.declare(&spec).await.expect("declare");
    let mut consumer = small.consume(&spec).await.expect("consume");
    // More than eight 16 KiB frames of JSON, with content that would show a reordered or
    // lost frame.
    let body = serde_json::to_vec(&(0..40_000).collect::<Vec<u32>>()).expect("json");
    assert!(body.len() > 8 * stargazer_core::bus::amqp::DEFAULT_FRAME_MAX as usize);
    large
        .publish(&format!("{src}.big"), &body)
        .await
        .expect("publish through the large-frame connection");
    small
        .publish(&format!("{src}.big"), &body)
        .await
        .expect("publish through the small-frame connection");
    for _ in 0..2 {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.body.len(), body.len());
        assert!(delivery.body == body, "body changed on the way");
        delivery.ack().await.expect("ack");
    }
    drop(consumer);
    small.close().await;
    large.close().await;
    vhost.delete().await;
}
