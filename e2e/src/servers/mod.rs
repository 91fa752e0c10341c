//! Local servers speaking the protocols of the external services Stargazer talks to.
//! Each binds `127.0.0.1:0`, serves until it is dropped, and records what it was asked so
//! tests can assert on the conversation.

pub mod deepl;
pub mod hub;
pub mod telegram;
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
pub async fn serve(router: Router) -> crate::Result<Served> {
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
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
