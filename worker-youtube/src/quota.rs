//! Data API quota accounting. Google counts a project's units per day and resets them at
//! midnight Pacific time; `videos.list` costs one unit per call. Each worker process keeps
//! its own count of the day in the key/value store (`youtube.quota.<Pacific date>`, key: a
//! per-process id) and reads the day's total as the sum of every process's count, so
//! restarts and N workers on one key are all counted without atomic increments.
//!
//! The budget drives the batcher: plenty → as configured; fewer than
//! `quota_reserve_units` left → wider batches (five windows, no instant classification);
//! none left → no call at all, and pushed or polled uploads are announced from the feed's
//! own data until the quota resets (see [`crate::batcher`]).

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::America::Los_Angeles;
use stargazer_core::storage::{StateStore, StorageError};
use uuid::Uuid;

use crate::metrics::Metrics;

/// Prefix of the per-day namespaces.
pub const QUOTA_NAMESPACE_PREFIX: &str = "youtube.quota.";

/// How much of the day's quota is left, as the batcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// More than the reserve: batch as configured.
    Plenty,
    /// At most the reserve: batch wider.
    Low,
    /// Nothing: make no call until the quota resets.
    Spent,
}

/// The quota day `now` falls in: Google resets quotas at midnight Pacific time.
pub fn quota_day(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&Los_Angeles).date_naive()
}

/// The key/value namespace of a quota day.
pub fn quota_namespace(day: NaiveDate) -> String {
    format!("{QUOTA_NAMESPACE_PREFIX}{day}")
}

#[derive(Debug)]
struct Day {
    day: NaiveDate,
    /// Units this process spent that day.
    own: u64,
    /// Units every process spent that day, as last read.
    total: u64,
}

/// This process's view of the day's quota.
pub(crate) struct QuotaMeter {
    storage: Arc<dyn StateStore>,
    /// This process's key in the day's namespace.
    instance: String,
    daily: u64,
    reserve: u64,
    state: Mutex<Day>,
    metrics: Metrics,
}

