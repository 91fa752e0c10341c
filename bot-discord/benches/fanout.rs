//! Fan-out bench: one message to each of many channels through the REST sender, against
//! the local Discord of `stargazer-testkit` enforcing Discord's limits (50 requests per
//! second per bot over a sliding second, 5 messages per 5 s per channel, 429 past them).
//!
//! Prints the completion time beside the ideal (channels / 50 per second), their ratio
//! (goal ≤ 1.05) and the 429s received (goal 0): once for the REST sender alone, once for
//! the whole bot (one `youtube.live` event through the delivery engine, with a real api
//! over SQLite and the in-process bus, to channels subscribed in storage); as a same-run
//! baseline, a naive sender
//! that posts the same messages as fast as it can (32 at a time, no pacing, no retry) at a
//! fresh server with the same limits, and how many of its requests were refused.
//!
//! `cargo bench -p stargazer-bot-discord --bench fanout`; environment:
//! - `DISCORD_FANOUT_CHANNELS` (default 3000): recipients;
//! - `DISCORD_FANOUT_CONCURRENCY` (default 64): sends of the bot open at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use stargazer_bot_discord::rest::embed;
use stargazer_bot_discord::{DiscordConfig, MessageBody, RestClient};
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::{Entity, Event};
use stargazer_core::CancellationToken;
use stargazer_delivery::testing::{serve_api, subscribed_chat, BOT_PASSWORD};
use stargazer_testkit::servers::discord::{DiscordServer, Limits};
use twilight_model::id::Id;

const TOKEN: &str = "bench-token";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message() -> MessageBody {
    MessageBody::text("Tokino Sora is live!")
        .with_embed(embed(
            "Morning stream",
            Some("https://www.youtube.com/watch?v=bench".to_owned()),
            "Come and watch",
            Some("https://i.ytimg.com/vi/bench/hqdefault.jpg".to_owned()),
        ))
        .with_link_button("Watch", "https://www.youtube.com/watch?v=bench")
}

/// Posts one message per channel with no pacing and no retry; returns (seconds, 429s,
/// messages delivered).
async fn naive_burst(channels: u64) -> (f64, u64, usize) {
    let server = DiscordServer::start(TOKEN).await.expect("discord server");
    server.set_limits(Limits::discord());
    let http = reqwest::Client::new();
    let body = serde_json::to_value(message()).expect("JSON body");
    let url = server.url.clone();
    let started = Instant::now();
    stream::iter(1..=channels)
        .for_each_concurrent(32, |channel| {
            let http = http.clone();
            let body = body.clone();
            let url = url.clone();
            async move {
                let _ = http
                    .post(format!("{url}/api/v10/channels/{channel}/messages"))
                    .header("authorization", format!("Bot {TOKEN}"))
                    .json(&body)
                    .send()
                    .await;
            }
        })
        .await;
    (
        started.elapsed().as_secs_f64(),
        server.too_many(),
        server.sent_count(),
    )
}

