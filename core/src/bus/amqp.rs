//! RabbitMQ implementation of [`Bus`](super::Bus) on `lapin`, driven by the tokio runtime.
//!
//! Shape:
//! - A supervisor task owns the connection. It declares the durable topic exchange
//!   `stargazer` and the durable dead-letter queue on every connect, watches the
//!   connection (error callback, status polling, and kicks from callers that saw a
//!   failure) and reconnects with [`Backoff`] when it is lost. The current connection is
//!   published through a `watch` channel together with a generation number.
//! - Publishing shares ONE confirm-mode channel among all concurrent publishers: each
//!   publish sends its frames and then awaits only its own confirm, so many confirms are in
//!   flight at once instead of one round trip per message. A failed or lost confirm
//!   discards the channel and the publish is retried on a fresh one (possibly after a
//!   reconnect) until the broker confirms it or the bus is closed. A retry after a lost
//!   confirm may duplicate the message; consumers deduplicate on the event id.
//! - Each consumer has its own channel with `basic.qos(prefetch)`. When the channel or the
//!   connection dies, the consumer re-declares its queue and re-consumes on the next
//!   connection while the caller keeps reading from the same [`Consumer`] object.
//!   Deliveries taken from a dead channel cannot be settled (their ack returns an error);
//!   the broker redelivers them.
//! - Dead-lettering publishes (confirmed) to `stargazer.dead` through the default exchange
//!   with the reason and original routing key as headers, then acks the original.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Acker, Bus, BusError, Consumer, Delivery, QueueSpec, Result};
use crate::backoff::Backoff;
use crate::routing::{DEAD_LETTER_QUEUE, DEAD_REASON_HEADER, DEAD_ROUTING_KEY_HEADER, EXCHANGE};

/// Client-provided connection name used by [`AmqpBus::connect`].
pub const DEFAULT_CONNECTION_NAME: &str = "stargazer";

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
}

