//! A real RabbitMQ node (`sgauth@localhost` on port 5673) authenticating through the
//! api's HTTP auth backend, exercised with a real AMQP client (lapin): a bot credential
//! (mq ro) declares, binds and consumes its `stargazer.*` queue but may not publish to the
//! `stargazer` exchange; a worker credential (mq rw) publishes; wrong passwords, unknown
//! users and credentials without mq permission cannot log in.
//!
//! The node is started from a temporary directory (docs/ARCHITECTURE.md §7) and stopped by a guard
//! even when an assertion fails.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use stargazer_core::model::Access;
use uuid::Uuid;

use common::{perms, Backend, TestServer};

const NODE: &str = "sgauth@localhost";
const AMQP_PORT: u16 = 5673;
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops the node and removes its directory when dropped.
struct Node {
    dir: PathBuf,
}

impl Node {
    fn start(api_port: u16) -> Node {
        // A node left over from an interrupted run would hold the ports.
        let _ = rabbitmqctl(&["stop"]);
        let dir = std::env::temp_dir().join(format!("sgauth-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("log")).unwrap();
        std::fs::create_dir_all(dir.join("mnesia")).unwrap();
        let base = format!("http://127.0.0.1:{api_port}/auth");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = {AMQP_PORT}\n\
                 auth_backends.1 = http\n\
                 auth_http.http_method = post\n\
                 auth_http.user_path = {base}/user\n\
                 auth_http.vhost_path = {base}/vhost\n\
                 auth_http.resource_path = {base}/resource\n\
                 auth_http.topic_path = {base}/topic\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("enabled_plugins"),
            "[rabbitmq_auth_backend_http].\n",
        )
        .unwrap();
        let node = Node { dir };
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&node.dir)
            .status()
            .expect("chown runs");
        assert!(
            chown.success(),
            "cannot chown {} to rabbitmq",
            node.dir.display()
        );
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", NODE)
            .env("RABBITMQ_NODE_PORT", AMQP_PORT.to_string())
            .env("RABBITMQ_DIST_PORT", "25673")
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                node.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .status()
            .expect("rabbitmq-server runs");
        assert!(
            status.success(),
            "rabbitmq-server -detached failed: {status}"
        );
        node
    }

    async fn await_startup(&self) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let output =
                tokio::task::spawn_blocking(|| rabbitmqctl(&["await_startup", "--timeout", "30"]))
                    .await
                    .unwrap();
            match output {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => panic!(
                    "node {NODE} did not start within {BOOT_TIMEOUT:?}: {err}; logs in {}",
                    self.dir.join("log").display()
                ),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(err) = rabbitmqctl(&["stop"]) {
            eprintln!("stopping {NODE}: {err}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("rabbitmqctl")
        .args(["-n", NODE])
        .args(args)
        .output()
        .map_err(|err| format!("rabbitmqctl: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {} {}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

async fn connect(user: &str, password: &str) -> lapin::Result<Connection> {
    let uri = format!("amqp://{user}:{password}@127.0.0.1:{AMQP_PORT}/%2f");
    match tokio::time::timeout(
        OP_TIMEOUT,
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => panic!("connecting as {user} timed out after {OP_TIMEOUT:?}"),
    }
}

/// Whether `err` is RabbitMQ's 403 ACCESS_REFUSED.
fn access_refused(err: &lapin::Error) -> bool {
    match err {
        lapin::Error::ProtocolError(amqp) => amqp.get_id() == 403,
        other => format!("{other:?}").contains("ACCESS_REFUSED"),
    }
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(OP_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out after {OP_TIMEOUT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_authenticates_through_the_api() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    let server = TestServer::on_listener(
        Backend::Sqlite.connect().await,
        common::test_config(),
        listener,
    )
    .await;
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

    let node = Node::start(api_port);
    node.await_startup().await;

    // The fresh node has no `stargazer` exchange; an mq rw account declares it.
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
    .expect("an mq rw credential declares the exchange");

    // The bot declares, binds and consumes its own queue.
    let queue = format!("stargazer.bot.test-{}", Uuid::new_v4().simple());
    let bot = connect("bot", "pw-bot").await.expect("the bot logs in");
    let consume_channel = within("bot channel", bot.create_channel()).await.unwrap();
    within(
        "bot exchange.declare",
        consume_channel.exchange_declare(
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
    .expect("declaring the existing exchange is allowed to consumers");
    within(
        "queue.declare",
        consume_channel.queue_declare(
            &queue,
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("the bot declares its stargazer.* queue");
    within(
        "queue.bind",
        consume_channel.queue_bind(
            &queue,
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
            &queue,
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

    // A queue outside the prefix is refused too.
    let other_channel = within("bot channel", bot.create_channel()).await.unwrap();
    let foreign = within(
        "foreign queue.declare",
        other_channel.queue_declare(
            "not-ours",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect_err("queues outside stargazer.* are refused");
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
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="vhost",result="allow"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stargazer_api_mq_auth_total{check="topic",result="allow"}"#),
        "{metrics}"
    );

    for connection in [admin, bot, worker] {
        let _ = within("close", connection.close(200, "done")).await;
    }
    drop(node);
    server.stop().await;
}
