//! [`TwitchRunner`]: the broadcasters this worker holds. The coordinator (through the
//! worker runtime) or a test calls [`TwitchRunner::start`] / [`TwitchRunner::stop`];
//! holding a broadcaster means keeping its three EventSub subscriptions in place (see
//! `reconcile.rs`). Notifications arrive on the callback listener (`callback.rs`) and may
//! be for any broadcaster of the deployment: every Twitch worker shares one callback URL,
//! so whichever instance Twitch's POST reaches handles it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::config::Section;
use stargazer_core::model::{Task, TaskKind, TaskParams};
use stargazer_core::readiness::Readiness;
use stargazer_core::source::{
    housekeeping, http_client, Background, Housekeeping, Namespaces, Publisher,
};
use stargazer_core::storage::{EntityStore, StateStore, StorageHealth};
use stargazer_core::sync::lock;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::TwitchConfig;
use crate::helix::Helix;
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use crate::replay::ReplayWindow;
use crate::signature::MAX_AGE;
use crate::Error;

/// Seen-window namespace of published events, keyed `<entity>/<event id>`; event ids are
/// made of the stream id, so a redelivery under a new message id publishes nothing.
pub const SEEN_NAMESPACE: &str = "twitch.seen";
/// Namespace of publishes awaiting a broker confirm (flushed by the housekeeping).
pub const OUTBOX_NAMESPACE: &str = "twitch.outbox";

const PUBLISHING: Namespaces = Namespaces {
    seen: SEEN_NAMESPACE,
    outbox: OUTBOX_NAMESPACE,
};

/// Message ids remembered at most (about a day of a busy deployment's notifications in
/// ten minutes would be far fewer).
const REPLAY_CAP: usize = 100_000;
/// How long the storage's broadcaster → entity table is trusted before a miss reloads it.
const DIRECTORY_FRESH: Duration = Duration::from_secs(5);

/// A broadcaster this worker holds.
#[derive(Debug, Clone)]
struct Held {
    entity: Uuid,
    broadcaster: String,
}

/// Every Twitch task in storage by broadcaster, for notifications of broadcasters
/// another instance holds.
#[derive(Default)]
struct Directory {
    entities: HashMap<String, Uuid>,
    loaded: Option<Instant>,
}

/// State shared by the callback server, the reconciler and the lookups.
pub(crate) struct Shared {
    pub(crate) config: Arc<TwitchConfig>,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) entities: Arc<dyn EntityStore>,
    pub(crate) helix: Arc<Helix>,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: Metrics,
    pub(crate) lookup: Lookup,
    pub(crate) replay: ReplayWindow,
    pub(crate) readiness: Readiness,
    pub(crate) shutdown: CancellationToken,
    pub(crate) background: Background,
    held: Mutex<HashMap<Uuid, Held>>,
    directory: tokio::sync::Mutex<Directory>,
    /// Broadcasters whose subscriptions are to be made sure of.
    pending: Mutex<HashSet<String>>,
    /// Wakes the reconciler.
    pub(crate) wake: Notify,
}

impl Shared {
    /// The broadcasters held now.
    pub(crate) fn held_broadcasters(&self) -> HashSet<String> {
        lock(&self.held)
            .values()
            .map(|h| h.broadcaster.clone())
            .collect()
    }

    pub(crate) fn holds(&self, broadcaster: &str) -> bool {
        lock(&self.held)
            .values()
            .any(|h| h.broadcaster == broadcaster)
    }

    /// Takes the broadcasters waiting to be made sure of.
    pub(crate) fn take_pending(&self) -> HashSet<String> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Asks the reconciler to make sure of `broadcaster`'s subscriptions.
    pub(crate) fn request_ensure(&self, broadcaster: String) {
        lock(&self.pending).insert(broadcaster);
        self.wake.notify_one();
    }

    /// Puts broadcasters back after a failed attempt.
    pub(crate) fn return_pending(&self, broadcasters: impl IntoIterator<Item = String>) {
        lock(&self.pending).extend(broadcasters);
    }

    pub(crate) fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }

    /// The entity watching `broadcaster`: held here, else any Twitch task in storage
    /// (reloaded on a miss at most every [`DIRECTORY_FRESH`]).
    pub(crate) async fn entity_for(&self, broadcaster: &str) -> Option<Uuid> {
        let held = lock(&self.held)
            .values()
            .find(|h| h.broadcaster == broadcaster)
            .map(|h| h.entity);
        if held.is_some() {
            return held;
        }
        let mut directory = self.directory.lock().await;
        if let Some(entity) = directory.entities.get(broadcaster) {
            return Some(*entity);
        }
        if directory
            .loaded
            .is_some_and(|at| at.elapsed() < DIRECTORY_FRESH)
        {
            return None;
        }
        match self.twitch_tasks().await {
            Ok(entities) => {
                directory.entities = entities;
                directory.loaded = Some(Instant::now());
            }
            Err(err) => tracing::warn!(cause = %err, "could not list the Twitch tasks"),
        }
        directory.entities.get(broadcaster).copied()
    }

    /// Every Twitch task in storage: broadcaster → entity.
    pub(crate) async fn twitch_tasks(
        &self,
    ) -> Result<HashMap<String, Uuid>, stargazer_core::storage::StorageError> {
        Ok(self
            .entities
            .list_tasks(Some(TaskKind::Twitch))
            .await?
            .into_iter()
            .filter_map(|task| match task.params {
                TaskParams::Twitch { broadcaster_id } => Some((broadcaster_id, task.entity)),
                _ => None,
            })
            .collect())
    }
}

