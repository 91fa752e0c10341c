//! The live-check middleware proper: holds events until their video is live, persisting
//! each held event in the key/value namespace (shared by every instance) before the ack,
//! and polls the Data API for the held videos of the shards this instance claims
//! (`claims.rs`), together.
//!
//! Verdicts, per held event, on each successful poll:
//!
//! | what the API shows | verdict |
//! |---|---|
//! | `actualStartTime`, no `actualEndTime` | forwarded (with `fields.actual_start_time`) |
//! | `actualEndTime` | dropped `ended`: the broadcast is over, "live now" would be wrong |
//! | no `liveStreamingDetails` | dropped `not_broadcast`: cancelled or turned into a plain video |
//! | video absent from `items` | dropped `gone`: deleted or made private |
//! | only `scheduledStartTime` | still held, until the bound passes: dropped `timeout` |
//!
//! The bound is `give_up_after` counted from the later of the time the event was held
//! and the scheduled start; it also applies while the API is failing, so a dead key
//! cannot make pending events pile up forever.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};
use stargazer_core::backoff::Backoff;
use stargazer_core::bus::Bus;
use stargazer_core::middleware::{Incoming, Middleware, Outcome};
use stargazer_core::model::Event;
use stargazer_core::storage::StateStore;
use stargazer_core::wait::sleep_unless_cancelled;
use stargazer_core::CancellationToken;

use crate::claims::{shard_of, ClaimOptions, Claims};
use crate::youtube::{LiveStreamingDetails, YoutubeClient, MAX_IDS_PER_CALL};
use stargazer_core::contract::field;
use stargazer_core::quota::{Budget, QuotaMeter};
use stargazer_core::sync::lock;

pub use stargazer_core::contract::control::LIVE_CHECK_VIDEO;

/// One held event, as stored under `(namespace, event id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The video to watch.
    pub video: String,
    /// Routing key to publish with once live (the `live_check` tag removed).
    pub routing_key: String,
    /// The event, control field removed.
    pub event: Event,
    /// When it was held.
    pub held_at: DateTime<Utc>,
    /// The scheduled start the API reported last, if any.
    #[serde(default)]
    pub scheduled_start: Option<DateTime<Utc>>,
}

impl Held {
    fn deadline(&self, give_up_after: Duration) -> DateTime<Utc> {
        let from = match self.scheduled_start {
            Some(start) if start > self.held_at => start,
            _ => self.held_at,
        };
        from + chrono::Duration::from_std(give_up_after).unwrap_or(chrono::Duration::days(1))
    }
}

/// Metrics of the live-check middleware.
#[derive(Clone)]
pub struct LiveCheckMetrics {
    /// `stargazer_live_check_pending`: events held in this instance's shards, as of its
    /// last polling round.
    pub pending: IntGauge,
    /// `stargazer_live_check_claimed_shards`: shards this instance holds the lease of.
    pub claimed_shards: IntGauge,
    /// `stargazer_live_check_forwarded_total`: events forwarded once live.
    pub forwarded: IntCounter,
    /// `stargazer_live_check_dropped_total{reason}`: events given up (`gone`, `ended`,
    /// `not_broadcast`, `timeout`).
    pub dropped: IntCounterVec,
    /// `stargazer_live_check_api_calls_total{result}`: Data API calls (`ok`, `quota`,
    /// `server_error`, `rejected`, `network`, `bad_response`).
    pub api_calls: IntCounterVec,
}

