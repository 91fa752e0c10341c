//! [`BilibiliRunner`]: the Bilibili users this worker watches. The coordinator (through
//! the worker runtime) or a test calls [`BilibiliRunner::start`] /
//! [`BilibiliRunner::stop`].
//!
//! Two kinds of work run:
//!
//! - **One status poller** for every held uid at once: every `live_poll_interval_seconds`
//!   (±10 % jitter) the uids go out in batches of `status_batch_size` to
//!   `get_status_info_by_uids`, and each task's [`LiveState`] decides what to publish
//!   (see [`crate::live`] for the flapping rule). States are cached in memory and stored
//!   (namespace [`LIVE_NAMESPACE`], keyed by task id) whenever they change, so a restart
//!   or another worker taking the task over carries on without announcing again.
//! - **One dynamics job per task**: its first poll after a random share of
//!   `dynamic_poll_interval_seconds` (so the uids spread over the interval), then one
//!   every interval. The very first poll of a task records the newest dynamic id without
//!   publishing history; later polls page with `offset` until they reach that id (at most
//!   `max_pages`) and publish what is newer, oldest first.
//!
//! Each endpoint (status, dynamics) has its own [`Gate`]: requests at least
//! `min_request_gap_ms` apart, and none at all while the endpoint backs off after a
//! risk-control answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use prometheus::Registry;
use rand::Rng;
use serde::{Deserialize, Serialize};
use stargazer_core::bus::Bus;
use stargazer_core::config::Section;
use stargazer_core::model::{Task, TaskParams};
use stargazer_core::source::{housekeeping, Background, Housekeeping, Namespaces, Publisher};
use stargazer_core::storage::{EntityStore, StateStore, StorageError};
use stargazer_core::sync::lock;
use stargazer_core::wait::{sleep_unless_cancelled, sleep_until_unless_cancelled};
use stargazer_core::worker_runtime::{JobSet, JobTokens};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::api::{
    id_cmp, ApiError, BiliApi, Dynamic, FeedPage, RoomStatus, CODE_DENIED, CODE_RISK,
};
use crate::config::BilibiliConfig;
use crate::events::{dynamic_event, ended_event, live_event, ready_key, room_link, Stream};
use crate::gate::Gate;
use crate::live::{Change, LiveState};
use crate::metrics::{Metrics, DYNAMIC, LIVE};
use crate::wbi::WbiKeys;
use crate::Error;

/// Namespace of per-task live states ([`LiveState`]), keyed by task id.
pub const LIVE_NAMESPACE: &str = "bilibili.live";
/// Namespace of per-task dynamics cursors ([`Cursor`]), keyed by task id.
pub const CURSOR_NAMESPACE: &str = "bilibili.dynamic";
/// Seen-window namespace of published events, keyed `<entity>/<event id>`.
pub const SEEN_NAMESPACE: &str = "bilibili.seen";
/// Namespace of publishes awaiting a broker confirm.
pub const OUTBOX_NAMESPACE: &str = "bilibili.outbox";

const PUBLISHING: Namespaces = Namespaces {
    seen: SEEN_NAMESPACE,
    outbox: OUTBOX_NAMESPACE,
};

/// A task's position in its user's dynamics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The newest dynamic id handled; `None` for a user who had none.
    pub newest: Option<String>,
}

/// A held task, as the status poller needs it.
#[derive(Debug, Clone)]
struct Held {
    entity: Uuid,
    uid: u64,
}

struct Shared {
    config: Arc<BilibiliConfig>,
    state: Arc<dyn StateStore>,
    entities: Arc<dyn EntityStore>,
    api: BiliApi,
    publisher: Publisher,
    metrics: Metrics,
    live_gate: Gate,
    dynamic_gate: Gate,
    held: Mutex<HashMap<Uuid, Held>>,
    /// Live states of held tasks, loaded from storage at first sight.
    live: Mutex<HashMap<Uuid, LiveState>>,
    /// The WBI keys and when they were fetched.
    keys: tokio::sync::Mutex<Option<(WbiKeys, Instant)>>,
    shutdown: CancellationToken,
}

/// The set of users this worker watches. Cheap to clone.
#[derive(Clone)]
pub struct BilibiliRunner {
    shared: Arc<Shared>,
    jobs: Arc<JobSet<Uuid, Task>>,
    background: Background,
}

