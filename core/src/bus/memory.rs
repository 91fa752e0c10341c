//! In-process implementation of [`Bus`](super::Bus) for `standalone` and tests.
//!
//! It mirrors the RabbitMQ semantics the services rely on: named queues with topic
//! bindings (the same matcher as AMQP, [`crate::routing::topic_matches`]), messages that
//! wait in a declared queue until consumed, competing consumers on one queue, a prefetch
//! window per consumer, explicit ack/requeue, redelivery of deliveries dropped unsettled,
//! and the dead-letter topology (docs/ARCHITECTURE.md §4): `stargazer.dead` bound to
//! `stargazer.dlx` with `#` exists from creation on, together with the consumer queues of
//! [`BusOptions::topology`]; a rejected delivery moves there with the broker's
//! `x-first-death-*` headers, and a publish no queue takes is retried with backoff and
//! then dead-lettered with its reason, as the RabbitMQ bus does. Messages live in memory
//! only: a process exit loses them, which is why production uses RabbitMQ.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    Acker, Bus, BusError, BusMetrics, BusOptions, Consumer, Delivery, QueueKind, QueueSpec, Result,
    UNROUTABLE_REASON, UNROUTED_QUEUE_LABEL,
};
use crate::routing::topic_matches;
use crate::sync::lock;
use crate::topology::{
    self, DEAD_REASON_HEADER, DEAD_ROUTING_KEY_HEADER, FIRST_DEATH_QUEUE_HEADER,
    FIRST_DEATH_REASON_HEADER,
};
use crate::wait::sleep_unless_cancelled;

#[derive(Clone)]
struct Message {
    routing_key: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    redelivered: bool,
}

struct Queue {
    kind: QueueKind,
    bindings: Vec<String>,
    ready: VecDeque<Message>,
    notify: Arc<Notify>,
}

impl Queue {
    fn new(kind: QueueKind) -> Self {
        Self {
            kind,
            bindings: Vec::new(),
            ready: VecDeque::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    fn push_back(&mut self, message: Message) {
        self.ready.push_back(message);
        self.notify.notify_one();
    }
}

struct Inner {
    // A std Mutex: every critical section is a few VecDeque operations with no `.await`.
    queues: Mutex<HashMap<String, Queue>>,
    closed: CancellationToken,
    options: BusOptions,
    metrics: BusMetrics,
}

impl Inner {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        // A poisoned lock only means another thread panicked mid-push; the map is still
        // structurally valid, so keep serving.
        lock(&self.queues)
    }

    fn declare(&self, spec: &QueueSpec) -> Arc<Notify> {
        let mut queues = self.queues();
        let queue = queues
            .entry(spec.name.clone())
            .or_insert_with(|| Queue::new(spec.kind));
        for binding in &spec.bindings {
            if !queue.bindings.contains(binding) {
                queue.bindings.push(binding.clone());
            }
        }
        queue.notify.clone()
    }

    fn requeue(&self, queue: &str, mut message: Message) {
        message.redelivered = true;
        let mut queues = self.queues();
        let queue = queues
            .entry(queue.to_owned())
            .or_insert_with(|| Queue::new(QueueKind::Work));
        queue.ready.push_front(message);
        queue.notify.notify_one();
    }

    /// Puts `message` in every queue bound on `exchange` with a matching pattern; whether
    /// any took it.
    fn route(&self, exchange: &str, message: &Message) -> bool {
        let mut queues = self.queues();
        let mut routed = false;
        for queue in queues.values_mut() {
            if queue.kind.exchange() == exchange
                && queue
                    .bindings
                    .iter()
                    .any(|pattern| topic_matches(pattern, &message.routing_key))
            {
                queue.push_back(message.clone());
                routed = true;
            }
        }
        routed
    }
}

/// The in-process topic router. Clones share the same queues.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A new bus with default options: only the dead-letter queue exists.
    pub fn new() -> Self {
        Self::with_options(BusOptions::default())
    }

    /// A new bus with the dead-letter queue and every queue of `options.topology`
    /// declared.
    pub fn with_options(options: BusOptions) -> Self {
        let inner = Arc::new(Inner {
            queues: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
            options,
            metrics: BusMetrics::new(),
        });
        for queue in inner.options.topology.all_queues() {
            inner.declare(&queue);
        }
        Self { inner }
    }

