//! Fault tests on the production pair (MongoDB-wire server + RabbitMQ). Each test has a
//! database and a RabbitMQ virtual host of its own, so they run in parallel.
//!
//! - A YouTube worker is killed: the coordinator moves its channels to the other worker,
//!   which subscribes at the hub and, through its fallback feed poll, recovers what the
//!   hub could not deliver to the dead worker; every upload reaches every chat once.
//! - middleware-delay is killed with messages pending: nothing fires while it is down;
//!   after a restart every pending message (and those queued meanwhile) is delivered
//!   once.
//! - The api restarts while the bot fans events out: the bot retries its lookups and
//!   finishes, each (event, chat) once.
//!
//! The broker-wide connection loss is in `fault_connections.rs`, a test binary of its
//! own.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use stargazer_api::types::TaskParams;
use stargazer_e2e::backends::Pair;
use stargazer_e2e::events::{exactly_once, marker, numbered, publish_all, tally};
use stargazer_e2e::platform::Platform;
use stargazer_e2e::servers::youtube::{new_channel_id, new_video_id, topic, Video};
use stargazer_e2e::{unique, wait};

const T: Duration = Duration::from_secs(60);
/// Deadline for delivering a few hundred messages: the three tests of this file share
/// one MongoDB-wire test server, which then stores only a few dozen deliveries a second.
const BULK: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_s_channels_move_and_no_upload_is_lost() {
    let mut platform = Platform::new(Pair::Production).await.unwrap();
    // The fallback feed poll is what recovers notifications the hub could not deliver.
    platform.configs.youtube.poll_interval_seconds = 1;
    platform.start_api().await.unwrap();
    platform.start_coordinator().await.unwrap();
    platform.start_bot().await.unwrap();
    let url_a = platform.start_youtube_worker("a").await.unwrap();
    let url_b = platform.start_youtube_worker("b").await.unwrap();
    let ext = &platform.ext;

    let channels: Vec<String> = (0..8).map(|_| new_channel_id()).collect();
    for channel in &channels {
        ext.youtube.add_channel(channel);
    }
    let tasks = channels
        .iter()
        .map(|c| TaskParams::Youtube {
            channel_id: c.clone(),
        })
        .collect();
    let entity = platform
        .new_entity(None, &[("en", "Shirakami Fubuki")], &[], tasks)
        .await
        .unwrap();
    let chats = [5101, 5102];
    for chat in chats {
        platform.subscribe_chat(chat, entity.id).await.unwrap();
    }

    // Every channel is subscribed at the hub by one worker and has had its first feed
    // poll (which records the channel's history without announcing it).
    wait::until("every channel is subscribed and synced", T, || {
        channels.iter().all(|c| {
            ext.hub.subscriptions(&topic(c)).len() == 1 && ext.youtube.feed_requests_for(c) >= 2
        })
    })
    .await;
    let holder = |c: &String| ext.hub.subscriptions(&topic(c))[0].callback.clone();
    let on_a = channels
        .iter()
        .filter(|c| holder(c).starts_with(&url_a))
        .count();
    let (victim, victim_url, survivor, survivor_url) = if on_a * 2 >= channels.len() {
        ("a", url_a, "b", url_b)
    } else {
        ("b", url_b, "a", url_a)
    };
    let moved: Vec<String> = channels
        .iter()
        .filter(|c| holder(c).starts_with(&victim_url))
        .cloned()
        .collect();
    assert!(!moved.is_empty(), "the killed worker held channels");

    platform.kill(&format!("worker-youtube-{victim}")).unwrap();

    // A new upload on every channel, right away: the hub pushes it (to a dead callback for
    // the moved channels, retrying) and the feed lists it.
    for (n, channel) in channels.iter().enumerate() {
        let video = Video::upload(
            &new_video_id(),
            channel,
            &format!("Upload {}", marker(n as u64)),
            Utc::now(),
        );
        ext.youtube.put_video(video.clone(), true);
        let push = ext.youtube.push_xml(&video.id, Utc::now()).unwrap();
        assert_eq!(ext.hub.publish(&topic(channel), &push), 1);
    }

    ext.telegram
        .wait_sent(channels.len() * chats.len(), T)
        .await;
    // Redeliveries, later polls and the new subscription must not repeat anything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    exactly_once(&ext.telegram.sent(), 0..channels.len() as u64, &chats).unwrap();

    // The moved channels now belong to the survivor, at the coordinator and at the hub.
    wait::until("the survivor subscribed to every moved channel", T, || {
        moved.iter().all(|c| {
            ext.hub
                .subscriptions(&topic(c))
                .iter()
                .any(|s| s.callback.starts_with(&survivor_url))
        })
    })
    .await;
    let status = platform.coordinator_status().await.unwrap();
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    let held_by = |id: &str| {
        workers
            .iter()
            .find(|w| w["id"] == id)
            .and_then(|w| w["tasks"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(
        held_by(&format!("worker-youtube-{survivor}")),
        channels.len() as u64,
        "{status:#}"
    );
    assert_eq!(
        held_by(&format!("worker-youtube-{victim}")),
        0,
        "{status:#}"
    );
    assert!(
        ext.hub
            .attempts()
            .iter()
            .any(|a| a.callback.starts_with(&victim_url) && a.status.is_none()),
        "the hub found the killed worker gone"
    );

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_delay_middleware_delivers_every_pending_message_after_restart() {
    let platform = Platform::new(Pair::Production).await.unwrap();
    platform.start_api().await.unwrap();
    platform.start_delay().await.unwrap();
    platform.start_bot().await.unwrap();
    let entity = platform
        .new_entity(None, &[("en", "Usada Pekora")], &[], vec![])
        .await
        .unwrap();
    let chat = 5201;
    platform.subscribe_chat(chat, entity.id).await.unwrap();
    let run = unique();
    const PENDING: u64 = 300;
    const WHILE_DOWN: u64 = 100;
    let reminder = |n: u64, due_ms: i64| {
        let mut event = numbered("youtube.reminder", entity.id, n, &run);
        event.control.insert("x-delay-at".into(), json!(due_ms));
        event
            .control
            .insert("x-delay-id".into(), json!(format!("reminder:{run}-{n}")));
        ("youtube.delay".to_owned(), event)
    };

    // Far enough ahead that all of them are held before the first falls due, even on a
    // loaded machine where the MongoDB-wire server stores a few dozen a second.
    let due = Utc::now().timestamp_millis() + 20_000;
    publish_all(
        &platform.bus,
        (0..PENDING).map(|n| reminder(n, due)).collect(),
        64,
    )
    .await
    .unwrap();
    wait::until_some("every message is stored as pending", T, || async {
        let stored = platform.storage.list_delayed(None, 100_000).await.ok()?;
        (stored.len() as u64 == PENDING).then_some(())
    })
    .await;
    assert!(
        tally(&platform.ext.telegram.sent_to(chat)).is_empty(),
        "fired early"
    );

    platform.kill("middleware-delay").unwrap();
    // More arrive while it is down; they wait in its queue.
    let soon = Utc::now().timestamp_millis() + 500;
    publish_all(
        &platform.bus,
        (PENDING..PENDING + WHILE_DOWN)
            .map(|n| reminder(n, soon))
            .collect(),
        64,
    )
    .await
    .unwrap();
    // Everything falls due while it is down, and nothing is delivered.
    let wait_ms = (due - Utc::now().timestamp_millis()).max(0) as u64 + 1_000;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    assert!(
        tally(&platform.ext.telegram.sent_to(chat)).is_empty(),
        "fired while down"
    );

    platform.start_delay().await.unwrap();
    platform
        .ext
        .telegram
        .wait_sent((PENDING + WHILE_DOWN) as usize, BULK)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    exactly_once(
        &platform.ext.telegram.sent(),
        0..PENDING + WHILE_DOWN,
        &[chat],
    )
    .unwrap();
    wait::until_some("nothing is left pending", T, || async {
        let stored = platform.storage.list_delayed(None, 10).await.ok()?;
        stored.is_empty().then_some(())
    })
    .await;
    // The restarted process reports on its metrics_listen what it did: the pending ones
    // reloaded and fired, the ones that queued up while it was down forwarded at once
    // (due already), nothing left pending.
    let metrics = platform.metrics("middleware-delay").await.unwrap();
    let value = |series: &str| metric_value(&metrics, series);
    assert_eq!(
        value("stargazer_delay_fired_total"),
        Some(PENDING as f64),
        "{metrics}"
    );
    assert_eq!(
        value("stargazer_middleware_messages_total{middleware=\"delay\",outcome=\"forwarded\"}"),
        Some(WHILE_DOWN as f64),
        "{metrics}"
    );
    assert_eq!(value("stargazer_delay_pending"), Some(0.0), "{metrics}");

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bot_retries_while_the_api_restarts_and_finishes_the_fan_out() {
    let platform = Platform::new(Pair::Production).await.unwrap();
    platform.start_api().await.unwrap();
    platform.start_bot().await.unwrap();
    let entity = platform
        .new_entity(None, &[("en", "Houshou Marine")], &[], vec![])
        .await
        .unwrap();
    let chats = [5301, 5302, 5303];
    for chat in chats {
        platform.subscribe_chat(chat, entity.id).await.unwrap();
    }
    const EVENTS: u64 = 300;
    let total = EVENTS as usize * chats.len();
    let run = unique();
    let messages = (0..EVENTS)
        .map(|n| {
            (
                "youtube".to_owned(),
                numbered("youtube.video", entity.id, n, &run),
            )
        })
        .collect();
    let bus = platform.bus.clone();
    let publisher = tokio::spawn(async move { publish_all(&bus, messages, 64).await });

    let tg = &platform.ext.telegram;
    wait::until("the fan-out is under way", T, || tg.sent_len() >= total / 8).await;
    platform.stop("api").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during_outage = tg.sent_len();
    assert!(
        during_outage < total,
        "the fan-out cannot finish without the api"
    );

    platform.start_api().await.unwrap();
    publisher.await.unwrap().unwrap();
    tg.wait_sent(total, BULK).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    exactly_once(&tg.sent(), 0..EVENTS, &chats).unwrap();
    // The bot's metrics_listen shows the same: every event delivered once, every message
    // sent once, although lookups failed while the api was down.
    let metrics = platform.metrics("bot-telegram").await.unwrap();
    let value = |series: &str| metric_value(&metrics, series);
    assert_eq!(
        value("stargazer_bot_events_total{im=\"telegram\",outcome=\"delivered\"}"),
        Some(EVENTS as f64),
        "{metrics}"
    );
    assert_eq!(
        value("stargazer_bot_send_attempts_done_total{im=\"telegram\"}"),
        Some(total as f64),
        "{metrics}"
    );

    platform.shutdown().await.unwrap();
}

/// The value of the sample `series` (name and labels as exposed) in a Prometheus text
/// exposition.
fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}
