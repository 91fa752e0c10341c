//! Push latency, end to end: from the hub's POST of a notification to the Telegram Bot
//! API's `sendMessage` of the announcement, through `stargazer standalone` (SQLite and the
//! in-process bus) with every external service played by its local test server.
//!
//! Two configurations in the same run, both with the default `batch_window_ms = 2000`:
//! - `fixed window` (`batch_idle_instant = false`): every video waits the window before
//!   its `videos.list` call (the behaviour before idle pushes were classified at once);
//! - `instant when idle` (the default): the first push after a quiet window is classified
//!   at once, later ones are batched.
//!
//! Each runs two loads:
//! - idle: `BENCH_SAMPLES` (100) single pushes, each after a quiet window, p50/p99;
//! - burst: `BENCH_BURST` (1000) pushes of distinct videos over 20 channels, 16 posts in
//!   flight: Data API calls used, p50/p99 latency.
//!
//! The test Bot API has no rate limits here (Telegram's 30 msg/s would bound the burst,
//! not the pipeline). `cargo bench -p stargazer-e2e --bench push_latency`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use stargazer_api::types::TaskParams;
use stargazer_e2e::backends::Pair;
use stargazer_e2e::events::marker;
use stargazer_e2e::platform::Platform;
use stargazer_e2e::servers::youtube::{
    new_channel_id, new_video_id, notification_xml, topic, Video,
};
use stargazer_e2e::wait;

const WINDOW_MS: u64 = 2_000;
const CHAT: i64 = 7_000_001;
const BURST_CHANNELS: usize = 20;
const BURST_IN_FLIGHT: usize = 16;
const WAIT: Duration = Duration::from_secs(120);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    mode: &'static str,
    idle: Vec<Duration>,
    burst: Vec<Duration>,
    burst_calls: usize,
    burst_largest_call: usize,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A tracked channel subscribed by the bench chat, with its hub subscription verified.
async fn channel(platform: &Platform, n: usize) -> String {
    let channel = new_channel_id();
    platform.ext.youtube.add_channel(&channel);
    let entity = platform
        .new_entity(
            None,
            &[("en", &format!("Streamer {n}"))],
            &[],
            vec![TaskParams::Youtube {
                channel_id: channel.clone(),
            }],
        )
        .await
        .expect("entity");
    platform
        .subscribe_chat(CHAT, entity.id)
        .await
        .expect("subscription");
    wait::until("the hub verified the subscription", WAIT, || {
        !platform.ext.hub.subscriptions(&topic(&channel)).is_empty()
    })
    .await;
    channel
}

/// Posts a notification of a fresh upload numbered `n` on `channel`; when it was posted.
async fn push(platform: &Platform, channel: &str, n: u64) -> Instant {
    let video = Video::upload(
        &new_video_id(),
        channel,
        &format!("Upload {}", marker(n)),
        Utc::now(),
    );
    let body = notification_xml(&video, Utc::now());
    platform.ext.youtube.put_video(video, false);
    let posted = Instant::now();
    let statuses = platform.ext.hub.publish_now(&topic(channel), &body).await;
    assert_eq!(statuses, vec![Some(202)], "the worker took the push");
    posted
}

/// When the announcement of upload `n` reached the Bot API.
async fn announced(platform: &Platform, n: u64) -> Instant {
    let needle = marker(n);
    platform
        .ext
        .telegram
        .wait_for(CHAT, WAIT, |sent| sent.text.contains(&needle))
        .await
        .at
}

async fn run(mode: &'static str, instant: bool, samples: usize, burst: usize) -> Figures {
    let mut platform = Platform::new(Pair::InProcess).await.expect("platform");
    platform.configs.youtube.batch_window_ms = WINDOW_MS;
    platform.configs.youtube.batch_idle_instant = instant;
    platform.start_all().await.expect("standalone");
    let platform = Arc::new(platform);
    let mut channels = Vec::new();
    for n in 0..BURST_CHANNELS {
        channels.push(channel(&platform, n).await);
    }
    let quiet = Duration::from_millis(WINDOW_MS + 100);

    let mut idle = Vec::new();
    for n in 0..samples as u64 {
        tokio::time::sleep(quiet).await;
        let posted = push(&platform, &channels[0], n).await;
        let at = announced(&platform, n).await;
        idle.push(at.saturating_duration_since(posted));
    }

    tokio::time::sleep(quiet).await;
    let calls_before = platform.ext.youtube.list_requests().len();
    let first = samples as u64;
    let posted: HashMap<u64, Instant> = futures::stream::iter(0..burst as u64)
        .map(|i| {
            let platform = platform.clone();
            let channel = channels[i as usize % channels.len()].clone();
            async move { (first + i, push(&platform, &channel, first + i).await) }
        })
        .buffer_unordered(BURST_IN_FLIGHT)
        .collect()
        .await;
    let mut latencies = Vec::new();
    for (n, at) in &posted {
        latencies.push(
            announced(&platform, *n)
                .await
                .saturating_duration_since(*at),
        );
    }
    let calls = platform.ext.youtube.list_requests();
    let burst_calls = &calls[calls_before..];
    let figures = Figures {
        mode,
        idle,
        burst: latencies,
        burst_calls: burst_calls.len(),
        burst_largest_call: burst_calls.iter().map(|c| c.ids.len()).max().unwrap_or(0),
    };
    match Arc::try_unwrap(platform) {
        Ok(platform) => platform.shutdown().await.expect("shutdown"),
        Err(_) => panic!("the platform is still shared"),
    }
    figures
}

fn main() {
    let samples = env_usize("BENCH_SAMPLES", 100);
    let burst = env_usize("BENCH_BURST", 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut rows = Vec::new();
        for (mode, instant) in [("fixed window", false), ("instant when idle", true)] {
            rows.push(run(mode, instant, samples, burst).await);
        }
        println!(
            "hub POST -> Bot API sendMessage, standalone on SQLite + in-process bus, \
             batch_window_ms = {WINDOW_MS}; idle: {samples} single pushes after a quiet window; \
             burst: {burst} pushes over {BURST_CHANNELS} channels, {BURST_IN_FLIGHT} in flight"
        );
        println!(
            "  {:<18} {:>12} {:>12} {:>12} {:>13} {:>13} {:>13} {:>13}",
            "mode",
            "idle p50 ms",
            "idle p99 ms",
            "idle max ms",
            "burst calls",
            "largest call",
            "burst p50 ms",
            "burst p99 ms"
        );
        for row in &mut rows {
            row.idle.sort();
            row.burst.sort();
            println!(
                "  {:<18} {:>12.1} {:>12.1} {:>12.1} {:>13} {:>13} {:>13.1} {:>13.1}",
                row.mode,
                ms(percentile(&row.idle, 0.50)),
                ms(percentile(&row.idle, 0.99)),
                ms(row.idle.last().copied().unwrap_or_default()),
                row.burst_calls,
                row.burst_largest_call,
                ms(percentile(&row.burst, 0.50)),
                ms(percentile(&row.burst, 0.99)),
            );
        }
        let instant = &rows[1];
        println!(
            "  instant when idle: idle p99 {:.1} ms (goal < 300 ms), burst {} Data API calls (goal <= 25)",
            ms(percentile(&instant.idle, 0.99)),
            instant.burst_calls
        );
    });
}
