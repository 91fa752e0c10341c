//! Leader election between coordinator instances sharing one storage
//! (docs/ARCHITECTURE.md §5, coordinator).
//!
//! Every instance asks for the lease `("coordinator", "leader")` of the state store; the
//! one holding it *leads*: it runs the engine and the task watcher for as long as its
//! term lasts and serves workers. The others are *standbys*: they refuse workers, naming
//! the leader, and ask for the lease every quarter term. The leader renews every quarter
//! term; when a renewal is refused (another holder) or storage has not answered by the
//! time the term would run out before the next try, it steps down at once: it stops
//! accepting workers, closes their sockets, stops its engine without storing its final
//! snapshot and becomes a standby. A graceful shutdown stores the final snapshot and then
//! releases the lease, so a standby takes over at its next poll.
//!
//! A new leader starts exactly like a restarted coordinator: it loads the snapshot the
//! previous leader kept, so workers reconnecting with the tasks they hold keep them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stargazer_core::storage::{EntityStore, Lease, StateStore};
use stargazer_core::CancellationToken;
use tokio::sync::{mpsc, watch};

use crate::config::CoordinatorConfig;
use crate::engine::{self, EngineEvent};
use crate::metrics::Metrics;
use crate::{snapshot, tasks, ENGINE_QUEUE};

/// Storage namespace of the leader lease and of the leader's advertisement.
pub(crate) const NAMESPACE: &str = "coordinator";
/// Name of the leader lease within [`NAMESPACE`].
pub(crate) const LEASE: &str = "leader";
/// Key-value key (in [`NAMESPACE`]) where the leader advertises who it is and its URL.
pub(crate) const ADVERTISEMENT: &str = "leader";

/// Who this coordinator instance is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// The lease owner name.
    pub(crate) id: String,
    /// Where workers reach it, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
}

impl Identity {
    /// This instance's identity from the configuration: the configured id or a random one.
    pub(crate) fn from_config(config: &CoordinatorConfig) -> Self {
        let id = match config.instance_id.trim() {
            "" => format!("coordinator-{}", uuid::Uuid::new_v4()),
            id => id.to_owned(),
        };
        let url = Some(config.advertise_url.trim().to_owned()).filter(|url| !url.is_empty());
        Self { id, url }
    }
}

/// One leadership term: what the worker sockets and `/v1/status` talk to while it lasts.
#[derive(Debug, Clone)]
pub(crate) struct Term {
    /// The lease epoch of the term.
    pub(crate) epoch: u64,
    /// The term's engine.
    pub(crate) engine: mpsc::Sender<EngineEvent>,
    /// Cancelled when the term ends (step-down or shutdown): sockets close on it.
    pub(crate) stop: CancellationToken,
}

/// What this instance is right now.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// It leads.
    Leader(Term),
    /// It does not; `leader` is the current holder as last seen (if any).
    Standby { leader: Option<Identity> },
}

/// What the election needs to run terms.
pub(crate) struct Election {
    pub(crate) config: Arc<CoordinatorConfig>,
    pub(crate) identity: Identity,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) tasks: Arc<dyn EntityStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) role: watch::Sender<Role>,
}

/// How a term ended.
enum TermEnd {
    /// The coordinator is shutting down.
    Shutdown,
    /// The lease is lost (or could not be renewed in time).
    SteppedDown,
}

