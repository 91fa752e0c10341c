//! The `[qq]` configuration section: where the OneBot v11 implementation's HTTP API is
//! (NapCat, Lagrange.OneBot, LLOneBot), the credentials of both directions (the access
//! token the bot presents, the secret event reports are signed with), where event reports
//! arrive, and the sending pace.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};

/// Configuration of the QQ bot (section `[qq]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QqConfig {
    /// `qq.api_url` / `STARGAZER_QQ__API_URL`: base URL of the OneBot implementation's
    /// HTTP API (actions are POSTed to `{api_url}/<action>`); default
    /// `http://127.0.0.1:3000` (NapCat's usual HTTP server port; go-cqhttp uses 5700).
    pub api_url: String,
    /// `qq.access_token` / `STARGAZER_QQ__ACCESS_TOKEN`: the implementation's
    /// `access_token`, sent as `Authorization: Bearer <token>`. Required: without it
    /// anybody who reaches the API port can speak as the QQ account. No default.
    pub access_token: String,
    /// `qq.secret` / `STARGAZER_QQ__SECRET`: the implementation's HTTP POST `secret`;
    /// event reports not signed with it (`X-Signature: sha1=<HMAC-SHA1>`) are refused.
    /// Required: without it anybody who reaches the event endpoint can issue commands.
    /// No default.
    pub secret: String,
    /// `qq.listen` / `STARGAZER_QQ__LISTEN`: address the event endpoint binds (the
    /// implementation's HTTP POST `url` is `http://<this address>/onebot/event`); default
    /// `0.0.0.0:8086`.
    pub listen: SocketAddr,
    /// `qq.frontend_url` / `STARGAZER_QQ__FRONTEND_URL`: where `/settings` links point
    /// (`{frontend_url}/#token=<token>`); default `http://localhost:3000`.
    pub frontend_url: String,
    /// `qq.global_per_second` / `STARGAZER_QQ__GLOBAL_PER_SECOND`: messages per second
    /// over all groups and private chats; default 1. QQ publishes no limit: its risk
    /// control silently fails sends (or suspends the account) when an account bursts, so
    /// the default is a cautious pace, not a ceiling.
    pub global_per_second: f64,
    /// `qq.group_interval_ms` / `STARGAZER_QQ__GROUP_INTERVAL_MS`: minimum gap between two
    /// messages to one group, milliseconds; default 3000.
    pub group_interval_ms: u64,
    /// `qq.request_timeout_secs` / `STARGAZER_QQ__REQUEST_TIMEOUT_SECS`: time allowed for
    /// one API call, seconds; default 15 (an implementation uploading an image for a send
    /// can take several seconds).
    pub request_timeout_secs: u64,
    /// `qq.stargazer_api_url` / `STARGAZER_QQ__STARGAZER_API_URL`: the Stargazer api;
    /// default `http://127.0.0.1:8080`.
    pub stargazer_api_url: String,
    /// `qq.stargazer_api_username` / `STARGAZER_QQ__STARGAZER_API_USERNAME`: HTTP Basic
    /// user of the bot's service account (api rw); default `bot-qq`.
    pub stargazer_api_username: String,
    /// `qq.stargazer_api_password` / `STARGAZER_QQ__STARGAZER_API_PASSWORD`: its
    /// password; default empty.
    pub stargazer_api_password: String,
    /// `qq.queue` / `STARGAZER_QQ__QUEUE`: the durable queue of ready events; default
    /// `stargazer.bot.qq`.
    pub queue: String,
    /// `qq.prefetch` / `STARGAZER_QQ__PREFETCH`: events being fanned out at once;
    /// default 8.
    pub prefetch: u16,
    /// `qq.max_send_attempts` / `STARGAZER_QQ__MAX_SEND_ATTEMPTS`: attempts per message
    /// on risk control and transient errors before it is given back unsent and its event
    /// requeued for a later try; default 5.
    pub max_send_attempts: u32,
    /// `qq.claim_lease_seconds` / `STARGAZER_QQ__CLAIM_LEASE_SECONDS`: how long a claim on
    /// a delivery keeps other bot instances off, seconds; default 60, at least 3.
    pub claim_lease_seconds: u64,
    /// `qq.only_entities` / `STARGAZER_QQ__ONLY_ENTITIES`: deliver events about these
    /// entity ids only and ack every other event unprocessed; default empty: all.
    pub only_entities: Vec<uuid::Uuid>,
}

