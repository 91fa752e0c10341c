//! The loop every middleware runs (docs/ARCHITECTURE.md §4): consume the durable shared queue
//! `stargazer.middleware.<tag>` bound to `#.<tag>`, decode each [`Event`], hand it to the
//! [`Middleware`], then settle the delivery according to the [`Outcome`]:
//!
//! | outcome | what the runtime does |
//! |---|---|
//! | [`Outcome::Forward`] | pops the tag, republishes (confirmed) with the rest of the key, then acks |
//! | [`Outcome::Hold`] | acks: the middleware persisted the event and publishes it later itself |
//! | [`Outcome::Drop`] | logs the reason, counts it, acks |
//! | [`Outcome::Retry`] | waits `retry_delay`, then requeues (a backend is down, try again); the `delivery_attempts`-th attempt is dead-lettered instead |
//! | [`Outcome::Reject`] | dead-letters (rejects without requeue: the broker moves it to `stargazer.dead`), logging the reason |
//!
//! A handler that panics is caught and counted like a [`Outcome::Retry`] (metric outcome
//! `panicked`). A body that is not an event, or a routing key whose next tag is not this
//! middleware's, is dead-lettered without reaching the middleware. A forward the broker
//! could not route was dead-lettered by the bus ([`BusError::Unroutable`]) and is acked.
//! Any number of instances may consume the same queue; each delivery reaches one of them.
//!
//! On a quorum queue (`amqp_queue_type = "quorum"`) the broker counts: a delivery carries
//! how many times the message went back to the queue before ([`Delivery::delivery_count`],
//! `x-delivery-count`), so the attempt is that count + 1, exact across instances and
//! restarts (a delivery left unacked by a crashed consumer counts as an attempt too).
//! Otherwise attempts are counted per instance, in memory, by event id and routing key
//! (RabbitMQ's `redelivered` flag only says "at least once before", and classic queues
//! keep no delivery count). A delivery flagged `redelivered` that this instance has not
//! seen starts at one earlier attempt. So with N instances a message is tried at most
//! about N × `delivery_attempts` times, and a restart starts counting afresh; the table is
//! bounded ([`TRACKED_ATTEMPTS`]) and an entry is forgotten once its message is settled
//! for good.
//!
//! Events are handled concurrently, except that events with the same
//! [`Middleware::order_key`] are handled one after the other in queue order (a chain per
//! key stripe), so e.g. a replacement never overtakes the message it replaces.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::bus::{Bus, BusError, Consumer, Delivery, QueueSpec};
use crate::model::Event;
use crate::routing;
use crate::sync::lock;
use crate::wait::sleep_unless_cancelled;

/// What a middleware decided about one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Pass the (possibly changed) event on with the middleware's tag popped.
    Forward(Event),
    /// The middleware persisted the event (or consumed a control message) and will publish
    /// whatever is due itself; the delivery is acknowledged.
    Hold,
    /// Deliberately not passed on; the reason is logged and counted.
    Drop(String),
    /// Could not be processed now (a backend failed); requeued after a pause.
    Retry(String),
    /// Can never be processed (bad control values); dead-lettered with the reason.
    Reject(String),
}

/// One decoded message handed to a middleware.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The event, control fields included.
    pub event: Event,
    /// The routing key with this middleware's tag already popped: what to publish with.
    pub rest_key: String,
    /// Whether the broker delivered this message before.
    pub redelivered: bool,
}

/// The work of one middleware; the runtime does the queue handling around it.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Decides what happens to one event. Called concurrently up to
    /// [`RuntimeOptions::concurrency`] times.
    async fn handle(&self, message: Incoming) -> Outcome;

    /// Events with equal keys are handled in queue order, never at the same time; `None`
    /// (the default) means no ordering constraint.
    fn order_key(&self, _message: &Incoming) -> Option<String> {
        None
    }
}

/// Default of [`RuntimeOptions::delivery_attempts`].
pub const DEFAULT_DELIVERY_ATTEMPTS: u32 = 5;

/// Most messages whose attempts one runtime remembers at once.
pub const TRACKED_ATTEMPTS: usize = 100_000;

/// The reason class (metric label) of messages dead-lettered after too many attempts.
pub const ATTEMPTS_EXHAUSTED: &str = "attempts_exhausted";