impl From<lapin::Error> for Failure {
    fn from(error: lapin::Error) -> Self {
        let permanent = matches!(
            &error,
            lapin::Error::ProtocolError(e) if matches!(
                e.kind(),
                AMQPErrorKind::Soft(
                    AMQPSoftError::PRECONDITIONFAILED
                        | AMQPSoftError::ACCESSREFUSED
                        | AMQPSoftError::NOTFOUND
                        | AMQPSoftError::RESOURCELOCKED
                )
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
            other => Failure::Transient(other.to_string()),
        }
    }
}

struct Inner {
    uri: AMQPUri,
    /// The URL with its password masked, for messages.
    display_url: String,
    name: String,
    closed: CancellationToken,
    link: watch::Sender<Link>,
    /// Kicked by callers that saw a failure so the supervisor checks the connection now.
    kick: Notify,
    /// The shared confirm-mode publishing channel. A std mutex: held only to clone or swap.
    publisher: Mutex<Option<Channel>>,
    /// Serializes opening the publishing channel so concurrent publishers share one.
    opening_publisher: tokio::sync::Mutex<()>,
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
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`) under the connection name
    /// [`DEFAULT_CONNECTION_NAME`]. Fails if the URL is invalid or the first connection
    /// cannot be made; once connected, later losses are repaired in the background.
    /// Must be called inside a tokio runtime.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_named(url, DEFAULT_CONNECTION_NAME).await
    }

    /// Like [`AmqpBus::connect`], with the client-provided connection name `name` (shown by
    /// the management tools, e.g. `rabbitmqctl list_connections client_properties`).
    pub async fn connect_named(url: &str, name: &str) -> Result<Self> {
        let display_url = redact(url);
        let mut uri: AMQPUri = url
            .parse()
            .map_err(|e: String| BusError::InvalidUrl(format!("{display_url} ({e})")))?;
        uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BusError::Broker(
                "the AMQP bus must be created inside a tokio runtime".into(),
            ));
        }
        let (link, _) = watch::channel(Link::Down);
        let inner = Arc::new(Inner {
            uri,
            display_url,
            name: name.to_owned(),
            closed: CancellationToken::new(),
            link,
            kick: Notify::new(),
            publisher: Mutex::new(None),
            opening_publisher: tokio::sync::Mutex::new(()),
            supervisor: Mutex::new(None),
            connections_opened: AtomicU64::new(0),
        });
        let first = inner.open_connection().await.map_err(|e| {
            BusError::Broker(format!("cannot connect to {}: {e}", inner.display_url))
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
}

/// Connects to `url` as a shared [`super::Bus`].
pub async fn connect_shared(url: &str) -> Result<Arc<dyn Bus>> {
    Ok(Arc::new(AmqpBus::connect(url).await?))
}

/// Locks a std mutex, ignoring poisoning: the guarded values are plain handles that stay
/// valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Masks the password of an `amqp://user:pass@host` URL.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn properties(headers: Option<FieldTable>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"));
    match headers {
        Some(headers) => properties.with_headers(headers),
        None => properties,
    }
}

/// The string-valued headers of a delivery (others are not part of the bus contract).
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

/// Declares the exchange, then the durable queue of `spec` with its bindings.
async fn declare_queue(channel: &Channel, spec: &QueueSpec) -> lapin::Result<()> {
    declare_exchange(channel).await?;
    channel
        .queue_declare(
            &spec.name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for pattern in &spec.bindings {
        channel
            .queue_bind(
                &spec.name,
                EXCHANGE,
                pattern,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

async fn declare_exchange(channel: &Channel) -> lapin::Result<()> {
    channel
        .exchange_declare(
            EXCHANGE,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

impl Inner {
    /// Opens a connection and declares the exchange and the dead-letter queue on it.
    async fn open_connection(&self) -> lapin::Result<Connection> {
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(self.name.as_str()))
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let connection = Connection::connect_uri(self.uri.clone(), properties).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            declare_queue(
                &channel,
                &QueueSpec {
                    name: DEAD_LETTER_QUEUE.to_owned(),
                    bindings: Vec::new(),
                    prefetch: 1,
                },
            )
            .await?;
            channel.close(200, "setup done").await
        };
        if let Err(error) = setup.await {
            // Best effort: the connection is unusable for us either way.
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "setup failed")).await;
            return Err(error);
        }
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        Ok(connection)
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
                Err(Failure::Closed) => return Err(BusError::Closed),
                Err(Failure::Permanent(message)) => {
                    return Err(BusError::Broker(format!("{what}: {message}")))
                }
                Err(Failure::Transient(message)) => {
                    tracing::warn!(what, error = %message, "broker operation failed; retrying");
                    self.kick.notify_one();
                    self.pause(&mut backoff).await?;
                }
            }
        }
    }

    /// Sleeps the next backoff delay unless the bus closes first.
    async fn pause(&self, backoff: &mut Backoff) -> Result<()> {
        tokio::select! {
            _ = self.closed.cancelled() => Err(BusError::Closed),
            _ = tokio::time::sleep(backoff.next_delay()) => Ok(()),
        }
    }

    /// The shared confirm-mode channel, opened on first use or after a loss.
    async fn publish_channel(&self) -> Result<Channel> {
        if let Some(channel) = self.live_publish_channel() {
            return Ok(channel);
        }
        let _opening = self.opening_publisher.lock().await;
        // Another publisher may have opened it while this one waited.
        if let Some(channel) = self.live_publish_channel() {
            return Ok(channel);
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
        // A publishing channel is (re)opened only at start and after a failure; declaring
        // the exchange here repairs one deleted under a running bus, which would otherwise
        // fail every retry with NOT_FOUND.
        declare_exchange(&channel)
            .await
            .map_err(|e| BusError::Broker(e.to_string()))?;
        *lock(&self.publisher) = Some(channel.clone());
        Ok(channel)
    }

    fn live_publish_channel(&self) -> Option<Channel> {
        lock(&self.publisher)
            .as_ref()
            .filter(|channel| channel.status().connected())
            .cloned()
    }

    /// Forgets the publishing channel `failed` so the next publish opens a fresh one.
    fn discard_publish_channel(&self, failed: &Channel) {
        let mut current = lock(&self.publisher);
        if current.as_ref().is_some_and(|c| c.id() == failed.id()) {
            *current = None;
        }
    }

    /// Publishes persistently and waits for the broker's confirm, retrying on connection
    /// or channel loss until confirmed or closed. A nack is final.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: Option<FieldTable>,
    ) -> Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            if self.closed.is_cancelled() {
                return Err(BusError::Closed);
            }
            let channel = match self.publish_channel().await {
                Ok(channel) => channel,
                Err(BusError::Closed) => return Err(BusError::Closed),
                Err(error) => {
                    tracing::warn!(%error, "cannot open the publishing channel; retrying");
                    self.kick.notify_one();
                    self.pause(&mut backoff).await?;
                    continue;
                }
            };
            let outcome = async {
                let confirm = channel
                    .basic_publish(
                        exchange,
                        routing_key,
                        BasicPublishOptions::default(),
                        body,
                        properties(headers.clone()),
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
            match outcome {
                Ok(Confirmation::Ack(_)) => return Ok(()),
                Ok(Confirmation::Nack(_)) => {
                    return Err(BusError::NotConfirmed(format!(
                        "broker nacked the message for `{routing_key}`"
                    )))
                }
                Ok(Confirmation::NotRequested) => {
                    // Only possible if the channel lost confirm mode; use a fresh one.
                    tracing::warn!("publishing channel is not in confirm mode; reopening");
                    self.discard_publish_channel(&channel);
                }
                Err(error) => {
                    tracing::warn!(routing_key, %error, "publish not confirmed; retrying");
                    self.discard_publish_channel(&channel);
                    self.kick.notify_one();
                    self.pause(&mut backoff).await?;
                }
            }
        }
    }

    /// Opens a consumer channel with its prefetch, declares the queue and starts consuming.
    async fn open_consumer(&self, spec: &QueueSpec) -> std::result::Result<Active, Failure> {
        let session = self.session().await?;
        let channel = session.connection.create_channel().await?;
        channel
            .basic_qos(spec.prefetch.max(1), BasicQosOptions::default())
            .await?;
        declare_queue(&channel, spec).await?;
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
            generation: session.generation,
            link: self.link.subscribe(),
            channel,
            stream,
        })
    }
}

