//! The RabbitMQ HTTP auth backend (`rabbitmq_auth_backend_http` with
//! `auth_http.http_method = post`): `POST /auth/user|vhost|resource|topic` with the
//! form fields RabbitMQ sends, answered `allow`, `allow <tags>` or `deny` as text.
//! Served only on the internal listener (`api.internal_listen`); with `api.auth_secret`
//! set, every request must carry HTTP Basic with that secret as its password (RabbitMQ
//! sends it when the configured URLs hold it: `http://rabbit:SECRET@api:8089/auth/user`),
//! else 401.
//!
//! # What each AMQP operation asks
//!
//! RabbitMQ checks these `(resource, permission)` pairs (`amq.default` is the nameless
//! default exchange; passive declares check nothing). A publish or a bind on a topic
//! exchange asks `/auth/topic` too, after the resource check passed:
//!
//! | operation | configure | write | read |
//! |---|---|---|---|
//! | `exchange.declare` | exchange | | |
//! | `queue.declare` | queue | | |
//! | `queue.declare` with a dead-letter exchange | queue | that exchange | queue |
//! | `queue.bind` / `unbind` | | queue | exchange (+ topic read on the binding key) |
//! | `basic.publish` | | exchange (+ topic write on the routing key) | |
//! | `basic.consume` / `get` / `queue.purge` | | | queue |
//! | `queue.delete` / `exchange.delete` | the resource | | |
//!
//! # The answers (docs/ARCHITECTURE.md §8)
//!
//! `P` is `mq_prefix` (`stargazer`). A credential *owns* the queues `P.<suffix>` for
//! each suffix in its `queues`. A *topology* credential has admin rw and mq rw (it runs
//! `stargazer admin broker setup`). Dead-lettering by the broker itself asks nothing, so
//! consumers need only the write check on `P.dlx` made at `queue.declare`; the topic
//! write a publish to `P.dlx` asks is what keeps mq ro from publishing there.
//!
//! | resource | permission | mq ro | mq rw | topology |
//! |---|---|---|---|---|
//! | own queue | configure, write, read | allow | allow | allow |
//! | another `P.*` queue | any | deny | deny | allow |
//! | exchange `P` | read | allow | allow | allow |
//! | exchange `P` | write | deny | allow | allow |
//! | exchange `P` | configure | deny | deny | allow |
//! | topic on `P` | read | allow | allow | allow |
//! | topic on `P` | write | deny | allow | allow |
//! | exchange `P.dlx` | write | allow | allow | allow |
//! | exchange `P.dlx` | read, configure | deny | deny | allow |
//! | topic on `P.dlx` | write | deny | allow | allow |
//! | topic on `P.dlx` | read | deny | deny | allow |
//! | `amq.default`, `amq.*` | any | deny | deny | deny |
//! | anything else | any | deny | deny | deny |
//!
//! A credential without mq permission is denied at `/auth/user`, and every vhost outside
//! `mq_vhosts` is denied. The vhost, resource and topic requests carry no password: they
//! concern a user RabbitMQ already authenticated, so they look up the credential by
//! username in [`Grants`], a bounded cache that remembers existing credentials for
//! `credential_cache_secs` and nothing about unknown names. A username longer than
//! [`MAX_USERNAME_LEN`] bytes is answered 400 before any lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use base64::Engine;
use serde::Deserialize;
use stargazer_core::model::{Access, Component, Permissions};
use stargazer_core::storage::Storage;
use stargazer_core::sync::lock;
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::auth::LoginVia;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Longest username looked at; credentials are created with at most this many bytes.
pub(crate) const MAX_USERNAME_LEN: usize = 128;

/// Credentials [`Grants`] remembers at most.
const GRANTS_CAPACITY: usize = 1024;

/// Routes the four backend endpoints, behind the shared-secret check when
/// `auth_secret` is set.
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .route("/auth/user", post(user))
        .route("/auth/vhost", post(vhost))
        .route("/auth/resource", post(resource))
        .route("/auth/topic", post(topic));
    if state.config.auth_secret.is_some() {
        routes.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_secret,
        ))
    } else {
        routes
    }
}

