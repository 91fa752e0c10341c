//! The message bus behind one trait, [`Bus`], with two implementations: RabbitMQ
//! ([`amqp::AmqpBus`], production) and an in-process topic router
//! ([`memory::MemoryBus`], standalone). Both pass the same contract suite
//! (`core/tests/bus_*.rs`).
//!
//! Semantics both honour (docs/ARCHITECTURE.md §4): one durable topic exchange `stargazer`; durable
//! named queues shared by every instance of a service; messages published before a
//! consumer starts wait in its queue; publishes return only once the broker confirmed;
//! consumers ack explicitly; a message that can never be processed is dead-lettered to
//! `stargazer.dead` with its reason.
//!
//! [`connect`] picks the implementation from the URL: `amqp://…`, `amqps://…` or
//! `memory://`.

pub mod amqp;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;

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
    /// The broker could not be reached or the channel failed.
    #[error("broker error: {0}")]
    Broker(String),
    /// The bus was shut down.
    #[error("bus closed")]
    Closed,
}

/// Result alias for bus operations.
pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// Where and how a consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Durable queue name, e.g. `stargazer.middleware.delay`.
    pub name: String,
    /// Binding patterns on the `stargazer` exchange (`#.delay`, `*`); may be empty (for
    /// the dead-letter queue).
    pub bindings: Vec<String>,
    /// How many unacknowledged deliveries this consumer may hold.
    pub prefetch: u16,
}

impl QueueSpec {
    /// A queue bound to one pattern.
    pub fn new(name: impl Into<String>, binding: impl Into<String>, prefetch: u16) -> Self {
        Self {
            name: name.into(),
            bindings: vec![binding.into()],
            prefetch,
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
    /// String headers (dead-letter reason and original key on `stargazer.dead`).
    pub headers: Vec<(String, String)>,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("body_len", &self.body.len())
            .field("redelivered", &self.redelivered)
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
            acker,
        }
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

    /// Can never process it: publish it to `stargazer.dead` with `reason`, then ack.
    pub async fn dead_letter(self, reason: &str) -> Result<()> {
        self.acker
            .dead_letter(&self.routing_key, &self.body, reason)
            .await
    }
}

/// How an implementation settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledge.
    async fn ack(&self) -> Result<()>;
    /// Reject with requeue.
    async fn requeue(&self) -> Result<()>;
    /// Publish to the dead-letter queue with `reason` (confirmed), then acknowledge.
    async fn dead_letter(&self, routing_key: &str, body: &[u8], reason: &str) -> Result<()>;
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
    /// Publishes a persistent JSON message with `routing_key` and waits for the broker's
    /// confirm. Retries across reconnects until confirmed or the bus is closed.
    async fn publish(&self, routing_key: &str, body: &[u8]) -> Result<()>;

    /// Declares the durable queue with its bindings (idempotent) and starts consuming.
    async fn consume(&self, queue: &QueueSpec) -> Result<Box<dyn Consumer>>;

    /// Declares the durable queue with its bindings without consuming, so messages
    /// published from now on wait for a consumer.
    async fn declare(&self, queue: &QueueSpec) -> Result<()>;

    /// Closes connections; later calls fail with [`BusError::Closed`].
    async fn close(&self);
}

/// Opens the bus named by `url`.
pub async fn connect(url: &str) -> Result<Arc<dyn Bus>> {
    if url.starts_with("amqp://") || url.starts_with("amqps://") {
        amqp::connect_shared(url).await
    } else if url == "memory://" || url.starts_with("memory://") {
        Ok(Arc::new(memory::MemoryBus::new()))
    } else {
        Err(BusError::InvalidUrl(url.to_owned()))
    }
}