/// Keeps the connection: publishes it, waits for its loss, reconnects with backoff, and
/// closes it when the bus closes.
async fn supervise(inner: Arc<Inner>, first: Connection) {
    let mut next = Some(first);
    let mut backoff = Backoff::default();
    let mut generation = 0;
    loop {
        let connection = match next.take() {
            Some(connection) => connection,
            None => {
                let attempt = tokio::select! {
                    _ = inner.closed.cancelled() => break,
                    attempt = inner.open_connection() => attempt,
                };
                match attempt {
                    Ok(connection) => {
                        backoff.reset();
                        tracing::info!(name = %inner.name, "reconnected to the broker");
                        connection
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            url = %inner.display_url, %error, ?delay,
                            "cannot connect to the broker; retrying"
                        );
                        tokio::select! {
                            _ = inner.closed.cancelled() => break,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        generation += 1;
        let lost = Arc::new(Notify::new());
        connection.on_error({
            let lost = lost.clone();
            let closed = inner.closed.clone();
            move |error| {
                // Our own close also ends in this callback; that is no loss.
                if closed.is_cancelled() {
                    tracing::debug!(%error, "broker connection ended after close");
                } else {
                    tracing::warn!(%error, "broker connection error");
                }
                lost.notify_one();
            }
        });
        let session = Arc::new(Session {
            generation,
            connection,
        });
        inner.link.send_replace(Link::Up(session.clone()));
        let mut check = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = inner.closed.cancelled() => {
                    shut_down(&inner, &session).await;
                    return;
                }
                _ = lost.notified() => break,
                _ = inner.kick.notified() => {}
                _ = check.tick() => {}
            }
            if !session.connection.status().connected() {
                break;
            }
        }
        tracing::warn!(
            name = %inner.name,
            state = ?session.connection.status().state(),
            "broker connection lost; reconnecting"
        );
        inner.link.send_replace(Link::Down);
        *lock(&inner.publisher) = None;
    }
    inner.link.send_replace(Link::Closed);
}

async fn shut_down(inner: &Inner, session: &Session) {
    inner.link.send_replace(Link::Closed);
    *lock(&inner.publisher) = None;
    if session.connection.status().connected() {
        match tokio::time::timeout(CLOSE_TIMEOUT, session.connection.close(200, "bus closed")).await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "closing the broker connection failed"),
            Err(_) => tracing::debug!("closing the broker connection timed out"),
        }
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, routing_key: &str, body: &[u8]) -> Result<()> {
        self.inner
            .publish_confirmed(EXCHANGE, routing_key, body, None)
            .await
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
            active: Some(active),
            backoff: Backoff::default(),
        }))
    }

    async fn declare(&self, queue: &QueueSpec) -> Result<()> {
        let what = format!("declare `{}`", queue.name);
        self.inner
            .retry(&what, || async {
                let session = self.inner.session().await?;
                let channel = session.connection.create_channel().await?;
                declare_queue(&channel, queue).await?;
                channel.close(200, "declared").await?;
                Ok(())
            })
            .await
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

/// A live consumer: its channel, its delivery stream and the connection it belongs to.
struct Active {
    generation: u64,
    link: watch::Receiver<Link>,
    channel: Channel,
    stream: lapin::Consumer,
}

/// Resolves once the connection `generation` is no longer the current one (lost or
/// replaced), or the bus closed.
async fn superseded(link: &mut watch::Receiver<Link>, generation: u64) {
    loop {
        let still_current = matches!(
            &*link.borrow_and_update(),
            Link::Up(session) if session.generation == generation
        );
        if !still_current || link.changed().await.is_err() {
            return;
        }
    }
}

/// What ended one wait of [`AmqpConsumer::next`] on a live consumer.
// Built once per delivery and matched at once; boxing the delivery would only add an
// allocation on the hot path.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Closed,
    Item(Option<lapin::Result<lapin::message::Delivery>>),
    Superseded,
}

