//! YouTube Data API quota accounting, shared by every process that calls the API with one
//! project's key (the YouTube worker, the live-check middleware). Google counts a project's
//! units per day and resets them at midnight Pacific time; `videos.list` costs one unit per
//! call. Each worker process keeps
//! its own count of the day in the key/value store (`youtube.quota.<Pacific date>`, key: a
//! per-process id) and reads the day's total as the sum of every process's count, so
//! restarts and N workers on one key are all counted without atomic increments.
//!
//! The budget drives the callers: the worker batches wider when it runs low and stops
//! calling when it is spent (announcing uploads from the feed's own data); the live-check
//! middleware polls less often when low and, when spent, releases held events at their
//! scheduled start unverified rather than dropping them.

use std::sync::{Arc, Mutex};

use crate::storage::{StateStore, StorageError};
use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::America::Los_Angeles;
use uuid::Uuid;

use prometheus::IntGauge;

/// Prefix of the per-day namespaces.
pub const QUOTA_NAMESPACE_PREFIX: &str = "youtube.quota.";

/// How much of the day's quota is left, as the batcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
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
pub struct QuotaMeter {
    storage: Arc<dyn StateStore>,
    /// This process's key in the day's namespace.
    instance: String,
    daily: u64,
    reserve: u64,
    state: Mutex<Day>,
    gauges: Option<QuotaGauges>,
}

impl std::fmt::Debug for QuotaMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaMeter")
            .field("daily", &self.daily)
            .field("reserve", &self.reserve)
            .field("remaining", &self.remaining())
            .finish()
    }
}

/// Where a meter shows the day's count: units used and left.
#[derive(Debug, Clone)]
pub struct QuotaGauges {
    /// Units spent today by every process.
    pub used: IntGauge,
    /// Units left today.
    pub remaining: IntGauge,
}

impl QuotaMeter {
    /// A meter for a project with `daily` units (0: not accounted), keeping `reserve`.
    pub fn new(
        storage: Arc<dyn StateStore>,
        daily: u64,
        reserve: u64,
        gauges: Option<QuotaGauges>,
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
            gauges,
        };
        meter.show(0);
        meter
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Day> {
        crate::sync::lock(&self.state)
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
        let Some(gauges) = &self.gauges else {
            return;
        };
        let clamp = |units: u64| i64::try_from(units).unwrap_or(i64::MAX);
        gauges.used.set(clamp(total));
        gauges
            .remaining
            .set(clamp(self.daily.saturating_sub(total)));
    }

    /// Reads the day's total from storage (at start, so a restart keeps counting), and
    /// clears the namespace of two days ago.
    pub async fn load(&self) {
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
    pub async fn spend(&self, units: u64) {
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
    pub fn remaining(&self) -> u64 {
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
    pub fn budget(&self) -> Budget {
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
        let storage = crate::storage::connect("sqlite::memory:").await.unwrap();
        let a = QuotaMeter::new(storage.clone(), 5, 2, None);
        let b = QuotaMeter::new(storage.clone(), 5, 2, None);
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
        let c = QuotaMeter::new(storage, 5, 2, None);
        c.load().await;
        assert_eq!(c.remaining(), 0);
        assert_eq!(c.budget(), Budget::Spent);
        // Not accounted: never short.
        let free = QuotaMeter::new(
            crate::storage::connect("sqlite::memory:").await.unwrap(),
            0,
            0,
            None,
        );
        free.spend(100).await;
        assert_eq!(free.budget(), Budget::Plenty);
    }
}
