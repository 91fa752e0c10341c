//! Who is calling, and may they call this method: the [`Caller`] and [`Authorized`]
//! extractors.
//!
//! # Two kinds of callers
//!
//! - **Service accounts** (bots, admins, workers) send `Authorization: Basic` with a
//!   credential from the `auth` collection. The password is checked with PBKDF2 off the
//!   async threads, a few at a time, and the success remembered for a short while;
//!   recent failures of a username or a client address slow its next checks down
//!   without ever refusing a right password ([`credentials::CredentialVerifier`]).
//!   When every check stays busy past `pbkdf2_wait_ms` the answer is 429 with
//!   `Retry-After`.
//! - **End users** send `Authorization: Bearer <token>` with a session token a bot
//!   obtained through `newSession` and handed over in its `/settings` link. Only the
//!   token's SHA-256 is stored. Each use slides the expiry forward by `session_ttl_secs`,
//!   never past `session_max_secs` after issue. A session acts for exactly one user.
//!
//! # Rules per method
//!
//! | policy | service account needs | session | methods |
//! |---|---|---|---|
//! | [`AnyCaller`] | any valid credential | yes | authMe |
//! | [`EntityRead`] | api ro or admin ro | yes | getEntities, getEntity, getUserIndex |
//! | [`UserRead`] | api ro | yes, own user only | getUser, getSettings, getSubscription, checkSession, getUpcoming |
//! | [`UserWrite`] | api rw | yes, own user only | delUser, updateSetting, updateSubscription, createCalendarLink, revokeCalendarLink |
//! | [`ServiceRead`] | api ro | no (403) | getSubscribers |
//! | [`ServiceWrite`] | api rw | no (403) | addUser, newSession |
//! | [`AdminWrite`] | admin rw | no (403) | newEntity, updateEntity, delEntity |
//!
//! "Own user only": a session caller may omit the `user` field (it means itself); naming
//! another user is 403. A service caller names the user; omitting it asks for a user of
//! its own, which it does not have (403). A session may not change a
//! user's chat id or name (403), and cannot mint sessions.
//!
//! No or malformed credentials, a wrong password, an unknown username and an unknown or
//! expired session are all 401 with `WWW-Authenticate` challenges for both schemes.

pub(crate) mod credentials;

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use chrono::{DateTime, Utc};
use stargazer_core::auth::token_hash;
use stargazer_core::model::{Access, Component, Permissions};
use stargazer_core::storage::StorageError;
use uuid::Uuid;

pub(crate) use credentials::LoginVia;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Longest bearer token or Basic header accepted (anything longer is not ours).
const MAX_CREDENTIAL_LEN: usize = 1024;

/// An authenticated service account.
#[derive(Debug, Clone)]
pub(crate) struct ServiceAccount {
    pub(crate) username: String,
    pub(crate) permissions: Permissions,
}

/// An authenticated end-user session.
#[derive(Debug, Clone)]
pub(crate) struct UserSession {
    pub(crate) user: Uuid,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) max_expires_at: DateTime<Utc>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Service(ServiceAccount),
    User(UserSession),
}

impl Caller {
    /// The user a request acts on: a session's own user (naming another is 403), or the
    /// user a service account names (required).
    pub(crate) fn target_user(&self, requested: Option<Uuid>) -> Result<Uuid> {
        match (self, requested) {
            (Caller::User(session), None) => Ok(session.user),
            (Caller::User(session), Some(user)) if user == session.user => Ok(user),
            (Caller::User(_), Some(_)) => Err(Error::Forbidden(
                "a session may only act for its own user".into(),
            )),
            (Caller::Service(_), Some(user)) => Ok(user),
            // Omitting `user` means "my own user", which a service account does not have.
            (Caller::Service(_), None) => Err(Error::Forbidden(
                "a service account has no user of its own: name one in `user`".into(),
            )),
        }
    }

    pub(crate) fn is_session(&self) -> bool {
        matches!(self, Caller::User(_))
    }
}

