//! Classification in batches: videos to classify (from pushes and polls) are collected for
//! `batch_window_ms` or until `batch_max` distinct ids, then classified with ONE
//! `videos.list` call (one quota unit for up to 50 videos). Failed calls keep their ids and
//! are retried with backoff (long after quota exhaustion); new requests keep joining.
//!
//! Idle, the window only costs latency: the first pushed video after a quiet
//! `batch_window_ms` (no push in that time, no call in flight, no backoff) is classified at
//! once, with whatever else is pending (`batch_idle_instant`). A push arriving within a
//! window of the previous one, or while a call is in flight (the loop does not receive
//! during a call), is batched, so a burst costs the first call plus one per `batch_max`
//! ids. Feed polls are the fallback and never urgent: their videos always wait the window,
//! so a poll's entries share one call.
//!
//! After a video is decided, its record is stored last, so a crash or shutdown before that
//! leaves the entry unprocessed and the next push or poll brings it back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use stargazer_core::backoff::Backoff;
use stargazer_core::source::Publisher;
use stargazer_core::storage::StateStore;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::classify::{classify, decide, Context, Timing};
use crate::config::YoutubeConfig;
use crate::data_api::{DataApi, DataApiError, Snippet, Video};
use crate::metrics::Metrics;
use crate::quota::{Budget, QuotaMeter};
use crate::store;

/// Videos of one batch applied at once (classified, published, recorded).
const APPLY_CONCURRENCY: usize = 8;

/// The task a video belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub(crate) task_id: Uuid,
    pub(crate) entity: Uuid,
    pub(crate) channel_id: String,
}

/// Where a video to classify was heard of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A hub notification: someone may be waiting for it.
    Push,
    /// A periodic feed poll (the fallback): batched, never urgent.
    Poll,
    /// The channel's first feed poll: uploads published before `history_before` (when
    /// the channel began to be tracked) are history, not news.
    FirstSync {
        /// When the channel began to be tracked.
        history_before: DateTime<Utc>,
    },
}

/// One video to classify.
#[derive(Debug, Clone)]
pub(crate) struct ClassifyRequest {
    pub(crate) task: Arc<TaskRef>,
    pub(crate) video_id: String,
    pub(crate) updated: Option<String>,
    pub(crate) title_hint: Option<String>,
    /// The Atom entry's alternate link (tells Shorts apart).
    pub(crate) feed_link: Option<String>,
    /// Set by the first sync: uploads published before it are history.
    pub(crate) history_before: Option<DateTime<Utc>>,
    /// From a hub push (may be classified at once when idle).
    pub(crate) pushed: bool,
    /// The Atom entry's `published`, for classifying without the Data API.
    pub(crate) published: Option<DateTime<Utc>>,
}

impl ClassifyRequest {
    /// What the feed entry alone says, as a `videos.list` result would: an upload with its
    /// publication time and title. Only for when no call may be made: the feed does not
    /// tell streams from uploads.
    fn feed_video(&self) -> Option<Video> {
        let published = self.published?;
        Some(Video {
            id: self.video_id.clone(),
            snippet: Some(Snippet {
                published_at: Some(published),
                channel_id: self.task.channel_id.clone(),
                title: self.title_hint.clone().unwrap_or_default(),
                description: String::new(),
                channel_title: String::new(),
                thumbnails: Default::default(),
                live_broadcast_content: "none".into(),
            }),
            live: None,
            content: None,
        })
    }
}

/// Pending requests, in arrival order of their video ids.
#[derive(Default)]
struct Pending {
    order: VecDeque<String>,
    by_video: HashMap<String, Vec<ClassifyRequest>>,
}

