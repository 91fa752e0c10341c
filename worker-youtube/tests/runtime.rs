//! The service wired to a coordinator: an assign subscribes the channel, an unassign
//! unsubscribes it, shutdown leaves.

mod support;

use std::time::Duration;

use stargazer_core::model::{Task, TaskKind, TaskParams};
use stargazer_core::protocol::{CoordinatorMessage, WorkerMessage};
use stargazer_core::service::Service;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;
use stargazer_core::{bus, storage, CancellationToken};
use stargazer_testkit::backends::service_context;
use stargazer_worker_youtube::{YoutubeConfig, YoutubeService};
use support::coordinator::{FakeCoordinator, PASSWORD, USER};
use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_assignments_drive_subscriptions() {
    let hub = Hub::start().await.unwrap();
    let yt = Youtube::start("k").await.unwrap();
    let coordinator = FakeCoordinator::start().await;
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
    let runtime = WorkerRuntimeConfig::new(
        &coordinator.url,
        USER,
        PASSWORD,
        "yt-test",
        TaskKind::Youtube,
    );
    let storage = storage::connect("sqlite::memory:").await.unwrap();
    let bus = bus::connect(AMQP_URL).await.unwrap();
    let shutdown = CancellationToken::new();
    let service = Box::new(YoutubeService::new(config, runtime));
    let (storage, bus) = (Some(storage), Some(bus));
    let cx = service_context(&*service, storage, bus, vec![listener], shutdown.clone());
    let worker = tokio::spawn(service.run(cx));

    let wait = Duration::from_secs(15);
    eventually("announce", wait, || {
        coordinator.received().iter().any(|m| {
            matches!(m, WorkerMessage::Announce { kind: TaskKind::Youtube, worker_id, tasks } if worker_id == "yt-test" && tasks.is_empty())
        })
    })
    .await;
    let channel = new_channel_id();
    yt.add_channel(&channel);
    let task = Task {
        id: Uuid::new_v4(),
        entity: Uuid::new_v4(),
        params: TaskParams::Youtube {
            channel_id: channel.clone(),
        },
    };
    coordinator.send(CoordinatorMessage::Assign {
        seq: 1,
        tasks: vec![task.clone()],
    });
    eventually("ack 1", wait, || coordinator.acked(1)).await;
    eventually("subscribed", wait, || {
        hub.subscriptions(&topic(&channel)).len() == 1
    })
    .await;

    // A task of the wrong kind or with a bad channel id is reported as failed.
    let bad = Task {
        id: Uuid::new_v4(),
        entity: Uuid::new_v4(),
        params: TaskParams::Youtube {
            channel_id: "not-a-channel".into(),
        },
    };
    coordinator.send(CoordinatorMessage::Assign {
        seq: 2,
        tasks: vec![bad.clone()],
    });
    eventually("ack 2 with failure", wait, || {
        coordinator.received().iter().any(|m| {
            matches!(m, WorkerMessage::Ack { seq: 2, failed } if failed.len() == 1 && failed[0].task == bad.id)
        })
    })
    .await;

    coordinator.send(CoordinatorMessage::Unassign {
        seq: 3,
        tasks: vec![task.id, bad.id],
    });
    eventually("ack 3", wait, || coordinator.acked(3)).await;
    eventually("unsubscribed", wait, || {
        hub.subscriptions(&topic(&channel)).is_empty()
    })
    .await;
    assert_eq!(hub.unsubscribe_requests(), 1);

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    eventually("leave", wait, || {
        coordinator.received().contains(&WorkerMessage::Leave)
    })
    .await;
}