/// The client's address: the peer, or, behind a trusted proxy, the rightmost
/// `X-Forwarded-For` hop that is not one of `forwarded_proxies`.
pub(crate) fn client_ip(parts: &Parts, state: &AppState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !state.config.trust_forwarded_for {
        return peer;
    }
    let hops = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    forwarded_client(&hops, &state.config.forwarded_proxies).unwrap_or(peer)
}

/// The client in an `X-Forwarded-For` list: hops are appended left to right, so the
/// rightmost ones were written by our proxies and everything left of the first
/// address they did not add was written by the client itself (and may be anything).
fn forwarded_client(hops: &str, proxies: &[IpAddr]) -> Option<IpAddr> {
    for hop in hops.rsplit(',') {
        let ip = hop.trim().parse::<IpAddr>().ok()?;
        if !proxies.contains(&ip) {
            return Some(ip);
        }
    }
    None
}

impl AppState {
    /// Checks a service password (throttled and bounded, see [`credentials`]).
    pub(crate) async fn login(
        &self,
        username: &str,
        password: &str,
        via: LoginVia,
    ) -> Result<Permissions> {
        self.credentials
            .verify(username, password, via)
            .await?
            .ok_or_else(|| Error::Unauthorized("wrong username or password".into()))
    }

    /// Resolves a bearer token to its live session, sliding its expiry.
    async fn session(&self, token: &str) -> Result<UserSession> {
        let unknown = || Error::Unauthorized("unknown or expired session".into());
        let hash = token_hash(token);
        let session = self.storage.get_session(&hash).await?.ok_or_else(unknown)?;
        let now = crate::http::stored_now();
        if session.expires_at <= now || session.max_expires_at <= now {
            return Err(unknown());
        }
        let ttl =
            chrono::Duration::from_std(self.config.session_ttl()).unwrap_or(chrono::Duration::MAX);
        let slid = now
            .checked_add_signed(ttl)
            .map_or(session.max_expires_at, |t| t.min(session.max_expires_at));
        // Write only when the expiry moves noticeably, not on every request.
        let mut expires_at = session.expires_at;
        if slid - session.expires_at > ttl / 10 {
            match self.storage.touch_session(&hash, slid).await {
                Ok(()) => expires_at = slid,
                Err(StorageError::NotFound(_)) => return Err(unknown()),
                Err(err) => return Err(err.into()),
            }
        }
        Ok(UserSession {
            user: session.user,
            expires_at,
            max_expires_at: session.max_expires_at,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Error::Unauthorized(
                "credentials required: HTTP Basic for service accounts, Bearer for sessions".into(),
            )
        })?;
        if value.len() > MAX_CREDENTIAL_LEN {
            return Err(Error::Unauthorized("authorization header too long".into()));
        }
        let value = value
            .to_str()
            .map_err(|_| Error::Unauthorized("authorization header is not ASCII".into()))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let (username, password) = parse_basic(rest)?;
            let via = LoginVia::Api(client_ip(parts, state));
            let permissions = state.login(&username, &password, via).await?;
            Ok(Caller::Service(ServiceAccount {
                username,
                permissions,
            }))
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() {
                return Err(Error::Unauthorized("empty bearer token".into()));
            }
            Ok(Caller::User(state.session(rest).await?))
        } else {
            Err(Error::Unauthorized(format!(
                "unsupported authorization scheme `{scheme}`"
            )))
        }
    }
}

/// Decodes `base64(username:password)`.
fn parse_basic(encoded: &str) -> Result<(String, String)> {
    let malformed = || Error::Unauthorized("malformed Basic credentials".into());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let (username, password) = text.split_once(':').ok_or_else(malformed)?;
    if username.is_empty() {
        return Err(malformed());
    }
    Ok((username.to_owned(), password.to_owned()))
}

/// Who may call a method; see the module table.
pub(crate) trait Policy: Send + Sync + 'static {
    /// Whether bearer sessions may call.
    const SESSIONS: bool;
    /// What a service account needs, for the 403 message.
    const NEEDS: &'static str;
    /// Whether a service account with `permissions` may call.
    fn allows(permissions: &Permissions) -> bool;
}