/// Refuses a request whose HTTP Basic password is not `auth_secret` (401). The
/// comparison takes the same time wherever the first difference is.
async fn require_secret(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(secret) = state.config.auth_secret.as_deref() else {
        return next.run(request).await;
    };
    if basic_password(request.headers())
        .is_some_and(|password| bool::from(password.as_bytes().ct_eq(secret.as_bytes())))
    {
        return next.run(request).await;
    }
    state
        .metrics
        .mq_auth
        .with_label_values(&["secret", "unauthorized"])
        .inc();
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"stargazer-broker\""),
        )],
        "deny",
    )
        .into_response()
}

/// The password of an `Authorization: Basic` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// `POST /auth/user`: may this user log in with this password?
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UserForm {
    /// The AMQP username.
    #[schema(max_length = 128)]
    username: Option<String>,
    /// The AMQP password.
    password: Option<String>,
}

/// `POST /auth/vhost`: may this user open this virtual host?
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct VhostForm {
    /// The AMQP username.
    #[schema(max_length = 128)]
    username: Option<String>,
    /// The virtual host.
    vhost: Option<String>,
    /// The client's address.
    #[allow(dead_code)]
    ip: Option<String>,
}

/// `POST /auth/resource` and `POST /auth/topic`: may this user do this to this resource?
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ResourceForm {
    /// The AMQP username.
    #[schema(max_length = 128)]
    username: Option<String>,
    /// The virtual host.
    vhost: Option<String>,
    /// `exchange`, `queue` or `topic`.
    resource: Option<String>,
    /// The exchange or queue name.
    name: Option<String>,
    /// `configure`, `write` or `read`.
    permission: Option<String>,
    /// For topic checks: the routing or binding key.
    #[allow(dead_code)]
    routing_key: Option<String>,
}

/// The text answer RabbitMQ expects.
pub(crate) enum Answer {
    Allow(Option<&'static str>),
    Deny,
    /// The request is malformed (RabbitMQ logs the status and denies).
    Bad(String),
    /// The check could not be made (RabbitMQ logs the status and denies).
    Failed(Error),
}

impl Answer {
    fn result(&self) -> &'static str {
        match self {
            Answer::Allow(_) => "allow",
            Answer::Deny => "deny",
            Answer::Bad(_) => "bad_request",
            Answer::Failed(_) => "error",
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Allow(None) => (StatusCode::OK, "allow").into_response(),
            Answer::Allow(Some(tags)) => (StatusCode::OK, format!("allow {tags}")).into_response(),
            Answer::Deny => (StatusCode::OK, "deny").into_response(),
            Answer::Bad(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
            Answer::Failed(err) => {
                let status = err.status_code();
                tracing::warn!(cause = %err, "mq auth check failed");
                (status, "deny").into_response()
            }
        }
    }
}

fn record(state: &AppState, check: &str, answer: Answer) -> Answer {
    state
        .metrics
        .mq_auth
        .with_label_values(&[check, answer.result()])
        .inc();
    answer
}

fn required(field: &'static str, value: Option<String>) -> Result<String, Answer> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Answer::Bad(format!("missing form field `{field}`")))
}

/// The `username` field, refused when longer than any credential's.
fn username(value: Option<String>) -> Result<String, Answer> {
    let username = required("username", value)?;
    if username.len() > MAX_USERNAME_LEN {
        return Err(Answer::Bad(format!(
            "username longer than {MAX_USERNAME_LEN} bytes"
        )));
    }
    Ok(username)
}

fn form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, Answer> {
    form.map(|Form(value)| value)
        .map_err(|err| Answer::Bad(err.body_text()))
}

/// Tags granted with a login: admins may use the management UI.
fn tags(permissions: &Permissions) -> Option<&'static str> {
    permissions
        .allows(Component::Admin, Access::Rw)
        .then_some("management")
}

