//! Configuration loading: one TOML file plus `STARGAZER_…` environment overrides.
//!
//! Every service crate owns a config struct for its own section (`[api]`, `[coordinator]`,
//! …) with serde defaults; this module owns the loader and the settings shared by all
//! ([`CommonConfig`]: backends and logging). Environment variables map onto keys by
//! dropping the prefix, lowercasing and splitting sections on `__`:
//! `STARGAZER_API__LISTEN` sets `[api] listen`, `STARGAZER_AMQP_URL` sets `amqp_url`.
//! A few well-known secrets have short aliases, listed in [`ENV_ALIASES`].
//!
//! A bad value yields a [`ConfigError`] whose one-line message names the key and the
//! problem; the binary prints it and exits with code 2.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::topology::QueueType;

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "STARGAZER_";

/// Short environment names for nested keys: `(variable without prefix, key path)`.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("TELEGRAM_TOKEN", "telegram.token"),
    ("DEEPL_KEY", "translate.deepl_key"),
    ("YOUTUBE_API_KEY", "youtube.api_key"),
    ("TWITTER_BEARER_TOKEN", "twitter.bearer_token"),
    ("TWITCH_CLIENT_SECRET", "twitch.client_secret"),
    ("TWITCH_EVENTSUB_SECRET", "twitch.eventsub_secret"),
];

/// A configuration problem, phrased as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named on the command line could not be read.
    #[error("config file {path}: {reason}")]
    File {
        /// The path given.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// A key has a value of the wrong type or an unparsable value.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `api.listen`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// An invalid-value error for `key`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// One section of the configuration file (`[api]`, `[youtube]`, …), owned by the crate of
/// the service that reads it.
///
/// The platform's settings loader reads every section and calls [`Section::check`] on it
/// before anything connects, so a bad value exits 2 whatever role the process plays.
/// Sections refuse unknown keys (`#[serde(deny_unknown_fields)]`) in the same step: a
/// misspelt key is an error, not a silently ignored line.
pub trait Section: DeserializeOwned + Default {
    /// `[NAME]` in the file; `STARGAZER_NAME__KEY` in the environment.
    const NAME: &'static str;

    /// Checks what serde cannot (ranges, URLs, names), apart from the credential of an
    /// external account: standalone runs without one and reports the service disabled.
    fn check(&self) -> Result<(), ConfigError>;
}

/// Checks that `value` (config key `key`) is an absolute `http://` or `https://` URL.
pub fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            key,
            format!("`{}` is not an http:// or https:// URL", redact_url(value)),
        )),
        Err(err) => Err(ConfigError::invalid(
            key,
            format!("`{}` is not an absolute URL: {err}", redact_url(value)),
        )),
    }
}

/// The merged sources (defaults < file < environment) every section is read from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    figment: Figment,
}

