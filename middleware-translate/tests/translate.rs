//! middleware-translate against the DeepL test server of `stargazer-testkit`, on
//! RabbitMQ and the in-process bus: result shape, batching (≤ 50 texts a call) and
//! deduplication across events, 429 with `Retry-After`, 5xx, 456 (quota) and lasting
//! failures.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stargazer_core::bus::Bus;
use stargazer_core::model::Event;
use stargazer_core::service::Service;
use stargazer_middleware_translate::{TranslateConfig, TranslateService, TRANSLATE_ERROR};
use stargazer_testkit::backends::{
    event, service_context, BusKind, Env, RunningService, StoreKind,
};
use stargazer_testkit::bus_matrix;
use stargazer_testkit::servers::deepl::{Deepl, Failure};
use uuid::Uuid;

const KEY: &str = "test-key:fx";

async fn start_deepl() -> (Deepl, String) {
    let deepl = Deepl::start(KEY).await.unwrap();
    let url = deepl.base.clone();
    (deepl, url)
}

struct Running {
    service: RunningService,
}

impl Running {
    fn start(config: TranslateConfig, bus: Arc<dyn Bus>) -> Self {
        let service = Box::new(TranslateService::new(config));
        Self {
            service: RunningService::start(service, None, Some(bus)),
        }
    }

    fn counter(&self, name: &str, label: &str) -> u64 {
        self.service
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| m.get_label().iter().any(|l| l.value() == label))
            .map(|m| m.get_counter().value() as u64)
            .sum()
    }

    async fn stop(self) {
        self.service.stop().await;
    }
}

fn config(queue: &str, url: &str) -> TranslateConfig {
    TranslateConfig {
        queue: queue.to_owned(),
        deepl_base_url: url.to_owned(),
        deepl_key: KEY.to_owned(),
        batch_window_ms: 100,
        backoff_initial_ms: 50,
        backoff_max_ms: 200,
        retry_delay_ms: 100,
        ..TranslateConfig::default()
    }
}

fn tweet(text: &str, control: Value) -> Event {
    let mut e = event("twitter.tweet", control);
    e.fields.insert("text".into(), json!(text));
    e
}

async fn publish_all(bus: &Arc<dyn Bus>, events: &[Event]) {
    for e in events {
        bus.publish("twitter.translate", &e.to_bytes())
            .await
            .unwrap();
    }
}

fn ids(events: &[Event]) -> HashSet<Uuid> {
    events.iter().map(|e| e.id).collect()
}

async fn translates_fields_into_each_target_language(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let (deepl, url) = start_deepl().await;
    let queue = env.middleware_queue("translate").await;
    let mut ready = env.ready().await;
    let running = Running::start(config(&queue, &url), env.bus.clone());

    let mut e = tweet(
        "配信するよ",
        json!({"x-translate-fields": ["/fields/text", "/fields/quote/text"], "x-translate-to": ["en", "zh"]}),
    );
    e.fields.insert("quote".into(), json!({"text": "おはよう"}));
    let english = tweet(
        "Streaming tonight",
        json!({"x-translate-fields": ["/fields/text"]}),
    );
    let events = vec![e.clone(), english.clone()];
    publish_all(&env.bus, &events).await;
    let got = ready
        .collect_n(&ids(&events), 2, Duration::from_secs(20))
        .await;
    assert_eq!(got.len(), 2);
    let first = got.iter().find(|r| r.event.id == e.id).unwrap();
    assert_eq!(first.routing_key, "twitter");
    assert_eq!(
        first.event.fields["translations"],
        json!({
            "en": {"/fields/text": "[EN-US] 配信するよ", "/fields/quote/text": "[EN-US] おはよう"},
            "zh": {"/fields/text": "[ZH] 配信するよ", "/fields/quote/text": "[ZH] おはよう"}
        })
    );
    assert!(
        first.event.control.is_empty(),
        "control fields removed: {:?}",
        first.event.control
    );
    // Default target (en) from config; a text already in English gets no translation.
    let second = got.iter().find(|r| r.event.id == english.id).unwrap();
    assert!(
        second.event.fields.get("translations").is_none(),
        "{:?}",
        second.event.fields
    );
    assert!(second.event.control.get(TRANSLATE_ERROR).is_none());
    assert_eq!(deepl.refused(), 0, "every call authenticated");
    assert!(deepl.requests().iter().all(|c| c.texts.len() <= 50));
    running.stop().await;
    env.close().await;
}
bus_matrix!(translates_fields_into_each_target_language);

