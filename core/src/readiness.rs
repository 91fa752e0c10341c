//! `GET /readyz`: whether a role's dependencies answer right now (docs/ARCHITECTURE.md §6).
//!
//! `/healthz` stays a liveness check (the process serves HTTP); `/readyz` asks each
//! dependency the role uses (storage by a ping, the broker by its connection state) and
//! answers 200 when all are ready, 503 otherwise, with one entry per dependency:
//!
//! ```json
//! {"ready": false, "checks": {"storage": {"ready": true},
//!                             "broker": {"ready": false, "detail": "not connected"}}}
//! ```
//!
//! A role that waits for its backends at start-up serves `/readyz` before they are open:
//! [`Readiness::expecting`] names them, and [`Readiness::provide_storage`] /
//! [`Readiness::provide_bus`] hand them over once connected; until then they report
//! "connecting". Details never carry driver text (host names, credentials); the cause is
//! logged at debug level.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::bus::Bus;
use crate::storage::{StorageError, StorageHealth};

/// How long the storage ping may take before storage counts as not ready.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies one role checks. Clones share them.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    wants_storage: bool,
    wants_bus: bool,
    storage: OnceLock<Arc<dyn StorageHealth>>,
    bus: OnceLock<Arc<dyn Bus>>,
}

/// One dependency's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether it answers now.
    pub ready: bool,
    /// Why not, in words safe to show anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    fn ok() -> Self {
        Self {
            ready: true,
            detail: None,
        }
    }

    fn not(detail: &str) -> Self {
        Self {
            ready: false,
            detail: Some(detail.to_owned()),
        }
    }
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether every check is ready.
    pub ready: bool,
    /// By dependency name: `storage`, `broker`.
    pub checks: BTreeMap<&'static str, Check>,
}

impl Readiness {
    /// Checks of dependencies the role will open later (`provide_*`); until then each
    /// reports "connecting".
    pub fn expecting(storage: bool, bus: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                wants_storage: storage,
                wants_bus: bus,
                ..Inner::default()
            }),
        }
    }

    /// Checks of dependencies already open.
    pub fn of(storage: Option<Arc<dyn StorageHealth>>, bus: Option<Arc<dyn Bus>>) -> Self {
        let readiness = Self::expecting(storage.is_some(), bus.is_some());
        if let Some(storage) = storage {
            readiness.provide_storage(storage);
        }
        if let Some(bus) = bus {
            readiness.provide_bus(bus);
        }
        readiness
    }

    /// Hands over the storage once open (later calls are ignored).
    pub fn provide_storage(&self, storage: Arc<dyn StorageHealth>) {
        let _ = self.inner.storage.set(storage);
    }

    /// Hands over the bus once connected (later calls are ignored).
    pub fn provide_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.inner.bus.set(bus);
    }

    /// Asks every dependency now.
    pub async fn check(&self) -> Report {
        let mut checks = BTreeMap::new();
        if self.inner.wants_storage {
            let check = match self.inner.storage.get() {
                None => Check::not("connecting"),
                Some(storage) => match tokio::time::timeout(PING_TIMEOUT, storage.ping()).await {
                    Ok(Ok(())) => Check::ok(),
                    Ok(Err(err)) => {
                        tracing::debug!(cause = %err, "storage not ready");
                        Check::not(match err {
                            StorageError::Backend(_) => "unreachable",
                            _ => "ping failed",
                        })
                    }
                    Err(_) => Check::not("no answer within 2 s"),
                },
            };
            checks.insert("storage", check);
        }
        if self.inner.wants_bus {
            let check = match self.inner.bus.get() {
                None => Check::not("connecting"),
                Some(bus) if bus.is_ready() => Check::ok(),
                Some(_) => Check::not("not connected"),
            };
            checks.insert("broker", check);
        }
        Report {
            ready: checks.values().all(|c| c.ready),
            checks,
        }
    }

    /// `GET /readyz` answering [`Readiness::check`]: 200 when ready, 503 otherwise.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new().route(
            "/readyz",
            get(move || {
                let readiness = self.clone();
                async move { readiness.answer().await }
            }),
        )
    }

    async fn answer(&self) -> Response {
        let report = self.check().await;
        let status = if report.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(report)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use crate::storage::sqlite::SqliteStorage;

    #[tokio::test]
    async fn reports_each_dependency_and_waits_for_them() {
        let readiness = Readiness::expecting(true, true);
        let report = readiness.check().await;
        assert!(!report.ready);
        assert_eq!(report.checks["storage"], Check::not("connecting"));
        assert_eq!(report.checks["broker"], Check::not("connecting"));

        readiness.provide_storage(Arc::new(SqliteStorage::open_in_memory().await.unwrap()));
        let report = readiness.check().await;
        assert!(report.checks["storage"].ready);
        assert!(!report.ready, "the broker is still missing");

        let bus = Arc::new(MemoryBus::new());
        readiness.provide_bus(bus.clone());
        let report = readiness.check().await;
        assert!(report.ready, "{report:?}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ready": true, "checks": {"storage": {"ready": true}, "broker": {"ready": true}}})
        );
    }

    #[tokio::test]
    async fn only_wanted_dependencies_are_checked() {
        let none = Readiness::default().check().await;
        assert!(none.ready);
        assert!(none.checks.is_empty());
        let storage: Arc<dyn StorageHealth> =
            Arc::new(SqliteStorage::open_in_memory().await.unwrap());
        let api = Readiness::of(Some(storage), None).check().await;
        assert_eq!(api.checks.keys().copied().collect::<Vec<_>>(), ["storage"]);
        assert!(api.ready);
    }
}
