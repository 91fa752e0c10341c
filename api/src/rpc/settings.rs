//! getSettings, updateSetting.

use axum::extract::State;

use crate::auth::{Authorized, UserRead, UserWrite};
use crate::error::{Error, Result};
use crate::http::{Data, RpcBody};
use crate::rpc::users::load_user;
use crate::rpc::validate;
use crate::state::AppState;
use crate::types::{Envelope, Settings, UpdateSetting, UserRef};

/// A user's language, time zone, pause state, reminder leads and whether a calendar
/// feed link exists.
#[utoipa::path(post, path = "/v1/getSettings", tag = "settings", request_body = UserRef,
    responses((status = 200, description = "The settings", body = Envelope<Settings>)))]
pub(crate) async fn get_settings(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserRead>,
    RpcBody(req): RpcBody<UserRef>,
) -> Result<Data<Settings>> {
    let user = load_user(&state, caller.target_user(req.user)?).await?;
    Ok(Data(Settings::from(&user)))
}

/// Changes the given settings (none given: answers them unchanged); `name` and `chat_id`
/// are for service accounts only.
#[utoipa::path(post, path = "/v1/updateSetting", tag = "settings", request_body = UpdateSetting,
    responses((status = 200, description = "The settings after the change", body = Envelope<Settings>)))]
pub(crate) async fn update_setting(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserWrite>,
    RpcBody(req): RpcBody<UpdateSetting>,
) -> Result<Data<Settings>> {
    let id = caller.target_user(req.user)?;
    if caller.is_session() && (req.name.is_some() || req.chat_id.is_some()) {
        return Err(Error::Forbidden(
            "a session may not change the chat id or name".into(),
        ));
    }
    if let Some(language) = &req.language {
        validate::language("language", language)?;
    }
    if let Some(timezone) = req.timezone.as_deref().filter(|tz| !tz.is_empty()) {
        validate::timezone("timezone", timezone)?;
    }
    if let Some(name) = &req.name {
        validate::display_name("name", name)?;
    }
    if let Some(chat_id) = &req.chat_id {
        validate::chat_id("chat_id", chat_id)?;
    }
    let reminder_leads = req
        .reminder_leads
        .as_deref()
        .map(|leads| validate::reminder_leads("reminder_leads", leads))
        .transpose()?;
    let mut user = load_user(&state, id).await?;
    if req.language.is_none()
        && req.timezone.is_none()
        && req.paused.is_none()
        && reminder_leads.is_none()
        && req.name.is_none()
        && req.chat_id.is_none()
    {
        // Nothing to change: the settings as they are.
        return Ok(Data(Settings::from(&user)));
    }
    if let Some(language) = req.language {
        user.language = language;
    }
    if let Some(timezone) = req.timezone {
        user.settings.timezone = Some(timezone).filter(|tz| !tz.is_empty());
    }
    if let Some(paused) = req.paused {
        user.settings.paused = paused;
    }
    if let Some(leads) = reminder_leads {
        user.settings.reminder_leads = leads;
    }
    if let Some(name) = req.name {
        user.name = name;
    }
    if let Some(chat_id) = req.chat_id {
        user.im_chat_id = chat_id;
    }
    state.storage.update_user(&user).await?;
    state.users_changed();
    Ok(Data(Settings::from(&user)))
}
