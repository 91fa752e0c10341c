//! Stargazer's Discord bot (docs/ARCHITECTURE.md §5).
//!
//! - [`delivery`]: the Discord adapter on the shared delivery engine (one embed per event
//!   and channel; a stream's first message kept current).
//! - [`rest`]: the REST sender. Creates and edits messages (embeds, link buttons) in
//!   channels through Discord's API v10, keeping to the per-route buckets Discord
//!   announces in its headers and to the global limit by pacing, waiting out any 429, and
//!   sorting failures into [`rest::SendError`]'s classes (a channel gone for the bot,
//!   an invalid request, a transient failure); also registers the slash commands and
//!   edits deferred answers to interactions.
//! - [`interactions`]: the HTTP interactions endpoint Discord POSTs commands to, guarded
//!   by Discord's Ed25519 request signatures, answering slash commands, the kinds menu
//!   and autocomplete through the shared command logic
//!   ([`stargazer_delivery::commands`]).
//! - [`commands`]: the slash commands as registered with Discord, and how a reply looks.
//! - [`config`]: the `[discord]` configuration section.
//!
//! Every base URL is configurable, so tests run against the local Discord of
//! `stargazer-testkit` (`servers::discord`).

pub mod commands;
pub mod config;
pub mod delivery;
pub mod interactions;
pub mod rest;

/// The IM platform name this bot serves, as stored on users and in the delivery log.
pub use stargazer_core::contract::im::DISCORD as IM;

pub use config::DiscordConfig;
pub use rest::{MessageBody, RestClient, SendError, SentMessage};

/// Failures setting up or serving the bot (as opposed to sending: see [`SendError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or invalid.
    #[error(transparent)]
    Config(#[from] stargazer_core::config::ConfigError),
    /// The HTTP client could not be built (its TLS backend failed to initialise).
    #[error("HTTP client: {0}")]
    Client(String),
    /// The interactions endpoint stopped serving.
    #[error("interactions endpoint: {0}")]
    Serve(#[from] std::io::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Discord bot as a platform service: delivery of ready events to the channels
/// subscribed, and the slash commands over the HTTP interactions endpoint on
/// `discord.listen` (registered with Discord at start).
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
        use stargazer_core::service::{Capability, Listen, Needs};
        // The delivery log, and the state store for the sender count; the interactions
        // endpoint's listener.
        Needs {
            listeners: vec![Listen {
                key: "discord.listen",
                addr: self.config.listen,
            }],
            ..Needs::storage_and_bus(&[Capability::Deliveries, Capability::State])
        }
    }

    fn describe(&self) -> String {
        use stargazer_core::config::redact_url;
        format!(
            "Discord REST API at {}; interactions on {}; api {}",
            redact_url(&self.config.api_url),
            self.config.listen,
            redact_url(&self.config.stargazer_api_url)
        )
    }

    /// Registers the slash commands (in the background, retrying), serves the
    /// interactions endpoint and runs delivery until shutdown; either of the two stopping
    /// stops the other.
    async fn run(
        self: Box<Self>,
        mut cx: stargazer_core::service::ServiceContext,
    ) -> Result<(), stargazer_core::service::ServiceError> {
        use stargazer_core::service::ContextError;
        self.config.validate().map_err(Error::from)?;
        let listener = cx
            .take_listeners(1)?
            .into_iter()
            .next()
            .ok_or(ContextError::NoListener(0))?;
        let stores = stargazer_delivery::Stores {
            deliveries: cx.delivery_store()?,
            state: cx.state_store()?,
        };
        let bus = cx.bus()?;
        let interactions = interactions::InteractionsState::new(&self.config)?;
        // A child token, so that one half failing stops the other without cancelling
        // the caller's token.
        let inner = cx.shutdown.child_token();
        let registration = tokio::spawn(commands::register(
            interactions.rest().clone(),
            interactions.application(),
            inner.clone(),
        ));
        let server = async {
            let served = interactions::serve(listener, interactions, inner.clone()).await;
            if let Err(err) = &served {
                tracing::error!(cause = %err, "the interactions endpoint failed; stopping");
            }
            inner.cancel();
            served
        };
        let deliver = async {
            let delivered = delivery::run(
                &self.config,
                stores,
                bus,
                cx.registry.clone(),
                inner.clone(),
            )
            .await;
            inner.cancel();
            delivered
        };
        let (served, delivered) = tokio::join!(server, deliver);
        if let Err(err) = registration.await {
            tracing::warn!(cause = %err, "command registration ended abnormally");
        }
        delivered?;
        served.map_err(Error::from)?;
        Ok(())
    }
}