/// One live event to `channels` channels through the whole bot; returns (seconds from
/// publication to the last message, 429s, messages, distinct channels).
async fn through_the_engine(channels: u64) -> (f64, u64, usize, usize) {
    let storage = stargazer_core::storage::connect("sqlite::memory:")
        .await
        .expect("sqlite");
    let stop = CancellationToken::new();
    let api_url = serve_api(&storage, "bot-discord", &stop).await;
    let entity = Entity {
        id: uuid::Uuid::new_v4(),
        names: [("en".to_owned(), "Tokino Sora".to_owned())].into(),
        default_language: "en".into(),
        group: None,
        translate_to: vec![],
        tasks: vec![],
    };
    storage.insert_entity(&entity).await.expect("entity");
    for channel in 1..=channels {
        subscribed_chat(&storage, "discord", &channel.to_string(), "en", entity.id).await;
    }
    let server = DiscordServer::start(TOKEN).await.expect("discord server");
    server.set_limits(Limits::discord());
    let bus: Arc<dyn Bus> = stargazer_core::bus::connect("memory://")
        .await
        .expect("memory bus");
    let queue = "stargazer.bench.bot-discord".to_owned();
    bus.declare(&QueueSpec::new(queue.clone(), "*", 8))
        .await
        .expect("declare");
    let config = DiscordConfig {
        api_url: server.url.clone(),
        token: TOKEN.to_owned(),
        stargazer_api_url: api_url,
        stargazer_api_username: "bot-discord".into(),
        stargazer_api_password: BOT_PASSWORD.into(),
        queue,
        ..DiscordConfig::default()
    };
    let stores = stargazer_delivery::Stores {
        deliveries: storage.clone(),
        state: storage.clone(),
    };
    let delivery = {
        let (bus, stop) = (bus.clone(), stop.clone());
        tokio::spawn(async move {
            stargazer_bot_discord::delivery::run(
                &config,
                stores,
                bus,
                prometheus::Registry::new(),
                stop,
            )
            .await
            .expect("delivery");
        })
    };
    let event = Event {
        id: Event::make_id("youtube.live", "bench", None),
        kind: "youtube.live".into(),
        entity: entity.id,
        time: chrono::Utc::now(),
        fields: serde_json::json!({"title": "Morning stream", "link": "https://www.youtube.com/watch?v=bench"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        control: Default::default(),
    };
    let started = Instant::now();
    bus.publish("youtube", &event.to_bytes())
        .await
        .expect("publish");
    let sent = server
        .wait_sent(channels as usize, Duration::from_secs(channels / 10 + 120))
        .await;
    let last = sent.iter().map(|s| s.at).max().expect("messages");
    let mut distinct: Vec<u64> = sent.iter().map(|s| s.channel_id).collect();
    distinct.sort_unstable();
    distinct.dedup();
    stop.cancel();
    let _ = delivery.await;
    (
        last.duration_since(started).as_secs_f64(),
        server.too_many(),
        sent.len(),
        distinct.len(),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let channels: u64 = env_or("DISCORD_FANOUT_CHANNELS", 3000);
    let concurrency: usize = env_or("DISCORD_FANOUT_CONCURRENCY", 64);
    let limits = Limits::discord();

    let server = DiscordServer::start(TOKEN).await.expect("discord server");
    server.set_limits(limits);
    let config = DiscordConfig {
        api_url: server.url.clone(),
        token: TOKEN.to_owned(),
        ..DiscordConfig::default()
    };
    let client = RestClient::new(&config).expect("client");
    println!(
        "fanout: {channels} channels; server enforces {} req/s global and {} per {} s per channel; bot paces under {} req/s, {concurrency} sends open",
        limits.global_limit,
        limits.bucket_limit,
        limits.bucket_window.as_secs(),
        config.global_per_second,
    );

    let body = message();
    let started = Instant::now();
    let failures = stream::iter(1..=channels)
        .map(|channel| client.send_message(Id::new(channel), &body))
        .buffer_unordered(concurrency)
        .filter(|result| std::future::ready(result.is_err()))
        .count()
        .await;
    let sent = server
        .wait_sent(channels as usize, Duration::from_secs(5))
        .await;
    let last = sent.iter().map(|s| s.at).max().expect("messages");
    let elapsed = last.duration_since(started).as_secs_f64();
    let ideal = channels as f64 / f64::from(limits.global_limit);
    let mut distinct: Vec<u64> = sent.iter().map(|s| s.channel_id).collect();
    distinct.sort_unstable();
    distinct.dedup();
    println!(
        "fanout: bot      completed in {elapsed:.2} s; ideal {ideal:.2} s; ratio {:.3} (goal <= 1.05); 429s received {} (goal 0); messages {} to {} channels; failed {failures}",
        elapsed / ideal,
        server.too_many(),
        sent.len(),
        distinct.len(),
    );

    let (engine_secs, engine_429, engine_sent, engine_channels) =
        through_the_engine(channels).await;
    println!(
        "fanout: engine   completed in {engine_secs:.2} s; ideal {ideal:.2} s; ratio {:.3} (goal <= 1.05); 429s received {engine_429} (goal 0); messages {engine_sent} to {engine_channels} channels",
        engine_secs / ideal,
    );

    let (naive_secs, naive_429, naive_sent) = naive_burst(channels).await;
    println!(
        "fanout: baseline naive sender (32 concurrent, no pacing, no retry): {naive_secs:.2} s; 429s received {naive_429}; delivered {naive_sent} of {channels}"
    );
}
