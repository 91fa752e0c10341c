//! Local servers speaking the protocols of the external services Stargazer talks to: the
//! Telegram Bot API ([`telegram`]), Discord's REST API and a client playing Discord
//! towards a bot's interactions endpoint ([`discord`]), a WebSub hub ([`hub`]), YouTube's
//! Data API and feeds ([`youtube`]), X API v2 timelines ([`x`]), Twitch's Helix and
//! EventSub ([`twitch`]), Bilibili's web APIs ([`bilibili`]), DeepL ([`deepl`]) and a QQ
//! account behind OneBot v11, its HTTP API and event reports ([`onebot`]).
//!
//! Each binds `127.0.0.1:0`, serves until it is dropped, records what it was asked so tests
//! can assert on the conversation, and can be told to fail the way the real service fails
//! (rate limits, outages, quota errors) where a test needs it. The same servers serve the
//! crates' own integration tests and the whole-platform tests of `stargazer-e2e`.

pub mod bilibili;
pub mod deepl;
pub mod discord;
pub mod hub;
pub mod onebot;
pub mod telegram;
pub mod twitch;
pub mod x;
pub mod youtube;

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running HTTP server; stops serving when dropped.
pub struct Served {
    /// The address it listens on.
    pub addr: SocketAddr,
    _stop: DropGuard,
}

impl Served {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves `router` on a fresh loopback port until the returned guard is dropped.
pub async fn serve(router: Router) -> std::io::Result<Served> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!(cause = %err, "test server failed");
        }
    });
    Ok(Served {
        addr,
        _stop: stop.drop_guard(),
    })
}

/// Locks a std mutex, ignoring poisoning: a panicking test thread must not turn every
/// later request of the server into a second panic.
pub use stargazer_core::sync::lock;
