//! Stargazer middleware-translate: translates the texts of events tagged `translate`
//! with the DeepL API v2 (docs/ARCHITECTURE.md §4, §5).
//!
//! - `deepl`: one API call and its failure classes.
//! - `batcher`: groups texts of concurrent events into calls of ≤ 50 texts, retries,
//!   and the quota pause after a 456.
//! - `cache`: the bounded LRU that makes identical texts cost one translation.
//! - `translator`: the control fields and where results land in the event.
//!
//! Control fields: `x-translate-fields` (JSON pointers into the event, e.g.
//! `["/fields/text"]`) and `x-translate-to` (language codes; else
//! [`TranslateConfig::default_targets`]); both are removed. Results go to
//! `fields.translations.<lang>.<pointer>` (see `translator` for the exact shape). The
//! event always goes on: when DeepL fails for good (retries exhausted, quota exceeded,
//! request rejected) it carries `x-translate-error` with the reason instead.

mod batcher;
mod cache;
mod deepl;
mod passthrough;
mod translator;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use serde::{Deserialize, Serialize};
use stargazer_core::bus::Bus;
use stargazer_core::config::{check_http_url, ConfigError, Section};
use stargazer_core::middleware::{self, MiddlewareError, RuntimeMetrics, RuntimeOptions};
use stargazer_core::routing;
use stargazer_core::CancellationToken;
use tokio::sync::mpsc;

pub use batcher::TranslateMetrics;
pub use passthrough::run_untranslated;
pub use translator::{Translator, TRANSLATE_ERROR, TRANSLATE_FIELDS, TRANSLATE_TO};

use crate::batcher::{Batcher, Policy};
use crate::cache::Lru;
use crate::deepl::DeeplClient;
use stargazer_core::service::{Needs, Service, ServiceContext, ServiceError};

/// The tag this middleware pops.
pub use stargazer_core::contract::tag::TRANSLATE as TAG;

/// Configuration section `[translate]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslateConfig {
    /// `translate.queue` / `STARGAZER_TRANSLATE__QUEUE`: queue consumed, bound to
    /// `#.translate`; default `stargazer.middleware.translate`.
    pub queue: String,
    /// `translate.prefetch` / `STARGAZER_TRANSLATE__PREFETCH`: unacknowledged deliveries
    /// held; default 64.
    pub prefetch: u16,
    /// `translate.concurrency` / `STARGAZER_TRANSLATE__CONCURRENCY`: events translated at
    /// once (their texts share DeepL calls); default 32.
    pub concurrency: usize,
    /// `translate.deepl_base_url` / `STARGAZER_TRANSLATE__DEEPL_BASE_URL`: DeepL API base;
    /// default `https://api-free.deepl.com` (paid plans: `https://api.deepl.com`).
    pub deepl_base_url: String,
    /// `translate.deepl_key` / `STARGAZER_DEEPL_KEY`: DeepL authentication key; required.
    pub deepl_key: String,
    /// `translate.default_targets` / `STARGAZER_TRANSLATE__DEFAULT_TARGETS`: languages used
    /// when an event has no `x-translate-to`; default `["en"]`.
    pub default_targets: Vec<String>,
    /// `translate.batch_window_ms` / `STARGAZER_TRANSLATE__BATCH_WINDOW_MS`: how long texts
    /// are gathered before a call, milliseconds; default 20.
    pub batch_window_ms: u64,
    /// `translate.call_concurrency` / `STARGAZER_TRANSLATE__CALL_CONCURRENCY`: DeepL calls
    /// in flight at once; default 4.
    pub call_concurrency: usize,
    /// `translate.max_attempts` / `STARGAZER_TRANSLATE__MAX_ATTEMPTS`: tries per call on
    /// 429, 5xx and network errors; default 4.
    pub max_attempts: u32,
    /// `translate.backoff_initial_ms` / `STARGAZER_TRANSLATE__BACKOFF_INITIAL_MS`: first
    /// retry pause when the server gives no `Retry-After`, milliseconds; default 500.
    pub backoff_initial_ms: u64,
    /// `translate.backoff_max_ms` / `STARGAZER_TRANSLATE__BACKOFF_MAX_MS`: longest retry
    /// pause, milliseconds; default 30000.
    pub backoff_max_ms: u64,
    /// `translate.max_retry_wait_ms` / `STARGAZER_TRANSLATE__MAX_RETRY_WAIT_MS`: a
    /// `Retry-After` longer than this fails the call instead of holding the event,
    /// milliseconds; default 60000.
    pub max_retry_wait_ms: u64,
    /// `translate.quota_pause_secs` / `STARGAZER_TRANSLATE__QUOTA_PAUSE_SECS`: after a 456
    /// (quota exceeded) no call is made for this long and events pass on untranslated,
    /// seconds; default 3600.
    pub quota_pause_secs: u64,
    /// `translate.cache_entries` / `STARGAZER_TRANSLATE__CACHE_ENTRIES`: translations kept
    /// (per text and language); default 10000.
    pub cache_entries: usize,
    /// `translate.request_timeout_ms` / `STARGAZER_TRANSLATE__REQUEST_TIMEOUT_MS`: timeout
    /// of one DeepL request, milliseconds; default 15000.
    pub request_timeout_ms: u64,
    /// `translate.retry_delay_ms` / `STARGAZER_TRANSLATE__RETRY_DELAY_MS`: pause before an
    /// event interrupted by shutdown is requeued, milliseconds; default 1000.
    pub retry_delay_ms: u64,
    /// `translate.delivery_attempts` / `STARGAZER_TRANSLATE__DELIVERY_ATTEMPTS`: attempts (a
    /// failure to process or a panic each) after which a message is dead-lettered instead
    /// of requeued; default 5.
    pub delivery_attempts: u32,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        Self {
            queue: routing::middleware_queue(TAG),
            prefetch: 64,
            concurrency: 32,
            deepl_base_url: "https://api-free.deepl.com".to_owned(),
            deepl_key: String::new(),
            default_targets: vec!["en".to_owned()],
            batch_window_ms: 20,
            call_concurrency: 4,
            max_attempts: 4,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            max_retry_wait_ms: 60_000,
            quota_pause_secs: 3600,
            cache_entries: 10_000,
            request_timeout_ms: 15_000,
            retry_delay_ms: 1000,
            delivery_attempts: middleware::DEFAULT_DELIVERY_ATTEMPTS,
        }
    }
}

