//! The wiring of Stargazer: how configuration and backends turn into running services.
//!
//! The `stargazer` binary only parses arguments and calls into this crate; the end-to-end
//! tests call the same functions, so what they exercise is exactly what the binary runs.
//!
//! - [`settings`]: the whole configuration (every service's section), loaded from TOML and
//!   `STARGAZER_…` variables and type-checked before anything starts.
//! - `backends`: opening storage and bus with retry, binding listeners, so a service
//!   waits for a database or broker that is not up yet instead of failing.
//! - [`admin`]: what the admin CLI asks of the services (Twitch logins to ids).
//! - [`broker`]: `stargazer admin broker setup`, declaring the broker topology.
//! - [`metrics`]: `/healthz`, `/readyz` and `/metrics` on `metrics_listen` for roles that serve no
//!   HTTP of their own.
//! - [`services`]: the table of services, each built from the settings.
//! - [`roles`]: one service per process (`stargazer <role>`).
//! - [`standalone`]: every service in one process (`stargazer standalone`).

pub mod admin;
mod backends;
pub mod broker;
pub mod metrics;
pub mod roles;
pub mod services;
pub mod settings;
pub mod standalone;

use stargazer_core::config::ConfigError;

/// Why a role or standalone could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; the message names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} (config key `{key}`): {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The configuration key it came from.
        key: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Storage failed outside of a service (opening it, creating internal accounts).
    #[error("storage: {0}")]
    Storage(#[from] stargazer_core::storage::StorageError),
    /// Shutdown was requested before a backend became reachable.
    #[error("shut down while waiting for {0}")]
    Interrupted(&'static str),
    /// A password could not be hashed for an internal account.
    #[error("cannot create internal account {username}: {reason}")]
    Account {
        /// The account.
        username: String,
        /// Why.
        reason: String,
    },
    /// A service returned an error.
    #[error("{service} failed: {source}")]
    Service {
        /// The service's role name.
        service: &'static str,
        /// Its error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A service task panicked or was aborted.
    #[error("a service stopped abnormally: {0}")]
    Panicked(String),
}

impl Error {
    /// The configuration error inside, if that is what this is: the binary exits with a
    /// distinct code for those.
    pub fn as_config(&self) -> Option<&ConfigError> {
        match self {
            Error::Config(err) => Some(err),
            _ => None,
        }
    }

    /// Wraps a service's own error, naming the service: `.map_err(Error::service("api"))`.
    pub fn service<E>(service: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |err| Error::Service {
            service,
            source: Box::new(err),
        }
    }
}

/// The result of this crate's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
