//! The table of services: every role the binary can run, and how each is built from the
//! settings. Single-role processes ([`crate::roles`]) and standalone
//! ([`crate::standalone`]) are both built from [`SERVICES`]; neither names a service.
//!
//! Adding a service is a crate implementing [`Service`], a configuration
//! [`Section`](stargazer_core::config::Section) in [`Settings`] and one row here; the row is
//! also the binary's subcommand ([`Role`](crate::roles::Role)).

use stargazer_core::config::ConfigError;
use stargazer_core::model::TaskKind;
use stargazer_core::service::Service;
use stargazer_core::worker_runtime::WorkerRuntimeConfig;

use crate::settings::Settings;

/// Which process a service is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `stargazer <role>`: a missing credential is a configuration error.
    Role,
    /// `stargazer standalone`: every service in one process; a service whose external
    /// account is not configured is reported disabled (translation passes events on
    /// untranslated instead).
    Standalone,
}

/// Builds a service from the settings, or says which key keeps it from running.
pub type Build = fn(&Settings, Mode) -> Result<Box<dyn Service>, ConfigError>;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct ServiceRow {
    /// The service's name: the subcommand that runs it alone ([`Role::name`](crate::roles::Role::name)).
    pub name: &'static str,
    /// One line for the subcommand's `--help`.
    pub about: &'static str,
    /// How to build it.
    pub build: Build,
}

/// Every service, in standalone's start order (the api and coordinator first, so the
/// others find them).
pub const SERVICES: &[ServiceRow] = &[
    ServiceRow {
        name: "api",
        about: "RPC API, sessions, RabbitMQ HTTP auth backend, OpenAPI, frontend.",
        build: api,
    },
    ServiceRow {
        name: "coordinator",
        about: "Assigns tasks to workers over WebSocket by consistent hashing.",
        build: coordinator,
    },
    ServiceRow {
        name: "middleware-delay",
        about: "Holds messages tagged `delay` until their time.",
        build: delay,
    },
    ServiceRow {
        name: "middleware-translate",
        about: "Translates texts of messages tagged `translate` (DeepL).",
        build: translate,
    },
    ServiceRow {
        name: "middleware-live-check",
        about: "Holds `youtube.live` until the stream has really started.",
        build: live_check,
    },
    ServiceRow {
        name: "worker-youtube",
        about: "Watches YouTube channels (WebSub + Data API) and publishes events.",
        build: worker_youtube,
    },
    ServiceRow {
        name: "worker-twitter",
        about: "Watches X accounts (API v2) and publishes events.",
        build: worker_twitter,
    },
    ServiceRow {
        name: "worker-twitch",
        about: "Watches Twitch broadcasters (EventSub webhooks + Helix) and publishes events.",
        build: worker_twitch,
    },
    ServiceRow {
        name: "worker-bilibili",
        about: "Watches Bilibili users (live rooms, dynamics) and publishes events.",
        build: worker_bilibili,
    },
    ServiceRow {
        name: "bot-telegram",
        about: "Telegram bot: chat commands and delivery of ready events.",
        build: bot_telegram,
    },
    ServiceRow {
        name: "bot-discord",
        about: "Discord bot: delivery of ready events to the channels bound to entities.",
        build: bot_discord,
    },
    ServiceRow {
        name: "bot-qq",
        about: "QQ bot (OneBot v11): delivery of ready events to the chats bound to entities.",
        build: bot_qq,
    },
];

fn api(settings: &Settings, _: Mode) -> Result<Box<dyn Service>, ConfigError> {
    Ok(Box::new(stargazer_api::ApiService::new(
        settings.api.clone(),
    )))
}

fn coordinator(settings: &Settings, _: Mode) -> Result<Box<dyn Service>, ConfigError> {
    Ok(Box::new(stargazer_coordinator::CoordinatorService::new(
        settings.coordinator.clone(),
    )?))
}

