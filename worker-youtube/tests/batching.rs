//! Data API spending: notifications are classified in batches of up to 50 ids per
//! `videos.list` call (one quota unit each), so 1,000 notifications cost about 20 units.
//! Prints the figure; asserts the batching behaviour.
//!
//! `cargo test -p stargazer-worker-youtube --test batching -- --nocapture`

mod support;

use prometheus::Registry;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use stargazer_core::bus;
use stargazer_core::model::{Task, TaskParams};
use stargazer_core::storage;
use stargazer_core::CancellationToken;
use stargazer_worker_youtube::{YoutubeConfig, YoutubeRunner};
use support::*;
use uuid::Uuid;

const NOTIFICATIONS: usize = 1000;
const CHANNELS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_notifications_cost_about_twenty_units() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start("k").await.unwrap();
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let bus = bus::connect(AMQP_URL).await.unwrap();
    let mut observer = Observer::start(OBSERVER, &["youtube"]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = YoutubeConfig {
        api_key: "k".into(),
        data_api_base: yt.base.clone(),
        hub_url: hub.url.clone(),
        feed_base: yt.base.clone(),
        public_url: format!("http://127.0.0.1:{port}"),
        poll_interval_seconds: 0,
        // Long enough that only the final batch can be partial on any machine.
        batch_window_ms: 5000,
        hub_concurrency: 16,
        ..YoutubeConfig::default()
    };
    let shutdown = CancellationToken::new();
    let (registry, stop) = (Registry::new(), shutdown.clone());
    let runner =
        YoutubeRunner::new(config, storage.clone(), storage, bus, &registry, stop).unwrap();
    let serving = runner.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await.unwrap() });

    let entity = Uuid::new_v4();
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        let channel = new_channel_id();
        yt.add_channel(&channel);
        runner
            .start(Task {
                id: Uuid::new_v4(),
                entity,
                params: TaskParams::Youtube {
                    channel_id: channel.clone(),
                },
            })
            .await
            .unwrap();
        channels.push(channel);
    }
    eventually("all verified", Duration::from_secs(30), || {
        runner.metrics().active_subscriptions() == CHANNELS as i64
    })
    .await;
    // Let the first syncs (empty feeds, no API calls) finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls_before = yt.list_calls();

    let now = Utc::now();
    let mut pushes = Vec::new();
    for i in 0..NOTIFICATIONS {
        let channel = &channels[i % CHANNELS];
        let video = format!("{:011}", i);
        let video = format!("{}{}", &unique()[..3], &video[3..]);
        let video = Video::upload(&video, channel, "batched", now);
        pushes.push((topic(channel), notification_xml(&video, now)));
        yt.put_video(video, false);
    }
    let hub_ref = &hub;
    futures::stream::iter(pushes)
        .for_each_concurrent(16, |(topic, body)| async move {
            assert_eq!(hub_ref.publish_now(&topic, &body).await, vec![Some(202)]);
        })
        .await;
    observer
        .wait_for(entity, NOTIFICATIONS, Duration::from_secs(120))
        .await;

    let calls = yt.list_calls() - calls_before;
    let per_call: Vec<usize> = yt.list_requests().iter().map(|r| r.ids.len()).collect();
    println!(
        "Data API: {NOTIFICATIONS} notifications of {NOTIFICATIONS} distinct videos -> {calls} videos.list calls \
         = {calls} quota units ({:.1} units per 1,000 notifications; largest call {} ids); \
         baseline one call per notification: {NOTIFICATIONS} units",
        calls as f64 * 1000.0 / NOTIFICATIONS as f64,
        per_call.iter().max().unwrap()
    );
    assert!(per_call.iter().all(|n| *n <= 50));
    assert!(
        calls as usize <= NOTIFICATIONS.div_ceil(50) + 1,
        "{calls} calls for {NOTIFICATIONS} videos: batching is not working"
    );
    assert_eq!(runner.metrics().api_videos(), NOTIFICATIONS as u64);
    let events = observer.settle(entity, Duration::from_millis(500)).await;
    assert_eq!(events.len(), NOTIFICATIONS);

    shutdown.cancel();
    runner.join().await;
    server.await.unwrap();
}
