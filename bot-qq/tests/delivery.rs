//! Delivery to QQ groups and private chats through the real engine, a real api over
//! SQLite, the real RabbitMQ and the local OneBot v11 implementation of
//! `stargazer-testkit`.

mod common;

use std::collections::HashMap;
use std::ops::Deref;
use std::time::Duration;

use prometheus::Registry;
use stargazer_bot_qq::delivery::{group_chat_id, private_chat_id};
use stargazer_bot_qq::QqConfig;
use stargazer_delivery::testing::{count_by, eventually, live, Harness, Instance};
use stargazer_testkit::servers::onebot::{Failure, OneBotServer, Target};
use uuid::Uuid;

/// How long an instance may take to stop.
const STOP: Duration = Duration::from_secs(30);

/// Everything one test runs against.
struct Setup {
    harness: Harness,
    onebot: OneBotServer,
    entity: Uuid,
    config: QqConfig,
}

impl Deref for Setup {
    type Target = Harness;

    fn deref(&self) -> &Harness {
        &self.harness
    }
}

async fn setup() -> Setup {
    let harness = common::harness().await;
    let entity = harness
        .entity(&[("en", "Minato Aqua"), ("zh", "湊阿库娅")], vec![])
        .await;
    let onebot = common::onebot(false).await;
    let config = QqConfig {
        global_per_second: 20.0,
        group_interval_ms: 200,
        ..common::config(&harness, &onebot, vec![entity])
    };
    Setup {
        harness,
        onebot,
        entity,
        config,
    }
}

impl Setup {
    /// Registers `chat_id` reading `language` and subscribes it to the entity.
    async fn chat(&self, chat_id: &str, language: &str) -> Uuid {
        self.subscribe(chat_id, language, self.entity).await
    }

    /// Starts delivery.
    fn start(&self) -> Instance<()> {
        self.start_with(self.config.clone())
    }

    /// Starts a delivery instance with `config` (this setup's, changed by the test) on
    /// the same storage and broker.
    fn start_with(&self, config: QqConfig) -> Instance<()> {
        let (stores, bus) = (self.stores(), self.bus.clone());
        self.spawn(move |stop| async move {
            stargazer_bot_qq::delivery::run(&config, stores, bus, Registry::new(), stop)
                .await
                .expect("delivery");
        })
    }

    /// Waits until `condition` holds of the onebot server; panics with `what` after 30 s.
    async fn eventually(&self, what: &str, condition: impl Fn(&OneBotServer) -> bool) {
        eventually(what, Duration::from_secs(30), || condition(&self.onebot)).await;
    }
}

