//! Stargazer middleware-live-check: holds `youtube.live` events tagged `live_check`
//! until the YouTube Data API shows the broadcast started (docs/ARCHITECTURE.md §4, §5).
//!
//! - `youtube`: the `videos.list?part=liveStreamingDetails` call (≤ 50 ids each).
//! - `checker`: holding (persisted in the key/value namespace before the ack), the
//!   polling loop and the verdict table (forward when `actualStartTime` shows; drop with a
//!   log line and a metric when the video is gone, ended, no broadcast, or not live within
//!   the bound).
//! - `claims`: N instances share the held videos: fixed shards by a hash of the video id,
//!   each polled by the one instance holding its lease, a fair share each.
//!
//! The control field `x-live-check-video` (the video id) is removed before forwarding.
//! Quota and server errors leave every event held and back the polling off. Any number
//! of instances may share one storage and one queue.

mod claims;

mod checker;
mod youtube;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stargazer_core::config::{check_http_url, ConfigError, Section};
use stargazer_core::middleware::{self, MiddlewareError, RuntimeMetrics, RuntimeOptions};
use stargazer_core::quota::QuotaMeter;
use stargazer_core::routing;
use stargazer_core::storage::StateStore;

pub use checker::{Checker, Held, LiveCheckMetrics, PollOptions, LIVE_CHECK_VIDEO};
pub use claims::{shard_lease_name, shard_of, ClaimOptions};
use stargazer_core::service::{Capability, Needs, Service, ServiceContext, ServiceError};
use youtube::YoutubeClient;

/// The tag this middleware pops.
pub use stargazer_core::contract::tag::LIVE_CHECK as TAG;

/// Configuration section `[live_check]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveCheckConfig {
    /// `live_check.queue` / `STARGAZER_LIVE_CHECK__QUEUE`: queue consumed, bound to
    /// `#.live_check`; default `stargazer.middleware.live_check`.
    pub queue: String,
    /// `live_check.prefetch` / `STARGAZER_LIVE_CHECK__PREFETCH`: unacknowledged deliveries
    /// held; default 64.
    pub prefetch: u16,
    /// `live_check.api_base_url` / `STARGAZER_LIVE_CHECK__API_BASE_URL`: YouTube Data API
    /// base; default `https://www.googleapis.com`.
    pub api_base_url: String,
    /// `live_check.api_key` / `STARGAZER_LIVE_CHECK__API_KEY`: Data API key; required (the
    /// binary may fill it from `youtube.api_key`).
    pub api_key: String,
    /// `live_check.poll_interval_ms` / `STARGAZER_LIVE_CHECK__POLL_INTERVAL_MS`: time
    /// between polls of the held videos in this instance's shards, milliseconds; default
    /// 60000.
    pub poll_interval_ms: u64,
    /// `live_check.give_up_after_ms` / `STARGAZER_LIVE_CHECK__GIVE_UP_AFTER_MS`: how long
    /// past the later of hold time and scheduled start an event waits for "live" before it
    /// is dropped, milliseconds; default 21600000 (6 h).
    pub give_up_after_ms: u64,
    /// `live_check.backoff_initial_ms` / `STARGAZER_LIVE_CHECK__BACKOFF_INITIAL_MS`: pause
    /// after a failed poll (never shorter than the interval), milliseconds; default 60000.
    pub backoff_initial_ms: u64,
    /// `live_check.backoff_max_ms` / `STARGAZER_LIVE_CHECK__BACKOFF_MAX_MS`: longest pause
    /// after failed polls, milliseconds; default 1800000 (30 min).
    pub backoff_max_ms: u64,
    /// `live_check.kv_namespace` / `STARGAZER_LIVE_CHECK__KV_NAMESPACE`: storage namespace
    /// of held events; default `live_check`.
    pub kv_namespace: String,
    /// `live_check.request_timeout_ms` / `STARGAZER_LIVE_CHECK__REQUEST_TIMEOUT_MS`:
    /// timeout of one API request, milliseconds; default 15000.
    pub request_timeout_ms: u64,
    /// `live_check.retry_delay_ms` / `STARGAZER_LIVE_CHECK__RETRY_DELAY_MS`: pause before an
    /// event that could not be stored is requeued, milliseconds; default 1000.
    pub retry_delay_ms: u64,
    /// `live_check.delivery_attempts` / `STARGAZER_LIVE_CHECK__DELIVERY_ATTEMPTS`: attempts (a
    /// failure to process or a panic each) after which a message is dead-lettered instead
    /// of requeued; default 5.
    pub delivery_attempts: u32,
    /// `live_check.daily_quota_units` / `STARGAZER_LIVE_CHECK__DAILY_QUOTA_UNITS`: the Data
    /// API project's daily quota, shared with the YouTube worker's count (set both alike when
    /// they use one key); 0 turns the accounting off. Default 10000.
    pub daily_quota_units: u64,
    /// `live_check.quota_reserve_units` / `STARGAZER_LIVE_CHECK__QUOTA_RESERVE_UNITS`: with
    /// at most this many units left, polls are five times rarer. Default 500.
    pub quota_reserve_units: u64,
    /// `live_check.shards` / `STARGAZER_LIVE_CHECK__SHARDS`: how many shards the held videos
    /// are split into (by a hash of the video id), each polled by the one instance holding
    /// its lease; every instance must use the same value. 1 to 1024; default 16.
    pub shards: u32,
    /// `live_check.lease_term_ms` / `STARGAZER_LIVE_CHECK__LEASE_TERM_MS`: term of a shard
    /// lease, renewed every third of it; a dead instance's shards are taken over within
    /// about 4/3 of it plus a poll interval. Milliseconds, at least 30; default 90000.
    pub lease_term_ms: u64,
    /// `live_check.claims` / `STARGAZER_LIVE_CHECK__CLAIMS`: `false` turns the shard leases
    /// off, so the instance polls every held video; only for a single instance (two would
    /// each poll and release everything). Default true.
    pub claims: bool,
}