impl ConfigSource {
    /// Reads `file` (if given; it must exist) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`ConfigSource::load`] with an explicit environment, for tests.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
                path: path.to_owned(),
                reason: err.to_string(),
            })?;
            // Parse eagerly so a syntax error is reported with the file, not later per key.
            toml::from_str::<toml::Value>(&text).map_err(|err| ConfigError::File {
                path: path.to_owned(),
                reason: one_line(&err.to_string()),
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        let mut overrides = serde_json::Map::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path = ENV_ALIASES
                .iter()
                .find(|(alias, _)| *alias == rest)
                .map(|(_, path)| path.to_string())
                .unwrap_or_else(|| rest.to_ascii_lowercase().replace("__", "."));
            insert_path(&mut overrides, &path, parse_env_value(&value));
        }
        figment = figment.merge(Serialized::defaults(serde_json::Value::Object(overrides)));
        Ok(Self { figment })
    }

    /// Extracts a section (`""` for top-level keys) into `T`, using `T`'s serde defaults
    /// for absent keys.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        // Lossy: a number or boolean setting also reads a string (every environment
        // value is one), while a text setting keeps digits as text.
        let result = if name.is_empty() {
            self.figment.extract_lossy::<T>()
        } else if self.figment.find_value(name).is_err() {
            // An absent section means "all defaults".
            Figment::new().extract::<T>()
        } else {
            self.figment.extract_inner_lossy::<T>(name)
        };
        result.map_err(|err| figment_error(name, err))
    }

    /// Reads section `S` (absent means all defaults) and checks it with [`Section::check`].
    pub fn read<S: Section>(&self) -> Result<S, ConfigError> {
        let section: S = self.section(S::NAME)?;
        section.check()?;
        Ok(section)
    }

    /// Fails on the first top-level key that is not in `known`, so a misspelt section or
    /// key is reported instead of silently ignored.
    pub fn reject_unknown_top_level(&self, known: &[&str]) -> Result<(), ConfigError> {
        let Ok(dict) = self.figment.extract::<figment::value::Dict>() else {
            return Ok(());
        };
        match dict.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(ConfigError::invalid(
                key.clone(),
                format!("unknown key (known: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }
}

fn figment_error(section: &str, err: figment::Error) -> ConfigError {
    let err = err
        .into_iter()
        .next()
        .expect("figment errors are never empty");
    // `extract_inner` appends the section name after the field path; put it first.
    let mut path = err.path.clone();
    if path.last().map(String::as_str) == Some(section) {
        path.pop();
    }
    if !section.is_empty() {
        path.insert(0, section.to_owned());
    }
    let key = path.join(".");
    let reason = one_line(&err.kind.to_string());
    ConfigError::Invalid { key, reason }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Environment values stay strings, so that an all-digit secret or id
/// (`STARGAZER_DISCORD__APPLICATION_ID=1190000000000000042`) fills a text setting; a
/// number or boolean setting reads its string when extracted ([`ConfigSource::section`]
/// extracts lossily), so `STARGAZER_API__PORT=8080` still fills a `u16`. A value in
/// brackets is read as a JSON array so lists can be set
/// (`STARGAZER_API__CORS_ORIGINS='["https://a"]'`).
fn parse_env_value(value: &str) -> serde_json::Value {
    if value.trim_start().starts_with('[') {
        if let Ok(list @ serde_json::Value::Array(_)) = serde_json::from_str(value) {
            return list;
        }
    }
    serde_json::Value::String(value.to_owned())
}

fn insert_path(
    map: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    value: serde_json::Value,
) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = map
                .entry(head.to_owned())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(Default::default());
            }
            if let serde_json::Value::Object(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings shared by every service (top-level keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommonConfig {
    /// `amqp_url` / `STARGAZER_AMQP_URL`: RabbitMQ URL, or a comma-separated list of
    /// URLs (one per node of a cluster, tried in turn on connect and reconnect); unset
    /// means the in-process bus. Frames are 16 KiB unless the URL sets `?frame_max=`.
    pub amqp_url: Option<String>,
    /// `amqp_queue_type` / `STARGAZER_AMQP_QUEUE_TYPE`: `classic` (default, one broker
    /// node) or `quorum` (replicated over a cluster; deliveries are counted by the broker)
    /// for every queue the services and `stargazer admin broker setup` declare.
    pub amqp_queue_type: QueueType,
    /// `mongo_url` / `STARGAZER_MONGO_URL`: MongoDB URL; unset means SQLite at `sqlite_path`.
    pub mongo_url: Option<String>,
    /// `sqlite_path` / `STARGAZER_SQLITE_PATH`: SQLite file (`:memory:` for none);
    /// default `stargazer.db`.
    pub sqlite_path: String,
    /// `log_format` / `STARGAZER_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `log_level` / `STARGAZER_LOG_LEVEL`: a `tracing` filter; default `info`.
    pub log_level: String,
    /// `metrics_listen` / `STARGAZER_METRICS_LISTEN`: address where roles without an HTTP
    /// server of their own (worker-twitter, the middlewares, bot-telegram) serve `/healthz`,
    /// `/readyz` and `/metrics`; unset: none.
    pub metrics_listen: Option<String>,
    /// `unroutable_retries` / `STARGAZER_UNROUTABLE_RETRIES`: times a publish the broker
    /// could not route (no queue bound for its key) is retried, 200 ms apart and
    /// doubling, before it is dead-lettered to `stargazer.dead`; default 6.
    pub unroutable_retries: u32,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            amqp_url: None,
            amqp_queue_type: QueueType::Classic,
            mongo_url: None,
            sqlite_path: "stargazer.db".to_owned(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            metrics_listen: None,
            unroutable_retries: 6,
        }
    }
}

impl CommonConfig {
    /// The storage URL these settings select.
    pub fn storage_url(&self) -> String {
        match &self.mongo_url {
            Some(url) => url.clone(),
            None if self.sqlite_path == ":memory:" => "sqlite::memory:".to_owned(),
            None => format!("sqlite://{}", self.sqlite_path),
        }
    }

    /// The bus URL these settings select.
    pub fn bus_url(&self) -> String {
        self.amqp_url
            .clone()
            .unwrap_or_else(|| "memory://".to_owned())
    }

    /// Checks values serde cannot: that both URLs parse, with the right scheme. A URL
    /// that cannot be right is a configuration error at once, never retried; messages show
    /// it with its password masked ([`redact_url`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(list) = &self.amqp_url {
            check_amqp_urls("amqp_url", list)?;
        }
        if let Some(url) = &self.mongo_url {
            if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
                return Err(ConfigError::invalid(
                    "mongo_url",
                    format!("`{}` is not a mongodb:// URL", redact_url(url)),
                ));
            }
            if let Err(err) = mongodb::options::ConnectionString::parse(url) {
                return Err(ConfigError::invalid(
                    "mongo_url",
                    format!(
                        "`{}` is not a valid MongoDB URL: {}",
                        redact_url(url),
                        scrub(&err.to_string(), url)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The URLs of a comma-separated list (`amqp_url` may name every node of a cluster),
/// trimmed, empty entries skipped. A comma inside a password must be written `%2C`.
pub fn split_url_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// `list`, a comma-separated list of URLs, with each URL's password masked
/// ([`redact_url`] of each).
pub fn redact_url_list(list: &str) -> String {
    split_url_list(list)
        .into_iter()
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks that `list` (config key `key`) holds at least one URL and that each is a valid
/// `amqp://` or `amqps://` URL; messages show the URLs with their passwords masked.
pub fn check_amqp_urls(key: &str, list: &str) -> Result<(), ConfigError> {
    let urls = split_url_list(list);
    if urls.is_empty() {
        return Err(ConfigError::invalid(key, "no URL given"));
    }
    for url in urls {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError::invalid(
                key,
                format!("`{}` is not an amqp:// or amqps:// URL", redact_url(url)),
            ));
        }
        if let Err(err) = url.parse::<lapin::uri::AMQPUri>() {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "`{}` is not a valid AMQP URL: {}",
                    redact_url(url),
                    scrub(&err, url)
                ),
            ));
        }
    }
    Ok(())
}

/// Where the user info of `url` sits: the bytes between the scheme's `://` (the start,
/// when a mistyped URL has none) and the last `@`. The last `@`, because an unencoded `@`
/// in a password is a common mistake and must not leave the rest of the password visible.
fn userinfo_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://").map_or(0, |at| at + 3);
    let end = start + url[start..].rfind('@')?;
    Some((start, end))
}

/// The password in `url`'s user info, if it has one.
fn password_of(url: &str) -> Option<&str> {
    let (start, end) = userinfo_span(url)?;
    url[start..end]
        .split_once(':')
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty())
}

/// `url` with the password of its user info replaced by `***`: how backend URLs appear in
/// errors, logs and startup lines. Works on malformed URLs too (they are the ones that end
/// up in error messages).
pub fn redact_url(url: &str) -> String {
    let Some((start, end)) = userinfo_span(url) else {
        return url.to_owned();
    };
    match url[start..end].split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..start], &url[end..]),
        None => url.to_owned(),
    }
}

