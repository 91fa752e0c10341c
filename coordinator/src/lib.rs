//! Stargazer coordinator service (not built yet: see its issue).

use std::sync::Arc;

use stargazer_core::bus::Bus;
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;

/// Errors of the coordinator service.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(
    _storage: Arc<dyn Storage>,
    _bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    shutdown.cancelled().await;
    Ok(())
}