fn delay(settings: &Settings, _: Mode) -> Result<Box<dyn Service>, ConfigError> {
    Ok(Box::new(stargazer_middleware_delay::DelayService::new(
        settings.delay.clone(),
    )))
}

fn translate(settings: &Settings, mode: Mode) -> Result<Box<dyn Service>, ConfigError> {
    use stargazer_middleware_translate::TranslateService;
    let config = settings.translate.clone();
    match (config.validate(), mode) {
        (Ok(()), _) => Ok(Box::new(TranslateService::new(config))),
        // Without DeepL the events still reach the chats, untranslated.
        (Err(why), Mode::Standalone) => Ok(Box::new(TranslateService::untranslated(
            config,
            why.to_string(),
        ))),
        (Err(why), Mode::Role) => Err(why),
    }
}

fn live_check(settings: &Settings, _: Mode) -> Result<Box<dyn Service>, ConfigError> {
    let config = live_check_config(settings);
    config.validate()?;
    Ok(Box::new(
        stargazer_middleware_live_check::LiveCheckService::new(config),
    ))
}

fn worker_youtube(settings: &Settings, mode: Mode) -> Result<Box<dyn Service>, ConfigError> {
    if settings.youtube.api_key.trim().is_empty() {
        return Err(ConfigError::invalid(
            "youtube.api_key",
            "is not set (STARGAZER_YOUTUBE_API_KEY)",
        ));
    }
    Ok(Box::new(stargazer_worker_youtube::YoutubeService::new(
        settings.youtube.clone(),
        worker_runtime(settings, TaskKind::Youtube, mode)?,
    )))
}

fn worker_twitter(settings: &Settings, mode: Mode) -> Result<Box<dyn Service>, ConfigError> {
    if settings.twitter.bearer_token.trim().is_empty() {
        return Err(ConfigError::invalid(
            "twitter.bearer_token",
            "is not set (STARGAZER_TWITTER_BEARER_TOKEN)",
        ));
    }
    Ok(Box::new(stargazer_worker_twitter::TwitterService::new(
        settings.twitter.clone(),
        worker_runtime(settings, TaskKind::Twitter, mode)?,
    )))
}

fn worker_twitch(settings: &Settings, mode: Mode) -> Result<Box<dyn Service>, ConfigError> {
    if let Some((key, env)) = settings.twitch.missing_credential() {
        return Err(ConfigError::invalid(key, format!("is not set ({env})")));
    }
    Ok(Box::new(stargazer_worker_twitch::TwitchService::new(
        settings.twitch.clone(),
        worker_runtime(settings, TaskKind::Twitch, mode)?,
    )))
}

/// Bilibili needs no credential: the role builds in both modes.
fn worker_bilibili(settings: &Settings, mode: Mode) -> Result<Box<dyn Service>, ConfigError> {
    Ok(Box::new(stargazer_worker_bilibili::BilibiliService::new(
        settings.bilibili.clone(),
        worker_runtime(settings, TaskKind::Bilibili, mode)?,
    )))
}

fn bot_telegram(settings: &Settings, _: Mode) -> Result<Box<dyn Service>, ConfigError> {
    settings.telegram.validate()?;
    Ok(Box::new(stargazer_bot_telegram::TelegramService::new(
        settings.telegram.clone(),
    )))
}

fn bot_discord(settings: &Settings, _: Mode) -> Result<Box<dyn Service>, ConfigError> {
    settings.discord.validate()?;
    Ok(Box::new(stargazer_bot_discord::DiscordService::new(
        settings.discord.clone(),
    )))
}

fn bot_qq(settings: &Settings, _: Mode) -> Result<Box<dyn Service>, ConfigError> {
    settings.qq.validate()?;
    Ok(Box::new(stargazer_bot_qq::QqService::new(
        settings.qq.clone(),
    )))
}

/// The live-check config, borrowing the YouTube Data API settings when its own are unset.
pub fn live_check_config(settings: &Settings) -> stargazer_middleware_live_check::LiveCheckConfig {
    let mut config = settings.live_check.clone();
    if config.api_key.is_empty() {
        config.api_key = settings.youtube.api_key.clone();
    }
    config
}

