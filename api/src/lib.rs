//! Stargazer api service: RPC over POST for bots, the frontend and admins on the public
//! listener, and the RabbitMQ HTTP auth backend on an internal one.
//!
//! - [`serve`] (and [`ApiService`], the platform service): serve until the shutdown token is cancelled; [`router`] and
//!   [`internal_router`] build the two apps. [`ApiConfig`] is the `[api]` config section.
//! - `rpc`: `POST /v1/{method}`, one file per method group and the dispatch table.
//! - `auth`: service accounts (HTTP Basic, PBKDF2, cache, failed-login limit) and
//!   end-user sessions (bearer); the per-method permission rules are in its docs.
//! - `mq_auth`: `POST /auth/user|vhost|resource|topic` for `rabbitmq_auth_backend_http`,
//!   on the internal listener only, and the broker policy (docs/ARCHITECTURE.md §8).
//! - `schedule` and `ical`: the upcoming streams of a user's subscriptions, and
//!   `GET /ical/{secret}.ics`, their calendar feed, on the public listener.
//! - `openapi`: `/openapi.json` of each listener. `/metrics` renders with core's telemetry,
//!   on the public listener or (`metrics_on_internal`) the internal one.
//! - [`admin`]: the `stargazer admin …` commands (credentials, entities, groups).
//! - [`client`]: a typed client, [`client::ApiClient`], with [`types`] shared by both ends.
//! - [`Error`]: the crate's one error type and its HTTP mapping.

pub mod admin;
mod auth;
mod cache;
pub mod client;
mod config;
mod error;
mod http;
mod ical;
mod metrics;
mod mq_auth;
mod openapi;
mod rpc;
mod schedule;
mod service;
mod state;
pub mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::Registry;
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

pub use config::ApiConfig;
pub use error::{Error, Result};
pub use service::ApiService;
pub use state::AppState;

/// How often expired sessions, cache entries and login windows are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Builds the public HTTP app: RPC methods, the calendar feeds `/ical/{secret}.ics`,
/// `/openapi.json`, `/healthz`, `/readyz`, `/metrics` (unless `metrics_on_internal`), CORS
/// and (when `frontend_dir` exists) the static frontend at `/`. The RabbitMQ auth backend is never here: see [`internal_router`].
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let mut app = Router::new()
        .merge(rpc::router())
        .merge(ical::router())
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(|| async { "ok" }))
        .merge(readiness_router(&state));
    if !config.metrics_on_internal {
        app = app.merge(metrics_router(&state));
    }
    match config.frontend_dir.as_ref().filter(|dir| dir.is_dir()) {
        Some(dir) => {
            app = app.fallback_service(ServeDir::new(dir).append_index_html_on_directories(true))
        }
        None => {
            if let Some(dir) = &config.frontend_dir {
                tracing::warn!(dir = %dir.display(), "frontend_dir does not exist; not serving a frontend");
            }
            // A `/settings` link can point here before anyone built the page: say what to
            // run instead of answering 404.
            app = app
                .route("/", get(settings_page_missing))
                .fallback(|| async {
                    Error::NotFound("no such path; methods are under /v1/".into())
                });
        }
    }
    let app = app
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    let app = match cors_layer(&config) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}

/// What `/` shows when no static export of the settings page is served.
pub const SETTINGS_PAGE_MISSING: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Stargazer: settings page not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto; line-height: 1.5">
<h1>The settings page is not built yet</h1>
<p>This Stargazer serves the subscription settings page from the static export of its
<code>frontend/</code> folder, and found none.</p>
<p>On the machine running Stargazer, in the repository's folder, run:</p>
<pre>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>then restart Stargazer from the repository's folder: it serves <code>frontend/out</code>
when it finds it (or set <code>[api] frontend_dir</code> to the export's path). Then open the
link from the bot's <code>/settings</code> again. The link carries your session: keep it to
yourself.</p>
</body></html>
"#;

async fn settings_page_missing() -> axum::response::Html<&'static str> {
    axum::response::Html(SETTINGS_PAGE_MISSING)
}

