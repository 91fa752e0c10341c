//! The broker permission matrix of docs/ARCHITECTURE.md §8 on a real RabbitMQ node
//! (`sgmatrix@localhost` on port 5674) that authenticates through the api's internal
//! listener: every credential kind × every operation that could forge, delete or starve
//! what is not its own, each answered exactly as the table says — done, or refused by
//! the broker (ACCESS_REFUSED, or the login refused).
//!
//! The topology credential first declares what `stargazer admin broker setup` declares
//! (both exchanges, the dead queue, every consumer queue with its dead-letter exchange).
//! Each credential then gets one connection and a fresh channel per operation (a refusal
//! closes the channel, and a channel remembers granted permissions). Publishes wait for
//! the broker's confirm, so a publish the broker dropped silently would show as done
//! where the table says refused, or fail to land in the dead queue, whose count is checked
//! at the end.

mod common;
#[path = "common/node.rs"]
mod node;

use std::fmt;

use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use stargazer_core::model::{Access, Permissions};

use common::{perms, Backend, TestServer};
use node::{within, Node};

const NODE: &str = "sgmatrix";
const AMQP_PORT: u16 = 5674;
const SECRET: &str = "matrix-test-secret-0123456789";

const EXCHANGE: &str = "stargazer";
const DLX: &str = "stargazer.dlx";
const DEAD: &str = "stargazer.dead";

/// Every consumer queue (suffix under the prefix) and its binding.
const CONSUMER_QUEUES: &[(&str, &str)] = &[
    ("bot.telegram", "*"),
    ("middleware.delay", "#.delay"),
    ("middleware.translate", "#.translate"),
    ("middleware.live_check", "#.live_check"),
];

/// A credential kind under test.
struct Role {
    user: &'static str,
    permissions: Permissions,
    /// The queue it owns (suffix), if any.
    owns: Option<&'static str>,
}

impl Role {
    fn logs_in(&self) -> bool {
        self.permissions.mq.is_some()
    }

    fn rw(&self) -> bool {
        self.permissions.mq == Some(Access::Rw)
    }

    fn topology(&self) -> bool {
        self.rw() && self.permissions.admin == Some(Access::Rw)
    }

    /// A queue that belongs to another role.
    fn foreign_queue(&self) -> &'static str {
        if self.owns == Some("bot.telegram") {
            "middleware.delay"
        } else {
            "bot.telegram"
        }
    }
}

/// What the broker did with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// 403 ACCESS_REFUSED.
    Refused,
    /// 406 PRECONDITION_FAILED: permitted, but the broker kept the existing resource
    /// (different arguments, or a delete `if_unused` of something in use).
    Kept,
}

/// One operation of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    PublishExchange,
    PublishDefaultToQueue,
    PublishDefaultToDead,
    PublishDlx,
    DeclareExchange,
    DeclareExchangeOtherArgs,
    DeleteExchangeIfUnused,
    DeclareDlxOtherArgs,
    DeleteDlxIfUnused,
    DeclareQueue(Whose),
    DeclareQueueOtherArgs(Whose),
    BindQueue(Whose),
    BindQueueToDlx(Whose),
    ConsumeQueue(Whose),
    PurgeQueue(Whose),
    DeleteQueue(Whose),
}

/// Whose queue an operation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whose {
    Own,
    Foreign,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// What the §8 table allows, written out independently of the api's code.
