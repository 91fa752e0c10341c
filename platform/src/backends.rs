//! Opening the configured backends and binding listeners.
//!
//! Storage and bus are retried with backoff while unreachable, because in a deployment
//! the database or broker may start after the service; a URL that cannot be right is a
//! configuration error at once, and stored data the storage refuses to open
//! ([`StorageError::Inconsistent`]) stops the role with the storage's message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stargazer_core::backoff::Backoff;
use stargazer_core::bus::{Bus, BusError, BusOptions};
use stargazer_core::config::{redact_url, redact_url_list, ConfigError};
use stargazer_core::storage::{Storage, StorageError};
use stargazer_core::wait::sleep_unless_cancelled;
use stargazer_core::CancellationToken;
use tokio::net::TcpListener;

use crate::{Error, Result};

/// First pause before retrying an unreachable backend.
const RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Opens storage, retrying with backoff while the database is unreachable.
pub(crate) async fn open_storage(
    url: &str,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn Storage>> {
    let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    loop {
        match stargazer_core::storage::connect(url).await {
            Ok(storage) => return Ok(storage),
            Err(StorageError::InvalidUrl(url)) => {
                return Err(ConfigError::invalid(
                    "mongo_url",
                    format!("`{}` is not a storage URL", redact_url(&url)),
                )
                .into())
            }
            // Waiting does not fix stored data: stop and say what to fix.
            Err(err @ StorageError::Inconsistent(_)) => return Err(err.into()),
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(cause = %err, retry_in = ?delay, "storage unavailable");
                if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                    return Err(Error::Interrupted("storage"));
                }
            }
        }
    }
}

/// Opens the bus, retrying with backoff while the broker is unreachable or its topology
/// is missing (`stargazer admin broker setup` not run yet).
pub(crate) async fn open_bus(
    url: &str,
    options: &BusOptions,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn Bus>> {
    let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    loop {
        match stargazer_core::bus::connect_with(url, options.clone()).await {
            Ok(bus) => return Ok(bus),
            Err(BusError::InvalidUrl(url)) => {
                return Err(ConfigError::invalid(
                    "amqp_url",
                    format!("`{}` is not a bus URL", redact_url_list(&url)),
                )
                .into())
            }
            Err(err @ BusError::TopologyMissing { .. }) => {
                let delay = backoff.next_delay();
                tracing::error!(cause = %err, retry_in = ?delay, "broker topology missing");
                if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                    return Err(Error::Interrupted("the broker"));
                }
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(cause = %err, retry_in = ?delay, "broker unavailable");
                if sleep_unless_cancelled(delay, shutdown).await.is_cancelled() {
                    return Err(Error::Interrupted("the broker"));
                }
            }
        }
    }
}

/// Parses a listen address, as a config error naming `key`.
pub(crate) fn parse_addr(value: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|err| {
        ConfigError::invalid(key, format!("`{value}` is not a socket address: {err}"))
    })
}

/// Binds a listener; failure names the config key.
pub(crate) async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr,
        key: key.to_owned(),
        source,
    })
}

/// The address to dial for a listener bound to `addr`: a wildcard bind is dialled on
/// loopback.
pub(crate) fn connect_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_dialled_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(connect_addr(addr).to_string(), "127.0.0.1:8080");
        let addr: SocketAddr = "10.0.0.2:1".parse().unwrap();
        assert_eq!(connect_addr(addr), addr);
    }

    #[test]
    fn a_bad_listen_address_names_its_key() {
        let err = parse_addr("localhost", "coordinator.listen").unwrap_err();
        assert!(err.to_string().contains("coordinator.listen"), "{err}");
    }

    #[tokio::test]
    async fn a_storage_url_of_the_wrong_kind_is_a_config_error_at_once() {
        let err = open_storage("postgres://x", &CancellationToken::new())
            .await
            .err()
            .unwrap();
        assert!(err.as_config().is_some(), "{err}");
    }
}
