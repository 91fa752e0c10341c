//! Prometheus metrics of the Bilibili worker; tests read them through the accessors.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use stargazer_core::source::PublishMetrics;
use stargazer_core::telemetry::{register_collector, register_int_counter_vec, register_int_gauge};

/// The endpoint label of the live-status calls.
pub const LIVE: &str = "live";
/// The endpoint label of the dynamics calls (`/nav` included).
pub const DYNAMIC: &str = "dynamic";

/// The worker's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    polls: IntCounterVec,
    risk_answers: IntCounterVec,
    risk_control: IntGaugeVec,
    rooms_live: IntGauge,
    publishing: PublishMetrics,
}

impl Metrics {
    /// Fresh metrics registered in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let registry = registry.clone();
        let risk_control = IntGaugeVec::new(
            Opts::new(
                "stargazer_bilibili_risk_control",
                "1 while the endpoint backs off after a risk-control answer",
            ),
            &["endpoint"],
        )
        .expect("metric names and labels are valid literals");
        Self {
            polls: register_int_counter_vec(
                &registry,
                "stargazer_bilibili_polls_total",
                "Requests by endpoint and outcome",
                &["endpoint", "outcome"],
            ),
            risk_answers: register_int_counter_vec(
                &registry,
                "stargazer_bilibili_risk_answers_total",
                "Risk-control answers (-412, -352) by endpoint and code",
                &["endpoint", "code"],
            ),
            risk_control: register_collector(&registry, risk_control),
            rooms_live: register_int_gauge(
                &registry,
                "stargazer_bilibili_rooms_live",
                "Rooms of held tasks live at the last status cycle",
            ),
            // stargazer_bilibili_events_published_total{kind} and
            // stargazer_bilibili_publish_failures_total{kind}.
            publishing: PublishMetrics::register(&registry, "stargazer_bilibili"),
            registry,
        }
    }

    /// The registry to serve on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn poll(&self, endpoint: &str, outcome: &str) {
        self.polls.with_label_values(&[endpoint, outcome]).inc();
    }

    pub(crate) fn risk_answer(&self, endpoint: &str, code: i64) {
        self.risk_answers
            .with_label_values(&[endpoint, &code.to_string()])
            .inc();
    }

    pub(crate) fn risk_gauge(&self, endpoint: &str) -> IntGauge {
        self.risk_control.with_label_values(&[endpoint])
    }

    pub(crate) fn set_rooms_live(&self, rooms: usize) {
        self.rooms_live.set(rooms as i64);
    }

    /// The publish counters, which the shared publisher counts in.
    pub fn publishing(&self) -> &PublishMetrics {
        &self.publishing
    }

    /// Requests to `endpoint` ([`LIVE`], [`DYNAMIC`]) with `outcome` (`ok`,
    /// `risk_control`, `error_code`, `http_error`, `unavailable`, `bad_response`).
    pub fn polls_with(&self, endpoint: &str, outcome: &str) -> u64 {
        self.polls.with_label_values(&[endpoint, outcome]).get()
    }

    /// Risk-control answers of `endpoint` with `code`.
    pub fn risk_answers(&self, endpoint: &str, code: i64) -> u64 {
        self.risk_answers
            .with_label_values(&[endpoint, &code.to_string()])
            .get()
    }

    /// Whether `endpoint` is backing off (the gauge is 1).
    pub fn risk_control(&self, endpoint: &str) -> bool {
        self.risk_control.with_label_values(&[endpoint]).get() == 1
    }

    /// Rooms live at the last status cycle.
    pub fn rooms_live(&self) -> i64 {
        self.rooms_live.get()
    }

    /// Events published of `kind`.
    pub fn published_of(&self, kind: &str) -> u64 {
        self.publishing.published_of(kind)
    }
}

impl Default for Metrics {
    /// Fresh metrics in a fresh registry.
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}