fn expected(role: &Role, op: Op) -> Outcome {
    use Outcome::*;
    let allow = |yes: bool| if yes { Done } else { Refused };
    let reaches = |whose: Whose| role.topology() || whose == Whose::Own;
    match op {
        Op::PublishExchange | Op::PublishDlx => allow(role.rw()),
        Op::PublishDefaultToQueue | Op::PublishDefaultToDead => Refused,
        Op::DeclareExchange => allow(role.topology()),
        Op::DeclareExchangeOtherArgs
        | Op::DeleteExchangeIfUnused
        | Op::DeclareDlxOtherArgs
        | Op::DeleteDlxIfUnused => {
            if role.topology() {
                Kept
            } else {
                Refused
            }
        }
        Op::DeclareQueueOtherArgs(whose) => {
            if reaches(whose) {
                Kept
            } else {
                Refused
            }
        }
        Op::BindQueueToDlx(whose) => allow(role.topology() && reaches(whose)),
        Op::DeclareQueue(whose)
        | Op::BindQueue(whose)
        | Op::ConsumeQueue(whose)
        | Op::PurgeQueue(whose)
        | Op::DeleteQueue(whose) => allow(reaches(whose)),
    }
}

fn outcome(result: lapin::Result<()>, what: &str) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(lapin::Error::ProtocolError(err)) if err.get_id() == 403 => Outcome::Refused,
        Err(lapin::Error::ProtocolError(err)) if err.get_id() == 406 => Outcome::Kept,
        Err(err) => panic!("{what}: unexpected error {err:?}"),
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// The arguments every consumer queue is declared with.
fn consumer_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(DLX)),
    );
    args
}

fn binding_of(suffix: &str) -> &'static str {
    CONSUMER_QUEUES
        .iter()
        .find(|(queue, _)| *queue == suffix)
        .map(|(_, binding)| *binding)
        .expect("a consumer queue")
}