impl BilibiliRunner {
    /// Builds the runner, its metrics registered in `registry`, and starts its background
    /// work (status poller, seen-window purge, outbox retries). Everything stops when
    /// `shutdown` is cancelled; [`BilibiliRunner::join`] waits for it.
    pub fn new(
        config: BilibiliConfig,
        state: Arc<dyn StateStore>,
        entities: Arc<dyn EntityStore>,
        bus: Arc<dyn Bus>,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        config.check()?;
        let config = Arc::new(config);
        let metrics = Metrics::register(registry);
        let publisher =
            Publisher::new(state.clone(), bus, PUBLISHING, metrics.publishing().clone());
        let gate = |endpoint| {
            Gate::new(
                config.min_gap(),
                config.risk_backoff(),
                metrics.risk_gauge(endpoint),
            )
        };
        let shared = Arc::new(Shared {
            api: BiliApi::new(&config)?,
            live_gate: gate(LIVE),
            dynamic_gate: gate(DYNAMIC),
            config: config.clone(),
            state,
            entities,
            publisher: publisher.clone(),
            metrics,
            held: Mutex::default(),
            live: Mutex::default(),
            keys: tokio::sync::Mutex::new(None),
            shutdown: shutdown.clone(),
        });
        let jobs = Arc::new(JobSet::new(shutdown.clone()));
        let background = Background::new();
        background.spawn(housekeeping(
            publisher,
            Housekeeping::new(chrono::Duration::days(config.seen_window_days as i64)),
            shutdown,
        ));
        background.spawn(
            shared
                .clone()
                .status_poller()
                .instrument(tracing::info_span!("bilibili_status")),
        );
        Ok(Self {
            shared,
            jobs,
            background,
        })
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Ids of the tasks currently held.
    pub fn tasks(&self) -> Vec<Uuid> {
        self.jobs.running()
    }

    /// Starts watching the user of `task` (idempotent for a task already held).
    pub async fn start(&self, task: Task) -> Result<(), Error> {
        let TaskParams::Bilibili { uid } = &task.params else {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("a {} task sent to the Bilibili worker", task.kind()),
            });
        };
        let Some(numeric) = uid
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0 && !uid.starts_with('+'))
        else {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("`{uid}` is not a numeric Bilibili uid"),
            });
        };
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let (task_id, entity, uid) = (task.id, task.entity, uid.clone());
        lock(&self.shared.held).insert(
            task_id,
            Held {
                entity,
                uid: numeric,
            },
        );
        let job = |tokens: JobTokens| {
            let span = tracing::info_span!("bilibili_task", %task_id, entity_id = %entity, %uid);
            tracing::info!(%task_id, entity_id = %entity, %uid, "task started");
            DynamicsJob {
                shared: self.shared.clone(),
                task_id,
                entity,
                uid,
                stop: tokens.stop,
            }
            .run()
            .instrument(span)
        };
        self.jobs.start(task_id, task, job).await;
        Ok(())
    }

    /// Stops watching a task and waits for its dynamics job to end. Unknown ids are
    /// ignored.
    pub async fn stop(&self, task_id: Uuid) -> Result<(), Error> {
        lock(&self.shared.held).remove(&task_id);
        lock(&self.shared.live).remove(&task_id);
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

/// Why a poll did not complete.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stopped")]
    Stopped,
}

/// `interval` ±10 %.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
}

impl Shared {
    /// Until shutdown: one status cycle, then the rest of a jittered interval.
    async fn status_poller(self: Arc<Self>) {
        let interval = Duration::from_secs(self.config.live_poll_interval_seconds);
        loop {
            let started = Instant::now();
            self.status_cycle(&self.shutdown).await;
            if sleep_until_unless_cancelled(started + jittered(interval), &self.shutdown)
                .await
                .is_cancelled()
            {
                return;
            }
        }
    }

