//! The `[api]` configuration section.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use stargazer_core::config::{check_http_url, ConfigError, Section};

use crate::error::Error;

/// Settings of the api service, read from the `[api]` section of the config file.
///
/// Every key can be overridden from the environment as `STARGAZER_API__<KEY>`
/// (upper-case key), e.g. `STARGAZER_API__LISTEN=0.0.0.0:8080`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// `listen` / `STARGAZER_API__LISTEN`: address to bind; default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `public_url` / `STARGAZER_API__PUBLIC_URL`: the URL clients reach the api at,
    /// advertised in `/openapi.json`; default none (relative).
    pub public_url: Option<String>,
    /// `frontend_url` / `STARGAZER_API__FRONTEND_URL`: where the frontend is served; its
    /// origin is allowed by CORS when `cors_origins` is empty; default none.
    pub frontend_url: Option<String>,
    /// `frontend_dir` / `STARGAZER_API__FRONTEND_DIR`: a directory of static frontend
    /// files served at `/` when it exists; default none.
    pub frontend_dir: Option<PathBuf>,
    /// `cors_origins` / `STARGAZER_API__CORS_ORIGINS`: origins (`https://host[:port]`)
    /// allowed to call the api from a browser, a list or one comma-separated string;
    /// default none.
    #[serde(deserialize_with = "string_or_list")]
    pub cors_origins: Vec<String>,
    /// `session_ttl_secs` / `STARGAZER_API__SESSION_TTL_SECS`: lifetime of an end-user
    /// session since its last use, seconds; default 600.
    pub session_ttl_secs: u64,
    /// `session_max_secs` / `STARGAZER_API__SESSION_MAX_SECS`: absolute lifetime of a
    /// session however often it is used (the sliding cap), seconds; default 3600.
    pub session_max_secs: u64,
    /// `body_limit_bytes` / `STARGAZER_API__BODY_LIMIT_BYTES`: largest request body
    /// accepted, bytes; larger bodies get 413; default 65536.
    pub body_limit_bytes: usize,
    /// `pbkdf2_iterations` / `STARGAZER_API__PBKDF2_ITERATIONS`: PBKDF2 rounds for new
    /// password hashes (verification uses the rounds stored in each hash); default 600000.
    pub pbkdf2_iterations: u32,
    /// `credential_cache_secs` / `STARGAZER_API__CREDENTIAL_CACHE_SECS`: how long a
    /// verified service password (and a credential's permissions) is remembered, seconds;
    /// also how long a removed credential may still be accepted; default 60.
    pub credential_cache_secs: u64,
    /// `login_delay_ms` / `STARGAZER_API__LOGIN_DELAY_MS`: after a failed service login,
    /// the next password check of that username (and of that client address) waits this
    /// long, doubled per further recent failure; nobody is ever refused for someone
    /// else's failures, only slowed; milliseconds; default 250.
    pub login_delay_ms: u64,
    /// `login_delay_max_ms` / `STARGAZER_API__LOGIN_DELAY_MAX_MS`: the longest such wait,
    /// milliseconds; 0 turns login throttling off; default 4000.
    pub login_delay_max_ms: u64,
    /// `login_forget_secs` / `STARGAZER_API__LOGIN_FORGET_SECS`: how long after its last
    /// failure a username's or address's failures are forgotten, seconds; default 600.
    pub login_forget_secs: u64,
    /// `pbkdf2_concurrency` / `STARGAZER_API__PBKDF2_CONCURRENCY`: password checks run at
    /// once (each takes a core for a fraction of a second); default 2.
    pub pbkdf2_concurrency: usize,
    /// `pbkdf2_wait_ms` / `STARGAZER_API__PBKDF2_WAIT_MS`: longest a login waits for a
    /// free password check before it is answered 429 with `Retry-After`, milliseconds;
    /// default 2000.
    pub pbkdf2_wait_ms: u64,
    /// `read_cache_ms` / `STARGAZER_API__READ_CACHE_MS`: how long the entity list, single
    /// entities, subscriber lookups and the schedule (of the calendar feeds and
    /// `getUpcoming`) are served from memory, milliseconds; writes
    /// through this process clear it at once, writes elsewhere show after at most this
    /// long; 0 disables; default 2000.
    pub read_cache_ms: u64,
    /// `read_cache_capacity` / `STARGAZER_API__READ_CACHE_CAPACITY`: most keys each read
    /// cache (single entities, subscriber lookups) holds, least recently used evicted
    /// first; failed lookups take no room; default 4096.
    pub read_cache_capacity: usize,
    /// `storage_timeout_ms` / `STARGAZER_API__STORAGE_TIMEOUT_MS`: longest a database
    /// call may take before the request is answered 503 with `Retry-After`,
    /// milliseconds; default 5000.
    pub storage_timeout_ms: u64,
    /// `trust_forwarded_for` / `STARGAZER_API__TRUST_FORWARDED_FOR`: the api runs behind
    /// a reverse proxy that appends the address it saw to `X-Forwarded-For`; the client
    /// is then the rightmost hop that is not one of `forwarded_proxies` (hops further
    /// left were written by the client and are not believed); default false.
    pub trust_forwarded_for: bool,
    /// `forwarded_proxies` / `STARGAZER_API__FORWARDED_PROXIES`: addresses of further
    /// proxies in front of that one (a CDN, a load balancer), skipped from the right of
    /// `X-Forwarded-For`, a list or one comma-separated string; default none.
    #[serde(deserialize_with = "ip_list")]
    pub forwarded_proxies: Vec<IpAddr>,
    /// `mq_prefix` / `STARGAZER_API__MQ_PREFIX`: the exchange name; queues and auxiliary
    /// exchanges credentials may use are `<prefix>.*`; default `stargazer`.
    pub mq_prefix: String,
    /// `mq_vhosts` / `STARGAZER_API__MQ_VHOSTS`: RabbitMQ virtual hosts credentials may
    /// open, a list or one comma-separated string; default `["/"]`.
    #[serde(deserialize_with = "string_or_list")]
    pub mq_vhosts: Vec<String>,
    /// `internal_listen` / `STARGAZER_API__INTERNAL_LISTEN`: address of the internal
    /// listener, the only one serving the RabbitMQ auth backend (`/auth/*`); keep it
    /// reachable by the broker only; default none (no auth backend served).
    pub internal_listen: Option<SocketAddr>,
    /// `metrics_on_internal` / `STARGAZER_API__METRICS_ON_INTERNAL`: serve `/metrics` on
    /// the internal listener instead of the public one (needs `internal_listen`);
    /// default false.
    pub metrics_on_internal: bool,
    /// `auth_secret` / `STARGAZER_API__AUTH_SECRET`: when set, the RabbitMQ auth
    /// endpoints answer only requests carrying HTTP Basic with this password (RabbitMQ
    /// sends it from the URLs it is configured with,
    /// `http://rabbit:SECRET@api:8089/auth/user`), 401 otherwise; at least 16
    /// characters, URL-safe; default none.
    pub auth_secret: Option<String>,
}