macro_rules! policy {
    ($(#[$doc:meta])* $name:ident, sessions: $sessions:expr, needs: $needs:expr, |$p:ident| $allows:expr) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl Policy for $name {
            const SESSIONS: bool = $sessions;
            const NEEDS: &'static str = $needs;
            fn allows($p: &Permissions) -> bool {
                $allows
            }
        }
    };
}

policy!(
    /// Anyone authenticated.
    AnyCaller, sessions: true, needs: "a valid credential", |_p| true
);
policy!(
    /// Public entity data.
    EntityRead, sessions: true, needs: "api ro or admin ro",
    |p| p.allows(Component::Api, Access::Ro) || p.allows(Component::Admin, Access::Ro)
);
policy!(
    /// Reads of one user's data.
    UserRead, sessions: true, needs: "api ro", |p| p.allows(Component::Api, Access::Ro)
);
policy!(
    /// Writes of one user's data.
    UserWrite, sessions: true, needs: "api rw", |p| p.allows(Component::Api, Access::Rw)
);
policy!(
    /// Reads across users.
    ServiceRead, sessions: false, needs: "api ro", |p| p.allows(Component::Api, Access::Ro)
);
policy!(
    /// User registration and session issue.
    ServiceWrite, sessions: false, needs: "api rw", |p| p.allows(Component::Api, Access::Rw)
);
policy!(
    /// Entity administration.
    AdminWrite, sessions: false, needs: "admin rw", |p| p.allows(Component::Admin, Access::Rw)
);

/// A caller allowed by policy `P` (403 otherwise).
pub(crate) struct Authorized<P>(pub(crate) Caller, pub(crate) PhantomData<P>);

impl<P: Policy> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let allowed = match &caller {
            Caller::Service(account) => P::allows(&account.permissions),
            Caller::User(_) => P::SESSIONS,
        };
        if !allowed {
            return Err(match &caller {
                Caller::Service(account) => Error::Forbidden(format!(
                    "credential `{}` lacks the permission this method needs ({})",
                    account.username,
                    P::NEEDS
                )),
                Caller::User(_) => {
                    Error::Forbidden("this method is not available to sessions".into())
                }
            });
        }
        Ok(Authorized(caller, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_rightmost_hop_our_proxies_did_not_add() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cdn = ip("198.51.100.7");
        // The client wrote `6.6.6.6` itself; our proxy appended the address it saw.
        assert_eq!(
            forwarded_client("6.6.6.6, 203.0.113.5", &[]),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            forwarded_client("6.6.6.6, 203.0.113.5, 198.51.100.7", &[cdn]),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(forwarded_client("198.51.100.7", &[cdn]), None);
        assert_eq!(forwarded_client("6.6.6.6, garbage", &[]), None);
        assert_eq!(forwarded_client("", &[]), None);
        assert_eq!(
            forwarded_client(" 2001:db8::1 ", &[]),
            Some(ip("2001:db8::1"))
        );
    }

    #[test]
    fn basic_credentials_parse() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("bot:pa:ss");
        assert_eq!(
            parse_basic(&encoded).unwrap(),
            ("bot".to_owned(), "pa:ss".to_owned())
        );
        assert!(parse_basic("!!!").is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("bot");
        assert!(parse_basic(&no_colon).is_err());
    }

    #[test]
    fn session_targets_only_itself() {
        let me = Uuid::new_v4();
        let caller = Caller::User(UserSession {
            user: me,
            expires_at: Utc::now(),
            max_expires_at: Utc::now(),
        });
        assert_eq!(caller.target_user(None).unwrap(), me);
        assert_eq!(caller.target_user(Some(me)).unwrap(), me);
        assert!(matches!(
            caller.target_user(Some(Uuid::new_v4())),
            Err(Error::Forbidden(_))
        ));
        let service = Caller::Service(ServiceAccount {
            username: "bot".into(),
            permissions: Permissions::default(),
        });
        assert!(matches!(
            service.target_user(None),
            Err(Error::Forbidden(_))
        ));
    }
}