struct AmqpConsumer {
    inner: Arc<Inner>,
    spec: QueueSpec,
    active: Option<Active>,
    backoff: Backoff,
}

impl AmqpConsumer {
    fn wrap(&self, delivery: lapin::message::Delivery, channel: &Channel) -> Delivery {
        let headers = string_headers(&delivery.properties);
        let acker = AmqpAcker {
            inner: self.inner.clone(),
            channel: channel.clone(),
            acker: delivery.acker,
            settled: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        Delivery::new(
            delivery.routing_key.as_str().to_owned(),
            delivery.data,
            delivery.redelivered,
            headers,
            Box::new(acker),
        )
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.inner.closed.is_cancelled() {
                return None;
            }
            let Some(active) = self.active.as_mut() else {
                let attempt = tokio::select! {
                    _ = self.inner.closed.cancelled() => return None,
                    attempt = self.inner.open_consumer(&self.spec) => attempt,
                };
                match attempt {
                    Ok(active) => {
                        tracing::info!(queue = %self.spec.name, "consuming again after a loss");
                        self.backoff.reset();
                        self.active = Some(active);
                    }
                    Err(Failure::Closed) => return None,
                    Err(Failure::Transient(error) | Failure::Permanent(error)) => {
                        tracing::warn!(queue = %self.spec.name, %error, "cannot re-consume; retrying");
                        self.inner.kick.notify_one();
                        if self.inner.pause(&mut self.backoff).await.is_err() {
                            return None;
                        }
                    }
                }
                continue;
            };
            let wake = tokio::select! {
                biased;
                _ = self.inner.closed.cancelled() => Wake::Closed,
                item = active.stream.next() => Wake::Item(item),
                _ = superseded(&mut active.link, active.generation) => Wake::Superseded,
            };
            let delivery = match wake {
                Wake::Closed => return None,
                Wake::Item(item) => item,
                Wake::Superseded => {
                    tracing::info!(queue = %self.spec.name, "connection replaced; re-consuming");
                    self.active = None;
                    continue;
                }
            };
            match delivery {
                Some(Ok(delivery)) => {
                    let channel = active.channel.clone();
                    return Some(self.wrap(delivery, &channel));
                }
                Some(Err(error)) => {
                    tracing::warn!(queue = %self.spec.name, %error, "consumer channel failed");
                    self.inner.kick.notify_one();
                    self.active = None;
                }
                None => {
                    tracing::info!(queue = %self.spec.name, "consumer cancelled by the broker");
                    self.active = None;
                }
            }
        }
    }
}

