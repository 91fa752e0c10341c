//! One event on its way to its chats, as an [`crate::Adapter`]'s fan-out: the event, its
//! entity, what the adapter needs besides (a stream's life, for a bot that keeps one
//! message per stream current), and the messages composed so far.
//!
//! A message depends on the event and on how its reader reads it: the view of the event
//! (a bot that edits a stream's first message composes that edit as another view; `()`
//! for a bot with one view), the chat's language and its time zone. Chats that read it
//! the same way share one message, composed once for the whole fan-out.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use stargazer_core::model::{Entity, Event};
use stargazer_core::sync::lock;

/// What a composed message depends on besides the event: view, language and time zone.
type ReaderKey<V> = (V, String, Option<String>);

/// One event on its way to its chats, with the messages (`M`) composed so far, one per
/// view (`V`), language and time zone; `stream` is the adapter's own part (`S`), its
/// stream's life when the event is part of one.
pub struct Fanout<M, V = (), S = ()> {
    /// The event.
    pub event: Event,
    /// The entity it is about.
    pub entity: Entity,
    /// Its stream's life, when it is part of one.
    pub stream: Option<S>,
    composed: Mutex<HashMap<ReaderKey<V>, Arc<M>>>,
}

impl<M, V: Copy + Eq + Hash, S> Fanout<M, V, S> {
    /// A fan-out of `event` about `entity`, part of `stream`'s life if given.
    pub fn new(event: Event, entity: Entity, stream: Option<S>) -> Self {
        Self {
            event,
            entity,
            stream,
            composed: Mutex::new(HashMap::new()),
        }
    }

    /// The message of `view` for a chat reading `language` in `timezone`: composed by
    /// `compose` (from the event, its entity, the language, the time zone and the view)
    /// the first time it is asked for, the same one after that.
    pub fn message(
        &self,
        view: V,
        language: &str,
        timezone: Option<&str>,
        compose: impl FnOnce(&Event, &Entity, &str, Option<&str>, V) -> M,
    ) -> Arc<M> {
        let key = (view, language.to_owned(), timezone.map(str::to_owned));
        lock(&self.composed)
            .entry(key)
            .or_insert_with(|| {
                Arc::new(compose(&self.event, &self.entity, language, timezone, view))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn event() -> Event {
        Event {
            id: uuid::Uuid::new_v4(),
            kind: "youtube.video".into(),
            entity: uuid::Uuid::nil(),
            time: chrono::Utc::now(),
            fields: Default::default(),
            control: Default::default(),
        }
    }

    fn entity() -> Entity {
        Entity {
            id: uuid::Uuid::nil(),
            names: Default::default(),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![],
        }
    }

    #[test]
    fn one_message_per_view_language_and_time_zone() {
        let fanout: Fanout<String, u8> = Fanout::new(event(), entity(), None);
        let composed = Cell::new(0);
        let get = |view: u8, language: &str, timezone: Option<&str>| {
            fanout.message(
                view,
                language,
                timezone,
                |event, _, language, timezone, view| {
                    composed.set(composed.get() + 1);
                    format!("{} {view} {language} {timezone:?}", event.kind)
                },
            )
        };
        let first = get(0, "en", None);
        assert_eq!(*first, "youtube.video 0 en None");
        assert!(Arc::ptr_eq(&first, &get(0, "en", None)));
        assert_eq!(composed.get(), 1);
        assert_eq!(*get(1, "en", None), "youtube.video 1 en None");
        assert_eq!(*get(0, "ja", None), "youtube.video 0 ja None");
        assert_eq!(
            *get(0, "en", Some("Asia/Tokyo")),
            "youtube.video 0 en Some(\"Asia/Tokyo\")"
        );
        assert_eq!(composed.get(), 4);
    }
}
