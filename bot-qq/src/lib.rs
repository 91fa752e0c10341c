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
