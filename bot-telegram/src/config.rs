//! The `[telegram]` configuration section: Bot API access, the Stargazer api the bot
//! talks to, the frontend its session links point at, and Telegram's sending limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};

/// Configuration of the Telegram bot (section `[telegram]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// `telegram.token` / `STARGAZER_TELEGRAM_TOKEN`: the bot token from @BotFather.
    /// Required; no default.
    pub token: String,
    /// `telegram.api_url` / `STARGAZER_TELEGRAM__API_URL`: base URL of the Telegram Bot
    /// API; default `https://api.telegram.org`.
    pub api_url: String,
    /// `telegram.stargazer_api_url` / `STARGAZER_TELEGRAM__STARGAZER_API_URL`: base URL of
    /// the Stargazer api; default `http://127.0.0.1:8080`.
    pub stargazer_api_url: String,
    /// `telegram.stargazer_api_username` / `STARGAZER_TELEGRAM__STARGAZER_API_USERNAME`:
    /// HTTP Basic user of the bot's service account (api rw); default `bot-telegram`.
    pub stargazer_api_username: String,
    /// `telegram.stargazer_api_password` / `STARGAZER_TELEGRAM__STARGAZER_API_PASSWORD`:
    /// its password; default empty.
    pub stargazer_api_password: String,
    /// `telegram.frontend_url` / `STARGAZER_TELEGRAM__FRONTEND_URL`: where `/settings`
    /// links point (`{frontend_url}/#token=<token>`); default `http://localhost:3000`
    /// (standalone replaces that default with the api's own address, which serves the page).
    pub frontend_url: String,
    /// `telegram.queue` / `STARGAZER_TELEGRAM__QUEUE`: the durable queue of ready events;
    /// default `stargazer.bot.telegram`.
    pub queue: String,
    /// `telegram.prefetch` / `STARGAZER_TELEGRAM__PREFETCH`: events being fanned out at
    /// once; default 8.
    pub prefetch: u16,
    /// `telegram.global_per_second` / `STARGAZER_TELEGRAM__GLOBAL_PER_SECOND`: messages
    /// per second over all chats, for the token: bot instances on one store count each
    /// other and each sends its share; default 29 (just under Telegram's 30 so that
    /// network jitter never pushes a one-second window over the limit).
    pub global_per_second: f64,
    /// `telegram.chat_interval_ms` / `STARGAZER_TELEGRAM__CHAT_INTERVAL_MS`: minimum gap
    /// between two messages to one private chat, milliseconds; default 1000.
    pub chat_interval_ms: u64,
    /// `telegram.group_per_minute` / `STARGAZER_TELEGRAM__GROUP_PER_MINUTE`: messages per
    /// minute to one group (negative chat id); default 20.
    pub group_per_minute: u32,
    /// `telegram.max_in_flight` / `STARGAZER_TELEGRAM__MAX_IN_FLIGHT`: Bot API send
    /// requests open at once; default 32.
    pub max_in_flight: usize,
    /// `telegram.fair_fanout` / `STARGAZER_TELEGRAM__FAIR_FANOUT`: chats take turns by
    /// urgency and event: a stream going live or starting soon goes before every other
    /// kind, and a new event's chats are not queued behind a long fan-out of an earlier
    /// one; `false` sends every chat of an event before any chat of a later one. Each
    /// chat's own messages keep their order either way; default true.
    pub fair_fanout: bool,
    /// `telegram.paid_broadcast_per_second` / `STARGAZER_TELEGRAM__PAID_BROADCAST_PER_SECOND`:
    /// overall messages per second with Telegram's paid broadcasts, for the token: the
    /// sends past `global_per_second` carry `allow_paid_broadcast` and cost 0.1 Stars
    /// each, taken from the bot's balance; at most 1000, above `global_per_second`;
    /// default 0: off.
    pub paid_broadcast_per_second: f64,
    /// `telegram.paid_broadcast_daily_budget` / `STARGAZER_TELEGRAM__PAID_BROADCAST_DAILY_BUDGET`:
    /// paid messages per UTC day over all instances (10,000 messages are 1,000 Stars);
    /// once spent, sends keep to the free rate until midnight UTC; required with
    /// `paid_broadcast_per_second`; default 0.
    pub paid_broadcast_daily_budget: u64,
    /// `telegram.max_send_attempts` / `STARGAZER_TELEGRAM__MAX_SEND_ATTEMPTS`: attempts per
    /// message on transient errors (network, 5xx, bad token) and 429s before it is given
    /// back unsent and its event requeued (with a growing pause) for a later try; such a
    /// message is never recorded as failed; default 5.
    pub max_send_attempts: u32,
    /// `telegram.admin_cache_secs` / `STARGAZER_TELEGRAM__ADMIN_CACHE_SECS`: how long a
    /// group-admin check is remembered, seconds; default 300.
    pub admin_cache_secs: u64,
    /// `telegram.poll_timeout_secs` / `STARGAZER_TELEGRAM__POLL_TIMEOUT_SECS`: long-poll
    /// timeout of `getUpdates`, seconds (below the 17 s HTTP timeout); default 10.
    pub poll_timeout_secs: u32,
    /// `telegram.only_entities` / `STARGAZER_TELEGRAM__ONLY_ENTITIES`: deliver events about
    /// these entity ids only and ack every other event unprocessed (a bot serving a subset
    /// of the entities, which must then consume a `queue` of its own); default empty: all.
    pub only_entities: Vec<uuid::Uuid>,
    /// `telegram.search_limit` / `STARGAZER_TELEGRAM__SEARCH_LIMIT`: most entities offered
    /// as buttons for one `/subscribe` search; default 8.
    pub search_limit: usize,
    /// `telegram.claim_lease_seconds` / `STARGAZER_TELEGRAM__CLAIM_LEASE_SECONDS`: how long
    /// a claim on a delivery keeps other bot instances off, seconds; renewed every third of
    /// it while the instance lives, so another instance resends a dead instance's unsent
    /// messages after at most this long; default 60, at least 3.
    pub claim_lease_seconds: u64,
    /// `telegram.poll_lease_seconds` / `STARGAZER_TELEGRAM__POLL_LEASE_SECONDS`: term of the
    /// lease that lets one bot instance at a time long-poll `getUpdates` (Telegram ends
    /// the older of two overlapping polls with 409 Conflict), seconds; renewed every third
    /// of it, so commands go unanswered for at most about this long after the polling
    /// instance dies; default 15, at least 3.
    pub poll_lease_seconds: u64,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            token: String::new(),
            api_url: "https://api.telegram.org".to_owned(),
            stargazer_api_url: "http://127.0.0.1:8080".to_owned(),
            stargazer_api_username: "bot-telegram".to_owned(),
            stargazer_api_password: String::new(),
            frontend_url: "http://localhost:3000".to_owned(),
            queue: stargazer_core::routing::bot_queue(crate::IM),
            prefetch: 8,
            global_per_second: 29.0,
            chat_interval_ms: 1000,
            group_per_minute: 20,
            max_in_flight: 32,
            fair_fanout: true,
            paid_broadcast_per_second: 0.0,
            paid_broadcast_daily_budget: 0,
            max_send_attempts: 5,
            admin_cache_secs: 300,
            poll_timeout_secs: 10,
            search_limit: 8,
            only_entities: Vec::new(),
            claim_lease_seconds: 60,
            poll_lease_seconds: 15,
        }
    }
}

