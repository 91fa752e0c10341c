//! The whole configuration, every section read and type-checked at start, so a bad value
//! anywhere is reported before anything runs.

use std::path::Path;

use serde::{Deserialize, Serialize};
use stargazer_core::bus::{BusOptions, QueueSpec};
use stargazer_core::config::{redact_url, CommonConfig, ConfigError, ConfigSource, Section};
use stargazer_core::routing;
use stargazer_core::topology::Topology;

/// Every section of the configuration file.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Top-level keys: backends and logging.
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `[api]`.
    pub api: stargazer_api::ApiConfig,
    /// `[coordinator]`.
    pub coordinator: stargazer_coordinator::CoordinatorConfig,
    /// `[worker]`: how a worker process reaches the coordinator.
    pub worker: WorkerSection,
    /// `[youtube]`.
    pub youtube: stargazer_worker_youtube::YoutubeConfig,
    /// `[twitter]`.
    pub twitter: stargazer_worker_twitter::TwitterConfig,
    /// `[twitch]`.
    pub twitch: stargazer_worker_twitch::TwitchConfig,
    /// `[bilibili]`.
    pub bilibili: stargazer_worker_bilibili::BilibiliConfig,
    /// `[delay]`.
    pub delay: stargazer_middleware_delay::DelayConfig,
    /// `[translate]`.
    pub translate: stargazer_middleware_translate::TranslateConfig,
    /// `[live_check]`.
    pub live_check: stargazer_middleware_live_check::LiveCheckConfig,
    /// `[telegram]`.
    pub telegram: stargazer_bot_telegram::BotConfig,
    /// `[discord]`.
    pub discord: stargazer_bot_discord::DiscordConfig,
    /// `[qq]`.
    pub qq: stargazer_bot_qq::QqConfig,
}

/// Where `npm run build` in `frontend/` puts the static export, relative to a checkout.
const DEFAULT_FRONTEND_DIR: &str = "frontend/out";

/// Top-level keys and sections the file may contain.
const KNOWN_KEYS: &[&str] = &[
    "amqp_url",
    "amqp_queue_type",
    "mongo_url",
    "sqlite_path",
    "log_format",
    "log_level",
    "metrics_listen",
    "unroutable_retries",
    "api",
    "coordinator",
    "worker",
    "youtube",
    "twitter",
    "twitch",
    "bilibili",
    "delay",
    "translate",
    "live_check",
    "telegram",
    "discord",
    "qq",
];

impl Settings {
    /// These settings as a configuration file [`Settings::load`] reads back to equal
    /// settings: how a parent process hands its settings to `stargazer <role>` children.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Invalid {
            key: "settings".to_owned(),
            reason: format!("cannot be written as TOML: {e}"),
        })
    }

    /// Reads the file (if any) and the environment, and checks every section
    /// ([`Section::check`]), whatever role will run: a bad value or unknown key anywhere
    /// is reported here, before any connection.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_source(ConfigSource::load(file)?)
    }

    /// [`Settings::load`] from given sources.
    pub fn from_source(source: ConfigSource) -> Result<Self, ConfigError> {
        source.reject_unknown_top_level(KNOWN_KEYS)?;
        let common: CommonConfig = source.section("")?;
        common.validate()?;
        let mut api: stargazer_api::ApiConfig = source.read()?;
        if api.frontend_dir.is_none() {
            // Serve the frontend's static export when running from a checkout that built it.
            let built = Path::new(DEFAULT_FRONTEND_DIR);
            if built.join("index.html").is_file() {
                api.frontend_dir = Some(built.to_path_buf());
            }
        }
        Ok(Self {
            common,
            api,
            coordinator: source.read()?,
            worker: source.read()?,
            youtube: source.read()?,
            twitter: source.read()?,
            twitch: source.read()?,
            bilibili: source.read()?,
            delay: source.read()?,
            translate: source.read()?,
            live_check: source.read()?,
            telegram: source.read()?,
            discord: source.read()?,
            qq: source.read()?,
        })
    }
}

