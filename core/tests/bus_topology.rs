//! The broker topology on RabbitMQ (docs/ARCHITECTURE.md §4), each test in a vhost of its
//! own: what `stargazer admin broker setup` declares, that nothing unroutable is lost,
//! that a rejected delivery reaches `stargazer.dead` with `x-death`, that a credential
//! which may not configure anything works against an existing topology (and is told
//! precisely what is missing otherwise), and that a queue from a deployment without
//! dead-lettering is reported.

mod broker;

use std::sync::Arc;
use std::time::Duration;

use broker::{rabbitmqctl, TestVhost};
use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use stargazer_core::bus::amqp::{self, AmqpBus};
use stargazer_core::bus::{Bus, BusError, BusOptions};
use stargazer_core::model::Event;
use stargazer_core::outbox::{Outbox, OutboxMessage, Sent};
use stargazer_core::storage::sqlite::SqliteStorage;
use stargazer_core::storage::Storage;
use stargazer_core::topology::{self, Topology};

/// One quick retry of an unroutable message.
fn quick() -> BusOptions {
    BusOptions {
        unroutable_retries: 1,
        unroutable_delay: Duration::from_millis(20),
        ..BusOptions::default()
    }
}

async fn raw(url: &str) -> Connection {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, properties)
        .await
        .expect("raw connection")
}

/// Runs the setup and asserts every step succeeded.
async fn setup(vhost: &TestVhost) {
    let steps = amqp::setup(&vhost.url(), &Topology::standard())
        .await
        .expect("setup reaches the broker");
    assert_eq!(
        steps.len(),
        2 + 5,
        "two exchanges, the dead queue, four consumer queues"
    );
    for step in &steps {
        assert_eq!(step.outcome, Ok(()), "{}", step.entity);
    }
}

/// Takes the next message of `queue`, if any.
async fn get(connection: &Connection, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let channel = connection.create_channel().await.expect("channel");
    let got = channel
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .expect("basic_get");
    // Closed here, not on drop, so closing the connection never meets a closing channel.
    channel.close(200, "got").await.expect("close channel");
    got
}