impl Pending {
    fn add(&mut self, request: ClassifyRequest) {
        let list = self
            .by_video
            .entry(request.video_id.clone())
            .or_insert_with(|| {
                self.order.push_back(request.video_id.clone());
                Vec::new()
            });
        // A newer request for the same task supersedes the older one.
        match list
            .iter_mut()
            .find(|r| r.task.task_id == request.task.task_id)
        {
            Some(existing) => {
                // History only when every request says so (a push is news).
                let history_before = existing
                    .history_before
                    .zip(request.history_before)
                    .map(|(a, b)| a.max(b));
                let pushed = existing.pushed || request.pushed;
                *existing = request;
                existing.history_before = history_before;
                existing.pushed = pushed;
            }
            None => list.push(request),
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn take(&mut self, max: usize) -> Vec<(String, Vec<ClassifyRequest>)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            if let Some(requests) = self.by_video.remove(&id) {
                out.push((id, requests));
            }
        }
        out
    }

    fn put_back(&mut self, batch: Vec<(String, Vec<ClassifyRequest>)>) {
        for (id, requests) in batch.into_iter().rev() {
            match self.by_video.get_mut(&id) {
                // Requests that arrived meanwhile are newer; keep them, add the rest.
                Some(newer) => {
                    for request in requests {
                        if !newer.iter().any(|r| r.task.task_id == request.task.task_id) {
                            newer.push(request);
                        }
                    }
                }
                None => {
                    self.order.push_front(id.clone());
                    self.by_video.insert(id, requests);
                }
            }
        }
    }
}

pub(crate) struct Batcher {
    pub(crate) config: Arc<YoutubeConfig>,
    pub(crate) api: DataApi,
    pub(crate) storage: Arc<dyn StateStore>,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: Metrics,
    pub(crate) quota: Arc<QuotaMeter>,
    pub(crate) timing: Timing,
}

/// The collection window for `budget`: five times wider when the quota runs low.
fn window_for(base: Duration, budget: Budget) -> Duration {
    match budget {
        Budget::Plenty => base,
        Budget::Low | Budget::Spent => base * 5,
    }
}