/// 150 events at once: 120 distinct texts and 30 copies of one text. Calls carry at most
/// 50 texts, the repeated text is sent once, and texts of different events share calls.
async fn batches_and_translates_identical_texts_once(bus_kind: BusKind, store: StoreKind) {
    let mut env = Env::new(bus_kind, store).await;
    let (deepl, url) = start_deepl().await;
    let queue = env.middleware_queue("translate").await;
    let mut ready = env.ready().await;
    let mut events = Vec::new();
    for i in 0..120 {
        events.push(tweet(
            &format!("ツイート {i}"),
            json!({"x-translate-fields": ["/fields/text"]}),
        ));
    }
    for _ in 0..30 {
        events.push(tweet(
            "同じ文",
            json!({"x-translate-fields": ["/fields/text"]}),
        ));
    }
    // Published before the middleware starts, so they are all waiting at once.
    publish_all(&env.bus, &events).await;
    let running = Running::start(
        TranslateConfig {
            concurrency: 200,
            prefetch: 200,
            ..config(&queue, &url)
        },
        env.bus.clone(),
    );
    let got = ready
        .collect_n(&ids(&events), events.len(), Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), events.len());
    for r in &got {
        let text = r.event.fields["text"].as_str().unwrap();
        assert_eq!(
            r.event.fields["translations"]["en"]["/fields/text"],
            json!(format!("[EN-US] {text}"))
        );
    }
    let calls = deepl.requests();
    assert!(
        calls.iter().all(|c| c.texts.len() <= 50),
        "sizes {:?}",
        calls.iter().map(|c| c.texts.len()).collect::<Vec<_>>()
    );
    let sent: Vec<&String> = calls.iter().flat_map(|c| c.texts.iter()).collect();
    assert_eq!(
        sent.iter().filter(|t| t.as_str() == "同じ文").count(),
        1,
        "identical text translated once"
    );
    assert_eq!(sent.len(), 121, "every distinct text sent exactly once");
    assert!(
        calls.len() < 20,
        "texts of concurrent events share calls: {} calls",
        calls.len()
    );

    // Later events with a known text are served from the cache.
    let again = vec![tweet(
        "同じ文",
        json!({"x-translate-fields": ["/fields/text"]}),
    )];
    publish_all(&env.bus, &again).await;
    assert_eq!(
        ready
            .collect_n(&ids(&again), 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    assert_eq!(
        deepl.requests().len(),
        calls.len(),
        "no call for a cached text"
    );
    assert!(running.counter("stargazer_translate_texts_total", "cached") >= 1);
    running.stop().await;
    env.close().await;
}
bus_matrix!(batches_and_translates_identical_texts_once);

/// 429 with `Retry-After: 1`, then 503, then success: the event is translated, and the
/// second attempt waited at least the second the server asked for.
#[tokio::test]
async fn retries_rate_limits_and_server_errors() {
    let mut env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let (deepl, url) = start_deepl().await;
    deepl.fail_next(&[
        Failure::TooManyRequests {
            retry_after: Some(1),
        },
        Failure::Unavailable,
    ]);
    let queue = env.middleware_queue("translate").await;
    let mut ready = env.ready().await;
    let running = Running::start(config(&queue, &url), env.bus.clone());
    let events = vec![tweet(
        "こんにちは",
        json!({"x-translate-fields": ["/fields/text"]}),
    )];
    publish_all(&env.bus, &events).await;
    let got = ready
        .collect_n(&ids(&events), 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        got[0].event.fields["translations"]["en"]["/fields/text"],
        json!("[EN-US] こんにちは")
    );
    assert!(got[0].event.control.get(TRANSLATE_ERROR).is_none());
    let calls = deepl.requests();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 503, 200]
    );
    assert!(
        calls[1].at.duration_since(calls[0].at) >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    running.stop().await;
}

