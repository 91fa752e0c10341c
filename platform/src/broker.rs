//! `stargazer admin broker setup`: declares the broker topology of the configured
//! deployment (docs/ARCHITECTURE.md §4) with a credential allowed to configure it, before
//! the services start.

use stargazer_core::bus::amqp::{self, SetupStep};
use stargazer_core::config::ConfigError;

use crate::settings::Settings;
use crate::{Error, Result};

/// Declares both exchanges, `stargazer.dead` and the queue of every configured middleware
/// and bot on `url` (default: the configured `amqp_url`). Returns what happened to each
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
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(ConfigError::invalid("amqp_url", "not an amqp:// or amqps:// URL").into());
    }
    amqp::setup(url, &settings.topology())
        .await
        .map_err(Error::service("broker setup"))
}
