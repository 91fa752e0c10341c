//! The service wired to a coordinator: an assignment subscribes the broadcaster, the
//! callback listener handed over by the platform serves EventSub, `/healthz` and
//! `/metrics`, an unassignment leaves the subscriptions in place, shutdown leaves.

mod support;

use stargazer_core::model::TaskKind;
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use stargazer_core::service::Service;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_core::CancellationToken;
use stargazer_testkit::backends::service_context;
use stargazer_testkit::coordinator::{FakeCoordinator, PASSWORD, USER};
use stargazer_worker_twitch::{TwitchService, CALLBACK_PATH};
use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_assignments_drive_subscriptions() {
    let env = env().await;
    let twitch = TwitchServer::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let coordinator = FakeCoordinator::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = config(&twitch);
    config.listen = addr;
    config.callback_url = format!("http://{addr}{CALLBACK_PATH}");
    let runtime = WorkerRuntimeConfig::new(
        &coordinator.url,
        USER,
        PASSWORD,
        "twitch-test",
        TaskKind::Twitch,
    );
    let service = Box::new(TwitchService::new(config, runtime));
    assert!(service
        .needs()
        .listeners
        .iter()
        .any(|l| l.key == "twitch.listen"));
    assert!(service.describe().contains(CALLBACK_PATH));
    let shutdown = CancellationToken::new();
    let cx = service_context(
        &*service,
        Some(env.storage.clone()),
        Some(env.bus.clone()),
        vec![listener],
        shutdown.clone(),
    );
    let worker = tokio::spawn(service.run(cx));
    eventually("announce", WAIT, || {
        coordinator.received().iter().any(|m| {
            matches!(
                m,
                WorkerMessage::Announce {
                    kind: TaskKind::Twitch,
                    ..
                }
            )
        })
    })
    .await;

    let broadcaster = twitch.add_user("Assigned");
    let task = task(Uuid::new_v4(), &broadcaster);
    coordinator.send(CoordinatorMessage::Assign {
        seq: 1,
        tasks: vec![task.clone()],
    });
    eventually("ack 1", WAIT, || coordinator.acked(1)).await;
    wait_enabled(&twitch, &broadcaster).await;
    let base = format!("http://{addr}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "stargazer_twitch_helix_calls_total{endpoint=\"subscriptions_create\",result=\"ok\"} 3"
        ),
        "{metrics}"
    );
    // Nothing but Twitch's own POSTs is accepted there.
    let stray = reqwest::Client::new()
        .post(format!("{base}{CALLBACK_PATH}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 400);

    coordinator.send(CoordinatorMessage::Unassign {
        seq: 2,
        tasks: vec![task.id],
    });
    eventually("ack 2", WAIT, || coordinator.acked(2)).await;
    // Left for whichever worker takes the broadcaster over.
    assert_eq!(twitch.subscriptions().len(), 3);
    assert!(twitch
        .requests_to("DELETE", "/helix/eventsub/subscriptions")
        .is_empty());

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    eventually("leave", WAIT, || {
        coordinator.received().contains(&WorkerMessage::Leave)
    })
    .await;
    env.close().await;
}
