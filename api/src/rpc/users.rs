//! getUser, addUser, delUser.

use axum::extract::State;
use stargazer_core::model;
use uuid::Uuid;

use crate::auth::{Authorized, ServiceWrite, UserRead, UserWrite};
use crate::error::{Error, Result};
use crate::http::{Data, RpcBody};
use crate::rpc::validate;
use crate::state::AppState;
use crate::types::{AddUser, DelUser, Deleted, Envelope, GetUser, User};

/// Loads a user or answers 404.
pub(crate) async fn load_user(state: &AppState, id: Uuid) -> Result<model::User> {
    state
        .storage
        .get_user(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user {id}")))
}

/// A user by id, or by platform and chat id.
#[utoipa::path(post, path = "/v1/getUser", tag = "users", request_body = GetUser,
    responses((status = 200, description = "The user", body = Envelope<User>)))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserRead>,
    RpcBody(req): RpcBody<GetUser>,
) -> Result<Data<User>> {
    let user = match (req.user, req.im, req.chat_id) {
        (user, None, None) => load_user(&state, caller.target_user(user)?).await?,
        (None, Some(im), Some(chat_id)) => {
            if caller.is_session() {
                return Err(Error::Forbidden(
                    "a session may only look up its own user".into(),
                ));
            }
            validate::im("im", &im)?;
            validate::chat_id("chat_id", &chat_id)?;
            state
                .storage
                .find_user_by_chat(&im, &chat_id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("no user for {im} chat {chat_id}")))?
        }
        (Some(_), _, _) => {
            return Err(Error::invalid(
                "user",
                "give either `user` or `im` with `chat_id`",
            ))
        }
        (None, Some(_), None) => return Err(Error::invalid("chat_id", "required with `im`")),
        (None, None, Some(_)) => return Err(Error::invalid("im", "required with `chat_id`")),
    };
    Ok(Data(user.into()))
}

/// Registers a chat; 409 if the chat is already registered.
#[utoipa::path(post, path = "/v1/addUser", tag = "users", request_body = AddUser,
    responses((status = 200, description = "The new user", body = Envelope<User>)))]
pub(crate) async fn add_user(
    State(state): State<AppState>,
    _: Authorized<ServiceWrite>,
    RpcBody(req): RpcBody<AddUser>,
) -> Result<Data<User>> {
    validate::im("im", &req.im)?;
    validate::chat_id("chat_id", &req.chat_id)?;
    validate::display_name("name", &req.name)?;
    validate::language("language", &req.language)?;
    let user = model::User {
        id: Uuid::new_v4(),
        im: req.im,
        im_chat_id: req.chat_id,
        name: req.name,
        language: req.language,
        settings: model::UserSettings::default(),
        created_at: crate::http::stored_now(),
    };
    state.storage.insert_user(&user).await?;
    state.users_changed();
    Ok(Data(user.into()))
}

/// Removes a user with their sessions and subscriptions.
#[utoipa::path(post, path = "/v1/delUser", tag = "users", request_body = DelUser,
    responses((status = 200, description = "The removed user's id", body = Envelope<Deleted>)))]
pub(crate) async fn del_user(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserWrite>,
    RpcBody(req): RpcBody<DelUser>,
) -> Result<Data<Deleted>> {
    let id = caller.target_user(req.user)?;
    state.storage.delete_user(id).await?;
    state.users_changed();
    Ok(Data(Deleted { id }))
}