impl Settings {
    /// The consumer queues of this deployment (docs/ARCHITECTURE.md §4): each middleware's
    /// and the bots', under the names configured for them, of type `amqp_queue_type`.
    /// The Discord and QQ bots' queues only when their bot is configured (its token set):
    /// a queue nobody consumes would keep every ready event.
    pub fn topology(&self) -> Topology {
        let middleware = |queue: &str, tag: &str, prefetch: u16| {
            QueueSpec::new(queue, routing::middleware_pattern(tag), prefetch)
        };
        let mut queues = vec![
            middleware(
                &self.delay.queue,
                stargazer_middleware_delay::TAG,
                self.delay.prefetch,
            ),
            middleware(
                &self.translate.queue,
                stargazer_middleware_translate::TAG,
                self.translate.prefetch,
            ),
            middleware(
                &self.live_check.queue,
                stargazer_middleware_live_check::TAG,
                self.live_check.prefetch,
            ),
            QueueSpec::new(
                self.telegram.queue.clone(),
                routing::READY_PATTERN,
                self.telegram.prefetch,
            ),
        ];
        if !self.discord.token.trim().is_empty() {
            queues.push(QueueSpec::new(
                self.discord.queue.clone(),
                routing::READY_PATTERN,
                self.discord.prefetch,
            ));
        }
        if !self.qq.access_token.trim().is_empty() {
            queues.push(QueueSpec::new(
                self.qq.queue.clone(),
                routing::READY_PATTERN,
                self.qq.prefetch,
            ));
        }
        Topology::new(queues).with_queue_type(self.common.amqp_queue_type)
    }

    /// How the bus handles unroutable messages, and the topology the in-process bus
    /// declares at creation.
    pub fn bus_options(&self) -> BusOptions {
        BusOptions {
            unroutable_retries: self.common.unroutable_retries,
            topology: self.topology(),
            ..BusOptions::default()
        }
    }
}

/// Section `[worker]`: the coordinator connection of a worker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSection {
    /// `worker.coordinator_url` / `STARGAZER_WORKER__COORDINATOR_URL`: WebSocket URL of the
    /// coordinator, or of each coordinator instance comma-separated (the worker follows
    /// the leader among them); default `ws://127.0.0.1:8090/v1/worker`.
    pub coordinator_url: String,
    /// `worker.username` / `STARGAZER_WORKER__USERNAME`: credential with `coordinator: ro`.
    pub username: String,
    /// `worker.password` / `STARGAZER_WORKER__PASSWORD`: its password.
    pub password: String,
    /// `worker.id` / `STARGAZER_WORKER__ID`: stable worker identity (host or pod name);
    /// empty means random per process (standalone: created once and kept in storage).
    pub id: String,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            coordinator_url: "ws://127.0.0.1:8090/v1/worker".to_owned(),
            username: String::new(),
            password: String::new(),
            id: String::new(),
        }
    }
}

impl Section for WorkerSection {
    const NAME: &'static str = "worker";

    fn check(&self) -> Result<(), ConfigError> {
        let urls: Vec<&str> = self
            .coordinator_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(ConfigError::invalid(
                "worker.coordinator_url",
                "required: one or more ws:// or wss:// URLs, comma-separated",
            ));
        }
        for listed in urls {
            match url::Url::parse(listed) {
                Ok(url) if matches!(url.scheme(), "ws" | "wss") && url.has_host() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "worker.coordinator_url",
                        format!("`{}` is not a ws:// or wss:// URL", redact_url(listed)),
                    ))
                }
            }
        }
        Ok(())
    }
}

