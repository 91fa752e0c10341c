//! Bus throughput: publish (confirmed, several concurrent publishers) → consume (prefetch,
//! ack each) of N ~300-byte events, through [`AmqpBus`] and through raw `lapin` doing the
//! same work in the same run (same broker, confirms, persistence, prefetch, acks and
//! concurrency), plus the in-process bus for reference.
//!
//! `cargo bench -p stargazer-core --bench bus_throughput`
//!
//! Environment: `BENCH_EVENTS` (default 20000), `BENCH_PUBLISHERS` (16), `BENCH_PREFETCH`
//! (200), `BENCH_ROUNDS` (5; the median round is reported), `STARGAZER_TEST_AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, QueueSpec};

struct Settings {
    url: String,
    events: usize,
    publishers: usize,
    prefetch: u16,
    rounds: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| {
            eprintln!("ignoring unparsable {name}={value}");
            default
        }),
        Err(_) => default,
    }
}

/// A ~300-byte event body shaped like the real ones.
fn event_body(i: usize) -> Vec<u8> {
    let mut body = format!(
        "{{\"id\":\"{}\",\"kind\":\"youtube.live\",\"entity\":\"{}\",\"time\":\"2024-05-01T12:00:00Z\",\
         \"fields\":{{\"video_id\":\"v{i:010}\",\"title\":\"",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    );
    while body.len() < 296 {
        body.push('x');
    }
    body.push_str("\"}}");
    body.into_bytes()
}

fn unique() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

fn connection_properties() -> ConnectionProperties {
    ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
}

/// Splits `events` indexes among `publishers` tasks.
fn shares(events: usize, publishers: usize) -> Vec<std::ops::Range<usize>> {
    let per = events.div_ceil(publishers);
    (0..publishers)
        .map(|p| (p * per).min(events)..((p + 1) * per).min(events))
        .collect()
}

/// One round through a [`Bus`]: consume concurrently with publishing; the clock runs from
/// the first publish to the last ack. Returns events/s and the queue it declared.
async fn through_bus(
    bus: Arc<dyn Bus>,
    settings: &Settings,
    bodies: Arc<Vec<Vec<u8>>>,
) -> (f64, String) {
    let word = unique();
    let spec = QueueSpec::new(
        format!("stargazer.bench.{word}"),
        format!("{word}.#"),
        settings.prefetch,
    );
    bus.declare(&spec).await.expect("declare");
    let mut consumer = bus.consume(&spec).await.expect("consume");
    let events = settings.events;
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        for _ in 0..events {
            let delivery = consumer.next().await.expect("delivery");
            delivery.ack().await.expect("ack");
        }
    });
    let mut publishing = Vec::new();
    for range in shares(events, settings.publishers) {
        let bus = bus.clone();
        let bodies = bodies.clone();
        let key = format!("{word}.bench");
        publishing.push(tokio::spawn(async move {
            for i in range {
                bus.publish(&key, &bodies[i]).await.expect("publish");
            }
        }));
    }
    for task in publishing {
        task.await.expect("publisher");
    }
    consuming.await.expect("consumer");
    let elapsed = started.elapsed();
    bus.close().await;
    (events as f64 / elapsed.as_secs_f64(), spec.name)
}

/// One round through raw lapin, doing what [`AmqpBus`] does: one connection, a durable
/// queue bound on the durable topic exchange, one shared confirm channel on which each
/// publisher awaits its own confirm, persistent JSON messages, one consumer channel with
/// the same prefetch acking each delivery.
async fn through_lapin(settings: &Settings, bodies: Arc<Vec<Vec<u8>>>) -> f64 {
    let word = unique();
    let queue = format!("stargazer.bench.{word}");
    let connection = Connection::connect(&settings.url, connection_properties())
        .await
        .expect("connect");
    let setup = connection.create_channel().await.expect("channel");
    setup
        .exchange_declare(
            "stargazer",
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    setup
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    setup
        .queue_bind(
            &queue,
            "stargazer",
            &format!("{word}.#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");

    let consume_channel = connection.create_channel().await.expect("channel");
    consume_channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut stream = consume_channel
        .basic_consume(
            &queue,
            &format!("bench-{word}"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let publish_channel = connection.create_channel().await.expect("channel");
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm_select");

    let events = settings.events;
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        for _ in 0..events {
            let delivery = stream.next().await.expect("delivery").expect("delivery ok");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
    });
    let mut publishing = Vec::new();
    for range in shares(events, settings.publishers) {
        let channel = publish_channel.clone();
        let bodies = bodies.clone();
        let key = format!("{word}.bench");
        publishing.push(tokio::spawn(async move {
            for i in range {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into());
                let confirmation = channel
                    .basic_publish(
                        "stargazer",
                        &key,
                        BasicPublishOptions::default(),
                        &bodies[i],
                        properties,
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
                assert!(confirmation.is_ack());
            }
        }));
    }
    for task in publishing {
        task.await.expect("publisher");
    }
    consuming.await.expect("consumer");
    let elapsed = started.elapsed();
    setup
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    connection.close(200, "bench done").await.expect("close");
    events as f64 / elapsed.as_secs_f64()
}

/// Deletes the queue a bus round left behind.
async fn delete_bench_queues(url: &str, names: Vec<String>) {
    let connection = Connection::connect(url, connection_properties())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    for name in names {
        channel
            .queue_delete(&name, QueueDeleteOptions::default())
            .await
            .expect("delete queue");
    }
    connection.close(200, "bench done").await.expect("close");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

async fn run(settings: Settings) {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..settings.events).map(event_body).collect());
    println!(
        "bus_throughput: {} events of {} bytes, {} concurrent publishers (confirmed, persistent), \
         1 consumer (prefetch {}, ack each), {} rounds",
        settings.events,
        bodies[0].len(),
        settings.publishers,
        settings.prefetch,
        settings.rounds
    );

    let mut raw = Vec::new();
    let mut ours = Vec::new();
    for round in 1..=settings.rounds {
        let r = through_lapin(&settings, bodies.clone()).await;
        let bus = AmqpBus::connect_named(&settings.url, "stargazer-bench")
            .await
            .expect("connect AmqpBus");
        let (o, queue) = through_bus(Arc::new(bus), &settings, bodies.clone()).await;
        delete_bench_queues(&settings.url, vec![queue]).await;
        println!("  round {round}: raw lapin {r:>9.0} events/s   AmqpBus {o:>9.0} events/s");
        raw.push(r);
        ours.push(o);
    }
    let memory = median({
        let mut runs = Vec::new();
        for _ in 0..settings.rounds {
            let (rate, _) =
                through_bus(Arc::new(MemoryBus::new()), &settings, bodies.clone()).await;
            runs.push(rate);
        }
        runs
    });
    let (raw, ours) = (median(raw), median(ours));
    println!("raw lapin (baseline): {raw:>10.0} events/s");
    println!("AmqpBus:              {ours:>10.0} events/s");
    println!("ratio AmqpBus / raw:  {:>10.2} (goal >= 0.90)", ours / raw);
    println!("MemoryBus:            {memory:>10.0} events/s");
}

fn main() {
    let settings = Settings {
        url: std::env::var("STARGAZER_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
        events: env_or("BENCH_EVENTS", 20_000),
        publishers: env_or("BENCH_PUBLISHERS", 16).max(1),
        prefetch: env_or("BENCH_PREFETCH", 200),
        rounds: env_or("BENCH_ROUNDS", 5).max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(settings));
}