impl TranslateConfig {
    /// Checks that the DeepL key is set and every other value ([`Section::check`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.deepl_key.trim().is_empty() {
            return Err(ConfigError::invalid(
                "translate.deepl_key",
                "must be set (STARGAZER_DEEPL_KEY)",
            ));
        }
        self.check()
    }
}

impl Section for TranslateConfig {
    const NAME: &'static str = "translate";

    fn check(&self) -> Result<(), ConfigError> {
        check_http_url("translate.deepl_base_url", &self.deepl_base_url)?;
        if self.queue.trim().is_empty() {
            return Err(ConfigError::invalid("translate.queue", "must not be empty"));
        }
        for (key, value) in [
            ("translate.prefetch", u64::from(self.prefetch)),
            ("translate.concurrency", self.concurrency as u64),
            ("translate.call_concurrency", self.call_concurrency as u64),
            ("translate.max_attempts", u64::from(self.max_attempts)),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

impl TranslateConfig {
    fn policy(&self) -> Policy {
        Policy {
            batch_window: Duration::from_millis(self.batch_window_ms),
            call_concurrency: self.call_concurrency,
            max_attempts: self.max_attempts,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            max_retry_wait: Duration::from_millis(self.max_retry_wait_ms),
            quota_pause: Duration::from_secs(self.quota_pause_secs),
        }
    }
}

/// Errors of the middleware-translate service.
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

/// Translates until `shutdown` is cancelled, registering its metrics in `registry`.
/// Returns once consuming stopped and the events in flight were settled. It needs no
/// storage: translations are cached in memory.
async fn translate(
    config: TranslateConfig,
    bus: Arc<dyn Bus>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let client = DeeplClient::new(
        &config.deepl_base_url,
        &config.deepl_key,
        Duration::from_millis(config.request_timeout_ms),
    )?;
    let metrics = TranslateMetrics::register(registry);
    let cache = Arc::new(Mutex::new(Lru::new(config.cache_entries)));
    let batcher = Arc::new(Batcher {
        client,
        cache: cache.clone(),
        policy: config.policy(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        paused_until: Mutex::new(None),
        in_flight: Mutex::new(Default::default()),
    });
    let (jobs, queue) = mpsc::channel(1024);
    let batching = tokio::spawn(batcher.run(queue));
    let translator = Arc::new(Translator {
        jobs,
        cache,
        default_targets: config.default_targets.clone(),
        metrics,
    });
    let options = RuntimeOptions {
        queue: config.queue.clone(),
        prefetch: config.prefetch,
        concurrency: config.concurrency,
        retry_delay: Duration::from_millis(config.retry_delay_ms),
        delivery_attempts: config.delivery_attempts,
        ..RuntimeOptions::new(TAG)
    };
    let result = middleware::run(
        translator,
        bus,
        options,
        RuntimeMetrics::register(TAG, registry),
        shutdown,
    )
    .await;
    // The runtime dropped the translator, closing the job channel: the batcher finishes
    // its calls in flight and returns.
    if let Err(err) = batching.await {
        tracing::error!(cause = %err, "translate batcher failed");
    }
    Ok(result?)
}

/// The translate middleware as a platform service: DeepL when its key is set, otherwise
/// (standalone only) a pass-through stage that forwards events untranslated.
pub struct TranslateService {
    config: TranslateConfig,
    /// Why translation is off, for the pass-through stage.
    disabled: Option<String>,
}

impl TranslateService {
    /// Translates with DeepL; the config must hold a key ([`TranslateConfig::validate`]).
    pub fn new(config: TranslateConfig) -> Self {
        Self {
            config,
            disabled: None,
        }
    }

    /// Passes events on untranslated, marked with `x-translate-error: {reason}`.
    pub fn untranslated(config: TranslateConfig, reason: impl Into<String>) -> Self {
        Self {
            config,
            disabled: Some(reason.into()),
        }
    }
}

#[async_trait::async_trait]
impl Service for TranslateService {
    fn name(&self) -> &'static str {
        "middleware-translate"
    }

    fn needs(&self) -> Needs {
        Needs {
            storage: Vec::new(),
            bus: true,
            ..Needs::default()
        }
    }

    fn describe(&self) -> String {
        match &self.disabled {
            None => format!(
                "queue {}: DeepL at {}",
                self.config.queue,
                stargazer_core::config::redact_url(&self.config.deepl_base_url)
            ),
            Some(why) => format!("pass-through, events go on untranslated: {why}"),
        }
    }

    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        let bus = cx.bus()?;
        match self.disabled {
            None => translate(self.config, bus, &cx.registry, cx.shutdown).await?,
            Some(why) => {
                let reason = format!("translation disabled: {why}");
                run_untranslated(self.config, bus, &cx.registry, &reason, cx.shutdown).await?
            }
        }
        Ok(())
    }
}
