//! Prometheus counters of the YouTube worker, registered in the worker's own registry and
//! served on the callback server's `/metrics`. Tests read them through the accessors.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use stargazer_core::source::PublishMetrics;
use stargazer_core::telemetry::{
    register_int_counter, register_int_counter_vec, register_int_gauge,
};

/// The worker's counters.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    notifications: IntCounterVec,
    verifications: IntCounterVec,
    hub_requests: IntCounterVec,
    api_calls: IntCounter,
    api_videos: IntCounter,
    api_errors: IntCounterVec,
    feed_polls: IntCounterVec,
    publishing: PublishMetrics,
    subscriptions: IntGauge,
    quota_used: IntGauge,
    quota_remaining: IntGauge,
}

impl Metrics {
    /// Fresh counters in a fresh registry.
    pub fn new() -> Self {
        Self::register(&Registry::new())
    }

    /// Fresh counters registered in `registry` (shared with other services in
    /// standalone; a name already taken there is logged and counted privately).
    pub fn register(registry: &Registry) -> Self {
        let registry = registry.clone();
        let subscriptions = register_int_gauge(
            &registry,
            "stargazer_youtube_subscriptions",
            "WebSub subscriptions currently verified by the hub",
        );
        Self {
            notifications: register_int_counter_vec(
                &registry,
                "stargazer_youtube_notifications_total",
                "WebSub notification POSTs by outcome",
                &["result"],
            ),
            verifications: register_int_counter_vec(
                &registry,
                "stargazer_youtube_verifications_total",
                "Hub verification GETs by mode and outcome",
                &["mode", "result"],
            ),
            hub_requests: register_int_counter_vec(
                &registry,
                "stargazer_youtube_hub_requests_total",
                "Subscribe/unsubscribe requests to the hub by outcome",
                &["mode", "result"],
            ),
            api_calls: register_int_counter(
                &registry,
                "stargazer_youtube_data_api_calls_total",
                "videos.list calls (one quota unit each)",
            ),
            api_videos: register_int_counter(
                &registry,
                "stargazer_youtube_data_api_videos_total",
                "Video ids asked of videos.list",
            ),
            api_errors: register_int_counter_vec(
                &registry,
                "stargazer_youtube_data_api_errors_total",
                "Failed videos.list calls by reason",
                &["reason"],
            ),
            feed_polls: register_int_counter_vec(
                &registry,
                "stargazer_youtube_feed_polls_total",
                "Fallback feed polls by outcome",
                &["result"],
            ),
            // stargazer_youtube_events_published_total{kind} and
            // stargazer_youtube_publish_failures_total{kind}.
            publishing: PublishMetrics::register(&registry, "stargazer_youtube"),
            subscriptions,
            quota_used: register_int_gauge(
                &registry,
                "stargazer_youtube_quota_used_units",
                "Data API units spent today (Pacific time) by every worker sharing the storage",
            ),
            quota_remaining: register_int_gauge(
                &registry,
                "stargazer_youtube_quota_remaining_units",
                "Data API units left today of daily_quota_units",
            ),
            registry,
        }
    }

    /// The registry to serve on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn notification(&self, result: &str) {
        self.notifications.with_label_values(&[result]).inc();
    }

    pub(crate) fn verification(&self, mode: &str, result: &str) {
        self.verifications.with_label_values(&[mode, result]).inc();
    }

    pub(crate) fn hub_request(&self, mode: &str, result: &str) {
        self.hub_requests.with_label_values(&[mode, result]).inc();
    }

    /// The quota gauges, for the meter to show the day's count on.
    pub(crate) fn quota_gauges(&self) -> crate::quota::QuotaGauges {
        crate::quota::QuotaGauges {
            used: self.quota_used.clone(),
            remaining: self.quota_remaining.clone(),
        }
    }

    /// Data API units spent today, as last counted.
    pub fn quota_used_units(&self) -> i64 {
        self.quota_used.get()
    }

    /// Data API units left today, as last counted.
    pub fn quota_remaining_units(&self) -> i64 {
        self.quota_remaining.get()
    }

    pub(crate) fn api_call(&self, videos: usize) {
        self.api_calls.inc();
        self.api_videos.inc_by(videos as u64);
    }

    pub(crate) fn api_error(&self, reason: &str) {
        self.api_errors.with_label_values(&[reason]).inc();
    }

    pub(crate) fn feed_poll(&self, result: &str) {
        self.feed_polls.with_label_values(&[result]).inc();
    }

    /// The publish counters, which the shared publisher counts in.
    pub fn publishing(&self) -> &PublishMetrics {
        &self.publishing
    }

    pub(crate) fn subscriptions(&self) -> &IntGauge {
        &self.subscriptions
    }

    /// Notifications counted with `result` (`accepted`, `forged`, `unsigned`, `malformed`,
    /// `unknown_subscription`, `unsubscribing`, `foreign_entry`).
    pub fn notifications_with(&self, result: &str) -> u64 {
        self.notifications.with_label_values(&[result]).get()
    }

    /// Verification GETs counted with `mode` and `result` (`confirmed`, `refused`).
    pub fn verifications_with(&self, mode: &str, result: &str) -> u64 {
        self.verifications.with_label_values(&[mode, result]).get()
    }

    /// Hub requests counted with `mode` and `result` (`accepted`, `failed`).
    pub fn hub_requests_with(&self, mode: &str, result: &str) -> u64 {
        self.hub_requests.with_label_values(&[mode, result]).get()
    }

    /// `videos.list` calls made (quota units spent).
    pub fn api_calls(&self) -> u64 {
        self.api_calls.get()
    }

    /// Video ids asked of `videos.list`.
    pub fn api_videos(&self) -> u64 {
        self.api_videos.get()
    }

    /// Failed `videos.list` calls with `reason` (`quota`, `rejected`, `unavailable`,
    /// `bad_response`).
    pub fn api_errors_with(&self, reason: &str) -> u64 {
        self.api_errors.with_label_values(&[reason]).get()
    }

    /// Feed polls with `result` (`ok`, `failed`).
    pub fn feed_polls_with(&self, result: &str) -> u64 {
        self.feed_polls.with_label_values(&[result]).get()
    }

    /// Events published of `kind`.
    pub fn published_of(&self, kind: &str) -> u64 {
        self.publishing.published_of(kind)
    }

    /// Verified subscriptions held now.
    pub fn active_subscriptions(&self) -> i64 {
        self.subscriptions.get()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
