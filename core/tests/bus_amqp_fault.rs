//! Fault tests of [`AmqpBus`]: the broker force-closes the bus's connections mid-stream
//! (`rabbitmqctl close_connection … "test"`) and nothing the bus reported as published may
//! be lost.
//!
//! Only this test's own connections are closed, picked by their client-provided
//! connection name: `rabbitmqctl close_all_connections` would also cut every other program
//! using the same broker on this machine. A separate test binary, so the contract suite
//! does not share its timing.

mod broker;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::{Bus, QueueSpec};

/// Shows the bus's reconnect logs with `--nocapture` (level from `RUST_LOG`, default
/// `warn`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn amqp_url() -> String {
    std::env::var("STARGAZER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn unique() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// Force-closes every broker connection whose client-provided name is one of `names`;
/// returns how many it closed.
async fn kill_connections(names: &[String]) -> usize {
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || {
        let ours = broker::connections_named("pid", &names);
        for (_, pid) in &ours {
            let status = Command::new("rabbitmqctl")
                .args(["close_connection", pid, "test"])
                .output()
                .expect("run rabbitmqctl close_connection");
            assert!(status.status.success(), "{status:?}");
        }
        ours.len()
    })
    .await
    .expect("rabbitmqctl task")
}

/// Polls `condition` every 20 ms until it holds, failing the test after `limit`.
async fn wait_for(what: &str, limit: Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delete_queue(name: &str) {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let raw = Connection::connect(&amqp_url(), properties)
        .await
        .expect("raw connection");
    let channel = raw.create_channel().await.expect("channel");
    channel
        .queue_delete(name, QueueDeleteOptions::default())
        .await
        .expect("delete test queue");
    raw.close(200, "done").await.expect("close raw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_confirmed_is_lost_when_connections_are_cut() {
    const PUBLISHERS: usize = 4;
    const KILLS: usize = 3;
    const CONFIRMED_BETWEEN_KILLS: usize = 300;
    const LIMIT: Duration = Duration::from_secs(60);
    init_logs();

    let word = unique();
    let pub_name = format!("stargazer-fault-pub-{word}");
    let con_name = format!("stargazer-fault-con-{word}");
    let publisher_bus = Arc::new(
        AmqpBus::connect_named(&amqp_url(), &pub_name)
            .await
            .expect("connect publisher"),
    );
    let consumer_bus = Arc::new(
        AmqpBus::connect_named(&amqp_url(), &con_name)
            .await
            .expect("connect consumer"),
    );
    let spec = QueueSpec::new(
        format!("stargazer.test.{word}.fault"),
        format!("{word}.#"),
        50,
    );
    consumer_bus.declare(&spec).await.expect("declare");

    let received = Arc::new(Mutex::new(BTreeSet::<u64>::new()));
    let failed_acks = Arc::new(AtomicU64::new(0));
    let mut consumer = consumer_bus.consume(&spec).await.expect("consume");
    let consuming = tokio::spawn({
        let received = received.clone();
        let failed_acks = failed_acks.clone();
        async move {
            while let Some(delivery) = consumer.next().await {
                let number: u64 = std::str::from_utf8(&delivery.body)
                    .expect("utf-8 body")
                    .parse()
                    .expect("numbered body");
                received.lock().unwrap().insert(number);
                // An ack on a channel that died fails; the broker redelivers the message.
                if delivery.ack().await.is_err() {
                    failed_acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });

    let confirmed = Arc::new(Mutex::new(BTreeSet::<u64>::new()));
    let next_number = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let bus = publisher_bus.clone();
        let confirmed = confirmed.clone();
        let next_number = next_number.clone();
        let stop = stop.clone();
        let key = format!("{word}.fault");
        publishers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let number = next_number.fetch_add(1, Ordering::SeqCst);
                bus.publish(&key, number.to_string().as_bytes())
                    .await
                    .expect("publish is retried until confirmed");
                confirmed.lock().unwrap().insert(number);
            }
        }));
    }

    let confirmed_count = || confirmed.lock().unwrap().len();
    for kill in 1..=KILLS {
        let target = kill * CONFIRMED_BETWEEN_KILLS;
        wait_for("publishing to make progress", LIMIT, || {
            confirmed_count() >= target
        })
        .await;
        let closed = kill_connections(&[pub_name.clone(), con_name.clone()]).await;
        assert_eq!(closed, 2, "both bus connections found by name and closed");
        let expected = 1 + kill as u64;
        wait_for("both buses to reconnect", LIMIT, || {
            publisher_bus.connections_opened() >= expected
                && consumer_bus.connections_opened() >= expected
        })
        .await;
    }
    // Keep publishing after the last cut to show the publisher recovered.
    let target = (KILLS + 1) * CONFIRMED_BETWEEN_KILLS;
    wait_for("publishing after the last cut", LIMIT, || {
        confirmed_count() >= target
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }

    let missing = || {
        let received = received.lock().unwrap();
        confirmed
            .lock()
            .unwrap()
            .iter()
            .filter(|n| !received.contains(n))
            .count()
    };
    wait_for("every confirmed message to be received", LIMIT, || {
        missing() == 0
    })
    .await;
    assert!(publisher_bus.is_connected() && consumer_bus.is_connected());
    println!(
        "confirmed {}, received {}, failed acks {}, connections opened {} / {}",
        confirmed_count(),
        received.lock().unwrap().len(),
        failed_acks.load(Ordering::Relaxed),
        publisher_bus.connections_opened(),
        consumer_bus.connections_opened(),
    );

    consumer_bus.close().await;
    consuming.await.expect("consumer task ends after close");
    publisher_bus.close().await;
    delete_queue(&spec.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_from_a_dead_channel_fails_to_ack_and_comes_back() {
    init_logs();
    let word = unique();
    let name = format!("stargazer-fault-ack-{word}");
    let bus = AmqpBus::connect_named(&amqp_url(), &name)
        .await
        .expect("connect");
    let spec = QueueSpec::new(format!("stargazer.test.{word}.ack"), format!("{word}.#"), 1);
    let mut consumer = bus.consume(&spec).await.expect("consume");
    bus.publish(&format!("{word}.x"), b"held")
        .await
        .expect("publish");
    let held = tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .expect("delivery in time")
        .expect("delivery");
    assert!(!held.redelivered);

    assert_eq!(kill_connections(std::slice::from_ref(&name)).await, 1);
    wait_for("the bus to reconnect", Duration::from_secs(30), || {
        bus.connections_opened() >= 2
    })
    .await;
    assert!(held.ack().await.is_err(), "ack on a dead channel must fail");

    let again = tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .expect("redelivery in time")
        .expect("redelivery");
    assert_eq!(again.body, b"held");
    assert!(again.redelivered);
    again.ack().await.expect("ack on the new channel");

    // Publishing works on the new connection too.
    bus.publish(&format!("{word}.x"), b"after")
        .await
        .expect("publish");
    let after = tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .expect("delivery in time")
        .expect("delivery");
    assert_eq!(after.body, b"after");
    after.ack().await.expect("ack");
    bus.close().await;
    delete_queue(&spec.name).await;
}
