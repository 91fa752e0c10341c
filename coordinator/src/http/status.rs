//! `GET /v1/status[?tasks=true]`: whether this instance leads (`instance_id`, `leader`,
//! `epoch`, or `leader_id`/`leader_url` of the one that does) and, on the leader,
//! workers, their task counts (and ids when asked), task counts per kind and unassigned
//! tasks. Needs Basic credentials with `coordinator: ro`.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::assignment::Status;
use crate::auth::ServiceAuth;
use crate::election::Role;
use crate::engine::EngineEvent;
use crate::http::{AppState, HttpError};

/// Query of `GET /v1/status`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StatusQuery {
    /// List each worker's task ids.
    #[serde(default)]
    tasks: bool,
}

/// The answer of `GET /v1/status`.
#[derive(Debug, Serialize)]
pub(crate) struct StatusReport {
    /// This instance's id in the election.
    instance_id: String,
    /// Whether it leads.
    leader: bool,
    /// The lease epoch of its term, when it leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    /// The leader's id, as last seen, when this instance is a standby.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_id: Option<String>,
    /// The leader's advertised URL, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_url: Option<String>,
    /// The assignment, on the leader.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    assignment: Option<Status>,
}

pub(crate) async fn status(
    State(state): State<AppState>,
    _auth: ServiceAuth,
    Query(query): Query<StatusQuery>,
) -> Result<Json<StatusReport>, HttpError> {
    let instance_id = state.identity.id.clone();
    let role = state.role.borrow().clone();
    let term = match role {
        Role::Leader(term) => term,
        Role::Standby { leader } => {
            return Ok(Json(StatusReport {
                instance_id,
                leader: false,
                epoch: None,
                leader_url: leader.as_ref().and_then(|l| l.url.clone()),
                leader_id: leader.map(|l| l.id),
                assignment: None,
            }))
        }
    };
    let (reply, answer) = oneshot::channel();
    let asked = term
        .engine
        .send(EngineEvent::Status {
            detail: query.tasks,
            reply,
        })
        .await;
    if asked.is_err() {
        return Err(HttpError::Unavailable(
            "coordinator is shutting down".to_owned(),
        ));
    }
    let assignment = answer
        .await
        .map_err(|_| HttpError::Unavailable("coordinator is shutting down".to_owned()))?;
    Ok(Json(StatusReport {
        instance_id,
        leader: true,
        epoch: Some(term.epoch),
        leader_id: Some(state.identity.id.clone()),
        leader_url: state.identity.url.clone(),
        assignment: Some(assignment),
    }))
}
