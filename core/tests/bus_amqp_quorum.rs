//! Quorum queues on the RabbitMQ at `STARGAZER_TEST_AMQP_URL` (one node; a quorum queue
//! works on one node too), each test in a vhost of its own: the queues really are quorum
//! queues, the broker's delivery count caps attempts across two middleware instances, a
//! queue left with the other type is reported (and still consumed), and a URL list
//! skips a node that is down. The cluster fault test is `testkit/tests/bus_cluster.rs`.

mod broker;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use broker::TestVhost;
use chrono::Utc;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use prometheus::Registry;
use stargazer_core::bus::amqp::{self, AmqpBus};
use stargazer_core::bus::{Bus, BusOptions, Consumer, Delivery, QueueSpec};
use stargazer_core::middleware::{
    self, Incoming, Middleware, Outcome, RuntimeMetrics, RuntimeOptions, ATTEMPTS_EXHAUSTED,
};
use stargazer_core::model::Event;
use stargazer_core::topology::{self, QueueType, Topology, DEAD_LETTER_QUEUE};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `(name, type)` of every queue of `vhost`, as the broker lists them.
async fn queue_types(vhost: &str) -> Vec<(String, String)> {
    let vhost = vhost.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("rabbitmqctl")
            .args(["list_queues", "-p", &vhost, "-q", "--no-table-headers"])
            .args(["name", "type"])
            .output()
            .expect("run rabbitmqctl list_queues");
        assert!(output.status.success(), "{output:?}");
        let mut queues: Vec<(String, String)> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                Some((cols.next()?.to_owned(), cols.next()?.to_owned()))
            })
            .collect();
        queues.sort();
        queues
    })
    .await
    .expect("list queues")
}

fn quorum_options(queues: Vec<QueueSpec>) -> BusOptions {
    BusOptions {
        topology: Topology::new(queues).with_queue_type(QueueType::Quorum),
        ..BusOptions::default()
    }
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery within 20 s")
        .expect("bus open")
}

/// Always asks for another attempt, counting its calls.
struct AlwaysFailing {
    calls: AtomicU32,
}

#[async_trait]
impl Middleware for AlwaysFailing {
    async fn handle(&self, _message: Incoming) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Outcome::Retry("backend down".into())
    }
}