impl Default for LiveCheckConfig {
    fn default() -> Self {
        Self {
            queue: routing::middleware_queue(TAG),
            prefetch: 64,
            api_base_url: "https://www.googleapis.com".to_owned(),
            api_key: String::new(),
            poll_interval_ms: 60_000,
            give_up_after_ms: 6 * 3600 * 1000,
            backoff_initial_ms: 60_000,
            backoff_max_ms: 30 * 60 * 1000,
            kv_namespace: "live_check".to_owned(),
            request_timeout_ms: 15_000,
            retry_delay_ms: 1000,
            delivery_attempts: middleware::DEFAULT_DELIVERY_ATTEMPTS,
            daily_quota_units: 10_000,
            quota_reserve_units: 500,
            shards: 16,
            lease_term_ms: 90_000,
            claims: true,
        }
    }
}

impl LiveCheckConfig {
    /// Checks that the Data API key is set and every other value ([`Section::check`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api_key.trim().is_empty() {
            return Err(ConfigError::invalid(
                "live_check.api_key",
                "must be set (or youtube.api_key / STARGAZER_YOUTUBE_API_KEY)",
            ));
        }
        self.check()
    }
}

impl Section for LiveCheckConfig {
    const NAME: &'static str = "live_check";

    fn check(&self) -> Result<(), ConfigError> {
        check_http_url("live_check.api_base_url", &self.api_base_url)?;
        if self.queue.trim().is_empty() {
            return Err(ConfigError::invalid(
                "live_check.queue",
                "must not be empty",
            ));
        }
        if self.kv_namespace.trim().is_empty() {
            return Err(ConfigError::invalid(
                "live_check.kv_namespace",
                "must not be empty",
            ));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::invalid(
                "live_check.prefetch",
                "must be at least 1",
            ));
        }
        if self.daily_quota_units > 0 && self.quota_reserve_units >= self.daily_quota_units {
            return Err(ConfigError::invalid(
                "live_check.quota_reserve_units",
                "must be below daily_quota_units (or daily_quota_units = 0)",
            ));
        }
        if !(1..=1024).contains(&self.shards) {
            return Err(ConfigError::invalid(
                "live_check.shards",
                "must be between 1 and 1024",
            ));
        }
        if self.lease_term_ms < 30 {
            return Err(ConfigError::invalid(
                "live_check.lease_term_ms",
                "must be at least 30",
            ));
        }
        if self.poll_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "live_check.poll_interval_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl LiveCheckConfig {
    fn poll_options(&self, storage: Arc<dyn StateStore>, owner: String) -> PollOptions {
        PollOptions {
            quota: Some(Arc::new(QuotaMeter::new(
                storage,
                self.daily_quota_units,
                self.quota_reserve_units,
                None,
            ))),
            interval: Duration::from_millis(self.poll_interval_ms),
            give_up_after: Duration::from_millis(self.give_up_after_ms),
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            namespace: self.kv_namespace.clone(),
            claims: ClaimOptions {
                enabled: self.claims,
                shards: self.shards,
                term: Duration::from_millis(self.lease_term_ms),
                namespace: self.kv_namespace.clone(),
                owner,
            },
        }
    }
}