    /// Asks for the status of every held uid, in batches, and acts on the answers.
    /// Returns the number of status calls made.
    async fn status_cycle(&self, stop: &CancellationToken) -> usize {
        let mut by_uid: BTreeMap<u64, Vec<(Uuid, Uuid)>> = BTreeMap::new();
        for (task, held) in lock(&self.held).iter() {
            by_uid
                .entry(held.uid)
                .or_default()
                .push((*task, held.entity));
        }
        let uids: Vec<u64> = by_uid.keys().copied().collect();
        let mut calls = 0;
        for batch in uids.chunks(self.config.status_batch_size) {
            if self.live_gate.pass(stop).await.is_cancelled() {
                return calls;
            }
            calls += 1;
            let answer = tokio::select! {
                _ = stop.cancelled() => return calls,
                answer = self.api.room_status(batch) => answer,
            };
            let rooms = match answer {
                Ok(rooms) => {
                    self.metrics.poll(LIVE, "ok");
                    self.live_gate.success();
                    rooms
                }
                Err(err) => {
                    self.metrics.poll(LIVE, err.label());
                    if let ApiError::Risk { code, .. } = &err {
                        self.metrics.risk_answer(LIVE, *code);
                        let pause = self.live_gate.risk_answer();
                        tracing::warn!(cause = %err, ?pause, "room status: risk control; backing off");
                        // The rest of the cycle waits for the next one, after the pause.
                        break;
                    }
                    tracing::warn!(cause = %err, batch = batch.len(), "room status poll failed; retried next cycle");
                    continue;
                }
            };
            let now = Utc::now().timestamp();
            for uid in batch {
                let Some(room) = rooms.get(uid) else { continue };
                for &(task, entity) in by_uid.get(uid).into_iter().flatten() {
                    if let Err(err) = self.observe(task, entity, *uid, room, now).await {
                        tracing::warn!(%task, cause = %err, "live state not updated; retried next cycle");
                    }
                }
            }
        }
        let on_air = lock(&self.live).values().filter(|s| s.on_air()).count();
        self.metrics.set_rooms_live(on_air);
        calls
    }

    /// Applies one room status to a task's live state; publishes and stores what changed.
    async fn observe(
        &self,
        task: Uuid,
        entity: Uuid,
        uid: u64,
        room: &RoomStatus,
        now: i64,
    ) -> Result<(), StorageError> {
        let cached = lock(&self.live).get(&task).cloned();
        let mut state = match cached {
            Some(state) => state,
            None => match self.state.kv_get(LIVE_NAMESPACE, &task.to_string()).await? {
                Some(value) => serde_json::from_value(value).unwrap_or_else(|err| {
                    tracing::warn!(%task, cause = %err, "unreadable live state; starting over");
                    LiveState::default()
                }),
                None => LiveState::default(),
            },
        };
        let mut changed = false;
        if state.uid != uid {
            // A new state, or the task now watches another user: what was known is moot.
            state = LiveState {
                uid,
                ..LiveState::default()
            };
            changed = true;
        }
        let cooldown = self.config.live_cooldown_seconds as i64;
        let (changes, observed) = state.observe(room, now, cooldown);
        let changed = changed || observed;
        let uid = uid.to_string();
        let thumbnail = if room.cover_from_user.is_empty() {
            &room.keyframe
        } else {
            &room.cover_from_user
        };
        for change in &changes {
            let (stream, ended) = match change {
                Change::Live(stream) => (stream, None),
                Change::Ended { stream, at } => (stream, Some(*at)),
            };
            let stream = Stream {
                entity,
                uid: &uid,
                room_id: stream.room_id,
                stream_id: &stream.stream_id,
                started: stream.started,
                title: &stream.title,
                link: room_link(stream.room_id),
                category: &room.area_v2_name,
                thumbnail,
            };
            let event = match ended {
                None => live_event(&stream),
                Some(at) => ended_event(&stream, at),
            };
            // Published before the state is stored: a crash in between publishes again
            // on the next cycle, and the seen window drops the repeat.
            self.publisher.publish_event(&ready_key(), &event).await?;
        }
        if changed {
            let value = serde_json::to_value(&state)
                .map_err(|err| StorageError::Corrupt(err.to_string()))?;
            self.state
                .kv_put(LIVE_NAMESPACE, &task.to_string(), &value)
                .await?;
        }
        // A task stopped meanwhile is not cached again.
        if lock(&self.held).contains_key(&task) {
            lock(&self.live).insert(task, state);
        }
        Ok(())
    }

