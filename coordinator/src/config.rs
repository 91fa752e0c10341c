//! The `[coordinator]` configuration section.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{ConfigError, Section};

/// Settings of the coordinator (`[coordinator]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// `listen` / `STARGAZER_COORDINATOR__LISTEN`: address the binary binds for the worker
    /// WebSocket, `/v1/status`, `/metrics` and `/healthz`; default `127.0.0.1:8090`.
    pub listen: String,
    /// `heartbeat_interval_ms` / `STARGAZER_COORDINATOR__HEARTBEAT_INTERVAL_MS`: how often
    /// the coordinator and each worker send a heartbeat, milliseconds; default 5000.
    pub heartbeat_interval_ms: u64,
    /// `heartbeat_misses` / `STARGAZER_COORDINATOR__HEARTBEAT_MISSES`: a worker silent for
    /// this many intervals is evicted and its tasks move; default 2.
    pub heartbeat_misses: u32,
    /// `virtual_nodes` / `STARGAZER_COORDINATOR__VIRTUAL_NODES`: ring points per worker;
    /// more points spread load more evenly (see the assignment benchmark) at the
    /// cost of memory and ring rebuild time; default 1000.
    pub virtual_nodes: u32,
    /// `snapshot_interval_ms` / `STARGAZER_COORDINATOR__SNAPSHOT_INTERVAL_MS`: how often a
    /// changed assignment is written to storage (and gauges refreshed), milliseconds;
    /// keep it at or below one heartbeat interval; default 5000.
    pub snapshot_interval_ms: u64,
    /// `ack_timeout_ms` / `STARGAZER_COORDINATOR__ACK_TIMEOUT_MS`: a worker that leaves an
    /// assign or unassign unacknowledged this long is evicted, milliseconds; default 60000.
    pub ack_timeout_ms: u64,
    /// `startup_hold_ms` / `STARGAZER_COORDINATOR__STARTUP_HOLD_MS`: after start, nothing is
    /// assigned for this long so that workers reconnecting together all join first,
    /// milliseconds; default: one heartbeat interval.
    pub startup_hold_ms: Option<u64>,
    /// `auth_cache_ttl_secs` / `STARGAZER_COORDINATOR__AUTH_CACHE_TTL_SECS`: how long a
    /// verified worker password is remembered, seconds; default 300.
    pub auth_cache_ttl_secs: u64,
    /// `auth_max_pending` / `STARGAZER_COORDINATOR__AUTH_MAX_PENDING`: logins waiting for
    /// a password check beyond which the next is answered 503 with `Retry-After` at
    /// once (a remembered worker is never held up by them); default 32.
    pub auth_max_pending: usize,
    /// `login_delay_ms` / `STARGAZER_COORDINATOR__LOGIN_DELAY_MS`: after a failed login,
    /// the next check of that username (and of that peer address) waits this long,
    /// doubled per further recent failure; a right password is slowed, never refused;
    /// milliseconds; default 250.
    pub login_delay_ms: u64,
    /// `login_delay_max_ms` / `STARGAZER_COORDINATOR__LOGIN_DELAY_MAX_MS`: the longest
    /// such wait, milliseconds; 0 turns throttling off; default 4000.
    pub login_delay_max_ms: u64,
    /// `instance_id` / `STARGAZER_COORDINATOR__INSTANCE_ID`: this coordinator's name in
    /// the leader election (shown to workers a standby refuses, and in `/v1/status`);
    /// empty means a random id per start; default empty.
    pub instance_id: String,
    /// `advertise_url` / `STARGAZER_COORDINATOR__ADVERTISE_URL`: the `ws://` or `wss://`
    /// URL workers reach this coordinator at; a standby names the leader's to the workers
    /// it refuses, so they go there next; empty means not advertised; default empty.
    pub advertise_url: String,
    /// `lease_term_ms` / `STARGAZER_COORDINATOR__LEASE_TERM_MS`: term of the leader
    /// lease, milliseconds; the leader renews and a standby polls every quarter term, so
    /// a standby leads at most 1.25 terms after the leader's last renewal; default: one
    /// heartbeat interval.
    pub lease_term_ms: Option<u64>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8090".to_owned(),
            heartbeat_interval_ms: 5000,
            heartbeat_misses: 2,
            virtual_nodes: 1000,
            snapshot_interval_ms: 5000,
            ack_timeout_ms: 60_000,
            startup_hold_ms: None,
            auth_cache_ttl_secs: 300,
            auth_max_pending: 32,
            login_delay_ms: 250,
            login_delay_max_ms: 4000,
            instance_id: String::new(),
            advertise_url: String::new(),
            lease_term_ms: None,
        }
    }
}