fn string_header(properties: &lapin::BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

fn event() -> Event {
    Event {
        id: uuid::Uuid::new_v4(),
        kind: "youtube.video".into(),
        entity: uuid::Uuid::new_v4(),
        time: chrono::Utc::now(),
        fields: Default::default(),
        control: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_declares_the_topology_and_unroutable_messages_are_dead_lettered() {
    let vhost = TestVhost::create().await;
    setup(&vhost).await;
    // Idempotent.
    setup(&vhost).await;

    let connection = raw(&vhost.url()).await;
    // Equivalent redeclarations succeed, different ones are refused: the dead-letter
    // exchange is a durable topic exchange, consumer queues carry the argument.
    let channel = connection.create_channel().await.expect("channel");
    for name in [topology::EXCHANGE, topology::DEAD_LETTER_EXCHANGE] {
        channel
            .exchange_declare(
                name,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("a durable topic exchange");
    }
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from(topology::DEAD_LETTER_ARGUMENT),
        AMQPValue::LongString(LongString::from(topology::DEAD_LETTER_EXCHANGE)),
    );
    for queue in Topology::standard().queues {
        channel
            .queue_declare(
                &queue.name,
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments.clone(),
            )
            .await
            .expect("queue declared with the dead-letter argument");
    }
    let refused = channel
        .queue_declare(
            "stargazer.bot.telegram",
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(refused.is_err(), "the queue has the dead-letter argument");

    // Nothing consumes `#.nobody`: the publish is retried, then kept in stargazer.dead.
    let bus = AmqpBus::connect_with(&vhost.url(), quick())
        .await
        .expect("connect");
    let published = bus.publish("youtube.nobody", b"{\"lost\":false}").await;
    assert!(
        matches!(&published, Err(BusError::Unroutable { routing_key, attempts: 2 }) if routing_key == "youtube.nobody"),
        "{published:?}"
    );
    assert_eq!(bus.metrics().dead_lettered("none", "unroutable"), 1);
    let dead = get(&connection, topology::DEAD_LETTER_QUEUE)
        .await
        .expect("the unroutable message is in stargazer.dead");
    assert_eq!(dead.delivery.data, b"{\"lost\":false}");
    assert_eq!(dead.delivery.routing_key.as_str(), "youtube.nobody");
    let reason = string_header(&dead.delivery.properties, topology::DEAD_REASON_HEADER)
        .expect("reason header");
    assert!(reason.contains("unroutable"), "{reason}");
    assert_eq!(
        string_header(&dead.delivery.properties, topology::DEAD_ROUTING_KEY_HEADER).as_deref(),
        Some("youtube.nobody")
    );
    // A routed key is confirmed as before.
    bus.publish("youtube.delay", b"{}").await.expect("routed");
    assert!(get(&connection, "stargazer.middleware.delay")
        .await
        .is_some());
    bus.close().await;
    connection.close(200, "done").await.expect("close");
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_delivery_reaches_the_dead_queue_with_x_death() {
    let vhost = TestVhost::create().await;
    setup(&vhost).await;
    let bus: Arc<dyn Bus> = Arc::new(
        AmqpBus::connect_with(&vhost.url(), quick())
            .await
            .expect("connect"),
    );
    let mut consumer = bus
        .consume(&topology::bot_queue("telegram", 5))
        .await
        .expect("consume");
    bus.publish("youtube", b"{\"poison\":1}")
        .await
        .expect("publish");
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("delivered")
        .expect("open");
    delivery.dead_letter("cannot decode").await.expect("reject");
    assert_eq!(
        bus.metrics()
            .dead_lettered("stargazer.bot.telegram", "rejected"),
        1
    );

    let connection = raw(&vhost.url()).await;
    let dead = loop {
        // The broker moves it asynchronously.
        if let Some(dead) = get(&connection, topology::DEAD_LETTER_QUEUE).await {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.delivery.data, b"{\"poison\":1}");
    assert_eq!(dead.delivery.routing_key.as_str(), "youtube");
    let headers = dead.delivery.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("x-death missing: {headers:?}");
    };
    let AMQPValue::FieldTable(death) = &deaths.as_slice()[0] else {
        panic!("x-death entry is not a table");
    };
    let text = |key: &str| match death.inner().get(key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(text("queue"), "stargazer.bot.telegram");
    assert_eq!(text("reason"), "rejected");
    assert!(get(&connection, "stargazer.bot.telegram").await.is_none());
    bus.close().await;
    connection.close(200, "done").await.expect("close");
    vhost.delete().await;
}

/// A credential that may configure nothing: a precise error while the topology is
/// missing, and consuming, publishing and dead-lettering once it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_cannot_configure_works_on_an_existing_topology() {
    let vhost = TestVhost::create().await;
    let user = format!("sg-bus-{}", uuid::Uuid::new_v4().simple());
    let password = uuid::Uuid::new_v4().simple().to_string();
    {
        let (user, password, vhost) = (user.clone(), password.clone(), vhost.name.clone());
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_user", &user, &password]);
            rabbitmqctl(&[
                "set_permissions",
                "-p",
                &vhost,
                &user,
                "^$",
                "^stargazer$",
                "^stargazer\\.bot\\.telegram$",
            ]);
        })
        .await
        .expect("user setup");
    }
    let url = vhost.url_as(&user, &password);

    match AmqpBus::connect_with(&url, quick()).await {
        Err(BusError::TopologyMissing { entity, detail }) => {
            assert_eq!(entity, "exchange `stargazer`");
            assert!(detail.contains("ACCESS_REFUSED"), "{detail}");
        }
        Err(other) => panic!("expected TopologyMissing, got {other}"),
        Ok(_) => panic!("connected without a topology"),
    }
    let message = BusError::TopologyMissing {
        entity: "exchange `stargazer`".into(),
        detail: String::new(),
    }
    .to_string();
    assert!(message.contains(topology::SETUP_COMMAND), "{message}");

    setup(&vhost).await;
    let bus: Arc<dyn Bus> = Arc::new(
        AmqpBus::connect_with(&url, quick())
            .await
            .expect("passive declares succeed"),
    );
    let mut consumer = bus
        .consume(&topology::bot_queue("telegram", 5))
        .await
        .expect("consume its own existing queue");
    bus.publish("twitter", b"{\"n\":1}")
        .await
        .expect("publish to the exchange");
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("delivered")
        .expect("open");
    assert_eq!(delivery.body, b"{\"n\":1}");
    delivery
        .dead_letter("no write access needed")
        .await
        .expect("reject");
    let connection = raw(&vhost.url()).await;
    let dead = loop {
        if let Some(dead) = get(&connection, topology::DEAD_LETTER_QUEUE).await {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.delivery.data, b"{\"n\":1}");
    bus.close().await;
    connection.close(200, "done").await.expect("close");
    tokio::task::spawn_blocking(move || rabbitmqctl(&["delete_user", &user]))
        .await
        .expect("user cleanup");
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_dead_lettering_is_reported_by_setup() {
    let vhost = TestVhost::create().await;
    let connection = raw(&vhost.url()).await;
    let channel = connection.create_channel().await.expect("channel");
    // As an older deployment declared it.
    channel
        .queue_declare(
            "stargazer.middleware.delay",
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("old queue");
    let steps = amqp::setup(&vhost.url(), &Topology::standard())
        .await
        .expect("setup reaches the broker");
    for step in &steps {
        if step.entity == "queue `stargazer.middleware.delay`" {
            let problem = step.outcome.clone().expect_err("reported");
            assert!(problem.contains("x-dead-letter-exchange"), "{problem}");
            assert!(problem.contains("drained and deleted"), "{problem}");
        } else {
            assert_eq!(step.outcome, Ok(()), "{}", step.entity);
        }
    }
    // Services still consume it (and log the problem).
    let bus = AmqpBus::connect_with(&vhost.url(), quick())
        .await
        .expect("connect");
    let consumer = bus.consume(&topology::middleware_queue("delay", 5)).await;
    assert!(consumer.is_ok(), "an old queue is still consumed");
    drop(consumer);
    bus.close().await;
    connection.close(200, "done").await.expect("close");
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_an_entry_until_a_routed_confirm() {
    let vhost = TestVhost::create().await;
    setup(&vhost).await;
    let storage: Arc<dyn Storage> = Arc::new(
        SqliteStorage::open_in_memory()
            .await
            .expect("sqlite in memory"),
    );
    let bus: Arc<dyn Bus> = Arc::new(
        AmqpBus::connect_with(&vhost.url(), quick())
            .await
            .expect("connect"),
    );
    let outbox = Outbox::new(storage.clone(), bus.clone(), "o", "s");
    let unrouted = OutboxMessage {
        routing_key: "youtube.nobody".into(),
        event: event(),
    };
    let sent = outbox
        .publish_once("first", &[unrouted])
        .await
        .expect("storage")
        .expect("claimed");
    assert!(
        matches!(sent[0], Sent::Deferred(BusError::Unroutable { .. })),
        "{sent:?}"
    );
    assert_eq!(
        storage.kv_list("o").await.expect("list").len(),
        1,
        "kept until a routed confirm"
    );
    let routed = OutboxMessage {
        routing_key: "youtube".into(),
        event: event(),
    };
    let sent = outbox
        .publish_once("second", &[routed])
        .await
        .expect("storage")
        .expect("claimed");
    assert!(matches!(sent[0], Sent::Published), "{sent:?}");
    assert_eq!(storage.kv_list("o").await.expect("list").len(), 1);
    bus.close().await;
    vhost.delete().await;
}
