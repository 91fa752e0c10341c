//! The publish counters of a source, under the source's metric name prefix.

use prometheus::{IntCounterVec, Registry};

use crate::telemetry::register_int_counter_vec;

/// Events published and publishes deferred to the outbox, both labelled `{kind}`.
///
/// The names take the source's prefix (`stargazer_youtube`, `stargazer_twitter`) because
/// dashboards and tests scrape them per source; the label set is the same for both
/// counters and every source, so a dashboard can divide one by the other.
#[derive(Clone, Debug)]
pub struct PublishMetrics {
    published: IntCounterVec,
    failures: IntCounterVec,
}

impl PublishMetrics {
    /// Registers `<prefix>_events_published_total{kind}` and
    /// `<prefix>_publish_failures_total{kind}` in `registry` (a name already taken there is
    /// logged and counted privately, see [`crate::telemetry::register_collector`]).
    pub fn register(registry: &Registry, prefix: &str) -> Self {
        Self {
            published: register_int_counter_vec(
                registry,
                &format!("{prefix}_events_published_total"),
                "Events published by kind",
                &["kind"],
            ),
            failures: register_int_counter_vec(
                registry,
                &format!("{prefix}_publish_failures_total"),
                "Publishes that failed and went to the outbox",
                &["kind"],
            ),
        }
    }

    pub(crate) fn published(&self, kind: &str) {
        self.published.with_label_values(&[kind]).inc();
    }

    pub(crate) fn publish_failed(&self, kind: &str) {
        self.failures.with_label_values(&[kind]).inc();
    }

    /// Events published of `kind` (outbox retries included).
    pub fn published_of(&self, kind: &str) -> u64 {
        self.published.with_label_values(&[kind]).get()
    }

    /// Publishes of `kind` that were not confirmed and went to the outbox.
    pub fn publish_failures_of(&self, kind: &str) -> u64 {
        self.failures.with_label_values(&[kind]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_counters_take_the_prefix_and_the_kind_label() {
        let registry = Registry::new();
        let metrics = PublishMetrics::register(&registry, "stargazer_test");
        metrics.published("test.video");
        metrics.publish_failed("test.video");
        let text = crate::telemetry::render_metrics(&registry);
        assert!(
            text.contains("stargazer_test_events_published_total{kind=\"test.video\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stargazer_test_publish_failures_total{kind=\"test.video\"} 1"),
            "{text}"
        );
    }
}