/// Shortest `auth_secret` accepted.
const MIN_AUTH_SECRET_LEN: usize = 16;

/// Accepts `["a", "b"]` (TOML) or `"a,b"` (an environment variable) of IP addresses.
fn ip_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpAddr>, D::Error> {
    string_or_list(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<IpAddr>()
                .map_err(|_| serde::de::Error::custom(format!("`{text}` is not an IP address")))
        })
        .collect()
}

/// Accepts `["a", "b"]` (TOML) or `"a,b"` (an environment variable).
fn string_or_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(list) => list,
    })
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            frontend_url: None,
            frontend_dir: None,
            cors_origins: Vec::new(),
            session_ttl_secs: 600,
            session_max_secs: 3600,
            body_limit_bytes: 64 * 1024,
            pbkdf2_iterations: stargazer_core::auth::DEFAULT_ITERATIONS,
            credential_cache_secs: 60,
            login_delay_ms: 250,
            login_delay_max_ms: 4000,
            login_forget_secs: 600,
            pbkdf2_concurrency: 2,
            pbkdf2_wait_ms: 2000,
            read_cache_ms: 2000,
            read_cache_capacity: 4096,
            storage_timeout_ms: 5000,
            trust_forwarded_for: false,
            forwarded_proxies: Vec::new(),
            mq_prefix: "stargazer".to_owned(),
            mq_vhosts: vec!["/".to_owned()],
            internal_listen: None,
            metrics_on_internal: false,
            auth_secret: None,
        }
    }
}

impl ApiConfig {
    /// Checks values serde cannot ([`Section::check`]) as the api's error.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(|err| Error::Config(err.to_string()))
    }
}

impl Section for ApiConfig {
    const NAME: &'static str = "api";

