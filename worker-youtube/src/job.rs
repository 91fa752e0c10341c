//! One task's job: keep the channel's WebSub subscription alive and poll its feed.
//!
//! Subscription life cycle: reuse a persisted, still-valid lease of this worker's callback
//! (a restart sends nothing to the hub); otherwise subscribe (same subscription id and
//! secret when a lease record exists, so a retry or restart never creates a second
//! subscription). After the hub accepts, wait for its verification GET; without one within
//! `verify_timeout_seconds`, ask again. Renew `renew_margin_seconds` (at most half the
//! lease) before expiry. Hub errors are retried with capped exponential backoff.
//!
//! On stop (unassignment) the job unsubscribes and deletes its lease; on shutdown or abort
//! it just ends, leaving the lease for the next start.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use stargazer_core::backoff::Backoff;
use stargazer_core::wait::{sleep_unless_cancelled, Waited};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::atom::parse_feed;
use crate::batcher::{Origin, TaskRef};
use crate::hub::{HubRequest, Mode};
use crate::runner::{Phase, Shared, SubEntry, Verified};
use crate::store::{self, Lease, SYNCED_NAMESPACE};

/// What a job reads from storage before it starts polling.
struct StartState {
    /// Whether the channel had its first sync.
    synced: bool,
    /// When the channel began to be tracked.
    tracked_since: DateTime<Utc>,
    /// The last accepted push or successful poll.
    last_contact: Option<DateTime<Utc>>,
}

/// What the subscription waits for next.
#[derive(Debug, Clone, Copy)]
enum Status {
    /// Send a subscribe request at this instant.
    Due(Instant),
    /// Accepted by the hub; resend if no verification arrives by this instant.
    Waiting(Instant),
    /// Verified; renew at this instant.
    Active(Instant),
}

impl Status {
    fn at(self) -> Instant {
        match self {
            Status::Due(at) | Status::Waiting(at) | Status::Active(at) => at,
        }
    }
}

struct Subscription {
    lease: Lease,
    verified: watch::Receiver<Verified>,
    unsubscribed: Arc<Notify>,
    status: Status,
}

/// Runs the job of `task` until `stop` (unsubscribe) or `abort` (keep the lease).
pub(crate) async fn run(
    shared: Arc<Shared>,
    task: Arc<TaskRef>,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let span = tracing::info_span!("youtube_task", task_id = %task.task_id, entity_id = %task.entity, channel = %task.channel_id);
    Job {
        shared,
        task,
        stop,
        abort,
    }
    .run()
    .instrument(span)
    .await
}

struct Job {
    shared: Arc<Shared>,
    task: Arc<TaskRef>,
    stop: CancellationToken,
    abort: CancellationToken,
}

enum Ended {
    Stopped,
    Aborted,
}

