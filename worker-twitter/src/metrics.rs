//! Prometheus counters of the X worker; tests read them through the accessors.

use prometheus::{IntCounterVec, Opts, Registry};

/// The worker's counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    published: IntCounterVec,
    publish_failures: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are valid literals");
    registry
        .register(Box::new(counter.clone()))
        .expect("each metric is registered once in a fresh registry");
    counter
}

impl Metrics {
    /// Fresh counters in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        Self {
            requests: counter_vec(
                &registry,
                "stargazer_twitter_requests_total",
                "Timeline requests by outcome",
                &["result"],
            ),
            published: counter_vec(
                &registry,
                "stargazer_twitter_events_published_total",
                "Events published by kind",
                &["kind"],
            ),
            publish_failures: counter_vec(
                &registry,
                "stargazer_twitter_publish_failures_total",
                "Publishes that failed and went to the outbox",
                &["kind"],
            ),
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

    pub(crate) fn published(&self, kind: &str) {
        self.published.with_label_values(&[kind]).inc();
    }

    pub(crate) fn publish_failed(&self, kind: &str) {
        self.publish_failures.with_label_values(&[kind]).inc();
    }

    /// Timeline requests with `result` (`ok`, `rate_limited`, `unauthorized`, `not_found`,
    /// `rejected`, `unavailable`, `bad_response`).
    pub fn requests_with(&self, result: &str) -> u64 {
        self.requests.with_label_values(&[result]).get()
    }

    /// Events published of `kind`.
    pub fn published_of(&self, kind: &str) -> u64 {
        self.published.with_label_values(&[kind]).get()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