impl LiveCheckMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        // Fixed valid names and label names: construction cannot fail.
        let metrics = Self {
            pending: IntGauge::new(
                "stargazer_live_check_pending",
                "Events held by middleware-live-check.",
            )
            .expect("valid metric"),
            claimed_shards: IntGauge::new(
                "stargazer_live_check_claimed_shards",
                "Shards of held videos this instance holds the lease of.",
            )
            .expect("valid metric"),
            forwarded: IntCounter::new(
                "stargazer_live_check_forwarded_total",
                "Events forwarded once their broadcast was live.",
            )
            .expect("valid metric"),
            dropped: IntCounterVec::new(
                Opts::new(
                    "stargazer_live_check_dropped_total",
                    "Events given up, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            api_calls: IntCounterVec::new(
                Opts::new(
                    "stargazer_live_check_api_calls_total",
                    "YouTube Data API calls, by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.pending.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.claimed_shards.clone()),
            Box::new(metrics.forwarded.clone()),
            Box::new(metrics.dropped.clone()),
            Box::new(metrics.api_calls.clone()),
        ] {
            if let Err(err) = registry.register(collector) {
                tracing::warn!(cause = %err, "live-check metric not registered");
            }
        }
        metrics
    }

    /// How many events were dropped for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.with_label_values(&[reason]).get()
    }
}

/// Polling settings.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Time between polls.
    pub interval: Duration,
    /// How long past the later of hold time and scheduled start to wait for "live".
    pub give_up_after: Duration,
    /// First pause after a failed call.
    pub backoff_initial: Duration,
    /// Longest pause after failed calls.
    pub backoff_max: Duration,
    /// Key/value namespace of held events.
    pub namespace: String,
    /// The Data API quota shared with the YouTube worker: every call is counted on it;
    /// polls are five times rarer when it runs low, and none are made when it is spent.
    pub quota: Option<Arc<QuotaMeter>>,
    /// How this instance shares the held videos with the others.
    pub claims: ClaimOptions,
}

/// Holds events and polls; implements [`Middleware`] for the `live_check` tag.
pub struct Checker {
    storage: Arc<dyn StateStore>,
    bus: Arc<dyn Bus>,
    client: YoutubeClient,
    options: PollOptions,
    metrics: LiveCheckMetrics,
    claims: Arc<Claims>,
    // A std Mutex: only map operations under it, never an `.await`. The events of this
    // instance's shards as of its last round (the stored namespace is the truth).
    held: Mutex<HashMap<String, Held>>,
}

enum Verdict {
    Forward(DateTime<Utc>),
    /// The quota is spent: released at its scheduled start without asking the API.
    ForwardUnverified,
    Drop(&'static str, String),
    Wait(Option<DateTime<Utc>>),
}

impl Checker {
    /// A checker polling the shards `claims` holds; run [`Checker::claim_loop`] beside
    /// [`Checker::poll_loop`] so that it holds some.
    pub fn new(
        storage: Arc<dyn StateStore>,
        bus: Arc<dyn Bus>,
        client: YoutubeClient,
        options: PollOptions,
        metrics: LiveCheckMetrics,
    ) -> Arc<Self> {
        let claims = Claims::new(storage.clone(), options.claims.clone());
        Arc::new(Self {
            storage,
            bus,
            client,
            options,
            metrics,
            claims: Arc::new(claims),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        lock(&self.held)
    }

    /// How many events this instance's shards held at its last round.
    pub fn pending(&self) -> usize {
        self.held().len()
    }

    fn set_gauge(&self) {
        let len = self.held().len();
        self.metrics
            .pending
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Keeps this instance's share of the shards until `shutdown`, then releases them.
    pub async fn claim_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let claims = self.claims.clone();
        let metrics = self.metrics.claimed_shards.clone();
        let gauge = async {
            // The gauge follows the claims without a storage call of its own.
            loop {
                metrics.set(i64::try_from(claims.held_count()).unwrap_or(i64::MAX));
                if sleep_unless_cancelled(Duration::from_millis(100), &shutdown)
                    .await
                    .is_cancelled()
                {
                    break;
                }
            }
        };
        tokio::join!(self.claims.clone().run(shutdown.clone()), gauge);
        metrics.set(0);
    }

    /// The stored events whose video falls in a shard this instance holds; `None` when
    /// the store could not be read. Records that cannot be decoded are logged and left in
    /// place.
    async fn claimed_events(&self) -> Option<Vec<(String, Held)>> {
        let rows = match self.storage.kv_list(&self.options.namespace).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(cause = %err, "reading held live-check events failed");
                return None;
            }
        };
        let now = Utc::now();
        let shards = self.claims.shards();
        let mut mine = Vec::new();
        for (key, value) in rows {
            match serde_json::from_value::<Held>(value) {
                Ok(held) => {
                    if self.claims.owns(shard_of(&held.video, shards), now) {
                        mine.push((key, held));
                    }
                }
                Err(err) => tracing::error!(
                    namespace = %self.options.namespace,
                    key = %key,
                    cause = %err,
                    "undecodable held live-check event left in storage"
                ),
            }
        }
        *self.held() = mine.iter().cloned().collect();
        self.set_gauge();
        Some(mine)
    }

