//! Prometheus metrics of the coordinator, in their own registry (served at `/metrics`).

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use stargazer_core::model::TaskKind;

use crate::assignment::{Counters, Status};

/// The coordinator's metric families.
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    workers: IntGaugeVec,
    tasks: IntGaugeVec,
    unassigned: IntGaugeVec,
    moving: IntGaugeVec,
    assigned_total: IntCounter,
    unassigned_total: IntCounter,
    evictions_total: IntCounter,
    start_failures_total: IntCounter,
    pub(crate) auth_failures: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let per_kind = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["kind"]);
        let workers = per_kind("stargazer_coordinator_workers", "Connected workers by kind")?;
        let tasks = per_kind("stargazer_coordinator_tasks", "Tasks in storage by kind")?;
        let unassigned = per_kind(
            "stargazer_coordinator_unassigned_tasks",
            "Tasks no worker holds, by kind",
        )?;
        let moving = per_kind(
            "stargazer_coordinator_moving_tasks",
            "Tasks not yet acknowledged by exactly their target worker, by kind",
        )?;
        let assigned_total = IntCounter::new(
            "stargazer_coordinator_assigned_total",
            "Tasks sent in assign messages",
        )?;
        let unassigned_total = IntCounter::new(
            "stargazer_coordinator_unassigned_total",
            "Tasks sent in unassign messages",
        )?;
        let evictions_total = IntCounter::new(
            "stargazer_coordinator_evictions_total",
            "Workers evicted for missed heartbeats or acknowledgements",
        )?;
        let start_failures_total = IntCounter::new(
            "stargazer_coordinator_task_start_failures_total",
            "Tasks workers reported they could not start",
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "stargazer_coordinator_auth_failures_total",
                "Refused requests by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(workers.clone()))?;
        registry.register(Box::new(tasks.clone()))?;
        registry.register(Box::new(unassigned.clone()))?;
        registry.register(Box::new(moving.clone()))?;
        registry.register(Box::new(assigned_total.clone()))?;
        registry.register(Box::new(unassigned_total.clone()))?;
        registry.register(Box::new(evictions_total.clone()))?;
        registry.register(Box::new(start_failures_total.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        Ok(Self {
            registry,
            workers,
            tasks,
            unassigned,
            moving,
            assigned_total,
            unassigned_total,
            evictions_total,
            start_failures_total,
            auth_failures,
        })
    }

    /// Adds what the totals grew by since `before`.
    pub(crate) fn count(&self, before: Counters, after: Counters) {
        self.assigned_total
            .inc_by(after.assigned.saturating_sub(before.assigned));
        self.unassigned_total
            .inc_by(after.unassigned.saturating_sub(before.unassigned));
        self.evictions_total
            .inc_by(after.evicted.saturating_sub(before.evicted));
        self.start_failures_total
            .inc_by(after.start_failures.saturating_sub(before.start_failures));
    }

    /// Sets the gauges from a status report.
    pub(crate) fn observe(&self, status: &Status) {
        for kind in TaskKind::ALL {
            let label = [kind.as_str()];
            let connected = status
                .workers
                .iter()
                .filter(|w| w.kind == kind && w.connected)
                .count();
            self.workers.with_label_values(&label).set(connected as i64);
            let counts = status.tasks.get(&kind).copied().unwrap_or_default();
            self.tasks
                .with_label_values(&label)
                .set(counts.total as i64);
            self.unassigned
                .with_label_values(&label)
                .set(counts.unassigned as i64);
            self.moving
                .with_label_values(&label)
                .set(counts.moving as i64);
        }
    }
}
