//! In-process implementation of [`Bus`](super::Bus) for `standalone` and tests.
//!
//! It mirrors the RabbitMQ semantics the services rely on: named queues with topic
//! bindings (the same matcher as AMQP, [`crate::routing::topic_matches`]), messages that
//! wait in a declared queue until consumed, competing consumers on one queue, a prefetch
//! window per consumer, explicit ack/requeue, redelivery of deliveries dropped unsettled,
//! and the dead-letter queue. Messages live in memory only: a process exit loses them,
//! which is why production uses RabbitMQ.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Acker, Bus, BusError, Consumer, Delivery, QueueSpec, Result};
use crate::routing::{
    topic_matches, DEAD_LETTER_QUEUE, DEAD_REASON_HEADER, DEAD_ROUTING_KEY_HEADER,
};

#[derive(Clone)]
struct Message {
    routing_key: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    redelivered: bool,
}

struct Queue {
    bindings: Vec<String>,
    ready: VecDeque<Message>,
    notify: Arc<Notify>,
}

impl Queue {
    fn new() -> Self {
        Self {
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
}

impl Inner {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        // A poisoned lock only means another thread panicked mid-push; the map is still
        // structurally valid, so keep serving.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn declare(&self, spec: &QueueSpec) -> Arc<Notify> {
        let mut queues = self.queues();
        let queue = queues.entry(spec.name.clone()).or_insert_with(Queue::new);
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
        let queue = queues.entry(queue.to_owned()).or_insert_with(Queue::new);
        queue.ready.push_front(message);
        queue.notify.notify_one();
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
    /// A new bus with no queues (besides the dead-letter queue).
    pub fn new() -> Self {
        let inner = Arc::new(Inner {
            queues: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
        });
        inner.declare(&QueueSpec {
            name: DEAD_LETTER_QUEUE.to_owned(),
            bindings: Vec::new(),
            prefetch: 1,
        });
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
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        let mut queues = self.inner.queues();
        let mut routed = false;
        for queue in queues.values_mut() {
            if queue
                .bindings
                .iter()
                .any(|pattern| topic_matches(pattern, routing_key))
            {
                queue.push_back(Message {
                    routing_key: routing_key.to_owned(),
                    body: body.to_vec(),
                    headers: Vec::new(),
                    redelivered: false,
                });
                routed = true;
            }
        }
        if !routed {
            tracing::debug!(routing_key, "message matched no queue binding");
        }
        Ok(())
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
        self.message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
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

    async fn dead_letter(&self, routing_key: &str, body: &[u8], reason: &str) -> Result<()> {
        if self.settle().is_some() {
            let mut queues = self.inner.queues();
            let dead = queues
                .entry(DEAD_LETTER_QUEUE.to_owned())
                .or_insert_with(Queue::new);
            // Like RabbitMQ, where the dead letter is published to the queue by name through
            // the default exchange: the original key travels in a header.
            dead.push_back(Message {
                routing_key: DEAD_LETTER_QUEUE.to_owned(),
                body: body.to_vec(),
                headers: vec![
                    (DEAD_REASON_HEADER.to_owned(), reason.to_owned()),
                    (DEAD_ROUTING_KEY_HEADER.to_owned(), routing_key.to_owned()),
                ],
                redelivered: false,
            });
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
