//! The translate stage when no DeepL key is configured (standalone without an account):
//! events tagged `translate` still move on, untranslated, with `x-translate-error` saying
//! why, instead of waiting forever in a queue nobody consumes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus::Registry;
use serde_json::Value;
use stargazer_core::bus::Bus;
use stargazer_core::middleware::{
    self, Incoming, Middleware, Outcome, RuntimeMetrics, RuntimeOptions,
};
use stargazer_core::CancellationToken;

use crate::{Error, TranslateConfig, TAG, TRANSLATE_ERROR, TRANSLATE_FIELDS, TRANSLATE_TO};

/// Forwards every event untranslated, noting `reason` in `x-translate-error`.
pub(crate) struct PassThrough {
    reason: String,
}

impl PassThrough {
    /// A pass-through stage that explains itself with `reason`.
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

#[async_trait]
impl Middleware for PassThrough {
    async fn handle(&self, message: Incoming) -> Outcome {
        let mut event = message.event;
        event.take_control(TRANSLATE_FIELDS);
        event.take_control(TRANSLATE_TO);
        event.control.insert(
            TRANSLATE_ERROR.to_owned(),
            Value::String(self.reason.clone()),
        );
        Outcome::Forward(event)
    }
}

/// Runs the pass-through stage on the translate queue until `shutdown`.
pub async fn run_untranslated(
    config: TranslateConfig,
    bus: Arc<dyn Bus>,
    registry: &Registry,
    reason: &str,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    tracing::warn!(
        reason,
        "translation disabled: events tagged translate pass on untranslated"
    );
    let options = RuntimeOptions {
        queue: config.queue.clone(),
        prefetch: config.prefetch,
        concurrency: config.concurrency,
        retry_delay: Duration::from_millis(config.retry_delay_ms),
        ..RuntimeOptions::new(TAG)
    };
    middleware::run(
        Arc::new(PassThrough::new(reason)),
        bus,
        options,
        RuntimeMetrics::register(TAG, registry),
        shutdown,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stargazer_core::model::Event;

    #[tokio::test]
    async fn events_pass_untranslated_with_the_reason() {
        let mut event = Event {
            id: uuid::Uuid::new_v4(),
            kind: "twitter.tweet".into(),
            entity: uuid::Uuid::new_v4(),
            time: chrono::Utc::now(),
            fields: serde_json::from_value(serde_json::json!({"text": "こんにちは"})).unwrap(),
            control: Default::default(),
        };
        event
            .control
            .insert(TRANSLATE_FIELDS.into(), serde_json::json!(["/fields/text"]));
        event
            .control
            .insert(TRANSLATE_TO.into(), serde_json::json!(["en"]));
        let outcome = PassThrough::new("no key")
            .handle(Incoming {
                event,
                rest_key: "twitter".into(),
                redelivered: false,
            })
            .await;
        let Outcome::Forward(event) = outcome else {
            panic!("expected Forward");
        };
        assert_eq!(event.control.len(), 1);
        assert_eq!(event.control[TRANSLATE_ERROR], "no key");
        assert_eq!(event.fields["text"], "こんにちは");
    }
}
