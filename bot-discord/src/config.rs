//! The `[discord]` configuration section: REST API access (base URL, bot token, pacing),
//! the application's identity for the interactions endpoint (application id, public
//! key), where that endpoint listens, and who may change a channel's subscriptions.

use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};

/// Configuration of the Discord bot (section `[discord]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscordConfig {
    /// `discord.api_url` / `STARGAZER_DISCORD__API_URL`: base URL of Discord's REST API,
    /// without the `/api/v10` suffix the client adds; default `https://discord.com`.
    pub api_url: String,
    /// `discord.token` / `STARGAZER_DISCORD__TOKEN`: the bot token from the Developer
    /// Portal (sent as `Authorization: Bot <token>`). Required; no default.
    pub token: String,
    /// `discord.application_id` / `STARGAZER_DISCORD__APPLICATION_ID`: the application's
    /// id (a snowflake, in decimal). Required; no default.
    pub application_id: String,
    /// `discord.public_key` / `STARGAZER_DISCORD__PUBLIC_KEY`: the application's Ed25519
    /// public key as the Developer Portal shows it (64 hex digits); interactions not
    /// signed by its private half are refused. Required; no default.
    pub public_key: String,
    /// `discord.global_per_second` / `STARGAZER_DISCORD__GLOBAL_PER_SECOND`: Discord's
    /// global limit for the bot, requests per second over all routes; default 50
    /// (Discord's). The sender spaces its requests evenly a little below it, so that a
    /// large fan-out never meets a global 429.
    pub global_per_second: f64,
    /// `discord.request_timeout_secs` / `STARGAZER_DISCORD__REQUEST_TIMEOUT_SECS`: time
    /// allowed for one REST request, seconds; default 15.
    pub request_timeout_secs: u64,
    /// `discord.stargazer_api_url` / `STARGAZER_DISCORD__STARGAZER_API_URL`: the
    /// Stargazer api; default `http://127.0.0.1:8080`.
    pub stargazer_api_url: String,
    /// `discord.stargazer_api_username` / `STARGAZER_DISCORD__STARGAZER_API_USERNAME`:
    /// HTTP Basic user of the bot's service account (api rw); default `bot-discord`.
    pub stargazer_api_username: String,
    /// `discord.stargazer_api_password` / `STARGAZER_DISCORD__STARGAZER_API_PASSWORD`:
    /// its password; default empty.
    pub stargazer_api_password: String,
    /// `discord.queue` / `STARGAZER_DISCORD__QUEUE`: the durable queue of ready events;
    /// default `stargazer.bot.discord`.
    pub queue: String,
    /// `discord.prefetch` / `STARGAZER_DISCORD__PREFETCH`: events being fanned out at
    /// once; default 8.
    pub prefetch: u16,
    /// `discord.channel_interval_ms` / `STARGAZER_DISCORD__CHANNEL_INTERVAL_MS`: minimum
    /// gap between two messages to one channel, milliseconds; default 1000 (Discord's
    /// message bucket is 5 per 5 s per channel).
    pub channel_interval_ms: u64,
    /// `discord.max_in_flight` / `STARGAZER_DISCORD__MAX_IN_FLIGHT`: REST requests open at
    /// once; default 64.
    pub max_in_flight: usize,
    /// `discord.max_send_attempts` / `STARGAZER_DISCORD__MAX_SEND_ATTEMPTS`: attempts per
    /// message on transient errors (network, 5xx, a refused token) and 429s before it is
    /// given back unsent and its event requeued for a later try; default 5.
    pub max_send_attempts: u32,
    /// `discord.claim_lease_seconds` / `STARGAZER_DISCORD__CLAIM_LEASE_SECONDS`: how long a
    /// claim on a delivery keeps other bot instances off, seconds; default 60, at least 3.
    pub claim_lease_seconds: u64,
    /// `discord.only_entities` / `STARGAZER_DISCORD__ONLY_ENTITIES`: deliver events about
    /// these entity ids only and ack every other event unprocessed; default empty: all.
    pub only_entities: Vec<uuid::Uuid>,
    /// `discord.listen` / `STARGAZER_DISCORD__LISTEN`: address of the HTTP interactions
    /// endpoint (`POST /interactions`), the URL set as the application's "Interactions
    /// Endpoint URL" in the Developer Portal (behind HTTPS); default `0.0.0.0:8085`.
    pub listen: SocketAddr,
    /// `discord.frontend_url` / `STARGAZER_DISCORD__FRONTEND_URL`: where `/settings`
    /// links point (`{frontend_url}/#token=<token>`); default `http://localhost:3000`.
    pub frontend_url: String,
    /// `discord.manager_role` / `STARGAZER_DISCORD__MANAGER_ROLE`: the id of a role
    /// (a snowflake, in decimal) whose members may change a channel's subscriptions and
    /// settings besides those with Manage Channels or Administrator; default empty: none.
    pub manager_role: String,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            api_url: "https://discord.com".to_owned(),
            token: String::new(),
            application_id: String::new(),
            public_key: String::new(),
            global_per_second: 50.0,
            request_timeout_secs: 15,
            stargazer_api_url: "http://127.0.0.1:8080".to_owned(),
            stargazer_api_username: "bot-discord".to_owned(),
            stargazer_api_password: String::new(),
            queue: stargazer_core::routing::bot_queue(crate::IM),
            prefetch: 8,
            channel_interval_ms: 1000,
            max_in_flight: 64,
            max_send_attempts: 5,
            claim_lease_seconds: 60,
            only_entities: Vec::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8085)),
            frontend_url: "http://localhost:3000".to_owned(),
            manager_role: String::new(),
        }
    }
}

