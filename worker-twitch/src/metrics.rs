//! Prometheus counters of the Twitch worker, served on the callback listener's `/metrics`.
//! Tests read them through the accessors.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use stargazer_core::source::PublishMetrics;
use stargazer_core::telemetry::{
    register_collector, register_int_counter, register_int_counter_vec,
};

/// Subscription statuses the gauge is reset for on every reconciliation, so a status
/// nobody has any more drops to 0 instead of keeping its last value.
const STATUSES: [&str; 7] = [
    "enabled",
    "webhook_callback_verification_pending",
    "webhook_callback_verification_failed",
    "notification_failures_exceeded",
    "authorization_revoked",
    "user_removed",
    "other",
];

/// The worker's counters.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    notifications: IntCounterVec,
    rejections: IntCounterVec,
    revocations: IntCounterVec,
    subscriptions: IntGaugeVec,
    subscription_changes: IntCounterVec,
    helix_calls: IntCounterVec,
    rate_limit_waits: IntCounter,
    publishing: PublishMetrics,
}

impl Metrics {
    /// Fresh counters registered in `registry` (shared with other services in
    /// standalone; a name already taken there is logged and counted privately).
    pub fn register(registry: &Registry) -> Self {
        let registry = registry.clone();
        let subscriptions = register_collector(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "stargazer_twitch_subscriptions",
                    "EventSub subscriptions to this deployment's callback by status, as last listed",
                ),
                &["status"],
            )
            .expect("metric names and labels are valid literals"),
        );
        Self {
            notifications: register_int_counter_vec(
                &registry,
                "stargazer_twitch_notifications_total",
                "EventSub messages by subscription type and outcome",
                &["type", "outcome"],
            ),
            rejections: register_int_counter_vec(
                &registry,
                "stargazer_twitch_signature_rejections_total",
                "EventSub messages refused before processing by reason",
                &["reason"],
            ),
            revocations: register_int_counter_vec(
                &registry,
                "stargazer_twitch_revocations_total",
                "Subscriptions Twitch revoked by status",
                &["status"],
            ),
            subscriptions,
            subscription_changes: register_int_counter_vec(
                &registry,
                "stargazer_twitch_subscription_changes_total",
                "Subscription creates and deletes by outcome",
                &["action"],
            ),
            helix_calls: register_int_counter_vec(
                &registry,
                "stargazer_twitch_helix_calls_total",
                "Helix calls by endpoint and result",
                &["endpoint", "result"],
            ),
            rate_limit_waits: register_int_counter(
                &registry,
                "stargazer_twitch_rate_limit_waits_total",
                "Helix calls held until the rate-limit bucket refilled",
            ),
            // stargazer_twitch_events_published_total{kind} and
            // stargazer_twitch_publish_failures_total{kind}.
            publishing: PublishMetrics::register(&registry, "stargazer_twitch"),
            registry,
        }
    }

    /// The registry to serve on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The publish counters, which the shared publisher counts in.
    pub fn publishing(&self) -> &PublishMetrics {
        &self.publishing
    }

    pub(crate) fn notification(&self, kind: &str, outcome: &str) {
        self.notifications.with_label_values(&[kind, outcome]).inc();
    }

    pub(crate) fn rejected(&self, reason: &str) {
        self.rejections.with_label_values(&[reason]).inc();
    }

    pub(crate) fn revoked(&self, status: &str) {
        self.revocations.with_label_values(&[status]).inc();
    }

    pub(crate) fn subscription_change(&self, action: &str) {
        self.subscription_changes.with_label_values(&[action]).inc();
    }

    pub(crate) fn helix_call(&self, endpoint: &str, result: &str) {
        self.helix_calls
            .with_label_values(&[endpoint, result])
            .inc();
    }

    pub(crate) fn rate_limit_wait(&self) {
        self.rate_limit_waits.inc();
    }

    /// Sets the subscription gauge from one listing: `(status, count)`.
    pub(crate) fn set_subscriptions<'a>(&self, counts: impl IntoIterator<Item = (&'a str, i64)>) {
        for status in STATUSES {
            self.subscriptions.with_label_values(&[status]).set(0);
        }
        for (status, count) in counts {
            let label = if STATUSES.contains(&status) {
                status
            } else {
                "other"
            };
            self.subscriptions.with_label_values(&[label]).add(count);
        }
    }

    /// Messages of subscription type `kind` with `outcome` (`published`, `duplicate`,
    /// `dropped_non_live`, `end_without_start`, `updated`, `unknown_broadcaster`,
    /// `failed`, `verified`, `revoked`, `malformed`).
    pub fn notifications_with(&self, kind: &str, outcome: &str) -> u64 {
        self.notifications.with_label_values(&[kind, outcome]).get()
    }

    /// Messages refused with `reason` (`unsigned`, `forged`, `stale`, `missing_headers`).
    pub fn rejections_with(&self, reason: &str) -> u64 {
        self.rejections.with_label_values(&[reason]).get()
    }

    /// Revocations received with `status`.
    pub fn revocations_with(&self, status: &str) -> u64 {
        self.revocations.with_label_values(&[status]).get()
    }

    /// Subscription changes with `action` (`created`, `exists`, `deleted`, `failed`).
    pub fn subscription_changes_with(&self, action: &str) -> u64 {
        self.subscription_changes.with_label_values(&[action]).get()
    }

    /// Helix calls to `endpoint` with `result` (`ok`, `conflict`, `not_found`,
    /// `unauthorized`, `rate_limited`, `error`, `network`).
    pub fn helix_calls_with(&self, endpoint: &str, result: &str) -> u64 {
        self.helix_calls
            .with_label_values(&[endpoint, result])
            .get()
    }

    /// Calls held for the rate limit.
    pub fn rate_limit_waits(&self) -> u64 {
        self.rate_limit_waits.get()
    }

    /// Subscriptions of ours with `status` in the last listing.
    pub fn subscriptions_with(&self, status: &str) -> i64 {
        self.subscriptions.with_label_values(&[status]).get()
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