/// `POST /auth/user` — form fields `username`, `password`.
#[utoipa::path(post, path = "/auth/user", tag = "rabbitmq",
    request_body(content = UserForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`allow`, `allow <tags>` or `deny`", body = String),
        (status = 400, description = "A field is missing or the username is too long", body = String),
        (status = 401, description = "`auth_secret` is set and the request does not carry it", body = String),
        (status = 503, description = "The database is unavailable (RabbitMQ denies)", body = String)))]
pub(crate) async fn user(
    State(state): State<AppState>,
    body: Result<Form<UserForm>, FormRejection>,
) -> Answer {
    let answer = async {
        let f = form(body)?;
        let username = username(f.username)?;
        let password = required("password", f.password)?;
        match state.login(&username, &password, LoginVia::Broker).await {
            Ok(permissions) if permissions.mq.is_some() => Ok(Answer::Allow(tags(&permissions))),
            Ok(_) | Err(Error::Unauthorized(_)) | Err(Error::RateLimited { .. }) => {
                Ok(Answer::Deny)
            }
            Err(err) => Err(Answer::Failed(err)),
        }
    }
    .await;
    record(&state, "user", answer.unwrap_or_else(|a| a))
}

/// `POST /auth/vhost` — form fields `username`, `vhost`, `ip`.
#[utoipa::path(post, path = "/auth/vhost", tag = "rabbitmq",
    request_body(content = VhostForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`allow` or `deny`", body = String),
        (status = 400, description = "A field is missing or the username is too long", body = String),
        (status = 401, description = "`auth_secret` is set and the request does not carry it", body = String),
        (status = 503, description = "The database is unavailable (RabbitMQ denies)", body = String)))]
pub(crate) async fn vhost(
    State(state): State<AppState>,
    body: Result<Form<VhostForm>, FormRejection>,
) -> Answer {
    let answer = async {
        let f = form(body)?;
        let username = username(f.username)?;
        let vhost = required("vhost", f.vhost)?;
        let grant = state.grants.get(&username).await.map_err(Answer::Failed)?;
        let mq = grant.is_some_and(|g| g.mq.is_some());
        Ok::<_, Answer>(if mq && state.config.mq_vhosts.contains(&vhost) {
            Answer::Allow(None)
        } else {
            Answer::Deny
        })
    }
    .await;
    record(&state, "vhost", answer.unwrap_or_else(|a| a))
}

/// `POST /auth/resource` — form fields `username`, `vhost`, `resource`, `name`,
/// `permission`.
#[utoipa::path(post, path = "/auth/resource", tag = "rabbitmq",
    request_body(content = ResourceForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`allow` or `deny`", body = String),
        (status = 400, description = "A field is missing or unknown, or the username is too long", body = String),
        (status = 401, description = "`auth_secret` is set and the request does not carry it", body = String),
        (status = 503, description = "The database is unavailable (RabbitMQ denies)", body = String)))]
pub(crate) async fn resource(
    State(state): State<AppState>,
    body: Result<Form<ResourceForm>, FormRejection>,
) -> Answer {
    let answer = check_resource(&state, body, false).await;
    record(&state, "resource", answer.unwrap_or_else(|a| a))
}

/// `POST /auth/topic` — the resource fields plus `routing_key`.
#[utoipa::path(post, path = "/auth/topic", tag = "rabbitmq",
    request_body(content = ResourceForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`allow` or `deny`", body = String),
        (status = 400, description = "A field is missing or unknown, or the username is too long", body = String),
        (status = 401, description = "`auth_secret` is set and the request does not carry it", body = String),
        (status = 503, description = "The database is unavailable (RabbitMQ denies)", body = String)))]
pub(crate) async fn topic(
    State(state): State<AppState>,
    body: Result<Form<ResourceForm>, FormRejection>,
) -> Answer {
    let answer = check_resource(&state, body, true).await;
    record(&state, "topic", answer.unwrap_or_else(|a| a))
}

