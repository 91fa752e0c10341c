//! Numbered events, published as a worker publishes them, and the tally of what reached
//! each chat: every event carries a marker `#<n>#` in its text, which survives
//! composition (and translation) into the Telegram message, so the Telegram test server's
//! record tells which event each message was.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use stargazer_core::bus::Bus;
use stargazer_core::contract::{control, kind, source, tag};
use stargazer_core::model::Event;
use stargazer_core::routing::push_tag;
use uuid::Uuid;

use crate::servers::telegram::Sent;

/// The marker of event `n`.
pub fn marker(n: u64) -> String {
    format!("#{n}#")
}

/// The first event marker in `text`.
pub fn marker_in(text: &str) -> Option<u64> {
    let mut rest = text;
    while let Some(at) = rest.find('#') {
        let tail = &rest[at + 1..];
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && tail[digits.len()..].starts_with('#') {
            return digits.parse().ok();
        }
        rest = tail;
    }
    None
}

/// Event `n` of `kind` about `entity`, with a deterministic id (a redelivery or a
/// re-publish is the same event) and the marker in its title and text.
pub fn numbered(kind: &str, entity: Uuid, n: u64, run: &str) -> Event {
    let source_id = format!("{run}-{n}");
    let fields = json!({
        "title": format!("Item {}", marker(n)),
        "link": format!("https://www.youtube.com/watch?v=v{n}"),
    });
    Event {
        id: Event::make_id(kind, &source_id, None),
        kind: kind.to_owned(),
        entity,
        time: Utc::now(),
        fields: fields.as_object().cloned().unwrap_or_default(),
        control: Default::default(),
    }
}

/// Tweet `n` in Japanese about `entity`, tagged for translation into `to` when given:
/// returns the routing key to publish with and the event.
pub fn tweet(entity: Uuid, n: u64, run: &str, translate_to: Option<&str>) -> (String, Event) {
    let mut event = numbered(kind::TWITTER_TWEET, entity, n, run);
    event.fields.remove("title");
    event
        .fields
        .insert("text".into(), json!(format!("ポスト {}", marker(n))));
    event.fields.insert(
        "link".into(),
        json!(format!("https://x.com/account/status/{n}")),
    );
    match translate_to {
        Some(lang) => {
            event
                .control
                .insert(control::TRANSLATE_FIELDS.into(), json!(["/fields/text"]));
            event
                .control
                .insert(control::TRANSLATE_TO.into(), json!([lang]));
            (push_tag(source::TWITTER, tag::TRANSLATE), event)
        }
        None => (source::TWITTER.to_owned(), event),
    }
}

/// Publishes `messages` with up to `window` publishes awaiting their confirms at once.
pub async fn publish_all(
    bus: &Arc<dyn Bus>,
    messages: Vec<(String, Event)>,
    window: usize,
) -> crate::Result<()> {
    publish_counting(bus, messages, window, &AtomicU64::new(0)).await
}

/// Like [`publish_all`], counting confirmed publishes in `confirmed` as they complete.
pub async fn publish_counting(
    bus: &Arc<dyn Bus>,
    messages: Vec<(String, Event)>,
    window: usize,
    confirmed: &AtomicU64,
) -> crate::Result<()> {
    let mut results = futures::stream::iter(messages)
        .map(|(key, event)| {
            let bus = bus.clone();
            async move { bus.publish(&key, &event.to_bytes()).await }
        })
        .buffer_unordered(window.max(1));
    while let Some(result) = results.next().await {
        result?;
        confirmed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// How many messages each (event marker, chat) got; messages without a marker are left
/// out.
pub fn tally(sent: &[Sent]) -> BTreeMap<(u64, i64), usize> {
    let mut counts = BTreeMap::new();
    for message in sent {
        if let Some(n) = marker_in(&message.text) {
            *counts.entry((n, message.chat_id)).or_insert(0) += 1;
        }
    }
    counts
}

/// Checks that each of `events` reached each of `chats` exactly once; the error lists
/// the first problems.
pub fn exactly_once(
    sent: &[Sent],
    events: std::ops::Range<u64>,
    chats: &[i64],
) -> Result<(), String> {
    let counts = tally(sent);
    let mut problems = Vec::new();
    for n in events.clone() {
        for chat in chats {
            let got = counts.get(&(n, *chat)).copied().unwrap_or(0);
            if got != 1 {
                problems.push(format!("event {n} → chat {chat}: {got} messages"));
            }
        }
    }
    let strays = counts
        .keys()
        .filter(|(n, chat)| !events.contains(n) || !chats.contains(chat))
        .count();
    if strays > 0 {
        problems.push(format!(
            "{strays} (event, chat) pairs that were never published"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let total = problems.len();
        problems.truncate(20);
        Err(format!("{total} problems: {problems:#?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_through_text() {
        assert_eq!(
            marker_in(&format!(
                "🐦 X posted\n[EN-US] ポスト {} Original: …",
                marker(42)
            )),
            Some(42)
        );
        assert_eq!(marker_in("no # marker #x# here"), None);
        assert_eq!(marker_in("#7##8#"), Some(7));
    }
}
