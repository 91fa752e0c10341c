//! The `[qq]` configuration section: where the OneBot v11 implementation's HTTP API is
//! (NapCat, Lagrange.OneBot, LLOneBot), the credentials of both directions (the access
//! token the bot presents, the secret event reports are signed with) and the sending pace.

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
}

impl Default for QqConfig {
    fn default() -> Self {
        Self {
            api_url: "http://127.0.0.1:3000".to_owned(),
            access_token: String::new(),
            secret: String::new(),
            global_per_second: 1.0,
            group_interval_ms: 3000,
            request_timeout_secs: 15,
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
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "qq.request_timeout_secs",
                "must be at least 1",
            ));
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
