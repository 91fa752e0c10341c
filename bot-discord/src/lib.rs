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
