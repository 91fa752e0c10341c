//! The `[youtube]` configuration section.
//!
//! Every key can be set in the TOML file under `[youtube]` or through the environment as
//! `STARGAZER_YOUTUBE__<KEY>` (upper case); the API key also as `STARGAZER_YOUTUBE_API_KEY`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};

/// Settings of the YouTube worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct YoutubeConfig {
    /// `api_key` / `STARGAZER_YOUTUBE_API_KEY`: YouTube Data API v3 key. Default: empty
    /// (classification calls then fail with the API's own error, which is logged).
    pub api_key: String,
    /// `data_api_base` / `STARGAZER_YOUTUBE__DATA_API_BASE`: base URL of the Data API; the
    /// worker calls `{data_api_base}/youtube/v3/videos`. Default `https://www.googleapis.com`.
    pub data_api_base: String,
    /// `hub_url` / `STARGAZER_YOUTUBE__HUB_URL`: the WebSub hub endpoint that receives
    /// subscribe/unsubscribe POSTs. Default `https://pubsubhubbub.appspot.com/subscribe`.
    pub hub_url: String,
    /// `topic_base` / `STARGAZER_YOUTUBE__TOPIC_BASE`: the topic URL without the query; the
    /// topic is `{topic_base}?channel_id=<id>`. Default
    /// `https://www.youtube.com/xml/feeds/videos.xml` (what YouTube publishes to).
    pub topic_base: String,
    /// `feed_base` / `STARGAZER_YOUTUBE__FEED_BASE`: base URL of the public channel feed
    /// polled as fallback, `{feed_base}/feeds/videos.xml?channel_id=<id>`. Default
    /// `https://www.youtube.com`.
    pub feed_base: String,
    /// `public_url` / `STARGAZER_YOUTUBE__PUBLIC_URL`: the URL under which the hub reaches
    /// this worker's callback server (callbacks are `{public_url}/websub/<subscription id>`).
    /// Default: empty, which disables WebSub; the worker then relies on the feed poll only.
    pub public_url: String,
    /// `listen` / `STARGAZER_YOUTUBE__LISTEN`: address the callback server (WebSub,
    /// `/healthz`, `/metrics`) binds. Default `0.0.0.0:8081`.
    pub listen: SocketAddr,
    /// `lease_seconds` / `STARGAZER_YOUTUBE__LEASE_SECONDS`: lease asked of the hub, seconds.
    /// Default 432000 (5 days, the hub's usual maximum).
    pub lease_seconds: u64,
    /// `renew_margin_seconds` / `STARGAZER_YOUTUBE__RENEW_MARGIN_SECONDS`: renew this long
    /// before the lease expires, seconds (at most half the granted lease). Default 86400.
    pub renew_margin_seconds: u64,
    /// `verify_timeout_seconds` / `STARGAZER_YOUTUBE__VERIFY_TIMEOUT_SECONDS`: how long to wait
    /// for the hub's verification GET after it accepted a request before asking again,
    /// seconds. Default 300.
    pub verify_timeout_seconds: u64,
    /// `hub_concurrency` / `STARGAZER_YOUTUBE__HUB_CONCURRENCY`: hub requests in flight at
    /// once, so thousands of channels starting together do not flood the hub. Default 8.
    pub hub_concurrency: usize,
    /// `hub_retry_initial_ms` / `STARGAZER_YOUTUBE__HUB_RETRY_INITIAL_MS`: first delay before
    /// retrying a failed hub request, milliseconds (doubles each failure). Default 1000.
    pub hub_retry_initial_ms: u64,
    /// `hub_retry_max_seconds` / `STARGAZER_YOUTUBE__HUB_RETRY_MAX_SECONDS`: cap of that delay,
    /// seconds. Default 600.
    pub hub_retry_max_seconds: u64,
    /// `unsubscribe_attempts` / `STARGAZER_YOUTUBE__UNSUBSCRIBE_ATTEMPTS`: attempts to
    /// unsubscribe when a channel is unassigned before leaving the lease to expire. Default 5.
    pub unsubscribe_attempts: u32,
    /// `poll_interval_seconds` / `STARGAZER_YOUTUBE__POLL_INTERVAL_SECONDS`: fallback feed poll
    /// interval per channel, seconds; 0 disables polling. Default 900.
    pub poll_interval_seconds: u64,
    /// `catch_up_after_seconds` / `STARGAZER_YOUTUBE__CATCH_UP_AFTER_SECONDS`: a channel not
    /// heard from (no accepted push, no successful feed poll) for longer than this when its
    /// task starts is polled at once, even with polling off: a hub redelivers an
    /// unacknowledged push only for a while, so a longer outage may have lost some.
    /// Default 600.
    pub catch_up_after_seconds: u64,
    /// `poll_concurrency` / `STARGAZER_YOUTUBE__POLL_CONCURRENCY`: feed requests in flight at
    /// once. Default 8.
    pub poll_concurrency: usize,
    /// `batch_window_ms` / `STARGAZER_YOUTUBE__BATCH_WINDOW_MS`: how long videos to classify
    /// are collected before one `videos.list` call under load, milliseconds. Default 2000.
    pub batch_window_ms: u64,
    /// `batch_idle_instant` / `STARGAZER_YOUTUBE__BATCH_IDLE_INSTANT`: the first video after
    /// a quiet `batch_window_ms` is classified at once (one call for one id) instead of
    /// waiting out the window; videos arriving while a call is in flight, or within a
    /// window of the previous one, are batched as before. `false` always waits the window.
    /// Default true.
    pub batch_idle_instant: bool,
    /// `daily_quota_units` / `STARGAZER_YOUTUBE__DAILY_QUOTA_UNITS`: the Data API project's
    /// daily quota, units (`videos.list` costs one). Every worker on the storage counts what
    /// it spends per Pacific day, when Google resets quotas; 0 turns the accounting off.
    /// Default 10000.
    pub daily_quota_units: u64,
    /// `quota_reserve_units` / `STARGAZER_YOUTUBE__QUOTA_RESERVE_UNITS`: with at most this
    /// many units left today, batches widen (five windows, no instant classification); with
    /// none left, no call is made and new uploads are announced from the feed's own data
    /// until the quota resets. Default 500.
    pub quota_reserve_units: u64,
    /// `batch_max` / `STARGAZER_YOUTUBE__BATCH_MAX`: videos per `videos.list` call (the API
    /// accepts at most 50). Default 50.
    pub batch_max: usize,
    /// `api_retry_initial_ms` / `STARGAZER_YOUTUBE__API_RETRY_INITIAL_MS`: first delay after a
    /// Data API server or network error, milliseconds (doubles each failure). Default 1000.
    pub api_retry_initial_ms: u64,
    /// `quota_retry_initial_seconds` / `STARGAZER_YOUTUBE__QUOTA_RETRY_INITIAL_SECONDS`: first
    /// delay after a quota error (403 `quotaExceeded`, 429), seconds (doubles each time).
    /// Default 60.
    pub quota_retry_initial_seconds: u64,
    /// `api_retry_max_seconds` / `STARGAZER_YOUTUBE__API_RETRY_MAX_SECONDS`: cap of the backoff
    /// after Data API errors (quota exhaustion included), seconds. Default 3600.
    pub api_retry_max_seconds: u64,
    /// `seen_window_days` / `STARGAZER_YOUTUBE__SEEN_WINDOW_DAYS`: how long published events
    /// and per-video state are remembered for deduplication, days. Default 30.
    pub seen_window_days: u64,
    /// `max_video_age_hours` / `STARGAZER_YOUTUBE__MAX_VIDEO_AGE_HOURS`: uploads published
    /// longer ago than this are recorded but not announced (edits of old videos re-push them),
    /// hours. Default 48.
    pub max_video_age_hours: u64,
    /// `reminder_lead_seconds` / `STARGAZER_YOUTUBE__REMINDER_LEAD_SECONDS`: the default
    /// reminder lead, the one chats that chose no lead receive, seconds before a scheduled
    /// start. Default 1800.
    pub reminder_lead_seconds: u64,
    /// `reminder_leads_seconds` / `STARGAZER_YOUTUBE__REMINDER_LEADS_SECONDS`: the reminder
    /// leads offered to chats, seconds before a scheduled start; one delayed reminder is
    /// published per lead (and `reminder_lead_seconds` always among them). Default
    /// `[300, 900, 1800, 3600]`, the choices of the bot and the web page.
    pub reminder_leads_seconds: Vec<u64>,
    /// `stale_upcoming_hours` / `STARGAZER_YOUTUBE__STALE_UPCOMING_HOURS`: an upcoming stream
    /// whose scheduled start passed longer ago than this is treated as abandoned and not
    /// announced, hours. Default 24.
    pub stale_upcoming_hours: u64,
    /// `max_body_bytes` / `STARGAZER_YOUTUBE__MAX_BODY_BYTES`: largest notification body
    /// accepted, bytes. Default 1048576.
    pub max_body_bytes: usize,
    /// `http_timeout_seconds` / `STARGAZER_YOUTUBE__HTTP_TIMEOUT_SECONDS`: timeout of each
    /// outgoing HTTP request, seconds. Default 30.
    pub http_timeout_seconds: u64,
}

