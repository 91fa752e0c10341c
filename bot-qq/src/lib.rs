//! Stargazer's QQ bot (docs/ARCHITECTURE.md §5), over OneBot v11: the protocol that
//! NapCat, Lagrange.OneBot, LLOneBot and go-cqhttp speak for a logged-in QQ account. This
//! crate is its first half, the transport; delivery and commands come later.
//!
//! - [`onebot`]: the HTTP API client (`send_group_msg`, `send_private_msg`, `delete_msg`,
//!   `get_group_member_info`), paced under `qq.global_per_second` and one message per
//!   `qq.group_interval_ms` per group because QQ's risk control punishes bursts, and
//!   sorting failures into [`ApiError`]'s classes (a chat gone, risk control, an
//!   invalid request, bad credentials, a transient failure).
//! - [`message`]: messages as segments (text, image, mention), in the array format the
//!   bot sends and the CQ-code string format implementations may report, with the
//!   protocol's escaping.
//! - [`events`]: the HTTP POST endpoint event reports arrive at, guarded by the
//!   `X-Signature` HMAC; message events are parsed and the bot's commands recognised,
//!   but commands are not implemented yet and are answered so.
//! - [`config`]: the `[qq]` configuration section.
//!
//! The API base URL is configurable, so tests run against the local OneBot
//! implementation of `stargazer-testkit` (`servers::onebot`).

pub mod config;
pub mod delivery;
pub mod events;
pub mod message;
pub mod onebot;

/// The IM platform name this bot serves, as stored on users and in the delivery log.
pub use stargazer_core::contract::im::QQ as IM;

pub use config::QqConfig;
pub use message::{AtTarget, Message, Segment};
pub use onebot::{ApiError, GroupMember, OneBotClient};

/// Failures setting up the bot (as opposed to calling the API: see [`ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or invalid.
    #[error(transparent)]
    Config(#[from] stargazer_core::config::ConfigError),
    /// The HTTP client could not be built (its TLS backend failed to initialise).
    #[error("HTTP client: {0}")]
    Client(String),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The QQ bot as a platform service: delivery of ready events to the groups and private
/// chats subscribed (commands are not served yet: chats are bound by the operator,
/// `stargazer admin channel bind --im qq --chat group:<number>`).
pub struct QqService {
    config: QqConfig,
}

impl QqService {
    /// The bot with these settings.
    pub fn new(config: QqConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl stargazer_core::service::Service for QqService {
    fn name(&self) -> &'static str {
        "bot-qq"
    }

    fn needs(&self) -> stargazer_core::service::Needs {
        use stargazer_core::service::{Capability, Needs};
        // The delivery log, and the state store for the sender count.
        Needs::storage_and_bus(&[Capability::Deliveries, Capability::State])
    }

    fn describe(&self) -> String {
        use stargazer_core::config::redact_url;
        format!(
            "OneBot HTTP API at {}; api {}",
            redact_url(&self.config.api_url),
            redact_url(&self.config.stargazer_api_url)
        )
    }

    async fn run(
        self: Box<Self>,
        cx: stargazer_core::service::ServiceContext,
    ) -> Result<(), stargazer_core::service::ServiceError> {
        self.config.validate().map_err(Error::from)?;
        let stores = stargazer_delivery::Stores {
            deliveries: cx.delivery_store()?,
            state: cx.state_store()?,
        };
        delivery::run(
            &self.config,
            stores,
            cx.bus()?,
            cx.registry.clone(),
            cx.shutdown,
        )
        .await?;
        Ok(())
    }
}
