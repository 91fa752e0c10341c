//! Stargazer's QQ bot (docs/ARCHITECTURE.md §5), over OneBot v11: the protocol that
//! NapCat, Lagrange.OneBot, LLOneBot and go-cqhttp speak for a logged-in QQ account.
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
//!   `X-Signature` HMAC; message events are parsed and the bot's commands recognised.
//! - [`commands`]: the commands answered (`/subscribe`, `/unsubscribe`, `/list`,
//!   `/lang`, `/settings`, `/delete`, `/help`), changes in a group for its owner and
//!   administrators only, their role confirmed with `get_group_member_info`.
//! - [`delivery`]: ready events to the subscribed groups and private chats, on the
//!   shared delivery engine.
//! - [`config`]: the `[qq]` configuration section.
//!
//! The API base URL is configurable, so tests run against the local OneBot
//! implementation of `stargazer-testkit` (`servers::onebot`).

pub mod commands;
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
    /// Serving the event endpoint failed.
    #[error("event endpoint: {0}")]
    Endpoint(#[source] std::io::Error),
    /// A part of the running bot ended without being asked to.
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
}

/// Command requests waiting for the command task; the endpoint drops further ones (and
/// logs it) rather than hold a report open.
const COMMAND_QUEUE: usize = 64;

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The QQ bot as a platform service: the event endpoint on `qq.listen`, the commands it
/// receives, and delivery of ready events to the groups and private chats subscribed.
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
        use stargazer_core::service::{Capability, Listen, Needs};
        Needs {
            // The event endpoint, where the implementation reports messages.
            listeners: vec![Listen {
                key: "qq.listen",
                addr: self.config.listen,
            }],
            // The delivery log, and the state store for the sender count.
            ..Needs::storage_and_bus(&[Capability::Deliveries, Capability::State])
        }
    }

    fn describe(&self) -> String {
        use stargazer_core::config::redact_url;
        format!(
            "OneBot HTTP API at {}; events on {}{}; api {}",
            redact_url(&self.config.api_url),
            self.config.listen,
            events::EVENTS_PATH,
            redact_url(&self.config.stargazer_api_url)
        )
    }

    /// Serves the event endpoint, answers the commands it receives and runs delivery,
    /// all until shutdown; when one of them ends by itself the others are stopped and
    /// the role fails.
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
        // One client for delivery and replies: one account speaks, at one pace.
        let client = std::sync::Arc::new(OneBotClient::new(&self.config)?);
        let commands = commands::Commands::new(
            client.clone(),
            delivery::api(&self.config)?,
            &self.config.frontend_url,
        );
        let (requests, received) = tokio::sync::mpsc::channel(COMMAND_QUEUE);
        let router = events::router(events::EventsState::new(
            Some(&self.config.secret),
            requests,
        ));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, path = events::EVENTS_PATH, "QQ event endpoint listening");
        }
        // A child token, so that a part ending by itself stops the others without
        // cancelling the caller's token. Each part reports whether it ended unasked.
        let inner = cx.shutdown.child_token();
        let server = async {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(inner.clone().cancelled_owned())
                .await;
            let unasked = !inner.is_cancelled();
            inner.cancel();
            (served.map_err(Error::Endpoint), unasked)
        };
        let answering = async {
            commands::answer_commands(commands, received, inner.clone()).await;
            let unasked = !inner.is_cancelled();
            inner.cancel();
            unasked
        };
        let delivering = async {
            let delivered = delivery::run_with(
                &self.config,
                client.clone(),
                stores,
                bus,
                cx.registry.clone(),
                inner.clone(),
            )
            .await;
            let unasked = !inner.is_cancelled();
            inner.cancel();
            (delivered, unasked)
        };
        let ((served, server_unasked), answering_unasked, (delivered, delivery_unasked)) =
            tokio::join!(server, answering, delivering);
        served?;
        delivered?;
        for (unasked, part) in [
            (server_unasked, "the event endpoint"),
            (answering_unasked, "the command task"),
            (delivery_unasked, "delivery"),
        ] {
            if unasked {
                return Err(Error::Stopped(part).into());
            }
        }
        Ok(())
    }
}
