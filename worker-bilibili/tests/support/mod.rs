//! Test support: the Bilibili API double and the observer queue on the real RabbitMQ
//! exchange, from `stargazer-testkit`, and a worker started on them.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use stargazer_core::bus::{self, Bus};
use stargazer_core::model::{Event, Task, TaskParams};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use stargazer_worker_bilibili::{BilibiliConfig, BilibiliRunner};
use uuid::Uuid;

pub(crate) use stargazer_testkit::observer::{Observer, ObserverOptions};
pub(crate) use stargazer_testkit::servers::bilibili::{
    new_uid, BilibiliServer, Endpoint, Post, Risk,
};
pub(crate) use stargazer_testkit::{eventually, AMQP_URL};

/// How this crate's tests observe the real exchange.
pub(crate) const OBSERVER: ObserverOptions<'static> = ObserverOptions {
    queue_prefix: "test.worker-bilibili",
    require_json: false,
};

/// The routing keys Bilibili events go out under.
pub(crate) const PATTERNS: [&str; 2] = ["bilibili", "bilibili.#"];

/// Longest wait for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A runner and its shutdown.
pub(crate) struct Worker {
    pub(crate) runner: BilibiliRunner,
    shutdown: CancellationToken,
}

impl Worker {
    pub(crate) fn start(
        config: BilibiliConfig,
        storage: Arc<dyn Storage>,
        bus: Arc<dyn Bus>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let runner = BilibiliRunner::new(
            config,
            storage.clone(),
            storage,
            bus,
            &Registry::new(),
            shutdown.clone(),
        )
        .unwrap();
        Self { runner, shutdown }
    }

    pub(crate) async fn shutdown(self) {
        self.shutdown.cancel();
        self.runner.join().await;
    }
}

/// Fast timings against `server`: polls every second, a 2 s cooldown and backoff.
pub(crate) fn config(server: &BilibiliServer) -> BilibiliConfig {
    BilibiliConfig {
        live_base: server.base.clone(),
        api_base: server.base.clone(),
        live_poll_interval_seconds: 1,
        dynamic_poll_interval_seconds: 1,
        live_cooldown_seconds: 2,
        min_request_gap_ms: 20,
        risk_backoff_initial_seconds: 2,
        risk_backoff_max_seconds: 4,
        ..BilibiliConfig::default()
    }
}

/// A task of `entity` watching `uid`.
pub(crate) fn task(entity: Uuid, uid: u64) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Bilibili {
            uid: uid.to_string(),
        },
    }
}

/// The kinds of `events`, in order.
pub(crate) fn kinds(events: &[(String, Event)]) -> Vec<&str> {
    events.iter().map(|(_, e)| e.kind.as_str()).collect()
}

/// The real exchange.
pub(crate) async fn rabbit() -> Arc<dyn Bus> {
    bus::connect(AMQP_URL).await.unwrap()
}