impl Section for CoordinatorConfig {
    const NAME: &'static str = "coordinator";

    fn check(&self) -> Result<(), ConfigError> {
        self.validate()
    }
}

impl CoordinatorConfig {
    /// Checks what serde cannot: a parsable listen address and non-zero timings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<SocketAddr>().map_err(|err| {
            ConfigError::invalid("coordinator.listen", format!("`{}`: {err}", self.listen))
        })?;
        let positive = [
            (
                "coordinator.heartbeat_interval_ms",
                self.heartbeat_interval_ms,
            ),
            (
                "coordinator.heartbeat_misses",
                u64::from(self.heartbeat_misses),
            ),
            ("coordinator.virtual_nodes", u64::from(self.virtual_nodes)),
            (
                "coordinator.snapshot_interval_ms",
                self.snapshot_interval_ms,
            ),
            ("coordinator.ack_timeout_ms", self.ack_timeout_ms),
            ("coordinator.auth_max_pending", self.auth_max_pending as u64),
            ("coordinator.lease_term_ms", self.lease_term_ms.unwrap_or(1)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        if !self.advertise_url.is_empty() {
            match url::Url::parse(&self.advertise_url) {
                Ok(url) if matches!(url.scheme(), "ws" | "wss") && url.has_host() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "coordinator.advertise_url",
                        format!("`{}` is not a ws:// or wss:// URL", self.advertise_url),
                    ))
                }
            }
        }
        if self.instance_id.len() > 200 {
            return Err(ConfigError::invalid(
                "coordinator.instance_id",
                "must be at most 200 bytes",
            ));
        }
        Ok(())
    }

    /// The term of the leader lease.
    pub fn lease_term(&self) -> Duration {
        self.lease_term_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| self.heartbeat_interval())
            .max(Duration::from_millis(4))
    }

    /// How often the leader renews its lease and a standby asks for it: a quarter term,
    /// so three renewals in a row may fail before the term runs out.
    pub fn lease_poll(&self) -> Duration {
        self.lease_term() / 4
    }

    /// The login throttle's settings.
    pub fn login_throttle(&self) -> stargazer_core::throttle::ThrottleSettings {
        stargazer_core::throttle::ThrottleSettings {
            base: Duration::from_millis(self.login_delay_ms),
            max: Duration::from_millis(self.login_delay_max_ms),
            ..Default::default()
        }
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    /// How long a worker may stay silent before eviction.
    pub fn eviction_timeout(&self) -> Duration {
        self.heartbeat_interval() * self.heartbeat_misses.max(1)
    }

    /// The start-up hold.
    pub fn startup_hold(&self) -> Duration {
        self.startup_hold_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| self.heartbeat_interval())
    }
}

#[cfg(test)]
mod tests {
    use stargazer_core::config::ConfigSource;

    use super::*;

    #[test]
    fn defaults_env_overrides_and_validation() {
        let source = ConfigSource::load_with_env(
            None,
            vec![
                (
                    "STARGAZER_COORDINATOR__HEARTBEAT_INTERVAL_MS".to_owned(),
                    "200".to_owned(),
                ),
                (
                    "STARGAZER_COORDINATOR__STARTUP_HOLD_MS".to_owned(),
                    "0".to_owned(),
                ),
            ],
        )
        .unwrap();
        let config: CoordinatorConfig = source.section("coordinator").unwrap();
        assert_eq!(config.heartbeat_interval(), Duration::from_millis(200));
        assert_eq!(config.eviction_timeout(), Duration::from_millis(400));
        assert_eq!(config.startup_hold(), Duration::ZERO);
        assert_eq!(config.listen, "127.0.0.1:8090");
        config.validate().unwrap();

        let bad = CoordinatorConfig {
            heartbeat_misses: 0,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("coordinator.heartbeat_misses"));
        let bad = CoordinatorConfig {
            listen: "nowhere".into(),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("coordinator.listen"));
        let bad = CoordinatorConfig {
            advertise_url: "http://c:8090".into(),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("coordinator.advertise_url"));
        let good = CoordinatorConfig {
            advertise_url: "ws://c:8090/v1/worker".into(),
            lease_term_ms: Some(2000),
            ..Default::default()
        };
        good.validate().unwrap();
        assert_eq!(good.lease_poll(), Duration::from_millis(500));
        assert_eq!(config.lease_term(), config.heartbeat_interval());
    }
}
