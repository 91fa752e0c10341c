//! getUpcoming, createCalendarLink, revokeCalendarLink: what is coming for a user, and
//! the link to their calendar feed (`crate::ical`).

use axum::extract::State;

use crate::auth::{Authorized, UserRead, UserWrite};
use crate::error::Result;
use crate::http::{Data, RpcBody};
use crate::rpc::users::load_user;
use crate::schedule::{new_secret, secret_hash, upcoming_of};
use crate::state::AppState;
use crate::types::{CalendarLink, CalendarRevoked, Envelope, UpcomingStream, UserRef};

/// The streams announced and not over yet of the entities the user subscribes to, which
/// their subscription wants (the kind that opens a stream in a chat and its gates), by
/// scheduled start.
#[utoipa::path(post, path = "/v1/getUpcoming", tag = "schedule", request_body = UserRef,
    responses((status = 200, description = "The upcoming and live streams", body = Envelope<Vec<UpcomingStream>>)))]
pub(crate) async fn get_upcoming(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserRead>,
    RpcBody(req): RpcBody<UserRef>,
) -> Result<Data<Vec<UpcomingStream>>> {
    let user = load_user(&state, caller.target_user(req.user)?).await?;
    Ok(Data(upcoming_of(&state, &user).await?))
}

/// Makes a new calendar feed link for the user, shown only in this answer; the previous
/// link, if any, stops working.
#[utoipa::path(post, path = "/v1/createCalendarLink", tag = "schedule", request_body = UserRef,
    responses((status = 200, description = "The new link", body = Envelope<CalendarLink>)))]
pub(crate) async fn create_calendar_link(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserWrite>,
    RpcBody(req): RpcBody<UserRef>,
) -> Result<Data<CalendarLink>> {
    let mut user = load_user(&state, caller.target_user(req.user)?).await?;
    let secret = new_secret(user.id);
    user.settings.calendar_secret_hash = Some(secret_hash(&secret));
    state.storage.update_user(&user).await?;
    let path = format!("/ical/{secret}.ics");
    let url = state
        .config
        .public_url
        .as_deref()
        .map(|base| format!("{}{path}", base.trim_end_matches('/')));
    Ok(Data(CalendarLink { secret, path, url }))
}

/// Removes the user's calendar feed link: it answers 404 from now on.
#[utoipa::path(post, path = "/v1/revokeCalendarLink", tag = "schedule", request_body = UserRef,
    responses((status = 200, description = "Whether there was a link", body = Envelope<CalendarRevoked>)))]
pub(crate) async fn revoke_calendar_link(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserWrite>,
    RpcBody(req): RpcBody<UserRef>,
) -> Result<Data<CalendarRevoked>> {
    let mut user = load_user(&state, caller.target_user(req.user)?).await?;
    let revoked = user.settings.calendar_secret_hash.take().is_some();
    if revoked {
        state.storage.update_user(&user).await?;
    }
    Ok(Data(CalendarRevoked { revoked }))
}