impl Default for YoutubeConfig {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            data_api_base: "https://www.googleapis.com".into(),
            hub_url: "https://pubsubhubbub.appspot.com/subscribe".into(),
            topic_base: "https://www.youtube.com/xml/feeds/videos.xml".into(),
            feed_base: "https://www.youtube.com".into(),
            public_url: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            lease_seconds: 432_000,
            renew_margin_seconds: 86_400,
            verify_timeout_seconds: 300,
            hub_concurrency: 8,
            hub_retry_initial_ms: 1000,
            hub_retry_max_seconds: 600,
            unsubscribe_attempts: 5,
            poll_interval_seconds: 900,
            catch_up_after_seconds: 600,
            poll_concurrency: 8,
            batch_window_ms: 2000,
            batch_idle_instant: true,
            daily_quota_units: 10_000,
            quota_reserve_units: 500,
            batch_max: 50,
            api_retry_initial_ms: 1000,
            quota_retry_initial_seconds: 60,
            api_retry_max_seconds: 3600,
            seen_window_days: 30,
            max_video_age_hours: 48,
            reminder_lead_seconds: 1800,
            reminder_leads_seconds: stargazer_core::contract::REMINDER_LEAD_CHOICES_MINUTES
                .iter()
                .map(|&minutes| u64::from(minutes) * 60)
                .collect(),
            stale_upcoming_hours: 24,
            max_body_bytes: 1 << 20,
            http_timeout_seconds: 30,
        }
    }
}