impl QuotaMeter {
    /// A meter for a project with `daily` units (0: not accounted), keeping `reserve`.
    pub(crate) fn new(
        storage: Arc<dyn StateStore>,
        daily: u64,
        reserve: u64,
        metrics: Metrics,
    ) -> Self {
        let meter = Self {
            storage,
            instance: Uuid::new_v4().simple().to_string(),
            daily,
            reserve,
            state: Mutex::new(Day {
                day: quota_day(Utc::now()),
                own: 0,
                total: 0,
            }),
            metrics,
        };
        meter.show(0);
        meter
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Day> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new day when `today` is not the one counted; whether it did.
    fn roll(&self, today: NaiveDate) -> bool {
        let mut state = self.state();
        if state.day == today {
            return false;
        }
        *state = Day {
            day: today,
            own: 0,
            total: 0,
        };
        true
    }

    fn show(&self, total: u64) {
        let clamp = |units: u64| i64::try_from(units).unwrap_or(i64::MAX);
        self.metrics.quota_used().set(clamp(total));
        self.metrics
            .quota_remaining()
            .set(clamp(self.daily.saturating_sub(total)));
    }

    /// Reads the day's total from storage (at start, so a restart keeps counting), and
    /// clears the namespace of two days ago.
    pub(crate) async fn load(&self) {
        if self.daily == 0 {
            return;
        }
        let today = quota_day(Utc::now());
        self.roll(today);
        if let Err(err) = self.refresh(today).await {
            tracing::warn!(cause = %err, "could not read the Data API quota spent today; counting from zero");
        }
        if let Some(old) = today.checked_sub_days(Days::new(2)) {
            if let Err(err) = self.clear(old).await {
                tracing::debug!(cause = %err, "could not clear an old quota day");
            }
        }
    }

    /// Counts `units` just spent: this process's count is stored, the day's total re-read.
    /// Storage trouble only loses the other processes' share (logged).
    pub(crate) async fn spend(&self, units: u64) {
        if self.daily == 0 {
            return;
        }
        let today = quota_day(Utc::now());
        if self.roll(today) {
            if let Some(old) = today.checked_sub_days(Days::new(2)) {
                let _ = self.clear(old).await;
            }
        }
        let own = {
            let mut state = self.state();
            state.own += units;
            state.total += units;
            state.own
        };
        let stored = self
            .storage
            .kv_put(
                &quota_namespace(today),
                &self.instance,
                &serde_json::json!(own),
            )
            .await;
        let result = match stored {
            Ok(()) => self.refresh(today).await,
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::warn!(cause = %err, "could not share the Data API quota count");
            let total = self.state().total;
            self.show(total);
        }
    }

    async fn refresh(&self, today: NaiveDate) -> Result<(), StorageError> {
        let entries = self.storage.kv_list(&quota_namespace(today)).await?;
        let stored: u64 = entries
            .iter()
            .filter(|(key, _)| *key != self.instance)
            .filter_map(|(_, value)| value.as_u64())
            .sum();
        let total = {
            let mut state = self.state();
            if state.day != today {
                return Ok(());
            }
            state.total = stored + state.own;
            state.total
        };
        self.show(total);
        Ok(())
    }

    async fn clear(&self, day: NaiveDate) -> Result<(), StorageError> {
        let namespace = quota_namespace(day);
        for (key, _) in self.storage.kv_list(&namespace).await? {
            self.storage.kv_delete(&namespace, &key).await?;
        }
        Ok(())
    }

    /// Units left today, as last counted.
    pub(crate) fn remaining(&self) -> u64 {
        if self.daily == 0 {
            return u64::MAX;
        }
        let state = self.state();
        if state.day != quota_day(Utc::now()) {
            return self.daily;
        }
        self.daily.saturating_sub(state.total)
    }

    /// The budget now.
    pub(crate) fn budget(&self) -> Budget {
        if self.daily == 0 {
            return Budget::Plenty;
        }
        match self.remaining() {
            0 => Budget::Spent,
            left if left <= self.reserve => Budget::Low,
            _ => Budget::Plenty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_quota_day_turns_at_midnight_pacific() {
        // December: PST, UTC−8.
        let before = Utc.with_ymd_and_hms(2026, 12, 6, 7, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap();
        assert_eq!(
            quota_day(before),
            NaiveDate::from_ymd_opt(2026, 12, 5).unwrap()
        );
        assert_eq!(
            quota_day(after),
            NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()
        );
        // July: PDT, UTC−7.
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 7, 0, 0).unwrap();
        assert_eq!(
            quota_day(summer),
            NaiveDate::from_ymd_opt(2026, 7, 1).unwrap()
        );
    }

    #[tokio::test]
    async fn processes_sharing_a_store_count_each_other_and_the_budget_follows() {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let a = QuotaMeter::new(storage.clone(), 5, 2, Metrics::new());
        let b = QuotaMeter::new(storage.clone(), 5, 2, Metrics::new());
        a.load().await;
        assert_eq!(a.budget(), Budget::Plenty);
        a.spend(1).await;
        b.spend(1).await;
        assert_eq!(b.remaining(), 3, "b counts a's unit too");
        a.spend(1).await;
        assert_eq!(a.remaining(), 2);
        assert_eq!(a.budget(), Budget::Low);
        b.spend(2).await;
        assert_eq!(b.budget(), Budget::Spent);
        // A restarted process (a new meter) picks the day's total up from storage.
        let c = QuotaMeter::new(storage, 5, 2, Metrics::new());
        c.load().await;
        assert_eq!(c.remaining(), 0);
        assert_eq!(c.budget(), Budget::Spent);
        // Not accounted: never short.
        let free = QuotaMeter::new(
            stargazer_core::storage::connect("sqlite::memory:")
                .await
                .unwrap(),
            0,
            0,
            Metrics::new(),
        );
        free.spend(100).await;
        assert_eq!(free.budget(), Budget::Plenty);
    }
}