#[tokio::test]
async fn the_broker_counts_attempts_across_two_middleware_instances() {
    let vhost = TestVhost::create().await;
    let url = vhost.url();
    let runtime = RuntimeOptions {
        retry_delay: Duration::from_millis(20),
        delivery_attempts: 4,
        prefetch: 1,
        concurrency: 1,
        ..RuntimeOptions::new("qcount")
    };
    let spec = runtime.queue_spec();
    let options = quorum_options(vec![spec.clone()]);
    let failing = Arc::new(AlwaysFailing {
        calls: AtomicU32::new(0),
    });
    let shutdown = CancellationToken::new();
    let mut instances = Vec::new();
    for instance in 0..2 {
        let bus: Arc<dyn Bus> = Arc::new(
            AmqpBus::connect_named_with(&url, &format!("qcount-{instance}"), options.clone())
                .await
                .expect("connect"),
        );
        bus.declare(&spec).await.expect("declare");
        let metrics = RuntimeMetrics::register("qcount", &Registry::new());
        let task = tokio::spawn(middleware::run(
            failing.clone(),
            bus.clone(),
            runtime.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        instances.push((bus, metrics, task));
    }
    let observer = AmqpBus::connect_with(&url, options.clone())
        .await
        .expect("observer");
    let mut dead = observer
        .consume(&topology::dead_letter_queue(10))
        .await
        .expect("consume dead letters");
    let doomed = Event {
        id: Uuid::new_v4(),
        kind: "youtube.video".into(),
        entity: Uuid::new_v4(),
        time: Utc::now(),
        fields: Default::default(),
        control: Default::default(),
    };
    observer
        .publish("youtube.qcount", &doomed.to_bytes())
        .await
        .expect("publish");

    let got = next(&mut dead).await;
    assert_eq!(
        Event::from_bytes(&got.body).expect("an event").id,
        doomed.id
    );
    got.ack().await.expect("ack");
    // Nothing comes back to the instances once it is dead: the count is final.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        failing.calls.load(Ordering::SeqCst),
        4,
        "exactly delivery_attempts attempts in total over both instances"
    );
    shutdown.cancel();
    let mut retried = 0;
    let mut exhausted = 0;
    for (bus, metrics, task) in instances {
        task.await.expect("join").expect("runtime ends cleanly");
        retried += metrics.count("retried");
        exhausted += bus
            .metrics()
            .dead_lettered(&runtime.queue, ATTEMPTS_EXHAUSTED);
        bus.close().await;
    }
    assert_eq!(retried, 3);
    assert_eq!(exhausted, 1);
    observer.close().await;
    let types = queue_types(&vhost.name).await;
    assert!(
        types.iter().all(|(_, kind)| kind == "quorum"),
        "every queue is a quorum queue: {types:?}"
    );
    vhost.delete().await;
}

#[tokio::test]
async fn deliveries_of_a_quorum_queue_carry_the_broker_count() {
    let vhost = TestVhost::create().await;
    let spec = QueueSpec::new("stargazer.middleware.qhdr", "#.qhdr", 1);
    let bus = AmqpBus::connect_with(&vhost.url(), quorum_options(vec![spec.clone()]))
        .await
        .expect("connect");
    let mut consumer = bus.consume(&spec).await.expect("consume");
    bus.publish("youtube.qhdr", b"{}").await.expect("publish");
    let first = next(&mut consumer).await;
    assert_eq!(first.delivery_count, Some(0));
    first.requeue().await.expect("requeue");
    let second = next(&mut consumer).await;
    assert_eq!(second.delivery_count, Some(1));
    assert!(second.redelivered);
    second.ack().await.expect("ack");
    bus.close().await;
    vhost.delete().await;
}

#[tokio::test]
async fn setup_declares_quorum_queues_and_reports_a_classic_leftover() {
    let vhost = TestVhost::create().await;
    let url = vhost.url();
    let leftover = QueueSpec::new("stargazer.middleware.qold", "#.qold", 1);
    let fresh = QueueSpec::new("stargazer.middleware.qnew", "#.qnew", 1);
    // The leftover: declared by a classic deployment, with dead-lettering.
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let raw = Connection::connect(&url, properties).await.expect("raw");
    let channel = raw.create_channel().await.expect("channel");
    let mut arguments = FieldTable::default();
    arguments.insert(
        topology::DEAD_LETTER_ARGUMENT.into(),
        lapin::types::AMQPValue::LongString(topology::DEAD_LETTER_EXCHANGE.into()),
    );
    channel
        .queue_declare(
            &leftover.name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .expect("declare the classic leftover");
    raw.close(200, "done").await.expect("close");

    let topology =
        Topology::new(vec![leftover.clone(), fresh.clone()]).with_queue_type(QueueType::Quorum);
    let steps = amqp::setup(&url, &topology).await.expect("setup runs");
    let step = |queue: &str| {
        steps
            .iter()
            .find(|step| step.entity == format!("queue `{queue}`"))
            .unwrap_or_else(|| panic!("no step for {queue}: {steps:?}"))
            .clone()
    };
    assert_eq!(step(DEAD_LETTER_QUEUE).outcome, Ok(()));
    assert_eq!(step(&fresh.name).outcome, Ok(()));
    let problem = step(&leftover.name)
        .outcome
        .expect_err("the classic leftover is reported");
    assert!(problem.contains("amqp_queue_type"), "{problem}");
    assert!(problem.contains("delete"), "{problem}");
    let types = queue_types(&vhost.name).await;
    assert_eq!(
        types,
        [
            (DEAD_LETTER_QUEUE.to_owned(), "quorum".to_owned()),
            (fresh.name.clone(), "quorum".to_owned()),
            (leftover.name.clone(), "classic".to_owned()),
        ]
    );

    // A consumer configured for quorum still reads the leftover, and since that queue
    // counts nothing its deliveries say so (the runtime counts in memory then).
    let bus = AmqpBus::connect_with(&url, quorum_options(vec![leftover.clone()]))
        .await
        .expect("connect");
    let mut consumer = bus.consume(&leftover).await.expect("consume the leftover");
    bus.publish("youtube.qold", b"{}").await.expect("publish");
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.delivery_count, None);
    delivery.ack().await.expect("ack");
    bus.close().await;
    vhost.delete().await;
}

#[tokio::test]
async fn a_url_list_skips_a_node_that_is_down() {
    let vhost = TestVhost::create().await;
    let list = format!(
        "amqp://guest:secret@127.0.0.1:1/{}, {}",
        vhost.name,
        vhost.url()
    );
    let bus = AmqpBus::connect(&list).await.expect("the second URL works");
    assert_eq!(bus.connected_endpoint(), 1);
    bus.close().await;
    match AmqpBus::connect("amqp://guest:secret@127.0.0.1:1/x,amqp://guest:hunter2@127.0.0.1:2/x")
        .await
    {
        Err(err) => {
            let message = err.to_string();
            assert!(message.contains("127.0.0.1:1"), "{message}");
            assert!(message.contains("127.0.0.1:2"), "{message}");
            assert!(!message.contains("hunter2"), "password leaked: {message}");
        }
        Ok(_) => panic!("connected to closed ports"),
    }
    vhost.delete().await;
}