    /// Polls every `interval` (backing off after failures) until `shutdown`.
    pub async fn poll_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.options.backoff_initial, self.options.backoff_max);
        if let Some(quota) = &self.options.quota {
            quota.load().await;
        }
        loop {
            let wait = match self.poll_once(&shutdown).await {
                true => {
                    backoff.reset();
                    match self.budget() {
                        Budget::Low => self.options.interval * 5,
                        Budget::Plenty | Budget::Spent => self.options.interval,
                    }
                }
                false => backoff.next_delay().max(self.options.interval),
            };
            if sleep_unless_cancelled(wait, &shutdown).await.is_cancelled() {
                return;
            }
        }
    }

    fn budget(&self) -> Budget {
        self.options
            .quota
            .as_ref()
            .map_or(Budget::Plenty, |quota| quota.budget())
    }

    /// With the day's quota spent: every held event whose scheduled start passed is
    /// released unverified (marked so), since a notification that may be early beats none;
    /// the others wait for their start or the quota's reset.
    async fn release_unverified(&self, snapshot: Vec<(String, Held)>) {
        let now = Utc::now();
        for (key, held) in snapshot {
            let due = held.scheduled_start.unwrap_or(held.held_at) <= now;
            let verdict = if due {
                Verdict::ForwardUnverified
            } else {
                Verdict::Wait(None)
            };
            self.apply(&key, held, verdict).await;
        }
    }

    /// One round over the held events of this instance's shards; `false` when the store
    /// could not be read or an API call failed.
    pub async fn poll_once(&self, shutdown: &CancellationToken) -> bool {
        let Some(snapshot) = self.claimed_events().await else {
            return false;
        };
        if snapshot.is_empty() {
            return true;
        }
        if self.budget() == Budget::Spent {
            self.release_unverified(snapshot).await;
            return true;
        }
        let videos: Vec<String> = snapshot
            .iter()
            .map(|(_, held)| held.video.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut answers: HashMap<String, Option<LiveStreamingDetails>> = HashMap::new();
        let mut answered: BTreeSet<String> = BTreeSet::new();
        let mut healthy = true;
        for ids in videos.chunks(MAX_IDS_PER_CALL) {
            if shutdown.is_cancelled() {
                return true;
            }
            let answer = self.client.live_details(ids).await;
            // A call refused for quota costs nothing; any other answer is a unit spent.
            if let (Some(quota), false) = (
                &self.options.quota,
                answer.as_ref().is_err_and(|e| e.is_quota()),
            ) {
                quota.spend(1).await;
            }
            match answer {
                Ok(found) => {
                    self.metrics.api_calls.with_label_values(&["ok"]).inc();
                    answered.extend(ids.iter().cloned());
                    answers.extend(found);
                }
                Err(err) => {
                    self.metrics
                        .api_calls
                        .with_label_values(&[err.label()])
                        .inc();
                    tracing::warn!(cause = %err, "live-check poll failed; backing off");
                    healthy = false;
                    break;
                }
            }
        }
        let now = Utc::now();
        for (key, held) in snapshot {
            let verdict = if answered.contains(&held.video) {
                judge(
                    &held,
                    answers.get(&held.video),
                    now,
                    self.options.give_up_after,
                )
            } else if now > held.deadline(self.options.give_up_after) {
                Verdict::Drop(
                    "timeout",
                    "not confirmed live within the bound (API unavailable)".into(),
                )
            } else {
                Verdict::Wait(None)
            };
            self.apply(&key, held, verdict).await;
        }
        healthy
    }

    /// Whether this instance may still act on `held`: its term on the video's shard runs,
    /// and the entry is still stored (another instance that took the shard over after a
    /// lapse may have released it already). A failed read counts as "no": the next round
    /// decides again.
    async fn still_mine(&self, key: &str, held: &Held) -> bool {
        if !self
            .claims
            .owns(shard_of(&held.video, self.claims.shards()), Utc::now())
        {
            tracing::info!(video = %held.video, "shard lease lapsed; left to its new holder");
            return false;
        }
        match self.storage.kv_get(&self.options.namespace, key).await {
            Ok(found) => found.is_some(),
            Err(err) => {
                tracing::warn!(key, cause = %err, "checking a held event failed; decided next round");
                false
            }
        }
    }

    async fn apply(&self, key: &str, mut held: Held, verdict: Verdict) {
        match verdict {
            Verdict::Wait(Some(scheduled)) if held.scheduled_start != Some(scheduled) => {
                held.scheduled_start = Some(scheduled);
                // Checked so that a late update does not bring back an entry another
                // instance released (the window between the check and the write remains).
                if self.still_mine(key, &held).await {
                    self.store(key, &held).await;
                }
            }
            Verdict::Wait(_) => {}
            Verdict::Forward(_) | Verdict::ForwardUnverified => {
                if !self.still_mine(key, &held).await {
                    self.held().remove(key);
                    self.set_gauge();
                    return;
                }
                let mut event = held.event.clone();
                match verdict {
                    Verdict::Forward(started) => {
                        event
                            .fields
                            .entry("actual_start_time")
                            .or_insert_with(|| serde_json::Value::String(started.to_rfc3339()));
                    }
                    _ => {
                        event
                            .fields
                            .insert(field::LIVE_UNVERIFIED.into(), serde_json::Value::Bool(true));
                    }
                }
                if let Err(err) = self.bus.publish(&held.routing_key, &event.to_bytes()).await {
                    tracing::warn!(event_id = %event.id, cause = %err, "forwarding a live event failed; kept for the next poll");
                    return;
                }
                self.metrics.forwarded.inc();
                tracing::info!(event_id = %event.id, video = %held.video, "broadcast is live; event forwarded");
                self.forget(key).await;
            }
            Verdict::Drop(reason, detail) => {
                self.metrics.dropped.with_label_values(&[reason]).inc();
                tracing::info!(event_id = %held.event.id, video = %held.video, reason, %detail, "live-check gave up; event dropped");
                self.forget(key).await;
            }
        }
    }

    async fn store(&self, key: &str, held: &Held) {
        let value = match serde_json::to_value(held) {
            Ok(value) => value,
            Err(err) => {
                tracing::error!(cause = %err, "cannot encode held event");
                return;
            }
        };
        if let Err(err) = self
            .storage
            .kv_put(&self.options.namespace, key, &value)
            .await
        {
            tracing::warn!(cause = %err, "updating a held event failed");
        }
        self.held().insert(key.to_owned(), held.clone());
    }

    async fn forget(&self, key: &str) {
        self.held().remove(key);
        self.set_gauge();
        if let Err(err) = self.storage.kv_delete(&self.options.namespace, key).await {
            // It stays stored and the shard's holder settles it again at its next
            // round: a forward is repeated, which the bot's delivery log deduplicates
            // by (event, chat).
            tracing::warn!(key, cause = %err, "removing a settled held event failed");
        }
    }
}