impl BotConfig {
    /// Checks what serde cannot: required values, URL shapes and positive limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token.trim().is_empty() {
            return Err(ConfigError::invalid(
                "telegram.token",
                "missing: set STARGAZER_TELEGRAM_TOKEN to the bot token",
            ));
        }
        self.check()
    }
}

impl Section for BotConfig {
    const NAME: &'static str = "telegram";

    fn check(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("telegram.api_url", &self.api_url),
            ("telegram.stargazer_api_url", &self.stargazer_api_url),
            ("telegram.frontend_url", &self.frontend_url),
        ] {
            check_http_url(key, url)?;
        }
        if !(self.global_per_second.is_finite() && self.global_per_second > 0.0) {
            return Err(ConfigError::invalid(
                "telegram.global_per_second",
                "must be a positive number",
            ));
        }
        if self.paid_broadcast_per_second != 0.0 {
            let rate = self.paid_broadcast_per_second;
            if !(rate.is_finite() && rate > self.global_per_second && rate <= 1000.0) {
                return Err(ConfigError::invalid(
                    "telegram.paid_broadcast_per_second",
                    "must be 0 (off), or above telegram.global_per_second and at most 1000",
                ));
            }
            if self.paid_broadcast_daily_budget == 0 {
                return Err(ConfigError::invalid(
                    "telegram.paid_broadcast_daily_budget",
                    "must be at least 1 when telegram.paid_broadcast_per_second is set",
                ));
            }
        }
        if self.group_per_minute == 0 {
            return Err(ConfigError::invalid(
                "telegram.group_per_minute",
                "must be at least 1",
            ));
        }
        if self.max_in_flight == 0 || self.prefetch == 0 || self.max_send_attempts == 0 {
            let key = if self.max_in_flight == 0 {
                "telegram.max_in_flight"
            } else if self.prefetch == 0 {
                "telegram.prefetch"
            } else {
                "telegram.max_send_attempts"
            };
            return Err(ConfigError::invalid(key, "must be at least 1"));
        }
        if self.poll_timeout_secs >= 17 {
            return Err(ConfigError::invalid(
                "telegram.poll_timeout_secs",
                "must be below the 17 s HTTP timeout",
            ));
        }
        if self.queue.trim().is_empty() {
            return Err(ConfigError::invalid("telegram.queue", "must not be empty"));
        }
        for (key, seconds) in [
            ("telegram.claim_lease_seconds", self.claim_lease_seconds),
            ("telegram.poll_lease_seconds", self.poll_lease_seconds),
        ] {
            if seconds < 3 {
                return Err(ConfigError::invalid(
                    key,
                    "must be at least 3 (it is renewed every third of it)",
                ));
            }
        }
        Ok(())
    }
}

