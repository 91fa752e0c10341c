//! Interleaving bench: while one event fans out to many chats, a `youtube.live` event
//! for 10 other chats arrives. How long until those 10 chats have it?
//!
//! The real bot, a real api over SQLite and the in-process bus, against a Bot API server
//! that enforces Telegram's limits (429 with `retry_after` past them). Run twice in one
//! process on the same chats: with fair turns (`telegram.fair_fanout = true`, the
//! default) and, as the baseline, in arrival order (`false`: every chat of an event
//! before any chat of a later one, which is how the engine sent before fair turns).
//! Prints, for each, the live event's wait, the long fan-out's completion time against
//! its ideal (chats / overall limit) and the 429s received.
//!
//! `cargo bench -p stargazer-bot-telegram --bench interleave`; environment:
//! - `INTERLEAVE_CHATS` (default 3000): chats of the long fan-out;
//! - `INTERLEAVE_AFTER_SECS` (default 10): when the live event is published, seconds
//!   after the long one;
//! - `INTERLEAVE_GLOBAL_PER_SECOND` (default 30): the server's overall limit.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{event, live, Platform, RateLimits, RunningBot, TelegramServer};
use serde_json::json;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::{Subscription, User, UserSettings};
use uuid::Uuid;

/// Chat ids of the live event's chats start here, far from the long fan-out's.
const LIVE_CHATS_FROM: i64 = 1_000_000;
/// Chats of the live event.
const LIVE_CHATS: i64 = 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench());
}

/// Subscribes chats `chats` to `entity`, straight in storage (setting up thousands of
/// chats through the api is not what is measured).
async fn subscribe(platform: &Platform, entity: Uuid, chats: impl Iterator<Item = i64>) {
    for chat in chats {
        let user = User {
            id: Uuid::new_v4(),
            im: "telegram".into(),
            im_chat_id: chat.to_string(),
            name: format!("chat {chat}"),
            language: "en".into(),
            settings: UserSettings::default(),
            created_at: Utc::now(),
        };
        platform
            .storage
            .insert_user(&user)
            .await
            .expect("insert user");
        platform
            .storage
            .put_subscription(&Subscription {
                user: user.id,
                entity,
                kinds: vec![],
                mention: None,
            })
            .await
            .expect("insert subscription");
    }
}

/// What one run measured.
struct Run {
    /// From the live event's publication until its 10th chat had it.
    live_wait: f64,
    /// From the long event's publication until its last chat had it.
    fanout: f64,
    /// 429s received.
    too_many: u64,
}

async fn run(
    platform: &Platform,
    uploads: Uuid,
    streams: Uuid,
    chats: i64,
    fair: bool,
    limits: RateLimits,
    after: Duration,
) -> Run {
    let tg = TelegramServer::start("42:interleave")
        .await
        .expect("server");
    tg.enforce(limits);
    let bus: Arc<dyn Bus> = stargazer_core::bus::connect("memory://")
        .await
        .expect("memory bus");
    let queue = format!("stargazer.bench.bot-telegram.{}", Uuid::new_v4());
    bus.declare(&QueueSpec::new(queue.clone(), "*", 8))
        .await
        .expect("declare");
    let mut config = platform.bot_config(&tg, &queue);
    config.fair_fanout = fair;
    let bot = RunningBot::start(config, platform.storage.clone(), bus.clone());
    tg.wait_polling(Duration::from_secs(30)).await;

    let upload = event(
        "youtube.video",
        uploads,
        json!({"title": "bench upload", "link": "https://www.youtube.com/watch?v=up"}),
    );
    let started = Instant::now();
    bus.publish("youtube", &upload.to_bytes())
        .await
        .expect("publish");
    tokio::time::sleep(after).await;
    let going_live = live(streams, "bench stream");
    let live_published = Instant::now();
    bus.publish("youtube", &going_live.to_bytes())
        .await
        .expect("publish");
    let total = (chats + LIVE_CHATS) as usize;
    let timeout = Duration::from_secs_f64(chats as f64 / 10.0 + 120.0);
    let sent = tg.wait_sent(total, timeout).await;
    let live_last = sent
        .iter()
        .filter(|s| s.chat_id >= LIVE_CHATS_FROM)
        .map(|s| s.at)
        .max()
        .expect("live messages");
    let fanout_last = sent
        .iter()
        .filter(|s| s.chat_id < LIVE_CHATS_FROM)
        .map(|s| s.at)
        .max()
        .expect("upload messages");
    let run = Run {
        live_wait: live_last.duration_since(live_published).as_secs_f64(),
        fanout: fanout_last.duration_since(started).as_secs_f64(),
        too_many: tg.too_many(),
    };
    bot.shutdown().await;
    run
}

async fn bench() {
    let chats: i64 = env_or("INTERLEAVE_CHATS", 3000);
    let after = Duration::from_secs(env_or("INTERLEAVE_AFTER_SECS", 10));
    let global: usize = env_or("INTERLEAVE_GLOBAL_PER_SECOND", 30);
    let limits = RateLimits {
        global,
        window: Duration::from_secs(1),
        per_chat: Duration::from_secs(1),
        retry_after: 1,
    };

    let platform = Platform::start().await;
    let uploads = platform.entity(&[("en", "Tokino Sora")]).await;
    let streams = platform.entity(&[("en", "Hoshimachi Suisei")]).await;
    subscribe(&platform, uploads, 1..=chats).await;
    subscribe(
        &platform,
        streams,
        LIVE_CHATS_FROM..LIVE_CHATS_FROM + LIVE_CHATS,
    )
    .await;
    println!(
        "interleave: an upload to {chats} chats; {}s later a live event to {LIVE_CHATS} other chats; server enforces {global} msg/s overall, 1 per s per chat",
        after.as_secs()
    );
    let ideal = (chats + LIVE_CHATS) as f64 / global as f64;
    for (name, fair) in [("fair turns", true), ("baseline arrival order", false)] {
        let run = run(&platform, uploads, streams, chats, fair, limits, after).await;
        println!(
            "interleave: {name:<22} live event reached its {LIVE_CHATS} chats in {:.2} s (goal < 2); the upload's fan-out completed in {:.2} s, ideal {ideal:.2} s (ratio {:.3}); 429s received {}",
            run.live_wait,
            run.fanout,
            run.fanout / ideal,
            run.too_many
        );
    }
}
