//! The bot's view of the Stargazer api: the calls it makes through the typed client
//! ([`stargazer_api::client::ApiClient`]), with failures sorted into what the bot can act
//! on — not found, conflict, refused, or unavailable (worth retrying).

use stargazer_api::client::{ApiClient, ClientError};
use stargazer_api::types::{AddUser, ErrorCode, GetSubscribers, UpdateSetting, UpdateSubscription};
use stargazer_core::config::ConfigError;
use stargazer_core::model::Entity;
use uuid::Uuid;

pub use stargazer_api::types::{
    IndexEntry, SessionToken, Subscriber, Subscription, User, UserIndex,
};

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

    /// Subscribes (`kinds` empty: all kinds) or unsubscribes `user` to `entity`. A
    /// subscription's mention is kept (a new one has none).
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
            mention: None,
        };
        self.client.update_subscription(&request).await?;
        Ok(())
    }

    /// Sets what the bot mentions when it posts an event of `user`'s subscription to
    /// `entity` (a Discord role id), keeping its kinds; `None` removes the mention.
    /// [`ApiError::NotFound`] if `user` is not subscribed to `entity`; the api refuses
    /// ([`ApiError::Refused`]) a mention that is not 1 to 64 ASCII letters, digits, `_`,
    /// `-` or `:`. The kinds are read first and sent back, so a kinds change made at the
    /// same moment through another call may be undone.
    pub async fn set_mention(
        &self,
        user: Uuid,
        entity: Uuid,
        mention: Option<&str>,
    ) -> ApiResult<()> {
        let kinds = self
            .client
            .get_subscription(Some(user))
            .await?
            .into_iter()
            .find(|s| s.entity == entity)
            .map(|s| s.kinds)
            .ok_or_else(|| {
                ApiError::NotFound(format!("user {user} is not subscribed to entity {entity}"))
            })?;
        let request = UpdateSubscription {
            user: Some(user),
            entity,
            subscribed: true,
            kinds,
            mention: Some(mention.unwrap_or_default().to_owned()),
        };
        self.client.update_subscription(&request).await?;
        Ok(())
    }

    /// `user`'s subscriptions with their kinds and mentions.
    pub async fn subscriptions(&self, user: Uuid) -> ApiResult<Vec<Subscription>> {
        Ok(self.client.get_subscription(Some(user)).await?)
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

    /// The real api over an in-memory storage holding `entity`, with an api-rw bot
    /// credential, until `stop`; answers the bot's client.
    async fn api_over(
        entity: &Entity,
        stop: &stargazer_core::CancellationToken,
    ) -> (Api, std::sync::Arc<dyn stargazer_core::storage::Storage>) {
        use stargazer_core::model::{Access, Credential, Permissions};
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        storage
            .insert_credential(&Credential {
                username: "bot".into(),
                hash: stargazer_core::auth::hash_password("pw", 1_000).unwrap(),
                permissions: Permissions {
                    api: Some(Access::Rw),
                    ..Default::default()
                },
                queues: Vec::new(),
            })
            .await
            .unwrap();
        storage.insert_entity(entity).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = stargazer_api::ApiConfig {
            pbkdf2_iterations: 1_000,
            read_cache_ms: 0,
            ..Default::default()
        };
        let listeners = stargazer_api::Listeners {
            public: listener,
            internal: None,
        };
        let (served, stop) = (storage.clone(), stop.clone());
        tokio::spawn(async move {
            let registry = prometheus::Registry::new();
            stargazer_api::serve(config, listeners, served, &registry, stop)
                .await
                .unwrap();
        });
        let api = Api::new("discord", &url, "api", "bot", "pw").unwrap();
        (api, storage)
    }

    #[tokio::test]
    async fn mentions_are_set_kept_with_the_kinds_and_cleared() {
        let entity = Entity {
            id: Uuid::new_v4(),
            names: [("en".to_owned(), "Suisei".to_owned())]
                .into_iter()
                .collect(),
            default_language: "en".into(),
            group: None,
            translate_to: Vec::new(),
            tasks: Vec::new(),
        };
        let stop = stargazer_core::CancellationToken::new();
        let (api, _storage) = api_over(&entity, &stop).await;
        let user = api.register("42", "a server", "en").await.unwrap();
        let mention_of = |subscribers: Vec<Subscriber>| {
            assert_eq!(subscribers.len(), 1);
            crate::Recipient::from(subscribers.into_iter().next().unwrap()).mention
        };

        // Not subscribed: nothing to mention for.
        assert!(matches!(
            api.set_mention(user.id, entity.id, Some("1")).await,
            Err(ApiError::NotFound(_))
        ));
        api.update_subscription(user.id, entity.id, true, vec!["youtube.live".into()])
            .await
            .unwrap();
        api.set_mention(user.id, entity.id, Some("123456789012345678"))
            .await
            .unwrap();
        let live = api.subscribers(entity.id, "youtube.live").await.unwrap();
        assert_eq!(mention_of(live), Some("123456789012345678".to_owned()));
        // The mention kept the kinds.
        assert!(api
            .subscribers(entity.id, "youtube.video")
            .await
            .unwrap()
            .is_empty());

        // Changing the kinds keeps the mention.
        api.update_subscription(user.id, entity.id, true, Vec::new())
            .await
            .unwrap();
        let video = api.subscribers(entity.id, "youtube.video").await.unwrap();
        assert_eq!(mention_of(video), Some("123456789012345678".to_owned()));

        // A malformed mention is refused and changes nothing.
        match api.set_mention(user.id, entity.id, Some("<@&1>")).await {
            Err(err @ ApiError::Refused { status: 422, .. }) => {
                assert!(err.to_string().contains("mention"), "{err}");
                assert!(!err.is_transient());
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let live = api.subscribers(entity.id, "youtube.live").await.unwrap();
        assert_eq!(mention_of(live), Some("123456789012345678".to_owned()));

        // `None` removes it, keeping the subscription.
        api.set_mention(user.id, entity.id, None).await.unwrap();
        let live = api.subscribers(entity.id, "youtube.live").await.unwrap();
        assert_eq!(mention_of(live), None);
        stop.cancel();
    }
}
