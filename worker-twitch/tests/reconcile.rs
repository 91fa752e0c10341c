//! Subscriptions after a restart: what Twitch lists already is not created again, what is
//! missing is created, what stopped working is replaced, and what no task wants any more
//! is deleted — without touching other callbacks or broadcasters another worker holds.

mod support;

use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reconciles_with_what_twitch_lists() {
    let env = env().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    // The callback is fixed ahead, as a deployment's is.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let callback = format!("http://{addr}/twitch/eventsub");
    let [intact, damaged, elsewhere, gone] =
        ["Intact", "Damaged", "Elsewhere", "Gone"].map(|login| twitch.add_user(login));
    let seed = |kind: &str, broadcaster: &str, status: &str| {
        twitch.seed_subscription(kind, broadcaster, &callback, EVENTSUB_SECRET, status)
    };
    for kind in ["stream.online", "stream.offline", "channel.update"] {
        seed(kind, &intact, "enabled");
        // Held by another worker of the deployment: left alone.
        seed(kind, &elsewhere, "enabled");
    }
    seed(
        "stream.online",
        &damaged,
        "webhook_callback_verification_pending",
    );
    let failed = seed(
        "stream.offline",
        &damaged,
        "webhook_callback_verification_failed",
    );
    // No task watches this broadcaster any more.
    let orphan = seed("stream.online", &gone, "enabled");
    // Another deployment's callback: never ours to touch.
    let foreign = twitch.seed_subscription(
        "stream.online",
        &gone,
        "https://other.example/twitch/eventsub",
        EVENTSUB_SECRET,
        "enabled",
    );
    let (entity, other_entity) = (Uuid::new_v4(), Uuid::new_v4());
    let (intact_task, damaged_task) = (task(entity, &intact), task(entity, &damaged));
    store_entity(
        env.storage.as_ref(),
        entity,
        vec![intact_task.clone(), damaged_task.clone()],
    )
    .await;
    store_entity(
        env.storage.as_ref(),
        other_entity,
        vec![task(other_entity, &elsewhere)],
    )
    .await;

    let mut config = config(&twitch);
    config.callback_url = callback.clone();
    let worker = Worker::start_at(config, &env, addr).await;
    worker.runner.start(intact_task).await.unwrap();
    worker.runner.start(damaged_task).await.unwrap();
    // The pending one stays pending (this server verifies only what it creates).
    eventually("damaged repaired", WAIT, || {
        let subs = twitch.subscriptions();
        let of_damaged: Vec<_> = subs.iter().filter(|s| s.broadcaster == damaged).collect();
        of_damaged.len() == 3 && of_damaged.iter().filter(|s| s.status == "enabled").count() == 2
    })
    .await;
    let creates = twitch.requests_to("POST", "/helix/eventsub/subscriptions");
    let deletes = twitch.requests_to("DELETE", "/helix/eventsub/subscriptions");
    let lists = twitch.requests_to("GET", "/helix/eventsub/subscriptions");
    // Damaged: the failed stream.offline replaced, channel.update created.
    assert_eq!(creates.len(), 2, "{creates:#?}");
    assert_eq!(lists.len(), 1);
    let deleted: Vec<&str> = deletes.iter().map(|r| r.query.as_str()).collect();
    assert_eq!(deletes.len(), 2, "{deleted:?}");
    assert!(deleted.contains(&format!("id={failed}").as_str()));
    assert!(deleted.contains(&format!("id={orphan}").as_str()));
    let now = twitch.subscriptions();
    assert!(now.iter().any(|s| s.id == foreign));
    assert_eq!(now.iter().filter(|s| s.broadcaster == elsewhere).count(), 3);
    assert_eq!(now.iter().filter(|s| s.broadcaster == intact).count(), 3);
    let metrics = worker.runner.metrics();
    assert_eq!(metrics.subscription_changes_with("created"), 2);
    assert_eq!(metrics.subscription_changes_with("deleted"), 2);
    assert_eq!(
        metrics.subscriptions_with("webhook_callback_verification_failed"),
        1
    );
    worker.shutdown().await;
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_resolve_to_ids_and_an_unknown_login_is_named() {
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let pekora = twitch.add_user("Pekora");
    let suisei = twitch.add_user("suisei");
    let config = config(&twitch);
    let ids = stargazer_worker_twitch::resolve_logins(
        &config,
        &["pekora".into(), "12345".into(), "SUISEI".into()],
    )
    .await
    .unwrap();
    assert_eq!(ids, vec![pekora, "12345".to_owned(), suisei]);
    assert_eq!(twitch.requests_to("GET", "/helix/users").len(), 1);
    let err = stargazer_worker_twitch::resolve_logins(&config, &["nobody_here".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`nobody_here`"), "{err}");
    let err = stargazer_worker_twitch::resolve_logins(&config, &["not a login".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a Twitch login"), "{err}");
    // Ids alone need no credentials and no call.
    let ids = stargazer_worker_twitch::resolve_logins(
        &stargazer_worker_twitch::TwitchConfig::default(),
        &["777".into()],
    )
    .await
    .unwrap();
    assert_eq!(ids, vec!["777".to_owned()]);
}