/// The set of broadcasters this worker holds. Cheap to clone.
#[derive(Clone)]
pub struct TwitchRunner {
    shared: Arc<Shared>,
}

impl TwitchRunner {
    /// Builds the runner, its metrics registered in `registry`, and starts its background
    /// work (reconciler, lookup batcher, seen-window purge, outbox retries). Everything
    /// stops when `shutdown` is cancelled; [`TwitchRunner::join`] waits for it. The
    /// callback server is served separately ([`TwitchRunner::serve`]).
    pub fn new(
        config: TwitchConfig,
        state: Arc<dyn StateStore>,
        entities: Arc<dyn EntityStore>,
        health: Option<Arc<dyn StorageHealth>>,
        bus: Arc<dyn Bus>,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        config.check()?;
        if let Some((key, env)) = config.missing_credential() {
            return Err(Error::Config(format!("{key} is not set ({env})")));
        }
        let config = Arc::new(config);
        let http = http_client("twitch", config.http_timeout())?;
        let metrics = Metrics::register(registry);
        let helix = Arc::new(Helix::new(
            http,
            config.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let publisher = Publisher::new(
            state.clone(),
            bus.clone(),
            PUBLISHING,
            metrics.publishing().clone(),
        );
        let (lookup, batcher) = Lookup::new(
            helix.clone(),
            Duration::from_millis(config.batch_window_ms),
            Duration::from_millis(config.lookup_timeout_ms.max(1)),
            shutdown.clone(),
        );
        let background = Background::new();
        background.spawn(batcher);
        background.spawn(housekeeping(
            publisher.clone(),
            Housekeeping::new(chrono::Duration::days(config.seen_window_days as i64)),
            shutdown.clone(),
        ));
        // Ids are kept past the timestamp limit, so every replay is caught by one check.
        let keep = (MAX_AGE + chrono::Duration::minutes(1))
            .to_std()
            .unwrap_or(Duration::from_secs(660));
        let shared = Arc::new(Shared {
            config,
            state,
            entities,
            helix,
            publisher,
            metrics,
            lookup,
            replay: ReplayWindow::new(keep, REPLAY_CAP),
            readiness: Readiness::of(health, Some(bus)),
            shutdown,
            background: background.clone(),
            held: Mutex::new(HashMap::new()),
            directory: tokio::sync::Mutex::new(Directory::default()),
            pending: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        });
        background.spawn(crate::reconcile::run(shared.clone()));
        Ok(Self { shared })
    }

    /// The worker's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The callback server's routes (`/twitch/eventsub`, `/healthz`, `/readyz`,
    /// `/metrics`).
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

    /// How long Helix calls are held for the rate limit, if they are now.
    pub fn rate_limited_for(&self) -> Option<Duration> {
        self.shared.helix.rate_limited_for()
    }

    /// Ids of the tasks held.
    pub fn tasks(&self) -> Vec<Uuid> {
        lock(&self.shared.held).keys().copied().collect()
    }

    /// Holds the broadcaster of `task`: its subscriptions are made sure of shortly
    /// (idempotent for a task already held).
    pub async fn start(&self, task: Task) -> Result<(), Error> {
        let TaskParams::Twitch { broadcaster_id } = &task.params else {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("a {} task sent to the Twitch worker", task.kind()),
            });
        };
        if broadcaster_id.is_empty()
            || broadcaster_id.len() > 20
            || !broadcaster_id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Error::InvalidTask {
                task: task.id,
                reason: format!("`{broadcaster_id}` is not a numeric Twitch user id"),
            });
        }
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let fresh = lock(&self.shared.held)
            .insert(
                task.id,
                Held {
                    entity: task.entity,
                    broadcaster: broadcaster_id.clone(),
                },
            )
            .is_none();
        if fresh {
            tracing::info!(task_id = %task.id, entity_id = %task.entity, broadcaster = %broadcaster_id, "task started");
        }
        self.shared.request_ensure(broadcaster_id.clone());
        Ok(())
    }

    /// Lets a task go. Its subscriptions stay at Twitch: the worker taking the task over
    /// finds them in its reconciliation, and a deleted task's are removed by the next
    /// reconciliation of any worker (docs/ARCHITECTURE.md §5). Unknown ids are ignored.
    pub async fn stop(&self, task_id: Uuid) -> Result<(), Error> {
        match lock(&self.shared.held).remove(&task_id) {
            Some(held) => tracing::info!(%task_id, broadcaster = %held.broadcaster, "task stopped"),
            None => tracing::debug!(%task_id, "stop for a task not held"),
        }
        Ok(())
    }

    /// Waits for every background task to end; call after cancelling `shutdown`.
    pub async fn join(&self) {
        self.shared.background.join().await;
    }
}