impl DiscordConfig {
    /// Checks what serde cannot, credentials included: the bot cannot run without its
    /// token, application id and public key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token.trim().is_empty() {
            return Err(ConfigError::invalid(
                "discord.token",
                "missing: set STARGAZER_DISCORD__TOKEN to the bot token",
            ));
        }
        if self.application_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "discord.application_id",
                "missing: set STARGAZER_DISCORD__APPLICATION_ID to the application id",
            ));
        }
        if self.public_key.trim().is_empty() {
            return Err(ConfigError::invalid(
                "discord.public_key",
                "missing: set STARGAZER_DISCORD__PUBLIC_KEY to the application's public key",
            ));
        }
        self.check()
    }

    /// The public key interactions are verified against.
    pub fn verifying_key(&self) -> Result<VerifyingKey, ConfigError> {
        parse_public_key(&self.public_key)
    }

    /// Time allowed for one REST request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// How long a claim on a delivery keeps other instances off.
    pub fn claim_lease(&self) -> Duration {
        Duration::from_secs(self.claim_lease_seconds)
    }

    /// The role whose members may manage subscriptions, when one is configured.
    pub fn manager_role(&self) -> Option<&str> {
        Some(self.manager_role.trim()).filter(|role| !role.is_empty())
    }
}

/// Whether `text` is a snowflake: a positive decimal number that fits 64 bits.
fn is_snowflake(text: &str) -> bool {
    matches!(text.parse::<u64>(), Ok(n) if n > 0)
}

/// Parses a hex Ed25519 public key, naming what is wrong with it.
fn parse_public_key(text: &str) -> Result<VerifyingKey, ConfigError> {
    const KEY: &str = "discord.public_key";
    let text = text.trim();
    if text.len() != 64 {
        return Err(ConfigError::invalid(
            KEY,
            format!(
                "must be 64 hex digits (32 bytes), got {} characters",
                text.len()
            ),
        ));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes)
        .map_err(|err| ConfigError::invalid(KEY, format!("not hex: {err}")))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ConfigError::invalid(KEY, "not a valid Ed25519 public key"))
}

impl Section for DiscordConfig {
    const NAME: &'static str = "discord";

