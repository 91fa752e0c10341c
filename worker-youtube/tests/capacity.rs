//! Capacity bench: how many channels one worker holds, subscriptions plus renewals, against
//! the local hub. Ignored by default (it runs for about a minute); run it with
//!
//! `cargo test --release -p stargazer-worker-youtube --test capacity -- --ignored --nocapture`
//!
//! Set `CHANNELS` (default 2000) and `LEASE_SECONDS` (default 20) to vary it. The baseline
//! printed beside it is the same number of subscribe + verify round trips made by a bare
//! client against the same kind of hub, with the same concurrency and no worker at all.

mod support;

use prometheus::Registry;
use std::time::{Duration, Instant};

use chrono::Utc;
use stargazer_core::bus;
use stargazer_core::model::{Task, TaskParams};
use stargazer_core::storage;
use stargazer_core::CancellationToken;
use stargazer_worker_youtube::{YoutubeConfig, YoutubeRunner};
use support::*;
use uuid::Uuid;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Subscribes `channels` topics from a bare loop whose callback only echoes challenges.
async fn baseline(channels: usize, concurrency: usize) -> Duration {
    use axum::extract::Query;
    use futures::StreamExt;
    use std::collections::HashMap;

    let hub = Hub::start().await.unwrap();
    let echo = axum::Router::new().route(
        "/cb/{id}",
        axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
            q.get("hub.challenge").cloned().unwrap_or_default()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, echo).await.unwrap() });
    let http = reqwest::Client::new();
    let started = Instant::now();
    futures::stream::iter(0..channels)
        .for_each_concurrent(concurrency, |i| {
            let http = http.clone();
            let url = hub.url.clone();
            async move {
                let callback = format!("http://{addr}/cb/{i}");
                let topic = topic(&format!("UCbaseline{i:014}"));
                let form = [
                    ("hub.mode", "subscribe"),
                    ("hub.topic", topic.as_str()),
                    ("hub.callback", callback.as_str()),
                    ("hub.secret", "s"),
                    ("hub.lease_seconds", "432000"),
                ];
                let status = http.post(&url).form(&form).send().await.unwrap().status();
                assert_eq!(status, 202);
            }
        })
        .await;
    eventually("baseline verified", Duration::from_secs(600), || {
        hub.verified() as usize == channels
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bench: run with --release -- --ignored --nocapture"]
async fn channels_held_by_one_worker() {
    let channels = env_or("CHANNELS", 2000) as usize;
    let lease = env_or("LEASE_SECONDS", 20);
    let hub = Hub::start().await.unwrap();
    hub.grant_lease(lease);
    let yt = Youtube::start("k").await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let bus = bus::connect(AMQP_URL).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = YoutubeConfig {
        api_key: "k".into(),
        data_api_base: yt.base.clone(),
        hub_url: hub.url.clone(),
        feed_base: yt.base.clone(),
        public_url: format!("http://127.0.0.1:{port}"),
        poll_interval_seconds: 0,
        ..YoutubeConfig::default()
    };
    let shutdown = CancellationToken::new();
    let (registry, stop) = (Registry::new(), shutdown.clone());
    let runner = YoutubeRunner::new(
        config.clone(),
        storage.clone(),
        storage,
        bus,
        &registry,
        stop,
    )
    .unwrap();
    let serving = runner.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await.unwrap() });
    let baseline = baseline(channels, config.hub_concurrency).await;
    let rss_before = rss_kib();

    let started = Instant::now();
    let entity = Uuid::new_v4();
    for _ in 0..channels {
        let channel = new_channel_id();
        yt.add_channel(&channel);
        runner
            .start(Task {
                id: Uuid::new_v4(),
                entity,
                params: TaskParams::Youtube {
                    channel_id: channel,
                },
            })
            .await
            .unwrap();
    }
    eventually("all verified", Duration::from_secs(600), || {
        runner.metrics().active_subscriptions() == channels as i64
    })
    .await;
    let subscribe_time = started.elapsed();
    let first_round = hub.subscribe_requests();

    // Hold them through at least two renewal rounds.
    let hold = Duration::from_secs(lease * 2 + lease / 2);
    let hold_start = Instant::now();
    let mut expired_seen = 0usize;
    while hold_start.elapsed() < hold {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Utc::now();
        expired_seen = expired_seen.max(
            hub.all_subscriptions()
                .iter()
                .filter(|s| s.verified_at + chrono::Duration::seconds(s.lease_seconds as i64) < now)
                .count(),
        );
    }
    let renewals = hub.subscribe_requests() - first_round;
    let held = hub.all_subscriptions().len();
    let rss_after = rss_kib();
    println!(
        "capacity: {channels} channels, lease {lease} s (renewal at lease/2 = {} s)",
        lease / 2
    );
    println!(
        "  subscribe + verify all: {:.2?} ({:.0} subscriptions/s, hub_concurrency {})",
        subscribe_time,
        channels as f64 / subscribe_time.as_secs_f64(),
        config.hub_concurrency
    );
    println!(
        "  baseline (bare client, same hub, same concurrency, no worker): {:.2?} ({:.0} subscriptions/s)",
        baseline,
        channels as f64 / baseline.as_secs_f64()
    );
    println!(
        "  held for {:.0?}: {renewals} renewals ({:.0}/s), {held} subscriptions at the hub, \
         max expired at any check: {expired_seen}",
        hold,
        renewals as f64 / hold.as_secs_f64()
    );
    println!(
        "  active per worker metric: {}, process RSS (worker + fake hub) {} MiB -> {} MiB",
        runner.metrics().active_subscriptions(),
        rss_before / 1024,
        rss_after / 1024
    );
    println!(
        "  at the production lease (432000 s, renewed 1 day early) {channels} channels need {:.4} renewals/s",
        channels as f64 / (432_000.0 - 86_400.0)
    );
    assert_eq!(held, channels);
    assert_eq!(expired_seen, 0, "some leases ran out before renewal");
    shutdown.cancel();
    runner.join().await;
    server.await.unwrap();
}
