//! A real RabbitMQ node (`sgauth@localhost` on port 5673) authenticating through the
//! api's internal listener with the shared secret in the URLs it is configured with
//! (`http://rabbit:SECRET@127.0.0.1:PORT/auth/…`), exercised with a real AMQP client
//! (lapin): the topology credential declares the exchange, a bot credential (mq ro)
//! declares, binds and consumes the queue it owns but may not publish, a worker
//! credential (mq rw) publishes; wrong passwords, unknown users and credentials without
//! mq permission cannot log in, and 20 wrong passwords for the worker do not keep the
//! worker's right one out.
//!
//! The node is started from a temporary directory (docs/ARCHITECTURE.md §7) and stopped by
//! a guard even when an assertion fails. `broker_matrix.rs` checks every credential kind
//! against every operation.

mod common;
#[path = "common/node.rs"]
mod node;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use stargazer_core::model::Access;

use common::{perms, Backend, TestServer};
use node::{access_refused, within, Node};

const NODE: &str = "sgauth";
const AMQP_PORT: u16 = 5673;
const SECRET: &str = "rabbitmq-test-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_authenticates_through_the_api() {
    let config = stargazer_api::ApiConfig {
        auth_secret: Some(SECRET.into()),
        ..common::test_config()
    };
    let server = TestServer::with_config(Backend::Sqlite.connect().await, config).await;
    // Without the secret the backend answers nobody.
    let unauthenticated = server
        .http
        .post(format!("{}/auth/user", server.internal_base))
        .form(&[("username", "bot"), ("password", "pw-bot")])
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    server
        .credential(
            "sgadmin",
            perms(&[("admin", Access::Rw), ("mq", Access::Rw)]),
        )
        .await;
    server.bot().await;
    server
        .credential(
            "worker",
            perms(&[("coordinator", Access::Ro), ("mq", Access::Rw)]),
        )
        .await;
    server
        .credential("reader", perms(&[("api", Access::Ro)]))
        .await;

    let auth_base = format!("http://rabbit:{SECRET}@{}", server.internal_addr);
    let node = Node::start(NODE, AMQP_PORT, &auth_base);
    node.await_startup().await;
    let connect = |user: &'static str, password: &'static str| node.connect(user, password);

    // The fresh node has no `stargazer` exchange; the topology credential declares it.
    let admin = connect("sgadmin", "pw-sgadmin")
        .await
        .expect("sgadmin logs in");
    let channel = within("admin channel", admin.create_channel())
        .await
        .unwrap();
    within(
        "exchange.declare",
        channel.exchange_declare(
            "stargazer",
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("the topology credential declares the exchange");

    // The bot finds the exchange (a passive declare asks nothing), then declares, binds
    // and consumes the queue it owns.
    let queue = "stargazer.bot.telegram";
    let bot = connect("bot", "pw-bot").await.expect("the bot logs in");
    let consume_channel = within("bot channel", bot.create_channel()).await.unwrap();
    within(
        "bot passive exchange.declare",
        consume_channel.exchange_declare(
            "stargazer",
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("a passive declare needs no permission");
    within(
        "queue.declare",
        consume_channel.queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("the bot declares the queue it owns");
    within(
        "queue.bind",
        consume_channel.queue_bind(
            queue,
            "stargazer",
            "*",
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("the bot binds its queue");
    let mut consumer = within(
        "basic.consume",
        consume_channel.basic_consume(
            queue,
            "bot",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("the bot consumes its queue");

    // The bot's publish to the exchange is refused: the channel closes with 403.
    let publish_channel = within("bot publish channel", bot.create_channel())
        .await
        .unwrap();
    within(
        "confirm.select",
        publish_channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let refused = within("bot publish", async {
        match publish_channel
            .basic_publish(
                "stargazer",
                "youtube",
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default(),
            )
            .await
        {
            Ok(confirm) => confirm.await.map(|_| ()),
            Err(err) => Err(err),
        }
    })
    .await;
    let err = refused.expect_err("the bot's publish must be refused");
    assert!(access_refused(&err), "expected ACCESS_REFUSED, got {err:?}");

    // A queue it does not own is refused too.
    let other_channel = within("bot channel", bot.create_channel()).await.unwrap();
    let foreign = within(
        "foreign queue.declare",
        other_channel.queue_declare(
            "stargazer.middleware.delay",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect_err("another role's queue is refused");
    assert!(
        access_refused(&foreign),
        "expected ACCESS_REFUSED, got {foreign:?}"
    );

    // The worker publishes, and the bot receives it.
    let worker = connect("worker", "pw-worker")
        .await
        .expect("the worker logs in");
    let worker_channel = within("worker channel", worker.create_channel())
        .await
        .unwrap();
    within(
        "confirm.select",
        worker_channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let confirmation = within("worker publish", async {
        worker_channel
            .basic_publish(
                "stargazer",
                "youtube",
                BasicPublishOptions::default(),
                b"{\"hello\":1}",
                BasicProperties::default(),
            )
            .await?
            .await
    })
    .await
    .expect("the worker publishes");
    assert!(confirmation.is_ack(), "{confirmation:?}");
    let delivery = within("delivery", consumer.next())
        .await
        .expect("consumer open")
        .expect("delivery ok");
    assert_eq!(delivery.data, b"{\"hello\":1}");
    within("ack", delivery.ack(BasicAckOptions::default()))
        .await
        .unwrap();

    // Wrong passwords, unknown users and credentials without mq permission cannot log in.
    for (user, password) in [
        ("bot", "wrong"),
        ("ghost", "pw-ghost"),
        ("reader", "pw-reader"),
    ] {
        let err = connect(user, password)
            .await
            .expect_err("login must be refused");
        assert!(
            access_refused(&err),
            "{user}: expected ACCESS_REFUSED, got {err:?}"
        );
    }

    // RabbitMQ really asked the api.
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="user",result="deny"} 3"#),
        "{metrics}"
    );
    // The publish was refused at the exchange (resource) check, the foreign queue too.
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="resource",result="deny"} 2"#),
        "{metrics}"
    );
    // Every request of the node carried the secret from its URLs: the only one refused
    // is the test's own, above.
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="secret",result="unauthorized"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="vhost",result="allow"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="topic",result="allow"}"#),
        "{metrics}"
    );

    // 20 wrong logins for the worker account through the broker (all from the node's
    // own address), then the worker, with its right password, connects at once.
    for n in 0..20 {
        let err = node
            .connect("worker", &format!("guess-{n}"))
            .await
            .expect_err("a wrong password is refused");
        assert!(access_refused(&err), "expected ACCESS_REFUSED, got {err:?}");
    }
    let started = std::time::Instant::now();
    let again = connect("worker", "pw-worker")
        .await
        .expect("the worker is never locked out by someone else's failures");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the worker connected at once: {:?}",
        started.elapsed()
    );
    let _ = within("close", again.close(200, "done")).await;

    for connection in [admin, bot, worker] {
        let _ = within("close", connection.close(200, "done")).await;
    }
    drop(node);
    server.stop().await;
}