/// 456: the event goes on untranslated with `x-translate-error`, and no call is made for
/// the next event while the quota pause lasts.
#[tokio::test]
async fn quota_exceeded_pauses_calls_and_events_pass_untranslated() {
    let mut env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let (deepl, url) = start_deepl().await;
    deepl.fail_next(&[Failure::QuotaExceeded]);
    let queue = env.middleware_queue("translate").await;
    let mut ready = env.ready().await;
    let running = Running::start(config(&queue, &url), env.bus.clone());
    let first = vec![tweet(
        "一つ目",
        json!({"x-translate-fields": ["/fields/text"]}),
    )];
    publish_all(&env.bus, &first).await;
    let got = ready
        .collect_n(&ids(&first), 1, Duration::from_secs(20))
        .await;
    let error = got[0].event.control[TRANSLATE_ERROR]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("quota exceeded"), "{error}");
    assert!(got[0].event.fields.get("translations").is_none());

    let second = vec![tweet(
        "二つ目",
        json!({"x-translate-fields": ["/fields/text"]}),
    )];
    publish_all(&env.bus, &second).await;
    let got = ready
        .collect_n(&ids(&second), 1, Duration::from_secs(20))
        .await;
    assert!(got[0].event.control[TRANSLATE_ERROR]
        .as_str()
        .unwrap()
        .contains("paused until"));
    assert_eq!(deepl.requests().len(), 1, "no DeepL call while paused");
    assert_eq!(
        running.counter("stargazer_translate_api_calls_total", "skipped_quota"),
        1
    );
    running.stop().await;
}

/// DeepL keeps failing: after the configured attempts the event goes on untranslated
/// with the reason; a pointer to nothing is reported beside a translated field.
#[tokio::test]
async fn lasting_failure_and_bad_pointers_are_reported_not_fatal() {
    let mut env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let (deepl, url) = start_deepl().await;
    let queue = env.middleware_queue("translate").await;
    let mut ready = env.ready().await;
    let running = Running::start(
        TranslateConfig {
            max_attempts: 3,
            ..config(&queue, &url)
        },
        env.bus.clone(),
    );
    let partly = vec![tweet(
        "テスト",
        json!({"x-translate-fields": ["/fields/text", "/fields/nope", "/fields/title/x"]}),
    )];
    publish_all(&env.bus, &partly).await;
    let got = ready
        .collect_n(&ids(&partly), 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        got[0].event.fields["translations"]["en"]["/fields/text"],
        json!("[EN-US] テスト")
    );
    let error = got[0].event.control[TRANSLATE_ERROR].as_str().unwrap();
    assert!(error.contains("/fields/nope: no such field"), "{error}");

    deepl.fail_always(Some(Failure::Unavailable));
    let failing = vec![tweet(
        "失敗",
        json!({"x-translate-fields": "/fields/text", "x-translate-to": "ja"}),
    )];
    publish_all(&env.bus, &failing).await;
    let got = ready
        .collect_n(&ids(&failing), 1, Duration::from_secs(20))
        .await;
    let error = got[0].event.control[TRANSLATE_ERROR].as_str().unwrap();
    assert!(
        error.contains("server error (503) after 3 attempt(s)"),
        "{error}"
    );
    assert!(got[0].event.fields.get("translations").is_none());
    assert_eq!(
        got[0].event.fields["text"],
        json!("失敗"),
        "original text untouched"
    );
    assert_eq!(
        deepl.requests().iter().filter(|c| c.status == 503).count(),
        3
    );
    assert!(deepl.requests().iter().any(|c| c.target == "JA"));
    running.stop().await;
}

/// A missing key is a configuration error naming the key, before anything runs.
#[tokio::test]
async fn missing_key_is_a_config_error() {
    let env = Env::new(BusKind::Memory, StoreKind::Sqlite).await;
    let service = Box::new(TranslateService::new(TranslateConfig::default()));
    let cx = service_context(
        &*service,
        None,
        Some(env.bus.clone()),
        vec![],
        Default::default(),
    );
    let err = service.run(cx).await.unwrap_err().to_string();
    assert!(err.contains("translate.deepl_key"), "{err}");
}