impl Election {
    /// Alternates between standby and leader until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        tracing::info!(instance_id = %self.identity.id, url = ?self.identity.url, "coordinator instance");
        loop {
            let Some(lease) = self.wait_for_lease(&shutdown).await else {
                return;
            };
            match self.lead(lease, &shutdown).await {
                TermEnd::Shutdown => return,
                TermEnd::SteppedDown => continue,
            }
        }
    }

    /// Polls the lease every quarter term until it is granted; `None` on shutdown.
    async fn wait_for_lease(&self, shutdown: &CancellationToken) -> Option<Lease> {
        let poll = self.config.lease_poll();
        loop {
            match self.acquire(Utc::now(), self.config.lease_term()).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => self.note_leader().await,
                Err(cause) => {
                    tracing::warn!(%cause, "cannot ask for the leader lease; still a standby")
                }
            }
            if stargazer_core::wait::sleep_unless_cancelled(poll, shutdown)
                .await
                .is_cancelled()
            {
                return None;
            }
        }
    }

    /// Takes or renews the lease for one term from `now`, waiting at most `patience` so a
    /// hanging storage call cannot outlive the leader's term.
    async fn acquire(
        &self,
        now: DateTime<Utc>,
        patience: Duration,
    ) -> Result<Option<Lease>, String> {
        let until = now + chrono_duration(self.config.lease_term());
        let asked = self
            .state
            .lease_acquire(NAMESPACE, LEASE, &self.identity.id, now, until);
        match tokio::time::timeout(patience, asked).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer from storage within {patience:?}")),
        }
    }

    /// Records who holds the lease, for the refusals and `/v1/status`.
    async fn note_leader(&self) {
        let holder = match self.state.lease_list(NAMESPACE).await {
            Ok(leases) => leases.into_iter().find(|lease| lease.name == LEASE),
            Err(err) => {
                tracing::debug!(cause = %err, "cannot read the leader lease");
                return;
            }
        };
        let Some(holder) = holder else { return };
        let known = match &*self.role.borrow() {
            Role::Standby {
                leader: Some(leader),
            } => leader.id == holder.owner && leader.url.is_some(),
            _ => false,
        };
        if known {
            return;
        }
        // The advertisement carries the URL; until the holder has written it (or when it
        // advertises none), the id alone is named.
        let url = match self.state.kv_get(NAMESPACE, ADVERTISEMENT).await {
            Ok(Some(value)) => serde_json::from_value::<Identity>(value)
                .ok()
                .filter(|advertised| advertised.id == holder.owner)
                .and_then(|advertised| advertised.url),
            _ => None,
        };
        let leader = Identity {
            id: holder.owner,
            url,
        };
        self.role.send_if_modified(|role| match role {
            Role::Standby { leader: known } if known.as_ref() != Some(&leader) => {
                tracing::info!(leader_id = %leader.id, leader_url = ?leader.url, "standby: another coordinator leads");
                *known = Some(leader);
                true
            }
            _ => false,
        });
    }

    /// Leads for as long as the lease is renewed.
    async fn lead(&self, lease: Lease, shutdown: &CancellationToken) -> TermEnd {
        let epoch = lease.epoch;
        let mut until = lease.until;
        tracing::info!(instance_id = %self.identity.id, epoch, "leading: loading the last assignment and accepting workers");
        if let Ok(value) = serde_json::to_value(&self.identity) {
            if let Err(err) = self.state.kv_put(NAMESPACE, ADVERTISEMENT, &value).await {
                tracing::warn!(cause = %err, "cannot advertise this coordinator as the leader");
            }
        }
        let stop = CancellationToken::new();
        let (engine_tx, engine_rx) = mpsc::channel(ENGINE_QUEUE);
        let (feed_tx, feed_rx) = mpsc::channel(ENGINE_QUEUE);
        let engine = tokio::spawn(engine::run(
            self.config.clone(),
            self.state.clone(),
            self.metrics.clone(),
            engine_rx,
            feed_rx,
            stop.clone(),
        ));
        let watcher = tokio::spawn(tasks::watch(self.tasks.clone(), feed_tx, stop.clone()));
        self.role.send_replace(Role::Leader(Term {
            epoch,
            engine: engine_tx,
            stop: stop.clone(),
        }));

        let poll = self.config.lease_poll();
        let end = loop {
            if stargazer_core::wait::sleep_unless_cancelled(poll, shutdown)
                .await
                .is_cancelled()
            {
                break TermEnd::Shutdown;
            }
            // A renewal answered after the term ran out is worthless: wait no longer.
            let now = Utc::now();
            let left = (until - now).to_std().unwrap_or_default();
            match self.acquire(now, left).await {
                Ok(Some(renewed)) if renewed.epoch == epoch => until = renewed.until,
                Ok(Some(renewed)) => {
                    // Someone else held it in between: whatever this instance did since
                    // then ran on a stale term.
                    tracing::warn!(
                        epoch,
                        now_epoch = renewed.epoch,
                        "the lease changed hands in between; stepping down"
                    );
                    break TermEnd::SteppedDown;
                }
                Ok(None) => {
                    tracing::warn!(
                        epoch,
                        "another coordinator holds the leader lease; stepping down"
                    );
                    break TermEnd::SteppedDown;
                }
                Err(cause) => {
                    // Only a renewal that lands before the term ends keeps the lead: the
                    // next try is a quarter term away, so give up once that is too late.
                    if Utc::now() + chrono_duration(poll) >= until {
                        tracing::warn!(%cause, epoch, "cannot renew the leader lease within its term; stepping down");
                        break TermEnd::SteppedDown;
                    }
                    tracing::warn!(%cause, epoch, "cannot renew the leader lease; retrying");
                }
            }
        };

        // Refuse new workers first, then close the term's sockets and stop its engine.
        self.role.send_replace(Role::Standby { leader: None });
        stop.cancel();
        if let Err(err) = watcher.await {
            tracing::error!(cause = %err, "task watcher failed");
        }
        let last = match engine.await {
            Ok(last) => Some(last),
            Err(err) => {
                tracing::error!(cause = %err, "engine failed");
                None
            }
        };
        match end {
            TermEnd::Shutdown => {
                if let Some(last) = last {
                    if let Err(err) = snapshot::save(&self.state, &last).await {
                        tracing::warn!(cause = %err, "cannot store the final assignment snapshot");
                    }
                }
                match self
                    .state
                    .lease_release(NAMESPACE, LEASE, &self.identity.id)
                    .await
                {
                    Ok(true) => tracing::info!(epoch, "released the leader lease"),
                    Ok(false) => tracing::warn!(epoch, "the leader lease was no longer held"),
                    Err(err) => {
                        tracing::warn!(cause = %err, "cannot release the leader lease; a standby takes over when it runs out")
                    }
                }
            }
            TermEnd::SteppedDown => {
                tracing::info!(epoch, "stepped down; now a standby");
            }
        }
        end
    }
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}