    /// The WBI keys, fetched from `/nav` when missing or older than the refresh period.
    async fn wbi_keys(&self, stop: &CancellationToken) -> Result<WbiKeys, PollError> {
        let mut keys = self.keys.lock().await;
        let refresh = Duration::from_secs(self.config.wbi_key_refresh_seconds);
        if let Some((keys, _)) = keys.as_ref().filter(|(_, at)| at.elapsed() < refresh) {
            return Ok(keys.clone());
        }
        if self.dynamic_gate.pass(stop).await.is_cancelled() {
            return Err(PollError::Stopped);
        }
        let fetched = tokio::select! {
            _ = stop.cancelled() => return Err(PollError::Stopped),
            fetched = self.api.wbi_keys() => fetched,
        };
        match fetched {
            Ok(fresh) => {
                self.dynamic_gate.success();
                tracing::debug!("WBI keys fetched");
                *keys = Some((fresh.clone(), Instant::now()));
                Ok(fresh)
            }
            Err(err) => {
                self.note_dynamic_error(&err);
                Err(err.into())
            }
        }
    }

    async fn forget_keys(&self) {
        *self.keys.lock().await = None;
    }

    /// Counts a failed dynamics-side call and closes the gate on risk control.
    fn note_dynamic_error(&self, err: &ApiError) {
        self.metrics.poll(DYNAMIC, err.label());
        if let ApiError::Risk { code, .. } = err {
            self.metrics.risk_answer(DYNAMIC, *code);
            let pause = self.dynamic_gate.risk_answer();
            tracing::warn!(cause = %err, ?pause, "dynamics: risk control; backing off");
        }
    }

    /// One page of `uid`'s dynamics. A `-352` is first taken for stale signing keys:
    /// the keys are fetched again and the page asked once more; a second `-352` is risk
    /// control.
    async fn feed_page(
        &self,
        uid: &str,
        offset: &str,
        stop: &CancellationToken,
    ) -> Result<FeedPage, PollError> {
        let mut retried = false;
        loop {
            let keys = self.wbi_keys(stop).await?;
            if self.dynamic_gate.pass(stop).await.is_cancelled() {
                return Err(PollError::Stopped);
            }
            let answer = tokio::select! {
                _ = stop.cancelled() => return Err(PollError::Stopped),
                answer = self.api.space_feed(&keys, uid, offset) => answer,
            };
            match answer {
                Ok(page) => {
                    self.metrics.poll(DYNAMIC, "ok");
                    self.dynamic_gate.success();
                    return Ok(page);
                }
                Err(ApiError::Risk {
                    code: CODE_RISK, ..
                }) if !retried => {
                    retried = true;
                    self.metrics.poll(DYNAMIC, "stale_keys");
                    self.metrics.risk_answer(DYNAMIC, CODE_RISK);
                    tracing::info!("dynamics answered -352; fetching new WBI keys");
                    self.forget_keys().await;
                }
                Err(err) => {
                    if matches!(
                        err,
                        ApiError::Code {
                            code: CODE_DENIED,
                            ..
                        }
                    ) {
                        self.forget_keys().await;
                    }
                    self.note_dynamic_error(&err);
                    return Err(err.into());
                }
            }
        }
    }
}

struct DynamicsJob {
    shared: Arc<Shared>,
    task_id: Uuid,
    entity: Uuid,
    uid: String,
    stop: CancellationToken,
}

struct EntityCache {
    translate_to: Vec<String>,
    loaded: Instant,
}

