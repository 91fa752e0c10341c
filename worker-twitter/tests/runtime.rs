//! The service wired to a coordinator: an assign starts polling, an unassign stops it,
//! shutdown leaves.

mod support;

use std::time::Duration;

use stargazer_core::model::{Task, TaskKind, TaskParams};
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use stargazer_core::service::Service;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_core::{bus, storage, CancellationToken};
use stargazer_testkit::backends::service_context;
use stargazer_worker_twitter::{TwitterConfig, TwitterService};
use support::coordinator::{FakeCoordinator, PASSWORD, USER};
use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_assignments_drive_polling() {
    let x = XServer::start(TOKEN).await.unwrap();
    let coordinator = FakeCoordinator::start().await;
    let mut observer = Observer::start(OBSERVER, &["twitter", "twitter.#"]).await;
    let config = TwitterConfig {
        bearer_token: TOKEN.into(),
        api_base: x.base.clone(),
        poll_interval_seconds: 1,
        ..TwitterConfig::default()
    };
    let runtime = WorkerRuntimeConfig::new(
        &coordinator.url,
        USER,
        PASSWORD,
        "x-test",
        TaskKind::Twitter,
    );
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let bus = bus::connect(AMQP_URL).await.unwrap();
    let shutdown = CancellationToken::new();
    let service = Box::new(TwitterService::new(config, runtime));
    let cx = service_context(
        &*service,
        Some(storage),
        Some(bus),
        vec![],
        shutdown.clone(),
    );
    let worker = tokio::spawn(service.run(cx));

    let wait = Duration::from_secs(15);
    eventually("announce", wait, || {
        coordinator.received().iter().any(|m| {
            matches!(
                m,
                WorkerMessage::Announce {
                    kind: TaskKind::Twitter,
                    ..
                }
            )
        })
    })
    .await;
    let user = new_user_id();
    x.add_user(&user, "vt");
    let entity = Uuid::new_v4();
    let task = Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Twitter {
            user_id: user.clone(),
        },
    };
    coordinator.send(CoordinatorMessage::Assign {
        seq: 1,
        tasks: vec![task.clone()],
    });
    eventually("ack 1", wait, || coordinator.acked(1)).await;
    eventually("first poll", wait, || !x.requests_for(&user).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    x.post(&user, "hello", "en");
    observer.wait_for(entity, 1, wait).await;

    coordinator.send(CoordinatorMessage::Unassign {
        seq: 2,
        tasks: vec![task.id],
    });
    eventually("ack 2", wait, || coordinator.acked(2)).await;
    let polls = x.requests_for(&user).len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        x.requests_for(&user).len(),
        polls,
        "polling continued after unassign"
    );

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    eventually("leave", wait, || {
        coordinator.received().contains(&WorkerMessage::Leave)
    })
    .await;
}
