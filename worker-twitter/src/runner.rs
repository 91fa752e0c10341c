//! [`TwitterRunner`]: the accounts this worker polls. The coordinator (through the worker
//! runtime) or a test calls [`TwitterRunner::start`] / [`TwitterRunner::stop`]; each
//! started task runs one polling job.
//!
//! One poll: read the task's cursor; on the very first run record the newest tweet id
//! without publishing (history is not news); otherwise fetch every page newer than
//! `since_id`, publish oldest first, then store the newest id. A restart between publish
//! and cursor store re-fetches those tweets and the seen window drops them.
//!
//! Failures: the shared rate gate holds every job until the window resets (remaining 0 or
//! 429); 401/403 are logged once per job with what to check, and the job backs off;
//! other errors back off exponentially.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use stargazer_core::backoff::Backoff;
use stargazer_core::bus::Bus;
use stargazer_core::config::Section;
use stargazer_core::model::{Task, TaskParams};
use stargazer_core::source::{
    housekeeping, http_client, Background, Housekeeping, Namespaces, Publisher,
};
use stargazer_core::storage::{EntityStore, StateStore, StorageError};
use stargazer_core::wait::sleep_unless_cancelled;
use stargazer_core::worker_runtime::{JobSet, JobTokens};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::api::{id_cmp, ApiError, Includes, TimelineRequest, Tweet, XApi};
use crate::config::TwitterConfig;
use crate::events::tweet_event;
use crate::metrics::Metrics;
use crate::Error;

/// Namespace of per-task cursors.
pub const CURSOR_NAMESPACE: &str = "twitter.cursor";
/// Seen-window namespace of published events, keyed `<entity>/<event id>`: an event goes
/// out only if this process is the first to record it, so a restart before the cursor was
/// saved, or another worker holding the task, does not publish it twice.
pub const SEEN_NAMESPACE: &str = "twitter.seen";
/// Namespace of publishes awaiting a broker confirm (flushed by the housekeeping).
pub const OUTBOX_NAMESPACE: &str = "twitter.outbox";

const PUBLISHING: Namespaces = Namespaces {
    seen: SEEN_NAMESPACE,
    outbox: OUTBOX_NAMESPACE,
};

/// A task's position in its account's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Newest tweet id already handled; `None` for an account that had no tweets.
    pub since_id: Option<String>,
}

struct Shared {
    config: Arc<TwitterConfig>,
    /// Cursors (and, through the publisher, the outbox and seen window).
    state: Arc<dyn StateStore>,
    /// Read for an entity's translation target.
    entities: Arc<dyn EntityStore>,
    api: XApi,
    publisher: Publisher,
    metrics: Metrics,
    shutdown: CancellationToken,
}

/// The set of accounts this worker polls. Cheap to clone.
#[derive(Clone)]
pub struct TwitterRunner {
    shared: Arc<Shared>,
    /// One polling job per task; a job ends the same way on stop and on shutdown.
    jobs: Arc<JobSet<Uuid, Task>>,
    background: Background,
}

impl TwitterRunner {
    /// Builds the runner, its metrics registered in `registry`, and starts its background
    /// work (seen-window purge, outbox retries). Everything stops when `shutdown` is
    /// cancelled; [`TwitterRunner::join`] waits for it.
    pub fn new(
        config: TwitterConfig,
        state: Arc<dyn StateStore>,
        entities: Arc<dyn EntityStore>,
        bus: Arc<dyn Bus>,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        config.check()?;
        let config = Arc::new(config);
        let http = http_client("twitter", config.http_timeout())?;
        let metrics = Metrics::register(registry);
        let publisher =
            Publisher::new(state.clone(), bus, PUBLISHING, metrics.publishing().clone());
        let shared = Arc::new(Shared {
            api: XApi::new(
                http,
                &config.api_base,
                &config.bearer_token,
                Duration::from_secs(config.rate_limit_fallback_seconds),
            ),
            config: config.clone(),
            state,
            entities,
            publisher: publisher.clone(),
            metrics,
            shutdown: shutdown.clone(),
        });
        let jobs = Arc::new(JobSet::new(shutdown.clone()));
        let background = Background::new();
        background.spawn(housekeeping(
            publisher,
            Housekeeping::new(chrono::Duration::days(config.seen_window_days as i64)),
            shutdown,
        ));
        Ok(Self {
            shared,
            jobs,
            background,
        })
    }

    /// The worker's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// When the shared rate gate lets requests out again, if it is closed now.
    pub fn rate_limited_until(&self) -> Option<chrono::DateTime<Utc>> {
        self.shared.api.gate().closed_until()
    }

    /// Ids of the tasks currently polled.
    pub fn tasks(&self) -> Vec<Uuid> {
        self.jobs.running()
    }