async fn check_resource(
    state: &AppState,
    body: Result<Form<ResourceForm>, FormRejection>,
    topic: bool,
) -> Result<Answer, Answer> {
    let f = form(body)?;
    let username = username(f.username)?;
    let vhost = required("vhost", f.vhost)?;
    let kind = required("resource", f.resource)?;
    let name = f
        .name
        .ok_or_else(|| Answer::Bad("missing form field `name`".into()))?;
    let permission = required("permission", f.permission)?;
    let Some(kind) = ResourceKind::parse(&kind) else {
        return Err(Answer::Bad(format!("unknown resource `{kind}`")));
    };
    let Some(permission) = Permission::parse(&permission) else {
        return Err(Answer::Bad(format!("unknown permission `{permission}`")));
    };
    if topic != (kind == ResourceKind::Topic) {
        return Err(Answer::Bad(
            "topic checks, and only they, carry resource=topic".into(),
        ));
    }
    if !state.config.mq_vhosts.contains(&vhost) {
        return Ok(Answer::Deny);
    }
    let Some(grant) = state.grants.get(&username).await.map_err(Answer::Failed)? else {
        return Ok(Answer::Deny);
    };
    let Some(scope) = grant.scope(&state.config.mq_prefix) else {
        return Ok(Answer::Deny);
    };
    Ok(if decide(&scope, kind, &name, permission) {
        Answer::Allow(None)
    } else {
        Answer::Deny
    })
}

/// What a credential may do on the broker, as far as [`decide`] needs it.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The credential's mq access; none is denied everything.
    mq: Option<Access>,
    /// Whether it also has admin rw (with mq rw: the topology credential).
    admin_rw: bool,
    /// Owned queue suffixes.
    queues: Arc<[String]>,
}

impl Grant {
    /// The [`Scope`] of this grant under `prefix`; none without mq access.
    fn scope<'a>(&'a self, prefix: &'a str) -> Option<Scope<'a>> {
        let access = self.mq?;
        Some(Scope {
            prefix,
            access,
            topology: self.admin_rw && access == Access::Rw,
            queues: &self.queues,
        })
    }
}

/// Credentials by username for the checks that carry no password: bounded to
/// [`GRANTS_CAPACITY`] entries, each kept for `ttl`; an unknown username is looked up
/// every time and never stored, so made-up names cannot fill it.
pub(crate) struct Grants {
    storage: Arc<dyn Storage>,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Grant, Instant)>>,
}

impl Grants {
    /// An empty cache over `storage`.
    pub(crate) fn new(storage: Arc<dyn Storage>, ttl: Duration) -> Self {
        Self {
            storage,
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The grant of `username`, none if no such credential exists.
    pub(crate) async fn get(&self, username: &str) -> Result<Option<Grant>> {
        {
            let entries = lock(&self.entries);
            if let Some((grant, until)) = entries.get(username) {
                if *until > Instant::now() {
                    return Ok(Some(grant.clone()));
                }
            }
        }
        let Some(credential) = self.storage.get_credential(username).await? else {
            lock(&self.entries).remove(username);
            return Ok(None);
        };
        let grant = Grant {
            mq: credential.permissions.mq,
            admin_rw: credential.permissions.allows(Component::Admin, Access::Rw),
            queues: credential.queues.into(),
        };
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if entries.len() >= GRANTS_CAPACITY && !entries.contains_key(username) {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= GRANTS_CAPACITY {
                // Still full of live entries: forget the one closest to expiry.
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(name, _)| name.clone())
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(username.to_owned(), (grant.clone(), now + self.ttl));
        Ok(Some(grant))
    }

    /// Drops expired entries (called periodically).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        lock(&self.entries).retain(|_, (_, until)| *until > now);
    }

    /// How many credentials are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.entries).len()
    }
}

/// The kind of resource RabbitMQ asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    Exchange,
    Queue,
    Topic,
}

impl ResourceKind {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "exchange" => Some(Self::Exchange),
            "queue" => Some(Self::Queue),
            "topic" => Some(Self::Topic),
            _ => None,
        }
    }
}

/// The permission RabbitMQ asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    Configure,
    Write,
    Read,
}

impl Permission {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "configure" => Some(Self::Configure),
            "write" => Some(Self::Write),
            "read" => Some(Self::Read),
            _ => None,
        }
    }
}

