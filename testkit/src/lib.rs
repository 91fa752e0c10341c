//! Support code shared by the integration tests of the Stargazer services: per-test bus and
//! storage backends on the real servers ([`backends`]), a fake coordinator speaking the
//! worker protocol ([`coordinator`]), an observer queue on the real RabbitMQ exchange
//! ([`observer`]), local servers playing the external APIs: Telegram, Discord, a WebSub hub,
//! YouTube, X and DeepL ([`servers`]), a storage that fails on demand ([`faulty`]), and a
//! 3-node RabbitMQ cluster for broker fault tests ([`cluster`]).
//!
//! Tests may panic freely, so the helpers here unwrap and assert rather than return errors.

pub mod backends;
pub mod cluster;
pub mod coordinator;
pub mod faulty;
pub mod observer;
pub mod servers;

use std::time::Duration;

/// The RabbitMQ the worker tests publish to and observe.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The MongoDB-wire server the worker tests store into.
pub const MONGO_URL: &str = "mongodb://127.0.0.1:27017";

/// Polls `check` until it holds (panics after `timeout`).
pub async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
