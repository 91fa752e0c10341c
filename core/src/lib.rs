//! Shared foundation of every Stargazer service.
//!
//! - [`model`]: entities, tasks, users, subscriptions, sessions, credentials, events.
//! - [`contract`]: the wire contract as constants: source words, tags, control fields, kinds.
//! - [`routing`]: routing keys, the tag stack and AMQP topic matching.
//! - [`topology`]: the exchanges and queues of the broker, as data.
//! - [`storage`]: the [`storage::Storage`] trait with MongoDB and SQLite implementations.
//! - [`bus`]: the [`bus::Bus`] trait with RabbitMQ and in-process implementations.
//! - [`config`]: TOML + environment configuration with one-line errors.
//! - [`auth`]: PBKDF2 password hashes and session tokens.
//! - [`sync`]: a mutex lock that survives a panic elsewhere.
//! - [`telemetry`]: tracing setup, Prometheus rendering, `/healthz`.
//! - [`readiness`]: `/readyz`, each dependency of a role checked now.
//! - [`backoff`]: capped exponential backoff for reconnect loops.
//! - [`wait`]: sleep unless cancelled, the one way every loop waits.
//! - [`quota`]: the YouTube Data API's daily quota, counted across processes.
//! - [`schedule`]: streams announced and not over, for the iCal feed and Upcoming view.
//! - [`outbox`]: publish-once with a crash-safe outbox, for event sources.
//! - [`source`]: the kit of event source workers: errors, publisher, housekeeping, HTTP.
//! - [`protocol`]: the coordinator ↔ worker WebSocket messages.
//! - [`service`]: the [`service::Service`] trait every service implements once.
//! - [`worker_runtime`]: the worker side of that protocol, shared by both workers.
//! - [`middleware`]: the consume → process → pop tag → republish → ack loop of middlewares.
//!
//! Nothing here is specific to one service.

pub mod auth;
pub mod backoff;
pub mod bus;
pub mod config;
pub mod contract;
pub mod middleware;
pub mod model;
pub mod outbox;
pub mod protocol;
pub mod quota;
pub mod readiness;
pub mod routing;
pub mod schedule;
pub mod service;
pub mod source;
pub mod storage;
pub mod sync;
pub mod telemetry;
pub mod throttle;
pub mod topology;
pub mod wait;
pub mod worker_runtime;

pub use tokio_util::sync::CancellationToken;
pub use uuid::Uuid;
