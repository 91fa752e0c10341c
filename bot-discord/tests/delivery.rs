//! Delivery to Discord channels through the real engine, a real api over SQLite, the
//! real RabbitMQ and the local Discord REST server of `stargazer-testkit`.

mod common;

use std::collections::HashMap;
use std::ops::Deref;
use std::time::Duration;

use prometheus::Registry;
use stargazer_bot_discord::DiscordConfig;
use stargazer_delivery::testing::{count_by, eventually, live, Harness, Instance};
use stargazer_testkit::servers::discord::{DiscordServer, Failure, Limits};
use uuid::Uuid;

/// How long an instance may take to stop.
const STOP: Duration = Duration::from_secs(30);

/// Everything one test runs against.
struct Setup {
    harness: Harness,
    discord: DiscordServer,
    entity: Uuid,
    config: DiscordConfig,
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
        .entity(&[("en", "Minato Aqua"), ("ja", "湊あくあ")], vec![])
        .await;
    let discord = common::discord().await;
    let config = common::config(&harness, &discord, vec![entity]);
    Setup {
        harness,
        discord,
        entity,
        config,
    }
}

impl Setup {
    /// Registers channel `id` reading `language` and subscribes it to the entity.
    async fn channel(&self, id: u64, language: &str) -> Uuid {
        self.subscribe(id, language, self.entity).await
    }

    /// Starts delivery.
    fn start(&self) -> Instance<()> {
        self.start_with(self.config.clone())
    }

    /// Starts a delivery instance with `config` (this setup's, changed by the test) on
    /// the same storage and broker.
    fn start_with(&self, config: DiscordConfig) -> Instance<()> {
        let (stores, bus) = (self.stores(), self.bus.clone());
        self.spawn(move |stop| async move {
            stargazer_bot_discord::delivery::run(&config, stores, bus, Registry::new(), stop)
                .await
                .expect("delivery");
        })
    }

    /// Waits until `condition` holds of the discord server; panics with `what` after 30 s.
    async fn eventually(&self, what: &str, condition: impl Fn(&DiscordServer) -> bool) {
        eventually(what, Duration::from_secs(30), || condition(&self.discord)).await;
    }
}

