//! The message bus behind one trait, [`Bus`], with two implementations: RabbitMQ
//! ([`amqp::AmqpBus`], production) and an in-process topic router
//! ([`memory::MemoryBus`], standalone). Both pass the same contract suite
//! (`core/tests/bus_*.rs`).
//!
//! Semantics both honour (docs/ARCHITECTURE.md §4): the topology of [`crate::topology`]
//! (exchanges `stargazer` and `stargazer.dlx`, the queue `stargazer.dead`, durable named
//! consumer queues that dead-letter into `stargazer.dlx`) shared by every instance of a
//! service; messages published before a consumer starts wait in its queue; publishes are
//! mandatory and return only once the broker confirmed a routed message; a message no
//! queue takes is retried with backoff and then dead-lettered with its reason
//! ([`BusError::Unroutable`]); consumers ack explicitly; a message that can never be
//! processed is rejected and the broker moves it to `stargazer.dead`.
//!
//! [`connect`] picks the implementation from the URL: `amqp://…`, `amqps://…` or
//! `memory://`.

pub mod amqp;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::topology::{self, QueueType, Topology, SETUP_COMMAND};

/// Errors of bus operations.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus URL is not one this build understands.
    #[error("invalid bus url `{0}`: expected amqp://…, amqps://… or memory://")]
    InvalidUrl(String),
    /// The broker refused or did not confirm a publish (nack, or connection lost before the
    /// confirm arrived); the message may or may not have been routed.
    #[error("publish not confirmed: {0}")]
    NotConfirmed(String),
    /// No queue took the message on any attempt: it was published to the dead-letter
    /// exchange with its reason instead (docs/ARCHITECTURE.md §4), so it is not lost, but
    /// it will not reach a consumer.
    #[error(
        "no queue is bound for routing key `{routing_key}` after {attempts} attempts; \
         the message was dead-lettered to `stargazer.dead`"
    )]
    Unroutable {
        /// The key no binding matched.
        routing_key: String,
        /// Publishes tried.
        attempts: u32,
    },
    /// A part of the topology does not exist and this credential may not create it.
    #[error(
        "broker topology incomplete: {entity} does not exist and this credential may not \
         create it ({detail}); run `{SETUP_COMMAND}` with a topology credential"
    )]
    TopologyMissing {
        /// What is missing, e.g. "exchange `stargazer.dlx`".
        entity: String,
        /// The broker's answer.
        detail: String,
    },
    /// The broker could not be reached or the channel failed.
    #[error("broker error: {0}")]
    Broker(String),
    /// The bus was shut down.
    #[error("bus closed")]
    Closed,
}

/// Result alias for bus operations.
pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// Which part of the topology a queue is (docs/ARCHITECTURE.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueKind {
    /// A consumer queue: bound on `stargazer`, dead-letters into `stargazer.dlx`.
    #[default]
    Work,
    /// `stargazer.dead`: bound on `stargazer.dlx`, dead-letters nowhere.
    DeadLetter,
}

impl QueueKind {
    /// The exchange its bindings are on.
    pub fn exchange(self) -> &'static str {
        match self {
            QueueKind::Work => topology::EXCHANGE,
            QueueKind::DeadLetter => topology::DEAD_LETTER_EXCHANGE,
        }
    }

    /// The queue arguments it is declared with as a queue of type `queue_type`.
    pub fn arguments(self, queue_type: QueueType) -> Vec<(&'static str, &'static str)> {
        match self {
            QueueKind::Work => topology::queue_arguments(queue_type),
            QueueKind::DeadLetter => queue_type.arguments(),
        }
    }
}

/// Where and how a consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Durable queue name, e.g. `stargazer.middleware.delay`.
    pub name: String,
    /// Binding patterns on the queue's exchange (`#.delay`, `*`).
    pub bindings: Vec<String>,
    /// How many unacknowledged deliveries this consumer may hold.
    pub prefetch: u16,
    /// Consumer queue or the dead-letter queue.
    pub kind: QueueKind,
}

