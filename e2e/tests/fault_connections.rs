//! Every broker connection is closed in the middle of 10,000 events
//! (`rabbitmqctl close_all_connections`), and every event still reaches every subscribed
//! chat exactly once.
//!
//! The events are published as a worker publishes them (confirmed, a window in flight),
//! half ready (`twitter`) and half tagged for translation (`twitter.translate`, through
//! middleware-translate and the DeepL test server); the bot fans them out to two chats.
//! The Telegram test server counts the messages per (event, chat). Publishes whose
//! confirm was lost are retried, and deliveries unacked when the connections dropped
//! come back redelivered, so duplicates do travel on the bus: what is asserted is that
//! none reaches a chat, and that nothing is missing or dead-lettered.
//!
//! The connections are closed for the test's own virtual host only, so tests of other
//! binaries running meanwhile keep theirs. The test lives in a binary of its own all the
//! same, because a broker-wide `close_all_connections` (as the original fault recipe did) would cut every
//! test running beside it.
//!
//! On the production pair (MongoDB-wire server + RabbitMQ), each service its own
//! `stargazer <role>` with its own connections. `E2E_FAULT_EVENTS` changes the count for a
//! quicker local run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stargazer_core::routing::DEAD_LETTER_QUEUE;
use stargazer_e2e::backends::{self, Pair};
use stargazer_e2e::events::{exactly_once, marker_in, publish_counting, tweet};
use stargazer_e2e::platform::Platform;
use stargazer_e2e::{unique, wait};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_every_broker_connection_mid_stream_loses_and_repeats_nothing() {
    let events: u64 = env_or("E2E_FAULT_EVENTS", 10_000);
    let platform = Platform::new(Pair::Production).await.unwrap();
    platform.start_api().await.unwrap();
    platform.start_translate().await.unwrap();
    platform.start_bot().await.unwrap();
    let entity = platform
        .new_entity(None, &[("en", "Tokoyami Towa")], &["en"], vec![])
        .await
        .unwrap();
    let chats = [6101, 6102];
    for chat in chats {
        platform.subscribe_chat(chat, entity.id).await.unwrap();
    }
    let total = events as usize * chats.len();

    let run = unique();
    let messages = (0..events)
        .map(|n| tweet(entity.id, n, &run, (n % 2 == 1).then_some("en")))
        .collect();
    let confirmed = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (bus, confirmed) = (platform.bus.clone(), confirmed.clone());
        tokio::spawn(async move { publish_counting(&bus, messages, 128, &confirmed).await })
    };

    // Mid-stream: the publisher is half-way and the bot is delivering.
    let tg = &platform.ext.telegram;
    wait::until(
        "half the events are published and delivery is under way",
        Duration::from_secs(120),
        || confirmed.load(Ordering::Relaxed) >= events / 2 && tg.sent_len() > 0,
    )
    .await;
    let vhost = platform
        .backends
        .vhost
        .as_ref()
        .map(|v| v.name.clone())
        .unwrap();
    tokio::task::spawn_blocking({
        let vhost = vhost.clone();
        move || backends::close_all_connections(&vhost, "test")
    })
    .await
    .unwrap()
    .unwrap();
    let sent_at_close = tg.sent_len();
    assert!(
        sent_at_close < total,
        "the connections were closed mid-stream"
    );

    publisher.await.unwrap().unwrap();
    // Slow on the MongoDB-wire test server (every delivery-log write costs tens of
    // milliseconds), so the bound is on progress, not on the total time.
    wait::until_count(
        "every (event, chat) message is sent",
        total,
        Duration::from_secs(90),
        || tg.sent_len(),
    )
    .await;
    // Redeliveries arriving late must not add anything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = tg.sent();
    exactly_once(&sent, 0..events, &chats).unwrap();
    for message in &sent {
        let n = marker_in(&message.text).unwrap();
        let translated = message.text.contains("[EN-US] ポスト");
        assert_eq!(translated, n % 2 == 1, "event {n}: {}", message.text);
    }
    let dead =
        tokio::task::spawn_blocking(move || backends::queue_depth(&vhost, DEAD_LETTER_QUEUE))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(dead.unwrap_or(0), 0, "nothing was dead-lettered");

    platform.shutdown().await.unwrap();
}