    fn check(&self) -> Result<(), ConfigError> {
        check_http_url("discord.api_url", &self.api_url)?;
        for (key, id) in [
            ("discord.application_id", self.application_id.trim()),
            ("discord.manager_role", self.manager_role.trim()),
        ] {
            if !id.is_empty() && !is_snowflake(id) {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{id}` is not a snowflake (a positive decimal number)"),
                ));
            }
        }
        if !self.public_key.trim().is_empty() {
            parse_public_key(&self.public_key)?;
        }
        if !(self.global_per_second.is_finite() && self.global_per_second > 0.0) {
            return Err(ConfigError::invalid(
                "discord.global_per_second",
                "must be a positive number",
            ));
        }
        for (key, value) in [
            ("discord.request_timeout_secs", self.request_timeout_secs),
            ("discord.prefetch", u64::from(self.prefetch)),
            ("discord.max_in_flight", self.max_in_flight as u64),
            (
                "discord.max_send_attempts",
                u64::from(self.max_send_attempts),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.claim_lease_seconds < 3 {
            return Err(ConfigError::invalid(
                "discord.claim_lease_seconds",
                "must be at least 3 (it is renewed every third of it)",
            ));
        }
        check_http_url("discord.stargazer_api_url", &self.stargazer_api_url)?;
        check_http_url("discord.frontend_url", &self.frontend_url)?;
        if self.queue.trim().is_empty() {
            return Err(ConfigError::invalid("discord.queue", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public key of a fixed seed.
    fn key_hex() -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        hex::encode(key.verifying_key().to_bytes())
    }

    fn complete() -> DiscordConfig {
        DiscordConfig {
            token: "token".into(),
            application_id: "1190000000000000042".into(),
            public_key: key_hex(),
            ..DiscordConfig::default()
        }
    }

    fn reason(config: &DiscordConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_discords() {
        let config = DiscordConfig::default();
        assert_eq!(config.api_url, "https://discord.com");
        assert_eq!(config.global_per_second, 50.0);
        assert!(config.check().is_ok());
        assert!(complete().validate().is_ok());
        assert_eq!(config.listen.port(), 8085);
        assert_eq!(config.manager_role(), None);
        let with_role = DiscordConfig {
            manager_role: " 1190000000000000077 ".into(),
            ..complete()
        };
        assert!(with_role.validate().is_ok());
        assert_eq!(with_role.manager_role(), Some("1190000000000000077"));
    }

    #[test]
    fn credentials_are_required_by_validate_only() {
        let missing = DiscordConfig::default();
        assert!(reason(&missing).contains("discord.token"));
        let no_id = DiscordConfig {
            application_id: String::new(),
            ..complete()
        };
        assert!(reason(&no_id).contains("discord.application_id"));
        let no_key = DiscordConfig {
            public_key: String::new(),
            ..complete()
        };
        assert!(reason(&no_key).contains("discord.public_key"));
    }

    #[test]
    fn bad_values_name_key_and_problem() {
        let cases = [
            (
                DiscordConfig {
                    api_url: "discord.com".into(),
                    ..complete()
                },
                "discord.api_url",
                "not an absolute URL",
            ),
            (
                DiscordConfig {
                    application_id: "abc".into(),
                    ..complete()
                },
                "discord.application_id",
                "not a snowflake",
            ),
            (
                DiscordConfig {
                    manager_role: "moderators".into(),
                    ..complete()
                },
                "discord.manager_role",
                "not a snowflake",
            ),
            (
                DiscordConfig {
                    frontend_url: "ftp://stargazer.example".into(),
                    ..complete()
                },
                "discord.frontend_url",
                "not an http:// or https:// URL",
            ),
            (
                DiscordConfig {
                    public_key: "ab".into(),
                    ..complete()
                },
                "discord.public_key",
                "got 2 characters",
            ),
            (
                DiscordConfig {
                    public_key: "z".repeat(64),
                    ..complete()
                },
                "discord.public_key",
                "not hex",
            ),
            (
                DiscordConfig {
                    global_per_second: 0.0,
                    ..complete()
                },
                "discord.global_per_second",
                "positive",
            ),
            (
                DiscordConfig {
                    request_timeout_secs: 0,
                    ..complete()
                },
                "discord.request_timeout_secs",
                "at least 1",
            ),
        ];
        for (config, key, problem) in cases {
            let reason = reason(&config);
            assert!(reason.contains(key), "{reason}");
            assert!(reason.contains(problem), "{reason}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<DiscordConfig, _> = toml::from_str("tokn = \"x\"");
        assert!(parsed.is_err());
    }
}
