//! The RPC methods: `POST /v1/{method}` with a JSON body, one file per method group and
//! the single dispatch table below.
//!
//! - [`users`]: getUser, addUser, delUser
//! - [`sessions`]: newSession, checkSession, authMe
//! - [`settings`]: getSettings, updateSetting
//! - [`subscriptions`]: getSubscription, updateSubscription, getSubscribers
//! - [`schedule`]: getUpcoming, createCalendarLink, revokeCalendarLink
//! - [`entities`]: getEntities, getEntity, newEntity, updateEntity, delEntity, getUserIndex
//!
//! Each handler takes its permission as an [`crate::auth::Authorized`] extractor first
//! (so 401/403 come before body errors), then its body as [`crate::http::RpcBody`].

pub(crate) mod entities;
pub(crate) mod schedule;
pub(crate) mod sessions;
pub(crate) mod settings;
pub(crate) mod subscriptions;
pub(crate) mod users;
pub(crate) mod validate;

use axum::extract::Path;
use axum::handler::Handler;
use axum::routing::{any, post, MethodRouter};
use axum::Router;

use crate::error::Error;
use crate::state::AppState;

/// Declares every method once: the list of names, the routes and the OpenAPI paths.
macro_rules! methods {
    ($($name:literal => $module:ident :: $handler:ident,)*) => {
        /// Every method name, in the order of the table.
        pub(crate) const METHODS: &[&str] = &[$($name),*];

        /// Routes `/v1/{method}` for every method, and the 404 for any other name.
        pub(crate) fn router() -> Router<AppState> {
            Router::new()
                $(.route(concat!("/v1/", $name), rpc($module::$handler)))*
                .route("/v1/{method}", any(unknown_method))
        }

        /// The OpenAPI description of every method.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($module::$handler),*))]
        pub(crate) struct MethodsDoc;
    };
}

methods! {
    "getUser" => users::get_user,
    "addUser" => users::add_user,
    "delUser" => users::del_user,
    "getEntities" => entities::get_entities,
    "newSession" => sessions::new_session,
    "checkSession" => sessions::check_session,
    "authMe" => sessions::auth_me,
    "getSettings" => settings::get_settings,
    "updateSetting" => settings::update_setting,
    "getSubscription" => subscriptions::get_subscription,
    "updateSubscription" => subscriptions::update_subscription,
    "newEntity" => entities::new_entity,
    "getEntity" => entities::get_entity,
    "updateEntity" => entities::update_entity,
    "delEntity" => entities::del_entity,
    "getUserIndex" => entities::get_user_index,
    "getSubscribers" => subscriptions::get_subscribers,
    "getUpcoming" => schedule::get_upcoming,
    "createCalendarLink" => schedule::create_calendar_link,
    "revokeCalendarLink" => schedule::revoke_calendar_link,
}

/// A method route: POST runs the handler, any other HTTP method is 405.
fn rpc<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    post(handler).fallback(|| async { Error::MethodNotAllowed })
}

async fn unknown_method(Path(method): Path<String>) -> Error {
    Error::UnknownMethod(method)
}