fn topic_exchange(durable: bool) -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares what `stargazer admin broker setup` declares.
async fn declare_topology(channel: &Channel) -> lapin::Result<()> {
    for exchange in [EXCHANGE, DLX] {
        channel
            .exchange_declare(
                exchange,
                ExchangeKind::Topic,
                topic_exchange(true),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .queue_declare(DEAD, durable(), FieldTable::default())
        .await?;
    channel
        .queue_bind(
            DEAD,
            DLX,
            "#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for (suffix, binding) in CONSUMER_QUEUES {
        let queue = format!("stargazer.{suffix}");
        channel
            .queue_declare(&queue, durable(), consumer_args())
            .await?;
        channel
            .queue_bind(
                &queue,
                EXCHANGE,
                binding,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

async fn publish(channel: &Channel, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let confirmation = channel
        .basic_publish(
            exchange,
            key,
            BasicPublishOptions::default(),
            b"{\"probe\":true}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    assert!(
        confirmation.is_ack(),
        "publish to {exchange:?} with {key} was not acked: {confirmation:?}"
    );
    Ok(())
}

/// Runs `op` as `role` on a fresh channel of `connection`.
async fn run(connection: &Connection, role: &Role, op: Op) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    let queue = |whose: Whose| {
        let suffix = match whose {
            Whose::Own => role.owns.expect("own-queue operations need an owned queue"),
            Whose::Foreign => role.foreign_queue(),
        };
        (format!("stargazer.{suffix}"), binding_of(suffix))
    };
    let result = match op {
        Op::PublishExchange => publish(&channel, EXCHANGE, "matrix.probe").await,
        // The forgery of the report: straight into the bot's queue.
        Op::PublishDefaultToQueue => publish(&channel, "", "stargazer.bot.telegram").await,
        Op::PublishDefaultToDead => publish(&channel, "", DEAD).await,
        Op::PublishDlx => publish(&channel, DLX, "matrix.probe").await,
        Op::DeclareExchange => {
            channel
                .exchange_declare(
                    EXCHANGE,
                    ExchangeKind::Topic,
                    topic_exchange(true),
                    FieldTable::default(),
                )
                .await
        }
        Op::DeclareExchangeOtherArgs | Op::DeclareDlxOtherArgs => {
            let name = if op == Op::DeclareDlxOtherArgs {
                DLX
            } else {
                EXCHANGE
            };
            channel
                .exchange_declare(
                    name,
                    ExchangeKind::Topic,
                    topic_exchange(false),
                    FieldTable::default(),
                )
                .await
        }
        Op::DeleteExchangeIfUnused | Op::DeleteDlxIfUnused => {
            let name = if op == Op::DeleteDlxIfUnused {
                DLX
            } else {
                EXCHANGE
            };
            channel
                .exchange_delete(
                    name,
                    ExchangeDeleteOptions {
                        if_unused: true,
                        ..ExchangeDeleteOptions::default()
                    },
                )
                .await
        }
        Op::DeclareQueue(whose) => {
            let (name, _) = queue(whose);
            channel
                .queue_declare(&name, durable(), consumer_args())
                .await
                .map(drop)
        }
        Op::DeclareQueueOtherArgs(whose) => {
            let (name, _) = queue(whose);
            channel
                .queue_declare(&name, durable(), FieldTable::default())
                .await
                .map(drop)
        }
        Op::BindQueue(whose) => {
            let (name, binding) = queue(whose);
            channel
                .queue_bind(
                    &name,
                    EXCHANGE,
                    binding,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
        Op::BindQueueToDlx(whose) => {
            let (name, _) = queue(whose);
            channel
                .queue_bind(
                    &name,
                    DLX,
                    "#",
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
        Op::ConsumeQueue(whose) => {
            let (name, _) = queue(whose);
            let consumed = channel
                .basic_consume(
                    &name,
                    "matrix",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(drop);
            if consumed.is_ok() {
                // Cancel before the channel closes: a delivery still in flight when
                // the channel is gone would put the whole connection into error,
                // failing the next operation instead of this one.
                channel
                    .basic_cancel("matrix", BasicCancelOptions::default())
                    .await?;
            }
            consumed
        }
        Op::PurgeQueue(whose) => {
            let (name, _) = queue(whose);
            channel
                .queue_purge(&name, QueuePurgeOptions::default())
                .await
                .map(drop)
        }
        Op::DeleteQueue(whose) => {
            let (name, binding) = queue(whose);
            let deleted = channel
                .queue_delete(&name, QueueDeleteOptions::default())
                .await
                .map(drop);
            if deleted.is_ok() {
                // Put it back for the operations that follow.
                channel
                    .queue_declare(&name, durable(), consumer_args())
                    .await?;
                channel
                    .queue_bind(
                        &name,
                        EXCHANGE,
                        binding,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            deleted
        }
    };
    if channel.status().connected() {
        let _ = channel.close(200, "done").await;
    }
    result
}

/// Every operation a role is checked with.
fn operations(role: &Role) -> Vec<Op> {
    let mut ops = vec![
        Op::PublishExchange,
        Op::PublishDefaultToQueue,
        Op::PublishDefaultToDead,
        Op::PublishDlx,
        Op::DeclareExchange,
        Op::DeclareExchangeOtherArgs,
        Op::DeleteExchangeIfUnused,
        Op::DeclareDlxOtherArgs,
        Op::DeleteDlxIfUnused,
    ];
    let mut whose = vec![Whose::Foreign];
    if role.owns.is_some() {
        whose.insert(0, Whose::Own);
    }
    for whose in whose {
        ops.extend([
            Op::DeclareQueue(whose),
            Op::DeclareQueueOtherArgs(whose),
            Op::BindQueue(whose),
            Op::BindQueueToDlx(whose),
            Op::ConsumeQueue(whose),
            Op::PurgeQueue(whose),
            Op::DeleteQueue(whose),
        ]);
    }
    ops
}

fn roles() -> Vec<Role> {
    let role = |user, permissions, owns| Role {
        user,
        permissions,
        owns,
    };
    vec![
        role(
            "bot-telegram",
            perms(&[("api", Access::Rw), ("mq", Access::Ro)]),
            Some("bot.telegram"),
        ),
        role(
            "worker",
            perms(&[("mq", Access::Rw), ("coordinator", Access::Ro)]),
            None,
        ),
        role(
            "middleware-delay",
            perms(&[("mq", Access::Rw)]),
            Some("middleware.delay"),
        ),
        role(
            "middleware-translate",
            perms(&[("mq", Access::Rw)]),
            Some("middleware.translate"),
        ),
        role(
            "middleware-live-check",
            perms(&[("mq", Access::Rw)]),
            Some("middleware.live_check"),
        ),
        role(
            "admin",
            perms(&[("api", Access::Rw), ("admin", Access::Rw)]),
            None,
        ),
        role("reader", perms(&[("api", Access::Ro)]), None),
        // Last: it may do everything, and does.
        role(
            "topology",
            perms(&[("admin", Access::Rw), ("mq", Access::Rw)]),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_reaches_exactly_what_section_8_allows() {
    let config = stargazer_api::ApiConfig {
        auth_secret: Some(SECRET.into()),
        ..common::test_config()
    };
    let server = TestServer::with_config(Backend::Sqlite.connect().await, config).await;
    let roles = roles();
    for role in &roles {
        let owns: Vec<&str> = role.owns.into_iter().collect();
        server
            .credential_owning(role.user, role.permissions, &owns)
            .await;
    }
    let auth_base = format!("http://rabbit:{SECRET}@{}", server.internal_addr);
    let node = Node::start(NODE, AMQP_PORT, &auth_base);
    node.await_startup().await;
    let started = std::time::Instant::now();

    let topology = node
        .connect("topology", "pw-topology")
        .await
        .expect("the topology credential logs in");
    let channel = within("setup channel", topology.create_channel())
        .await
        .unwrap();
    within("declare the topology", declare_topology(&channel))
        .await
        .expect("the topology credential declares everything");

    // Neither a credential without mq, nor an unknown user, nor a wrong password logs in.
    let mut mismatches = Vec::new();
    for (user, password) in [("ghost", "pw-ghost"), ("worker", "pw-wrong")] {
        if let Err(err) = node.connect(user, password).await {
            assert!(node::access_refused(&err), "{user}: {err:?}");
        } else {
            mismatches.push(format!("{user} logged in with {password}"));
        }
    }

    let mut checked = 0;
    let mut dead_letters = 0;
    for role in &roles {
        let connection = match node.connect(role.user, &format!("pw-{}", role.user)).await {
            Ok(connection) => connection,
            Err(err) => {
                assert!(node::access_refused(&err), "{}: {err:?}", role.user);
                if role.logs_in() {
                    mismatches.push(format!("{}: login refused", role.user));
                }
                checked += 1;
                continue;
            }
        };
        if !role.logs_in() {
            mismatches.push(format!("{}: logged in without mq", role.user));
        }
        for op in operations(role) {
            let what = format!("{} {op}", role.user);
            let got = outcome(within(&what, run(&connection, role, op)).await, &what);
            let want = expected(role, op);
            if got != want {
                mismatches.push(format!("{what}: expected {want:?}, got {got:?}"));
            }
            if op == Op::PublishDlx && got == Outcome::Done {
                dead_letters += 1;
            }
            checked += 1;
        }
        let _ = within("close", connection.close(200, "done")).await;
    }

    // What was confirmed landed in the dead queue, and nothing else did.
    let channel = within("count channel", topology.create_channel())
        .await
        .unwrap();
    let dead = within(
        "passive declare",
        channel.queue_declare(
            DEAD,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert!(
        mismatches.is_empty(),
        "{} of {checked} checks differ from docs/ARCHITECTURE.md §8:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(dead.message_count(), dead_letters, "messages in {DEAD}");
    assert_eq!(dead_letters, 5, "every mq rw credential published to {DLX}");
    eprintln!(
        "{checked} checks in {:?} (after the node booted)",
        started.elapsed()
    );
    let _ = within("close", topology.close(200, "done")).await;
    drop(node);
    server.stop().await;
}