/// Builds the internal HTTP app (docs/ARCHITECTURE.md §8): the RabbitMQ auth backend
/// `POST /auth/user|vhost|resource|topic` (behind `auth_secret` when set), its
/// `/openapi.json`, `/healthz`, and `/metrics` when `metrics_on_internal`.
pub fn internal_router(state: AppState) -> Router {
    let mut app = Router::new()
        .merge(mq_auth::router(&state))
        .route("/openapi.json", get(internal_openapi_json))
        .route("/healthz", get(|| async { "ok" }))
        .merge(readiness_router(&state));
    if state.config.metrics_on_internal {
        app = app.merge(metrics_router(&state));
    }
    app.fallback(|| async { Error::NotFound("no such path".into()) })
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// `/readyz`: the api's one dependency, storage, pinged within its time bound.
fn readiness_router(state: &AppState) -> Router<AppState> {
    stargazer_core::readiness::Readiness::of(Some(state.storage.clone()), None).router()
}

/// `/metrics` of the registry the api's metrics live in.
fn metrics_router(state: &AppState) -> Router<AppState> {
    let registry = state.metrics.registry.clone();
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    stargazer_core::telemetry::render_metrics(&registry),
                )
            }
        }),
    )
}

async fn internal_openapi_json() -> impl IntoResponse {
    Json(openapi::internal_document())
}

async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    Json(openapi::document(state.config.public_url.as_deref()))
}

/// CORS for the configured origins (or the frontend URL's origin); none when neither is set.
fn cors_layer(config: &ApiConfig) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = if config.cors_origins.is_empty() {
        config
            .frontend_url
            .iter()
            .filter_map(|url| http::origin_of(url))
            .collect::<Vec<_>>()
    } else {
        config
            .cors_origins
            .iter()
            .filter_map(|url| http::origin_of(url))
            .collect()
    }
    .into_iter()
    .filter_map(|origin| HeaderValue::from_str(&origin).ok())
    .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::GET])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

/// The sockets the api serves on.
pub struct Listeners {
    /// `api.listen`: everything [`router`] serves.
    pub public: tokio::net::TcpListener,
    /// `api.internal_listen`: what [`internal_router`] serves; none serves no RabbitMQ
    /// auth backend.
    pub internal: Option<tokio::net::TcpListener>,
}

/// Serves the api on listeners bound by the caller (the internal one replaces
/// `internal_listen`), with its metrics in `registry`, until `shutdown` is cancelled, then
/// finishes in-flight requests and returns. A periodic sweep removes expired sessions.
/// [`ApiService`] runs it on the listeners the platform bound; tests and the frontend's
/// fixture server embed the api through it.
pub async fn serve(
    config: ApiConfig,
    listeners: Listeners,
    storage: Arc<dyn Storage>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<()> {
    let state = AppState::new(config, storage, registry)?;
    let stop = shutdown.child_token();
    let mut servers = tokio::task::JoinSet::new();
    for (listener, app, name) in
        std::iter::once((listeners.public, router(state.clone()), "public")).chain(
            listeners
                .internal
                .map(|listener| (listener, internal_router(state.clone()), "internal")),
        )
    {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, listener = name, "api listening");
        }
        let stop = stop.clone();
        servers.spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;
            // One listener failing stops the other too.
            stop.cancel();
            served
        });
    }
    let sweeper = tokio::spawn(sweep(state, stop.clone()));
    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => result = result.and(Err(Error::Io(err))),
            Err(err) => {
                result = result.and(Err(Error::Internal(format!(
                    "api server task failed: {err}"
                ))))
            }
        }
    }
    stop.cancel();
    if let Err(err) = sweeper.await {
        tracing::error!(cause = %err, "session sweeper failed");
    }
    result
}

/// Periodically purges expired sessions and forgets stale in-memory entries.
async fn sweep(state: AppState, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        state.credentials.sweep();
        state.credentials.purge_shared().await;
        state.grants.sweep();
        match state.storage.purge_sessions(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired sessions purged"),
            Err(err) => tracing::warn!(cause = %err, "purging expired sessions failed"),
        }
    }
}
