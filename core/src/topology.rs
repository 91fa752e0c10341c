//! The broker topology as data (docs/ARCHITECTURE.md §4): both exchanges, the dead-letter
//! queue and every consumer queue with its bindings and arguments. `stargazer admin broker
//! setup` declares all of it with a topology credential; each service checks the parts it
//! uses (passively first, see [`crate::bus::amqp`]); the in-process bus declares it when it
//! is created. Producers and consumers take every name from here.
//!
//! | entity | type | bound to | arguments |
//! |---|---|---|---|
//! | exchange `stargazer` | topic, durable | | |
//! | exchange `stargazer.dlx` | topic, durable | | |
//! | queue `stargazer.dead` | durable | `stargazer.dlx` with `#` | (`x-queue-type = quorum`) |
//! | queue `stargazer.middleware.<tag>` | durable | `stargazer` with `#.<tag>` | `x-dead-letter-exchange = stargazer.dlx` (`x-queue-type = quorum`) |
//! | queue `stargazer.bot.<im>` | durable | `stargazer` with `*` | `x-dead-letter-exchange = stargazer.dlx` (`x-queue-type = quorum`) |
//!
//! `x-queue-type = quorum` only with [`QueueType::Quorum`] (`amqp_queue_type = "quorum"`):
//! replicated queues for a broker cluster. Classic queues are declared without the
//! argument, as before the setting existed, so existing classic queues still match.
//!
//! The dead-letter exchange is a topic exchange, not a fanout: RabbitMQ checks topic
//! permissions (the routing key a credential may write with) only on topic exchanges, so
//! with a fanout any credential allowed to declare a dead-lettering queue could also
//! publish straight into `stargazer.dead`.

use crate::bus::{QueueKind, QueueSpec};
use crate::routing;

/// The topic exchange every service publishes to.
pub const EXCHANGE: &str = "stargazer";

/// The dead-letter exchange: consumer queues dead-letter into it, and publishers send
/// messages the broker could not route there.
pub const DEAD_LETTER_EXCHANGE: &str = "stargazer.dlx";

/// The queue that keeps every dead letter.
pub const DEAD_LETTER_QUEUE: &str = "stargazer.dead";

/// The binding of [`DEAD_LETTER_QUEUE`] on [`DEAD_LETTER_EXCHANGE`]: every key.
pub const DEAD_LETTER_BINDING: &str = "#";

/// The queue argument that makes the broker move rejected messages to an exchange.
pub const DEAD_LETTER_ARGUMENT: &str = "x-dead-letter-exchange";

/// Header carrying the reason a publisher dead-lettered a message it could not route.
pub const DEAD_REASON_HEADER: &str = "x-stargazer-dead-reason";

/// Header carrying the routing key a dead-lettered message was published with.
pub const DEAD_ROUTING_KEY_HEADER: &str = "x-stargazer-routing-key";

/// Header the broker sets (a string) on a message it dead-lettered: why (`rejected`,
/// `expired`, …). The full history is in `x-death`.
pub const FIRST_DEATH_REASON_HEADER: &str = "x-first-death-reason";

/// Header the broker sets (a string) on a message it dead-lettered: the queue it left.
pub const FIRST_DEATH_QUEUE_HEADER: &str = "x-first-death-queue";

/// The command that declares the topology; errors about missing parts name it.
pub const SETUP_COMMAND: &str = "stargazer admin broker setup";

/// Exchange type as AMQP names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// Routes by pattern on dot-separated words.
    Topic,
}

/// One durable exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: ExchangeType,
}

/// Both exchanges, in declaration order.
pub const EXCHANGES: [ExchangeSpec; 2] = [
    ExchangeSpec {
        name: EXCHANGE,
        kind: ExchangeType::Topic,
    },
    ExchangeSpec {
        name: DEAD_LETTER_EXCHANGE,
        kind: ExchangeType::Topic,
    },
];

/// The queue argument that picks the queue type (docs/ARCHITECTURE.md §4).
pub const QUEUE_TYPE_ARGUMENT: &str = "x-queue-type";

/// Header a quorum queue sets (a number) on a redelivered message: how many times it was
/// returned to the queue before (negatively acknowledged with requeue, or left unacked
/// by a consumer whose channel closed). Absent on a first delivery.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// The type every queue of the topology is declared with (`amqp_queue_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A classic durable queue (one node holds it): the default, for a single broker.
    #[default]
    Classic,
    /// A quorum queue, replicated over the cluster's nodes (Raft), which counts the
    /// deliveries of each message ([`DELIVERY_COUNT_HEADER`]).
    Quorum,
}

impl QueueType {
    /// The name RabbitMQ uses, also the config value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }

    /// The declare arguments that select this type: none for classic (so queues declared
    /// before the setting existed still match), `x-queue-type = quorum` otherwise.
    pub fn arguments(self) -> Vec<(&'static str, &'static str)> {
        match self {
            QueueType::Classic => Vec::new(),
            QueueType::Quorum => vec![(QUEUE_TYPE_ARGUMENT, "quorum")],
        }
    }

    /// Whether the broker counts deliveries of each message ([`DELIVERY_COUNT_HEADER`]).
    pub fn counts_deliveries(self) -> bool {
        self == QueueType::Quorum
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for QueueType {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!("`{other}` is not a queue type: classic or quorum")),
        }
    }
}

