//! The `[bilibili]` configuration section.
//!
//! Every key can be set in the TOML file under `[bilibili]` or through the environment as
//! `STARGAZER_BILIBILI__<KEY>` (upper case). Bilibili needs no credential for what the
//! worker reads (room status and a user's public dynamics), so the role always runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};

/// Settings of the Bilibili worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BilibiliConfig {
    /// `live_base`: base URL of the live API; the worker calls
    /// `{live_base}/room/v1/Room/get_status_info_by_uids`. Default
    /// `https://api.live.bilibili.com`.
    pub live_base: String,
    /// `api_base`: base URL of the main API (`/x/web-interface/nav`,
    /// `/x/polymer/web-dynamic/v1/feed/space`). Default `https://api.bilibili.com`.
    pub api_base: String,
    /// `live_poll_interval_seconds`: time between two status cycles over every held uid,
    /// seconds, ±10 % jitter. Default 30.
    pub live_poll_interval_seconds: u64,
    /// `status_batch_size`: uids per status request. Default 100: the web client itself
    /// asks for pages of rooms in that order of size, the answer for 100 rooms stays
    /// around 100 KB, and 2,000 rooms then cost 20 calls a cycle.
    pub status_batch_size: usize,
    /// `live_cooldown_seconds`: how long a room must stay off before its stream counts as
    /// ended; a room back live within it continues the same stream (no second
    /// `bilibili.live`). Default 300.
    pub live_cooldown_seconds: u64,
    /// `dynamic_poll_interval_seconds`: time between two polls of one uid's dynamics,
    /// seconds; the uids are spread over it. Default 120.
    pub dynamic_poll_interval_seconds: u64,
    /// `max_pages`: dynamics pages fetched per poll before the rest of a backlog is
    /// skipped (logged). Default 3.
    pub max_pages: u32,
    /// `risk_backoff_initial_seconds`: first pause of an endpoint after a risk-control
    /// answer (-412, or -352 that new signing keys did not cure), seconds; doubles each
    /// time. Default 60.
    pub risk_backoff_initial_seconds: u64,
    /// `risk_backoff_max_seconds`: cap of that pause, seconds. Default 1800.
    pub risk_backoff_max_seconds: u64,
    /// `min_request_gap_ms`: least time between the starts of two requests to one
    /// endpoint, milliseconds. Default 250.
    pub min_request_gap_ms: u64,
    /// `user_agent`: the `User-Agent` sent (Bilibili refuses empty or unknown ones).
    /// Default: a desktop browser's.
    pub user_agent: String,
    /// `referer`: the `Referer` sent. Default `https://www.bilibili.com/`.
    pub referer: String,
    /// `wbi_key_refresh_seconds`: how long the WBI signing keys from `/nav` are used
    /// before they are fetched again, seconds. Default 86400 (a day; they rotate daily).
    pub wbi_key_refresh_seconds: u64,
    /// `entity_refresh_seconds`: how long an entity's translation settings are cached,
    /// seconds. Default 300.
    pub entity_refresh_seconds: u64,
    /// `seen_window_days`: how long published event ids are remembered, days. Default 30.
    pub seen_window_days: u64,
    /// `http_timeout_seconds`: timeout of each request, seconds. Default 20.
    pub http_timeout_seconds: u64,
}

/// The default `User-Agent`: a current desktop Chrome.
pub const BROWSER_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

impl Default for BilibiliConfig {
    fn default() -> Self {
        Self {
            live_base: "https://api.live.bilibili.com".into(),
            api_base: "https://api.bilibili.com".into(),
            live_poll_interval_seconds: 30,
            status_batch_size: 100,
            live_cooldown_seconds: 300,
            dynamic_poll_interval_seconds: 120,
            max_pages: 3,
            risk_backoff_initial_seconds: 60,
            risk_backoff_max_seconds: 1800,
            min_request_gap_ms: 250,
            user_agent: BROWSER_USER_AGENT.into(),
            referer: "https://www.bilibili.com/".into(),
            wbi_key_refresh_seconds: 86_400,
            entity_refresh_seconds: 300,
            seen_window_days: 30,
            http_timeout_seconds: 20,
        }
    }
}

impl Section for BilibiliConfig {
    const NAME: &'static str = "bilibili";

    fn check(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, reason: &str| Err(ConfigError::invalid(format!("bilibili.{key}"), reason));
        check_http_url("bilibili.live_base", &self.live_base)?;
        check_http_url("bilibili.api_base", &self.api_base)?;
        if !(1..=500).contains(&self.status_batch_size) {
            return bad("status_batch_size", "must be between 1 and 500");
        }
        if self.live_poll_interval_seconds == 0 {
            return bad("live_poll_interval_seconds", "must be at least 1");
        }
        if self.dynamic_poll_interval_seconds == 0 {
            return bad("dynamic_poll_interval_seconds", "must be at least 1");
        }
        if self.max_pages == 0 {
            return bad("max_pages", "must be at least 1");
        }
        if self.risk_backoff_initial_seconds == 0 {
            return bad("risk_backoff_initial_seconds", "must be at least 1");
        }
        if self.risk_backoff_max_seconds < self.risk_backoff_initial_seconds {
            return bad(
                "risk_backoff_max_seconds",
                "must be at least risk_backoff_initial_seconds",
            );
        }
        if self.user_agent.trim().is_empty() {
            return bad("user_agent", "must not be empty (Bilibili refuses it)");
        }
        if reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return bad("user_agent", "is not a valid header value");
        }
        if reqwest::header::HeaderValue::from_str(&self.referer).is_err() {
            return bad("referer", "is not a valid header value");
        }
        Ok(())
    }
}

impl BilibiliConfig {
    pub(crate) fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds.max(1))
    }

    pub(crate) fn min_gap(&self) -> Duration {
        Duration::from_millis(self.min_request_gap_ms)
    }

    pub(crate) fn risk_backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.risk_backoff_initial_seconds),
            Duration::from_secs(self.risk_backoff_max_seconds),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_name_their_key() {
        assert!(BilibiliConfig::default().check().is_ok());
        let err = BilibiliConfig {
            status_batch_size: 0,
            ..BilibiliConfig::default()
        }
        .check()
        .unwrap_err();
        assert!(
            err.to_string().contains("bilibili.status_batch_size"),
            "{err}"
        );
        let err = BilibiliConfig {
            user_agent: " ".into(),
            ..BilibiliConfig::default()
        }
        .check()
        .unwrap_err();
        assert!(err.to_string().contains("bilibili.user_agent"), "{err}");
    }
}