impl QueueSpec {
    /// A consumer queue bound to one pattern on `stargazer`.
    pub fn new(name: impl Into<String>, binding: impl Into<String>, prefetch: u16) -> Self {
        Self {
            name: name.into(),
            bindings: vec![binding.into()],
            prefetch,
            kind: QueueKind::Work,
        }
    }
}

/// Counters every bus keeps; [`BusMetrics::register`] exposes them.
#[derive(Clone)]
pub struct BusMetrics {
    dead_lettered: IntCounterVec,
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BusMetrics {
    /// Unregistered counters: `stargazer_bus_dead_lettered_total{queue, reason}`.
    pub fn new() -> Self {
        let opts = Opts::new(
            "stargazer_bus_dead_lettered_total",
            "Messages dead-lettered, by the queue they left (`none` when no queue took \
             them) and a reason class.",
        );
        // Fixed valid name and label names: construction cannot fail.
        let dead_lettered =
            IntCounterVec::new(opts, &["queue", "reason"]).expect("fixed metric options are valid");
        Self { dead_lettered }
    }

    /// Registers the counters in `registry`; a second registration is logged and ignored.
    pub fn register(&self, registry: &Registry) {
        if let Err(err) = registry.register(Box::new(self.dead_lettered.clone())) {
            tracing::warn!(cause = %err, "bus metrics not registered");
        }
    }

    /// How many messages left `queue` dead-lettered for `reason`.
    pub fn dead_lettered(&self, queue: &str, reason: &str) -> u64 {
        self.dead_lettered.with_label_values(&[queue, reason]).get()
    }

    pub(crate) fn count_dead_letter(&self, queue: &str, reason: &str) {
        self.dead_lettered.with_label_values(&[queue, reason]).inc();
    }
}

/// The `queue` label of messages no queue took.
pub const UNROUTED_QUEUE_LABEL: &str = "none";

/// The `reason` label of messages no queue took.
pub const UNROUTABLE_REASON: &str = "unroutable";

/// The `reason` label of a plain [`Delivery::dead_letter`].
pub const REJECTED_REASON: &str = "rejected";

/// How a bus handles what the broker cannot route, and what it declares up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusOptions {
    /// Publishes retried after the broker returned a message as unroutable, before it is
    /// dead-lettered (`unroutable_retries`, default 6).
    pub unroutable_retries: u32,
    /// Pause before the first such retry; it doubles with each (default 200 ms).
    pub unroutable_delay: Duration,
    /// The consumer queues of the deployment: the in-process bus declares them at
    /// creation; the RabbitMQ bus leaves them to `stargazer admin broker setup` and to
    /// the consumers. Its [`Topology::queue_type`] is the type the RabbitMQ bus declares
    /// every queue with (`amqp_queue_type`) and whether deliveries carry a count.
    pub topology: Topology,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            unroutable_retries: 6,
            unroutable_delay: Duration::from_millis(200),
            topology: Topology::default(),
        }
    }
}

/// One message handed to a consumer; settle it with exactly one of [`Delivery::ack`],
/// [`Delivery::requeue`] or [`Delivery::dead_letter`]. Dropping it unsettled leaves it to
/// be redelivered when the consumer goes away.
pub struct Delivery {
    /// The routing key it was published with.
    pub routing_key: String,
    /// The message body.
    pub body: Vec<u8>,
    /// Whether the broker delivered it before (to this or another consumer).
    pub redelivered: bool,
    /// String headers (on `stargazer.dead`: the broker's `x-first-death-*`, or the
    /// publisher's reason and original key for unroutable messages).
    pub headers: Vec<(String, String)>,
    /// How many times the broker returned this message to its queue before this delivery
    /// (`x-delivery-count`, 0 on a first delivery), when the queue counts that: quorum
    /// queues do, across consumers and restarts. `None` when nothing counts (classic
    /// queues, the in-process bus).
    pub delivery_count: Option<u32>,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("body_len", &self.body.len())
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}