/// What one credential with mq access may reach.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The exchange name and queue prefix (`stargazer`).
    pub(crate) prefix: &'a str,
    /// The credential's mq access.
    pub(crate) access: Access,
    /// Admin rw and mq rw: may configure the whole topology.
    pub(crate) topology: bool,
    /// Owned queue suffixes.
    pub(crate) queues: &'a [String],
}

/// The suffix of the dead-letter exchange under the prefix (`stargazer.dlx`).
const DLX_SUFFIX: &str = "dlx";

/// The table in the module docs.
pub(crate) fn decide(
    scope: &Scope<'_>,
    kind: ResourceKind,
    name: &str,
    permission: Permission,
) -> bool {
    use Permission::{Configure, Read, Write};
    let suffix = name
        .strip_prefix(scope.prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|rest| !rest.is_empty());
    let main = name == scope.prefix;
    let dlx = suffix == Some(DLX_SUFFIX);
    let rw = scope.access == Access::Rw;
    let topology = scope.topology;
    match kind {
        ResourceKind::Queue => {
            suffix.is_some_and(|suffix| topology || scope.queues.iter().any(|q| q == suffix))
        }
        ResourceKind::Exchange if main => match permission {
            Read => true,
            Write => rw,
            Configure => topology,
        },
        ResourceKind::Exchange if dlx => match permission {
            // Asked at `queue.declare` with `x-dead-letter-exchange`; publishing there
            // also needs the topic write below.
            Write => true,
            Read | Configure => topology,
        },
        ResourceKind::Topic if main => match permission {
            Read => true,
            Write => rw,
            Configure => false,
        },
        ResourceKind::Topic if dlx => match permission {
            Write => rw,
            Read => topology,
            Configure => false,
        },
        ResourceKind::Exchange | ResourceKind::Topic => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;
    use ResourceKind::*;

    const P: &str = "stargazer";

    fn queues(list: &[&str]) -> Vec<String> {
        list.iter().map(|q| (*q).to_owned()).collect()
    }

    fn scope<'a>(access: Access, topology: bool, queues: &'a [String]) -> Scope<'a> {
        Scope {
            prefix: P,
            access,
            topology,
            queues,
        }
    }

    #[test]
    fn a_credential_reaches_only_the_queues_it_owns() {
        let bot = queues(&["bot.telegram"]);
        let delay = queues(&["middleware.delay"]);
        for s in [
            scope(Access::Ro, false, &bot),
            scope(Access::Rw, false, &delay),
        ] {
            let own = format!("{P}.{}", s.queues[0]);
            for permission in [Configure, Write, Read] {
                assert!(decide(&s, Queue, &own, permission), "{own} {permission:?}");
                for other in [
                    "stargazer.bot.telegram",
                    "stargazer.middleware.delay",
                    "stargazer.dead",
                    "stargazer.dlx",
                    "stargazer",
                    "stargazerx.bot.telegram",
                    "other",
                    "amq.gen-abc",
                ] {
                    if other != own {
                        assert!(!decide(&s, Queue, other, permission), "{other}");
                    }
                }
            }
        }
        // Owning a suffix does not own what it prefixes.
        let s = scope(Access::Rw, false, &delay);
        assert!(!decide(&s, Queue, "stargazer.middleware.delay.x", Read));
        assert!(!decide(&s, Queue, "stargazer.middleware", Read));
        // A worker owns nothing.
        let none = queues(&[]);
        let worker = scope(Access::Rw, false, &none);
        assert!(!decide(&worker, Queue, "stargazer.bot.telegram", Configure));
    }

    #[test]
    fn mq_ro_never_publishes() {
        let bot = queues(&["bot.telegram"]);
        let s = scope(Access::Ro, false, &bot);
        assert!(!decide(&s, Exchange, P, Write));
        assert!(!decide(&s, Topic, P, Write));
        assert!(!decide(&s, Topic, "stargazer.dlx", Write));
        assert!(!decide(&s, Exchange, "amq.default", Write));
        // Binding its queue to the exchange is reading it.
        assert!(decide(&s, Exchange, P, Read));
        assert!(decide(&s, Topic, P, Read));
        // Declaring its queue with the dead-letter exchange asks write on it.
        assert!(decide(&s, Exchange, "stargazer.dlx", Write));
    }

    #[test]
    fn mq_rw_publishes_to_the_exchange_and_the_dead_letter_exchange() {
        let none = queues(&[]);
        let s = scope(Access::Rw, false, &none);
        assert!(decide(&s, Exchange, P, Write));
        assert!(decide(&s, Topic, P, Write));
        assert!(decide(&s, Exchange, "stargazer.dlx", Write));
        assert!(decide(&s, Topic, "stargazer.dlx", Write));
        assert!(!decide(&s, Topic, "stargazer.dlx", Read));
        assert!(!decide(&s, Exchange, "stargazer.dlx", Read));
    }

    #[test]
    fn only_topology_configures_the_exchanges_and_foreign_queues() {
        let none = queues(&[]);
        for s in [
            scope(Access::Ro, false, &none),
            scope(Access::Rw, false, &none),
        ] {
            assert!(!decide(&s, Exchange, P, Configure));
            assert!(!decide(&s, Exchange, "stargazer.dlx", Configure));
        }
        let t = scope(Access::Rw, true, &none);
        for permission in [Configure, Write, Read] {
            assert!(decide(&t, Exchange, P, permission));
            assert!(decide(&t, Exchange, "stargazer.dlx", permission));
            assert!(decide(&t, Queue, "stargazer.dead", permission));
            assert!(decide(&t, Queue, "stargazer.middleware.delay", permission));
            assert!(!decide(&t, Queue, "other", permission));
        }
        assert!(
            decide(&t, Topic, "stargazer.dlx", Read),
            "binds the dead queue"
        );
    }

    #[test]
    fn amq_and_foreign_exchanges_are_denied_to_everyone() {
        let none = queues(&[]);
        for s in [
            scope(Access::Ro, false, &none),
            scope(Access::Rw, false, &none),
            scope(Access::Rw, true, &none),
        ] {
            for permission in [Configure, Write, Read] {
                for name in [
                    "amq.default",
                    "amq.topic",
                    "amq.direct",
                    "other",
                    "stargazer.dead",
                    "stargazerx",
                ] {
                    assert!(
                        !decide(&s, Exchange, name, permission),
                        "{name} {permission:?}"
                    );
                    assert!(
                        !decide(&s, Topic, name, permission),
                        "{name} {permission:?}"
                    );
                }
            }
            assert!(!decide(&s, Topic, P, Configure));
        }
    }

    #[test]
    fn basic_passwords_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(basic_password(&headers), None);
        let encoded = base64::engine::general_purpose::STANDARD.encode("rabbit:s3cr:et");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        assert_eq!(basic_password(&headers).as_deref(), Some("s3cr:et"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_password(&headers), None);
    }

    #[tokio::test]
    async fn grants_remember_known_credentials_only_and_stay_bounded() {
        use stargazer_core::model::Credential;
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        for n in 0..GRANTS_CAPACITY + 10 {
            storage
                .insert_credential(&Credential {
                    username: format!("svc{n}"),
                    hash: "h".into(),
                    permissions: Permissions {
                        mq: Some(Access::Rw),
                        ..Permissions::default()
                    },
                    queues: vec![format!("q{n}")],
                })
                .await
                .unwrap();
        }
        let grants = Grants::new(storage, Duration::from_secs(60));
        for n in 0..100 {
            assert!(grants.get(&format!("ghost{n}")).await.unwrap().is_none());
        }
        assert_eq!(grants.len(), 0, "unknown names are not remembered");
        for n in 0..GRANTS_CAPACITY + 10 {
            let grant = grants.get(&format!("svc{n}")).await.unwrap().unwrap();
            assert_eq!(&*grant.queues, [format!("q{n}")]);
        }
        assert_eq!(grants.len(), GRANTS_CAPACITY);
    }
}
