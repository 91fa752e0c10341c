//! A typed client of the api for bots, tools and tests: one async method per RPC method.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stargazer_api::client::ClientError> {
//! use stargazer_api::client::ApiClient;
//! let api = ApiClient::new("http://127.0.0.1:8080")?.with_basic("telegram-bot", "secret");
//! let entities = api.get_entities().await?;
//! # Ok(()) }
//! ```
//!
//! Failures the server reports keep their HTTP status and wire code in
//! [`ClientError::Api`], so callers can branch on `not_found`, `conflict` and so on.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::types::*;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The api answered with an error envelope.
    #[error("api error {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Wire code.
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// Seconds to wait, for `rate_limited`.
        retry_after: Option<u64>,
    },
    /// The request could not be sent or the response not read.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The response was not the expected JSON.
    #[error("unexpected response (status {status}): {detail}")]
    Decode {
        /// HTTP status.
        status: u16,
        /// What was wrong, with the start of the body.
        detail: String,
    },
    /// The base URL is not an http(s) URL.
    #[error("invalid api base url `{0}`")]
    InvalidUrl(String),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            ClientError::Http(err) => err.status().map(|s| s.as_u16()),
            ClientError::InvalidUrl(_) => None,
        }
    }

    /// The wire code, when the server answered with an error envelope.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Result alias of the client.
pub type ClientResult<T> = Result<T, ClientError>;

#[derive(Clone)]
enum Credentials {
    None,
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// A client of one api base URL with one set of credentials. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
}