/// Attempts per message not yet settled for good. A std mutex: a map operation per
/// message, never held across `.await`.
#[derive(Default)]
struct Attempts {
    counts: Mutex<HashMap<String, u32>>,
}

impl Attempts {
    /// Counts one more attempt of `key` and returns the total.
    fn bump(&self, key: &str, redelivered: bool) -> u32 {
        let mut counts = lock(&self.counts);
        if !counts.contains_key(key) && counts.len() >= TRACKED_ATTEMPTS {
            // Full: forget any one entry; that message merely gets its attempts again.
            if let Some(victim) = counts.keys().next().cloned() {
                counts.remove(&victim);
            }
        }
        let count = counts
            .entry(key.to_owned())
            .or_insert(u32::from(redelivered));
        *count += 1;
        *count
    }

    /// Forgets `key`: its message was settled for good.
    fn forget(&self, key: &str) {
        lock(&self.counts).remove(key);
    }
}

/// Number of ordering chains; keys hash onto them, so unrelated keys rarely wait on each
/// other.
const ORDER_STRIPES: usize = 1024;

/// How the runtime consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The middleware's tag (`delay`, `translate`, `live_check`); the queue is bound to
    /// `#.<tag>`.
    pub tag: String,
    /// The durable queue to consume; normally `stargazer.middleware.<tag>`.
    pub queue: String,
    /// Unacknowledged deliveries held at once.
    pub prefetch: u16,
    /// Events handled at once (1 keeps arrival order).
    pub concurrency: usize,
    /// Pause before requeueing after [`Outcome::Retry`], so a failing backend is not
    /// hammered by the same message.
    pub retry_delay: Duration,
    /// Attempts (a [`Outcome::Retry`] or a panic each) after which a message is
    /// dead-lettered instead of requeued; at least 1.
    pub delivery_attempts: u32,
}

impl RuntimeOptions {
    /// The contract defaults for `tag`: queue `stargazer.middleware.<tag>`, prefetch 32,
    /// concurrency 16, retry delay 1 s, 5 delivery attempts.
    pub fn new(tag: impl Into<String>) -> Self {
        let tag = tag.into();
        Self {
            queue: routing::middleware_queue(&tag),
            tag,
            prefetch: 32,
            concurrency: 16,
            retry_delay: Duration::from_secs(1),
            delivery_attempts: DEFAULT_DELIVERY_ATTEMPTS,
        }
    }

    /// The queue declaration these options describe.
    pub fn queue_spec(&self) -> QueueSpec {
        QueueSpec::new(
            self.queue.clone(),
            routing::middleware_pattern(&self.tag),
            self.prefetch.max(1),
        )
    }
}

/// Errors that stop the runtime.
#[derive(Debug, thiserror::Error)]
pub enum MiddlewareError {
    /// The bus failed in a way retrying cannot fix.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// Counters of the runtime, labelled by outcome.
#[derive(Clone)]
pub struct RuntimeMetrics {
    messages: IntCounterVec,
}

impl RuntimeMetrics {
    /// Creates `stargazer_middleware_messages_total{middleware="<tag>", outcome}` and
    /// registers it in `registry`. Registering the same middleware twice in one registry
    /// keeps the first registration and counts the second privately.
    pub fn register(tag: &str, registry: &Registry) -> Self {
        let opts = Opts::new(
            "stargazer_middleware_messages_total",
            "Messages handled by a middleware, by outcome.",
        )
        .const_label("middleware", tag);
        // Name, help and label names are fixed valid literals; label values are never
        // validated, so construction cannot fail.
        let messages =
            IntCounterVec::new(opts, &["outcome"]).expect("fixed metric options are valid");
        if let Err(err) = registry.register(Box::new(messages.clone())) {
            tracing::warn!(middleware = tag, cause = %err, "middleware metrics not registered");
        }
        Self { messages }
    }

    /// How many messages ended with `outcome` (`forwarded`, `held`, `dropped`, `retried`,
    /// `panicked`, `dead_lettered`); a panic that exhausted the attempts counts as both
    /// `panicked` and `dead_lettered`.
    pub fn count(&self, outcome: &str) -> u64 {
        self.messages.with_label_values(&[outcome]).get()
    }