impl Section for YoutubeConfig {
    const NAME: &'static str = "youtube";

    fn check(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, reason: &str| Err(ConfigError::invalid(format!("youtube.{key}"), reason));
        for (key, value) in [
            ("youtube.data_api_base", &self.data_api_base),
            ("youtube.hub_url", &self.hub_url),
            ("youtube.topic_base", &self.topic_base),
            ("youtube.feed_base", &self.feed_base),
        ] {
            check_http_url(key, value)?;
        }
        if !self.public_url.is_empty() {
            check_http_url("youtube.public_url", &self.public_url)?;
        }
        if self.daily_quota_units > 0 && self.quota_reserve_units >= self.daily_quota_units {
            return bad(
                "quota_reserve_units",
                "must be below daily_quota_units (or daily_quota_units = 0)",
            );
        }
        if self.batch_max == 0 || self.batch_max > 50 {
            return bad("batch_max", "must be between 1 and 50 (the Data API limit)");
        }
        if !(60..=crate::store::MAX_LEASE_SECONDS).contains(&self.lease_seconds) {
            return bad("lease_seconds", "must be between 60 and 864000 (10 days)");
        }
        if self.reminder_leads_seconds.len() > 8 {
            return bad(
                "reminder_leads_seconds",
                "at most 8 leads (each is one delayed message per stream)",
            );
        }
        if self.hub_concurrency == 0 {
            return bad("hub_concurrency", "must be at least 1");
        }
        if self.poll_concurrency == 0 {
            return bad("poll_concurrency", "must be at least 1");
        }
        if self.seen_window_days * 24 <= self.max_video_age_hours {
            return bad(
                "seen_window_days",
                "must be longer than max_video_age_hours, or old re-pushes could be announced",
            );
        }
        Ok(())
    }
}

impl YoutubeConfig {
    /// Whether WebSub is enabled (a public callback URL is configured).
    pub fn websub_enabled(&self) -> bool {
        !self.public_url.is_empty()
    }

    /// The WebSub topic of a channel.
    pub fn topic(&self, channel_id: &str) -> String {
        format!("{}?channel_id={channel_id}", self.topic_base)
    }

    /// The callback URL of a subscription.
    pub fn callback(&self, subscription: uuid::Uuid) -> String {
        format!(
            "{}/websub/{subscription}",
            self.public_url.trim_end_matches('/')
        )
    }

    /// The public feed URL of a channel.
    pub fn feed_url(&self, channel_id: &str) -> String {
        format!(
            "{}/feeds/videos.xml?channel_id={channel_id}",
            self.feed_base.trim_end_matches('/')
        )
    }

    pub(crate) fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds.max(1))
    }

    pub(crate) fn catch_up_after(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.catch_up_after_seconds.min(i64::MAX as u64) as i64)
    }

    pub(crate) fn seen_window(&self) -> chrono::Duration {
        chrono::Duration::days(self.seen_window_days as i64)
    }
}