impl ApiClient {
    /// A client of `base_url` (`http://host:port`, optionally with a path prefix) with a
    /// 30-second request timeout and no credentials.
    pub fn new(base_url: &str) -> ClientResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Self::with_http_client(base_url, http)
    }

    /// A client of `base_url` using a preconfigured `reqwest` client.
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> ClientResult<Self> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(base_url.to_owned()));
        }
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            credentials: Credentials::None,
        })
    }

    /// The same client authenticating as a service account (HTTP Basic).
    pub fn with_basic(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Credentials::Basic {
            username: username.into(),
            password: password.into(),
        };
        self
    }

    /// The same client authenticating with a session token (Bearer).
    pub fn with_bearer(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Bearer(token.into());
        self
    }

    /// The same client without credentials.
    pub fn without_credentials(mut self) -> Self {
        self.credentials = Credentials::None;
        self
    }

    /// Calls `method` with `body` and decodes the `data` of the envelope.
    pub async fn call<Req, Resp>(&self, method: &str, body: &Req) -> ClientResult<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let mut request = self
            .http
            .post(format!("{}/v1/{method}", self.base))
            .json(body);
        request = match &self.credentials {
            Credentials::None => request,
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
            Credentials::Bearer(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = response.bytes().await?;
        let envelope: Envelope<Resp> =
            serde_json::from_slice(&bytes).map_err(|err| ClientError::Decode {
                status,
                detail: format!(
                    "{err}; body starts `{}`",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            })?;
        match (envelope.success, envelope.data, envelope.error) {
            (true, Some(data), _) => Ok(data),
            (false, _, Some(error)) => Err(ClientError::Api {
                status,
                code: error.code,
                message: error.message,
                retry_after,
            }),
            _ => Err(ClientError::Decode {
                status,
                detail: "envelope without data or error".into(),
            }),
        }
    }

    /// `getUser` by id (a session may pass its own id).
    pub async fn get_user(&self, user: Uuid) -> ClientResult<User> {
        self.call(
            "getUser",
            &GetUser {
                user: Some(user),
                ..Default::default()
            },
        )
        .await
    }

    /// `getUser` of the session's own user.
    pub async fn get_me(&self) -> ClientResult<User> {
        self.call("getUser", &GetUser::default()).await
    }

    /// `getUser` by IM platform and chat id.
    pub async fn find_user(&self, im: &str, chat_id: &str) -> ClientResult<User> {
        let req = GetUser {
            user: None,
            im: Some(im.to_owned()),
            chat_id: Some(chat_id.to_owned()),
        };
        self.call("getUser", &req).await
    }

    /// `addUser`.
    pub async fn add_user(&self, req: &AddUser) -> ClientResult<User> {
        self.call("addUser", req).await
    }

    /// `delUser` (`None`: the session's own user).
    pub async fn del_user(&self, user: Option<Uuid>) -> ClientResult<Deleted> {
        self.call("delUser", &DelUser { user }).await
    }

    /// `getEntities`.
    pub async fn get_entities(&self) -> ClientResult<Vec<Entity>> {
        self.call("getEntities", &Empty {}).await
    }

    /// `newSession` for `user`.
    pub async fn new_session(&self, user: Uuid) -> ClientResult<SessionToken> {
        self.call("newSession", &NewSession { user }).await
    }

    /// `checkSession`: a named token (service) or the caller's own (`None`, bearer).
    pub async fn check_session(&self, token: Option<&str>) -> ClientResult<SessionStatus> {
        self.call(
            "checkSession",
            &CheckSession {
                token: token.map(str::to_owned),
            },
        )
        .await
    }

    /// `authMe`, optionally checking the session acts for `user`.
    pub async fn auth_me(&self, user: Option<Uuid>) -> ClientResult<Me> {
        self.call("authMe", &AuthMe { user }).await
    }

    /// `getSettings` (`None`: the session's own user).
    pub async fn get_settings(&self, user: Option<Uuid>) -> ClientResult<Settings> {
        self.call("getSettings", &UserRef { user }).await
    }

    /// `updateSetting`.
    pub async fn update_setting(&self, req: &UpdateSetting) -> ClientResult<Settings> {
        self.call("updateSetting", req).await
    }

    /// `getSubscription` (`None`: the session's own user).
    pub async fn get_subscription(&self, user: Option<Uuid>) -> ClientResult<Vec<Subscription>> {
        self.call("getSubscription", &UserRef { user }).await
    }

    /// `updateSubscription`.
    pub async fn update_subscription(
        &self,
        req: &UpdateSubscription,
    ) -> ClientResult<SubscriptionUpdate> {
        self.call("updateSubscription", req).await
    }

    /// `newEntity`.
    pub async fn new_entity(&self, req: &NewEntity) -> ClientResult<Entity> {
        self.call("newEntity", req).await
    }

    /// `getEntity`.
    pub async fn get_entity(&self, id: Uuid) -> ClientResult<Entity> {
        self.call("getEntity", &EntityRef { id }).await
    }

    /// `updateEntity`.
    pub async fn update_entity(&self, req: &UpdateEntity) -> ClientResult<Entity> {
        self.call("updateEntity", req).await
    }

    /// `delEntity`.
    pub async fn del_entity(&self, id: Uuid) -> ClientResult<Deleted> {
        self.call("delEntity", &EntityRef { id }).await
    }

    /// `getUserIndex`, marked with `user`'s subscriptions (a session: always its own).
    pub async fn get_user_index(&self, user: Option<Uuid>) -> ClientResult<UserIndex> {
        self.call("getUserIndex", &GetUserIndex { user }).await
    }

    /// `getSubscribers`: who on `im` wants `kind` events about `entity`.
    pub async fn get_subscribers(
        &self,
        entity: Uuid,
        kind: &str,
        im: &str,
    ) -> ClientResult<Vec<Subscriber>> {
        let req = GetSubscribers {
            entity,
            kind: kind.to_owned(),
            im: im.to_owned(),
        };
        self.call("getSubscribers", &req).await
    }

    /// `getUpcoming` (`None`: the session's own user).
    pub async fn get_upcoming(&self, user: Option<Uuid>) -> ClientResult<Vec<UpcomingStream>> {
        self.call("getUpcoming", &UserRef { user }).await
    }

    /// `createCalendarLink` (`None`: the session's own user); the previous link stops
    /// working.
    pub async fn create_calendar_link(&self, user: Option<Uuid>) -> ClientResult<CalendarLink> {
        self.call("createCalendarLink", &UserRef { user }).await
    }

    /// `revokeCalendarLink` (`None`: the session's own user).
    pub async fn revoke_calendar_link(&self, user: Option<Uuid>) -> ClientResult<CalendarRevoked> {
        self.call("revokeCalendarLink", &UserRef { user }).await
    }
}