/// How many messages each channel received whose embed mentions `marker`.
fn count_by_channel(discord: &DiscordServer, marker: &str) -> HashMap<u64, usize> {
    count_by(discord.sent(), |sent| {
        let mentions = sent.embeds.iter().any(|embed| {
            embed["description"]
                .as_str()
                .is_some_and(|text| text.contains(marker))
        });
        mentions.then_some(sent.channel_id)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_gets_the_event_once_in_its_language() {
    let setup = setup().await;
    setup.discord.set_limits(Limits::discord());
    setup.channel(1_100_000_000_000_000_001, "en").await;
    setup.channel(1_100_000_000_000_000_002, "ja").await;
    let bot = setup.start();

    let event = live(setup.entity, "Minecraft");
    setup.publish(&event).await;
    setup
        .eventually("both channels have it", |d| d.sent_count() == 2)
        .await;
    let en = setup.discord.sent_to(1_100_000_000_000_000_001);
    let ja = setup.discord.sent_to(1_100_000_000_000_000_002);
    assert_eq!((en.len(), ja.len()), (1, 1));
    assert_eq!(en[0].embeds[0]["title"], "🔴 Minato Aqua is live");
    assert_eq!(ja[0].embeds[0]["title"], "🔴 湊あくあ の配信が始まりました");
    assert_eq!(
        en[0].embeds[0]["url"],
        "https://www.youtube.com/watch?v=abc"
    );
    assert_eq!(
        en[0].embeds[0]["thumbnail"]["url"],
        "https://i.ytimg.com/vi/abc/hqdefault.jpg"
    );
    assert!(en[0].embeds[0]["description"]
        .as_str()
        .unwrap()
        .starts_with("Minecraft"));
    assert_eq!(
        en[0].link_buttons(),
        [(
            "Open on YouTube".to_owned(),
            "https://www.youtube.com/watch?v=abc".to_owned()
        )]
    );

    // The same event again (a redelivery, a second publisher): nothing more is sent.
    setup.publish(&event).await;
    let next = live(setup.entity, "Next stream");
    setup.publish(&next).await;
    setup
        .eventually("the next event arrived", |d| d.sent_count() >= 4)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(setup.discord.sent_count(), 4, "the repeat sent nothing");
    assert_eq!(setup.discord.too_many(), 0);
    bot.stop(STOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_and_a_channel_gone_for_the_bot_is_paused() {
    let setup = setup().await;
    setup.discord.set_limits(Limits::lenient());
    let slow = 1_100_000_000_000_000_011;
    let gone = 1_100_000_000_000_000_012;
    let fine = 1_100_000_000_000_000_013;
    setup.channel(slow, "en").await;
    let gone_user = setup.channel(gone, "en").await;
    setup.channel(fine, "en").await;
    setup.discord.fail_next(
        slow,
        Failure::RateLimited {
            retry_after: 1.0,
            global: false,
        },
    );
    setup
        .discord
        .set_channel_failure(gone, Some(Failure::MissingAccess));
    let bot = setup.start();

    let started = tokio::time::Instant::now();
    setup.publish(&live(setup.entity, "Karaoke")).await;
    setup
        .eventually("the slow and the fine channel have it", |d| {
            d.sent_to(slow).len() == 1 && d.sent_to(fine).len() == 1
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the 429's retry_after was waited out"
    );
    assert!(setup.discord.sent_to(gone).is_empty());
    setup
        .wait_paused(
            gone_user,
            "the gone channel was not paused",
            Duration::from_secs(10),
        )
        .await;
    // A paused channel is no longer a subscriber: the next event skips it.
    setup.discord.set_channel_failure(gone, None);
    setup.publish(&live(setup.entity, "Zatsudan")).await;
    setup
        .eventually("the next event reached the others", |d| {
            d.sent_to(fine).len() == 2 && d.sent_to(slow).len() == 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(setup.discord.sent_to(gone).is_empty());
    bot.stop(STOP).await;
}

/// A delivery instance stopped while an event is part-way through its channels leaves
/// the rest to the next instance: every channel ends with exactly one message for it,
/// none repeated and none missing, and a later event still reaches them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_fan_out_finishes_the_rest_without_repeats() {
    let setup = setup().await;
    setup.discord.set_limits(Limits::discord());
    let channels: Vec<u64> = (1..=12).map(|n| 1_100_000_000_000_000_100 + n).collect();
    for channel in &channels {
        setup.channel(*channel, "en").await;
    }

    // A slow first instance (4 messages a second: the fan-out takes about 3 s), stopped
    // after three of twelve sends.
    let slow = DiscordConfig {
        global_per_second: 4.0,
        ..setup.config.clone()
    };
    let first = setup.start_with(slow);
    let stream = live(setup.entity, "Restart stream");
    setup.publish(&stream).await;
    setup.discord.wait_sent(3, Duration::from_secs(30)).await;
    first.stop(STOP).await;
    let before_restart = setup.discord.sent_count();
    assert!(
        (3..channels.len()).contains(&before_restart),
        "the first instance was to stop mid-way, it sent {before_restart}"
    );

    // The event went back to the queue; a second instance finishes it.
    let bot = setup.start();
    setup
        .eventually("every channel got the event", |d| {
            count_by_channel(d, "Restart stream").len() == channels.len()
        })
        .await;
    // Each channel's messages go out in the order the events came, so once this later
    // event has reached every channel, no repeat of the first can still be on its way.
    setup.publish(&live(setup.entity, "After restart")).await;
    setup
        .eventually("the later event reached every channel", |d| {
            count_by_channel(d, "After restart").len() == channels.len()
        })
        .await;
    bot.stop(STOP).await;

    let counts = count_by_channel(&setup.discord, "Restart stream");
    for channel in &channels {
        assert_eq!(
            counts.get(channel),
            Some(&1),
            "channel {channel}: {counts:?}"
        );
        assert_eq!(
            setup
                .delivery_status(stream.id, &channel.to_string())
                .await
                .as_deref(),
            Some("sent"),
            "channel {channel}"
        );
    }
    assert_eq!(setup.discord.sent_count(), 2 * channels.len());
    assert_eq!(setup.discord.too_many(), 0);
}
