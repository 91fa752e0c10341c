//! The translate middleware proper: reads `x-translate-fields` / `x-translate-to`, asks
//! the batcher for each (pointer, language), and writes the results into the event.
//!
//! Result shape: `fields.translations.<lang>.<pointer> = "<translated text>"`, where
//! `<lang>` is the requested code in lowercase (`en`, `zh`, `en-gb`) and `<pointer>` is the
//! JSON pointer as given (`/fields/text`). Example:
//! `{"fields": {"text": "こんにちは", "translations": {"en": {"/fields/text": "Hello"}}}}`.
//! A text DeepL detects as already being in the target language gets no entry. Anything
//! that could not be translated is described in `x-translate-error` (one string, problems
//! separated by `; `), and the event goes on regardless.

use async_trait::async_trait;
use futures::future::join_all;
use serde_json::Value;
use stargazer_core::middleware::{Incoming, Middleware, Outcome};
use tokio::sync::{mpsc, oneshot};

use crate::batcher::{lock, Job, JobError, SharedCache, TranslateMetrics};
use crate::deepl::Translation;

pub use stargazer_core::contract::control::{TRANSLATE_ERROR, TRANSLATE_FIELDS, TRANSLATE_TO};

/// Implements [`Middleware`] for the `translate` tag.
pub struct Translator {
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) cache: SharedCache,
    pub(crate) default_targets: Vec<String>,
    pub(crate) metrics: TranslateMetrics,
}

/// One text to translate into one language.
struct Wanted {
    /// Result key (`en`).
    lang: String,
    /// DeepL code (`EN-US`).
    deepl: String,
    pointer: String,
    text: String,
}

/// The DeepL target code for a requested language: upper case, with the regional
/// variant DeepL requires for English and Portuguese targets.
pub(crate) fn deepl_target(lang: &str) -> String {
    match lang.to_ascii_uppercase().as_str() {
        "EN" => "EN-US".to_owned(),
        "PT" => "PT-BR".to_owned(),
        other => other.to_owned(),
    }
}

/// Whether `code` looks like a language tag DeepL could know (`en`, `zh-hant`, `PT-BR`).
fn valid_lang(code: &str) -> bool {
    let mut parts = code.split('-');
    let primary = parts.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A control value that is one string or an array of strings.
fn string_list(name: &str, value: Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(one) => Ok(vec![one]),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(format!("{name} must hold strings, got {other}")),
            })
            .collect(),
        other => Err(format!(
            "{name} must be a string or an array of strings, got {other}"
        )),
    }
}

impl Translator {
    async fn translate(&self, deepl: &str, text: &str) -> Result<Translation, JobError> {
        let cached = lock(&self.cache).get(&(deepl.to_owned(), text.to_owned()));
        if let Some(hit) = cached {
            self.metrics.texts.with_label_values(&["cached"]).inc();
            return Ok(hit);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            target: deepl.to_owned(),
            text: text.to_owned(),
            reply,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(JobError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(JobError::ShuttingDown))
    }
}

#[async_trait]
impl Middleware for Translator {
    async fn handle(&self, message: Incoming) -> Outcome {
        let mut event = message.event;
        let fields = event.take_control(TRANSLATE_FIELDS);
        let to = event.take_control(TRANSLATE_TO);
        let mut problems: Vec<String> = Vec::new();
        let pointers = match fields {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => string_list(TRANSLATE_FIELDS, value).unwrap_or_else(|err| {
                problems.push(err);
                Vec::new()
            }),
        };
        let langs = match to {
            None | Some(Value::Null) => self.default_targets.clone(),
            Some(value) => string_list(TRANSLATE_TO, value).unwrap_or_else(|err| {
                problems.push(err);
                Vec::new()
            }),
        };
        let mut targets: Vec<String> = Vec::new();
        for lang in langs {
            let lang = lang.trim().to_ascii_lowercase();
            if !valid_lang(&lang) {
                problems.push(format!("{TRANSLATE_TO}: `{lang}` is not a language code"));
            } else if !targets.contains(&lang) {
                targets.push(lang);
            }
        }

        let document = serde_json::to_value(&event).unwrap_or(Value::Null);
        let mut wanted = Vec::new();
        for pointer in pointers {
            if pointer.starts_with("/fields/translations") {
                problems.push(format!("{pointer}: cannot translate the translations"));
                continue;
            }
            let text = match document.pointer(&pointer) {
                Some(Value::String(text)) => text,
                Some(_) => {
                    problems.push(format!("{pointer}: not a string"));
                    continue;
                }
                None => {
                    problems.push(format!("{pointer}: no such field"));
                    continue;
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            for lang in &targets {
                wanted.push(Wanted {
                    lang: lang.clone(),
                    deepl: deepl_target(lang),
                    pointer: pointer.clone(),
                    text: text.clone(),
                });
            }
        }

        let answers = join_all(wanted.iter().map(|w| self.translate(&w.deepl, &w.text))).await;
        let mut translations = serde_json::Map::new();
        let mut failures: Vec<String> = Vec::new();
        for (w, answer) in wanted.iter().zip(answers) {
            match answer {
                Ok(t) => {
                    let primary = w.lang.split('-').next().unwrap_or(&w.lang);
                    if t.detected_source_language.eq_ignore_ascii_case(primary) {
                        self.metrics
                            .texts
                            .with_label_values(&["same_language"])
                            .inc();
                        continue;
                    }
                    let per_lang = translations
                        .entry(w.lang.clone())
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(per_lang) = per_lang {
                        per_lang.insert(w.pointer.clone(), Value::String(t.text));
                    }
                }
                Err(JobError::ShuttingDown) => {
                    return Outcome::Retry("shutting down before the translation finished".into());
                }
                Err(JobError::Failed(reason)) => {
                    self.metrics.texts.with_label_values(&["failed"]).inc();
                    if !failures.contains(&reason) {
                        failures.push(reason);
                    }
                }
            }
        }
        problems.extend(failures);

        if !translations.is_empty() {
            let slot = event
                .fields
                .entry("translations")
                .or_insert_with(|| Value::Object(Default::default()));
            if !slot.is_object() {
                *slot = Value::Object(Default::default());
            }
            if let Value::Object(existing) = slot {
                for (lang, per_pointer) in translations {
                    match (existing.get_mut(&lang), per_pointer) {
                        (Some(Value::Object(old)), Value::Object(new)) => old.extend(new),
                        (_, new) => {
                            existing.insert(lang, new);
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            tracing::warn!(problems = %problems.join("; "), "event passes on with translation problems");
            event.control.insert(
                TRANSLATE_ERROR.to_owned(),
                Value::String(problems.join("; ")),
            );
        }
        Outcome::Forward(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes() {
        assert!(valid_lang("en") && valid_lang("zh-hant") && valid_lang("pt-br"));
        assert!(
            !valid_lang("english!") && !valid_lang("") && !valid_lang("e") && !valid_lang("en-")
        );
        assert_eq!(deepl_target("en"), "EN-US");
        assert_eq!(deepl_target("ja"), "JA");
        assert_eq!(deepl_target("en-gb"), "EN-GB");
    }

    #[test]
    fn string_lists() {
        assert_eq!(string_list("k", Value::from("a")).unwrap(), vec!["a"]);
        assert_eq!(
            string_list("k", serde_json::json!(["a", "b"])).unwrap(),
            vec!["a", "b"]
        );
        assert!(string_list("k", serde_json::json!([1]))
            .unwrap_err()
            .contains("must hold strings"));
        assert!(string_list("k", serde_json::json!(3)).is_err());
    }
}