/// `message` (a parser's complaint about `url`) with `url`'s password masked, should the
/// parser have quoted it.
fn scrub(message: &str, url: &str) -> String {
    match password_of(url) {
        Some(password) => message.replace(password, "***"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default)]
    struct Section {
        port: u16,
        name: String,
    }

    impl Default for Section {
        fn default() -> Self {
            Self {
                port: 1,
                name: "d".into(),
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_nested_and_top_level_keys() {
        let source = ConfigSource::load_with_env(
            None,
            env(&[
                ("STARGAZER_SVC__PORT", "8080"),
                ("STARGAZER_AMQP_URL", "amqp://x"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        let section: Section = source.section("svc").unwrap();
        assert_eq!(
            section,
            Section {
                port: 8080,
                name: "d".into()
            }
        );
        let common: CommonConfig = source.section("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(common.amqp_url.as_deref(), Some("amqp://x"));
        assert_eq!(common.storage_url(), "sqlite://stargazer.db");
    }

    /// An all-digit value fills a text setting as text, and numbers and booleans still
    /// read theirs.
    #[test]
    fn env_digits_fill_text_settings() {
        #[derive(Debug, Deserialize)]
        struct Mixed {
            id: String,
            secret: Option<String>,
            rate: f64,
            on: bool,
            port: u16,
        }
        let source = ConfigSource::load_with_env(
            None,
            env(&[
                ("STARGAZER_M__ID", "1190000000000000042"),
                ("STARGAZER_M__SECRET", "123456"),
                ("STARGAZER_M__RATE", "50"),
                ("STARGAZER_M__ON", "true"),
                ("STARGAZER_M__PORT", "8080"),
            ]),
        )
        .unwrap();
        let mixed: Mixed = source.section("m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mixed.id, "1190000000000000042");
        assert_eq!(mixed.secret.as_deref(), Some("123456"));
        assert_eq!((mixed.rate, mixed.on, mixed.port), (50.0, true, 8080));
        let bad = ConfigSource::load_with_env(None, env(&[("STARGAZER_M__PORT", "eighty")]))
            .unwrap()
            .section::<Section>("m");
        assert!(bad.is_err());
    }

    #[test]
    fn env_lists_are_json_arrays() {
        #[derive(Debug, Deserialize)]
        struct Lists {
            origins: Vec<String>,
        }
        let source = ConfigSource::load_with_env(
            None,
            env(&[("STARGAZER_L__ORIGINS", r#"["https://a", "https://b"]"#)]),
        )
        .unwrap();
        let lists: Lists = source.section("l").unwrap();
        assert_eq!(lists.origins, ["https://a", "https://b"]);
    }

    #[test]
    fn absent_section_uses_defaults() {
        let source = ConfigSource::load_with_env(None, env(&[])).unwrap();
        let section: Section = source.section("nothing").unwrap();
        assert_eq!(section, Section::default());
    }

    #[test]
    fn bad_value_names_the_key() {
        let source =
            ConfigSource::load_with_env(None, env(&[("STARGAZER_SVC__PORT", "lots")])).unwrap();
        let err = source.section::<Section>("svc").unwrap_err().to_string();
        assert!(err.starts_with("config key `svc.port`"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_file_is_reported_with_its_path() {
        let dir = std::env::temp_dir().join(format!("sg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "svc = [").unwrap();
        let err = ConfigSource::load_with_env(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(!err.contains('\n'));
        let missing =
            ConfigSource::load_with_env(Some(&dir.join("nope.toml")), env(&[])).unwrap_err();
        assert!(matches!(missing, ConfigError::File { .. }));
    }

    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            redact_url("amqp://u:secret@host:5672/%2f"),
            "amqp://u:***@host:5672/%2f"
        );
        assert_eq!(
            redact_url("mongodb://u:p@ss@host/db"),
            "mongodb://u:***@host/db"
        );
        // Without `://` everything before the first `:` is kept, the rest is masked.
        assert_eq!(redact_url("amqp:u:secret@host"), "amqp:***@host");
        assert_eq!(redact_url("amqps//u:secret@host"), "amqps//u:***@host");
        assert_eq!(redact_url("mongodb://host/db"), "mongodb://host/db");
        assert_eq!(redact_url("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact_url("sqlite://stargazer.db"), "sqlite://stargazer.db");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn malformed_urls_are_rejected_without_their_password() {
        for (amqp, mongo) in [
            (Some("http://u:hunter2@x"), None),
            (Some("amqp://u:hunter2@host:notaport/%2f"), None),
            (Some("amqp://u:p@a:5672/%2f,amqp://u:hunter2@b:x/%2f"), None),
            (Some("amqp://u:p@a:5672/%2f, http://u:hunter2@b"), None),
            (Some(" , "), None),
            (None, Some("postgres://u:hunter2@x")),
            (None, Some("mongodb://u:hunter2@host:99999999/db")),
            (None, Some("mongodb://u:hunter2@/db")),
            (
                None,
                Some("mongodb://u:hunter2@host/db?w=banana&journal=maybe"),
            ),
        ] {
            let common = CommonConfig {
                amqp_url: amqp.map(Into::into),
                mongo_url: mongo.map(Into::into),
                ..Default::default()
            };
            let err = match common.validate() {
                Err(err) => err.to_string(),
                Ok(()) => panic!("accepted {amqp:?} {mongo:?}"),
            };
            let key = if amqp.is_some() {
                "amqp_url"
            } else {
                "mongo_url"
            };
            assert!(err.contains(key), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let fine = CommonConfig {
            amqp_url: Some("amqp://u:p@host:5672/%2f".into()),
            mongo_url: Some("mongodb://u:p@a:27017,b/db?replicaSet=rs0".into()),
            ..Default::default()
        };
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn an_amqp_url_list_names_every_node_and_prints_redacted() {
        let list = "amqp://u:s1@a:5691/v, amqp://u:s2@b:5692/v,,amqp://c:5693/v";
        assert_eq!(
            split_url_list(list),
            [
                "amqp://u:s1@a:5691/v",
                "amqp://u:s2@b:5692/v",
                "amqp://c:5693/v"
            ]
        );
        assert_eq!(
            redact_url_list(list),
            "amqp://u:***@a:5691/v,amqp://u:***@b:5692/v,amqp://c:5693/v"
        );
        let common = CommonConfig {
            amqp_url: Some(list.into()),
            ..Default::default()
        };
        assert!(common.validate().is_ok());
        assert_eq!(common.amqp_queue_type, QueueType::Classic);
    }

    #[test]
    fn queue_type_is_read_from_the_environment() {
        let source =
            ConfigSource::load_with_env(None, env(&[("STARGAZER_AMQP_QUEUE_TYPE", "quorum")]))
                .unwrap();
        let common: CommonConfig = source.section("").unwrap();
        assert_eq!(common.amqp_queue_type, QueueType::Quorum);
        let source =
            ConfigSource::load_with_env(None, env(&[("STARGAZER_AMQP_QUEUE_TYPE", "stream")]))
                .unwrap();
        assert!(source.section::<CommonConfig>("").is_err());
    }

    #[test]
    fn wrong_url_scheme_is_rejected() {
        let common = CommonConfig {
            amqp_url: Some("http://x".into()),
            ..Default::default()
        };
        assert!(common
            .validate()
            .unwrap_err()
            .to_string()
            .contains("amqp_url"));
    }
}