struct AmqpAcker {
    inner: Arc<Inner>,
    /// Keeps the channel open while the delivery is unsettled, and tells whether it still is.
    channel: Channel,
    acker: lapin::acker::Acker,
    settled: AtomicBool,
    runtime: Option<tokio::runtime::Handle>,
}

impl AmqpAcker {
    /// Claims the delivery for settling; false if it was settled already.
    fn claim(&self) -> bool {
        !self.settled.swap(true, Ordering::SeqCst)
    }

    async fn send<F>(&self, settle: F) -> Result<()>
    where
        F: std::future::Future<Output = lapin::Result<()>>,
    {
        if !self.channel.status().connected() {
            return Err(BusError::Broker(
                "the delivery's channel is closed; the broker redelivers the message".into(),
            ));
        }
        match tokio::time::timeout(SETTLE_TIMEOUT, settle).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(BusError::Broker(error.to_string())),
            Err(_) => Err(BusError::Broker(format!(
                "settling the delivery took longer than {SETTLE_TIMEOUT:?}"
            ))),
        }
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<()> {
        if !self.claim() {
            return Ok(());
        }
        self.send(self.acker.ack(BasicAckOptions::default())).await
    }

    async fn requeue(&self) -> Result<()> {
        if !self.claim() {
            return Ok(());
        }
        self.send(self.acker.nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        }))
        .await
    }

    async fn dead_letter(&self, routing_key: &str, body: &[u8], reason: &str) -> Result<()> {
        if !self.claim() {
            return Ok(());
        }
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(DEAD_REASON_HEADER),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            ShortString::from(DEAD_ROUTING_KEY_HEADER),
            AMQPValue::LongString(LongString::from(routing_key)),
        );
        // The default exchange routes by queue name, so the dead-letter queue needs no
        // binding on `stargazer` (where it would also catch live traffic).
        self.inner
            .publish_confirmed("", DEAD_LETTER_QUEUE, body, Some(headers))
            .await?;
        self.send(self.acker.ack(BasicAckOptions::default())).await
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if !self.claim() || !self.channel.status().connected() {
            return;
        }
        // Dropped unsettled: hand it back now rather than when the channel closes, so
        // another consumer (or this one) gets it again.
        let Some(runtime) = self.runtime.as_ref() else {
            return;
        };
        let acker = self.acker.clone();
        let channel = self.channel.clone();
        runtime.spawn(async move {
            let nack = acker.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            });
            match tokio::time::timeout(SETTLE_TIMEOUT, nack).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "requeue of a dropped delivery failed"),
                Err(_) => tracing::debug!("requeue of a dropped delivery timed out"),
            }
            drop(channel);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_only_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact("not a url"), "not a url");
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
