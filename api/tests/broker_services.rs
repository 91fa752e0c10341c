//! The services' own bus (`stargazer_core::bus`) under the broker policy of
//! docs/ARCHITECTURE.md §8, on a real RabbitMQ node (`sgsvc@localhost` on port 5675) that
//! authenticates through the api's internal listener: only the topology credential can
//! run the broker setup; then the bot, a middleware and a worker, each with the
//! credential `deploy/bootstrap.sh` gives its role, find the topology (passive declares),
//! consume the queue they own, publish where their role publishes, and dead-letter
//! without any publish right (reject → `stargazer.dlx` → `stargazer.dead`).

mod common;
#[path = "common/node.rs"]
mod node;

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use stargazer_core::bus::{self, amqp, Consumer, Delivery};
use stargazer_core::model::Access;
use stargazer_core::topology::{self, Topology};

use common::{perms, Backend, TestServer};
use node::{within, Node};

const NODE: &str = "sgsvc";
const AMQP_PORT: u16 = 5675;
const SECRET: &str = "services-test-secret-0123456789";

fn url(user: &str) -> String {
    format!("amqp://{user}:pw-{user}@127.0.0.1:{AMQP_PORT}/%2f")
}

async fn next(consumer: &mut Box<dyn Consumer>, what: &str) -> Delivery {
    within(what, consumer.next())
        .await
        .unwrap_or_else(|| panic!("{what}: the consumer ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_runs_its_bus_with_the_credential_it_is_given() {
    let config = stargazer_api::ApiConfig {
        auth_secret: Some(SECRET.into()),
        ..common::test_config()
    };
    let server = TestServer::with_config(Backend::Sqlite.connect().await, config).await;
    for (user, permissions, queues) in [
        (
            "topology",
            perms(&[("admin", Access::Rw), ("mq", Access::Rw)]),
            &[][..],
        ),
        (
            "bot-telegram",
            perms(&[("api", Access::Rw), ("mq", Access::Ro)]),
            &["bot.telegram"][..],
        ),
        (
            "worker",
            perms(&[("coordinator", Access::Ro), ("mq", Access::Rw)]),
            &[][..],
        ),
        (
            "middleware-delay",
            perms(&[("mq", Access::Rw)]),
            &["middleware.delay"][..],
        ),
    ] {
        server.credential_owning(user, permissions, queues).await;
    }
    let auth_base = format!("http://rabbit:{SECRET}@{}", server.internal_addr);
    let node = Node::start(NODE, AMQP_PORT, &auth_base);
    node.await_startup().await;

    // On an empty broker a worker may not create the topology; the topology credential may.
    let steps = within(
        "setup as worker",
        amqp::setup(&url("worker"), &Topology::standard()),
    )
    .await
    .expect("the broker answers");
    assert!(
        steps.iter().all(|step| step.outcome.is_err()),
        "a worker declared part of the topology: {steps:?}"
    );
    let steps = within(
        "setup as topology",
        amqp::setup(&url("topology"), &Topology::standard()),
    )
    .await
    .expect("the broker answers");
    assert!(
        steps.iter().all(|step| step.outcome.is_ok()),
        "the topology credential could not declare everything: {steps:?}"
    );

    let bot = within("bot bus", bus::connect(&url("bot-telegram")))
        .await
        .expect("the bot's bus opens");
    let mut ready = within(
        "bot consume",
        bot.consume(&topology::bot_queue("telegram", 8)),
    )
    .await
    .expect("the bot consumes the queue it owns");
    let delay = within("delay bus", bus::connect(&url("middleware-delay")))
        .await
        .expect("the delay middleware's bus opens");
    let mut held = within(
        "delay consume",
        delay.consume(&topology::middleware_queue("delay", 8)),
    )
    .await
    .expect("the delay middleware consumes the queue it owns");
    let worker = within("worker bus", bus::connect(&url("worker")))
        .await
        .expect("the worker's bus opens");

    // Worker → bot, and worker → delay → (republished) → bot.
    within("worker publish", worker.publish("youtube", b"{\"n\":1}"))
        .await
        .expect("the worker publishes");
    let first = next(&mut ready, "ready event").await;
    assert_eq!(first.body, b"{\"n\":1}");
    within("ack", first.ack()).await.unwrap();
    within(
        "worker publish",
        worker.publish("youtube.delay", b"{\"n\":2}"),
    )
    .await
    .expect("the worker publishes a delayed event");
    let pending = next(&mut held, "delayed event").await;
    assert_eq!(pending.body, b"{\"n\":2}");
    within("delay republish", delay.publish("youtube", &pending.body))
        .await
        .expect("the middleware republishes");
    within("ack", pending.ack()).await.unwrap();
    let second = next(&mut ready, "republished event").await;
    assert_eq!(second.body, b"{\"n\":2}");

    // The bot dead-letters what it cannot process without any right to publish: the
    // broker moves it to the dead queue.
    within("dead letter", second.dead_letter("test: cannot process"))
        .await
        .expect("the bot dead-letters");
    let topology_connection = node
        .connect("topology", "pw-topology")
        .await
        .expect("topology logs in");
    let channel = within("channel", topology_connection.create_channel())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dead = within(
            "passive declare",
            channel.queue_declare(
                topology::DEAD_LETTER_QUEUE,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        if dead.message_count() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} messages in the dead queue",
            dead.message_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for bus in [&bot, &delay, &worker] {
        within("close", bus.close()).await;
    }
    let _ = within("close", topology_connection.close(200, "done")).await;
    drop(node);
    server.stop().await;
}