    /// Starts polling the account of `task` (idempotent for a task already held).
    pub async fn start(&self, task: Task) -> Result<(), Error> {
        let TaskParams::Twitter { user_id } = &task.params else {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("a {} task sent to the X worker", task.kind()),
            });
        };
        if user_id.is_empty() || !user_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("`{user_id}` is not a numeric X user id"),
            });
        }
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let (task_id, entity, user_id) = (task.id, task.entity, user_id.clone());
        let job = |tokens: JobTokens| {
            let span = tracing::info_span!("twitter_task", %task_id, entity_id = %entity, %user_id);
            tracing::info!(%task_id, entity_id = %entity, %user_id, "task started");
            Job {
                shared: self.shared.clone(),
                task_id,
                entity,
                user_id,
                stop: tokens.stop,
            }
            .run()
            .instrument(span)
        };
        self.jobs.start(task_id, task, job).await;
        Ok(())
    }

    /// Stops polling a task and waits for its job to end (a request in flight is
    /// abandoned; its tweets come again on the next start). Unknown ids are ignored.
    pub async fn stop(&self, task_id: Uuid) -> Result<(), Error> {
        if self.jobs.stop_and_wait(&task_id).await {
            tracing::info!(%task_id, "task stopped");
        } else {
            tracing::debug!(%task_id, "stop for a task not held");
        }
        Ok(())
    }

    /// Waits for every job and background task to end; call after cancelling `shutdown`.
    pub async fn join(&self) {
        self.jobs.abort_all().await;
        self.background.join().await;
    }
}

/// Why one poll did not complete.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stopped")]
    Stopped,
}

struct Job {
    shared: Arc<Shared>,
    task_id: Uuid,
    entity: Uuid,
    user_id: String,
    stop: CancellationToken,
}

struct EntityCache {
    translate_to: Vec<String>,
    loaded: Instant,
}