    fn inc(&self, outcome: &str) {
        self.messages.with_label_values(&[outcome]).inc();
    }
}

/// Consumes until `shutdown` is cancelled or the bus closes, then waits for the events in
/// flight to be settled before returning.
pub async fn run(
    middleware: Arc<dyn Middleware>,
    bus: Arc<dyn Bus>,
    options: RuntimeOptions,
    metrics: RuntimeMetrics,
    shutdown: CancellationToken,
) -> Result<(), MiddlewareError> {
    let Some(mut consumer) = open_consumer(bus.as_ref(), &options, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(middleware = %options.tag, queue = %options.queue, "middleware consuming");
    let options = Arc::new(options);
    let attempts = Arc::new(Attempts::default());
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    // The tail of each ordering chain: the next event on that stripe waits for it.
    let mut chains: Vec<Option<oneshot::Receiver<()>>> = (0..ORDER_STRIPES).map(|_| None).collect();
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let delivery = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            delivery = consumer.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let decoded = decode(&options.tag, &delivery);
        let (after, done) = match decoded.as_ref().ok().and_then(|m| middleware.order_key(m)) {
            Some(key) => {
                let (done, tail) = oneshot::channel::<()>();
                let stripe = stripe_of(&key);
                (chains[stripe].replace(tail), Some(done))
            }
            None => (None, None),
        };
        let ctx = Settle {
            middleware: middleware.clone(),
            bus: bus.clone(),
            options: options.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            attempts: attempts.clone(),
        };
        in_flight.spawn(async move {
            if let Some(previous) = after {
                // Err only means the previous one finished without signalling (its task
                // ended); either way it is done.
                let _ = previous.await;
            }
            ctx.process(delivery, decoded).await;
            drop(done);
            drop(permit);
        });
        while let Some(done) = in_flight.try_join_next() {
            log_task_end(done);
        }
    }
    // The consumer stays open until every in-flight delivery is settled: closing it first
    // could make their acks fail and the messages come back.
    while let Some(done) = in_flight.join_next().await {
        log_task_end(done);
    }
    drop(consumer);
    tracing::info!(middleware = %options.tag, "middleware stopped");
    Ok(())
}

/// Declares the queue and starts consuming, retrying with backoff while the broker is
/// unreachable; `None` when shut down first.
async fn open_consumer(
    bus: &dyn Bus,
    options: &RuntimeOptions,
    shutdown: &CancellationToken,
) -> Result<Option<Box<dyn Consumer>>, MiddlewareError> {
    let spec = options.queue_spec();
    let mut backoff = Backoff::default();
    loop {
        match bus.consume(&spec).await {
            Ok(consumer) => return Ok(Some(consumer)),
            Err(BusError::Closed) => return Ok(None),
            Err(err @ BusError::InvalidUrl(_)) => return Err(err.into()),
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(queue = %spec.name, cause = %err, ?delay, "cannot consume yet");
                if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                    return Ok(None);
                }
            }
        }
    }
}

fn log_task_end(result: Result<(), tokio::task::JoinError>) {
    if let Err(err) = result {
        if err.is_panic() {
            tracing::error!(cause = %err, "middleware task panicked; its delivery will be redelivered");
        }
    }
}

/// Everything one in-flight delivery needs.
struct Settle {
    middleware: Arc<dyn Middleware>,
    bus: Arc<dyn Bus>,
    options: Arc<RuntimeOptions>,
    metrics: RuntimeMetrics,
    shutdown: CancellationToken,
    attempts: Arc<Attempts>,
}

impl Settle {
    async fn process(self, delivery: Delivery, decoded: Result<Incoming, String>) {
        let incoming = match decoded {
            Ok(incoming) => incoming,
            Err(reason) => {
                tracing::error!(middleware = %self.options.tag, routing_key = %delivery.routing_key, %reason, "dead-lettering message");
                self.metrics.inc("dead_lettered");
                if let Err(err) = delivery.dead_letter(&reason).await {
                    tracing::error!(cause = %err, "dead-lettering failed; the message will come back");
                }
                return;
            }
        };
        let span = tracing::info_span!(
            "middleware",
            middleware = %self.options.tag,
            event_id = %incoming.event.id,
            entity_id = %incoming.event.entity,
        );
        self.settle(delivery, incoming).instrument(span).await;
    }

