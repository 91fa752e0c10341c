//! Gathers the texts of concurrent events into DeepL calls: requests arriving within a
//! short window are grouped by target language, identical texts are sent once (also when
//! a copy arrives while the first is still being translated), and each call carries at
//! most 50 texts. Calls are retried on 429/5xx/network errors (honouring
//! `Retry-After`); a 456 stops all calls until the quota pause is over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, Opts, Registry};
use stargazer_core::backoff::Backoff;
use stargazer_core::wait::sleep_unless_cancelled;
use stargazer_core::CancellationToken;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::cache::Lru;
use crate::deepl::{CallError, DeeplClient, Translation, MAX_TEXTS_PER_CALL};
/// Locks a mutex of this crate (the cache, the in-flight map); a poisoned lock still
/// holds a valid map.
pub(crate) use stargazer_core::sync::lock;

/// Most text bytes put in one call, well under DeepL's 128 KiB request limit.
const MAX_BYTES_PER_CALL: usize = 64 * 1024;

/// Cache key: `(DeepL target code, source text)`.
pub(crate) type CacheKey = (String, String);

/// The translation cache shared by the middleware and the calls.
pub(crate) type SharedCache = Arc<Mutex<Lru<CacheKey, Translation>>>;

/// Why a text has no translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobError {
    /// DeepL failed for good (or is paused); the event goes on with `x-translate-error`.
    Failed(String),
    /// The service is stopping; the event is requeued for another instance.
    ShuttingDown,
}

/// One text to translate and where to send the answer.
pub(crate) struct Job {
    pub(crate) target: String,
    pub(crate) text: String,
    pub(crate) reply: oneshot::Sender<Result<Translation, JobError>>,
}

/// Retry and pacing settings.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) batch_window: Duration,
    pub(crate) call_concurrency: usize,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_retry_wait: Duration,
    pub(crate) quota_pause: Duration,
}

/// Metrics of the translate middleware.
#[derive(Clone)]
pub struct TranslateMetrics {
    /// `stargazer_translate_texts_total{result}`: texts by result (`cached`,
    /// `deduplicated` (joined a call already in flight), `translated`, `failed`,
    /// `same_language`).
    pub texts: IntCounterVec,
    /// `stargazer_translate_api_calls_total{result}`: DeepL calls by result (`ok`,
    /// `rate_limited`, `quota_exceeded`, `server_error`, `rejected`, `network`,
    /// `bad_response`, `skipped_quota`).
    pub api_calls: IntCounterVec,
}

impl TranslateMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        // Fixed valid names and label names: construction cannot fail.
        let texts = IntCounterVec::new(
            Opts::new(
                "stargazer_translate_texts_total",
                "Texts handled by middleware-translate, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let api_calls = IntCounterVec::new(
            Opts::new(
                "stargazer_translate_api_calls_total",
                "DeepL API calls, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        for collector in [texts.clone(), api_calls.clone()] {
            if let Err(err) = registry.register(Box::new(collector)) {
                tracing::warn!(cause = %err, "translate metric not registered");
            }
        }
        Self { texts, api_calls }
    }

    /// The count of `result` in `stargazer_translate_texts_total`.
    pub fn texts(&self, result: &str) -> u64 {
        self.texts.with_label_values(&[result]).get()
    }

    /// The count of `result` in `stargazer_translate_api_calls_total`.
    pub fn api_calls(&self, result: &str) -> u64 {
        self.api_calls.with_label_values(&[result]).get()
    }
}

/// Turns jobs into DeepL calls.
pub(crate) struct Batcher {
    pub(crate) client: DeeplClient,
    pub(crate) cache: SharedCache,
    pub(crate) policy: Policy,
    pub(crate) metrics: TranslateMetrics,
    /// Cancelled at shutdown: retries stop waiting and answer [`JobError::ShuttingDown`].
    pub(crate) shutdown: CancellationToken,
    /// Until when calls are paused after a 456.
    pub(crate) paused_until: Mutex<Option<DateTime<Utc>>>,
    /// Texts sent and not answered yet, with the jobs that asked for them meanwhile.
    pub(crate) in_flight: Mutex<HashMap<CacheKey, Vec<Reply>>>,
}

/// Where one job's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<Translation, JobError>>;

