//! Fan-out bench: one event to many chats against a Bot API server that enforces
//! Telegram's limits (answering 429 with `retry_after` past them), through the real bot,
//! a real api over SQLite and the in-process bus.
//!
//! Prints the completion time beside the ideal (chats / overall limit) and the number of
//! 429s received; as a same-run baseline, a naive sender that fires the same number of
//! messages as fast as it can (32 at a time, no pacing) at a fresh server with the same
//! limits, and how many of its messages were refused.
//!
//! `cargo bench -p stargazer-bot-telegram`; environment:
//! - `FANOUT_CHATS` (default 3000): recipients;
//! - `FANOUT_GLOBAL_PER_SECOND` (default 30): the server's overall limit;
//! - `FANOUT_CHAT_INTERVAL_MS` (default 1000): the server's per-chat limit;
//! - `FANOUT_BOT_PER_SECOND` (default: the bot's default, 29): the bot's overall pace.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{live, Platform, RateLimits, RunningBot, TelegramServer};
use futures::stream::{self, StreamExt};
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::{Subscription, User, UserSettings};
use teloxide::prelude::Requester;
use teloxide::types::ChatId;
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn limits(global: usize, chat_interval: Duration) -> RateLimits {
    RateLimits {
        global,
        window: Duration::from_secs(1),
        per_chat: chat_interval,
        retry_after: 1,
    }
}

/// Sends `chats` messages with no pacing at all; returns (seconds, refused).
async fn naive_burst(chats: i64, limits: RateLimits) -> (f64, u64) {
    let tg = TelegramServer::start("42:naive").await.unwrap();
    tg.enforce(limits);
    let bot = teloxide::Bot::new(tg.token.clone()).set_api_url(tg.url.parse().unwrap());
    let started = Instant::now();
    stream::iter(1..=chats)
        .for_each_concurrent(32, |chat| {
            let bot = bot.clone();
            async move {
                let _ = bot.send_message(ChatId(chat), "naive").await;
            }
        })
        .await;
    (started.elapsed().as_secs_f64(), tg.too_many())
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
    let chats: i64 = env_or("FANOUT_CHATS", 3000);
    let global: usize = env_or("FANOUT_GLOBAL_PER_SECOND", 30);
    let chat_interval = Duration::from_millis(env_or("FANOUT_CHAT_INTERVAL_MS", 1000));
    let limits = limits(global, chat_interval);

    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", "Tokino Sora")]).await;
    // Recipients are written straight to storage: setting up 3,000 chats through the
    // api is not what is measured.
    for chat in 1..=chats {
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

    let tg = TelegramServer::start("42:fanout").await.unwrap();
    tg.enforce(limits);
    let bus: Arc<dyn Bus> = stargazer_core::bus::connect("memory://")
        .await
        .expect("memory bus");
    let queue = format!("stargazer.bench.bot-telegram.{}", Uuid::new_v4());
    bus.declare(&QueueSpec::new(queue.clone(), "*", 8))
        .await
        .expect("declare");
    let mut config = platform.bot_config(&tg, &queue);
    if let Some(rate) = std::env::var("FANOUT_BOT_PER_SECOND")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.global_per_second = rate;
    }
    let bot_rate = config.global_per_second;
    let bot = RunningBot::start(config, platform.storage.clone(), bus.clone());
    tg.wait_polling(Duration::from_secs(30)).await;

    println!(
        "fanout: {chats} chats; server enforces {global} msg/s overall and one per {} ms per chat; bot paces at {bot_rate} msg/s",
        chat_interval.as_millis()
    );
    let event = live(entity, "bench stream");
    let started = Instant::now();
    bus.publish("youtube", &event.to_bytes())
        .await
        .expect("publish");
    let timeout = Duration::from_secs_f64(chats as f64 / global as f64 * 3.0 + 60.0);
    let sent = tg.wait_sent(chats as usize, timeout).await;
    let last = sent.iter().map(|s| s.at).max().expect("messages");
    let elapsed = last.duration_since(started).as_secs_f64();
    let ideal = chats as f64 / global as f64;
    let mut distinct: Vec<i64> = sent.iter().map(|s| s.chat_id).collect();
    distinct.sort_unstable();
    distinct.dedup();
    println!(
        "fanout: bot      completed in {elapsed:.2} s; ideal {ideal:.2} s; ratio {:.3} (goal <= 1.05); 429s received {} (goal 0); messages {} to {} chats",
        elapsed / ideal,
        tg.too_many(),
        sent.len(),
        distinct.len()
    );
    bot.shutdown().await;

    let (naive_secs, naive_refused) = naive_burst(chats, limits).await;
    println!(
        "fanout: baseline naive burst (32 in flight, no pacing) of {chats} messages took {naive_secs:.2} s with {naive_refused} refused by 429 ({:.1} %)",
        naive_refused as f64 * 100.0 / chats as f64
    );
}
