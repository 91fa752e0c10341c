//! An observer queue on the real RabbitMQ exchange: an exclusive, auto-deleted queue bound
//! to the patterns a test cares about, which checks every message is persistent (and, if
//! asked, JSON) and keeps the events for the test to inspect.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use stargazer_core::model::Event;
use uuid::Uuid;

use crate::AMQP_URL;

/// How an [`Observer`] names its queue and what it checks of each message.
#[derive(Debug, Clone, Copy)]
pub struct ObserverOptions<'a> {
    /// The queue name before the random suffix, naming the crate under test.
    pub queue_prefix: &'a str,
    /// Also assert each message has content type `application/json`.
    pub require_json: bool,
}

/// An exclusive, auto-deleted queue on the real exchange, bound to some patterns.
pub struct Observer {
    _connection: Connection,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Event)>,
    /// Every `(routing key, event)` read so far, in arrival order.
    pub seen: Vec<(String, Event)>,
}

impl Observer {
    /// Declares the queue bound to `patterns` on the `stargazer` exchange and starts reading.
    pub async fn start(options: ObserverOptions<'_>, patterns: &[&str]) -> Self {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let connection = Connection::connect(AMQP_URL, properties).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        // The exchange may not exist yet if no bus connected before.
        channel
            .exchange_declare(
                "stargazer",
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = format!(
            "{}.{}",
            options.queue_prefix,
            &Uuid::new_v4().simple().to_string()[..12]
        );
        channel
            .queue_declare(
                &queue,
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for pattern in patterns {
            channel
                .queue_bind(
                    &queue,
                    "stargazer",
                    pattern,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let mut consumer = channel
            .basic_consume(
                &queue,
                "observer",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let require_json = options.require_json;
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let props = &delivery.properties;
                assert_eq!(
                    props.delivery_mode(),
                    &Some(2),
                    "messages must be persistent"
                );
                if require_json {
                    assert_eq!(
                        props.content_type().as_ref().map(|s| s.as_str()),
                        Some("application/json")
                    );
                }
                let event = Event::from_bytes(&delivery.data).expect("event JSON");
                let key = delivery.routing_key.as_str().to_owned();
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                if tx.send((key, event)).is_err() {
                    break;
                }
            }
        });
        Self {
            _connection: connection,
            rx,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(item) = self.rx.try_recv() {
            self.seen.push(item);
        }
    }

    /// Events of `entity` seen so far.
    pub fn of(&mut self, entity: Uuid) -> Vec<(String, Event)> {
        self.drain();
        self.seen
            .iter()
            .filter(|(_, e)| e.entity == entity)
            .cloned()
            .collect()
    }

    /// Waits until `entity` has at least `n` events (panics after `timeout`).
    pub async fn wait_for(
        &mut self,
        entity: Uuid,
        n: usize,
        timeout: Duration,
    ) -> Vec<(String, Event)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let events = self.of(entity);
            if events.len() >= n {
                return events;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!(
                    "expected {n} events for {entity}, got {}: {events:#?}",
                    events.len()
                );
            }
            if let Ok(Some(item)) = tokio::time::timeout(left, self.rx.recv()).await {
                self.seen.push(item);
            }
        }
    }

    /// Lets `quiet` pass and returns every event of `entity` (to prove nothing more came).
    pub async fn settle(&mut self, entity: Uuid, quiet: Duration) -> Vec<(String, Event)> {
        tokio::time::sleep(quiet).await;
        self.of(entity)
    }
}