    async fn settle(&self, delivery: Delivery, incoming: Incoming) {
        let rest_key = incoming.rest_key.clone();
        let attempt_key = format!("{}:{}", incoming.event.id, delivery.routing_key);
        let handled = AssertUnwindSafe(self.middleware.handle(incoming))
            .catch_unwind()
            .await;
        let outcome = match handled {
            Ok(outcome) => outcome,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                tracing::error!(panic = %what, "middleware handler panicked");
                self.metrics.inc("panicked");
                Outcome::Retry(format!("handler panicked: {what}"))
            }
        };
        let settled = match outcome {
            Outcome::Forward(event) => match self.bus.publish(&rest_key, &event.to_bytes()).await {
                Ok(()) => {
                    tracing::debug!(routing_key = %rest_key, "forwarded");
                    self.metrics.inc("forwarded");
                    self.attempts.forget(&attempt_key);
                    delivery.ack().await
                }
                Err(err @ BusError::Unroutable { .. }) => {
                    // The bus put the forwarded event in `stargazer.dead`; requeueing
                    // would only add copies there.
                    tracing::error!(routing_key = %rest_key, cause = %err, "forward unroutable; dead-lettered by the bus");
                    self.metrics.inc("dead_lettered");
                    self.attempts.forget(&attempt_key);
                    delivery.ack().await
                }
                Err(err) => {
                    let reason = format!("republish failed: {err}");
                    self.retry_or_dead(delivery, &attempt_key, reason).await
                }
            },
            Outcome::Hold => {
                self.metrics.inc("held");
                self.attempts.forget(&attempt_key);
                delivery.ack().await
            }
            Outcome::Drop(reason) => {
                tracing::info!(%reason, "event dropped");
                self.metrics.inc("dropped");
                self.attempts.forget(&attempt_key);
                delivery.ack().await
            }
            Outcome::Retry(reason) => self.retry_or_dead(delivery, &attempt_key, reason).await,
            Outcome::Reject(reason) => {
                tracing::error!(%reason, "dead-lettering event");
                self.metrics.inc("dead_lettered");
                self.attempts.forget(&attempt_key);
                delivery.dead_letter(&reason).await
            }
        };
        if let Err(err) = settled {
            tracing::error!(cause = %err, "settling the delivery failed; it will be redelivered");
        }
    }

    /// Counts an attempt that failed for `reason`: requeues after the pause, or
    /// dead-letters once the attempts are used up.
    async fn retry_or_dead(
        &self,
        delivery: Delivery,
        attempt_key: &str,
        reason: String,
    ) -> crate::bus::Result<()> {
        let attempt = match delivery.delivery_count {
            // The broker's count holds across instances and restarts.
            Some(returned_before) => returned_before.saturating_add(1),
            None => self.attempts.bump(attempt_key, delivery.redelivered),
        };
        let cap = self.options.delivery_attempts.max(1);
        if attempt >= cap {
            tracing::error!(attempt, %reason, "attempts used up; dead-lettering event");
            self.metrics.inc("dead_lettered");
            self.attempts.forget(attempt_key);
            let reason = format!("{reason} (attempt {attempt} of {cap})");
            return delivery.dead_letter_as(ATTEMPTS_EXHAUSTED, &reason).await;
        }
        tracing::warn!(attempt, %reason, "event requeued for another attempt");
        self.metrics.inc("retried");
        self.requeue_later(delivery).await
    }

    async fn requeue_later(&self, delivery: Delivery) -> crate::bus::Result<()> {
        // Requeued either way: a shutdown only cuts the wait short, so the event is
        // back on the queue for the next instance instead of held by this one.
        let _ = sleep_unless_cancelled(self.options.retry_delay, &self.shutdown).await;
        delivery.requeue().await
    }
}

/// The text a panic was raised with, when it is a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn stripe_of(key: &str) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(key, &mut hasher);
    // The modulo keeps the value below ORDER_STRIPES, which fits in usize.
    (std::hash::Hasher::finish(&hasher) % ORDER_STRIPES as u64) as usize
}

