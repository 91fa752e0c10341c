//! Delivery of ready events from the real RabbitMQ through a real api to a local Bot API
//! server: exactly one message per (event, chat) across redelivery and restarts, and the
//! Bot API's 429, 403 and group-migration answers.
//!
//! "Nothing more arrives" is shown without sleeping: each chat's messages go out in the
//! order the events arrived, so once a later sentinel event has reached every chat, any
//! duplicate of an earlier event would have arrived before it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use stargazer_api::types::ErrorCode;
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

/// How many messages each chat received whose text contains `marker`.
fn count_by_chat(tg: &TelegramServer, marker: &str) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for sent in tg.sent().into_iter().filter(|s| s.text.contains(marker)) {
        *counts.entry(sent.chat_id).or_default() += 1;
    }
    counts
}

/// Send attempts (text or photo, accepted or not) the server saw for `chat`.
fn attempts_to(tg: &TelegramServer, chat: i64) -> usize {
    ["sendMessage", "sendPhoto"]
        .iter()
        .flat_map(|m| tg.calls_of(m))
        .filter(|p| {
            p["chat_id"] == serde_json::json!(chat)
                || p["chat_id"] == serde_json::json!(chat.to_string())
        })
        .count()
}

async fn subscribe_chats(platform: &Platform, entity: Uuid, chats: &[i64]) {
    for chat in chats {
        platform.subscribed_chat(*chat, "en", entity).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_not_sent_twice() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Shirakami Fubuki")]).await;
    let chats: Vec<i64> = (6001..=6005).collect();
    subscribe_chats(&platform, entity, &chats).await;
    let tg = TelegramServer::start("123:redelivery").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus.clone(),
    );

    let first = live(entity, "first stream");
    publish(&bus, &first).await;
    tg.wait_sent(chats.len(), T).await;
    // The same event again (a worker re-push or a broker redelivery), then a sentinel.
    publish(&bus, &first).await;
    publish(&bus, &live(entity, "sentinel stream")).await;
    tg.wait_sent(2 * chats.len(), T).await;
    eventually("the sentinel reached every chat", T, || {
        count_by_chat(&tg, "sentinel stream").len() == chats.len()
    })
    .await;

    let counts = count_by_chat(&tg, "first stream");
    for chat in &chats {
        assert_eq!(counts.get(chat), Some(&1), "chat {chat}: {counts:?}");
        let record = platform
            .storage
            .get_delivery(first.id, "telegram", &chat.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, "sent");
    }
    assert_eq!(tg.sent().len(), 2 * chats.len());
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_fan_out_finishes_the_rest_without_repeats() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Houshou Marine")]).await;
    let chats: Vec<i64> = (6101..=6112).collect();
    subscribe_chats(&platform, entity, &chats).await;
    let tg = TelegramServer::start("123:restart").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;

    // A slow first bot, stopped after three of twelve sends.
    let mut slow = platform.bot_config(&tg, &queue.name);
    slow.global_per_second = 4.0;
    let first_bot = RunningBot::start(slow, platform.storage.clone(), bus.clone());
    let stream = live(entity, "restart stream");
    publish(&bus, &stream).await;
    tg.wait_sent(3, T).await;
    first_bot.shutdown().await;
    let before_restart = tg.sent().len();
    assert!(
        (3..chats.len()).contains(&before_restart),
        "the first bot was to stop mid-way, it sent {before_restart}"
    );

    // The event went back to the queue; a new bot finishes it.
    let second_bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus.clone(),
    );
    tg.wait_sent(chats.len(), T).await;
    publish(&bus, &live(entity, "after restart")).await;
    eventually("the sentinel reached every chat", T, || {
        count_by_chat(&tg, "after restart").len() == chats.len()
    })
    .await;

    let counts = count_by_chat(&tg, "restart stream");
    for chat in &chats {
        assert_eq!(counts.get(chat), Some(&1), "chat {chat}: {counts:?}");
    }
    assert_eq!(tg.sent().len(), 2 * chats.len());
    second_bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_blocked_chats_are_paused_and_migrations_followed() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Usada Pekora")]).await;
    let (slowed, blocked, group, fine, no_photo) =
        (6201_i64, 6202_i64, -6203_i64, 6204_i64, 6205_i64);
    let supergroup = -1_000_000_006_203_i64;
    subscribe_chats(&platform, entity, &[slowed, blocked, group, fine, no_photo]).await;
    let blocked_user = platform
        .service
        .find_user("telegram", &blocked.to_string())
        .await
        .unwrap();
    let group_user = platform
        .service
        .find_user("telegram", &group.to_string())
        .await
        .unwrap();
    let tg = TelegramServer::start("123:errors").await.unwrap();
    tg.fail_next(slowed, [Failure::RetryAfter(1)]);
    tg.block(blocked);
    tg.migrate(group, supergroup);
    tg.fail_next(
        no_photo,
        [Failure::BadRequest(
            "Bad Request: wrong file identifier/HTTP URL specified".into(),
        )],
    );
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus.clone(),
    );

    let first = event(
        "youtube.live",
        entity,
        serde_json::json!({"title": "first", "thumbnail": "https://i.ytimg.com/vi/x/hq.jpg"}),
    );
    publish(&bus, &first).await;
    tg.wait_for(slowed, T, |s| s.text.contains("first")).await;
    tg.wait_for(fine, T, |s| {
        s.text.contains("first") && s.method == "sendPhoto"
    })
    .await;
    tg.wait_for(supergroup, T, |s| s.text.contains("first"))
        .await;
    // A picture Telegram cannot fetch: the message still arrives, as text.
    tg.wait_for(no_photo, T, |s| {
        s.text.contains("first") && s.method == "sendMessage"
    })
    .await;
    // The 429 was answered once, and the message retried afterwards.
    assert_eq!(tg.too_many(), 1);
    assert_eq!(attempts_to(&tg, slowed), 2);

    // The blocked chat is paused, and the failure recorded.
    let deadline = tokio::time::Instant::now() + T;
    while !platform
        .storage
        .get_user(blocked_user.id)
        .await
        .unwrap()
        .unwrap()
        .settings
        .paused
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the blocked chat was never paused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = logged_status(&platform.storage, first.id, blocked, T).await;
    assert!(status.starts_with("failed: Forbidden"), "{status}");

    // The group now lives under its supergroup id, in the api too.
    let moved = platform
        .service
        .find_user("telegram", &supergroup.to_string())
        .await
        .unwrap();
    assert_eq!(moved.id, group_user.id);
    let old = platform
        .service
        .find_user("telegram", &group.to_string())
        .await
        .unwrap_err();
    assert_eq!(old.code(), Some(ErrorCode::NotFound));
    for chat in [group, supergroup] {
        assert_eq!(
            logged_status(&platform.storage, first.id, chat, T).await,
            "sent"
        );
    }

    // The next event skips the paused chat and goes straight to the supergroup.
    let sends_to_blocked = attempts_to(&tg, blocked);
    let sends_to_group = attempts_to(&tg, group);
    publish(&bus, &live(entity, "second")).await;
    for chat in [slowed, fine, supergroup] {
        tg.wait_for(chat, T, |s| s.text.contains("second")).await;
    }
    assert_eq!(attempts_to(&tg, blocked), sends_to_blocked);
    assert_eq!(attempts_to(&tg, group), sends_to_group);
    assert!(tg.sent_to(blocked).is_empty());

    // The user unblocks the bot and says /start: deliveries resume.
    tg.unblock(blocked);
    tg.send_text(blocked, blocked, "/start");
    tg.wait_for(blocked, T, |s| {
        s.text.contains("Notifications to this chat are on again")
    })
    .await;
    assert!(
        !platform
            .storage
            .get_user(blocked_user.id)
            .await
            .unwrap()
            .unwrap()
            .settings
            .paused
    );
    publish(&bus, &live(entity, "third")).await;
    tg.wait_for(blocked, T, |s| s.text.contains("third")).await;
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_delays_delivery_but_loses_nothing() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Inugami Korone")]).await;
    subscribe_chats(&platform, entity, &[6301, 6302]).await;
    let tg = TelegramServer::start("123:outage").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    // The bot's api address has nothing listening yet.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let mut config = platform.bot_config(&tg, &queue.name);
    config.stargazer_api_url = format!("http://{address}");
    let bot = RunningBot::start(config, platform.storage.clone(), bus.clone());

    publish(&bus, &live(entity, "during the outage")).await;
    // Telegram is reachable, so the bot is up and polling while the api is not.
    tg.wait_polling(T).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(tg.sent().is_empty());

    platform.serve_api_on(tokio::net::TcpListener::bind(address).await.unwrap());
    for chat in [6301, 6302] {
        tg.wait_for(chat, T, |s| s.text.contains("during the outage"))
            .await;
    }
    bot.shutdown().await;
}

