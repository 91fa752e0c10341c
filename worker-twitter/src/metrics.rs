//! Prometheus counters of the X worker; tests read them through the accessors.

use prometheus::{IntCounterVec, Registry};
use stargazer_core::source::PublishMetrics;
use stargazer_core::telemetry::register_int_counter_vec;

/// The worker's counters.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    publishing: PublishMetrics,
}

impl Metrics {
    /// Fresh counters registered in `registry` (shared with other services in
    /// standalone; a name already taken there is logged and counted privately).
    pub fn register(registry: &Registry) -> Self {
        let registry = registry.clone();
        Self {
            requests: register_int_counter_vec(
                &registry,
                "stargazer_twitter_requests_total",
                "Timeline requests by outcome",
                &["result"],
            ),
            // stargazer_twitter_events_published_total{kind} and
            // stargazer_twitter_publish_failures_total{kind}.
            publishing: PublishMetrics::register(&registry, "stargazer_twitter"),
            registry,
        }
    }

    /// The registry to serve on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn request(&self, result: &str) {
        self.requests.with_label_values(&[result]).inc();
    }

    /// The publish counters, which the shared publisher counts in.
    pub fn publishing(&self) -> &PublishMetrics {
        &self.publishing
    }

    /// Timeline requests with `result` (`ok`, `rate_limited`, `unauthorized`, `not_found`,
    /// `rejected`, `unavailable`, `bad_response`).
    pub fn requests_with(&self, result: &str) -> u64 {
        self.requests.with_label_values(&[result]).get()
    }

    /// Events published of `kind`.
    pub fn published_of(&self, kind: &str) -> u64 {
        self.publishing.published_of(kind)
    }
}

impl Default for Metrics {
    /// Fresh counters in a fresh registry.
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}
