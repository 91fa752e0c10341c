//! Stargazer's Telegram bot (docs/ARCHITECTURE.md §5, bot-telegram).
//!
//! Two halves run side by side in [`TelegramService`]:
//!
//! - `commands`: a teloxide [`Dispatcher`](teloxide::dispatching::Dispatcher) answering
//!   chat commands (`/start`, `/subscribe`, `/settings`, …) and inline-keyboard presses.
//!   Everything it knows about users and entities comes from the Stargazer api through
//!   its typed client (`api`); in groups only chat admins may change anything.
//! - `delivery`: consumes ready events from the durable queue `stargazer.bot.telegram`,
//!   asks the api who is subscribed, composes each chat's message in its language and
//!   hands it to a scheduler that keeps within Telegram's rate limits. A delivery log in
//!   storage makes every (event, chat) pair go out at most once across redeliveries and
//!   restarts; an event is acked only once every recipient is sent or recorded failed.
//!   Only permanent refusals (400, 403) are recorded failed: while Telegram is down the
//!   event is requeued with a growing pause and resumes with the chats still missing.
//!   A stream gets one message per chat, kept current: the bot remembers it in the
//!   state store, later events of the stream reply to it and edit it.
//!
//! [`config::BotConfig`] is the `[telegram]` section; `telegram` builds the Bot API
//! client from it (the base URL is configurable so tests use a local server).

mod commands;
mod config;
mod delivery;
mod i18n;
mod telegram;

use std::sync::Arc;

use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::service::{Capability, Needs, Service, ServiceContext, ServiceError};
use stargazer_core::storage::{DeliveryStore, StateStore};
use stargazer_core::CancellationToken;

pub use config::BotConfig;

/// The IM platform name this bot serves, as stored on users and in the delivery log.
pub use stargazer_core::contract::im::TELEGRAM as IM;

/// Errors of the bot-telegram service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] stargazer_core::config::ConfigError),
    /// The Bot API client could not be built.
    #[error("telegram client: {0}")]
    Telegram(String),
    /// A task of the service failed unexpectedly.
    #[error("task failed: {0}")]
    Task(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the bot until `shutdown` is cancelled: the command dispatcher and the delivery
/// consumer, with its metrics (events settled, sends, 429s, retries, migrations) in
/// `registry`. On shutdown it stops polling Telegram, stops starting sends, lets sends in
/// flight finish and be recorded, requeues events it had not finished, and returns once
/// every task has ended.
async fn run_bot(
    config: BotConfig,
    storage: Arc<dyn DeliveryStore>,
    state: Arc<dyn StateStore>,
    bus: Arc<dyn Bus>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let bot = telegram::build_bot(&config)?;
    let api = stargazer_delivery::api::Api::new(
        IM,
        &config.stargazer_api_url,
        "telegram.stargazer_api_url",
        &config.stargazer_api_username,
        &config.stargazer_api_password,
    )?;

    // A child token: a failing half stops the other without cancelling the caller's
    // token (which, in standalone mode, other services share).
    let stop = shutdown.child_token();
    // Commands only while this instance holds the poll lease (one poller per token).
    let owner = format!("bot-{}", uuid::Uuid::new_v4().simple());
    let mut commands = tokio::spawn(commands::poll_lease::run(
        bot.clone(),
        api.clone(),
        config.clone(),
        state.clone(),
        owner,
        stop.clone(),
    ));
    let mut delivery = tokio::spawn(delivery::run(
        bot,
        api,
        stargazer_delivery::Stores {
            deliveries: storage,
            state,
        },
        bus,
        config,
        registry.clone(),
        stop.clone(),
    ));

    let (commands, delivery) = tokio::select! {
        first = &mut commands => {
            stop.cancel();
            (first, delivery.await)
        }
        first = &mut delivery => {
            stop.cancel();
            (commands.await, first)
        }
    };
    let mut failure = None;
    for (name, joined) in [("commands", commands), ("delivery", delivery)] {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(task = name, cause = %err, "bot task failed");
                failure.get_or_insert(err);
            }
            Err(err) => {
                tracing::error!(task = name, cause = %err, "bot task panicked");
                failure.get_or_insert(Error::Task(format!("{name}: {err}")));
            }
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The Telegram bot as a platform service.
pub struct TelegramService {
    config: BotConfig,
}

impl TelegramService {
    /// The bot with these settings.
    pub fn new(config: BotConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Service for TelegramService {
    fn name(&self) -> &'static str {
        "bot-telegram"
    }

    fn needs(&self) -> Needs {
        // The delivery log, and the state store for the first message of each stream in
        // each chat (what later events of the stream edit and reply to).
        Needs::storage_and_bus(&[Capability::Deliveries, Capability::State])
    }

    fn describe(&self) -> String {
        use stargazer_core::config::redact_url;
        format!(
            "Bot API at {}; api {}; /settings links to {}",
            redact_url(&self.config.api_url),
            redact_url(&self.config.stargazer_api_url),
            redact_url(&self.config.frontend_url)
        )
    }

    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        let bus = cx.bus()?;
        run_bot(
            self.config,
            cx.delivery_store()?,
            cx.state_store()?,
            bus,
            &cx.registry,
            cx.shutdown,
        )
        .await?;
        Ok(())
    }
}