/// Checks the key carries this middleware's tag on top and the body is an event of the
/// key's source.
fn decode(tag: &str, delivery: &Delivery) -> Result<Incoming, String> {
    let (rest, top) = routing::pop_tag(&delivery.routing_key);
    if top != Some(tag) {
        return Err(format!(
            "routing key `{}` does not have `{tag}` as its next tag",
            delivery.routing_key
        ));
    }
    let event =
        Event::from_bytes(&delivery.body).map_err(|err| format!("undecodable event: {err}"))?;
    let source = routing::source(rest);
    if event.source() != source {
        return Err(format!(
            "event kind `{}` does not belong to routing key source `{source}`",
            event.kind
        ));
    }
    Ok(Incoming {
        event,
        rest_key: rest.to_owned(),
        redelivered: delivery.redelivered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use crate::model::Event;
    use chrono::Utc;
    use uuid::Uuid;

    struct Echo;

    #[async_trait]
    impl Middleware for Echo {
        async fn handle(&self, message: Incoming) -> Outcome {
            let mut event = message.event;
            match event
                .take_control("x-echo")
                .and_then(|v| v.as_str().map(str::to_owned))
            {
                Some(ref what) if what == "hold" => Outcome::Hold,
                Some(ref what) if what == "drop" => Outcome::Drop("asked to".into()),
                Some(ref what) if what == "reject" => Outcome::Reject("asked to".into()),
                _ => Outcome::Forward(event),
            }
        }
    }

    fn event(echo: Option<&str>) -> Event {
        let mut control = serde_json::Map::new();
        if let Some(echo) = echo {
            control.insert("x-echo".into(), echo.into());
        }
        Event {
            id: Uuid::new_v4(),
            kind: "youtube.video".into(),
            entity: Uuid::new_v4(),
            time: Utc::now(),
            fields: Default::default(),
            control,
        }
    }

    async fn next_body(consumer: &mut Box<dyn Consumer>) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("a message within 5 s")
            .expect("bus open")
    }

    #[tokio::test]
    async fn forwards_pops_the_tag_and_settles_every_outcome() {
        let bus = MemoryBus::new();
        let ready_spec = QueueSpec::new("test.ready", "*", 10);
        let mut ready = bus.consume(&ready_spec).await.unwrap();
        let mut dead = bus
            .consume(&crate::topology::dead_letter_queue(10))
            .await
            .unwrap();
        let options = RuntimeOptions::new("echo");
        bus.declare(&options.queue_spec()).await.unwrap();
        let metrics = RuntimeMetrics::register("echo", &Registry::new());
        let shutdown = CancellationToken::new();
        let bus: Arc<dyn Bus> = Arc::new(bus);
        let task = tokio::spawn(run(
            Arc::new(Echo),
            bus.clone(),
            options,
            metrics.clone(),
            shutdown.clone(),
        ));

        let plain = event(None);
        bus.publish("youtube.echo", &plain.to_bytes())
            .await
            .unwrap();
        let got = next_body(&mut ready).await;
        assert_eq!(got.routing_key, "youtube");
        assert_eq!(Event::from_bytes(&got.body).unwrap(), plain);
        got.ack().await.unwrap();

        bus.publish("youtube.echo", b"{not json").await.unwrap();
        let got = next_body(&mut dead).await;
        assert_eq!(got.body, b"{not json");
        assert_eq!(
            got.header(crate::topology::FIRST_DEATH_QUEUE_HEADER),
            Some("stargazer.middleware.echo")
        );
        got.ack().await.unwrap();

        bus.publish("twitter.echo", &plain.to_bytes())
            .await
            .unwrap();
        let got = next_body(&mut dead).await;
        assert_eq!(
            got.routing_key, "twitter.echo",
            "dead letters keep their key"
        );
        got.ack().await.unwrap();

        let rejected = event(Some("reject"));
        bus.publish("youtube.echo", &rejected.to_bytes())
            .await
            .unwrap();
        let got = next_body(&mut dead).await;
        assert_eq!(Event::from_bytes(&got.body).unwrap().id, rejected.id);
        assert_eq!(
            got.header(crate::topology::FIRST_DEATH_REASON_HEADER),
            Some("rejected")
        );
        got.ack().await.unwrap();

        bus.publish("youtube.echo", &event(Some("hold")).to_bytes())
            .await
            .unwrap();
        bus.publish("youtube.echo", &event(Some("drop")).to_bytes())
            .await
            .unwrap();
        let last = event(None);
        bus.publish("youtube.echo", &last.to_bytes()).await.unwrap();
        let got = next_body(&mut ready).await;
        assert_eq!(Event::from_bytes(&got.body).unwrap().id, last.id);
        got.ack().await.unwrap();

        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(metrics.count("forwarded"), 2);
        assert_eq!(metrics.count("held"), 1);
        assert_eq!(metrics.count("dropped"), 1);
        assert_eq!(metrics.count("dead_lettered"), 3);
        assert_eq!(
            bus.metrics()
                .dead_lettered("stargazer.middleware.echo", crate::bus::REJECTED_REASON),
            3
        );
    }

    /// Retries `x-echo: retry` forever, panics on `x-echo: panic`, counting each call.
    struct Failing {
        calls: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl Middleware for Failing {
        async fn handle(&self, message: Incoming) -> Outcome {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match message.event.control.get("x-echo").and_then(|v| v.as_str()) {
                Some("panic") => panic!("handler blew up"),
                _ => Outcome::Retry("backend down".into()),
            }
        }
    }

    async fn dead_after_attempts(echo: &str) {
        let bus = MemoryBus::new();
        let mut dead = bus
            .consume(&crate::topology::dead_letter_queue(10))
            .await
            .unwrap();
        let options = RuntimeOptions {
            retry_delay: Duration::from_millis(1),
            delivery_attempts: 3,
            ..RuntimeOptions::new("echo")
        };
        bus.declare(&options.queue_spec()).await.unwrap();
        let metrics = RuntimeMetrics::register("echo", &Registry::new());
        let shutdown = CancellationToken::new();
        let failing = Arc::new(Failing {
            calls: Default::default(),
        });
        let shared: Arc<dyn Bus> = Arc::new(bus.clone());
        let task = tokio::spawn(run(
            failing.clone(),
            shared.clone(),
            options,
            metrics.clone(),
            shutdown.clone(),
        ));
        let doomed = event(Some(echo));
        shared
            .publish("youtube.echo", &doomed.to_bytes())
            .await
            .unwrap();
        let got = next_body(&mut dead).await;
        assert_eq!(Event::from_bytes(&got.body).unwrap().id, doomed.id);
        got.ack().await.unwrap();
        assert_eq!(
            failing.calls.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "dead after exactly 3 attempts"
        );
        assert_eq!(bus.queue_len("stargazer.middleware.echo"), 0);
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(metrics.count("retried"), 2);
        assert_eq!(metrics.count("dead_lettered"), 1);
        assert_eq!(
            shared
                .metrics()
                .dead_lettered("stargazer.middleware.echo", ATTEMPTS_EXHAUSTED),
            1
        );
        if echo == "panic" {
            assert_eq!(metrics.count("panicked"), 3);
        }
    }

    #[tokio::test]
    async fn retries_are_capped_then_dead_lettered() {
        dead_after_attempts("retry").await;
    }

    #[tokio::test]
    async fn a_panicking_handler_counts_as_an_attempt() {
        dead_after_attempts("panic").await;
    }

    #[test]
    fn attempts_start_after_an_unseen_redelivery_and_stay_bounded() {
        let attempts = Attempts::default();
        assert_eq!(attempts.bump("a", false), 1);
        assert_eq!(attempts.bump("a", true), 2);
        assert_eq!(attempts.bump("b", true), 2, "redelivered: tried before");
        attempts.forget("a");
        assert_eq!(attempts.bump("a", false), 1);
        for i in 0..TRACKED_ATTEMPTS + 10 {
            attempts.bump(&i.to_string(), false);
        }
        assert!(attempts.counts.lock().unwrap().len() <= TRACKED_ATTEMPTS);
    }

    #[test]
    fn decode_rejects_a_foreign_tag() {
        struct Nop;
        #[async_trait]
        impl crate::bus::Acker for Nop {
            async fn ack(&self) -> crate::bus::Result<()> {
                Ok(())
            }
            async fn requeue(&self) -> crate::bus::Result<()> {
                Ok(())
            }
            async fn reject(&self, _: &str, _: &'static str, _: &str) -> crate::bus::Result<()> {
                Ok(())
            }
        }
        let delivery = Delivery::new(
            "youtube.delay".into(),
            event(None).to_bytes(),
            false,
            vec![],
            Box::new(Nop),
        );
        let err = decode("translate", &delivery).unwrap_err();
        assert!(err.contains("`translate`"), "{err}");
        let ok = decode("delay", &delivery).unwrap();
        assert_eq!(ok.rest_key, "youtube");
    }
}
