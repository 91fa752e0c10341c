//! The bot's view of the Stargazer api: the calls it makes through the typed client
//! ([`stargazer_api::client::ApiClient`]), with failures sorted into what the bot can act
//! on — not found, conflict, refused, or unavailable (worth retrying).

use stargazer_api::client::{ApiClient, ClientError};
use stargazer_api::types::{AddUser, ErrorCode, GetSubscribers, UpdateSetting, UpdateSubscription};
use stargazer_core::config::ConfigError;
use stargazer_core::model::Entity;
use uuid::Uuid;

pub use stargazer_api::types::{IndexEntry, SessionToken, Subscriber, User, UserIndex};

/// Why an api call failed, as far as the bot cares.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The record already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The api refused the request (bad input, or the bot's credentials).
    #[error("refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Wire code.
        code: String,
        /// The api's message.
        message: String,
    },
    /// The api could not be reached or failed; try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// Whether trying again later may succeed. Rejected credentials count: an operator
    /// fixing them must not find that events were dropped meanwhile.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unavailable(_) => true,
            ApiError::Refused { status, .. } => matches!(status, 401 | 403 | 429),
            ApiError::NotFound(_) | ApiError::Conflict(_) => false,
        }
    }

    /// Text fit for a chat user.
    pub fn user_message(&self) -> String {
        match self {
            ApiError::NotFound(_) => "it does not exist (any more).".to_owned(),
            ApiError::Conflict(_) => "it already exists.".to_owned(),
            ApiError::Refused { message, .. } => message.clone(),
            ApiError::Unavailable(_) => "Stargazer is temporarily unavailable.".to_owned(),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Api {
                status,
                code,
                message,
                ..
            } => match code {
                ErrorCode::NotFound => ApiError::NotFound(message),
                ErrorCode::Conflict => ApiError::Conflict(message),
                ErrorCode::Unavailable | ErrorCode::Internal => ApiError::Unavailable(message),
                _ if status >= 500 => ApiError::Unavailable(message),
                code => ApiError::Refused {
                    status,
                    code: code.to_string(),
                    message,
                },
            },
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

/// What an api call answers.
pub type ApiResult<T> = Result<T, ApiError>;

/// The api client with a bot's credentials, for the chats of one IM platform. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Api {
    client: ApiClient,
    im: &'static str,
}

impl Api {
    /// A client of the api at `url` (the setting `url_key` names it in errors) for the
    /// chats of `im`, authenticating with these Basic credentials.
    pub fn new(
        im: &'static str,
        url: &str,
        url_key: &str,
        username: &str,
        password: &str,
    ) -> Result<Self, ConfigError> {
        let client = ApiClient::new(url)
            .map_err(|err| ConfigError::invalid(url_key, err.to_string()))?
            .with_basic(username.to_owned(), password.to_owned());
        Ok(Self { client, im })
    }

    /// An entity (only what composing a message needs).
    pub async fn entity(&self, id: Uuid) -> ApiResult<Entity> {
        let entity = self.client.get_entity(id).await?;
        Ok(Entity {
            id: entity.id,
            names: entity.names,
            default_language: entity.default_language,
            group: entity.group,
            translate_to: entity.translate_to,
            tasks: Vec::new(),
        })
    }

    /// Who on this IM platform wants events of `kind` about `entity` (paused chats left out).
    pub async fn subscribers(&self, entity: Uuid, kind: &str) -> ApiResult<Vec<Subscriber>> {
        let request = GetSubscribers {
            entity,
            kind: kind.to_owned(),
            im: self.im.to_owned(),
        };
        Ok(self.client.call("getSubscribers", &request).await?)
    }

    /// A user's reminder leads, minutes (empty: the default lead only).
    pub async fn reminder_leads(&self, user: Uuid) -> ApiResult<Vec<u32>> {
        Ok(self.client.get_settings(Some(user)).await?.reminder_leads)
    }

    /// Sets a user's reminder leads (minutes; empty: the default lead only); answers the
    /// leads the api stored.
    pub async fn set_reminder_leads(&self, user: Uuid, leads: &[u32]) -> ApiResult<Vec<u32>> {
        let request = UpdateSetting {
            user: Some(user),
            reminder_leads: Some(leads.to_vec()),
            ..Default::default()
        };
        Ok(self.client.update_setting(&request).await?.reminder_leads)
    }

    /// The user of a chat, if registered.
    pub async fn user_by_chat(&self, chat: impl std::fmt::Display) -> ApiResult<Option<User>> {
        match self.client.find_user(self.im, &chat.to_string()).await {
            Ok(user) => Ok(Some(user)),
            Err(err) => match ApiError::from(err) {
                ApiError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Registers a chat; an already registered chat is simply returned.
    pub async fn register(
        &self,
        chat: impl std::fmt::Display,
        name: &str,
        language: &str,
    ) -> ApiResult<User> {
        let request = AddUser {
            im: self.im.to_owned(),
            chat_id: chat.to_string(),
            name: name.to_owned(),
            language: language.to_owned(),
        };
        match self.client.add_user(&request).await {
            Ok(user) => Ok(user),
            Err(err) => match ApiError::from(err) {
                // Registered meanwhile (a double /start): the existing user is the answer.
                ApiError::Conflict(_) => self
                    .user_by_chat(chat)
                    .await?
                    .ok_or_else(|| ApiError::Unavailable("user vanished after a conflict".into())),
                other => Err(other),
            },
        }
    }

    /// Pauses (the chat blocked the bot) or resumes deliveries to a user.
    pub async fn set_paused(&self, user: Uuid, paused: bool) -> ApiResult<()> {
        let request = UpdateSetting {
            user: Some(user),
            paused: Some(paused),
            ..Default::default()
        };
        self.client.update_setting(&request).await?;
        Ok(())
    }

    /// Records that a user's chat now lives at `chat` (a group became a supergroup).
    pub async fn move_chat(&self, user: Uuid, chat: impl std::fmt::Display) -> ApiResult<()> {
        let request = UpdateSetting {
            user: Some(user),
            chat_id: Some(chat.to_string()),
            ..Default::default()
        };
        self.client.update_setting(&request).await?;
        Ok(())
    }

    /// Sets the language of a user's messages.
    pub async fn set_language(&self, user: Uuid, language: &str) -> ApiResult<()> {
        let request = UpdateSetting {
            user: Some(user),
            language: Some(language.to_owned()),
            ..Default::default()
        };
        self.client.update_setting(&request).await?;
        Ok(())
    }

    /// The searchable entity index, marked with `user`'s subscriptions.
    pub async fn index(&self, user: Uuid) -> ApiResult<UserIndex> {
        Ok(self.client.get_user_index(Some(user)).await?)
    }

    /// The searchable entity index, unmarked (for a chat not registered yet).
    pub async fn entity_index(&self) -> ApiResult<UserIndex> {
        Ok(self.client.get_user_index(None).await?)
    }

    /// Subscribes (`kinds` empty: all kinds) or unsubscribes `user` to `entity`.
    pub async fn update_subscription(
        &self,
        user: Uuid,
        entity: Uuid,
        subscribed: bool,
        kinds: Vec<String>,
    ) -> ApiResult<()> {
        let request = UpdateSubscription {
            user: Some(user),
            entity,
            subscribed,
            kinds,
        };
        self.client.update_subscription(&request).await?;
        Ok(())
    }

    /// A fresh frontend session for `user`.
    pub async fn new_session(&self, user: Uuid) -> ApiResult<SessionToken> {
        Ok(self.client.new_session(user).await?)
    }

    /// Deletes `user` with their subscriptions and sessions.
    pub async fn delete_user(&self, user: Uuid) -> ApiResult<()> {
        self.client.del_user(Some(user)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(status: u16, code: ErrorCode) -> ApiError {
        ClientError::Api {
            status,
            code,
            message: "m".into(),
            retry_after: None,
        }
        .into()
    }

    #[test]
    fn failures_sort_into_what_the_bot_acts_on() {
        assert!(matches!(
            api_error(404, ErrorCode::NotFound),
            ApiError::NotFound(_)
        ));
        assert!(matches!(
            api_error(409, ErrorCode::Conflict),
            ApiError::Conflict(_)
        ));
        assert!(api_error(503, ErrorCode::Unavailable).is_transient());
        assert!(api_error(502, ErrorCode::Unknown).is_transient());
        assert!(api_error(401, ErrorCode::Unauthorized).is_transient());
        assert!(!api_error(422, ErrorCode::InvalidInput).is_transient());
        let decode: ApiError = ClientError::Decode {
            status: 502,
            detail: "html".into(),
        }
        .into();
        assert!(decode.is_transient());
    }
}