    fn check(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, reason: String| Err(ConfigError::invalid(format!("api.{key}"), reason));
        if let Some(url) = &self.public_url {
            check_http_url("api.public_url", url)?;
        }
        if self.session_ttl_secs == 0 {
            return invalid("session_ttl_secs", "must be at least 1".into());
        }
        const YEAR: u64 = 365 * 24 * 3600;
        if self.session_max_secs > YEAR {
            return invalid(
                "session_max_secs",
                format!("must be at most {YEAR} (a year)"),
            );
        }
        if self.session_max_secs < self.session_ttl_secs {
            return invalid(
                "session_max_secs",
                format!(
                    "must be at least session_ttl_secs ({})",
                    self.session_ttl_secs
                ),
            );
        }
        if self.body_limit_bytes < 1024 {
            return invalid("body_limit_bytes", "must be at least 1024".into());
        }
        if self.pbkdf2_iterations < 1000 {
            return invalid("pbkdf2_iterations", "must be at least 1000".into());
        }
        const DAY: u64 = 24 * 3600;
        if self.credential_cache_secs > DAY {
            return invalid(
                "credential_cache_secs",
                format!("must be at most {DAY} (a day)"),
            );
        }
        if self.login_forget_secs > DAY {
            return invalid(
                "login_forget_secs",
                format!("must be at most {DAY} (a day)"),
            );
        }
        if self.login_delay_max_ms > 60_000 {
            return invalid(
                "login_delay_max_ms",
                "must be at most 60000 (a minute)".into(),
            );
        }
        if self.login_delay_max_ms > 0 && self.login_delay_ms > self.login_delay_max_ms {
            return invalid(
                "login_delay_ms",
                format!(
                    "must be at most login_delay_max_ms ({})",
                    self.login_delay_max_ms
                ),
            );
        }
        if self.pbkdf2_concurrency == 0 || self.pbkdf2_concurrency > 256 {
            return invalid("pbkdf2_concurrency", "must be between 1 and 256".into());
        }
        if self.pbkdf2_wait_ms > 60_000 {
            return invalid("pbkdf2_wait_ms", "must be at most 60000 (a minute)".into());
        }
        if self.read_cache_ms > 3_600_000 {
            return invalid("read_cache_ms", "must be at most 3600000 (an hour)".into());
        }
        if self.read_cache_capacity == 0 || self.read_cache_capacity > 1_000_000 {
            return invalid(
                "read_cache_capacity",
                "must be between 1 and 1000000".into(),
            );
        }
        if self.storage_timeout_ms == 0 || self.storage_timeout_ms > 600_000 {
            return invalid(
                "storage_timeout_ms",
                "must be between 1 and 600000 (ten minutes)".into(),
            );
        }
        if self.mq_prefix.is_empty() || self.mq_prefix.contains(['*', '#', ' ']) {
            return invalid(
                "mq_prefix",
                format!("`{}` is not a plain exchange name", self.mq_prefix),
            );
        }
        if self.metrics_on_internal && self.internal_listen.is_none() {
            return invalid(
                "metrics_on_internal",
                "needs `api.internal_listen` to be set".into(),
            );
        }
        if let Some(secret) = &self.auth_secret {
            if secret.chars().count() < MIN_AUTH_SECRET_LEN {
                return invalid(
                    "auth_secret",
                    format!("must be at least {MIN_AUTH_SECRET_LEN} characters"),
                );
            }
            // RabbitMQ sends it from the userinfo of a URL: keep to characters that
            // need no escaping there.
            if !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            {
                return invalid(
                    "auth_secret",
                    "may hold only letters, digits and `-._~`".into(),
                );
            }
        }
        for origin in self.cors_origins.iter().chain(self.frontend_url.iter()) {
            if crate::http::origin_of(origin).is_none() {
                return invalid("cors_origins", format!("`{origin}` is not an http(s) URL"));
            }
        }
        Ok(())
    }
}

impl ApiConfig {
    pub(crate) fn storage_timeout(&self) -> Duration {
        Duration::from_millis(self.storage_timeout_ms)
    }

    /// The login throttle's settings.
    pub(crate) fn login_throttle(&self) -> stargazer_core::throttle::ThrottleSettings {
        stargazer_core::throttle::ThrottleSettings {
            base: Duration::from_millis(self.login_delay_ms),
            max: Duration::from_millis(self.login_delay_max_ms),
            forget: Duration::from_secs(self.login_forget_secs),
            ..Default::default()
        }
    }

    pub(crate) fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    pub(crate) fn session_max(&self) -> Duration {
        Duration::from_secs(self.session_max_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stargazer_core::config::ConfigSource;

    #[test]
    fn reads_the_section_from_file_and_environment() {
        let dir = std::env::temp_dir().join(format!("sg-api-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stargazer.toml");
        std::fs::write(
            &path,
            "[api]\nsession_ttl_secs = 900\nmq_vhosts = [\"/\", \"prod\"]\n",
        )
        .unwrap();
        let env = [
            (
                "STARGAZER_API__LISTEN".to_owned(),
                "0.0.0.0:9000".to_owned(),
            ),
            (
                "STARGAZER_API__CORS_ORIGINS".to_owned(),
                "https://a.example, https://b.example".to_owned(),
            ),
        ];
        let source = ConfigSource::load_with_env(Some(&path), env).unwrap();
        let config: ApiConfig = source.section("api").unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.session_ttl_secs, 900);
        assert_eq!(config.session_max_secs, 3600);
        assert_eq!(
            config.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(config.mq_vhosts, vec!["/", "prod"]);
        config.validate().unwrap();
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn invalid_values_name_the_key() {
        let config = ApiConfig {
            session_max_secs: 10,
            ..ApiConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("api.session_max_secs"), "{err}");
        let config = ApiConfig {
            cors_origins: vec!["sg.example".into()],
            ..ApiConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api.cors_origins"));
        for (secret, ok) in [
            ("short", false),
            ("0123456789abcdef", true),
            ("0123456789abcde@", false),
            ("0123456789abcdef:x", false),
        ] {
            let config = ApiConfig {
                auth_secret: Some(secret.into()),
                ..ApiConfig::default()
            };
            assert_eq!(config.validate().is_ok(), ok, "{secret}");
        }
        let config = ApiConfig {
            metrics_on_internal: true,
            ..ApiConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api.metrics_on_internal"));
    }
}
