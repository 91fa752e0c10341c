//! Test support: the Twitch server, a worker on a callback listener of its own, and a
//! per-test RabbitMQ virtual host with SQLite storage, all from `stargazer-testkit`.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use stargazer_core::model::{Entity, Event, Task, TaskParams};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
pub(crate) use stargazer_testkit::backends::{BusKind, Env, Received, StoreKind};
pub(crate) use stargazer_testkit::eventually;
pub(crate) use stargazer_testkit::servers::twitch::{Tamper, TwitchServer};
use stargazer_worker_twitch::{TwitchConfig, TwitchRunner, CALLBACK_PATH};
use uuid::Uuid;

/// The client id the tests' Twitch server accepts.
pub(crate) const CLIENT_ID: &str = "test-client-id";
/// Its client secret.
pub(crate) const CLIENT_SECRET: &str = "test-client-secret";
/// The EventSub secret the workers give Twitch.
pub(crate) const EVENTSUB_SECRET: &str = "eventsub-secret-of-the-tests";
/// How long a test waits for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A config pointing at `twitch`, with a callback URL to be filled in.
pub(crate) fn config(twitch: &TwitchServer) -> TwitchConfig {
    TwitchConfig {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        eventsub_secret: EVENTSUB_SECRET.into(),
        helix_base: twitch.helix_base.clone(),
        id_base: twitch.id_base.clone(),
        batch_window_ms: 50,
        reconcile_delay_ms: 50,
        revocation_backoff_seconds: 1,
        retry_initial_ms: 100,
        retry_max_seconds: 1,
        http_timeout_seconds: 5,
        ..TwitchConfig::default()
    }
}

/// A worker serving its callback on a port of its own.
pub(crate) struct Worker {
    pub(crate) runner: TwitchRunner,
    pub(crate) callback: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts a worker with `config` (its callback URL set to its listener, unless the
    /// test chose one).
    pub(crate) async fn start(config: TwitchConfig, env: &Env) -> Self {
        Self::start_at(config, env, "127.0.0.1:0".parse().unwrap()).await
    }

    /// [`Worker::start`] with the callback listener on `addr`.
    pub(crate) async fn start_at(
        mut config: TwitchConfig,
        env: &Env,
        addr: std::net::SocketAddr,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        if config.callback_url.is_empty() {
            config.callback_url =
                format!("http://{}{CALLBACK_PATH}", listener.local_addr().unwrap());
        }
        let callback = config.callback_url.clone();
        let shutdown = CancellationToken::new();
        let runner = TwitchRunner::new(
            config,
            env.storage.clone(),
            env.storage.clone(),
            None,
            env.bus.clone(),
            &Registry::new(),
            shutdown.clone(),
        )
        .unwrap();
        let serving = runner.clone();
        let server = tokio::spawn(async move { serving.serve(listener).await.unwrap() });
        Self {
            runner,
            callback,
            shutdown,
            server,
        }
    }

    /// Stops the worker and waits for it.
    pub(crate) async fn shutdown(self) {
        self.shutdown.cancel();
        self.runner.join().await;
        let _ = self.server.await;
    }
}

/// A Twitch task of `entity` for `broadcaster`.
pub(crate) fn task(entity: Uuid, broadcaster: &str) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Twitch {
            broadcaster_id: broadcaster.to_owned(),
        },
    }
}

/// Stores an entity owning `tasks`, as the api would.
pub(crate) async fn store_entity(storage: &dyn Storage, entity: Uuid, tasks: Vec<Task>) {
    let entity = Entity {
        id: entity,
        names: [("en".to_owned(), "Streamer".to_owned())].into(),
        default_language: "en".into(),
        group: None,
        translate_to: vec![],
        tasks,
    };
    storage.insert_entity(&entity).await.unwrap();
}

/// Waits until `broadcaster` has its three subscriptions enabled at `twitch`.
pub(crate) async fn wait_enabled(twitch: &TwitchServer, broadcaster: &str) {
    eventually("three enabled subscriptions", WAIT, || {
        twitch
            .subscriptions()
            .iter()
            .filter(|s| s.broadcaster == broadcaster && s.status == "enabled")
            .count()
            == 3
    })
    .await;
}

/// The ids `Event::make_id` gives `kinds` of `stream_id`.
pub(crate) fn ids(stream_id: &str, kinds: &[&str]) -> HashSet<Uuid> {
    kinds
        .iter()
        .map(|kind| Event::make_id(kind, stream_id, None))
        .collect()
}

/// An environment on a RabbitMQ virtual host of the test's own and a SQLite file.
pub(crate) async fn env() -> Env {
    Env::new(BusKind::Amqp, StoreKind::Sqlite).await
}
