//! Delivery to Discord channels through the real engine, a real api over SQLite, the
//! real RabbitMQ and the local Discord REST server of `stargazer-testkit`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::Registry;
use serde_json::json;
use stargazer_bot_discord::DiscordConfig;
use stargazer_core::bus::Bus;
use stargazer_core::model::{Entity, Event};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use stargazer_delivery::testing::{
    eventually, publish, serve_api, subscribed_chat, TestQueue, AMQP_URL, BOT_PASSWORD,
};
use stargazer_delivery::Stores;
use stargazer_testkit::servers::discord::{DiscordServer, Failure, Limits};
use uuid::Uuid;

const BOT_USER: &str = "bot-discord";

/// Everything one test runs against.
struct Setup {
    storage: Arc<dyn Storage>,
    discord: DiscordServer,
    bus: Arc<dyn Bus>,
    entity: Uuid,
    config: DiscordConfig,
    _queue: TestQueue,
    stop: CancellationToken,
}

async fn setup() -> Setup {
    let storage = stargazer_core::storage::connect("sqlite::memory:")
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let api_url = serve_api(&storage, BOT_USER, &stop).await;
    let entity = Entity {
        id: Uuid::new_v4(),
        names: BTreeMap::from([
            ("en".to_owned(), "Minato Aqua".to_owned()),
            ("ja".to_owned(), "湊あくあ".to_owned()),
        ]),
        default_language: "en".into(),
        group: None,
        translate_to: vec![],
        tasks: vec![],
    };
    storage.insert_entity(&entity).await.unwrap();
    let discord = DiscordServer::start("discord-token").await.unwrap();
    let bus = stargazer_core::bus::connect(AMQP_URL).await.unwrap();
    let queue = TestQueue::declare(&bus, BOT_USER).await;
    let config = DiscordConfig {
        api_url: discord.url.clone(),
        token: discord.token.clone(),
        stargazer_api_url: api_url,
        stargazer_api_username: BOT_USER.into(),
        stargazer_api_password: BOT_PASSWORD.into(),
        queue: queue.name.clone(),
        claim_lease_seconds: 3,
        only_entities: vec![entity.id],
        ..DiscordConfig::default()
    };
    Setup {
        storage,
        discord,
        bus,
        entity: entity.id,
        config,
        _queue: queue,
        stop,
    }
}

impl Setup {
    /// Registers channel `id` reading `language` and subscribes it to the entity.
    async fn channel(&self, id: u64, language: &str) -> Uuid {
        subscribed_chat(
            &self.storage,
            "discord",
            &id.to_string(),
            language,
            self.entity,
        )
        .await
    }

    /// Starts delivery; the token stops it.
    fn start(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = self.stop.child_token();
        let stores = Stores {
            deliveries: self.storage.clone(),
            state: self.storage.clone(),
        };
        let (config, bus, token) = (self.config.clone(), self.bus.clone(), stop.clone());
        let task = tokio::spawn(async move {
            stargazer_bot_discord::delivery::run(&config, stores, bus, Registry::new(), token)
                .await
                .expect("delivery");
        });
        (stop, task)
    }

    async fn publish(&self, event: &Event) {
        publish(&self.bus, event).await;
    }

    /// Waits until `condition` holds of the discord server; panics with `what` after 30 s.
    async fn eventually(&self, what: &str, condition: impl Fn(&DiscordServer) -> bool) {
        eventually(what, Duration::from_secs(30), || condition(&self.discord)).await;
    }
}

fn live(entity: Uuid, title: &str) -> Event {
    Event {
        id: Event::make_id("youtube.live", &Uuid::new_v4().to_string(), None),
        kind: "youtube.live".into(),
        entity,
        time: Utc::now(),
        fields: json!({"title": title, "link": "https://www.youtube.com/watch?v=abc",
                       "thumbnail": "https://i.ytimg.com/vi/abc/hqdefault.jpg"})
        .as_object()
        .cloned()
        .unwrap(),
        control: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_gets_the_event_once_in_its_language() {
    let setup = setup().await;
    setup.discord.set_limits(Limits::discord());
    setup.channel(1_100_000_000_000_000_001, "en").await;
    setup.channel(1_100_000_000_000_000_002, "ja").await;
    let (stop, task) = setup.start();

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
    stop.cancel();
    task.await.unwrap();
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
    let (stop, task) = setup.start();

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let user = setup.storage.get_user(gone_user).await.unwrap().unwrap();
        if user.settings.paused {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gone channel was not paused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    stop.cancel();
    task.await.unwrap();
}
