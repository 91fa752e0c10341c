//! The RabbitMQ HTTP auth backend (`rabbitmq_auth_backend_http` with
//! `auth_http.http_method = post`): `POST /auth/user|vhost|resource|topic` with the
//! form fields RabbitMQ sends, answered `allow`, `allow <tags>` or `deny` as text.
//!
//! # What each AMQP operation asks, and the answers
//!
//! RabbitMQ checks these `(resource, permission)` pairs (`amq.default` is the nameless
//! default exchange; passive declares check nothing):
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
//! With `P` the configured prefix (`stargazer`) and "own" meaning a name starting with
//! `P.`:
//!
//! | resource | permission | mq ro | mq rw |
//! |---|---|---|---|
//! | own queue | configure, write, read | allow | allow |
//! | exchange `P` | read (bind) | allow | allow |
//! | exchange `P` | configure (declare) | allow | allow |
//! | exchange `P` | write (publish) | deny | allow |
//! | own exchange (`P.dead`, …) | read | allow | allow |
//! | own exchange | write | allow | allow |
//! | own exchange | configure | deny | allow |
//! | `amq.default` | write (dead-lettering into `P.dead`) | allow | allow |
//! | topic on `P` or own exchange | read | allow | allow |
//! | topic on `P` or own exchange | write | deny | allow |
//! | anything else | any | deny | deny |
//!
//! Every bus connection declares the exchange (an idempotent no-op when it exists), so
//! read-only credentials need configure on it. RabbitMQ asks the same permission for
//! `exchange.delete`; a read-only credential could therefore delete the exchange, which
//! only a passive declare in every consumer would avoid.
//!
//! A credential without mq permission is denied at `/auth/user`, and every vhost outside
//! `mq_vhosts` is denied. The vhost, resource and topic requests carry no password: they
//! concern a user RabbitMQ already authenticated, so they look up the permissions by
//! username (remembered for `credential_cache_secs`).
//!
//! Wrong passwords count against the failed-login limit keyed by username and the
//! requesting address, which here is the RabbitMQ node: a username locked out is
//! locked out for every AMQP client until the window ends.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde::Deserialize;
use stargazer_core::model::{Access, Component, Permissions};
use utoipa::ToSchema;

use crate::auth::ClientIp;
use crate::error::Error;
use crate::state::AppState;

/// Routes the four backend endpoints.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/user", post(user))
        .route("/auth/vhost", post(vhost))
        .route("/auth/resource", post(resource))
        .route("/auth/topic", post(topic))
}

/// `POST /auth/user`: may this user log in with this password?
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UserForm {
    /// The AMQP username.
    username: Option<String>,
    /// The AMQP password.
    password: Option<String>,
}

/// `POST /auth/vhost`: may this user open this virtual host?
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct VhostForm {
    /// The AMQP username.
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
        .filter(|v| !v.is_empty() || field == "routing_key")
        .ok_or_else(|| Answer::Bad(format!("missing form field `{field}`")))
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
    responses((status = 200, description = "`allow`, `allow <tags>` or `deny`", body = String)))]
pub(crate) async fn user(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<Form<UserForm>, FormRejection>,
) -> Answer {
    let answer = async {
        let f = form(body)?;
        let username = required("username", f.username)?;
        let password = required("password", f.password)?;
        match state.login(&username, &password, ip).await {
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
    responses((status = 200, description = "`allow` or `deny`", body = String)))]
pub(crate) async fn vhost(
    State(state): State<AppState>,
    body: Result<Form<VhostForm>, FormRejection>,
) -> Answer {
    let answer = async {
        let f = form(body)?;
        let username = required("username", f.username)?;
        let vhost = required("vhost", f.vhost)?;
        let mq = mq_access(&state, &username).await?;
        Ok::<_, Answer>(if mq.is_some() && state.config.mq_vhosts.contains(&vhost) {
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
    responses((status = 200, description = "`allow` or `deny`", body = String)))]
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
    responses((status = 200, description = "`allow` or `deny`", body = String)))]
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
    let username = required("username", f.username)?;
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
    if topic && kind != ResourceKind::Topic {
        return Err(Answer::Bad("topic checks carry resource=topic".into()));
    }
    if !state.config.mq_vhosts.contains(&vhost) {
        return Ok(Answer::Deny);
    }
    let Some(access) = mq_access(state, &username).await? else {
        return Ok(Answer::Deny);
    };
    let allowed = decide(&state.config.mq_prefix, access, kind, &name, permission);
    Ok(if allowed {
        Answer::Allow(None)
    } else {
        Answer::Deny
    })
}

