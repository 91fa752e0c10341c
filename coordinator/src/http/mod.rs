//! The coordinator's HTTP surface: the worker WebSocket ([`worker`]), the status report
//! ([`status`]), `/metrics` + `/healthz` from core's telemetry and `/readyz` (storage and
//! leadership: only the leader is ready, since only it serves workers).

pub(crate) mod status;
pub(crate) mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use stargazer_core::protocol::{LEADER_ID_HEADER, LEADER_URL_HEADER, WORKER_PATH};
use stargazer_core::readiness::{Readiness, Report};
use stargazer_core::telemetry::health_and_metrics_router;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthFailure, Authenticator};
use crate::config::CoordinatorConfig;
use crate::election::{Identity, Role, Term};
use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) config: Arc<CoordinatorConfig>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) metrics: Arc<Metrics>,
    /// This instance, as named in the election.
    pub(crate) identity: Arc<Identity>,
    /// Leader (with its term's engine) or standby, as the election says.
    pub(crate) role: watch::Receiver<Role>,
    /// Source of connection ids.
    pub(crate) next_conn: Arc<AtomicU64>,
    /// Upgraded sockets outlive their HTTP request; this lets `run` wait for them.
    pub(crate) sockets: TaskTracker,
    /// What `/readyz` checks: the storage tasks and credentials come from.
    pub(crate) readiness: Readiness,
}

impl AppState {
    /// The current term when this instance leads; otherwise the refusal naming the
    /// leader as last seen.
    pub(crate) fn term(&self) -> Result<Term, HttpError> {
        match &*self.role.borrow() {
            Role::Leader(term) => Ok(term.clone()),
            Role::Standby { leader } => Err(HttpError::NotLeader(leader.clone())),
        }
    }
}

/// The whole router.
pub(crate) fn router(state: AppState) -> Router {
    let registry = state.metrics.registry.clone();
    Router::new()
        .route(WORKER_PATH, get(worker::upgrade))
        .route("/v1/status", get(status::status))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(health_and_metrics_router(registry))
}

/// The answer of `/readyz`: the storage check plus leadership.
#[derive(Serialize)]
struct Readyz {
    /// Whether this instance leads.
    leader: bool,
    #[serde(flatten)]
    report: Report,
}

/// `GET /readyz`: 200 only when storage answers and this instance leads. A standby is
/// alive (`/healthz`) but not ready: a load balancer in front of the coordinators should
/// send workers to the leader, the only instance that accepts them.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let mut report = state.readiness.check().await;
    let leader = state.term().is_ok();
    let check = stargazer_core::readiness::Check {
        ready: leader,
        detail: (!leader).then(|| "standby: another coordinator leads".to_owned()),
    };
    report.checks.insert("leader", check);
    report.ready = report.checks.values().all(|c| c.ready);
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readyz { leader, report })).into_response()
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
    /// 503: this instance is a standby; the leader as last seen, if known.
    NotLeader(Option<Identity>),
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
            HttpError::NotLeader(leader) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_leader",
                match leader {
                    Some(Identity { id, url: Some(url) }) => {
                        format!("this coordinator is a standby; the leader is {id} at {url}")
                    }
                    Some(Identity { id, url: None }) => {
                        format!("this coordinator is a standby; the leader is {id}")
                    }
                    None => "this coordinator is a standby; no leader is known yet".to_owned(),
                },
            ),
        };
        let mut error = serde_json::json!({"code": code, "message": message});
        if let HttpError::NotLeader(Some(leader)) = &self {
            error["leader_id"] = serde_json::json!(leader.id);
            if let Some(url) = &leader.url {
                error["leader_url"] = serde_json::json!(url);
            }
        }
        let body = Json(serde_json::json!({
            "success": false,
            "time": chrono::Utc::now().timestamp(),
            "error": error,
        }));
        let mut response = (status, body).into_response();
        if let HttpError::NotLeader(leader) = &self {
            // Headers too, so a worker can follow without parsing the body; the id header
            // is present (empty when no leader is known) on every standby refusal.
            let headers = response.headers_mut();
            let id = leader.as_ref().map(|l| l.id.as_str()).unwrap_or_default();
            let value = header::HeaderValue::from_str(id)
                .unwrap_or_else(|_| header::HeaderValue::from_static(""));
            headers.insert(LEADER_ID_HEADER, value);
            let url = leader.as_ref().and_then(|l| l.url.as_deref());
            if let Some(Ok(value)) = url.map(header::HeaderValue::from_str) {
                headers.insert(LEADER_URL_HEADER, value);
            }
        }
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
