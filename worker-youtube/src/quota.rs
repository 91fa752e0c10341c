//! The Data API quota, counted per Pacific day across every process sharing the key: the
//! meter lives in `stargazer_core::quota` because the live-check middleware spends the same
//! units.

pub use stargazer_core::quota::{
    quota_day, quota_namespace, Budget, QuotaGauges, QuotaMeter, QUOTA_NAMESPACE_PREFIX,
};
