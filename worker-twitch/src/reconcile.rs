//! Keeping the EventSub subscriptions of held broadcasters in place.
//!
//! A full reconciliation lists every subscription of the app (`GET
//! /eventsub/subscriptions`, 100 per page) and looks at those whose webhook callback is
//! ours: a held broadcaster's subscription that is `enabled` or
//! `webhook_callback_verification_pending` counts as held; one in any other status
//! (`webhook_callback_verification_failed`, `notification_failures_exceeded`,
//! `authorization_revoked`, …) is deleted and created again; one whose broadcaster is no
//! Twitch task in storage at all is deleted (`delete_orphans`). What a held broadcaster
//! lacks is created. A broadcaster merely held by another worker is left alone, so N
//! workers sharing the callback never undo each other's work.
//!
//! When only a few broadcasters are new (an assignment after start), creating their
//! subscriptions outright (a 409 means "already there") costs fewer calls than listing
//! everything; the reconciler picks whichever is cheaper, judging by the size of the
//! last listing, and lists in full every `reconcile_interval_seconds` anyway.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use stargazer_core::backoff::Backoff;
use stargazer_core::wait::{
    backoff_unless_cancelled, sleep_unless_cancelled, sleep_until_unless_cancelled,
};
use tokio::time::Instant;

use crate::helix::{Created, HelixError, SUBSCRIPTION_TYPES};
use crate::runner::Shared;

/// Statuses of a subscription that still works or soon will.
const HEALTHY: [&str; 2] = ["enabled", "webhook_callback_verification_pending"];
/// Pages listed at most in one reconciliation (10,000 subscriptions per type limit × 3).
const MAX_PAGES: usize = 1000;

/// What one reconciliation did, in Helix calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// `GET /eventsub/subscriptions` pages.
    pub(crate) pages: usize,
    /// Subscriptions created (409s included).
    pub(crate) creates: usize,
    /// Subscriptions deleted.
    pub(crate) deletes: usize,
    /// Creates or deletes that failed.
    pub(crate) failures: usize,
}

/// Until shutdown: reconcile when asked (a task started, a revocation to repair) after
/// `reconcile_delay_ms`, and in full every `reconcile_interval_seconds`; retry failures
/// with backoff.
pub(crate) async fn run(shared: Arc<Shared>) {
    let config = shared.config.clone();
    let interval = Duration::from_secs(config.reconcile_interval_seconds);
    let mut backoff = Backoff::new(
        Duration::from_millis(config.retry_initial_ms.max(1)),
        Duration::from_secs(config.retry_max_seconds.max(1)),
    );
    let mut next_full = Instant::now() + interval;
    // Pages of the last listing; unknown before the first.
    let mut last_pages: Option<usize> = None;
    loop {
        let woken = tokio::select! {
            _ = shared.wake.notified() => true,
            waited = sleep_until_unless_cancelled(next_full, &shared.shutdown) => {
                if waited.is_cancelled() {
                    return;
                }
                false
            }
        };
        if woken
            && sleep_unless_cancelled(
                Duration::from_millis(config.reconcile_delay_ms),
                &shared.shutdown,
            )
            .await
            .is_cancelled()
        {
            return;
        }
        // Listing costs its pages; creating outright three calls per new broadcaster.
        let full = Instant::now() >= next_full
            || last_pages.is_none_or(|pages| pages < 3 * shared.pending_len());
        let result = if full {
            full_reconcile(&shared).await
        } else {
            ensure_pending(&shared).await
        };
        match result {
            Ok(report) => {
                backoff.reset();
                if full {
                    last_pages = Some(report.pages);
                    next_full = Instant::now() + interval;
                    let held = shared.held_broadcasters();
                    match crate::notify::sweep_ended(&shared, &held, chrono::Utc::now()).await {
                        Ok(0) => {}
                        Ok(ended) => tracing::info!(ended, "ended streams Helix no longer lists"),
                        // The next full reconciliation sweeps again.
                        Err(err) => tracing::warn!(cause = %err, "sweep of live streams failed"),
                    }
                }
                if report != Report::default() {
                    tracing::info!(
                        full,
                        pages = report.pages,
                        creates = report.creates,
                        deletes = report.deletes,
                        "subscriptions reconciled"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(cause = %err, full, "subscription reconciliation failed; retrying");
                if backoff_unless_cancelled(&mut backoff, &shared.shutdown)
                    .await
                    .is_cancelled()
                {
                    return;
                }
                shared.wake.notify_one();
            }
        }
    }
}

/// Why a reconciliation must be retried.
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error(transparent)]
    Helix(#[from] HelixError),
    #[error("{0} subscription changes failed")]
    Partial(usize),
}

/// Creates the subscriptions of the pending broadcasters outright.
async fn ensure_pending(shared: &Arc<Shared>) -> Result<Report, ReconcileError> {
    let pending: Vec<String> = shared
        .take_pending()
        .into_iter()
        .filter(|b| shared.holds(b))
        .collect();
    let wanted: Vec<(String, &'static str, &'static str)> = pending
        .iter()
        .flat_map(|b| {
            SUBSCRIPTION_TYPES
                .iter()
                .map(move |(k, v)| (b.clone(), *k, *v))
        })
        .collect();
    let mut report = Report::default();
    let failed = create_all(shared, wanted, &mut report).await;
    if !failed.is_empty() {
        shared.return_pending(failed);
        return Err(ReconcileError::Partial(report.failures));
    }
    Ok(report)
}

/// Lists everything and repairs what differs (see the module documentation).
async fn full_reconcile(shared: &Arc<Shared>) -> Result<Report, ReconcileError> {
    // Taken first: a broadcaster started during the listing is pending again and gets
    // its own pass.
    let _ = shared.take_pending();
    let held = shared.held_broadcasters();
    let callback = shared.config.callback_url.as_str();
    let types: HashSet<&str> = SUBSCRIPTION_TYPES.iter().map(|(k, _)| *k).collect();
    let mut report = Report::default();
    let mut present: HashSet<(String, String)> = HashSet::new();
    let mut broken: Vec<String> = Vec::new();
    let mut strangers: Vec<(String, String)> = Vec::new();
    let mut statuses: HashMap<String, i64> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match shared.helix.list_subscriptions(cursor.as_deref()).await {
            Ok(page) => page,
            Err(err) => {
                // Held broadcasters stay wanted: the retry lists again.
                shared.return_pending(held);
                return Err(err.into());
            }
        };
        report.pages += 1;
        for sub in page.data {
            let ours = sub.transport.method == "webhook"
                && sub.transport.callback.as_deref() == Some(callback)
                && types.contains(sub.kind.as_str());
            if !ours {
                continue;
            }
            *statuses.entry(sub.status.clone()).or_default() += 1;
            let broadcaster = sub.condition.broadcaster_user_id;
            if held.contains(&broadcaster) {
                if HEALTHY.contains(&sub.status.as_str()) {
                    present.insert((sub.kind, broadcaster));
                } else {
                    tracing::info!(broadcaster, kind = %sub.kind, status = %sub.status, "subscription not working; recreating it");
                    broken.push(sub.id);
                }
            } else {
                strangers.push((sub.id, broadcaster));
            }
        }
        cursor = page.cursor;
        if cursor.is_none() || report.pages >= MAX_PAGES {
            break;
        }
    }
    shared
        .metrics
        .set_subscriptions(statuses.iter().map(|(s, n)| (s.as_str(), *n)));
    let mut deletes = broken;
    if shared.config.delete_orphans && !strangers.is_empty() {
        match shared.twitch_tasks().await {
            Ok(tasks) => {
                for (id, broadcaster) in strangers {
                    if !tasks.contains_key(&broadcaster) {
                        tracing::info!(broadcaster, subscription = %id, "no task watches this broadcaster; deleting its subscription");
                        deletes.push(id);
                    }
                }
            }
            // Deleting on a guess could cut off a broadcaster someone watches.
            Err(err) => {
                tracing::warn!(cause = %err, "could not list the Twitch tasks; orphans kept for now")
            }
        }
    }
    let concurrency = shared.config.subscribe_concurrency;
    let deleting: Vec<BoxFuture<'static, bool>> = deletes
        .into_iter()
        .map(|id| delete_one(shared.clone(), id))
        .collect();
    let deleted: Vec<bool> = futures::stream::iter(deleting)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    report.deletes = deleted.iter().filter(|ok| **ok).count();
    report.failures += deleted.len() - report.deletes;
    let wanted: Vec<(String, &'static str, &'static str)> = held
        .iter()
        .flat_map(|b| {
            SUBSCRIPTION_TYPES
                .iter()
                .map(move |(k, v)| (b.clone(), *k, *v))
        })
        .filter(|(b, k, _)| !present.contains(&(k.to_string(), b.clone())))
        .collect();
    let failed = create_all(shared, wanted, &mut report).await;
    if report.failures > 0 {
        shared.return_pending(failed);
        return Err(ReconcileError::Partial(report.failures));
    }
    Ok(report)
}

