//! `stargazer standalone` end to end, on both backend pairs, with every external service
//! played by a local server speaking its protocol:
//!
//! 1. an admin creates an entity with a YouTube channel and an X account (RPC
//!    `newEntity`); the coordinator hands the tasks to the workers, the YouTube worker
//!    subscribes to the channel's topic at the hub, the X worker records the timeline;
//! 2. a chat subscribes through the bot (`/start`, `/subscribe`, the inline keyboard);
//! 3. the hub notifies an upcoming stream → the chat gets "scheduled" at once, the
//!    reminder when the delay middleware fires it (scheduled start − reminder lead), and
//!    "live" only once the Data API shows the stream started (the live-check middleware
//!    holds it until then);
//! 4. a tweet arrives translated by DeepL, with the original quoted.
//!
//! Times are compressed through configuration (`youtube.reminder_lead_seconds`, poll
//! intervals in milliseconds), never by skipping a step.

use std::time::{Duration, Instant};

use chrono::Utc;
use stargazer_api::types::TaskParams;
use stargazer_e2e::backends::Pair;
use stargazer_e2e::platform::{Platform, STANDALONE_WORKER_ID};
use stargazer_e2e::servers::telegram::Sent;
use stargazer_e2e::servers::x::new_user_id;
use stargazer_e2e::servers::youtube::{new_channel_id, new_video_id, topic, Broadcast, Video};
use stargazer_e2e::wait;

const T: Duration = Duration::from_secs(30);
/// How long before the scheduled start the reminder fires.
const LEAD_SECONDS: u64 = 3;
/// How far ahead the stream is scheduled.
const START_IN_SECONDS: i64 = 7;

/// The instant at which the UTC time `at` occurs, given one pair of readings of both
/// clocks.
fn instant_of(at: chrono::DateTime<Utc>, base: (Instant, chrono::DateTime<Utc>)) -> Instant {
    let offset = (at - base.1).to_std().unwrap_or_default();
    base.0 + offset
}

fn count(sent: &[Sent], needle: &str) -> usize {
    sent.iter().filter(|s| s.text.contains(needle)).count()
}

