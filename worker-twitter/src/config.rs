//! The `[twitter]` configuration section.
//!
//! Every key can be set in the TOML file under `[twitter]` or through the environment as
//! `STARGAZER_TWITTER__<KEY>` (upper case); the token also as
//! `STARGAZER_TWITTER_BEARER_TOKEN`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};

/// Settings of the X worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwitterConfig {
    /// `bearer_token` / `STARGAZER_TWITTER_BEARER_TOKEN`: app bearer token for X API v2.
    /// Default: empty (every request then fails with 401, logged once per account).
    pub bearer_token: String,
    /// `api_base` / `STARGAZER_TWITTER__API_BASE`: base URL of the X API; the worker calls
    /// `{api_base}/2/users/<id>/tweets`. Default `https://api.x.com`.
    pub api_base: String,
    /// `poll_interval_seconds` / `STARGAZER_TWITTER__POLL_INTERVAL_SECONDS`: time between two
    /// timeline polls of one account, seconds. Default 60.
    pub poll_interval_seconds: u64,
    /// `max_results` / `STARGAZER_TWITTER__MAX_RESULTS`: tweets per page (the API accepts
    /// 5–100). Default 100.
    pub max_results: u32,
    /// `max_pages` / `STARGAZER_TWITTER__MAX_PAGES`: pages fetched per poll before the rest
    /// of a backlog is skipped (logged). Default 10.
    pub max_pages: u32,
    /// `error_backoff_max_seconds` / `STARGAZER_TWITTER__ERROR_BACKOFF_MAX_SECONDS`: cap of
    /// the backoff after server or network errors, seconds. Default 600.
    pub error_backoff_max_seconds: u64,
    /// `auth_backoff_initial_seconds` / `STARGAZER_TWITTER__AUTH_BACKOFF_INITIAL_SECONDS`:
    /// first pause after a 401/403, seconds (doubles each time). Default 60.
    pub auth_backoff_initial_seconds: u64,
    /// `auth_backoff_max_seconds` / `STARGAZER_TWITTER__AUTH_BACKOFF_MAX_SECONDS`: cap of that
    /// pause, seconds. Default 3600.
    pub auth_backoff_max_seconds: u64,
    /// `rate_limit_fallback_seconds` / `STARGAZER_TWITTER__RATE_LIMIT_FALLBACK_SECONDS`: pause
    /// after a 429 that carries no `x-rate-limit-reset`, seconds. Default 900 (the API's
    /// 15-minute window).
    pub rate_limit_fallback_seconds: u64,
    /// `entity_refresh_seconds` / `STARGAZER_TWITTER__ENTITY_REFRESH_SECONDS`: how long the
    /// entity's translation settings are cached, seconds. Default 300.
    pub entity_refresh_seconds: u64,
    /// `seen_window_days` / `STARGAZER_TWITTER__SEEN_WINDOW_DAYS`: how long published tweet
    /// ids are remembered for deduplication, days. Default 30.
    pub seen_window_days: u64,
    /// `http_timeout_seconds` / `STARGAZER_TWITTER__HTTP_TIMEOUT_SECONDS`: timeout of each
    /// request, seconds. Default 30.
    pub http_timeout_seconds: u64,
}

impl Default for TwitterConfig {
    fn default() -> Self {
        Self {
            bearer_token: String::new(),
            api_base: "https://api.x.com".into(),
            poll_interval_seconds: 60,
            max_results: 100,
            max_pages: 10,
            error_backoff_max_seconds: 600,
            auth_backoff_initial_seconds: 60,
            auth_backoff_max_seconds: 3600,
            rate_limit_fallback_seconds: 900,
            entity_refresh_seconds: 300,
            seen_window_days: 30,
            http_timeout_seconds: 30,
        }
    }
}

impl Section for TwitterConfig {
    const NAME: &'static str = "twitter";

    fn check(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, reason: String| Err(ConfigError::invalid(format!("twitter.{key}"), reason));
        check_http_url("twitter.api_base", &self.api_base)?;
        if !(5..=100).contains(&self.max_results) {
            return bad("max_results", "must be between 5 and 100".into());
        }
        if self.max_pages == 0 {
            return bad("max_pages", "must be at least 1".into());
        }
        if self.poll_interval_seconds == 0 {
            return bad("poll_interval_seconds", "must be at least 1".into());
        }
        Ok(())
    }
}

impl TwitterConfig {
    pub(crate) fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds.max(1))
    }
}