impl Batcher {
    /// Runs until `shutdown`; then makes one last attempt at what is pending.
    pub(crate) async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<ClassifyRequest>,
        shutdown: CancellationToken,
    ) {
        let base_window = Duration::from_millis(self.config.batch_window_ms);
        let max = self.config.batch_max;
        self.quota.load().await;
        let retry_max = Duration::from_secs(self.config.api_retry_max_seconds.max(1));
        let mut transient = Backoff::new(
            Duration::from_millis(self.config.api_retry_initial_ms.max(1)).min(retry_max),
            retry_max,
        );
        let mut quota = Backoff::new(
            Duration::from_secs(self.config.quota_retry_initial_seconds.max(1)).min(retry_max),
            retry_max,
        );
        let mut pending = Pending::default();
        // When the next call may go out: end of the collection window or of a backoff.
        let mut deadline: Option<Instant> = None;
        let mut backing_off = false;
        // When a push last arrived: a quiet window since then means idle.
        let mut last_push: Option<Instant> = None;

        loop {
            let due = deadline.filter(|_| pending.len() > 0);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                request = rx.recv() => {
                    let Some(request) = request else { break };
                    let mut pushed = request.pushed;
                    pending.add(request);
                    while let Ok(more) = rx.try_recv() {
                        pushed |= more.pushed;
                        pending.add(more);
                    }
                    let now = Instant::now();
                    let budget = self.quota.budget();
                    let window = window_for(base_window, budget);
                    if pushed {
                        let idle = last_push.is_none_or(|at| now.duration_since(at) >= window);
                        last_push = Some(now);
                        let instant = self.config.batch_idle_instant && budget == Budget::Plenty;
                        if idle && instant && !backing_off {
                            deadline = Some(now);
                        }
                    }
                    if deadline.is_none() {
                        deadline = Some(now + window);
                    }
                    if pending.len() >= max && !backing_off {
                        deadline = Some(Instant::now());
                    }
                }
                _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                    let batch = pending.take(max);
                    match self.flush(batch).await {
                        Ok(()) => {
                            transient.reset();
                            quota.reset();
                            backing_off = false;
                            let window = window_for(base_window, self.quota.budget());
                            deadline = (pending.len() > 0).then(|| {
                                if pending.len() >= max { Instant::now() } else { Instant::now() + window }
                            });
                        }
                        Err((err, batch)) => {
                            pending.put_back(batch);
                            let delay = match err {
                                DataApiError::Quota(_) => quota.next_delay(),
                                _ => transient.next_delay(),
                            };
                            tracing::warn!(cause = %err, retry_in = ?delay, pending = pending.len(), "videos.list failed; will retry");
                            backing_off = true;
                            deadline = Some(Instant::now() + delay);
                        }
                    }
                }
            }
        }
        if pending.len() > 0 && !backing_off {
            // One bounded last call so a push that arrived just before shutdown is not left
            // for the next poll. Only the request is bounded: once videos are claimed in
            // the seen window their publishing must run to the end.
            let batch = pending.take(max);
            let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
            if self.quota.budget() == Budget::Spent {
                self.apply_from_feed(&batch).await;
                return;
            }
            self.metrics.api_call(ids.len());
            let answer = tokio::time::timeout(Duration::from_secs(10), self.api.list(&ids)).await;
            if !matches!(answer, Ok(Err(DataApiError::Quota(_)))) {
                self.quota.spend(1).await;
            }
            match answer {
                Ok(Ok(videos)) => self.apply_all(&batch, &videos).await,
                Ok(Err(err)) => {
                    self.metrics.api_error(err.label());
                    pending.put_back(batch);
                }
                Err(_) => pending.put_back(batch),
            }
        }
        if pending.len() > 0 {
            tracing::info!(
                pending = pending.len(),
                "videos left unclassified at shutdown; the next poll picks them up"
            );
        }
    }

    async fn flush(
        &self,
        batch: Vec<(String, Vec<ClassifyRequest>)>,
    ) -> Result<(), (DataApiError, Vec<(String, Vec<ClassifyRequest>)>)> {
        if self.quota.budget() == Budget::Spent {
            self.apply_from_feed(&batch).await;
            return Ok(());
        }
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        self.metrics.api_call(ids.len());
        let answer = self.api.list(&ids).await;
        // A call refused for quota costs nothing; any other is a unit spent.
        if !matches!(answer, Err(DataApiError::Quota(_))) {
            self.quota.spend(1).await;
        }
        let videos = match answer {
            Ok(videos) => videos,
            Err(err) => {
                self.metrics.api_error(err.label());
                return Err((err, batch));
            }
        };
        tracing::debug!(asked = ids.len(), returned = videos.len(), "videos.list");
        self.apply_all(&batch, &videos).await;
        Ok(())
    }

    /// With the day's quota spent: new videos are classified from their feed entries
    /// (announced as uploads: the feed does not tell streams apart); videos the worker
    /// already knows are left alone (a made-up upload would cancel a pending stream's
    /// reminders) for the next push or poll after the quota resets.
    async fn apply_from_feed(&self, batch: &[(String, Vec<ClassifyRequest>)]) {
        for (id, requests) in batch {
            for request in requests {
                let known = store::video(self.storage.as_ref(), request.task.task_id, id).await;
                let video = match known {
                    Ok(None) => request.feed_video(),
                    Ok(Some(_)) => None,
                    Err(err) => {
                        tracing::warn!(task_id = %request.task.task_id, video_id = %id, cause = %err, "could not read a video record");
                        None
                    }
                };
                let Some(video) = video else {
                    tracing::info!(task_id = %request.task.task_id, video_id = %id, "Data API quota spent: left for after the reset");
                    continue;
                };
                if let Err(err) = self.apply(request, Some(&video)).await {
                    tracing::error!(task_id = %request.task.task_id, video_id = %id, cause = %err, "could not record a video classified from the feed");
                }
            }
        }
    }

    /// Applies a batch's answers, [`APPLY_CONCURRENCY`] videos at a time: each video's
    /// publishing and records touch only that video's keys (its claims, its record, its
    /// schedule entry), so only one video's requests need to go in order. One at a time,
    /// a burst waited for a few storage writes and a broker confirm per video in a row.
    async fn apply_all(&self, batch: &[(String, Vec<ClassifyRequest>)], videos: &[Video]) {
        let by_id: HashMap<&str, &Video> = videos.iter().map(|v| (v.id.as_str(), v)).collect();
        let by_id = &by_id;
        futures::stream::iter(batch)
            .for_each_concurrent(APPLY_CONCURRENCY, |(id, requests)| async move {
                let video = by_id.get(id.as_str()).copied();
                for request in requests {
                    if let Err(err) = self.apply(request, video).await {
                        tracing::error!(
                            task_id = %request.task.task_id,
                            video_id = %id,
                            cause = %err,
                            "could not record a classified video; the next poll retries it"
                        );
                    }
                }
            })
            .await;
    }

    async fn apply(
        &self,
        request: &ClassifyRequest,
        video: Option<&Video>,
    ) -> Result<(), stargazer_core::storage::StorageError> {
        let task = &request.task;
        if let Some(owner) = video
            .and_then(|v| v.snippet.as_ref())
            .map(|s| s.channel_id.as_str())
            .filter(|owner| !owner.is_empty() && *owner != task.channel_id)
        {
            tracing::warn!(task_id = %task.task_id, video_id = %request.video_id, owner, "video belongs to another channel; ignored");
            return Ok(());
        }
        let prev = store::video(self.storage.as_ref(), task.task_id, &request.video_id).await?;
        let ctx = Context {
            now: Utc::now(),
            entity: task.entity,
            channel_id: &task.channel_id,
            video_id: &request.video_id,
            updated: request.updated.as_deref(),
            title_hint: request.title_hint.as_deref(),
            feed_link: request.feed_link.as_deref(),
            history_before: request.history_before,
            timing: &self.timing,
        };
        let class = classify(video);
        let plan = decide(prev.as_ref(), &class, video, &ctx);
        tracing::debug!(task_id = %task.task_id, video_id = %request.video_id, ?class, groups = plan.groups.len(), "classified");
        for group in &plan.groups {
            self.publisher
                .publish_once(task.entity, &group.claim, &group.messages)
                .await?;
        }
        store::update_schedule(
            self.storage.as_ref(),
            task,
            &request.video_id,
            prev.as_ref(),
            &plan.record,
            video,
        )
        .await?;
        store::put_video(
            self.storage.as_ref(),
            task.task_id,
            &request.video_id,
            &plan.record,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(task: u128, video: &str, updated: &str) -> ClassifyRequest {
        ClassifyRequest {
            task: Arc::new(TaskRef {
                task_id: Uuid::from_u128(task),
                entity: Uuid::nil(),
                channel_id: "UC".into(),
            }),
            video_id: video.into(),
            updated: Some(updated.into()),
            title_hint: None,
            feed_link: None,
            history_before: None,
            pushed: false,
            published: None,
        }
    }

    #[test]
    fn pending_collapses_repeats_and_keeps_order() {
        let mut pending = Pending::default();
        pending.add(request(1, "a", "1"));
        pending.add(request(1, "b", "1"));
        pending.add(request(1, "a", "2"));
        pending.add(request(2, "a", "1"));
        assert_eq!(pending.len(), 2);
        let batch = pending.take(1);
        assert_eq!(batch[0].0, "a");
        assert_eq!(batch[0].1.len(), 2);
        assert_eq!(batch[0].1[0].updated.as_deref(), Some("2"));
        pending.add(request(1, "a", "3"));
        pending.put_back(batch);
        let all = pending.take(10);
        assert_eq!(all.len(), 2);
        let a = all.iter().find(|(id, _)| id == "a").unwrap();
        assert_eq!(a.1.len(), 2);
        assert!(a.1.iter().any(|r| r.updated.as_deref() == Some("3")));
    }
}
