//! RabbitMQ implementation of [`Bus`](super::Bus) on `lapin`, driven by the tokio runtime.
//!
//! Shape:
//! - The URL may be a comma-separated list, one per node of a cluster: a connect tries
//!   them in order, a reconnect in turn starting with the node after the one lost, each
//!   with [`CONNECT_TIMEOUT`]; a round that reaches none is retried with backoff
//!   (docs/ARCHITECTURE.md §6).
//! - Every queue is declared with the type of [`BusOptions::topology`]
//!   (`amqp_queue_type`); deliveries of a quorum queue carry the broker's delivery count
//!   ([`Delivery::delivery_count`]), which the middleware runtime caps attempts with. A
//!   queue found with the other type is logged with the migration steps and consumed as
//!   it is, without a count.
//! - A supervisor task owns the connection. On every connect it checks the fixed topology
//!   ([`crate::topology`]: both exchanges and `stargazer.dead`) and watches the
//!   connection (error callback, status polling, and kicks from callers that saw a
//!   failure), reconnecting with [`Backoff`] when it is lost. The current connection is
//!   published through a `watch` channel together with a generation number.
//! - Declarations are passive first: only a topology credential may configure the
//!   `stargazer` exchange and other roles' queues (docs/ARCHITECTURE.md §8), so a service
//!   only looks for them, and declares a part only when the broker says it does not exist
//!   (a failed passive declare closes its channel, so the next step uses a fresh one).
//!   When it may not create it either, the operation fails with
//!   [`BusError::TopologyMissing`] naming the part and `stargazer admin broker setup`; the
//!   supervisor and the consumers keep retrying with backoff. A consumer then re-declares
//!   its own queue with the topology's arguments: a queue left from a deployment without
//!   `x-dead-letter-exchange` is reported by an error log line naming it (the broker would
//!   drop what that queue rejects) and is still consumed; other mismatches are refused.
//! - Publishing uses a pool of confirm-mode channels, each carrying ONE publish at a time,
//!   so up to [`PUBLISH_CHANNELS`] confirms are in flight while a `basic.return` (an
//!   unroutable mandatory publish) can only belong to the publish on its channel; the
//!   returned message's `message_id` is checked against the publish as well. A failed or
//!   lost confirm discards the channel and the publish is retried on a fresh one (possibly
//!   after a reconnect) until the broker confirms it or the bus is closed; a retry after a
//!   lost confirm may duplicate the message, and consumers deduplicate on the event id.
//! - A returned message is published again after a pause (200 ms doubling, by default 6
//!   more times) and then to `stargazer.dlx` with the headers `x-stargazer-dead-reason`
//!   and `x-stargazer-routing-key`, logged and counted; the caller gets
//!   [`BusError::Unroutable`].
//! - Each consumer has its own channel with `basic.qos(prefetch)`. When the channel or the
//!   connection dies, the consumer re-declares its queue and re-consumes on the next
//!   connection while the caller keeps reading from the same [`Consumer`] object.
//!   Deliveries taken from a dead channel cannot be settled (their ack returns an error);
//!   the broker redelivers them.
//! - Dead-lettering rejects the delivery without requeue: the broker moves it through the
//!   queue's dead-letter exchange to `stargazer.dead` with an `x-death` header, so a
//!   consumer needs no write permission anywhere to dead-letter.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    Acker, Bus, BusError, BusMetrics, BusOptions, Consumer, Delivery, QueueKind, QueueSpec, Result,
    UNROUTABLE_REASON, UNROUTED_QUEUE_LABEL,
};
use crate::backoff::Backoff;
use crate::config::{redact_url, redact_url_list, split_url_list};
use crate::sync::lock;
use crate::topology::{
    self, ExchangeSpec, ExchangeType, QueueType, Topology, DEAD_LETTER_ARGUMENT,
    DEAD_LETTER_EXCHANGE, DEAD_REASON_HEADER, DEAD_ROUTING_KEY_HEADER, DELIVERY_COUNT_HEADER,
    EXCHANGE, QUEUE_TYPE_ARGUMENT, SETUP_COMMAND,
};
use crate::wait::{backoff_unless_cancelled, sleep_unless_cancelled, Waited};
use connection::*;
use consume::*;
use declare::*;

