//! [`YoutubeRunner`]: the worker's task set. The coordinator (through the worker runtime)
//! or a test calls [`YoutubeRunner::start`] / [`YoutubeRunner::stop`]; each started task
//! runs one job (see `job.rs`) that holds the channel's WebSub subscription and polls its
//! feed. Shared by all jobs: the callback server's subscription table, the classification
//! batcher, the publisher and the hub/feed concurrency limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::config::Section;
use stargazer_core::model::{Task, TaskParams};
use stargazer_core::readiness::Readiness;
use stargazer_core::source::{housekeeping, http_client, Background, Housekeeping, Publisher};
use stargazer_core::storage::{StateStore, StorageError, StorageHealth};
use stargazer_core::worker_runtime::{JobSet, JobTokens};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::atom::FeedEntry;
use crate::batcher::{Batcher, ClassifyRequest, Origin, TaskRef};
use crate::classify::{decide_tombstone, Context, Timing};
use crate::config::YoutubeConfig;
use crate::data_api::DataApi;
use crate::hub::HubClient;
use crate::metrics::Metrics;
use crate::quota::QuotaMeter;
use crate::store::{self, Lease, PUBLISHING};
use crate::Error;
use stargazer_core::sync::lock;

/// Where a subscription stands, as the callback server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Requested, not verified yet.
    Subscribing,
    /// Verified by the hub (renewals keep this phase).
    Active,
    /// Unsubscribe requested; only an unsubscribe verification is confirmed.
    Unsubscribing,
}

/// Lease expiry and granted seconds, as the verification handler reports them.
pub(crate) type Verified = Option<(DateTime<Utc>, u64)>;

/// One subscription the callback server answers for.
#[derive(Clone)]
pub(crate) struct SubEntry {
    pub(crate) task: Arc<TaskRef>,
    pub(crate) topic: String,
    pub(crate) secret: Arc<[u8]>,
    pub(crate) phase: Phase,
    /// Lease expiry and granted seconds, sent by the verification handler to the job.
    pub(crate) verified: Arc<watch::Sender<Verified>>,
    /// Woken when the hub verifies an unsubscription.
    pub(crate) unsubscribed: Arc<Notify>,
}

/// State shared by the jobs, the batcher and the callback server.
pub(crate) struct Shared {
    pub(crate) config: Arc<YoutubeConfig>,
    pub(crate) storage: Arc<dyn StateStore>,
    pub(crate) http: reqwest::Client,
    pub(crate) hub: HubClient,
    pub(crate) hub_limit: Semaphore,
    pub(crate) poll_limit: Semaphore,
    pub(crate) classify_tx: mpsc::UnboundedSender<ClassifyRequest>,
    /// Timing settings of decisions (tombstones are decided here).
    pub(crate) timing: Timing,
    pub(crate) subs: Mutex<HashMap<Uuid, SubEntry>>,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: CancellationToken,
    /// What `/readyz` checks: storage and the broker.
    pub(crate) readiness: Readiness,
}

impl Shared {
    pub(crate) fn subscription(&self, id: Uuid) -> Option<SubEntry> {
        self.lock_subs().get(&id).cloned()
    }

