//! Stargazer's Discord bot (docs/ARCHITECTURE.md §5): its first half, the transport.
//!
//! - [`rest`]: the REST sender. Creates and edits messages (embeds, link buttons) in
//!   channels through Discord's API v10, keeping to the per-route buckets Discord
//!   announces in its headers and to the global limit by pacing, waiting out any 429, and
//!   sorting failures into [`rest::SendError`]'s classes (a channel gone for the bot,
//!   an invalid request, a transient failure).
//! - [`interactions`]: the HTTP interactions endpoint Discord POSTs commands to, guarded
//!   by Discord's Ed25519 request signatures. Commands themselves are not implemented
//!   yet; the endpoint answers Discord's PING and says so to everyone else.
//! - [`config`]: the `[discord]` configuration section.
//!
//! Every base URL is configurable, so tests run against the local Discord of
//! `stargazer-testkit` (`servers::discord`).

pub mod config;
pub mod delivery;
pub mod interactions;
pub mod rest;

/// The IM platform name this bot serves, as stored on users and in the delivery log.
pub use stargazer_core::contract::im::DISCORD as IM;

pub use config::DiscordConfig;
pub use rest::{MessageBody, RestClient, SendError, SentMessage};

/// Failures setting up the bot (as opposed to sending: see [`SendError`]).
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

/// The Discord bot as a platform service: delivery of ready events to the channels
/// subscribed (commands are not served yet: channels are bound by the operator,
/// `stargazer admin channel bind --im discord`).
pub struct DiscordService {
    config: DiscordConfig,
}

impl DiscordService {
    /// The bot with these settings.
    pub fn new(config: DiscordConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl stargazer_core::service::Service for DiscordService {
    fn name(&self) -> &'static str {
        "bot-discord"
    }

    fn needs(&self) -> stargazer_core::service::Needs {
        use stargazer_core::service::{Capability, Needs};
        // The delivery log, and the state store for the sender count.
        Needs::storage_and_bus(&[Capability::Deliveries, Capability::State])
    }

    fn describe(&self) -> String {
        use stargazer_core::config::redact_url;
        format!(
            "Discord REST API at {}; api {}",
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
