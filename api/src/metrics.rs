//! Prometheus metrics of the api: requests by method and status, latency by method,
//! RabbitMQ auth decisions. Labels are bounded: unknown `/v1/…` names count as
//! `unknown`, other paths as `other`.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::error::{Error, Result};
use crate::state::AppState;

/// The api's metric families and the registry they are registered in (the one `/metrics`
/// serves; in standalone it is shared with every other service).
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    pub(crate) mq_auth: IntCounterVec,
    logins: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new(registry: Registry) -> Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "stargazer_api_requests_total",
                "HTTP requests by method and status",
            ),
            &["method", "status"],
        )
        .map_err(metric_error)?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "stargazer_api_request_duration_seconds",
                "HTTP request latency by method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method"],
        )
        .map_err(metric_error)?;
        let mq_auth = IntCounterVec::new(
            Opts::new(
                "stargazer_api_mq_auth_total",
                "RabbitMQ HTTP auth decisions by check and result",
            ),
            &["check", "result"],
        )
        .map_err(metric_error)?;
        registry
            .register(Box::new(requests.clone()))
            .map_err(metric_error)?;
        registry
            .register(Box::new(duration.clone()))
            .map_err(metric_error)?;
        let logins = IntCounterVec::new(
            Opts::new(
                "stargazer_api_password_checks_total",
                "Uncached service logins by outcome: ok, failed (wrong password or unknown \
                 username) or busy (no password check came free in time)",
            ),
            &["outcome"],
        )
        .map_err(metric_error)?;
        for collector in [&mq_auth, &logins] {
            registry
                .register(Box::new(collector.clone()))
                .map_err(metric_error)?;
        }
        Ok(Self {
            registry,
            requests,
            duration,
            mq_auth,
            logins,
        })
    }

    /// Counts an uncached login by `outcome`.
    pub(crate) fn login(&self, outcome: &'static str) {
        self.logins.with_label_values(&[outcome]).inc();
    }
}

fn metric_error(err: prometheus::Error) -> Error {
    Error::Internal(format!("registering metrics: {err}"))
}

/// The bounded label of a request path.
fn label(path: &str) -> &'static str {
    if let Some(method) = path.strip_prefix("/v1/") {
        return crate::rpc::METHODS
            .iter()
            .find(|known| **known == method)
            .copied()
            .unwrap_or("unknown");
    }
    // Feed paths carry a secret: one label for all of them, and never the path.
    if path.starts_with("/ical/") {
        return "ical";
    }
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/openapi.json" => "openapi",
        "/auth/user" => "auth_user",
        "/auth/vhost" => "auth_vhost",
        "/auth/resource" => "auth_resource",
        "/auth/topic" => "auth_topic",
        _ => "other",
    }
}

/// Middleware counting and timing every request.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = label(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    tracing::debug!(
        method,
        status = response.status().as_u16(),
        elapsed_us = elapsed.as_micros() as u64,
        "request"
    );
    let metrics = &state.metrics;
    metrics
        .requests
        .with_label_values(&[method, response.status().as_str()])
        .inc();
    metrics
        .duration
        .with_label_values(&[method])
        .observe(elapsed.as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(label("/v1/getUser"), "getUser");
        assert_eq!(label("/v1/stealEverything"), "unknown");
        assert_eq!(label("/index.html"), "other");
        assert_eq!(label("/auth/topic"), "auth_topic");
        assert_eq!(label("/ical/0123.secret.ics"), "ical");
    }
}