    pub(crate) fn lock_subs(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SubEntry>> {
        // A panic while holding this short, await-free lock cannot leave the map half
        // updated, so a poisoned lock is still safe to use.
        lock(&self.subs)
    }

    pub(crate) fn register(&self, id: Uuid, entry: SubEntry) {
        let mut subs = self.lock_subs();
        subs.insert(id, entry);
        self.update_gauge(&subs);
    }

    pub(crate) fn set_phase(&self, id: Uuid, phase: Phase) {
        let mut subs = self.lock_subs();
        if let Some(entry) = subs.get_mut(&id) {
            entry.phase = phase;
        }
        self.update_gauge(&subs);
    }

    pub(crate) fn deregister(&self, id: Uuid) {
        let mut subs = self.lock_subs();
        subs.remove(&id);
        self.update_gauge(&subs);
    }

    fn update_gauge(&self, subs: &HashMap<Uuid, SubEntry>) {
        let active = subs.values().filter(|e| e.phase == Phase::Active).count();
        self.metrics.subscriptions().set(active as i64);
    }

    /// Handles a verification GET; `Ok(true)` when the challenge should be echoed.
    pub(crate) async fn confirm_verification(
        &self,
        id: Uuid,
        mode: &str,
        topic: &str,
        lease_seconds: Option<u64>,
    ) -> Result<bool, StorageError> {
        let Some(entry) = self.subscription(id) else {
            return Ok(false);
        };
        if entry.topic != topic {
            return Ok(false);
        }
        match (mode, entry.phase) {
            ("subscribe", Phase::Subscribing | Phase::Active) => {
                let granted = crate::store::clamp_lease_seconds(
                    lease_seconds.unwrap_or(self.config.lease_seconds),
                );
                let expires = Utc::now() + crate::store::lease_span(granted);
                let lease = Lease {
                    subscription: id,
                    channel_id: entry.task.channel_id.clone(),
                    topic: entry.topic.clone(),
                    callback: self.config.callback(id),
                    secret: String::from_utf8_lossy(&entry.secret).into_owned(),
                    expires_at: Some(expires),
                    granted_seconds: Some(granted),
                };
                store::put_lease(self.storage.as_ref(), entry.task.task_id, &lease).await?;
                // The job may have started unsubscribing while the lease was written.
                let still_wanted = {
                    let mut subs = self.lock_subs();
                    let wanted = match subs.get_mut(&id) {
                        Some(current) if current.phase != Phase::Unsubscribing => {
                            current.phase = Phase::Active;
                            true
                        }
                        _ => false,
                    };
                    self.update_gauge(&subs);
                    wanted
                };
                if still_wanted {
                    entry.verified.send_replace(Some((expires, granted)));
                }
                Ok(still_wanted)
            }
            ("unsubscribe", Phase::Unsubscribing) => {
                entry.unsubscribed.notify_one();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Queues an Atom entry for classification unless that exact version (same `updated`)
    /// was processed already.
    pub(crate) async fn submit(
        &self,
        task: &Arc<TaskRef>,
        entry: FeedEntry,
        origin: Origin,
    ) -> Result<(), Error> {
        if let Some(updated) = entry.updated.as_deref() {
            let record = store::video(self.storage.as_ref(), task.task_id, &entry.video_id).await?;
            if record.is_some_and(|r| r.updated.as_deref() == Some(updated)) {
                tracing::debug!(task_id = %task.task_id, video_id = %entry.video_id, "entry already processed");
                return Ok(());
            }
        }
        let title = (!entry.title.is_empty()).then_some(entry.title);
        self.classify_tx
            .send(ClassifyRequest {
                task: task.clone(),
                video_id: entry.video_id,
                updated: entry.updated,
                title_hint: title,
                feed_link: entry.link,
                history_before: match origin {
                    Origin::FirstSync { history_before } => Some(history_before),
                    Origin::Push | Origin::Poll => None,
                },
                pushed: origin == Origin::Push,
                published: entry
                    .published
                    .as_deref()
                    .and_then(|at| DateTime::parse_from_rfc3339(at.trim()).ok())
                    .map(|at| at.with_timezone(&Utc)),
            })
            .map_err(|_| Error::ShuttingDown)
    }

    /// Handles a tombstone: cancels what a pending stream had scheduled.
    pub(crate) async fn tombstone(
        &self,
        task: &TaskRef,
        video_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let prev = store::video(self.storage.as_ref(), task.task_id, video_id).await?;
        let ctx = Context {
            now,
            entity: task.entity,
            channel_id: &task.channel_id,
            video_id,
            updated: None,
            title_hint: None,
            feed_link: None,
            history_before: None,
            timing: &self.timing,
        };
        let plan = decide_tombstone(prev.as_ref(), &ctx);
        for group in &plan.groups {
            self.publisher
                .publish_once(task.entity, &group.claim, &group.messages)
                .await?;
        }
        store::update_schedule(
            self.storage.as_ref(),
            task,
            video_id,
            prev.as_ref(),
            &plan.record,
            None,
        )
        .await?;
        tracing::info!(task_id = %task.task_id, video_id, cancelled = !plan.groups.is_empty(), "video deleted");
        store::put_video(self.storage.as_ref(), task.task_id, video_id, &plan.record).await
    }
}

/// The set of channels this worker watches. Cheap to clone.
#[derive(Clone)]
pub struct YoutubeRunner {
    shared: Arc<Shared>,
    /// One job per task. A stop unsubscribes and deletes the lease, so it is kept apart
    /// from shutdown, which keeps the lease for the next run.
    jobs: Arc<JobSet<Uuid, Task>>,
    background: Background,
}

impl YoutubeRunner {
    /// Builds the runner, its metrics registered in `registry`, and starts its background
    /// work (classification batcher, seen-window purge, outbox retries). Everything stops
    /// when `shutdown` is cancelled; [`YoutubeRunner::join`] waits for it. The callback
    /// server is served separately ([`YoutubeRunner::serve`]).
    pub fn new(
        config: YoutubeConfig,
        storage: Arc<dyn StateStore>,
        health: Arc<dyn StorageHealth>,
        bus: Arc<dyn Bus>,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        config.check()?;
        let config = Arc::new(config);
        let http = http_client("youtube", config.http_timeout())?;
        let metrics = Metrics::register(registry);
        let readiness = Readiness::of(Some(health), Some(bus.clone()));
        let publisher = Publisher::new(
            storage.clone(),
            bus,
            PUBLISHING,
            metrics.publishing().clone(),
        );
        let (classify_tx, classify_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            hub: HubClient::new(http.clone(), &config.hub_url),
            hub_limit: Semaphore::new(config.hub_concurrency),
            poll_limit: Semaphore::new(config.poll_concurrency),
            classify_tx,
            timing: Timing::from_config(&config),
            subs: Mutex::new(HashMap::new()),
            publisher: publisher.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            readiness,
            storage: storage.clone(),
            http: http.clone(),
            config: config.clone(),
        });
        let batcher = Batcher {
            api: DataApi::new(http, &config.data_api_base, &config.api_key),
            config: config.clone(),
            storage: storage.clone(),
            publisher: publisher.clone(),
            quota: Arc::new(QuotaMeter::new(
                storage.clone(),
                config.daily_quota_units,
                config.quota_reserve_units,
                Some(metrics.quota_gauges()),
            )),
            metrics,
            timing: Timing::from_config(&config),
        };
        let background = Background::new();
        background.spawn(batcher.run(classify_rx, shutdown.clone()));
        let jobs = Arc::new(JobSet::with_graceful_stop(shutdown.clone()));
        background.spawn(housekeeping(
            publisher,
            Housekeeping::new(config.seen_window()),
            shutdown,
        ));
        Ok(Self {
            shared,
            jobs,
            background,
        })
    }

    /// The callback server's routes (`/websub/{id}`, `/healthz`, `/readyz`, `/metrics`).
    pub fn router(&self) -> axum::Router {
        crate::callback::router(self.shared.clone())
    }

    /// Serves the callback server on `listener` until shutdown.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> Result<(), Error> {
        let shutdown = self.shared.shutdown.clone();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(Error::Io)
    }

    /// The worker's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The configuration in use.
    pub fn config(&self) -> &YoutubeConfig {
        &self.shared.config
    }

    /// Ids of the tasks currently held (not being stopped).
    pub fn tasks(&self) -> Vec<Uuid> {
        self.jobs.running()
    }

    /// Starts watching the channel of `task` (idempotent for a task already held).
    pub async fn start(&self, task: Task) -> Result<(), Error> {
        let TaskParams::Youtube { channel_id } = &task.params else {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("a {} task sent to the YouTube worker", task.kind()),
            });
        };
        if !valid_channel_id(channel_id) {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("`{channel_id}` is not a YouTube channel id"),
            });
        }
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // A job replaced by a different channel unsubscribes from the old one first; one
        // reassigned back while unsubscribing is aborted and its lease taken over.
        let (task_id, entity, channel_id) = (task.id, task.entity, channel_id.clone());
        let job = |tokens: JobTokens| {
            tracing::info!(%task_id, entity_id = %entity, channel = %channel_id, "task started");
            let task_ref = Arc::new(TaskRef {
                task_id,
                entity,
                channel_id,
            });
            crate::job::run(self.shared.clone(), task_ref, tokens.stop, tokens.abort)
        };
        self.jobs.start(task_id, task, job).await;
        Ok(())
    }

    /// Stops watching a task: its job unsubscribes from the hub in the background (see
    /// [`YoutubeRunner::wait_stopped`]). Unknown ids are ignored.
    pub async fn stop(&self, task_id: Uuid) -> Result<(), Error> {
        if self.jobs.stop(&task_id) {
            tracing::info!(%task_id, "task stopping");
        } else {
            tracing::debug!(%task_id, "stop for a task not held");
        }
        Ok(())
    }

    /// Waits until a stopped task's job has finished (its unsubscription done or given up).
    pub async fn wait_stopped(&self, task_id: Uuid) {
        self.jobs.wait_stopped(&task_id).await;
    }

    /// Waits for every job and background task to end; call after cancelling `shutdown`.
    pub async fn join(&self) {
        self.jobs.abort_all().await;
        self.background.join().await;
    }
}

/// `UC` followed by 22 URL-safe base64 characters; other ids would make the hub and the
/// feed fail forever.
fn valid_channel_id(id: &str) -> bool {
    id.len() == 24
        && id.starts_with("UC")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_checked() {
        assert!(valid_channel_id("UC1234567890123456789012"));
        assert!(valid_channel_id("UCabcdefghij-_klmnopqrst"));
        assert!(!valid_channel_id("UC123"));
        assert!(!valid_channel_id("XX1234567890123456789012"));
        assert!(!valid_channel_id("UC12345678901234567890&x"));
    }
}
