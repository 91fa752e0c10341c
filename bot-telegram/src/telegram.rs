//! Building the Bot API client, and reading Bot API errors.
//!
//! The client is made explicitly (not `Bot::new`) so that nothing is read from the
//! environment deep inside and a bad base URL is a config error, not a panic.

use std::time::Duration;

use reqwest::Url;
use teloxide::{ApiError, Bot, RequestError};

use crate::config::BotConfig;
use crate::{Error, Result};

/// Builds the Bot API client for `config` (token and base URL).
pub(crate) fn build_bot(config: &BotConfig) -> Result<Bot> {
    let base = config.api_url.trim_end_matches('/');
    let url = Url::parse(base).map_err(|err| {
        Error::Config(stargazer_core::config::ConfigError::invalid(
            "telegram.api_url",
            format!("`{}` is not a URL: {err}", config.api_url),
        ))
    })?;
    // teloxide's recommended settings (5 s connect, 17 s overall, no Nagle), with the
    // overall timeout kept above the long-poll timeout.
    let timeout =
        Duration::from_secs(u64::from(config.poll_timeout_secs) + 7).max(Duration::from_secs(17));
    let client = teloxide::net::default_reqwest_settings()
        .timeout(timeout)
        .build()
        .map_err(|err| Error::Telegram(err.to_string()))?;
    Ok(Bot::with_client(config.token.clone(), client).set_api_url(url))
}

/// How a failed Bot API call should be treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// 429: wait this long.
    RetryAfter(Duration),
    /// The group became a supergroup with this id.
    Migrated(i64),
    /// The chat cannot receive messages (403 blocked or kicked, deactivated, chat not
    /// found); the description.
    Forbidden(String),
    /// 400 and other permanent refusals; the description.
    Rejected(String),
    /// Network trouble, 5xx, a rejected token, unreadable answers: worth another try
    /// later, never final for the message.
    Transient(String),
}

/// Classifies a Bot API error.
pub(crate) fn classify(err: &RequestError) -> Failure {
    match err {
        RequestError::RetryAfter(seconds) => Failure::RetryAfter(seconds.duration()),
        RequestError::MigrateToChatId(chat) => Failure::Migrated(chat.0),
        RequestError::Api(api) => classify_api(api),
        RequestError::Network(_) | RequestError::InvalidJson { .. } | RequestError::Io(_) => {
            Failure::Transient(err.to_string())
        }
    }
}

fn classify_api(err: &ApiError) -> Failure {
    match err {
        // The chat cannot receive messages any more: blocked, kicked, gone.
        ApiError::BotBlocked
        | ApiError::BotKicked
        | ApiError::BotKickedFromSupergroup
        | ApiError::BotKickedFromChannel
        | ApiError::UserDeactivated
        | ApiError::CantInitiateConversation
        | ApiError::CantTalkWithBots
        | ApiError::ChatNotFound
        | ApiError::GroupDeactivated => return Failure::Forbidden(err.to_string()),
        // The bot's own token: nothing to do with this chat, and worth retrying while an
        // operator fixes it.
        ApiError::InvalidToken => return Failure::Transient(err.to_string()),
        _ => {}
    }
    // Telegram's description starts with the HTTP reason ("Forbidden: bot was blocked by
    // the user", "Bad Request: …"); known errors display it, unknown ones carry it.
    let description = match err {
        ApiError::Unknown(text) => text.clone(),
        known => known.to_string(),
    };
    if description.starts_with("Forbidden") {
        Failure::Forbidden(description)
    } else if description.starts_with("Bad Request") {
        Failure::Rejected(description)
    } else {
        Failure::Transient(description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_their_description() {
        assert_eq!(
            classify(&RequestError::Api(ApiError::BotBlocked)),
            Failure::Forbidden("Forbidden: bot was blocked by the user".into())
        );
        assert!(matches!(
            classify(&RequestError::Api(ApiError::Unknown(
                "Forbidden: bot was kicked from the group chat".into()
            ))),
            Failure::Forbidden(_)
        ));
        assert!(matches!(
            classify(&RequestError::Api(ApiError::ChatNotFound)),
            Failure::Forbidden(_)
        ));
        assert!(matches!(
            classify(&RequestError::Api(ApiError::BotKicked)),
            Failure::Forbidden(_)
        ));
        assert!(matches!(
            classify(&RequestError::Api(ApiError::InvalidToken)),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&RequestError::Api(ApiError::Unknown(
                "Bad Request: message is too long".into()
            ))),
            Failure::Rejected(_)
        ));
        assert!(matches!(
            classify(&RequestError::Api(ApiError::Unknown(
                "Internal Server Error".into()
            ))),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&RequestError::Api(ApiError::Unknown("Bad Gateway".into()))),
            Failure::Transient(_)
        ));
        assert_eq!(
            classify(&RequestError::RetryAfter(
                teloxide::types::Seconds::from_seconds(3)
            )),
            Failure::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            classify(&RequestError::MigrateToChatId(teloxide::types::ChatId(
                -100
            ))),
            Failure::Migrated(-100)
        );
    }

    #[test]
    fn a_bad_base_url_is_a_config_error() {
        let config = BotConfig {
            token: "1:a".into(),
            api_url: "not a url".into(),
            ..Default::default()
        };
        let err = build_bot(&config).unwrap_err().to_string();
        assert!(err.contains("telegram.api_url"), "{err}");
        let config = BotConfig {
            token: "1:a".into(),
            api_url: "http://127.0.0.1:9/".into(),
            ..Default::default()
        };
        let _bot = build_bot(&config).unwrap();
    }
}
