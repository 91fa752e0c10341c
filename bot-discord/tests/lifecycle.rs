//! A stream's life in Discord channels, from the real RabbitMQ through a real api to the
//! local Discord REST server: every event of the stream is posted, later posts reply to
//! the stream's first message in each channel, and that message is edited to the
//! stream's current state; the delivery log keeps a redelivered event from posting or
//! editing again, and a deleted first message is replaced by the next post.
//!
//! Each step waits for its event to be in the delivery log for every channel (every call
//! of the event is made by then), so the calls can be compared in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::Registry;
use serde_json::{json, Value};
use stargazer_bot_discord::DiscordConfig;
use stargazer_core::bus::Bus;
use stargazer_core::model::{Entity, Event};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use stargazer_delivery::testing::{
    publish, serve_api, subscribed_chat, TestQueue, AMQP_URL, BOT_PASSWORD,
};
use stargazer_delivery::Stores;
use stargazer_testkit::servers::discord::{DiscordServer, Limits};
use uuid::Uuid;

const BOT_USER: &str = "bot-discord";
const T: Duration = Duration::from_secs(30);

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
        names: BTreeMap::from([("en".to_owned(), "Usada Pekora".to_owned())]),
        default_language: "en".into(),
        group: None,
        translate_to: vec![],
        tasks: vec![],
    };
    storage.insert_entity(&entity).await.unwrap();
    let discord = DiscordServer::start("discord-token").await.unwrap();
    discord.set_limits(Limits::lenient());
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
        // Keeps the steps of a stream quick; pacing itself is covered elsewhere.
        channel_interval_ms: 50,
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
    /// Registers channel `id` reading English and subscribes it to the entity.
    async fn channel(&self, id: u64) {
        subscribed_chat(&self.storage, "discord", &id.to_string(), "en", self.entity).await;
    }

    /// Starts a delivery instance; stop it with [`stop_instance`].
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

    /// Publishes `event` and waits until its outcome is in the delivery log for every
    /// channel of `channels`; answers the statuses.
    async fn deliver(&self, event: &Event, channels: &[u64]) -> Vec<String> {
        publish(&self.bus, event).await;
        let mut statuses = Vec::new();
        for channel in channels {
            let deadline = tokio::time::Instant::now() + T;
            loop {
                let logged = self
                    .storage
                    .get_delivery(event.id, "discord", &channel.to_string())
                    .await
                    .unwrap()
                    // A claim is logged before the calls; the outcome replaces it.
                    .filter(|r| r.status != stargazer_core::model::DELIVERY_CLAIMED);
                if let Some(record) = logged {
                    statuses.push(record.status);
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} never settled for channel {channel}",
                    event.kind
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        statuses
    }

    /// The edits of messages in `channel`, as (message id, embed title), in order.
    fn edits_in(&self, channel: u64) -> Vec<(u64, String)> {
        self.discord
            .edits()
            .into_iter()
            .filter(|edit| edit.channel_id == channel)
            .map(|edit| (edit.message_id, title(&edit.body["embeds"][0])))
            .collect()
    }

    /// The embed title message `id` shows now.
    fn current_title(&self, id: u64) -> String {
        let message = self.discord.message(id).expect("the message exists");
        title(&message["embeds"][0])
    }

    /// Waits until the memories of `video` are gone.
    async fn forgotten(&self, video: &str) {
        let namespace = format!("bot.discord.stream.{video}");
        let deadline = tokio::time::Instant::now() + T;
        while !self.storage.kv_list(&namespace).await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream's memories were never forgotten"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Stops a delivery instance and waits until it has returned.
async fn stop_instance(stop: CancellationToken, task: tokio::task::JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(T, task)
        .await
        .expect("delivery did not stop within 30 s")
        .expect("delivery panicked");
}

fn title(embed: &Value) -> String {
    embed["title"].as_str().unwrap_or_default().to_owned()
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339()
}

/// An event of `video`'s life with the fields every such event carries, plus `extra`.
fn stream_event(kind: &str, entity: Uuid, video: &str, extra: Value) -> Event {
    let mut fields = json!({
        "video_id": video,
        "title": format!("Stream {video}"),
        "link": format!("https://www.youtube.com/watch?v={video}"),
        "channel_id": "UCtest",
        "format": "stream",
        "members_only": false,
    });
    if let (Some(fields), Some(extra)) = (fields.as_object_mut(), extra.as_object()) {
        fields.extend(extra.clone());
    }
    Event {
        id: Event::make_id(kind, &Uuid::new_v4().to_string(), None),
        kind: kind.into(),
        entity,
        time: Utc::now(),
        fields: fields.as_object().cloned().unwrap_or_default(),
        control: Default::default(),
    }
}

/// scheduled → live → ended to two channels: three posts in each, and each channel's
/// first post edited to the live and then the ended state; the end forgets the stream,
/// and redelivered events post and edit nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_posted_and_its_first_message_kept_current() {
    let setup = setup().await;
    let channels = [1_200_000_000_000_000_001_u64, 1_200_000_000_000_000_002];
    for channel in channels {
        setup.channel(channel).await;
    }
    let (stop, task) = setup.start();
    let video = "lifeVideo01";
    let start = Utc::now() + chrono::Duration::hours(3);

    let scheduled = stream_event(
        "youtube.scheduled",
        setup.entity,
        video,
        json!({"scheduled_start": rfc3339(start)}),
    );
    assert_eq!(setup.deliver(&scheduled, &channels).await, ["sent", "sent"]);
    let first: Vec<u64> = channels
        .iter()
        .map(|c| setup.discord.sent_to(*c)[0].id)
        .collect();
    for (channel, id) in channels.iter().zip(&first) {
        assert_eq!(
            setup.current_title(*id),
            "📅 Usada Pekora scheduled a stream"
        );
        assert_eq!(setup.discord.sent_to(*channel)[0].reply_to, None);
    }

    let started = Utc::now();
    let live = stream_event(
        "youtube.live",
        setup.entity,
        video,
        json!({"scheduled_start": rfc3339(start), "actual_start": rfc3339(started)}),
    );
    assert_eq!(setup.deliver(&live, &channels).await, ["sent", "sent"]);
    for (channel, id) in channels.iter().zip(&first) {
        let sent = setup.discord.sent_to(*channel);
        assert_eq!(sent.len(), 2, "channel {channel}");
        assert_eq!(title(&sent[1].embeds[0]), "🔴 Usada Pekora is live");
        assert_eq!(
            sent[1].reply_to,
            Some(*id),
            "the live post replies to the first"
        );
        assert_eq!(setup.current_title(*id), "🔴 Live now: Usada Pekora");
    }

    let ended = stream_event(
        "youtube.ended",
        setup.entity,
        video,
        json!({
            "actual_start": rfc3339(started),
            "actual_end": rfc3339(started + chrono::Duration::seconds(7980)),
            "duration_seconds": 7980,
            "link": format!("https://www.youtube.com/watch?v={video}&archive=1"),
        }),
    );
    assert_eq!(setup.deliver(&ended, &channels).await, ["sent", "sent"]);
    let ended_title = "⏹ Ended, lasted 2h13m: Usada Pekora";
    for (channel, id) in channels.iter().zip(&first) {
        let sent = setup.discord.sent_to(*channel);
        assert_eq!(sent.len(), 3, "channel {channel}");
        assert_eq!(title(&sent[2].embeds[0]), ended_title);
        assert_eq!(sent[2].reply_to, Some(*id), "the end replies to the first");
        // Only the first message is edited: to live, then to ended.
        assert_eq!(
            setup.edits_in(*channel),
            [
                (*id, "🔴 Live now: Usada Pekora".to_owned()),
                (*id, ended_title.to_owned())
            ],
            "channel {channel}"
        );
        let message = setup.discord.message(*id).unwrap();
        assert_eq!(title(&message["embeds"][0]), ended_title);
        assert_eq!(
            message["components"][0]["components"][0]["url"],
            format!("https://www.youtube.com/watch?v={video}&archive=1")
        );
    }
    setup.forgotten(video).await;

    // The same events again, then an upload every channel gets after them (each
    // channel's messages go out in the order their events came).
    publish(&setup.bus, &live).await;
    publish(&setup.bus, &ended).await;
    let sentinel = stream_event("youtube.video", setup.entity, "sentinel001", json!({}));
    setup.deliver(&sentinel, &channels).await;
    for channel in channels {
        let sent = setup.discord.sent_to(channel);
        assert_eq!(sent.len(), 4, "channel {channel}");
        assert_eq!(sent[3].reply_to, None, "an upload is no stream's");
        assert_eq!(setup.edits_in(channel).len(), 2, "channel {channel}");
    }
    stop_instance(stop, task).await;
}

/// A reminder replies to the first message and edits nothing. Then a first message
/// deleted in the channel: the live post, replying to it, goes out as a
/// plain message (`fail_if_not_exists: false`), the edit Discord answers 10008 (Unknown
/// Message) is given up, the live post takes the first message's place, and the end
/// replies to it and edits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_first_message_is_replaced_by_the_next_post() {
    let setup = setup().await;
    let channel = 1_200_000_000_000_000_011_u64;
    setup.channel(channel).await;
    let video = "deletedVid1";
    let (stop, task) = setup.start();
    let start = Utc::now() + chrono::Duration::hours(1);
    let scheduled = stream_event(
        "youtube.scheduled",
        setup.entity,
        video,
        json!({"scheduled_start": rfc3339(start)}),
    );
    setup.deliver(&scheduled, &[channel]).await;
    let first = setup.discord.sent_to(channel)[0].id;
    let reminder = stream_event(
        "youtube.reminder",
        setup.entity,
        video,
        json!({"scheduled_start": rfc3339(start), "lead_seconds": 1800, "lead_default": true}),
    );
    assert_eq!(setup.deliver(&reminder, &[channel]).await, ["sent"]);
    assert_eq!(setup.discord.sent_to(channel)[1].reply_to, Some(first));
    assert!(
        setup.edits_in(channel).is_empty(),
        "a reminder edits nothing"
    );
    let namespace = format!("bot.discord.stream.{video}");
    let key = channel.to_string();
    let record = setup
        .storage
        .kv_get(&namespace, &key)
        .await
        .unwrap()
        .expect("the first message is remembered");
    assert_eq!(
        (&record["channel"], &record["message_id"]),
        (&json!(key), &json!(first.to_string())),
        "ids are stored as Discord's strings"
    );

    // Someone in the channel deletes the first message.
    assert!(setup.discord.delete_message(channel, first));

    let started = Utc::now();
    let live = stream_event(
        "youtube.live",
        setup.entity,
        video,
        json!({"actual_start": rfc3339(started)}),
    );
    assert_eq!(setup.deliver(&live, &[channel]).await, ["sent"]);
    let sent = setup.discord.sent_to(channel);
    assert_eq!(sent.len(), 3);
    assert_eq!(title(&sent[2].embeds[0]), "🔴 Usada Pekora is live");
    assert_eq!(sent[2].reply_to, None, "nothing left to reply to");
    assert!(setup.edits_in(channel).is_empty(), "no edit went through");
    let live_post = sent[2].id;
    let remembered = setup.storage.kv_get(&namespace, &key).await.unwrap();
    assert_eq!(
        remembered.map(|r| r["message_id"].clone()),
        Some(json!(live_post.to_string())),
        "the live post is the stream's first message now"
    );

    let ended = stream_event(
        "youtube.ended",
        setup.entity,
        video,
        json!({"actual_start": rfc3339(started), "duration_seconds": 3000}),
    );
    assert_eq!(setup.deliver(&ended, &[channel]).await, ["sent"]);
    let sent = setup.discord.sent_to(channel);
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[3].reply_to, Some(live_post));
    assert_eq!(
        setup.edits_in(channel),
        [(live_post, "⏹ Ended, lasted 50m: Usada Pekora".to_owned())]
    );
    stop_instance(stop, task).await;
}
