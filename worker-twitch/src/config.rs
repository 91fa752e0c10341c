//! The `[twitch]` configuration section.
//!
//! Every key can be set in the TOML file under `[twitch]` or through the environment as
//! `STARGAZER_TWITCH__<KEY>` (upper case); the client secret also as
//! `STARGAZER_TWITCH_CLIENT_SECRET` and the EventSub secret as
//! `STARGAZER_TWITCH_EVENTSUB_SECRET`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};

/// What to do with a `stream.online` whose type is not `live` (rerun, playlist,
/// watch_party, premiere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonLiveStreams {
    /// Publish nothing (counted and logged at debug).
    #[default]
    Drop,
    /// Publish `twitch.rerun` with `stream_type`.
    Publish,
}

/// Settings of the Twitch worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwitchConfig {
    /// `client_id` / `STARGAZER_TWITCH__CLIENT_ID`: the Twitch application's client id.
    /// Default: empty (the role then refuses to start; standalone reports it disabled).
    pub client_id: String,
    /// `client_secret` / `STARGAZER_TWITCH_CLIENT_SECRET`: the application's client secret,
    /// exchanged for an app access token (client credentials). Default: empty.
    pub client_secret: String,
    /// `eventsub_secret` / `STARGAZER_TWITCH_EVENTSUB_SECRET`: the HMAC secret given to
    /// Twitch with each subscription, 10–100 ASCII characters; every message must be
    /// signed with it. Default: empty (the role then refuses to start).
    pub eventsub_secret: String,
    /// `callback_url` / `STARGAZER_TWITCH__CALLBACK_URL`: the public URL Twitch posts to
    /// (Twitch requires HTTPS on port 443), e.g. `https://stargazer.example/twitch/eventsub`;
    /// it must reach `/twitch/eventsub` on `listen`, and every Twitch worker of a deployment
    /// uses the same one. Default: empty (the role then refuses to start).
    pub callback_url: String,
    /// `listen` / `STARGAZER_TWITCH__LISTEN`: address of the callback listener (EventSub,
    /// `/healthz`, `/readyz`, `/metrics`). Default `0.0.0.0:8083`.
    pub listen: SocketAddr,
    /// `helix_base` / `STARGAZER_TWITCH__HELIX_BASE`: base URL of the Helix API. Default
    /// `https://api.twitch.tv/helix`.
    pub helix_base: String,
    /// `id_base` / `STARGAZER_TWITCH__ID_BASE`: base URL of Twitch's OAuth server; tokens
    /// come from `{id_base}/oauth2/token`. Default `https://id.twitch.tv`.
    pub id_base: String,
    /// `non_live_streams` / `STARGAZER_TWITCH__NON_LIVE_STREAMS`: `"drop"` or `"publish"`
    /// (as `twitch.rerun`) a `stream.online` that is not of type `live`. Default `"drop"`.
    pub non_live_streams: NonLiveStreams,
    /// `batch_window_ms` / `STARGAZER_TWITCH__BATCH_WINDOW_MS`: how long `stream.online`
    /// notifications are collected before one Helix lookup (≤ 100 ids), milliseconds.
    /// Default 250.
    pub batch_window_ms: u64,
    /// `lookup_timeout_ms` / `STARGAZER_TWITCH__LOOKUP_TIMEOUT_MS`: the longest a
    /// notification waits for its Helix lookup (rate-limit waits included) before the event
    /// is published with what the notification carries, milliseconds. Default 5000.
    pub lookup_timeout_ms: u64,
    /// `reconcile_interval_seconds` / `STARGAZER_TWITCH__RECONCILE_INTERVAL_SECONDS`: time
    /// between two full reconciliations of the subscriptions with Twitch's list, seconds.
    /// Default 600.
    pub reconcile_interval_seconds: u64,
    /// `sweep_grace_seconds` / `STARGAZER_TWITCH__SWEEP_GRACE_SECONDS`: after each full
    /// reconciliation, a remembered live stream that Helix no longer lists is ended (its
    /// `stream.offline` was lost); one that started less than this ago is left alone,
    /// since Helix lists new streams with a delay, seconds. Default 600.
    pub sweep_grace_seconds: u64,
    /// `reconcile_delay_ms` / `STARGAZER_TWITCH__RECONCILE_DELAY_MS`: how long after a task
    /// assignment the worker waits for more before reconciling, milliseconds (the
    /// coordinator assigns in bursts). Default 500.
    pub reconcile_delay_ms: u64,
    /// `delete_orphans` / `STARGAZER_TWITCH__DELETE_ORPHANS`: delete subscriptions to our
    /// callback whose broadcaster is no Twitch task in storage at all. Default true.
    pub delete_orphans: bool,
    /// `subscribe_concurrency` / `STARGAZER_TWITCH__SUBSCRIBE_CONCURRENCY`: subscription
    /// creates and deletes in flight at once. Default 8.
    pub subscribe_concurrency: usize,
    /// `revocation_backoff_seconds` / `STARGAZER_TWITCH__REVOCATION_BACKOFF_SECONDS`: wait
    /// before re-creating a revoked subscription, seconds. Default 60.
    pub revocation_backoff_seconds: u64,
    /// `retry_initial_ms` / `STARGAZER_TWITCH__RETRY_INITIAL_MS`: first wait before
    /// retrying a failed reconciliation, milliseconds (doubles each failure). Default 1000.
    pub retry_initial_ms: u64,
    /// `retry_max_seconds` / `STARGAZER_TWITCH__RETRY_MAX_SECONDS`: cap of that wait,
    /// seconds. Default 600.
    pub retry_max_seconds: u64,
    /// `rate_limit_fallback_seconds` / `STARGAZER_TWITCH__RATE_LIMIT_FALLBACK_SECONDS`: wait
    /// after a 429 without a usable `Ratelimit-Reset`, seconds (Helix refills its bucket
    /// each minute). Default 60.
    pub rate_limit_fallback_seconds: u64,
    /// `max_body_bytes` / `STARGAZER_TWITCH__MAX_BODY_BYTES`: largest EventSub message
    /// accepted, bytes. Default 65536.
    pub max_body_bytes: usize,
    /// `seen_window_days` / `STARGAZER_TWITCH__SEEN_WINDOW_DAYS`: how long published events
    /// are remembered for deduplication, days. Default 30.
    pub seen_window_days: u64,
    /// `http_timeout_seconds` / `STARGAZER_TWITCH__HTTP_TIMEOUT_SECONDS`: timeout of each
    /// outgoing request, seconds. Default 30.
    pub http_timeout_seconds: u64,
}