async fn scheduled_stream_reminder_live_and_translated_tweet(pair: Pair) {
    let mut platform = Platform::new(pair).await.unwrap();
    platform.configs.youtube.reminder_lead_seconds = LEAD_SECONDS;
    platform.start_all().await.unwrap();
    let ext = &platform.ext;

    let channel = new_channel_id();
    let account = new_user_id();
    ext.youtube.add_channel(&channel);
    ext.x.add_account(&account);
    ext.x.post(&account, "昨日の配信ありがとう", "ja");

    // 1. The admin creates the entity with both tasks.
    let entity = platform
        .new_entity(
            None,
            &[("en", "Hoshimachi Suisei"), ("ja", "星街すいせい")],
            &["en"],
            vec![
                TaskParams::Youtube {
                    channel_id: channel.clone(),
                },
                TaskParams::Twitter {
                    user_id: account.clone(),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(entity.tasks.len(), 2);

    // 2. A chat subscribes through the bot.
    let chat = 42_4242;
    platform
        .subscribe_through_bot(chat, "Hoshimachi Suisei")
        .await;

    // The YouTube worker holds a verified subscription; the X worker polled past its
    // first look at the timeline (which records history without announcing it).
    wait::until("the hub verified the worker's subscription", T, || {
        !ext.hub.subscriptions(&topic(&channel)).is_empty()
    })
    .await;
    wait::until("the X worker polled the timeline twice", T, || {
        ext.x.requests() >= 2
    })
    .await;
    // The coordinator gave one task to each worker, and both stay connected.
    let status = wait::until_some("each worker holds its task", T, || async {
        let status = platform.coordinator_status().await.ok()?;
        let holds = |id: &str| {
            status["workers"]
                .as_array()
                .and_then(|ws| ws.iter().find(|w| w["id"] == id))
                .is_some_and(|w| w["connected"] == true && w["tasks"] == 1)
        };
        let youtube = format!("{STANDALONE_WORKER_ID}-youtube");
        let twitter = format!("{STANDALONE_WORKER_ID}-twitter");
        (holds(&youtube) && holds(&twitter) && status["settled"] == true).then_some(status)
    })
    .await;
    assert_eq!(status["unassigned_count"], 0, "{status:#}");

    // 3. An upcoming stream is announced by the hub.
    let video = new_video_id();
    let title = "Stellar Stellar 3D LIVE";
    let start = Utc::now() + chrono::Duration::seconds(START_IN_SECONDS);
    let start = start - chrono::Duration::nanoseconds(start.timestamp_subsec_nanos().into());
    ext.youtube.put_video(
        Video {
            id: video.clone(),
            channel_id: channel.clone(),
            title: title.to_owned(),
            published: Utc::now(),
            broadcast: Broadcast::Upcoming(start),
            description: String::new(),
            duration_seconds: 0,
            short: false,
        },
        true,
    );
    let clocks = (Instant::now(), Utc::now());
    let push = ext.youtube.push_xml(&video, Utc::now()).unwrap();
    assert_eq!(
        ext.hub.publish(&topic(&channel), &push),
        1,
        "one subscriber"
    );

    let scheduled = ext
        .telegram
        .wait_for(chat, T, |s| s.text.contains("scheduled a stream"))
        .await;
    assert!(
        scheduled.text.contains("Hoshimachi Suisei"),
        "{}",
        scheduled.text
    );
    assert!(scheduled.text.contains(title), "{}", scheduled.text);
    assert!(
        scheduled
            .buttons()
            .iter()
            .any(|(_, url)| url.contains(&video)),
        "{scheduled:?}"
    );

    // 4. Meanwhile a tweet in Japanese: it arrives translated, the original quoted.
    let tweet_text = "みんな、今夜の配信きてね！";
    ext.deepl
        .learn(tweet_text, "EN-US", "Everyone, come to tonight's stream!");
    ext.x.post(&account, tweet_text, "ja");
    let tweet = ext
        .telegram
        .wait_for(chat, T, |s| s.text.contains("posted"))
        .await;
    assert!(
        tweet.text.contains("Everyone, come to tonight's stream!"),
        "{}",
        tweet.text
    );
    assert!(
        tweet.text.contains(tweet_text),
        "original kept: {}",
        tweet.text
    );
    assert!(tweet.raw.contains("<blockquote>"), "{}", tweet.raw);
    assert!(ext.deepl.calls() >= 1);

    // The reminder, not before scheduled start − lead.
    let reminder = ext
        .telegram
        .wait_for(chat, T, |s| s.text.contains("goes live soon"))
        .await;
    let due = instant_of(
        start - chrono::Duration::seconds(LEAD_SECONDS as i64),
        clocks,
    );
    assert!(
        reminder.at + Duration::from_millis(250) >= due,
        "reminder {:?} before its time",
        due.saturating_duration_since(reminder.at)
    );
    assert!(reminder.text.contains(title), "{}", reminder.text);

    // Past the scheduled start the stream has not begun: "live" is held.
    let after_start = instant_of(start, clocks) + Duration::from_millis(1500);
    tokio::time::sleep_until(after_start.into()).await;
    assert_eq!(
        count(&ext.telegram.sent_to(chat), "is live"),
        0,
        "live announced before the stream started"
    );
    let started_at = Instant::now();
    assert!(ext.youtube.set_broadcast(
        &video,
        Broadcast::Live {
            scheduled: start,
            started: Utc::now(),
        },
    ));
    let live = ext
        .telegram
        .wait_for(chat, T, |s| s.text.contains("is live"))
        .await;
    assert!(
        live.at >= started_at,
        "live announced before the Data API showed the start"
    );
    assert!(live.text.contains(title), "{}", live.text);

    // Each exactly once, in order.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = ext.telegram.sent_to(chat);
    for needle in ["scheduled a stream", "goes live soon", "is live", "posted"] {
        assert_eq!(
            count(&sent, needle),
            1,
            "{needle}: {:#?}",
            sent.iter().map(|s| &s.text).collect::<Vec<_>>()
        );
    }
    assert!(scheduled.at < reminder.at && reminder.at < live.at);

    // 5. Standalone's api serves the metrics of every service in the process, and they
    //    counted what just happened.
    let metrics = reqwest::get(format!("{}/metrics", platform.api_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "stargazer_api_requests_total{",
        "stargazer_coordinator_workers{kind=\"youtube\"} 1",
        "stargazer_youtube_notifications_total{",
        "stargazer_twitter_events_published_total{",
        "stargazer_middleware_messages_total{middleware=\"delay\",outcome=\"held\"}",
        "stargazer_middleware_messages_total{middleware=\"translate\",outcome=\"forwarded\"}",
        "stargazer_middleware_messages_total{middleware=\"live_check\",outcome=\"held\"}",
        "stargazer_bot_events_total{im=\"telegram\",outcome=\"delivered\"} 4",
    ] {
        assert!(metrics.contains(family), "no {family} in:\n{metrics}");
    }

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_pair() {
    scheduled_stream_reminder_live_and_translated_tweet(Pair::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn production_pair() {
    scheduled_stream_reminder_live_and_translated_tweet(Pair::Production).await;
}
