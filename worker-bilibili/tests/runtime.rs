//! The service wired to a coordinator: an assign starts watching, an unassign stops it,
//! shutdown leaves.

mod support;

use std::time::Duration;

use stargazer_core::model::{TaskKind, TaskParams};
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use stargazer_core::service::Service;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_core::{storage, CancellationToken};
use stargazer_testkit::backends::service_context;
use stargazer_testkit::coordinator::{FakeCoordinator, PASSWORD, USER};
use stargazer_worker_bilibili::BilibiliService;
use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_assignments_drive_polling() {
    let server = BilibiliServer::start().await.unwrap();
    let coordinator = FakeCoordinator::start().await;
    let mut observer = Observer::start(OBSERVER, &PATTERNS).await;
    let runtime = WorkerRuntimeConfig::new(
        &coordinator.url,
        USER,
        PASSWORD,
        "bili-test",
        TaskKind::Bilibili,
    );
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let shutdown = CancellationToken::new();
    let service = Box::new(BilibiliService::new(config(&server), runtime));
    let cx = service_context(
        &*service,
        Some(storage),
        Some(rabbit().await),
        vec![],
        shutdown.clone(),
    );
    let worker = tokio::spawn(service.run(cx));
    eventually("announce", WAIT, || {
        coordinator.received().iter().any(|m| {
            matches!(
                m,
                WorkerMessage::Announce {
                    kind: TaskKind::Bilibili,
                    ..
                }
            )
        })
    })
    .await;
    let uid = new_uid();
    server.add_room(uid, 4242);
    let task = task(Uuid::new_v4(), uid);
    assert!(matches!(task.params, TaskParams::Bilibili { .. }));
    coordinator.send(CoordinatorMessage::Assign {
        seq: 1,
        tasks: vec![task.clone()],
    });
    eventually("ack 1", WAIT, || coordinator.acked(1)).await;
    server.set_live(uid, "assigned");
    observer.wait_for(task.entity, 1, WAIT).await;

    coordinator.send(CoordinatorMessage::Unassign {
        seq: 2,
        tasks: vec![task.id],
    });
    eventually("ack 2", WAIT, || coordinator.acked(2)).await;
    // Let a cycle in flight finish, then nothing more asks for the room.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, feeds) = (server.status_calls().len(), server.feed_calls(uid).len());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        server.status_calls().len(),
        status,
        "status polled after unassign"
    );
    assert_eq!(
        server.feed_calls(uid).len(),
        feeds,
        "feed polled after unassign"
    );

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    eventually("leave", WAIT, || {
        coordinator.received().contains(&WorkerMessage::Leave)
    })
    .await;
}