impl Delivery {
    /// Builds a delivery; used by bus implementations.
    pub fn new(
        routing_key: String,
        body: Vec<u8>,
        redelivered: bool,
        headers: Vec<(String, String)>,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self {
            routing_key,
            body,
            redelivered,
            headers,
            delivery_count: None,
            acker,
        }
    }

    /// The delivery with the broker's delivery count (see [`Delivery::delivery_count`]).
    pub fn with_delivery_count(mut self, count: Option<u32>) -> Self {
        self.delivery_count = count;
        self
    }

    /// The value of a string header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Done with it: the broker forgets the message.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Could not process it now: put it back for another attempt.
    pub async fn requeue(self) -> Result<()> {
        self.acker.requeue().await
    }

    /// Can never process it: rejects it without requeue, so the broker moves it through
    /// the queue's dead-letter exchange to `stargazer.dead` (with `x-death`). The bus logs
    /// `reason` and counts it as [`REJECTED_REASON`]; callers log it with the event id.
    pub async fn dead_letter(self, reason: &str) -> Result<()> {
        self.dead_letter_as(REJECTED_REASON, reason).await
    }

    /// [`Delivery::dead_letter`] counted under the reason class `class` (a fixed word
    /// such as `attempts_exhausted`: it becomes a metric label).
    pub async fn dead_letter_as(self, class: &'static str, reason: &str) -> Result<()> {
        self.acker.reject(&self.routing_key, class, reason).await
    }
}

/// How an implementation settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledge.
    async fn ack(&self) -> Result<()>;
    /// Reject with requeue.
    async fn requeue(&self) -> Result<()>;
    /// Reject without requeue (the broker dead-letters it); `class` and `reason` are for
    /// the log line and the metric.
    async fn reject(&self, routing_key: &str, class: &'static str, reason: &str) -> Result<()>;
}

/// A stream of deliveries from one queue. It survives broker reconnects: after a
/// connection loss it re-declares and re-consumes, and unacked deliveries come back
/// (flagged `redelivered`).
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the bus is closed.
    async fn next(&mut self) -> Option<Delivery>;
}

/// Publish and consume on the `stargazer` exchange.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a persistent JSON message with `routing_key` (mandatory) and waits for the
    /// broker's confirm that a queue took it. Retries across reconnects until confirmed or
    /// the bus is closed; an unroutable message is retried with backoff and then
    /// dead-lettered ([`BusError::Unroutable`]).
    async fn publish(&self, routing_key: &str, body: &[u8]) -> Result<()>;

    /// Makes sure the durable queue with its bindings exists (creating it when missing and
    /// allowed) and starts consuming.
    async fn consume(&self, queue: &QueueSpec) -> Result<Box<dyn Consumer>>;

    /// Makes sure the durable queue with its bindings exists without consuming, so
    /// messages published from now on wait for a consumer.
    async fn declare(&self, queue: &QueueSpec) -> Result<()>;

    /// The bus's counters.
    fn metrics(&self) -> &BusMetrics;

    /// Closes connections; later calls fail with [`BusError::Closed`].
    async fn close(&self);

    /// Whether the bus can publish and consume right now (for `/readyz`): a broker
    /// connection is up. The default, for buses without a connection, is `true`.
    fn is_ready(&self) -> bool {
        true
    }
}

/// Opens the bus named by `url` with default [`BusOptions`].
pub async fn connect(url: &str) -> Result<Arc<dyn Bus>> {
    connect_with(url, BusOptions::default()).await
}

/// Opens the bus named by `url` with `options`.
pub async fn connect_with(url: &str, options: BusOptions) -> Result<Arc<dyn Bus>> {
    if url.starts_with("amqp://") || url.starts_with("amqps://") {
        Ok(Arc::new(amqp::AmqpBus::connect_with(url, options).await?))
    } else if url == "memory://" || url.starts_with("memory://") {
        Ok(Arc::new(memory::MemoryBus::with_options(options)))
    } else {
        Err(BusError::InvalidUrl(url.to_owned()))
    }
}