/// How many messages each chat received whose text contains `marker`.
fn count_by_target(onebot: &OneBotServer, marker: &str) -> HashMap<Target, usize> {
    count_by(onebot.sent(), |sent| {
        sent.text.contains(marker).then_some(sent.target)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_private_chats_get_the_event_once_in_their_language() {
    let setup = setup().await;
    setup.chat(&group_chat_id(700_001), "zh").await;
    setup.chat(&private_chat_id(10_001), "en").await;
    let bot = setup.start();

    let event = live(setup.entity, "Minecraft [CQ:at,qq=all]");
    setup.publish(&event).await;
    setup
        .eventually("both chats have it", |s| s.sent().len() == 2)
        .await;
    let group = setup.onebot.sent_to(Target::Group(700_001));
    let private = setup.onebot.sent_to(Target::Private(10_001));
    assert_eq!((group.len(), private.len()), (1, 1));
    assert!(
        group[0].text.starts_with("🔴 湊阿库娅"),
        "{}",
        group[0].text
    );
    assert!(
        private[0].text.starts_with("🔴 Minato Aqua is live"),
        "{}",
        private[0].text
    );
    // A title that looks like a CQ code stays text: nobody is mentioned.
    assert!(private[0].text.contains("Minecraft [CQ:at,qq=all]"));
    assert!(private[0].segments.iter().all(|s| s.kind != "at"));
    assert!(private[0]
        .text
        .contains("https://www.youtube.com/watch?v=abc"));
    assert_eq!(
        private[0].images(),
        ["https://i.ytimg.com/vi/abc/hqdefault.jpg"]
    );

    // The same event again: nothing more is sent.
    setup.publish(&event).await;
    setup.publish(&live(setup.entity, "Next")).await;
    setup
        .eventually("the next event arrived", |s| s.sent().len() >= 4)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(setup.onebot.sent().len(), 4, "the repeat sent nothing");
    bot.stop(STOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_control_is_waited_out_and_a_group_that_removed_the_bot_is_paused() {
    let setup = setup().await;
    let refusing = 700_011;
    let removed = 700_012;
    setup.chat(&group_chat_id(refusing), "en").await;
    let removed_user = setup.chat(&group_chat_id(removed), "en").await;
    setup.onebot.fail_next(refusing, [Failure::RiskControl]);
    setup.onebot.remove_from_group(removed);
    let bot = setup.start();

    let started = tokio::time::Instant::now();
    setup.publish(&live(setup.entity, "Karaoke")).await;
    setup
        .eventually("the refusing group has it after all", |s| {
            s.sent_to(Target::Group(refusing)).len() == 1
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "risk control was waited out, not hammered"
    );
    assert_eq!(setup.onebot.rate_limited(), 1);
    assert!(setup.onebot.sent_to(Target::Group(removed)).is_empty());
    setup
        .wait_paused(
            removed_user,
            "the group that removed the bot was not paused",
            Duration::from_secs(10),
        )
        .await;
    bot.stop(STOP).await;
}

/// A delivery instance stopped while an event is part-way through its groups and private
/// chats leaves the rest to the next instance: every chat ends with exactly one message
/// for it, none repeated and none missing, and a later event still reaches them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_fan_out_finishes_the_rest_without_repeats() {
    let setup = setup().await;
    // Six groups and six private chats, with the chat ids the api stores for them.
    let chats: Vec<(Target, String)> = (1..=6)
        .flat_map(|n| {
            [
                (Target::Group(700_100 + n), group_chat_id(700_100 + n)),
                (Target::Private(10_100 + n), private_chat_id(10_100 + n)),
            ]
        })
        .collect();
    for (_, chat_id) in &chats {
        setup.chat(chat_id, "en").await;
    }

    // A slow first instance (4 messages a second: the fan-out takes about 3 s), stopped
    // after three of twelve sends.
    let slow = QqConfig {
        global_per_second: 4.0,
        ..setup.config.clone()
    };
    let first = setup.start_with(slow);
    let stream = live(setup.entity, "Restart stream");
    setup.publish(&stream).await;
    setup.onebot.wait_sent(3, Duration::from_secs(30)).await;
    first.stop(STOP).await;
    let before_restart = setup.onebot.sent().len();
    assert!(
        (3..chats.len()).contains(&before_restart),
        "the first instance was to stop mid-way, it sent {before_restart}"
    );

    // The event went back to the queue; a second instance finishes it.
    let bot = setup.start();
    setup
        .eventually("every chat got the event", |s| {
            count_by_target(s, "Restart stream").len() == chats.len()
        })
        .await;
    // Each chat's messages go out in the order the events came, so once this later event
    // has reached every chat, no repeat of the first can still be on its way.
    setup.publish(&live(setup.entity, "After restart")).await;
    setup
        .eventually("the later event reached every chat", |s| {
            count_by_target(s, "After restart").len() == chats.len()
        })
        .await;
    bot.stop(STOP).await;

    let counts = count_by_target(&setup.onebot, "Restart stream");
    for (target, chat_id) in &chats {
        assert_eq!(counts.get(target), Some(&1), "{target:?}: {counts:?}");
        assert_eq!(
            setup.delivery_status(stream.id, chat_id).await.as_deref(),
            Some("sent"),
            "{target:?}"
        );
    }
    assert_eq!(setup.onebot.sent().len(), 2 * chats.len());
    assert_eq!(setup.onebot.rate_limited(), 0);
}