impl Default for QqConfig {
    fn default() -> Self {
        Self {
            api_url: "http://127.0.0.1:3000".to_owned(),
            access_token: String::new(),
            secret: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8086)),
            frontend_url: "http://localhost:3000".to_owned(),
            global_per_second: 1.0,
            group_interval_ms: 3000,
            request_timeout_secs: 15,
            stargazer_api_url: "http://127.0.0.1:8080".to_owned(),
            stargazer_api_username: "bot-qq".to_owned(),
            stargazer_api_password: String::new(),
            queue: stargazer_core::routing::bot_queue(crate::IM),
            prefetch: 8,
            max_send_attempts: 5,
            claim_lease_seconds: 60,
            only_entities: Vec::new(),
        }
    }
}

impl QqConfig {
    /// Checks what serde cannot, credentials included: the bot does not run without its
    /// access token and event secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.access_token.trim().is_empty() {
            return Err(ConfigError::invalid(
                "qq.access_token",
                "missing: set STARGAZER_QQ__ACCESS_TOKEN to the OneBot implementation's access_token",
            ));
        }
        if self.secret.trim().is_empty() {
            return Err(ConfigError::invalid(
                "qq.secret",
                "missing: set STARGAZER_QQ__SECRET to the OneBot implementation's HTTP POST secret",
            ));
        }
        self.check()
    }

    /// Minimum gap between two messages over all chats.
    pub fn global_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.global_per_second)
    }

    /// Minimum gap between two messages to one group.
    pub fn group_interval(&self) -> Duration {
        Duration::from_millis(self.group_interval_ms)
    }

    /// Time allowed for one API call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// How long a claim on a delivery keeps other instances off.
    pub fn claim_lease(&self) -> Duration {
        Duration::from_secs(self.claim_lease_seconds)
    }
}

impl Section for QqConfig {
    const NAME: &'static str = "qq";

    fn check(&self) -> Result<(), ConfigError> {
        check_http_url("qq.api_url", &self.api_url)?;
        // The token travels in a header: a character a header cannot carry would make
        // every call fail at request building, far from the configuration.
        if self
            .access_token
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ConfigError::invalid(
                "qq.access_token",
                "must not contain spaces or control characters",
            ));
        }
        // 1e-3/s (one message every ~17 min) is the slowest pace that still makes sense;
        // it also keeps `global_interval` far from Duration's range.
        if !(self.global_per_second.is_finite() && self.global_per_second >= 0.001) {
            return Err(ConfigError::invalid(
                "qq.global_per_second",
                "must be a number of at least 0.001",
            ));
        }
        if self.group_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "qq.group_interval_ms",
                "must be at least 1 (QQ's risk control punishes bursts into one group)",
            ));
        }
        for (key, value) in [
            ("qq.request_timeout_secs", self.request_timeout_secs),
            ("qq.prefetch", u64::from(self.prefetch)),
            ("qq.max_send_attempts", u64::from(self.max_send_attempts)),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.claim_lease_seconds < 3 {
            return Err(ConfigError::invalid(
                "qq.claim_lease_seconds",
                "must be at least 3 (it is renewed every third of it)",
            ));
        }
        check_http_url("qq.stargazer_api_url", &self.stargazer_api_url)?;
        check_http_url("qq.frontend_url", &self.frontend_url)?;
        if self.queue.trim().is_empty() {
            return Err(ConfigError::invalid("qq.queue", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> QqConfig {
        QqConfig {
            access_token: "token".into(),
            secret: "secret".into(),
            ..QqConfig::default()
        }
    }

    #[test]
    fn defaults_need_only_the_credentials() {
        let mut config = QqConfig::default();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("qq.access_token"));
        config.access_token = "token".into();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("qq.secret"));
        config.secret = "secret".into();
        config.validate().unwrap();
        // Section::check leaves credentials to standalone's "disabled" rule.
        QqConfig::default().check().unwrap();
        assert_eq!(config.global_interval(), Duration::from_secs(1));
        assert_eq!(config.group_interval(), Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                QqConfig {
                    api_url: "127.0.0.1:3000".into(),
                    ..configured()
                },
                "qq.api_url",
            ),
            (
                QqConfig {
                    access_token: "two words".into(),
                    ..configured()
                },
                "qq.access_token",
            ),
            (
                QqConfig {
                    global_per_second: 0.0,
                    ..configured()
                },
                "qq.global_per_second",
            ),
            (
                QqConfig {
                    global_per_second: f64::NAN,
                    ..configured()
                },
                "qq.global_per_second",
            ),
            (
                QqConfig {
                    group_interval_ms: 0,
                    ..configured()
                },
                "qq.group_interval_ms",
            ),
            (
                QqConfig {
                    request_timeout_secs: 0,
                    ..configured()
                },
                "qq.request_timeout_secs",
            ),
            (
                QqConfig {
                    frontend_url: "localhost:3000".into(),
                    ..configured()
                },
                "qq.frontend_url",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<QqConfig, _> =
            serde_json::from_value(serde_json::json!({"api_url": "http://x", "tokn": "t"}));
        assert!(parsed.is_err());
    }
}
