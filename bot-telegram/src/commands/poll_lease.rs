//! One bot instance at a time answers commands: Telegram allows one long poll of
//! `getUpdates` per token and ends the older of two overlapping ones with 409 Conflict,
//! so N instances polling at once would fight over every update (and answer some
//! twice). The instance holding the lease `(bot.telegram, getUpdates)` in storage polls;
//! the others deliver only and try for the lease every third of its term, so one of
//! them polls at most about a term after the holder dies, and at once after it stops
//! gracefully (a stop releases the lease).

use std::sync::Arc;
use std::time::Duration;

use stargazer_core::storage::StateStore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::BotConfig;
use crate::{Error, Result};
use stargazer_delivery::api::Api;
use teloxide::Bot;

/// The lease namespace of the Telegram bot's instances.
pub(crate) const NAMESPACE: &str = "bot.telegram";
/// The lease of the one instance that polls `getUpdates`.
pub(crate) const NAME: &str = "getUpdates";

/// Runs the command dispatcher whenever this instance (`owner`) holds the poll lease,
/// until `shutdown`.
pub(crate) async fn run(
    bot: Bot,
    api: Api,
    config: Arc<BotConfig>,
    state: Arc<dyn StateStore>,
    owner: String,
    shutdown: CancellationToken,
) -> Result<()> {
    let term = config.poll_lease();
    let mut standby_logged = false;
    loop {
        match acquire(state.as_ref(), &owner, term).await {
            Ok(true) => {
                standby_logged = false;
                tracing::info!(
                    owner,
                    "holding the getUpdates lease: this instance answers commands"
                );
                let polling = shutdown.child_token();
                let commands = tokio::spawn(super::run(
                    bot.clone(),
                    api.clone(),
                    config.clone(),
                    polling.clone(),
                ));
                let ended = hold(state.as_ref(), &owner, term, commands, &polling).await;
                if shutdown.is_cancelled() || ended.is_err() {
                    // Let a standby poll at once rather than after the term.
                    if let Err(err) = state.lease_release(NAMESPACE, NAME, &owner).await {
                        tracing::warn!(cause = %err, "could not release the getUpdates lease");
                    }
                }
                ended?;
            }
            Ok(false) if !standby_logged => {
                standby_logged = true;
                tracing::info!("another instance polls getUpdates; this one delivers only");
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(cause = %err, "could not ask for the getUpdates lease"),
        }
        if stargazer_core::wait::sleep_unless_cancelled(term / 3, &shutdown)
            .await
            .is_cancelled()
        {
            return Ok(());
        }
    }
}

/// Renews the lease every third of `term` while `commands` runs; stops it (cancelling
/// `polling`) when the lease is lost, or when renewals have failed for so long that the
/// term may run out before the next one. Returns how the dispatcher ended.
async fn hold(
    state: &dyn StateStore,
    owner: &str,
    term: Duration,
    mut commands: tokio::task::JoinHandle<Result<()>>,
    polling: &CancellationToken,
) -> Result<()> {
    let mut renewed = Instant::now();
    let joined = loop {
        tokio::select! {
            joined = &mut commands => break joined,
            _ = tokio::time::sleep(term / 3) => {}
        }
        match acquire(state, owner, term).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!("lost the getUpdates lease; no longer answering commands");
                polling.cancel();
                break commands.await;
            }
            // Another renewal comes a third of a term from now: stop unless it would
            // still land inside the term.
            Err(err) if renewed.elapsed() + term / 3 >= term => {
                tracing::warn!(cause = %err, "cannot renew the getUpdates lease within its term; no longer answering commands");
                polling.cancel();
                break commands.await;
            }
            Err(err) => {
                tracing::warn!(cause = %err, "could not renew the getUpdates lease; retrying")
            }
        }
    };
    joined.map_err(|err| Error::Task(format!("commands: {err}")))?
}

/// Takes or renews the lease for `owner`; whether it holds it now.
async fn acquire(
    state: &dyn StateStore,
    owner: &str,
    term: Duration,
) -> stargazer_core::storage::Result<bool> {
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::from_std(term).unwrap_or(chrono::Duration::seconds(15));
    Ok(state
        .lease_acquire(NAMESPACE, NAME, owner, now, until)
        .await?
        .is_some())
}