impl Job {
    async fn run(self) {
        let config = self.shared.config.clone();
        let mut subscription = if config.websub_enabled() {
            match self.setup().await {
                Some(sub) => Some(sub),
                // Aborted or stopped while the storage was unreachable.
                None => return,
            }
        } else {
            None
        };

        let interval = Duration::from_secs(config.poll_interval_seconds);
        let Some(state) = self.start_state().await else {
            return;
        };
        let mut initial = !state.synced;
        let tracked_since = state.tracked_since;
        // Out of touch for longer than a hub redelivers: pushes may have been lost.
        let catch_up = !initial
            && state
                .last_contact
                .is_none_or(|at| Utc::now() - at > config.catch_up_after());
        if catch_up {
            tracing::info!(last_contact = ?state.last_contact, "not heard from recently; polling the feed now");
        }
        let mut next_poll = if initial || catch_up {
            Some(Instant::now())
        } else if interval.is_zero() {
            None
        } else {
            // Spread the polls of many channels over the interval.
            Some(Instant::now() + interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0)))
        };

        let mut hub_backoff = Backoff::new(
            Duration::from_millis(config.hub_retry_initial_ms.max(1)),
            Duration::from_secs(config.hub_retry_max_seconds.max(1)),
        );
        let ended = loop {
            let sub_at = subscription.as_ref().map(|s| s.status.at());
            tokio::select! {
                biased;
                _ = self.abort.cancelled() => break Ended::Aborted,
                _ = self.stop.cancelled() => break Ended::Stopped,
                changed = async {
                    match subscription.as_mut() {
                        Some(sub) => sub.verified.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(sub) = subscription.as_mut() else { continue };
                    if changed.is_err() {
                        continue;
                    }
                    if let Some((expires, granted)) = *sub.verified.borrow_and_update() {
                        sub.lease.expires_at = Some(expires);
                        sub.lease.granted_seconds = Some(granted);
                        sub.status = Status::Active(self.renew_at(expires, granted));
                        hub_backoff.reset();
                        tracing::info!(subscription = %sub.lease.subscription, %expires, "subscription verified");
                    }
                }
                _ = tokio::time::sleep_until(sub_at.unwrap_or_else(Instant::now)), if sub_at.is_some() => {
                    let Some(sub) = subscription.as_mut() else { continue };
                    if let Status::Waiting(_) = sub.status {
                        tracing::warn!(subscription = %sub.lease.subscription, "hub did not verify in time; asking again");
                    }
                    match self.hub_request(Mode::Subscribe, &sub.lease).await {
                        Some(Ok(())) => {
                            sub.status = Status::Waiting(
                                Instant::now() + Duration::from_secs(config.verify_timeout_seconds.max(1)),
                            );
                        }
                        Some(Err(err)) => {
                            let delay = hub_backoff.next_delay();
                            tracing::warn!(cause = %err, retry_in = ?delay, "subscribe failed");
                            sub.status = Status::Due(Instant::now() + delay);
                        }
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(next_poll.unwrap_or_else(Instant::now)), if next_poll.is_some() => {
                    let ok = self.poll(initial.then_some(tracked_since)).await;
                    if ok && initial {
                        initial = false;
                    }
                    next_poll = if !interval.is_zero() {
                        Some(Instant::now() + interval)
                    } else if initial {
                        Some(Instant::now() + Duration::from_secs(300))
                    } else {
                        None
                    };
                }
            }
        };

        if let Some(sub) = subscription {
            match ended {
                Ended::Stopped => self.unsubscribe(sub).await,
                Ended::Aborted => self.shared.deregister(sub.lease.subscription),
            }
        }
        tracing::info!("task ended");
    }

    /// Sleeps for `delay` unless stopped or aborted first ([`Waited::Cancelled`]). Both
    /// tokens are watched: this worker's job set stops gracefully, so `stop` is not a
    /// child of `abort` and neither covers the other.
    async fn sleep_unless_ended(&self, delay: Duration) -> Waited {
        tokio::select! {
            biased;
            _ = self.abort.cancelled() => Waited::Cancelled,
            waited = sleep_unless_cancelled(delay, &self.stop) => waited,
        }
    }

    fn renew_at(&self, expires: DateTime<Utc>, granted: u64) -> Instant {
        let margin = self
            .shared
            .config
            .renew_margin_seconds
            .min(granted / 2)
            .max(1);
        let renew = expires - crate::store::lease_span(margin);
        let wait = (renew - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + wait
    }

    /// Loads or creates this worker's lease for the task and registers it with the
    /// callback server. `None` when stopped or aborted before storage answered.
    async fn setup(&self) -> Option<Subscription> {
        let config = &self.shared.config;
        let storage = self.shared.storage.as_ref();
        let topic = config.topic(&self.task.channel_id);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let leases = loop {
            match store::leases(storage, self.task.task_id).await {
                Ok(leases) => break leases,
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(cause = %err, retry_in = ?delay, "could not load leases");
                    if self.sleep_unless_ended(delay).await.is_cancelled() {
                        return None;
                    }
                }
            }
        };
        let now = Utc::now();
        let mut mine = None;
        for lease in leases {
            let ours = lease.callback == config.callback(lease.subscription);
            if ours && lease.topic == topic && mine.is_none() {
                mine = Some(lease);
            } else if ours || lease.expires_at.is_none_or(|at| at <= now) {
                // Our own lease for another topic, or anyone's dead lease: forget it. A
                // live lease of another worker is left to that worker.
                if let Err(err) =
                    store::delete_lease(storage, self.task.task_id, lease.subscription).await
                {
                    tracing::warn!(cause = %err, "could not delete a stale lease");
                }
            }
        }
        let lease = match mine {
            Some(lease) => lease,
            None => {
                let subscription = Uuid::new_v4();
                let secret: [u8; 24] = rand::thread_rng().gen();
                Lease {
                    subscription,
                    channel_id: self.task.channel_id.clone(),
                    topic,
                    callback: config.callback(subscription),
                    secret: hex::encode(secret),
                    expires_at: None,
                    granted_seconds: None,
                }
            }
        };
        // Stored by an older version or edited by hand: clamp like a hub's answer.
        let granted = crate::store::clamp_lease_seconds(
            lease.granted_seconds.unwrap_or(config.lease_seconds),
        );
        let valid_until_renewal = lease.expires_at.filter(|&expires| {
            let margin = config.renew_margin_seconds.min(granted / 2);
            expires - crate::store::lease_span(margin) > now
        });
        let (status, phase) = match valid_until_renewal {
            Some(expires) => {
                tracing::info!(subscription = %lease.subscription, %expires, "reusing persisted lease");
                (
                    Status::Active(self.renew_at(expires, granted)),
                    Phase::Active,
                )
            }
            None => (Status::Due(Instant::now()), Phase::Subscribing),
        };
        if lease.expires_at.is_none() {
            // Persist the id and secret before the hub hears of them: a crash after the
            // request then reuses them instead of creating a second subscription.
            loop {
                match store::put_lease(storage, self.task.task_id, &lease).await {
                    Ok(()) => break,
                    Err(err) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(cause = %err, retry_in = ?delay, "could not store the lease");
                        if self.sleep_unless_ended(delay).await.is_cancelled() {
                            return None;
                        }
                    }
                }
            }
        }
        let (verified_tx, verified_rx) = watch::channel(None);
        let unsubscribed = Arc::new(Notify::new());
        self.shared.register(
            lease.subscription,
            SubEntry {
                task: self.task.clone(),
                topic: lease.topic.clone(),
                secret: Arc::from(lease.secret.as_bytes()),
                phase,
                verified: Arc::new(verified_tx),
                unsubscribed: unsubscribed.clone(),
            },
        );
        Some(Subscription {
            lease,
            verified: verified_rx,
            unsubscribed,
            status,
        })
    }

    /// Sends one hub request under the concurrency limit; `None` when interrupted.
    async fn hub_request(
        &self,
        mode: Mode,
        lease: &Lease,
    ) -> Option<Result<(), crate::hub::HubError>> {
        let config = &self.shared.config;
        let request = async {
            let _permit = self
                .shared
                .hub_limit
                .acquire()
                .await
                .expect("the hub semaphore is never closed");
            self.shared
                .hub
                .send(&HubRequest {
                    mode,
                    topic: &lease.topic,
                    callback: &lease.callback,
                    secret: &lease.secret,
                    lease_seconds: config.lease_seconds,
                })
                .await
        };
        let result = tokio::select! {
            _ = self.abort.cancelled() => return None,
            // Stopping interrupts a subscribe, never the unsubscribe itself.
            _ = self.stop.cancelled(), if mode == Mode::Subscribe => return None,
            result = request => result,
        };
        let label = if result.is_ok() { "accepted" } else { "failed" };
        self.shared.metrics.hub_request(mode.as_str(), label);
        Some(result)
    }

    async fn unsubscribe(&self, sub: Subscription) {
        let config = &self.shared.config;
        let storage = self.shared.storage.as_ref();
        let id = sub.lease.subscription;
        self.shared.set_phase(id, Phase::Unsubscribing);
        // A start racing this stop must not trust the lease any more.
        let mut invalid = sub.lease.clone();
        invalid.expires_at = None;
        if let Err(err) = store::put_lease(storage, self.task.task_id, &invalid).await {
            tracing::warn!(cause = %err, "could not mark the lease as unsubscribing");
        }
        let mut backoff = Backoff::new(
            Duration::from_millis(config.hub_retry_initial_ms.max(1)),
            Duration::from_secs(config.hub_retry_max_seconds.max(1)),
        );
        let mut confirmed = false;
        for attempt in 1..=config.unsubscribe_attempts.max(1) {
            match self.hub_request(Mode::Unsubscribe, &sub.lease).await {
                None => {
                    self.shared.deregister(id);
                    return;
                }
                Some(Ok(())) => {
                    tokio::select! {
                        _ = self.abort.cancelled() => {
                            self.shared.deregister(id);
                            return;
                        }
                        _ = sub.unsubscribed.notified() => confirmed = true,
                        _ = tokio::time::sleep(Duration::from_secs(config.verify_timeout_seconds.max(1))) => {
                            tracing::warn!(subscription = %id, "hub did not verify the unsubscription");
                        }
                    }
                    break;
                }
                Some(Err(err)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(cause = %err, attempt, retry_in = ?delay, "unsubscribe failed");
                    // Only an abort interrupts: a stop is what this unsubscribe serves.
                    if sleep_unless_cancelled(delay, &self.abort)
                        .await
                        .is_cancelled()
                    {
                        self.shared.deregister(id);
                        return;
                    }
                }
            }
        }
        if !confirmed {
            tracing::warn!(subscription = %id, "giving up unsubscribing; the lease will run out");
        } else {
            tracing::info!(subscription = %id, "unsubscribed");
        }
        self.shared.deregister(id);
        if let Err(err) = store::delete_lease(storage, self.task.task_id, id).await {
            tracing::warn!(cause = %err, "could not delete the lease");
        }
    }

    /// The sync marker, tracking start and last contact (recording the tracking start at
    /// the first start), retried while storage fails; `None` when interrupted.
    async fn start_state(&self) -> Option<StartState> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match self.read_start_state().await {
                Ok(state) => return Some(state),
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(cause = %err, retry_in = ?delay, "could not read the channel's sync state");
                    if self.sleep_unless_ended(delay).await.is_cancelled() {
                        return None;
                    }
                }
            }
        }
    }

    async fn read_start_state(&self) -> Result<StartState, stargazer_core::storage::StorageError> {
        let storage = self.shared.storage.as_ref();
        let task = self.task.task_id;
        let synced = storage
            .kv_get(SYNCED_NAMESPACE, &task.to_string())
            .await?
            .is_some();
        Ok(StartState {
            synced,
            tracked_since: store::tracked_since(storage, task, Utc::now()).await?,
            last_contact: store::last_contact(storage, task).await?,
        })
    }

    /// Fetches the channel feed and queues its entries; `true` on success.
    /// `history_before` is set for the first sync: when the channel began to be tracked.
    async fn poll(&self, history_before: Option<DateTime<Utc>>) -> bool {
        let config = &self.shared.config;
        let url = config.feed_url(&self.task.channel_id);
        let fetch = async {
            let _permit = self
                .shared
                .poll_limit
                .acquire()
                .await
                .expect("the poll semaphore is never closed");
            let response = self
                .shared
                .http
                .get(&url)
                .send()
                .await
                .map_err(|err| err.to_string())?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("feed answered {status}"));
            }
            response.bytes().await.map_err(|err| err.to_string())
        };
        let body = tokio::select! {
            _ = self.abort.cancelled() => return false,
            _ = self.stop.cancelled() => return false,
            body = fetch => body,
        };
        let feed = match body.and_then(|b| parse_feed(&b).map_err(|e| e.to_string())) {
            Ok(feed) => feed,
            Err(err) => {
                self.shared.metrics.feed_poll("failed");
                tracing::warn!(url, cause = %err, "feed poll failed");
                return false;
            }
        };
        self.shared.metrics.feed_poll("ok");
        let now = Utc::now();
        let count = feed.entries.len();
        for entry in feed.entries {
            if entry.channel_id != self.task.channel_id {
                continue;
            }
            let origin = match history_before {
                Some(history_before) => Origin::FirstSync { history_before },
                None => Origin::Poll,
            };
            if let Err(err) = self.shared.submit(&self.task, entry, origin).await {
                tracing::warn!(cause = %err, "could not queue a polled video");
                return false;
            }
        }
        let storage = self.shared.storage.as_ref();
        if history_before.is_some() {
            let marker = serde_json::json!({ "at": now.to_rfc3339() });
            if let Err(err) = storage
                .kv_put(SYNCED_NAMESPACE, &self.task.task_id.to_string(), &marker)
                .await
            {
                tracing::warn!(cause = %err, "could not store the sync marker");
                return false;
            }
        }
        match store::prune_videos(storage, self.task.task_id, now - config.seen_window(), now).await
        {
            Ok(pruned) if pruned > 0 => tracing::debug!(pruned, "old video records pruned"),
            Ok(_) => {}
            Err(err) => tracing::warn!(cause = %err, "could not prune video records"),
        }
        if let Err(err) = store::record_contact(storage, self.task.task_id, now).await {
            tracing::warn!(cause = %err, "could not record the poll as the last contact");
        }
        tracing::debug!(
            entries = count,
            initial = history_before.is_some(),
            "feed polled"
        );
        true
    }
}