/// How long the Bot API answers 502 in the outage test: the 30 s.
const OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_outage_mid_fan_out_delays_delivery_but_loses_nothing() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Ookami Mio")]).await;
    let chats: Vec<i64> = (6401..=6412).collect();
    subscribe_chats(&platform, entity, &chats).await;
    let tg = TelegramServer::start("123:gateway").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    // Slow enough that the outage starts with most chats still waiting. teloxide waits
    // 10 s after every 5xx before it reports it, so a job spends about 21 s on two
    // attempts: with that budget the jobs give up within the outage and the event has to
    // go back to the queue (the path under test) rather than outlast it in place.
    let mut config = platform.bot_config(&tg, &queue.name);
    config.global_per_second = 4.0;
    config.max_send_attempts = 2;
    let budget = config.max_send_attempts as usize;
    let bot = RunningBot::start(config, platform.storage.clone(), bus.clone());

    let stream = live(entity, "outage stream");
    publish(&bus, &stream).await;
    tg.wait_sent(3, T).await;
    let outage_started = std::time::Instant::now();
    tg.bad_gateway_for(OUTAGE);
    let before = tg.sent_len();
    assert!(
        before < chats.len(),
        "the outage was to start mid fan-out; {before} were sent"
    );

    // Every chat gets the event once Telegram is back.
    eventually("every chat got the event", OUTAGE + 2 * T, || {
        count_by_chat(&tg, "outage stream").len() == chats.len()
    })
    .await;
    assert!(
        outage_started.elapsed() >= OUTAGE,
        "nothing was delivered during the outage"
    );
    assert!(tg.bad_gateways() > 0);
    // A job tries at most `max_send_attempts` times: more attempts to one chat mean the
    // event went back to the queue and came round again.
    let most = chats.iter().map(|c| attempts_to(&tg, *c)).max().unwrap();
    assert!(
        most > budget,
        "the event was never requeued ({most} attempts)"
    );
    // Chats served before the outage were not tried again by the later deliveries.
    let served_before: Vec<i64> = tg
        .sent()
        .iter()
        .filter(|s| s.at < outage_started)
        .map(|s| s.chat_id)
        .collect();
    assert!(!served_before.is_empty());
    for chat in &served_before {
        assert_eq!(attempts_to(&tg, *chat), 1, "chat {chat} was tried again");
    }
    // Nothing was recorded as failed; every chat is logged sent.
    for chat in &chats {
        assert_eq!(
            logged_status(&platform.storage, stream.id, *chat, T).await,
            "sent",
            "chat {chat}"
        );
    }

    // No late duplicate: the sentinel reaches every chat after anything queued before it.
    publish(&bus, &live(entity, "after the outage")).await;
    eventually("the sentinel reached every chat", T, || {
        count_by_chat(&tg, "after the outage").len() == chats.len()
    })
    .await;
    let counts = count_by_chat(&tg, "outage stream");
    for chat in &chats {
        assert_eq!(counts.get(chat), Some(&1), "chat {chat}: {counts:?}");
    }
    assert_eq!(tg.sent().len(), 2 * chats.len());
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_bad_request_answers_are_final() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Nekomata Okayu")]).await;
    let (blocked, refused, fine) = (6501_i64, 6502_i64, 6503_i64);
    subscribe_chats(&platform, entity, &[blocked, refused, fine]).await;
    let tg = TelegramServer::start("123:final").await.unwrap();
    tg.block(blocked);
    tg.fail_next(
        refused,
        [Failure::BadRequest("Bad Request: PEER_ID_INVALID".into())],
    );
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus.clone(),
    );

    let first = live(entity, "final stream");
    publish(&bus, &first).await;
    tg.wait_for(fine, T, |s| s.text.contains("final stream"))
        .await;
    let status = logged_status(&platform.storage, first.id, blocked, T).await;
    assert!(status.starts_with("failed: Forbidden"), "{status}");
    let status = logged_status(&platform.storage, first.id, refused, T).await;
    assert_eq!(status, "failed: Bad Request: PEER_ID_INVALID");

    // The event was settled, not requeued: a later event reaches the chats first, and the
    // refused ones were asked exactly once.
    publish(&bus, &live(entity, "next stream")).await;
    tg.wait_for(fine, T, |s| s.text.contains("next stream"))
        .await;
    // A 400 concerns one message: the chat gets the next one.
    tg.wait_for(refused, T, |s| s.text.contains("next stream"))
        .await;
    assert!(tg
        .sent_to(refused)
        .iter()
        .all(|s| !s.text.contains("final stream")));
    assert!(tg.sent_to(blocked).is_empty());
    assert_eq!(
        tg.calls_of("sendMessage")
            .iter()
            .filter(|p| p["chat_id"] == serde_json::json!(refused)
                && p["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("final stream")))
            .count(),
        1
    );
    // The blocked chat was paused after its one attempt.
    assert_eq!(attempts_to(&tg, blocked), 1);
    assert_eq!(count_by_chat(&tg, "final stream").get(&fine), Some(&1));
    bot.shutdown().await;
}

/// Paid broadcasts: the sends past the free overall rate go out with
/// `allow_paid_broadcast`, which the server takes past its overall limit, until the day's
/// budget is spent; then the bot keeps to the free rate again. No 429 either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_broadcasts_pass_the_free_limit_within_the_budget() {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Sakura Miko")]).await;
    let chats: Vec<i64> = (8001..=8120).collect();
    subscribe_chats(&platform, entity, &chats).await;
    let tg = TelegramServer::start("123:paid").await.unwrap();
    tg.enforce(stargazer_testkit::servers::telegram::RateLimits {
        global: 12,
        window: Duration::from_secs(1),
        per_chat: Duration::ZERO,
        retry_after: 1,
    });
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let mut config = platform.bot_config(&tg, &queue.name);
    config.global_per_second = 10.0;
    config.paid_broadcast_per_second = 100.0;
    config.paid_broadcast_daily_budget = 50;
    let bot = RunningBot::start(config, platform.storage.clone(), bus.clone());

    publish(&bus, &live(entity, "paid fan-out")).await;
    eventually("every chat got the event", T, || {
        count_by_chat(&tg, "paid fan-out").len() == chats.len()
    })
    .await;
    assert_eq!(tg.sent().len(), chats.len(), "one message per chat");
    assert_eq!(
        tg.too_many(),
        0,
        "paid sends passed, free ones kept the rate"
    );
    assert_eq!(tg.paid_sent(), 50, "the whole budget and no more");
    assert_eq!(
        bot.metric("stargazer_bot_paid_broadcasts_total"),
        Some(50.0)
    );
    let flagged = ["sendMessage", "sendPhoto"]
        .iter()
        .flat_map(|m| tg.calls_of(m))
        .filter(|p| p["allow_paid_broadcast"] == serde_json::json!(true))
        .count();
    assert_eq!(flagged, 50);
    bot.shutdown().await;
}