/// Texts of one target language waiting to be sent, deduplicated.
#[derive(Default)]
struct Group {
    texts: Vec<String>,
    replies: Vec<Vec<Reply>>,
    index: HashMap<String, usize>,
}

impl Batcher {
    /// Serves jobs until every sender is dropped, then waits for the calls in flight.
    pub(crate) async fn run(self: Arc<Self>, mut jobs: mpsc::Receiver<Job>) {
        let slots = Arc::new(Semaphore::new(self.policy.call_concurrency.max(1)));
        let mut calls = JoinSet::new();
        while let Some(first) = jobs.recv().await {
            let mut groups: HashMap<String, Group> = HashMap::new();
            self.add(&mut groups, first);
            let window = tokio::time::sleep(self.policy.batch_window);
            tokio::pin!(window);
            loop {
                if groups.values().any(|g| g.texts.len() >= MAX_TEXTS_PER_CALL) {
                    break;
                }
                tokio::select! {
                    job = jobs.recv() => match job {
                        Some(job) => self.add(&mut groups, job),
                        None => break,
                    },
                    _ = &mut window => break,
                }
            }
            for (target, group) in groups {
                for (texts, replies) in chunks(group) {
                    {
                        let mut in_flight = self.in_flight();
                        for text in &texts {
                            in_flight.insert((target.clone(), text.clone()), Vec::new());
                        }
                    }
                    let permit = match slots.clone().acquire_owned().await {
                        Ok(permit) => permit,
                        Err(_) => return,
                    };
                    let this = self.clone();
                    let target = target.clone();
                    calls.spawn(async move {
                        this.call(&target, texts, replies).await;
                        drop(permit);
                    });
                }
            }
            while let Some(done) = calls.try_join_next() {
                if let Err(err) = done {
                    tracing::error!(cause = %err, "a DeepL call task failed");
                }
            }
        }
        while calls.join_next().await.is_some() {}
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<CacheKey, Vec<Reply>>> {
        // Poisoning leaves a structurally valid map.
        lock(&self.in_flight)
    }

    fn add(&self, groups: &mut HashMap<String, Group>, job: Job) {
        let key = (job.target.clone(), job.text.clone());
        // In flight first, then the cache: a call caches its results before it leaves
        // `in_flight`, so a text is never missed by both and sent twice.
        if let Some(waiting) = self.in_flight().get_mut(&key) {
            self.metrics
                .texts
                .with_label_values(&["deduplicated"])
                .inc();
            waiting.push(job.reply);
            return;
        }
        let cached = lock(&self.cache).get(&key);
        if let Some(translation) = cached {
            self.metrics.texts.with_label_values(&["cached"]).inc();
            let _ = job.reply.send(Ok(translation));
            return;
        }
        let group = groups.entry(job.target).or_default();
        match group.index.get(&job.text) {
            Some(&at) => group.replies[at].push(job.reply),
            None => {
                group.index.insert(job.text.clone(), group.texts.len());
                group.texts.push(job.text);
                group.replies.push(vec![job.reply]);
            }
        }
    }

    async fn call(&self, target: &str, texts: Vec<String>, replies: Vec<Vec<Reply>>) {
        let result = self.translate_with_retry(target, &texts).await;
        if let Ok(translations) = &result {
            // Cached before leaving `in_flight`, so a copy arriving in between finds it.
            let mut cache = lock(&self.cache);
            for (text, translation) in texts.iter().zip(translations) {
                cache.put((target.to_owned(), text.clone()), translation.clone());
                self.metrics.texts.with_label_values(&["translated"]).inc();
            }
        }
        for (i, (text, mut waiting)) in texts.into_iter().zip(replies).enumerate() {
            let joined = self.in_flight().remove(&(target.to_owned(), text));
            waiting.extend(joined.unwrap_or_default());
            let answer = match &result {
                Ok(translations) => translations
                    .get(i)
                    .cloned()
                    .ok_or_else(|| JobError::Failed("DeepL answered too few translations".into())),
                Err(err) => Err(err.clone()),
            };
            for reply in waiting {
                let _ = reply.send(answer.clone());
            }
        }
    }

    fn paused_until(&self) -> Option<DateTime<Utc>> {
        let mut paused = lock(&self.paused_until);
        match *paused {
            Some(until) if until > Utc::now() => Some(until),
            Some(_) => {
                *paused = None;
                None
            }
            None => None,
        }
    }

    /// Stops DeepL calls for `quota_pause` (quota spent); returns until when. Sets a
    /// deadline, never waits: named apart from the waiting helpers of `stargazer_core::wait`.
    fn pause_calls(&self) -> DateTime<Utc> {
        let until = Utc::now()
            + chrono::Duration::from_std(self.policy.quota_pause)
                .unwrap_or(chrono::Duration::hours(1));
        *lock(&self.paused_until) = Some(until);
        until
    }

    async fn translate_with_retry(
        &self,
        target: &str,
        texts: &[String],
    ) -> Result<Vec<Translation>, JobError> {
        let mut backoff = Backoff::new(self.policy.backoff_initial, self.policy.backoff_max);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(until) = self.paused_until() {
                self.metrics
                    .api_calls
                    .with_label_values(&["skipped_quota"])
                    .inc();
                return Err(JobError::Failed(format!(
                    "DeepL quota exceeded; calls paused until {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )));
            }
            let err = match self.client.translate(texts, target).await {
                Ok(translations) => {
                    self.metrics.api_calls.with_label_values(&["ok"]).inc();
                    return Ok(translations);
                }
                Err(err) => err,
            };
            self.metrics
                .api_calls
                .with_label_values(&[result_label(&err)])
                .inc();
            if err == CallError::QuotaExceeded {
                let until = self.pause_calls();
                tracing::warn!(until = %until, "DeepL quota exceeded; pausing translation calls");
                return Err(JobError::Failed(format!(
                    "DeepL quota exceeded; calls paused until {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )));
            }
            if !err.is_transient() || attempt >= self.policy.max_attempts {
                tracing::warn!(cause = %err, attempt, "DeepL call failed for good");
                return Err(JobError::Failed(format!(
                    "{err} after {attempt} attempt(s)"
                )));
            }
            let wait = err.retry_after().unwrap_or_else(|| backoff.next_delay());
            if wait > self.policy.max_retry_wait {
                return Err(JobError::Failed(format!(
                    "{err}; asked to wait {}s",
                    wait.as_secs()
                )));
            }
            tracing::info!(cause = %err, attempt, ?wait, "DeepL call failed; retrying");
            if sleep_unless_cancelled(wait, &self.shutdown)
                .await
                .is_cancelled()
            {
                return Err(JobError::ShuttingDown);
            }
        }
    }
}

fn result_label(err: &CallError) -> &'static str {
    match err {
        CallError::RateLimited { .. } => "rate_limited",
        CallError::QuotaExceeded => "quota_exceeded",
        CallError::Server { .. } => "server_error",
        CallError::Rejected { .. } => "rejected",
        CallError::Network(_) => "network",
        CallError::BadResponse(_) => "bad_response",
    }
}

type Chunk = (Vec<String>, Vec<Vec<Reply>>);

/// Splits a group into calls of at most 50 texts and [`MAX_BYTES_PER_CALL`] bytes.
fn chunks(group: Group) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut bytes = 0;
    for (text, replies) in group.texts.into_iter().zip(group.replies) {
        let start_new = match out.last() {
            None => true,
            Some((texts, _)) => {
                texts.len() >= MAX_TEXTS_PER_CALL || bytes + text.len() > MAX_BYTES_PER_CALL
            }
        };
        if start_new {
            out.push((Vec::new(), Vec::new()));
            bytes = 0;
        }
        bytes += text.len();
        if let Some((texts, waiting)) = out.last_mut() {
            texts.push(text);
            waiting.push(replies);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_at_most_fifty_texts() {
        let mut group = Group::default();
        for i in 0..120 {
            let (tx, _rx) = oneshot::channel();
            group.texts.push(format!("t{i}"));
            group.replies.push(vec![tx]);
        }
        let sizes: Vec<usize> = chunks(group).iter().map(|(t, _)| t.len()).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
    }

    #[test]
    fn chunks_respect_the_byte_budget() {
        let mut group = Group::default();
        for _ in 0..3 {
            let (tx, _rx) = oneshot::channel();
            group.texts.push("x".repeat(MAX_BYTES_PER_CALL / 2 + 1));
            group.replies.push(vec![tx]);
        }
        assert_eq!(chunks(group).len(), 3);
    }
}
