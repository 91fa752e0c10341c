//! Several bot instances on one delivery log (docs/ARCHITECTURE.md §5, bot-telegram):
//! real RabbitMQ, the real api, the Telegram protocol test server, and the delivery log on
//! SQLite and on the MongoDB-wire server.
//!
//! Each instance consumes a queue of its own bound to `*`, so every event reaches both at
//! once — the worst case of a redelivery racing the first delivery on another instance.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use stargazer_core::model::{DeliveryClaim, DeliveryRecord};
use stargazer_core::storage::Storage;
use stargazer_testkit::backends::TestDatabase;
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

async fn subscribe_chats(platform: &Platform, entity: Uuid, chats: &[i64]) {
    for chat in chats {
        platform.subscribed_chat(*chat, "en", entity).await;
    }
}

/// How many messages containing `needle` each chat got.
fn count_by_chat(tg: &TelegramServer, needle: &str) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for sent in tg.sent() {
        if sent.text.contains(needle) {
            *counts.entry(sent.chat_id).or_default() += 1;
        }
    }
    counts
}

/// The delivery log the bots share: the platform's SQLite storage, or a fresh database on
/// the MongoDB-wire server (kept alive by the returned guard).
async fn delivery_log(
    platform: &Platform,
    mongo: bool,
) -> (Arc<dyn Storage>, Option<TestDatabase>) {
    if mongo {
        let db = TestDatabase::new();
        let storage = stargazer_core::storage::connect(&db.url()).await.unwrap();
        (storage, Some(db))
    } else {
        (platform.storage.clone(), None)
    }
}

