//! `GET /v1/status[?tasks=true]`: workers, their task counts (and ids when asked),
//! task counts per kind and unassigned tasks. Needs Basic credentials with
//! `coordinator: ro`.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::assignment::Status;
use crate::auth::ServiceAuth;
use crate::engine::EngineEvent;
use crate::http::{AppState, HttpError};

/// Query of `GET /v1/status`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StatusQuery {
    /// List each worker's task ids.
    #[serde(default)]
    tasks: bool,
}

pub(crate) async fn status(
    State(state): State<AppState>,
    _auth: ServiceAuth,
    Query(query): Query<StatusQuery>,
) -> Result<Json<Status>, HttpError> {
    let (reply, answer) = oneshot::channel();
    let asked = state
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
    answer
        .await
        .map(Json)
        .map_err(|_| HttpError::Unavailable("coordinator is shutting down".to_owned()))
}
