//! `stargazer admin broker setup`: declares the broker topology of the configured
//! deployment (docs/ARCHITECTURE.md §4) with a credential allowed to configure it, before
//! the services start.

use stargazer_core::bus::amqp::{self, SetupStep};
use stargazer_core::config::{check_amqp_urls, ConfigError};

use crate::settings::Settings;
use crate::{Error, Result};

/// Declares both exchanges, `stargazer.dead` and the queue of every configured middleware
/// and bot on `url` (default: the configured `amqp_url`; a comma-separated list names
/// several nodes of one cluster), as queues of type `amqp_queue_type`. Returns what happened to each
/// part; a part the broker refused is reported there, not as an error.
pub async fn setup(settings: &Settings, url: Option<&str>) -> Result<Vec<SetupStep>> {
    let url = match url.or(settings.common.amqp_url.as_deref()) {
        Some(url) => url,
        None => {
            return Err(ConfigError::invalid(
                "amqp_url",
                "required by `stargazer admin broker setup` (or pass --amqp-url)",
            )
            .into())
        }
    };
    check_amqp_urls("amqp_url", url)?;
    amqp::setup(url, &settings.topology())
        .await
        .map_err(Error::service("broker setup"))
}
