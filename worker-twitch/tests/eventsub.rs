//! The worker against the Twitch server: subscriptions verified through the callback,
//! notifications turned into events on a RabbitMQ virtual host of the test's own,
//! forgeries and replays refused, revocations repaired.

mod support;

use std::time::Duration;

use serde_json::json;
use stargazer_core::contract::{field, kind};
use stargazer_worker_twitch::NonLiveStreams;
use support::*;
use uuid::Uuid;

const QUIET: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_goes_live_once_and_ends_with_the_same_stream_id() {
    let mut env = env().await;
    let mut ready = env.ready().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let worker = Worker::start(config(&twitch), &env).await;
    let broadcaster = twitch.add_user("Pekora");
    let entity = Uuid::new_v4();
    worker
        .runner
        .start(task(entity, &broadcaster))
        .await
        .unwrap();
    // Subscribed, and each verification challenge answered through the callback.
    wait_enabled(&twitch, &broadcaster).await;
    let created = twitch.subscriptions();
    assert!(created.iter().all(|s| s.callback == worker.callback));
    let versions: Vec<(String, String)> = created
        .iter()
        .map(|s| (s.kind.clone(), s.version.clone()))
        .collect();
    assert!(versions.contains(&("channel.update".into(), "2".into())));
    assert_eq!(
        worker
            .runner
            .metrics()
            .notifications_with("stream.online", "verified"),
        1
    );

    twitch.go_live(&broadcaster, "40001", "Minecraft with friends", "Minecraft");
    let sent = twitch.online(&broadcaster, "40001", "live").await;
    assert_eq!(sent.status, 204, "{}", sent.body);
    // The same message again, and the same stream under a new message id.
    assert_eq!(twitch.resend(&sent.message_id).await.status, 204);
    assert_eq!(twitch.resend_as_new(&sent.message_id).await.status, 204);
    let live_ids = ids("40001", &[kind::TWITCH_LIVE]);
    let received = ready.collect_for(&live_ids, QUIET * 2).await;
    assert_eq!(received.len(), 1, "{received:#?}");
    let live = &received[0];
    assert_eq!(live.routing_key, "twitch");
    assert_eq!(live.event.entity, entity);
    let fields = &live.event.fields;
    assert_eq!(fields[field::STREAM_ID], "40001");
    assert_eq!(fields[field::TITLE], "Minecraft with friends");
    assert_eq!(fields[field::CATEGORY], "Minecraft");
    assert_eq!(fields[field::LINK], "https://www.twitch.tv/pekora");
    assert_eq!(
        fields[field::THUMBNAIL],
        "https://static-cdn.jtvnw.net/previews-ttv/live_user_pekora-1280x720.jpg"
    );
    assert!(fields[field::ACTUAL_START].is_string());
    let metrics = worker.runner.metrics();
    assert_eq!(metrics.notifications_with("stream.online", "duplicate"), 2);
    assert_eq!(metrics.published_of(kind::TWITCH_LIVE), 1);
    // The replayed message id was not handled again: two lookups for three deliveries.
    assert_eq!(twitch.requests_to("GET", "/helix/streams").len(), 2);

    // A title change while live is what the end reports.
    assert_eq!(
        twitch
            .channel_update(&broadcaster, "Minecraft: the finale", "Minecraft")
            .await
            .status,
        204
    );
    let offline = twitch.offline(&broadcaster).await;
    assert_eq!(offline.status, 204);
    let ended_ids = ids("40001", &[kind::TWITCH_ENDED]);
    let ended = ready.collect_n(&ended_ids, 1, WAIT).await;
    assert_eq!(ended.len(), 1);
    let fields = &ended[0].event.fields;
    assert_eq!(fields[field::STREAM_ID], "40001");
    assert_eq!(fields[field::TITLE], "Minecraft: the finale");
    assert!(fields[field::DURATION_SECONDS].as_i64().unwrap() >= 0);
    assert!(fields[field::ACTUAL_END].is_string());
    // An end again under a new id: its start is gone, so nothing is published.
    assert_eq!(twitch.resend_as_new(&offline.message_id).await.status, 204);
    assert!(ready.collect_for(&ended_ids, QUIET).await.is_empty());
    assert_eq!(
        metrics.notifications_with("stream.offline", "end_without_start"),
        1
    );
    worker.shutdown().await;
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_stale_messages_are_refused_and_publish_nothing() {
    let mut env = env().await;
    let mut ready = env.ready().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let worker = Worker::start(config(&twitch), &env).await;
    let broadcaster = twitch.add_user("Suisei");
    worker
        .runner
        .start(task(Uuid::new_v4(), &broadcaster))
        .await
        .unwrap();
    wait_enabled(&twitch, &broadcaster).await;
    let event = |stream: &str| {
        json!({"id": stream, "broadcaster_user_id": broadcaster,
               "broadcaster_user_login": "suisei", "broadcaster_user_name": "Suisei",
               "type": "live", "started_at": "2026-01-01T10:00:00Z"})
    };
    for (stream, tamper) in [
        ("50001", Tamper::BadSignature),
        ("50002", Tamper::Unsigned),
        ("50003", Tamper::StaleBy(11 * 60)),
    ] {
        let sent = twitch
            .notify("stream.online", &broadcaster, event(stream), tamper)
            .await;
        assert_eq!(sent.status, 403, "{tamper:?}");
    }
    let all = ids("50001", &[kind::TWITCH_LIVE])
        .into_iter()
        .chain(ids("50002", &[kind::TWITCH_LIVE]))
        .chain(ids("50003", &[kind::TWITCH_LIVE]))
        .collect();
    assert!(ready.collect_for(&all, QUIET).await.is_empty());
    let metrics = worker.runner.metrics();
    assert_eq!(metrics.rejections_with("forged"), 1);
    assert_eq!(metrics.rejections_with("unsigned"), 1);
    assert_eq!(metrics.rejections_with("stale"), 1);
    // A message nine minutes old is still Twitch's.
    let sent = twitch
        .notify(
            "stream.online",
            &broadcaster,
            event("50004"),
            Tamper::StaleBy(9 * 60),
        )
        .await;
    assert_eq!(sent.status, 204);
    assert_eq!(
        ready
            .collect_n(&ids("50004", &[kind::TWITCH_LIVE]), 1, WAIT)
            .await
            .len(),
        1
    );
    worker.shutdown().await;
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_live_streams_are_dropped_by_default_and_published_as_reruns_when_asked() {
    let mut env = env().await;
    let mut ready = env.ready().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let dropping = Worker::start(config(&twitch), &env).await;
    let broadcaster = twitch.add_user("Rerunner");
    let entity = Uuid::new_v4();
    dropping
        .runner
        .start(task(entity, &broadcaster))
        .await
        .unwrap();
    wait_enabled(&twitch, &broadcaster).await;
    assert_eq!(
        twitch.online(&broadcaster, "60001", "rerun").await.status,
        204
    );
    let rerun_ids = ids("60001", &[kind::TWITCH_RERUN, kind::TWITCH_LIVE]);
    assert!(ready.collect_for(&rerun_ids, QUIET).await.is_empty());
    assert_eq!(
        dropping
            .runner
            .metrics()
            .notifications_with("stream.online", "dropped_non_live"),
        1
    );
    // A worker publishing them, for another broadcaster.
    let mut publishing = config(&twitch);
    publishing.non_live_streams = NonLiveStreams::Publish;
    let worker = Worker::start(publishing, &env).await;
    let other = twitch.add_user("Playlister");
    worker.runner.start(task(entity, &other)).await.unwrap();
    wait_enabled(&twitch, &other).await;
    assert_eq!(twitch.online(&other, "60002", "playlist").await.status, 204);
    let received = ready
        .collect_n(&ids("60002", &[kind::TWITCH_RERUN]), 1, WAIT)
        .await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].event.fields[field::STREAM_TYPE], "playlist");
    dropping.shutdown().await;
    worker.shutdown().await;
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_subscriptions_come_back_unless_the_user_is_gone() {
    let env = env().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let worker = Worker::start(config(&twitch), &env).await;
    let broadcaster = twitch.add_user("Revoked");
    worker
        .runner
        .start(task(Uuid::new_v4(), &broadcaster))
        .await
        .unwrap();
    wait_enabled(&twitch, &broadcaster).await;
    let first_online = twitch
        .subscriptions()
        .into_iter()
        .find(|s| s.kind == "stream.online")
        .unwrap();
    let sent = twitch
        .revoke(
            "stream.online",
            &broadcaster,
            "notification_failures_exceeded",
        )
        .await;
    assert_eq!(sent.status, 204);
    // Re-created after the backoff (1 s here) and verified again.
    wait_enabled(&twitch, &broadcaster).await;
    let again = twitch
        .subscriptions()
        .into_iter()
        .find(|s| s.kind == "stream.online")
        .unwrap();
    assert_ne!(again.id, first_online.id);
    assert_eq!(
        worker
            .runner
            .metrics()
            .revocations_with("notification_failures_exceeded"),
        1
    );
    // The account is gone: nothing to re-create.
    assert_eq!(
        twitch
            .revoke("stream.offline", &broadcaster, "user_removed")
            .await
            .status,
        204
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kinds: Vec<String> = twitch
        .subscriptions()
        .into_iter()
        .filter(|s| s.broadcaster == broadcaster)
        .map(|s| s.kind)
        .collect();
    assert!(!kinds.contains(&"stream.offline".to_owned()), "{kinds:?}");
    assert_eq!(worker.runner.metrics().revocations_with("user_removed"), 1);
    worker.shutdown().await;
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helix_401_refreshes_the_token_once_and_429_waits_for_the_reset() {
    let mut env = env().await;
    let mut ready = env.ready().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let worker = Worker::start(config(&twitch), &env).await;
    let broadcaster = twitch.add_user("Tokens");
    worker
        .runner
        .start(task(Uuid::new_v4(), &broadcaster))
        .await
        .unwrap();
    wait_enabled(&twitch, &broadcaster).await;
    assert_eq!(twitch.requests_to("POST", "/oauth2/token").len(), 1);

    // The token stops working: the lookup gets 401, fetches a new one, and succeeds.
    twitch.revoke_tokens();
    twitch.go_live(&broadcaster, "70001", "After the 401", "Art");
    assert_eq!(
        twitch.online(&broadcaster, "70001", "live").await.status,
        204
    );
    let live = ready
        .collect_n(&ids("70001", &[kind::TWITCH_LIVE]), 1, WAIT)
        .await;
    assert_eq!(live[0].event.fields[field::TITLE], "After the 401");
    assert_eq!(twitch.requests_to("POST", "/oauth2/token").len(), 2);
    let metrics = worker.runner.metrics();
    assert_eq!(metrics.helix_calls_with("streams", "unauthorized"), 1);
    assert_eq!(metrics.helix_calls_with("streams", "ok"), 1);

    // The bucket is empty for a second: the lookup waits for the reset and succeeds.
    twitch.go_live(&broadcaster, "70002", "After the 429", "Art");
    twitch.force_rate_limited(1, 1);
    let started = tokio::time::Instant::now();
    assert_eq!(
        twitch.online(&broadcaster, "70002", "live").await.status,
        204
    );
    let live = ready
        .collect_n(&ids("70002", &[kind::TWITCH_LIVE]), 1, WAIT)
        .await;
    assert_eq!(live[0].event.fields[field::TITLE], "After the 429");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(metrics.helix_calls_with("streams", "rate_limited"), 1);
    assert!(metrics.rate_limit_waits() >= 1);
    let statuses: Vec<u16> = twitch
        .requests_to("GET", "/helix/streams")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![401, 200, 429, 200]);
    worker.shutdown().await;
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_instance_behind_the_callback_handles_any_broadcaster() {
    let mut env = env().await;
    let mut ready = env.ready().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    // The broadcaster's task is in storage and held by another instance; this one holds
    // nothing, yet Twitch's POST may land here.
    let broadcaster = twitch.add_user("Shared");
    let entity = Uuid::new_v4();
    store_entity(
        env.storage.as_ref(),
        entity,
        vec![task(entity, &broadcaster)],
    )
    .await;
    let idle = Worker::start(config(&twitch), &env).await;
    let subscription = stargazer_testkit::servers::twitch::Subscription {
        id: "sub-elsewhere".into(),
        kind: "stream.online".into(),
        version: "1".into(),
        status: "enabled".into(),
        broadcaster: broadcaster.clone(),
        callback: idle.callback.clone(),
        secret: EVENTSUB_SECRET.into(),
    };
    let body = json!({
        "subscription": {"id": "sub-elsewhere", "type": "stream.online", "version": "1",
            "status": "enabled", "cost": 0,
            "condition": {"broadcaster_user_id": broadcaster},
            "transport": {"method": "webhook", "callback": idle.callback},
            "created_at": "2026-01-01T00:00:00Z"},
        "event": {"id": "90001", "broadcaster_user_id": broadcaster,
            "broadcaster_user_login": "shared", "broadcaster_user_name": "Shared",
            "type": "live", "started_at": "2026-01-01T10:00:00Z"},
    });
    let sent = twitch
        .send(
            &subscription,
            "notification",
            body.to_string(),
            Tamper::None,
        )
        .await;
    assert_eq!(sent.status, 204, "{}", sent.body);
    let received = ready
        .collect_n(&ids("90001", &[kind::TWITCH_LIVE]), 1, WAIT)
        .await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].event.entity, entity);
    // A broadcaster no task watches is acknowledged and dropped.
    let stranger = twitch.add_user("Stranger");
    let mut foreign = subscription.clone();
    foreign.broadcaster = stranger.clone();
    let body = json!({
        "subscription": {"id": "sub-x", "type": "stream.online", "version": "1",
            "status": "enabled", "condition": {"broadcaster_user_id": stranger},
            "transport": {"method": "webhook", "callback": idle.callback}},
        "event": {"id": "90002", "broadcaster_user_id": stranger, "type": "live"},
    });
    let sent = twitch
        .send(&foreign, "notification", body.to_string(), Tamper::None)
        .await;
    assert_eq!(sent.status, 204);
    assert_eq!(
        idle.runner
            .metrics()
            .notifications_with("stream.online", "unknown_broadcaster"),
        1
    );
    idle.shutdown().await;
    env.close().await;
}

/// A `stream.offline` Twitch gave up delivering: after a full reconciliation, a
/// remembered stream Helix no longer lists is ended with its own stream id, one still
/// listed is left alone, and a late `stream.offline` for the swept stream publishes
/// nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_end_is_found_by_the_sweep_after_a_reconciliation() {
    let mut env = env().await;
    let mut ready = env.ready().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let mut config = config(&twitch);
    config.reconcile_interval_seconds = 1;
    config.sweep_grace_seconds = 0;
    let worker = Worker::start(config, &env).await;
    let (gone, still) = (twitch.add_user("Korone"), twitch.add_user("Okayu"));
    for broadcaster in [&gone, &still] {
        worker
            .runner
            .start(task(Uuid::new_v4(), broadcaster))
            .await
            .unwrap();
        wait_enabled(&twitch, broadcaster).await;
    }
    twitch.go_live(&gone, "50001", "Retro games", "Super Mario Bros.");
    twitch.go_live(&still, "50002", "Zatsudan", "Just Chatting");
    for (broadcaster, stream) in [(&gone, "50001"), (&still, "50002")] {
        let sent = twitch.online(broadcaster, stream, "live").await;
        assert_eq!(sent.status, 204, "{}", sent.body);
    }
    let mut live_ids = ids("50001", &[kind::TWITCH_LIVE]);
    live_ids.extend(ids("50002", &[kind::TWITCH_LIVE]));
    assert_eq!(ready.collect_n(&live_ids, 2, WAIT).await.len(), 2);

    // Korone's stream ends on Twitch, and its stream.offline never arrives.
    twitch.end_stream(&gone);
    let mut ended_ids = ids("50001", &[kind::TWITCH_ENDED]);
    ended_ids.extend(ids("50002", &[kind::TWITCH_ENDED]));
    let ended = ready.collect_n(&ended_ids, 1, WAIT).await;
    assert_eq!(ended.len(), 1, "{ended:#?}");
    let fields = &ended[0].event.fields;
    assert_eq!(fields[field::STREAM_ID], "50001");
    assert_eq!(fields[field::TITLE], "Retro games");
    assert!(fields[field::ACTUAL_END].is_string());
    // Counted once the record is gone, just after the publish the test saw.
    let swept = || {
        worker
            .runner
            .metrics()
            .notifications_with("stream.offline", "ended_by_sweep")
    };
    let deadline = std::time::Instant::now() + WAIT;
    while swept() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(swept(), 1);
    // Later sweeps leave Okayu's live stream alone; the late end publishes nothing.
    let late = twitch.offline(&gone).await;
    assert_eq!(late.status, 204);
    assert!(ready.collect_for(&ended_ids, QUIET * 2).await.is_empty());
    worker.shutdown().await;
    env.close().await;
}