fn judge(
    held: &Held,
    answer: Option<&Option<LiveStreamingDetails>>,
    now: DateTime<Utc>,
    give_up_after: Duration,
) -> Verdict {
    match answer {
        None => Verdict::Drop(
            "gone",
            "video not returned by the API (deleted or private)".into(),
        ),
        Some(None) => Verdict::Drop(
            "not_broadcast",
            "video has no live streaming details".into(),
        ),
        Some(Some(details)) => {
            if let Some(ended) = details.actual_end_time {
                return Verdict::Drop("ended", format!("broadcast already ended at {ended}"));
            }
            if let Some(started) = details.actual_start_time {
                return Verdict::Forward(started);
            }
            let mut probe = held.clone();
            if let Some(scheduled) = details.scheduled_start_time {
                probe.scheduled_start = Some(scheduled);
            }
            if now > probe.deadline(give_up_after) {
                Verdict::Drop("timeout", "not live within the bound".into())
            } else {
                Verdict::Wait(details.scheduled_start_time)
            }
        }
    }
}

/// Whether `id` can be a YouTube video id and is safe in a comma-separated list.
fn valid_video_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[async_trait]
impl Middleware for Checker {
    async fn handle(&self, message: Incoming) -> Outcome {
        let mut event = message.event;
        let video = match event.take_control(LIVE_CHECK_VIDEO) {
            Some(serde_json::Value::String(video)) if valid_video_id(&video) => video,
            Some(other) => {
                return Outcome::Reject(format!("{LIVE_CHECK_VIDEO} is not a video id: {other}"))
            }
            None => return Outcome::Reject(format!("{LIVE_CHECK_VIDEO} is missing")),
        };
        let key = event.id.to_string();
        let held = Held {
            video,
            routing_key: message.rest_key,
            event,
            held_at: Utc::now(),
            scheduled_start: None,
        };
        let value = match serde_json::to_value(&held) {
            Ok(value) => value,
            Err(err) => return Outcome::Reject(format!("event cannot be stored: {err}")),
        };
        if let Err(err) = self
            .storage
            .kv_put(&self.options.namespace, &key, &value)
            .await
        {
            return Outcome::Retry(format!("storing held event: {err}"));
        }
        // Polled by whichever instance holds the video's shard, at its next round.
        tracing::debug!(video = %held.video, "event held until live");
        Outcome::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn held(scheduled: Option<DateTime<Utc>>, held_at: DateTime<Utc>) -> Held {
        Held {
            video: "abc".into(),
            routing_key: "youtube".into(),
            event: Event {
                id: Uuid::nil(),
                kind: "youtube.live".into(),
                entity: Uuid::nil(),
                time: held_at,
                fields: Default::default(),
                control: Default::default(),
            },
            held_at,
            scheduled_start: scheduled,
        }
    }

    fn details(
        scheduled: Option<i64>,
        start: Option<i64>,
        end: Option<i64>,
    ) -> LiveStreamingDetails {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        LiveStreamingDetails {
            scheduled_start_time: scheduled.map(t),
            actual_start_time: start.map(t),
            actual_end_time: end.map(t),
        }
    }

    #[test]
    fn verdicts() {
        let t0 = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let bound = Duration::from_secs(3600);
        let h = held(None, t0);
        assert!(matches!(
            judge(&h, None, t0, bound),
            Verdict::Drop("gone", _)
        ));
        assert!(matches!(
            judge(&h, Some(&None), t0, bound),
            Verdict::Drop("not_broadcast", _)
        ));
        let live = details(Some(1_000_000), Some(1_000_100), None);
        assert!(matches!(
            judge(&h, Some(&Some(live)), t0, bound),
            Verdict::Forward(_)
        ));
        let ended = details(Some(1_000_000), Some(1_000_100), Some(1_000_200));
        assert!(matches!(
            judge(&h, Some(&Some(ended)), t0, bound),
            Verdict::Drop("ended", _)
        ));
        // Scheduled two hours after holding: the bound counts from the schedule.
        let upcoming = details(Some(1_007_200), None, None);
        let later = t0 + chrono::Duration::seconds(7200 + 1800);
        assert!(matches!(
            judge(&h, Some(&Some(upcoming.clone())), later, bound),
            Verdict::Wait(Some(_))
        ));
        let too_late = t0 + chrono::Duration::seconds(7200 + 3601);
        assert!(matches!(
            judge(&h, Some(&Some(upcoming)), too_late, bound),
            Verdict::Drop("timeout", _)
        ));
    }

    #[test]
    fn video_ids() {
        assert!(valid_video_id("dQw4w9WgXcQ") && valid_video_id("a-_b"));
        assert!(!valid_video_id("") && !valid_video_id("a,b") && !valid_video_id("a b"));
    }
}