/// The arguments every consumer queue of type `queue_type` is declared with: dead letters
/// go to [`DEAD_LETTER_EXCHANGE`] (keeping their routing key), plus the type's own.
pub fn queue_arguments(queue_type: QueueType) -> Vec<(&'static str, &'static str)> {
    let mut arguments = vec![(DEAD_LETTER_ARGUMENT, DEAD_LETTER_EXCHANGE)];
    arguments.extend(queue_type.arguments());
    arguments
}

/// The dead-letter queue, for reading dead letters with `prefetch` in flight.
pub fn dead_letter_queue(prefetch: u16) -> QueueSpec {
    QueueSpec {
        name: DEAD_LETTER_QUEUE.to_owned(),
        bindings: vec![DEAD_LETTER_BINDING.to_owned()],
        prefetch,
        kind: QueueKind::DeadLetter,
    }
}

/// The queue of middleware `tag`: `stargazer.middleware.<tag>` bound to `#.<tag>`.
pub fn middleware_queue(tag: &str, prefetch: u16) -> QueueSpec {
    QueueSpec::new(
        routing::middleware_queue(tag),
        routing::middleware_pattern(tag),
        prefetch,
    )
}

/// The queue of the bot for IM platform `im`: `stargazer.bot.<im>` bound to `*`.
pub fn bot_queue(im: &str, prefetch: u16) -> QueueSpec {
    QueueSpec::new(routing::bot_queue(im), routing::READY_PATTERN, prefetch)
}

/// The middlewares of this workspace, by tag.
pub const MIDDLEWARES: [&str; 3] = crate::contract::tag::ALL;

/// The IM platforms of this workspace.
pub const IMS: [&str; 1] = crate::contract::im::ALL;

/// The consumer queues of a deployment (besides the fixed exchanges and dead-letter
/// queue, which every topology has) and the type every queue is declared with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every consumer queue with its bindings; all are dead-lettering work queues.
    pub queues: Vec<QueueSpec>,
    /// The type of every queue, `stargazer.dead` included (`amqp_queue_type`).
    pub queue_type: QueueType,
}

impl Topology {
    /// A topology with these consumer queues, all classic.
    pub fn new(queues: Vec<QueueSpec>) -> Self {
        Self {
            queues,
            queue_type: QueueType::Classic,
        }
    }

    /// The same queues declared as `queue_type`.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// The default deployment: every middleware of [`MIDDLEWARES`] and every bot of
    /// [`IMS`] under its default queue name.
    pub fn standard() -> Self {
        let mut queues: Vec<QueueSpec> = MIDDLEWARES
            .iter()
            .map(|tag| middleware_queue(tag, 1))
            .collect();
        queues.extend(IMS.iter().map(|im| bot_queue(im, 1)));
        Self::new(queues)
    }

    /// Every queue to declare, the dead-letter queue first (so that nothing a consumer
    /// queue dead-letters is lost while the rest is being declared).
    pub fn all_queues(&self) -> Vec<QueueSpec> {
        let mut all = vec![dead_letter_queue(1)];
        all.extend(self.queues.iter().cloned());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_queues_dead_letter_and_the_dead_queue_does_not() {
        let topology = Topology::standard();
        let all = topology.all_queues();
        assert_eq!(all[0].name, DEAD_LETTER_QUEUE);
        assert_eq!(all[0].kind.exchange(), DEAD_LETTER_EXCHANGE);
        assert!(all[0].kind.arguments(QueueType::Classic).is_empty());
        assert_eq!(
            all[0].kind.arguments(QueueType::Quorum),
            [(QUEUE_TYPE_ARGUMENT, "quorum")]
        );
        let names: Vec<&str> = all[1..].iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "stargazer.middleware.delay",
                "stargazer.middleware.translate",
                "stargazer.middleware.live_check",
                "stargazer.bot.telegram"
            ]
        );
        for queue in &all[1..] {
            assert_eq!(queue.kind.exchange(), EXCHANGE);
            assert_eq!(
                queue.kind.arguments(QueueType::Classic),
                [(DEAD_LETTER_ARGUMENT, DEAD_LETTER_EXCHANGE)]
            );
            assert_eq!(
                queue.kind.arguments(QueueType::Quorum),
                queue_arguments(QueueType::Quorum)
            );
        }
        assert_eq!(all[1].bindings, ["#.delay"]);
        assert_eq!(all[4].bindings, ["*"]);
    }

    #[test]
    fn queue_types_parse_and_print_their_rabbitmq_names() {
        for queue_type in [QueueType::Classic, QueueType::Quorum] {
            assert_eq!(queue_type.as_str().parse::<QueueType>(), Ok(queue_type));
        }
        assert!("stream".parse::<QueueType>().is_err());
        assert!(QueueType::Quorum.counts_deliveries());
        assert!(!QueueType::Classic.counts_deliveries());
        assert!(queue_arguments(QueueType::Quorum).contains(&(QUEUE_TYPE_ARGUMENT, "quorum")));
    }

    #[test]
    fn both_exchanges_are_topic() {
        assert!(EXCHANGES.iter().all(|e| e.kind == ExchangeType::Topic));
        assert_eq!(EXCHANGES[1].name, DEAD_LETTER_EXCHANGE);
    }
}