/// Errors of the middleware-live-check service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The consuming loop failed.
    #[error(transparent)]
    Middleware(#[from] MiddlewareError),
}

/// The live-check middleware as a platform service.
pub struct LiveCheckService {
    config: LiveCheckConfig,
}

impl LiveCheckService {
    /// The middleware with these settings.
    pub fn new(config: LiveCheckConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Service for LiveCheckService {
    fn name(&self) -> &'static str {
        "middleware-live-check"
    }

    fn needs(&self) -> Needs {
        Needs::storage_and_bus(&[Capability::State])
    }

    fn describe(&self) -> String {
        format!(
            "queue {}: Data API at {}",
            self.config.queue,
            stargazer_core::config::redact_url(&self.config.api_base_url)
        )
    }

    /// Claims shards, polls their held events and consumes `#.live_check` side by side;
    /// releases its shards when stopped.
    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        let (config, storage, bus, registry) =
            (self.config, cx.state_store()?, cx.bus()?, &cx.registry);
        config.validate().map_err(Error::from)?;
        let client = YoutubeClient::new(
            &config.api_base_url,
            &config.api_key,
            Duration::from_millis(config.request_timeout_ms),
        )
        .map_err(Error::from)?;
        // Unique per process, so that a restarted instance is a new member.
        let owner = stargazer_core::Uuid::new_v4().simple().to_string();
        tracing::info!(%owner, shards = config.shards, "live-check instance starting");
        let checker = Checker::new(
            storage.clone(),
            bus.clone(),
            client,
            config.poll_options(storage, owner),
            LiveCheckMetrics::register(registry),
        );
        // A child token so that a failing consumer also stops the polling loop.
        let stop = cx.shutdown.child_token();
        // Dropping this future (an aborted task) also stops the polling loop.
        let _stop_on_drop = stop.clone().drop_guard();
        let claiming = tokio::spawn(checker.clone().claim_loop(stop.clone()));
        let polling = tokio::spawn(checker.clone().poll_loop(stop.clone()));
        let options = RuntimeOptions {
            queue: config.queue.clone(),
            prefetch: config.prefetch,
            retry_delay: Duration::from_millis(config.retry_delay_ms),
            delivery_attempts: config.delivery_attempts,
            ..RuntimeOptions::new(TAG)
        };
        let result = middleware::run(
            checker,
            bus,
            options,
            RuntimeMetrics::register(TAG, registry),
            stop.clone(),
        )
        .await;
        stop.cancel();
        if let Err(err) = polling.await {
            tracing::error!(cause = %err, "live-check polling loop failed");
        }
        // After the polling: the leases are released once nothing polls any more.
        if let Err(err) = claiming.await {
            tracing::error!(cause = %err, "live-check claim loop failed");
        }
        result.map_err(Error::from)?;
        Ok(())
    }
}