impl WorkerSection {
    /// Checks that a worker process has what it needs to log in.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.username.is_empty() {
            return Err(ConfigError::invalid(
                "worker.username",
                "required: a credential with coordinator ro (create one with `stargazer admin credential add`)",
            ));
        }
        if self.password.is_empty() {
            return Err(ConfigError::invalid("worker.password", "required"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../stargazer.example.toml");
    const ENV_EXAMPLE: &str = include_str!("../../deploy/stargazer.env");

    /// Each key of the TOML example as its environment variable.
    fn example_variables() -> Vec<String> {
        let mut section = String::new();
        let mut variables = Vec::new();
        for line in EXAMPLE.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = format!("{}__", name.to_uppercase());
            } else if let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = "))
            {
                if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    variables.push(format!("STARGAZER_{section}{}", key.to_uppercase()));
                }
            }
        }
        variables
    }

    #[test]
    fn worker_section_checks_every_listed_coordinator_url() {
        let section = |urls: &str| WorkerSection {
            coordinator_url: urls.to_owned(),
            ..WorkerSection::default()
        };
        section("ws://a:8090/v1/worker").check().unwrap();
        section("ws://a:8090, wss://b/v1/worker").check().unwrap();
        let err = section("ws://a:8090,http://u:secret@b:8090")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker.coordinator_url"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(section(" , ").check().is_err());
    }

    #[test]
    fn env_example_lists_every_setting() {
        let variables = example_variables();
        assert!(
            variables.len() > 100,
            "the example was parsed: {variables:?}"
        );
        for variable in variables {
            assert!(
                ENV_EXAMPLE.contains(&format!("{variable}=")),
                "deploy/stargazer.env does not list {variable}"
            );
        }
    }

    /// The example with every `# key = value` line uncommented (placeholders skipped).
    fn uncommented_example() -> String {
        EXAMPLE
            .lines()
            .map(|line| {
                let Some(rest) = line.strip_prefix("# ") else {
                    return line.to_owned();
                };
                match rest.split_once(" = ") {
                    Some((key, value))
                        if !value.contains('…')
                            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
                    {
                        rest.to_owned()
                    }
                    _ => line.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn written_settings_load_back_as_written() {
        let mut settings =
            Settings::from_source(ConfigSource::load_with_env(None, Vec::new()).unwrap()).unwrap();
        settings.common.amqp_url = Some("amqp://u:p@127.0.0.1:5672/%2fvhost".to_owned());
        settings.common.mongo_url = Some("mongodb://127.0.0.1:27017/db".to_owned());
        settings.coordinator.heartbeat_interval_ms = 321;
        settings.worker.id = "w-1".to_owned();
        settings.telegram.global_per_second = 12.5;
        let text = settings.to_toml().unwrap();
        let dir = std::env::temp_dir().join(format!("stargazer-written-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("settings.toml");
        std::fs::write(&path, &text).unwrap();
        let source = ConfigSource::load_with_env(Some(&path), Vec::new()).unwrap();
        source.reject_unknown_top_level(KNOWN_KEYS).unwrap();
        let loaded = Settings::from_source(source).unwrap();
        assert_eq!(loaded.to_toml().unwrap(), text);
        assert_eq!(loaded.coordinator.heartbeat_interval_ms, 321);
        assert_eq!(loaded.common.amqp_url, settings.common.amqp_url);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn example_file_loads_and_its_values_are_the_defaults() {
        let dir = std::env::temp_dir().join(format!("stargazer-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("example.toml");
        let text = uncommented_example();
        assert!(
            text.contains("\nlisten = \"127.0.0.1:8080\""),
            "example keys were uncommented"
        );
        std::fs::write(&path, &text).unwrap();
        let source = ConfigSource::load_with_env(Some(&path), Vec::new()).unwrap();
        // Every documented key is one a section knows (sections refuse unknown keys), and
        // every documented default passes the checks at load.
        Settings::from_source(source.clone()).unwrap();
        source.reject_unknown_top_level(KNOWN_KEYS).unwrap();
        let from_file: stargazer_api::ApiConfig = source.section("api").unwrap();
        assert_eq!(from_file.listen, stargazer_api::ApiConfig::default().listen);
        let telegram: stargazer_bot_telegram::BotConfig = source.section("telegram").unwrap();
        assert_eq!(
            telegram.api_url,
            stargazer_bot_telegram::BotConfig::default().api_url
        );
        for section in KNOWN_KEYS {
            assert!(
                EXAMPLE.contains(&format!("[{section}]"))
                    || EXAMPLE.contains(&format!("# {section} = ")),
                "stargazer.example.toml does not document `{section}`"
            );
        }
    }
}