/// Creates `wanted` with bounded concurrency; returns the broadcasters of failed creates.
async fn create_all(
    shared: &Arc<Shared>,
    wanted: Vec<(String, &'static str, &'static str)>,
    report: &mut Report,
) -> HashSet<String> {
    let concurrency = shared.config.subscribe_concurrency;
    let creating: Vec<BoxFuture<'static, (String, bool)>> = wanted
        .into_iter()
        .map(|(broadcaster, kind, version)| create_one(shared.clone(), broadcaster, kind, version))
        .collect();
    let results: Vec<(String, bool)> = futures::stream::iter(creating)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut failed = HashSet::new();
    for (broadcaster, ok) in results {
        report.creates += 1;
        if !ok {
            report.failures += 1;
            failed.insert(broadcaster);
        }
    }
    failed
}

fn delete_one(shared: Arc<Shared>, id: String) -> BoxFuture<'static, bool> {
    Box::pin(async move {
        match shared.helix.delete_subscription(&id).await {
            Ok(()) => {
                shared.metrics.subscription_change("deleted");
                true
            }
            Err(err) => {
                shared.metrics.subscription_change("failed");
                tracing::warn!(subscription = %id, cause = %err, "could not delete a subscription");
                false
            }
        }
    })
}

fn create_one(
    shared: Arc<Shared>,
    broadcaster: String,
    kind: &'static str,
    version: &'static str,
) -> BoxFuture<'static, (String, bool)> {
    Box::pin(async move {
        let created = shared
            .helix
            .create_subscription(kind, version, &broadcaster)
            .await;
        let ok = match created {
            Ok(Created::New(id)) => {
                shared.metrics.subscription_change("created");
                tracing::debug!(broadcaster, kind, subscription = %id, "subscription created");
                true
            }
            Ok(Created::Exists) => {
                shared.metrics.subscription_change("exists");
                true
            }
            Err(err) => {
                shared.metrics.subscription_change("failed");
                tracing::warn!(broadcaster, kind, cause = %err, "could not create a subscription");
                false
            }
        };
        (broadcaster, ok)
    })
}