    /// How many messages wait (not yet delivered) in `queue`.
    pub fn queue_len(&self, queue: &str) -> usize {
        self.inner.queues().get(queue).map_or(0, |q| q.ready.len())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, routing_key: &str, body: &[u8]) -> Result<()> {
        let message = Message {
            routing_key: routing_key.to_owned(),
            body: body.to_vec(),
            headers: Vec::new(),
            redelivered: false,
        };
        let options = &self.inner.options;
        let mut delay = options.unroutable_delay;
        for retry in 0..=options.unroutable_retries {
            if self.inner.closed.is_cancelled() {
                return Err(BusError::Closed);
            }
            if self.inner.route(topology::EXCHANGE, &message) {
                return Ok(());
            }
            if retry == options.unroutable_retries {
                break;
            }
            tracing::warn!(
                routing_key,
                retry = retry + 1,
                ?delay,
                "no queue took the message; retrying"
            );
            if sleep_unless_cancelled(delay, &self.inner.closed)
                .await
                .is_cancelled()
            {
                return Err(BusError::Closed);
            }
            delay = delay.saturating_mul(2);
        }
        let attempts = options.unroutable_retries + 1;
        let reason =
            format!("unroutable: no queue bound for `{routing_key}` after {attempts} attempts");
        let dead = Message {
            headers: vec![
                (DEAD_REASON_HEADER.to_owned(), reason.clone()),
                (DEAD_ROUTING_KEY_HEADER.to_owned(), routing_key.to_owned()),
            ],
            ..message
        };
        let kept = self.inner.route(topology::DEAD_LETTER_EXCHANGE, &dead);
        self.inner
            .metrics
            .count_dead_letter(UNROUTED_QUEUE_LABEL, UNROUTABLE_REASON);
        tracing::error!(routing_key, attempts, kept, %reason, "message dead-lettered");
        Err(BusError::Unroutable {
            routing_key: routing_key.to_owned(),
            attempts,
        })
    }

    async fn consume(&self, queue: &QueueSpec) -> Result<Box<dyn Consumer>> {
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        let notify = self.inner.declare(queue);
        Ok(Box::new(MemoryConsumer {
            inner: self.inner.clone(),
            queue: queue.name.clone(),
            notify,
            window: Arc::new(Semaphore::new(usize::from(queue.prefetch.max(1)))),
        }))
    }

    async fn declare(&self, queue: &QueueSpec) -> Result<()> {
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        self.inner.declare(queue);
        Ok(())
    }

    fn metrics(&self) -> &BusMetrics {
        &self.inner.metrics
    }

    async fn close(&self) {
        self.inner.closed.cancel();
    }
}

struct MemoryConsumer {
    inner: Arc<Inner>,
    queue: String,
    notify: Arc<Notify>,
    window: Arc<Semaphore>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let permit = tokio::select! {
            permit = self.window.clone().acquire_owned() => permit.ok()?,
            _ = self.inner.closed.cancelled() => return None,
        };
        loop {
            let popped = self
                .inner
                .queues()
                .get_mut(&self.queue)
                .and_then(|q| q.ready.pop_front());
            if let Some(message) = popped {
                let acker = MemoryAcker {
                    inner: self.inner.clone(),
                    queue: self.queue.clone(),
                    message: Mutex::new(Some(message.clone())),
                    settled: AtomicBool::new(false),
                    _permit: permit,
                };
                return Some(Delivery::new(
                    message.routing_key,
                    message.body,
                    message.redelivered,
                    message.headers,
                    Box::new(acker),
                ));
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = self.inner.closed.cancelled() => return None,
            }
        }
    }
}

struct MemoryAcker {
    inner: Arc<Inner>,
    queue: String,
    message: Mutex<Option<Message>>,
    settled: AtomicBool,
    _permit: OwnedSemaphorePermit,
}

impl MemoryAcker {
    fn settle(&self) -> Option<Message> {
        if self.settled.swap(true, Ordering::SeqCst) {
            return None;
        }
        lock(&self.message).take()
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        self.settle();
        Ok(())
    }

    async fn requeue(&self) -> Result<()> {
        if let Some(message) = self.settle() {
            self.inner.requeue(&self.queue, message);
        }
        Ok(())
    }

    async fn reject(&self, routing_key: &str, class: &'static str, reason: &str) -> Result<()> {
        if let Some(mut message) = self.settle() {
            let kind = self.inner.queues().get(&self.queue).map(|q| q.kind);
            if kind == Some(QueueKind::DeadLetter) {
                // Like a queue without a dead-letter exchange: the broker drops it.
                tracing::warn!(queue = %self.queue, routing_key, %reason, "dead letter rejected and dropped");
                return Ok(());
            }
            // As RabbitMQ does through the queue's dead-letter exchange: the original key
            // routes it, the broker's headers say where it came from and why.
            message
                .headers
                .retain(|(k, _)| !k.starts_with("x-first-death-"));
            message
                .headers
                .push((FIRST_DEATH_REASON_HEADER.to_owned(), "rejected".to_owned()));
            message
                .headers
                .push((FIRST_DEATH_QUEUE_HEADER.to_owned(), self.queue.clone()));
            message.redelivered = false;
            self.inner.route(topology::DEAD_LETTER_EXCHANGE, &message);
            self.inner.metrics.count_dead_letter(&self.queue, class);
            tracing::warn!(queue = %self.queue, routing_key, reason_class = class, %reason, "message dead-lettered");
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Unsettled when dropped: the consumer went away, so the broker would redeliver.
        if let Some(message) = self.settle() {
            self.inner.requeue(&self.queue, message);
        }
    }
}
