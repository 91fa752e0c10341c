//! RabbitMQ implementation of [`Bus`](super::Bus) (placeholder until implemented).

use super::{BusError, Result};

/// RabbitMQ-backed bus.
pub struct AmqpBus;

impl AmqpBus {
    /// Connects to `url`.
    pub async fn connect(_url: &str) -> Result<Self> {
        Err(BusError::Broker("amqp bus not built yet".into()))
    }
}

/// Connects to `url` as a shared [`super::Bus`].
pub async fn connect_shared(_url: &str) -> Result<std::sync::Arc<dyn super::Bus>> {
    Err(BusError::Broker("amqp bus not built yet".into()))
}
