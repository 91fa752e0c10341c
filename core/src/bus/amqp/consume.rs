//! The consuming side: a consumer that follows the connection across reconnects, and
//! the acker of each delivery.

use super::*;

/// A live consumer: its channel, its delivery stream and the connection it belongs to.
pub(super) struct Active {
    /// Whether the queue is a quorum queue, whose deliveries carry `x-delivery-count`.
    pub(super) counts_deliveries: bool,
    pub(super) generation: u64,
    pub(super) link: watch::Receiver<Link>,
    pub(super) channel: Channel,
    pub(super) stream: lapin::Consumer,
}

/// Resolves once the connection `generation` is no longer the current one (lost or
/// replaced), or the bus closed.
pub(super) async fn superseded(link: &mut watch::Receiver<Link>, generation: u64) {
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
pub(super) enum Wake {
    Closed,
    Item(Option<lapin::Result<lapin::message::Delivery>>),
    Superseded,
}

pub(super) struct AmqpConsumer {
    pub(super) inner: Arc<Inner>,
    pub(super) spec: QueueSpec,
    pub(super) queue: Arc<str>,
    pub(super) active: Option<Active>,
    pub(super) backoff: Backoff,
}

impl AmqpConsumer {
    pub(super) fn wrap(
        &self,
        delivery: lapin::message::Delivery,
        channel: &Channel,
        counts_deliveries: bool,
    ) -> Delivery {
        let headers = string_headers(&delivery.properties);
        // A quorum queue leaves the header out on a first delivery.
        let delivery_count =
            counts_deliveries.then(|| delivery_count(&delivery.properties).unwrap_or(0));
        let acker = AmqpAcker {
            inner: self.inner.clone(),
            queue: self.queue.clone(),
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
        .with_delivery_count(delivery_count)
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
                    Err(failure) => {
                        let error = failure.into_error("re-consume");
                        tracing::warn!(queue = %self.spec.name, %error, "cannot re-consume; retrying");
                        self.inner.kick.notify_one();
                        if backoff_unless_cancelled(&mut self.backoff, &self.inner.closed)
                            .await
                            .is_cancelled()
                        {
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
                    let counts = active.counts_deliveries;
                    return Some(self.wrap(delivery, &channel, counts));
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

pub(super) struct AmqpAcker {
    pub(super) inner: Arc<Inner>,
    pub(super) queue: Arc<str>,
    /// Keeps the channel open while the delivery is unsettled, and tells whether it still is.
    pub(super) channel: Channel,
    pub(super) acker: lapin::acker::Acker,
    pub(super) settled: AtomicBool,
    pub(super) runtime: Option<tokio::runtime::Handle>,
}

impl AmqpAcker {
    /// Claims the delivery for settling; false if it was settled already.
    pub(super) fn claim(&self) -> bool {
        !self.settled.swap(true, Ordering::SeqCst)
    }

    pub(super) async fn send<F>(&self, settle: F) -> Result<()>
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

    async fn reject(&self, routing_key: &str, class: &'static str, reason: &str) -> Result<()> {
        if !self.claim() {
            return Ok(());
        }
        // Without requeue the broker moves it through the queue's dead-letter exchange.
        self.send(self.acker.nack(BasicNackOptions {
            multiple: false,
            requeue: false,
        }))
        .await?;
        self.inner.metrics.count_dead_letter(&self.queue, class);
        tracing::warn!(queue = %self.queue, routing_key, reason_class = class, %reason, "message dead-lettered");
        Ok(())
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
