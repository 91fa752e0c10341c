//! Logging, metrics and health: `tracing` initialisation (text or JSON), a Prometheus
//! registry each service registers its metrics in, and axum routes for `/metrics` and
//! `/healthz`.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global `tracing` subscriber. `filter` is an `EnvFilter` directive
/// (`info`, `stargazer_api=debug`); `RUST_LOG` wins when set. Calling it twice is harmless.
pub fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Renders a registry in the Prometheus text exposition format.
pub fn render_metrics(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    // Encoding into a Vec only fails on malformed metric families, which the registry
    // never produces.
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        tracing::error!(cause = %err, "failed to encode metrics");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

/// Routes `GET /metrics` (Prometheus text) and `GET /healthz` (`ok`) for any service.
pub fn health_and_metrics_router<S: Clone + Send + Sync + 'static>(
    registry: Registry,
) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        render_metrics(&registry),
                    )
                        .into_response()
                }
            }),
        )
}