impl BotConfig {
    /// How long a claim on a delivery keeps other instances off.
    pub fn claim_lease(&self) -> Duration {
        Duration::from_secs(self.claim_lease_seconds)
    }

    /// Term of the lease of the one instance that polls `getUpdates`.
    pub fn poll_lease(&self) -> Duration {
        Duration::from_secs(self.poll_lease_seconds)
    }

    /// Minimum gap between two messages to one private chat.
    pub fn chat_interval(&self) -> Duration {
        Duration::from_millis(self.chat_interval_ms)
    }

    /// Minimum gap between two messages to one group.
    pub fn group_interval(&self) -> Duration {
        Duration::from_secs_f64(60.0 / f64::from(self.group_per_minute.max(1)))
    }

    /// How long a group-admin check is remembered.
    pub fn admin_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.admin_cache_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_a_token() {
        let mut config = BotConfig::default();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("telegram.token"));
        config.token = "123:abc".into();
        config.validate().unwrap();
        assert_eq!(config.queue, "stargazer.bot.telegram");
        assert_eq!(config.group_interval(), Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_their_key() {
        let config = BotConfig {
            token: "t".into(),
            api_url: "api.telegram.org".into(),
            ..Default::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("telegram.api_url"));
        let config = BotConfig {
            token: "t".into(),
            global_per_second: 0.0,
            ..Default::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("global_per_second"));
        for (claim, poll, key) in [
            (2, 15, "telegram.claim_lease_seconds"),
            (60, 2, "telegram.poll_lease_seconds"),
        ] {
            let config = BotConfig {
                token: "t".into(),
                claim_lease_seconds: claim,
                poll_lease_seconds: poll,
                ..Default::default()
            };
            assert!(config.validate().unwrap_err().to_string().contains(key));
        }
    }
}