async fn mq_access(state: &AppState, username: &str) -> Result<Option<Access>, Answer> {
    state
        .credentials
        .permissions_of(username)
        .await
        .map(|permissions| permissions.and_then(|p| p.mq))
        .map_err(Answer::Failed)
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

/// The table in the module docs.
pub(crate) fn decide(
    prefix: &str,
    access: Access,
    kind: ResourceKind,
    name: &str,
    permission: Permission,
) -> bool {
    let own = name.len() > prefix.len() + 1
        && name.starts_with(prefix)
        && name.as_bytes()[prefix.len()] == b'.';
    let main = name == prefix;
    let rw = access == Access::Rw;
    match (kind, permission) {
        (ResourceKind::Queue, _) => own,
        (ResourceKind::Exchange, Permission::Read) => main || own,
        (ResourceKind::Exchange, Permission::Configure) => main || (own && rw),
        (ResourceKind::Exchange, Permission::Write) => (main && rw) || own || name == "amq.default",
        (ResourceKind::Topic, Permission::Read) => main || own,
        (ResourceKind::Topic, Permission::Write) => (main || own) && rw,
        (ResourceKind::Topic, Permission::Configure) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;
    use ResourceKind::*;

    const P: &str = "stargazer";

    #[test]
    fn consumers_declare_bind_and_consume_their_queues() {
        for access in [Access::Ro, Access::Rw] {
            // queue.declare, queue.bind (write on queue, read on exchange), basic.consume
            assert!(decide(
                P,
                access,
                Queue,
                "stargazer.bot.telegram",
                Configure
            ));
            assert!(decide(P, access, Queue, "stargazer.bot.telegram", Write));
            assert!(decide(P, access, Exchange, "stargazer", Read));
            assert!(decide(P, access, Topic, "stargazer", Read));
            assert!(decide(P, access, Queue, "stargazer.bot.telegram", Read));
        }
    }

    #[test]
    fn only_rw_publishes_to_the_exchange() {
        assert!(!decide(P, Access::Ro, Exchange, "stargazer", Write));
        assert!(!decide(P, Access::Ro, Topic, "stargazer", Write));
        assert!(
            decide(P, Access::Ro, Exchange, "stargazer", Configure),
            "consumers declare it too"
        );
        assert!(decide(P, Access::Rw, Exchange, "stargazer", Write));
        assert!(decide(P, Access::Rw, Topic, "stargazer", Write));
        assert!(decide(P, Access::Rw, Exchange, "stargazer", Configure));
    }

    #[test]
    fn foreign_names_are_refused() {
        for access in [Access::Ro, Access::Rw] {
            assert!(!decide(P, access, Queue, "other", Read));
            assert!(!decide(P, access, Queue, "amq.gen-abc", Configure));
            assert!(
                !decide(P, access, Queue, "stargazer", Read),
                "the bare prefix is the exchange"
            );
            assert!(!decide(P, access, Queue, "stargazerx.q", Read));
            assert!(!decide(P, access, Exchange, "amq.topic", Write));
            assert!(!decide(P, access, Exchange, "amq.default", Configure));
            assert!(!decide(P, access, Topic, "amq.topic", Read));
        }
    }

    #[test]
    fn dead_lettering_is_allowed() {
        assert!(decide(P, Access::Ro, Exchange, "amq.default", Write));
        assert!(decide(P, Access::Ro, Exchange, "stargazer.dead", Write));
        assert!(!decide(
            P,
            Access::Ro,
            Exchange,
            "stargazer.dead",
            Configure
        ));
    }
}