/// Two instances receive every event at once: each chat gets each event exactly once.
async fn two_instances_send_each_message_once(mongo: bool) {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Shirakami Fubuki")]).await;
    let chats: Vec<i64> = (7101..=7112).collect();
    subscribe_chats(&platform, entity, &chats).await;
    let tg = TelegramServer::start("123:twice").await.unwrap();
    let bus = rabbit().await;
    let (log, _db) = delivery_log(&platform, mongo).await;
    let (first_queue, second_queue) = (
        TestQueue::declare(&bus).await,
        TestQueue::declare(&bus).await,
    );
    let config = |queue: &str| {
        let mut config = platform.bot_config(&tg, queue);
        config.claim_lease_seconds = 5;
        config
    };
    let first = RunningBot::start(config(&first_queue.name), log.clone(), bus.clone());
    let second = RunningBot::start(config(&second_queue.name), log.clone(), bus.clone());

    let titles: Vec<String> = (0..5).map(|n| format!("twin stream {n}")).collect();
    for title in &titles {
        publish(&bus, &live(entity, title)).await;
    }
    eventually("every chat got every event", T, || {
        titles
            .iter()
            .all(|t| count_by_chat(&tg, t).len() == chats.len())
    })
    .await;
    // A sentinel after them: once it is everywhere, both instances are past the events.
    publish(&bus, &live(entity, "twin sentinel")).await;
    eventually("the sentinel reached every chat", T, || {
        count_by_chat(&tg, "twin sentinel").len() == chats.len()
    })
    .await;
    for title in &titles {
        let counts = count_by_chat(&tg, title);
        for chat in &chats {
            assert_eq!(
                counts.get(chat),
                Some(&1),
                "{title}, chat {chat}: {counts:?}"
            );
        }
    }
    assert_eq!(tg.sent().len(), (titles.len() + 1) * chats.len());
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_send_each_message_once_on_sqlite() {
    two_instances_send_each_message_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_send_each_message_once_on_mongodb() {
    two_instances_send_each_message_once(true).await;
}

/// An instance died mid fan-out: it had sent and recorded one chat and claimed others
/// without sending. Another instance sends at once to the chats nobody claimed, to the
/// dead one's claimed chats only once its lease has ended, and never to the chat it
/// recorded.
async fn a_dead_instances_claims_are_taken_over_after_their_lease(mongo: bool) {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Ookami Mio")]).await;
    let (recorded, claimed, free) = (
        vec![7201_i64],
        vec![7202_i64, 7203, 7204],
        vec![7205_i64, 7206],
    );
    let all: Vec<i64> = [&recorded[..], &claimed[..], &free[..]].concat();
    subscribe_chats(&platform, entity, &all).await;
    let tg = TelegramServer::start("123:takeover").await.unwrap();
    let bus = rabbit().await;
    let (log, _db) = delivery_log(&platform, mongo).await;
    let queue = TestQueue::declare(&bus).await;

    let stream = live(entity, "orphaned stream");
    // What the dead instance left: a sent record and claims leased for a few seconds.
    let lease = Duration::from_secs(4);
    let now = Utc::now();
    let claim = DeliveryClaim {
        event: stream.id,
        im: "telegram".into(),
        owner: "dead-instance".into(),
        now,
        lease_until: now + chrono::Duration::from_std(lease).unwrap(),
    };
    let claimed_ids: Vec<String> = claimed.iter().map(i64::to_string).collect();
    log.claim_deliveries(&claim, &claimed_ids).await.unwrap();
    log.record_delivery(&DeliveryRecord {
        event: stream.id,
        im: "telegram".into(),
        chat_id: recorded[0].to_string(),
        status: "sent".into(),
        at: now,
    })
    .await
    .unwrap();
    let lease_ends = tokio::time::Instant::now() + lease;

    let mut config = platform.bot_config(&tg, &queue.name);
    config.claim_lease_seconds = 5;
    let bot = RunningBot::start(config, log.clone(), bus.clone());
    publish(&bus, &stream).await;
    eventually("the unclaimed chats got the event", T, || {
        count_by_chat(&tg, "orphaned stream").len() == free.len()
    })
    .await;
    // The claims are still live: their chats got nothing yet.
    assert!(
        tokio::time::Instant::now() < lease_ends,
        "the unclaimed chats took longer than the lease; the test proves nothing"
    );
    let counts = count_by_chat(&tg, "orphaned stream");
    for chat in &claimed {
        assert_eq!(
            counts.get(chat),
            None,
            "chat {chat} was sent to under a live claim"
        );
    }

    // After the lease the claims are taken over and sent, once; the recorded chat never.
    eventually("the claimed chats got the event", T, || {
        count_by_chat(&tg, "orphaned stream").len() == claimed.len() + free.len()
    })
    .await;
    assert!(tokio::time::Instant::now() >= lease_ends);
    publish(&bus, &live(entity, "after takeover")).await;
    eventually("the sentinel reached every chat", T, || {
        count_by_chat(&tg, "after takeover").len() == all.len()
    })
    .await;
    let counts = count_by_chat(&tg, "orphaned stream");
    for chat in claimed.iter().chain(&free) {
        assert_eq!(counts.get(chat), Some(&1), "chat {chat}: {counts:?}");
        assert_eq!(
            logged_status(&log, stream.id, *chat, T).await,
            "sent",
            "chat {chat}"
        );
    }
    assert_eq!(counts.get(&recorded[0]), None);
    bot.shutdown().await;
    // A graceful stop leaves no claim behind.
    for chat in &all {
        let record = log
            .get_delivery(stream.id, "telegram", &chat.to_string())
            .await
            .unwrap();
        assert_ne!(
            record.map(|r| r.status),
            Some(stargazer_core::model::DELIVERY_CLAIMED.to_owned()),
            "chat {chat}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_claims_are_taken_over_after_their_lease_on_sqlite() {
    a_dead_instances_claims_are_taken_over_after_their_lease(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_claims_are_taken_over_after_their_lease_on_mongodb() {
    a_dead_instances_claims_are_taken_over_after_their_lease(true).await;
}

/// One instance at a time long-polls `getUpdates` (the poll lease): while two run,
/// Telegram never has to end an overlapping poll with 409 Conflict and a command is
/// answered once; when the polling instance stops, the other answers the next command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_polls_commands_and_the_other_takes_over() {
    init_tracing();
    let platform = Platform::start().await;
    let tg = TelegramServer::start("123:poller").await.unwrap();
    let bus = rabbit().await;
    let (first_queue, second_queue) = (
        TestQueue::declare(&bus).await,
        TestQueue::declare(&bus).await,
    );
    let config = |queue: &str| {
        let mut config = platform.bot_config(&tg, queue);
        config.poll_lease_seconds = 3;
        config
    };
    let first = RunningBot::start(
        config(&first_queue.name),
        platform.storage.clone(),
        bus.clone(),
    );
    tg.wait_polling(T).await;
    let second = RunningBot::start(
        config(&second_queue.name),
        platform.storage.clone(),
        bus.clone(),
    );
    // Four of the second instance's lease rounds, and several long polls.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        tg.poll_conflicts(),
        0,
        "two instances long-polled getUpdates at once"
    );
    tg.send_text(7201, 7201, "/help");
    eventually("the answer to /help", T, || !tg.sent_to(7201).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tg.sent_to(7201).len(), 1, "one answer to one command");

    // A stop releases the lease, so the other instance polls within a third of a term.
    first.shutdown().await;
    tg.send_text(7202, 7202, "/help");
    eventually("the answer to /help after the poller stopped", T, || {
        !tg.sent_to(7202).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tg.sent_to(7202).len(), 1, "one answer to one command");
    second.shutdown().await;
}

/// Telegram's overall limit is per token: two instances count each other through storage
/// and each paces at half of `global_per_second`, so together they stay under a limit
/// that two instances at the full rate would break. Once one stops, the other counts
/// itself alone again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_tokens_send_rate() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Ookami Mio")]).await;
    let chats: Vec<i64> = (7301..=7340).collect();
    subscribe_chats(&platform, entity, &chats).await;
    let tg = TelegramServer::start("123:shared-rate").await.unwrap();
    // 24 a second: 20 for the token and a margin for the bucket's spare fraction;
    // two instances at 20 each would send 40.
    tg.enforce(stargazer_testkit::servers::telegram::RateLimits {
        global: 24,
        window: Duration::from_secs(1),
        per_chat: Duration::ZERO,
        retry_after: 1,
    });
    let bus = rabbit().await;
    // One queue for both: they take turns at the events, and send at once.
    let queue = TestQueue::declare(&bus).await;
    let config = {
        let mut config = platform.bot_config(&tg, &queue.name);
        config.global_per_second = 20.0;
        config.claim_lease_seconds = 3;
        config.prefetch = 1;
        config
    };
    let first = RunningBot::start(config.clone(), platform.storage.clone(), bus.clone());
    let second = RunningBot::start(config, platform.storage.clone(), bus.clone());
    eventually("both instances count two senders", T, || {
        [&first, &second]
            .iter()
            .all(|bot| bot.metric("stargazer_bot_senders") == Some(2.0))
    })
    .await;

    let titles: Vec<String> = (0..6).map(|n| format!("shared rate {n}")).collect();
    for title in &titles {
        publish(&bus, &live(entity, title)).await;
    }
    eventually(
        "every chat got every event",
        Duration::from_secs(60),
        || {
            titles
                .iter()
                .all(|t| count_by_chat(&tg, t).len() == chats.len())
        },
    )
    .await;
    assert_eq!(tg.sent().len(), titles.len() * chats.len());
    assert_eq!(
        tg.too_many(),
        0,
        "the two instances together stayed under the token's limit"
    );
    // Both sent: the rate was shared, not left to one instance.
    let sent_by = |bot: &RunningBot| {
        bot.metric("stargazer_bot_send_attempts_done_total")
            .unwrap_or(0.0)
    };
    assert!(
        sent_by(&first) > 0.0 && sent_by(&second) > 0.0,
        "both instances sent: {} and {}",
        sent_by(&first),
        sent_by(&second)
    );

    // A stop releases the slot: the other takes the whole rate within a round.
    first.shutdown().await;
    eventually("the survivor counts itself alone", T, || {
        second.metric("stargazer_bot_senders") == Some(1.0)
    })
    .await;
    second.shutdown().await;
}