pub use declare::{setup, SetupStep};

/// Client-provided connection name used by [`AmqpBus::connect`].
pub const DEFAULT_CONNECTION_NAME: &str = "stargazer";

/// Confirm-mode channels publishing at once, one publish each (see the module docs).
pub const PUBLISH_CHANNELS: usize = 64;

/// A confirm that never arrives (a lost frame, a broker that stopped answering without
/// closing the socket) must not hang a publisher forever: past this the publish is retried
/// on a fresh channel.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for sending an ack/nack frame; past it the settle reports an error and the
/// broker redelivers the message once the channel goes away.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the supervisor looks at the connection state, as a safety net for losses the
/// error callback does not report (a broker-initiated close is reported only as a state
/// change).
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Largest AMQP frame this client proposes unless the URL says otherwise
/// (`?frame_max=`). lapin keeps two buffers of 32 frames per connection, so the broker's
/// default of 128 KiB would pin 8 MiB in every process; events are a few KiB, and a
/// larger body is simply split into more frames.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// Upper bound for a graceful `connection.close` handshake during [`Bus::close`].
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound for opening a connection to one node: an unreachable host (packets
/// dropped rather than refused) must not keep the bus from trying the next node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One established connection and its number in the sequence of connections this bus
/// opened (1 for the first).
struct Session {
    generation: u64,
    connection: Connection,
}

/// What the supervisor publishes to everyone else.
#[derive(Clone)]
enum Link {
    /// Reconnecting.
    Down,
    /// Connected.
    Up(Arc<Session>),
    /// [`Bus::close`] was called.
    Closed,
}

/// Why one attempt at a broker operation failed, and so whether to try again.
enum Failure {
    /// The bus is closed: stop.
    Closed,
    /// Connection or channel trouble: retry once the connection is back.
    Transient(String),
    /// The broker refused the operation itself (e.g. a queue redeclared with other
    /// arguments, access refused): retrying cannot help.
    Permanent(String),
    /// A part of the topology is missing and may not be created with this credential.
    Missing {
        /// What is missing.
        entity: String,
        /// The broker's answer.
        detail: String,
    },
}

impl Failure {
    fn into_error(self, what: &str) -> BusError {
        match self {
            Failure::Closed => BusError::Closed,
            Failure::Transient(message) | Failure::Permanent(message) => {
                BusError::Broker(format!("{what}: {message}"))
            }
            Failure::Missing { entity, detail } => BusError::TopologyMissing { entity, detail },
        }
    }
}

/// The soft error (channel-level refusal) behind `error`, if that is what it is.
fn soft_error(error: &lapin::Error) -> Option<AMQPSoftError> {
    match error {
        lapin::Error::ProtocolError(e) => match e.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

impl From<lapin::Error> for Failure {
    fn from(error: lapin::Error) -> Self {
        let permanent = matches!(
            soft_error(&error),
            Some(
                AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::RESOURCELOCKED
            )
        );
        if permanent {
            Failure::Permanent(error.to_string())
        } else {
            Failure::Transient(error.to_string())
        }
    }
}

impl From<BusError> for Failure {
    fn from(error: BusError) -> Self {
        match error {
            BusError::Closed => Failure::Closed,
            BusError::TopologyMissing { entity, detail } => Failure::Missing { entity, detail },
            other => Failure::Transient(other.to_string()),
        }
    }
}

/// Where a confirmed publish ended.
enum Routed {
    /// A queue took it.
    Yes,
    /// The broker returned it: no binding matched (its reply text).
    Returned(String),
}

/// The idle publishing channels of one connection. A std mutex: held only to push or pop.
struct PublishPool {
    idle: Mutex<Vec<(u64, Channel)>>,
    /// One permit per channel that may be publishing.
    slots: Semaphore,
}

/// One broker node the bus may connect to.
struct Endpoint {
    uri: AMQPUri,
    /// Its URL with the password masked, for messages.
    display: String,
}

/// The nodes of a comma-separated list of AMQP URLs, in order, each with this client's
/// frame size unless the URL sets one.
fn endpoints(list: &str) -> Result<Vec<Endpoint>> {
    let urls = split_url_list(list);
    if urls.is_empty() {
        return Err(BusError::InvalidUrl(format!(
            "{} (no URL given)",
            redact_url_list(list)
        )));
    }
    urls.into_iter()
        .map(|url| {
            let display = redact_url(url);
            let mut uri: AMQPUri = url
                .parse()
                .map_err(|e: String| BusError::InvalidUrl(format!("{display} ({e})")))?;
            uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
            Ok(Endpoint { uri, display })
        })
        .collect()
}

struct Inner {
    /// The nodes to connect to, tried in turn (docs/ARCHITECTURE.md §6).
    endpoints: Vec<Endpoint>,
    /// Index in `endpoints` of the node of the current (or last) connection.
    current_endpoint: AtomicUsize,
    /// The URL list with passwords masked, for messages.
    display_url: String,
    name: String,
    options: BusOptions,
    metrics: BusMetrics,
    closed: CancellationToken,
    link: watch::Sender<Link>,
    /// Kicked by callers that saw a failure so the supervisor checks the connection now.
    kick: Notify,
    publishers: PublishPool,
    /// Numbers publishes, so a returned message is recognised by its `message_id`.
    published: AtomicU64,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    connections_opened: AtomicU64,
}

/// RabbitMQ-backed bus. Dropping the last handle closes it (like [`Bus::close`], without
/// waiting for the connection to shut down).
pub struct AmqpBus {
    inner: Arc<Inner>,
    _close_on_drop: DropGuard,
}

impl AmqpBus {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`, or a comma-separated list of
    /// such URLs, one per cluster node) under the connection name
    /// [`DEFAULT_CONNECTION_NAME`] with default [`BusOptions`]. Fails if the URL is invalid
    /// or the first connection cannot be made (or the topology is missing); once
    /// connected, later losses are repaired in the background. Must be called inside a
    /// tokio runtime.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_named_with(url, DEFAULT_CONNECTION_NAME, BusOptions::default()).await
    }

    /// [`AmqpBus::connect`] with `options`.
    pub async fn connect_with(url: &str, options: BusOptions) -> Result<Self> {
        Self::connect_named_with(url, DEFAULT_CONNECTION_NAME, options).await
    }

    /// Like [`AmqpBus::connect`], with the client-provided connection name `name` (shown by
    /// the management tools, e.g. `rabbitmqctl list_connections client_properties`).
    pub async fn connect_named(url: &str, name: &str) -> Result<Self> {
        Self::connect_named_with(url, name, BusOptions::default()).await
    }

    /// [`AmqpBus::connect_named`] with `options`.
    pub async fn connect_named_with(url: &str, name: &str, options: BusOptions) -> Result<Self> {
        let display_url = redact_url_list(url);
        let endpoints = endpoints(url)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BusError::Broker(
                "the AMQP bus must be created inside a tokio runtime".into(),
            ));
        }
        let (link, _) = watch::channel(Link::Down);
        let inner = Arc::new(Inner {
            endpoints,
            current_endpoint: AtomicUsize::new(0),
            display_url,
            name: name.to_owned(),
            options,
            metrics: BusMetrics::new(),
            closed: CancellationToken::new(),
            link,
            kick: Notify::new(),
            publishers: PublishPool {
                idle: Mutex::new(Vec::new()),
                slots: Semaphore::new(PUBLISH_CHANNELS),
            },
            published: AtomicU64::new(0),
            supervisor: Mutex::new(None),
            connections_opened: AtomicU64::new(0),
        });
        let first = inner.open_connection(0).await.map_err(|e| match e {
            missing @ BusError::TopologyMissing { .. } => missing,
            other => BusError::Broker(format!(
                "cannot connect to any of {}: {other}",
                inner.display_url
            )),
        })?;
        let handle = tokio::spawn(supervise(inner.clone(), first));
        *lock(&inner.supervisor) = Some(handle);
        let guard = inner.closed.clone().drop_guard();
        Ok(Self {
            inner,
            _close_on_drop: guard,
        })
    }

    /// The client-provided connection name.
    pub fn connection_name(&self) -> &str {
        &self.inner.name
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.link.borrow(), Link::Up(s) if s.connection.status().connected())
    }

    /// How many connections this bus has opened so far (1 + the number of reconnects).
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections_opened.load(Ordering::Relaxed)
    }

    /// The position, in the configured URL list, of the node the current (or last)
    /// connection went to.
    pub fn connected_endpoint(&self) -> usize {
        self.inner.current_endpoint.load(Ordering::Relaxed)
    }
}

/// Connects to `url` as a shared [`super::Bus`].
pub async fn connect_shared(url: &str) -> Result<Arc<dyn Bus>> {
    Ok(Arc::new(AmqpBus::connect(url).await?))
}

fn connection_properties(name: &str) -> ConnectionProperties {
    ConnectionProperties::default()
        .with_connection_name(LongString::from(name))
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
}

fn properties(message_id: &str, headers: Option<FieldTable>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id));
    match headers {
        Some(headers) => properties.with_headers(headers),
        None => properties,
    }
}

/// The string-valued headers of a delivery (others, such as the broker's `x-death`
/// table, are not part of the bus contract).
fn string_headers(properties: &BasicProperties) -> Vec<(String, String)> {
    let Some(table) = properties.headers() else {
        return Vec::new();
    };
    table
        .inner()
        .iter()
        .filter_map(|(key, value)| {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => return None,
            };
            Some((key.as_str().to_owned(), text))
        })
        .collect()
}

/// The broker's `x-delivery-count` header (any integer type), if present and not
/// negative.
fn delivery_count(properties: &BasicProperties) -> Option<u32> {
    let value = properties
        .headers()
        .as_ref()?
        .inner()
        .get(DELIVERY_COUNT_HEADER)?;
    let count: i64 = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    };
    u32::try_from(count).ok()
}

fn field_table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert(
            ShortString::from(*key),
            AMQPValue::LongString(LongString::from(*value)),
        );
    }
    table
}

impl Inner {
    /// Opens a connection and checks (passively, creating what is missing when allowed)
    /// both exchanges and the dead-letter queue on it.
    /// Tries every node once, starting with the one at `first` in the URL list: the first
    /// that connects (and passes the topology check) wins. A missing topology is the
    /// cluster's, not one node's, and ends the round at once.
    async fn open_connection(&self, first: usize) -> Result<Connection> {
        let count = self.endpoints.len();
        let mut last_error = BusError::Broker("no broker URL".into());
        for offset in 0..count {
            let index = (first + offset) % count;
            match self.open_endpoint(&self.endpoints[index]).await {
                Ok(connection) => {
                    self.current_endpoint.store(index, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(missing @ BusError::TopologyMissing { .. }) => return Err(missing),
                Err(error) => {
                    if count > 1 {
                        tracing::warn!(url = %self.endpoints[index].display, %error, "broker node unavailable; trying the next one");
                    }
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// Connects to one node, checking (passively, creating what is missing when allowed)
    /// both exchanges and the dead-letter queue.
    async fn open_endpoint(&self, endpoint: &Endpoint) -> Result<Connection> {
        let connect =
            Connection::connect_uri(endpoint.uri.clone(), connection_properties(&self.name));
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(BusError::Broker(format!("{}: {e}", endpoint.display))),
            Err(_) => {
                return Err(BusError::Broker(format!(
                    "{}: no connection within {CONNECT_TIMEOUT:?}",
                    endpoint.display
                )))
            }
        };
        let queue_type = self.options.topology.queue_type;
        let setup = async {
            let mut declarer = Declarer::new(&connection, queue_type);
            for exchange in &topology::EXCHANGES {
                declarer.exchange(exchange, Mode::Check).await?;
            }
            declarer
                .queue(&topology::dead_letter_queue(1), Mode::Check)
                .await?;
            if let Some(channel) = declarer.channel.take() {
                channel.close(200, "setup done").await?;
            }
            Ok::<(), Failure>(())
        };
        if let Err(failure) = setup.await {
            // Best effort: the connection is unusable for us either way.
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "setup failed")).await;
            return Err(failure.into_error("topology check"));
        }
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        Ok(connection)
    }

    /// The type every queue is declared with.
    fn queue_type(&self) -> QueueType {
        self.options.topology.queue_type
    }

    /// The current connection, waiting while the supervisor reconnects.
    async fn session(&self) -> Result<Arc<Session>> {
        let mut link = self.link.subscribe();
        loop {
            let current = link.borrow_and_update().clone();
            match current {
                Link::Closed => return Err(BusError::Closed),
                Link::Up(session) if session.connection.status().connected() => return Ok(session),
                // Up but dead: the supervisor has not noticed yet.
                Link::Up(_) => self.kick.notify_one(),
                Link::Down => {}
            }
            tokio::select! {
                _ = self.closed.cancelled() => return Err(BusError::Closed),
                changed = link.changed() => {
                    if changed.is_err() {
                        return Err(BusError::Closed);
                    }
                }
            }
        }
    }

    /// Runs `op` until it succeeds, the bus closes, or it fails permanently; transient
    /// failures are retried with backoff (and make the supervisor check the connection).
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            if self.closed.is_cancelled() {
                return Err(BusError::Closed);
            }
            let attempt = tokio::select! {
                _ = self.closed.cancelled() => return Err(BusError::Closed),
                attempt = op() => attempt,
            };
            match attempt {
                Ok(value) => return Ok(value),
                Err(Failure::Transient(message)) => {
                    tracing::warn!(what, error = %message, "broker operation failed; retrying");
                    self.kick.notify_one();
                    if backoff_unless_cancelled(&mut backoff, &self.closed)
                        .await
                        .is_cancelled()
                    {
                        return Err(BusError::Closed);
                    }
                }
                Err(other) => return Err(other.into_error(what)),
            }
        }
    }

    /// An idle publishing channel of the current connection, or a new one in confirm mode.
    async fn publish_channel(&self) -> Result<(u64, Channel)> {
        // The hot path: an idle channel of the current connection, without subscribing
        // to the link.
        let current = match &*self.link.borrow() {
            Link::Up(session) => Some(session.generation),
            Link::Down | Link::Closed => None,
        };
        if let Some(current) = current {
            let mut idle = lock(&self.publishers.idle);
            while let Some((generation, channel)) = idle.pop() {
                if generation == current && channel.status().connected() {
                    return Ok((generation, channel));
                }
            }
        }
        let session = self.session().await?;
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|e| BusError::Broker(e.to_string()))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BusError::Broker(e.to_string()))?;
        Ok((session.generation, channel))
    }

    /// Publishes persistently and mandatory and waits for the broker's confirm, retrying
    /// on connection or channel loss until confirmed or closed. A nack is final.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: Option<FieldTable>,
    ) -> Result<Routed> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            if self.closed.is_cancelled() {
                return Err(BusError::Closed);
            }
            // One publish per channel at a time: see the module docs. The semaphore is
            // never closed.
            let slot = tokio::select! {
                _ = self.closed.cancelled() => return Err(BusError::Closed),
                slot = self.publishers.slots.acquire() => slot.map_err(|_| BusError::Closed)?,
            };
            let (generation, channel) = match self.publish_channel().await {
                Ok(channel) => channel,
                Err(BusError::Closed) => return Err(BusError::Closed),
                Err(error) => {
                    drop(slot);
                    tracing::warn!(%error, "cannot open a publishing channel; retrying");
                    self.kick.notify_one();
                    if backoff_unless_cancelled(&mut backoff, &self.closed)
                        .await
                        .is_cancelled()
                    {
                        return Err(BusError::Closed);
                    }
                    continue;
                }
            };
            let message_id = self.published.fetch_add(1, Ordering::Relaxed).to_string();
            let outcome = async {
                let confirm = channel
                    .basic_publish(
                        exchange,
                        routing_key,
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        body,
                        properties(&message_id, headers.clone()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                    Ok(confirmation) => confirmation.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no confirm within {CONFIRM_TIMEOUT:?}")),
                }
            };
            let outcome = tokio::select! {
                _ = self.closed.cancelled() => return Err(BusError::Closed),
                outcome = outcome => outcome,
            };
            let keep = |channel: Channel| lock(&self.publishers.idle).push((generation, channel));
            match outcome {
                Ok(Confirmation::Ack(None)) => {
                    keep(channel);
                    return Ok(Routed::Yes);
                }
                Ok(Confirmation::Ack(Some(returned))) => {
                    let theirs = returned
                        .delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|id| id.as_str().to_owned());
                    if theirs.as_deref() == Some(message_id.as_str()) {
                        keep(channel);
                        return Ok(Routed::Returned(returned.reply_text.as_str().to_owned()));
                    }
                    // Cannot happen with one publish per channel; should it, the
                    // channel's bookkeeping is not to be trusted, and whether this
                    // publish was routed is unknown: publish it again on a fresh one.
                    tracing::warn!(routing_key, ?theirs, ours = %message_id, "a returned message belongs to another publish; retrying on a fresh channel");
                }
                Ok(Confirmation::Nack(_)) => {
                    keep(channel);
                    return Err(BusError::NotConfirmed(format!(
                        "broker nacked the message for `{routing_key}`"
                    )));
                }
                Ok(Confirmation::NotRequested) => {
                    // Only possible if the channel lost confirm mode; use a fresh one.
                    tracing::warn!("publishing channel is not in confirm mode; reopening");
                }
                Err(error) => {
                    tracing::warn!(routing_key, %error, "publish not confirmed; retrying");
                    self.kick.notify_one();
                    drop(slot);
                    if backoff_unless_cancelled(&mut backoff, &self.closed)
                        .await
                        .is_cancelled()
                    {
                        return Err(BusError::Closed);
                    }
                }
            }
        }
    }

    /// Publishes to `stargazer`; a returned message is retried with backoff and then
    /// dead-lettered (see the module docs).
    async fn publish_routed(&self, routing_key: &str, body: &[u8]) -> Result<()> {
        let retries = self.options.unroutable_retries;
        let mut delay = self.options.unroutable_delay;
        let mut reply = String::new();
        for retry in 0..=retries {
            match self
                .publish_confirmed(EXCHANGE, routing_key, body, None)
                .await?
            {
                Routed::Yes => return Ok(()),
                Routed::Returned(text) => reply = text,
            }
            if retry < retries {
                tracing::warn!(routing_key, retry = retry + 1, ?delay, reply = %reply, "no queue took the message; retrying");
                if sleep_unless_cancelled(delay, &self.closed)
                    .await
                    .is_cancelled()
                {
                    return Err(BusError::Closed);
                }
                delay = delay.saturating_mul(2);
            }
        }
        let attempts = retries + 1;
        let reason = format!(
            "unroutable: no queue bound for `{routing_key}` after {attempts} attempts ({reply})"
        );
        let headers = field_table(&[
            (DEAD_REASON_HEADER, reason.as_str()),
            (DEAD_ROUTING_KEY_HEADER, routing_key),
        ]);
        match self
            .publish_confirmed(DEAD_LETTER_EXCHANGE, routing_key, body, Some(headers))
            .await?
        {
            Routed::Yes => {
                self.metrics
                    .count_dead_letter(UNROUTED_QUEUE_LABEL, UNROUTABLE_REASON);
                tracing::error!(routing_key, attempts, %reason, "message dead-lettered");
                Err(BusError::Unroutable {
                    routing_key: routing_key.to_owned(),
                    attempts,
                })
            }
            Routed::Returned(text) => {
                tracing::error!(routing_key, %reason, "cannot dead-letter an unroutable message: nothing is bound to `{DEAD_LETTER_EXCHANGE}`");
                Err(BusError::TopologyMissing {
                    entity: format!("a queue bound to exchange `{DEAD_LETTER_EXCHANGE}`"),
                    detail: text,
                })
            }
        }
    }

    /// Opens a consumer channel with its prefetch, makes sure the queue exists and starts
    /// consuming.
    async fn open_consumer(&self, spec: &QueueSpec) -> std::result::Result<Active, Failure> {
        let session = self.session().await?;
        let counts_deliveries = {
            let mut declarer = Declarer::new(&session.connection, self.queue_type());
            declarer.queue(spec, Mode::Ensure).await?;
            if let Some(channel) = declarer.channel.take() {
                channel.close(200, "declared").await?;
            }
            // A queue left with the other type is consumed as it is: only a queue that
            // really is quorum counts deliveries.
            self.queue_type().counts_deliveries() && !declarer.other_type
        };
        let channel = session.connection.create_channel().await?;
        channel
            .basic_qos(spec.prefetch.max(1), BasicQosOptions::default())
            .await?;
        let tag = format!("{}.{}", self.name, uuid::Uuid::new_v4().simple());
        let stream = channel
            .basic_consume(
                &spec.name,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Active {
            counts_deliveries,
            generation: session.generation,
            link: self.link.subscribe(),
            channel,
            stream,
        })
    }
}

#[async_trait]
impl Bus for AmqpBus {
    fn is_ready(&self) -> bool {
        self.is_connected()
    }

    async fn publish(&self, routing_key: &str, body: &[u8]) -> Result<()> {
        self.inner.publish_routed(routing_key, body).await
    }

    async fn consume(&self, queue: &QueueSpec) -> Result<Box<dyn Consumer>> {
        let what = format!("consume `{}`", queue.name);
        let active = self
            .inner
            .retry(&what, || self.inner.open_consumer(queue))
            .await?;
        Ok(Box::new(AmqpConsumer {
            inner: self.inner.clone(),
            spec: queue.clone(),
            queue: Arc::from(queue.name.as_str()),
            active: Some(active),
            backoff: Backoff::default(),
        }))
    }

    async fn declare(&self, queue: &QueueSpec) -> Result<()> {
        let what = format!("declare `{}`", queue.name);
        self.inner
            .retry(&what, || async {
                let session = self.inner.session().await?;
                let mut declarer = Declarer::new(&session.connection, self.inner.queue_type());
                declarer.queue(queue, Mode::Ensure).await?;
                if let Some(channel) = declarer.channel.take() {
                    channel.close(200, "declared").await?;
                }
                Ok(())
            })
            .await
    }

    fn metrics(&self) -> &BusMetrics {
        &self.inner.metrics
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        let supervisor = lock(&self.inner.supervisor).take();
        if let Some(supervisor) = supervisor {
            if let Err(error) = supervisor.await {
                tracing::warn!(%error, "bus supervisor ended abnormally");
            }
        }
    }
}

// The connection supervisor, the topology declarations and the consuming side, each in
// a file of its own.
mod connection;
mod consume;
mod declare;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_only_the_password() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn headers_keep_string_values_only() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongString("x".into()));
        table.insert("b".into(), AMQPValue::ShortString("y".into()));
        table.insert("c".into(), AMQPValue::LongLongInt(3));
        let mut headers = string_headers(&BasicProperties::default().with_headers(table));
        headers.sort();
        assert_eq!(
            headers,
            vec![("a".into(), "x".into()), ("b".into(), "y".into())]
        );
        assert!(string_headers(&BasicProperties::default()).is_empty());
    }

    #[test]
    fn the_delivery_count_is_read_from_any_integer_header() {
        let with = |value: AMQPValue| {
            let mut table = FieldTable::default();
            table.insert(DELIVERY_COUNT_HEADER.into(), value);
            delivery_count(&BasicProperties::default().with_headers(table))
        };
        assert_eq!(with(AMQPValue::LongLongInt(3)), Some(3));
        assert_eq!(with(AMQPValue::LongInt(2)), Some(2));
        assert_eq!(with(AMQPValue::LongLongInt(-1)), None);
        assert_eq!(with(AMQPValue::LongString("3".into())), None);
        assert_eq!(delivery_count(&BasicProperties::default()), None);
    }

    #[test]
    fn soft_refusals_are_permanent_and_io_is_transient() {
        let refused = lapin::Error::ProtocolError(lapin::protocol::AMQPError::new(
            AMQPSoftError::PRECONDITIONFAILED.into(),
            "inequivalent arg 'durable'".into(),
        ));
        assert!(matches!(Failure::from(refused), Failure::Permanent(_)));
        let io = lapin::Error::IOError(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(matches!(Failure::from(io), Failure::Transient(_)));
        assert!(matches!(Failure::from(BusError::Closed), Failure::Closed));
    }
}