impl Default for TwitchConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: String::new(),
            eventsub_secret: String::new(),
            callback_url: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8083)),
            helix_base: "https://api.twitch.tv/helix".into(),
            id_base: "https://id.twitch.tv".into(),
            non_live_streams: NonLiveStreams::Drop,
            batch_window_ms: 250,
            lookup_timeout_ms: 5000,
            reconcile_interval_seconds: 600,
            sweep_grace_seconds: 600,
            reconcile_delay_ms: 500,
            delete_orphans: true,
            subscribe_concurrency: 8,
            revocation_backoff_seconds: 60,
            retry_initial_ms: 1000,
            retry_max_seconds: 600,
            rate_limit_fallback_seconds: 60,
            max_body_bytes: 65536,
            seen_window_days: 30,
            http_timeout_seconds: 30,
        }
    }
}

impl Section for TwitchConfig {
    const NAME: &'static str = "twitch";

    fn check(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, reason: &str| Err(ConfigError::invalid(format!("twitch.{key}"), reason));
        check_http_url("twitch.helix_base", &self.helix_base)?;
        check_http_url("twitch.id_base", &self.id_base)?;
        if !self.callback_url.is_empty() {
            check_http_url("twitch.callback_url", &self.callback_url)?;
        }
        if !self.eventsub_secret.is_empty()
            && (!(10..=100).contains(&self.eventsub_secret.len())
                || !self.eventsub_secret.is_ascii())
        {
            return bad("eventsub_secret", "must be 10 to 100 ASCII characters");
        }
        if self.subscribe_concurrency == 0 {
            return bad("subscribe_concurrency", "must be at least 1");
        }
        if self.reconcile_interval_seconds == 0 {
            return bad("reconcile_interval_seconds", "must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        Ok(())
    }
}

impl TwitchConfig {
    /// The first key a running worker needs that is unset, if any.
    pub fn missing_credential(&self) -> Option<(&'static str, &'static str)> {
        [
            (
                "twitch.client_id",
                "STARGAZER_TWITCH__CLIENT_ID",
                &self.client_id,
            ),
            (
                "twitch.client_secret",
                "STARGAZER_TWITCH_CLIENT_SECRET",
                &self.client_secret,
            ),
            (
                "twitch.eventsub_secret",
                "STARGAZER_TWITCH_EVENTSUB_SECRET",
                &self.eventsub_secret,
            ),
            (
                "twitch.callback_url",
                "STARGAZER_TWITCH__CALLBACK_URL",
                &self.callback_url,
            ),
        ]
        .into_iter()
        .find(|(_, _, value)| value.trim().is_empty())
        .map(|(key, env, _)| (key, env))
    }

    pub(crate) fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds.max(1))
    }

    pub(crate) fn helix(&self, path: &str) -> String {
        format!("{}/{path}", self.helix_base.trim_end_matches('/'))
    }

    pub(crate) fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.id_base.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_secrets_are_named() {
        TwitchConfig::default().check().unwrap();
        let short = TwitchConfig {
            eventsub_secret: "short".into(),
            ..TwitchConfig::default()
        };
        assert!(short
            .check()
            .unwrap_err()
            .to_string()
            .contains("eventsub_secret"));
        let unicode = TwitchConfig {
            eventsub_secret: "ſecret-ſecret".into(),
            ..TwitchConfig::default()
        };
        assert!(unicode.check().is_err());
        assert_eq!(
            TwitchConfig::default().missing_credential(),
            Some(("twitch.client_id", "STARGAZER_TWITCH__CLIENT_ID"))
        );
    }
}
