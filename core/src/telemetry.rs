//! Logging, metrics and health: `tracing` initialisation (text or JSON), a Prometheus
//! registry each service registers its metrics in (with helpers that tolerate a shared
//! registry), and axum routes for `/metrics` and `/healthz`.

use std::io::IsTerminal;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global `tracing` subscriber, one line per event (without colour codes
/// unless stderr is a terminal). `filter` is an `EnvFilter` directive
/// (`info`, `stargazer_api=debug`); `RUST_LOG` wins when set. Calling it twice is harmless.
pub fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // Colour codes only on a terminal: in a file or a log collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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

/// Registers `collector` in `registry` and returns it. Several services may share one
/// registry in one process, so a name that is already taken is not fatal: the conflict is
/// logged and the collector is returned unregistered (it still counts, it is just not
/// exported), as [`crate::middleware::RuntimeMetrics::register`] does.
pub fn register_collector<C>(registry: &Registry, collector: C) -> C
where
    C: Collector + Clone + 'static,
{
    if let Err(err) = registry.register(Box::new(collector.clone())) {
        let names: Vec<&str> = collector
            .desc()
            .iter()
            .map(|desc| desc.fq_name.as_str())
            .collect();
        tracing::warn!(metric = ?names, cause = %err, "metric not registered; counting it privately");
    }
    collector
}

/// A counter named `name`, registered in `registry` (see [`register_collector`] for a
/// name already taken).
///
/// # Panics
/// If `name` is not a valid Prometheus metric name; names are literals in code, so any
/// test that builds the metrics catches it.
pub fn register_int_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("metric names are valid literals");
    register_collector(registry, counter)
}

/// A counter family named `name` with `labels`, registered in `registry` (see
/// [`register_collector`] for a name already taken).
///
/// # Panics
/// If `name` or a label is not a valid Prometheus name; they are literals in code, so any
/// test that builds the metrics catches it.
pub fn register_int_counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are valid literals");
    register_collector(registry, counter)
}

/// A gauge named `name`, registered in `registry` (see [`register_collector`] for a name
/// already taken).
///
/// # Panics
/// If `name` is not a valid Prometheus metric name; names are literals in code, so any
/// test that builds the metrics catches it.
pub fn register_int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("metric names are valid literals");
    register_collector(registry, gauge)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_taken_twice_keeps_the_first_and_counts_the_second_privately() {
        let registry = Registry::new();
        let first = register_int_counter(&registry, "stargazer_test_total", "first");
        let second = register_int_counter(&registry, "stargazer_test_total", "second");
        first.inc_by(3);
        second.inc();
        assert_eq!((first.get(), second.get()), (3, 1));
        let rendered = render_metrics(&registry);
        assert!(rendered.contains("stargazer_test_total 3"), "{rendered}");
        assert!(!rendered.contains("stargazer_test_total 1"), "{rendered}");
    }

    #[test]
    fn families_and_gauges_register_and_tolerate_conflicts() {
        let registry = Registry::new();
        let requests =
            register_int_counter_vec(&registry, "stargazer_test_requests_total", "r", &["result"]);
        // Same name, different labels: refused by the registry, still usable.
        let clash =
            register_int_counter_vec(&registry, "stargazer_test_requests_total", "r", &["kind"]);
        let gauge = register_int_gauge(&registry, "stargazer_test_held", "g");
        let gauge_again = register_int_gauge(&registry, "stargazer_test_held", "g");
        requests.with_label_values(&["ok"]).inc();
        clash.with_label_values(&["tweet"]).inc_by(5);
        gauge.set(7);
        gauge_again.set(2);
        let rendered = render_metrics(&registry);
        assert!(
            rendered.contains(r#"stargazer_test_requests_total{result="ok"} 1"#),
            "{rendered}"
        );
        assert!(!rendered.contains("kind="), "{rendered}");
        assert!(rendered.contains("stargazer_test_held 7"), "{rendered}");
        assert_eq!(clash.with_label_values(&["tweet"]).get(), 5);
    }
}