/// How a worker of `kind` logs in to the coordinator. In standalone each kind gets its
/// own id: the coordinator treats one id announcing two kinds as a worker that changed
/// kind.
fn worker_runtime(
    settings: &Settings,
    kind: TaskKind,
    mode: Mode,
) -> Result<WorkerRuntimeConfig, ConfigError> {
    let section = &settings.worker;
    section.validate()?;
    let id = match mode {
        Mode::Role => section.id.clone(),
        Mode::Standalone => format!("{}-{kind}", section.id),
    };
    Ok(WorkerRuntimeConfig::new(
        section.coordinator_url.clone(),
        section.username.clone(),
        section.password.clone(),
        id,
        kind,
    ))
}

#[cfg(test)]
mod tests {
    use clap::Subcommand;

    use super::*;
    use crate::roles::Role;

    #[test]
    fn every_row_is_a_subcommand_that_parses_back_to_its_row() {
        let names: Vec<&str> = SERVICES.iter().map(|row| row.name).collect();
        let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "a name twice: {names:?}");
        let command = Role::augment_subcommands(clap::Command::new("stargazer"));
        let subcommands: Vec<&str> = command
            .get_subcommands()
            .map(|sub| sub.get_name())
            .collect();
        assert_eq!(subcommands, names);
        for row in SERVICES {
            let matches = command
                .clone()
                .try_get_matches_from(["stargazer", row.name])
                .unwrap();
            let role = <Role as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
            // Rows are compared by name and help: a `const` table has no stable address.
            assert_eq!((role.name(), role.row().about), (row.name, row.about));
        }
        let unknown = command.try_get_matches_from(["stargazer", "worker-myspace"]);
        assert!(unknown.is_err());
    }

    #[test]
    fn a_role_missing_its_credential_is_a_config_error_but_standalone_runs_without() {
        let settings = Settings::from_source(
            stargazer_core::config::ConfigSource::load_with_env(None, Vec::new()).unwrap(),
        )
        .unwrap();
        let row = |name| Role::named(name).unwrap().row();
        for (role, key) in [
            ("worker-youtube", "youtube.api_key"),
            ("worker-twitter", "twitter.bearer_token"),
            ("worker-twitch", "twitch.client_id"),
            ("middleware-translate", "translate.deepl_key"),
            ("middleware-live-check", "live_check.api_key"),
            ("bot-telegram", "telegram.token"),
            ("bot-discord", "discord.token"),
            ("bot-qq", "qq.access_token"),
        ] {
            let row = row(role);
            let err = (row.build)(&settings, Mode::Role).err().unwrap();
            assert!(err.to_string().contains(key), "{err}");
        }
        let translate = (row("middleware-translate").build)(&settings, Mode::Standalone).unwrap();
        assert!(translate.describe().contains("untranslated"));
        for role in ["api", "coordinator", "middleware-delay"] {
            let service = (row(role).build)(&settings, Mode::Role).unwrap();
            assert_eq!(service.name(), role);
        }
    }

    #[test]
    fn the_bilibili_worker_needs_no_credential_of_its_own() {
        let mut settings = Settings::from_source(
            stargazer_core::config::ConfigSource::load_with_env(None, Vec::new()).unwrap(),
        )
        .unwrap();
        let row = Role::named("worker-bilibili").unwrap().row();
        // Only the coordinator login a worker process always needs.
        let err = (row.build)(&settings, Mode::Role).err().unwrap();
        assert!(err.to_string().contains("worker.username"), "{err}");
        settings.worker.username = "worker".into();
        settings.worker.password = "secret".into();
        for mode in [Mode::Role, Mode::Standalone] {
            let service = (row.build)(&settings, mode).unwrap();
            assert_eq!(service.name(), "worker-bilibili");
        }
    }
}