impl DynamicsJob {
    async fn run(self) {
        let interval = Duration::from_secs(self.shared.config.dynamic_poll_interval_seconds);
        // A random share of the interval first, so the uids of a worker spread over it.
        let first = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        if sleep_unless_cancelled(first, &self.stop)
            .await
            .is_cancelled()
        {
            return;
        }
        let mut entity = None;
        loop {
            match self.poll(&mut entity).await {
                Ok(published) if published > 0 => tracing::debug!(published, "dynamics poll done"),
                Ok(_) => {}
                Err(PollError::Stopped) => break,
                Err(PollError::Api(ApiError::Code { code, message })) => {
                    tracing::warn!(
                        code,
                        message,
                        "dynamics answered an error code; retried next interval"
                    );
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "dynamics poll failed; retried next interval")
                }
            }
            if sleep_unless_cancelled(jittered(interval), &self.stop)
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

    async fn cursor(&self) -> Result<Option<Cursor>, StorageError> {
        let stored = self
            .shared
            .state
            .kv_get(CURSOR_NAMESPACE, &self.task_id.to_string())
            .await?;
        Ok(stored.and_then(|value| match serde_json::from_value(value) {
            Ok(cursor) => Some(cursor),
            Err(err) => {
                tracing::warn!(cause = %err, "unreadable cursor; starting over without history");
                None
            }
        }))
    }

    async fn store_cursor(&self, cursor: &Cursor) -> Result<(), StorageError> {
        let value =
            serde_json::to_value(cursor).map_err(|err| StorageError::Corrupt(err.to_string()))?;
        self.shared
            .state
            .kv_put(CURSOR_NAMESPACE, &self.task_id.to_string(), &value)
            .await
    }

    /// One poll; returns how many events were published.
    async fn poll(&self, entity: &mut Option<EntityCache>) -> Result<usize, PollError> {
        let Some(cursor) = self.cursor().await? else {
            // First poll: remember where the feed is, publish nothing.
            let page = self.shared.feed_page(&self.uid, "", &self.stop).await?;
            let newest = page
                .items
                .iter()
                .map(|d| d.id.clone())
                .max_by(|a, b| id_cmp(a, b));
            tracing::info!(newest = ?newest, "first poll: recorded the newest dynamic without publishing history");
            self.store_cursor(&Cursor { newest }).await?;
            return Ok(0);
        };
        let is_new = |d: &Dynamic| {
            cursor
                .newest
                .as_deref()
                .is_none_or(|known| id_cmp(&d.id, known) == std::cmp::Ordering::Greater)
        };
        let mut fresh: Vec<Dynamic> = Vec::new();
        let mut offset = String::new();
        let mut pages = 0;
        loop {
            let page = self
                .shared
                .feed_page(&self.uid, &offset, &self.stop)
                .await?;
            pages += 1;
            // A pinned post sits on top whatever its age: it neither counts as new nor
            // as the point where the known part of the feed begins.
            let reached_known = page.items.iter().any(|d| !d.pinned && !is_new(d));
            fresh.extend(page.items.into_iter().filter(|d| is_new(d)));
            if reached_known || !page.has_more || page.offset.is_empty() {
                break;
            }
            if pages >= self.shared.config.max_pages {
                tracing::warn!(
                    pages,
                    fetched = fresh.len(),
                    "backlog larger than bilibili.max_pages; older dynamics skipped"
                );
                break;
            }
            offset = page.offset;
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        fresh.sort_by(|a, b| id_cmp(&a.id, &b.id));
        fresh.dedup_by(|a, b| a.id == b.id);
        let translate_to = self.translate_to(entity).await;
        let mut published = 0;
        for dynamic in &fresh {
            if !matches!(
                dynamic.kind.as_str(),
                "DYNAMIC_TYPE_AV"
                    | "DYNAMIC_TYPE_DRAW"
                    | "DYNAMIC_TYPE_WORD"
                    | "DYNAMIC_TYPE_FORWARD"
            ) {
                // Other kinds (articles, live recommendations…) only move the cursor.
                tracing::debug!(id = %dynamic.id, kind = %dynamic.kind, "dynamic kind not published");
                continue;
            }
            let (key, event) = dynamic_event(self.entity, &self.uid, dynamic, &translate_to);
            if self.shared.publisher.publish_event(&key, &event).await? {
                published += 1;
            }
        }
        let newest = fresh.last().map(|d| d.id.clone());
        self.store_cursor(&Cursor { newest }).await?;
        Ok(published)
    }
}

/// What the poller bench measures: one status cycle over every held uid.
#[doc(hidden)]
impl BilibiliRunner {
    /// Runs one status cycle now (beside the background poller); returns the calls made.
    pub async fn status_cycle_now(&self) -> usize {
        self.shared.status_cycle(&self.shared.shutdown).await
    }

    /// Starts holding `uid` for the status poller only (no dynamics job): the bench holds
    /// thousands of rooms without polling their feeds.
    pub fn hold_for_status(&self, task: Uuid, entity: Uuid, uid: u64) {
        lock(&self.shared.held).insert(task, Held { entity, uid });
    }
}
