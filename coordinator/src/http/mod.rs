//! The coordinator's HTTP surface: the worker WebSocket ([`worker`]), the status report
//! ([`status`]), `/metrics` + `/healthz` from core's telemetry and `/readyz` (storage).

pub(crate) mod status;
pub(crate) mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use stargazer_core::protocol::WORKER_PATH;
use stargazer_core::readiness::Readiness;
use stargazer_core::telemetry::health_and_metrics_router;
use stargazer_core::CancellationToken;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthFailure, Authenticator};
use crate::config::CoordinatorConfig;
use crate::engine::EngineEvent;
use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) config: Arc<CoordinatorConfig>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) engine: mpsc::Sender<EngineEvent>,
    /// Source of connection ids.
    pub(crate) next_conn: Arc<AtomicU64>,
    /// Upgraded sockets outlive their HTTP request; this lets `run` wait for them.
    pub(crate) sockets: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// What `/readyz` checks: the storage tasks and credentials come from.
    pub(crate) readiness: Readiness,
}

/// The whole router.
pub(crate) fn router(state: AppState) -> Router {
    let registry = state.metrics.registry.clone();
    let readiness = state.readiness.clone();
    Router::new()
        .route(WORKER_PATH, get(worker::upgrade))
        .route("/v1/status", get(status::status))
        .with_state(state)
        .merge(health_and_metrics_router(registry))
        .merge(readiness.router())
}

/// A refused or failed HTTP request, answered as
/// `{"success": false, "time": …, "error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// 401 with a `WWW-Authenticate: Basic` challenge.
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 503: a dependency (storage, the engine) is not available.
    Unavailable(String),
}

impl From<AuthFailure> for HttpError {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Missing(reason) => HttpError::Unauthorized(reason.to_owned()),
            AuthFailure::BadCredentials => {
                HttpError::Unauthorized("invalid username or password".to_owned())
            }
            AuthFailure::Forbidden => HttpError::Forbidden,
            AuthFailure::Unavailable(cause) => {
                tracing::warn!(%cause, "credential lookup failed");
                HttpError::Unavailable("credential storage unavailable".to_owned())
            }
            AuthFailure::Busy => HttpError::Unavailable(
                "too many logins are waiting for a password check; retry shortly".to_owned(),
            ),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            HttpError::Unauthorized(message) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", message.clone())
            }
            HttpError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "credential lacks coordinator access".to_owned(),
            ),
            HttpError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message.clone(),
            ),
        };
        let body = Json(serde_json::json!({
            "success": false,
            "time": chrono::Utc::now().timestamp(),
            "error": {"code": code, "message": message},
        }));
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"stargazer-coordinator\""),
            );
        }
        response
    }
}