impl Job {
    async fn run(self) {
        let config = self.shared.config.clone();
        let interval = Duration::from_secs(config.poll_interval_seconds);
        let mut errors = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(config.error_backoff_max_seconds.max(1)),
        );
        let mut auth = Backoff::new(
            Duration::from_secs(config.auth_backoff_initial_seconds.max(1)),
            Duration::from_secs(config.auth_backoff_max_seconds.max(1)),
        );
        let mut auth_reported = false;
        let mut entity: Option<EntityCache> = None;
        loop {
            if self.shared.api.gate().wait(&self.stop).await.is_cancelled() {
                break;
            }
            // Not raced against `stop`: only the requests inside are interruptible, so a
            // stop never lands between recording a tweet as seen and publishing it.
            let result = self.poll(&mut entity).await;
            let pause = match result {
                Ok(published) => {
                    self.shared.metrics.request("ok");
                    if published > 0 {
                        tracing::debug!(published, "poll done");
                    }
                    errors.reset();
                    auth.reset();
                    auth_reported = false;
                    interval
                }
                Err(PollError::Stopped) => break,
                Err(PollError::Api(err)) => {
                    self.shared.metrics.request(err.label());
                    match err {
                        // The gate holds the next request until the reset.
                        ApiError::RateLimited { until } => {
                            tracing::warn!(%until, "X API rate limit hit (429)");
                            Duration::ZERO
                        }
                        ApiError::Unauthorized { status, detail } => {
                            let delay = auth.next_delay();
                            if !auth_reported {
                                auth_reported = true;
                                tracing::error!(
                                    status,
                                    detail,
                                    retry_in = ?delay,
                                    "X API refused the bearer token for this account: check twitter.bearer_token (STARGAZER_TWITTER_BEARER_TOKEN) and the app's access level; backing off"
                                );
                            }
                            delay
                        }
                        other => {
                            let delay = errors.next_delay().max(match other {
                                ApiError::NotFound(_) | ApiError::Rejected { .. } => interval,
                                _ => Duration::ZERO,
                            });
                            tracing::warn!(cause = %other, retry_in = ?delay, "timeline poll failed");
                            delay
                        }
                    }
                }
                Err(PollError::Storage(err)) => {
                    let delay = errors.next_delay();
                    tracing::warn!(cause = %err, retry_in = ?delay, "storage failed during a poll");
                    delay
                }
            };
            if sleep_unless_cancelled(pause, &self.stop)
                .await
                .is_cancelled()
            {
                break;
            }
        }
        tracing::info!("task ended");
    }

    async fn translate_to(&self, cache: &mut Option<EntityCache>) -> Vec<String> {
        let refresh = Duration::from_secs(self.shared.config.entity_refresh_seconds);
        if let Some(cached) = cache.as_ref().filter(|c| c.loaded.elapsed() < refresh) {
            return cached.translate_to.clone();
        }
        let translate_to = match self.shared.entities.get_entity(self.entity).await {
            Ok(Some(entity)) => entity.translate_to,
            Ok(None) => {
                tracing::warn!(entity_id = %self.entity, "entity not found; publishing untranslated");
                Vec::new()
            }
            Err(err) => {
                tracing::warn!(cause = %err, "could not read the entity; publishing untranslated");
                // Retry soon rather than cache a guess.
                return cache
                    .as_ref()
                    .map(|c| c.translate_to.clone())
                    .unwrap_or_default();
            }
        };
        *cache = Some(EntityCache {
            translate_to: translate_to.clone(),
            loaded: Instant::now(),
        });
        translate_to
    }

    /// One timeline request, abandoned when the job is stopped.
    async fn fetch(&self, request: &TimelineRequest<'_>) -> Result<crate::api::Page, PollError> {
        tokio::select! {
            _ = self.stop.cancelled() => Err(PollError::Stopped),
            page = self.shared.api.timeline(request) => Ok(page?),
        }
    }

    /// One poll; returns how many events were published.
    async fn poll(&self, entity: &mut Option<EntityCache>) -> Result<usize, PollError> {
        let storage = self.shared.state.as_ref();
        let key = self.task_id.to_string();
        let cursor = match storage.kv_get(CURSOR_NAMESPACE, &key).await? {
            Some(value) => match serde_json::from_value::<Cursor>(value) {
                Ok(cursor) => Some(cursor),
                Err(err) => {
                    tracing::warn!(cause = %err, "unreadable cursor; starting over without history");
                    None
                }
            },
            None => None,
        };
        let Some(cursor) = cursor else {
            // First run: remember where the timeline is, publish nothing.
            let page = self
                .fetch(&TimelineRequest {
                    user_id: &self.user_id,
                    since_id: None,
                    max_results: 5,
                    pagination_token: None,
                })
                .await?;
            let newest = page.meta.newest_id.clone().or_else(|| {
                page.data
                    .iter()
                    .map(|t| t.id.clone())
                    .max_by(|a, b| id_cmp(a, b))
            });
            let cursor = Cursor { since_id: newest };
            tracing::info!(since_id = ?cursor.since_id, "first poll: recorded the newest tweet without publishing history");
            self.store_cursor(&cursor).await?;
            return Ok(0);
        };

        let config = &self.shared.config;
        let mut tweets: Vec<Tweet> = Vec::new();
        let mut includes = Includes::default();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            if pages > 0 && self.shared.api.gate().wait(&self.stop).await.is_cancelled() {
                return Err(PollError::Stopped);
            }
            let page = self
                .fetch(&TimelineRequest {
                    user_id: &self.user_id,
                    since_id: cursor.since_id.as_deref(),
                    max_results: config.max_results,
                    pagination_token: token.as_deref(),
                })
                .await?;
            pages += 1;
            tweets.extend(page.data);
            includes.merge(page.includes);
            token = page.meta.next_token;
            if token.is_none() {
                break;
            }
            if pages >= config.max_pages {
                tracing::warn!(
                    pages,
                    fetched = tweets.len(),
                    "backlog larger than twitter.max_pages; older tweets skipped"
                );
                break;
            }
        }
        if tweets.is_empty() {
            return Ok(0);
        }
        tweets.sort_by(|a, b| id_cmp(&a.id, &b.id));
        tweets.dedup_by(|a, b| a.id == b.id);
        let translate_to = self.translate_to(entity).await;
        let mut published = 0;
        for tweet in &tweets {
            // The API honours since_id; a server that does not must not cause repeats.
            if cursor
                .since_id
                .as_deref()
                .is_some_and(|since| id_cmp(&tweet.id, since) != std::cmp::Ordering::Greater)
            {
                continue;
            }
            let (routing_key, event) =
                tweet_event(self.entity, &self.user_id, tweet, &includes, &translate_to);
            if self
                .shared
                .publisher
                .publish_event(&routing_key, &event)
                .await?
            {
                published += 1;
            }
        }
        let newest = tweets.last().map(|t| t.id.clone()).filter(|id| {
            cursor
                .since_id
                .as_deref()
                .is_none_or(|since| id_cmp(id, since) == std::cmp::Ordering::Greater)
        });
        if let Some(newest) = newest {
            self.store_cursor(&Cursor {
                since_id: Some(newest),
            })
            .await?;
        }
        Ok(published)
    }

    async fn store_cursor(&self, cursor: &Cursor) -> Result<(), StorageError> {
        let value =
            serde_json::to_value(cursor).map_err(|err| StorageError::Corrupt(err.to_string()))?;
        self.shared
            .state
            .kv_put(CURSOR_NAMESPACE, &self.task_id.to_string(), &value)
            .await
    }
}
