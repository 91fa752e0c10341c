//! newSession, checkSession, authMe.

use axum::extract::State;
use chrono::Utc;
use stargazer_core::auth::{new_token, token_hash};
use stargazer_core::model;

use crate::auth::{AnyCaller, Authorized, Caller, ServiceWrite, UserRead};
use crate::error::{Error, Result};
use crate::http::{Data, RpcBody};
use crate::rpc::users::load_user;
use crate::state::AppState;
use crate::types::{AuthMe, CheckSession, Envelope, Me, NewSession, SessionStatus, SessionToken};

/// `now + span`, saturating (config validation keeps spans far from the limit).
fn later(now: chrono::DateTime<Utc>, span: std::time::Duration) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| now.checked_add_signed(span))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// Issues a session for a user; the token is returned once and only its hash is kept.
#[utoipa::path(post, path = "/v1/newSession", tag = "sessions", request_body = NewSession,
    responses((status = 200, description = "The bearer token and its expiry", body = Envelope<SessionToken>)))]
pub(crate) async fn new_session(
    State(state): State<AppState>,
    _: Authorized<ServiceWrite>,
    RpcBody(req): RpcBody<NewSession>,
) -> Result<Data<SessionToken>> {
    load_user(&state, req.user).await?;
    let token = new_token();
    let now = crate::http::stored_now();
    let session = model::Session {
        token_hash: token_hash(&token),
        user: req.user,
        created_at: now,
        expires_at: later(now, state.config.session_ttl()),
        max_expires_at: later(now, state.config.session_max()),
    };
    state.storage.insert_session(&session).await?;
    Ok(Data(SessionToken {
        token,
        user: session.user,
        expires_at: session.expires_at,
        max_expires_at: session.max_expires_at,
    }))
}

/// Whether a session is valid: the caller's own (bearer) or a named one (service).
#[utoipa::path(post, path = "/v1/checkSession", tag = "sessions", request_body = CheckSession,
    responses((status = 200, description = "Whether the session is valid", body = Envelope<SessionStatus>)))]
pub(crate) async fn check_session(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserRead>,
    RpcBody(req): RpcBody<CheckSession>,
) -> Result<Data<SessionStatus>> {
    match (caller, req.token) {
        (Caller::User(session), None) => Ok(Data(SessionStatus {
            valid: true,
            user: Some(session.user),
            expires_at: Some(session.expires_at),
            max_expires_at: Some(session.max_expires_at),
        })),
        (Caller::User(_), Some(_)) => {
            Err(Error::Forbidden("a session may only check itself".into()))
        }
        // Omitting `token` asks about the caller's own session, which a service account
        // does not have.
        (Caller::Service(_), None) => Err(Error::Forbidden(
            "a service account has no session of its own: name one in `token`".into(),
        )),
        (Caller::Service(_), Some(token)) => {
            let now = Utc::now();
            let session = if token.is_empty() || token.len() > 1024 {
                None
            } else {
                state.storage.get_session(&token_hash(&token)).await?
            };
            Ok(Data(match session {
                Some(s) if s.expires_at > now && s.max_expires_at > now => SessionStatus {
                    valid: true,
                    user: Some(s.user),
                    expires_at: Some(s.expires_at),
                    max_expires_at: Some(s.max_expires_at),
                },
                _ => SessionStatus {
                    valid: false,
                    user: None,
                    expires_at: None,
                    max_expires_at: None,
                },
            }))
        }
    }
}

/// The caller's identity; with `user`, also checks a session acts for that user.
#[utoipa::path(post, path = "/v1/authMe", tag = "sessions", request_body = AuthMe,
    responses((status = 200, description = "Who is calling", body = Envelope<Me>)))]
pub(crate) async fn auth_me(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<AnyCaller>,
    RpcBody(req): RpcBody<AuthMe>,
) -> Result<Data<Me>> {
    match caller {
        Caller::Service(account) => {
            if req.user.is_some() {
                return Err(Error::Forbidden(
                    "a service account does not act for a user; only sessions do".into(),
                ));
            }
            Ok(Data(Me::Service {
                username: account.username,
                permissions: account.permissions.into(),
            }))
        }
        Caller::User(session) => {
            if req.user.is_some_and(|user| user != session.user) {
                return Err(Error::Forbidden(
                    "the session belongs to another user".into(),
                ));
            }
            let user = load_user(&state, session.user).await?;
            Ok(Data(Me::User {
                user: user.into(),
                expires_at: session.expires_at,
            }))
        }
    }
}
