//! Test harness for the whole Stargazer platform: the end-to-end and fault tests in
//! `tests/` and the pipeline benchmark in `benches/pipeline.rs` use it.
//!
//! - [`servers`]: local HTTP servers playing the external services with their real
//!   protocols: a WebSub hub, YouTube (Data API v3 `videos.list` and channel feeds),
//!   X API v2 timelines, DeepL `/v2/translate` and the Telegram Bot API.
//! - [`backends`]: the two backend pairs (SQLite + in-process bus; MongoDB-wire server +
//!   RabbitMQ), each test on a fresh database and, on RabbitMQ, in a virtual host of its
//!   own so parallel tests never see each other's messages.
//! - [`process`]: a service running on a runtime of its own, so a test can stop it
//!   gracefully or kill it the way a crashed process dies (every task dropped at once,
//!   sockets closed, nothing flushed).
//! - [`platform`]: runs `stargazer standalone`, or one `stargazer <role>` per service,
//!   through `stargazer-platform` (what the binary calls), with every external base URL
//!   pointed at the test servers and the timings compressed through configuration.
//! - [`events`]: numbered events published as a worker would, and the tally of what
//!   reached each chat.
//! - [`wait`]: polling helpers with deadlines.

pub mod backends;
pub mod events;
pub mod platform;
pub mod process;
pub mod servers;
pub mod wait;

/// Errors of the harness itself (servers that cannot bind, backends that cannot be
/// reached, services that fail to start).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound or read.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Storage could not be opened or failed.
    #[error("storage: {0}")]
    Storage(#[from] stargazer_core::storage::StorageError),
    /// The bus could not be opened or failed.
    #[error("bus: {0}")]
    Bus(#[from] stargazer_core::bus::BusError),
    /// The api client failed.
    #[error("api client: {0}")]
    Api(#[from] stargazer_api::client::ClientError),
    /// A broker administration command failed.
    #[error("broker administration: {0}")]
    Broker(String),
    /// MongoDB administration failed.
    #[error("mongodb: {0}")]
    Mongo(String),
    /// A service returned an error or could not be started.
    #[error("service {service}: {reason}")]
    Service {
        /// The service name.
        service: String,
        /// What went wrong.
        reason: String,
    },
}

/// Result alias of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Logs to the test output when `RUST_LOG` is set; harmless to call more than once.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A random suffix for names that must be unique per test run (the one `testkit` uses).
pub use stargazer_testkit::backends::unique;
