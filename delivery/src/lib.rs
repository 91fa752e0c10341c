//! The delivery engine the chat bots share (docs/ARCHITECTURE.md §5).
//!
//! A bot for one chat network (Telegram, Discord, QQ) is an [`Adapter`] on this engine.
//! The engine consumes ready events from the bot's queue (`stargazer.bot.<im>`), asks the
//! api who is subscribed, narrows that by each event's gates and each chat's reminder
//! leads, claims every chat of the event in the delivery log (exactly once per
//! (event, chat) across instances), queues one job per chat won with the rate-limit
//! [`scheduler`], records outcomes in batches ([`recorder`]), and acks an event once
//! every recipient is settled; see [`engine`] for the rules of retries, requeues and
//! takeovers.
//!
//! The adapter supplies what differs per network: how one event reaches one chat (its
//! [`scheduler::Job`]: compose, send or edit, classify the network's answers into an
//! [`scheduler::Attempt`] and a final [`Outcome`]), what the jobs of one event share,
//! which chat ids are its own, and its limits ([`scheduler::Limits`]). A bot that keeps
//! one message per stream current remembers each stream's first message per chat in
//! [`streams`], with what its network needs to edit it.

pub mod api;
pub mod claims;
pub mod commands;
pub mod compose;
pub mod engine;
pub mod fanout;
pub mod i18n;
pub mod job;
pub mod recorder;
pub mod scheduler;
pub mod senders;
pub mod streams;
#[cfg(feature = "testing")]
pub mod testing;

use stargazer_core::contract::{field, kind};
use stargazer_core::model::{Event, Subscription, UserSettings};
use uuid::Uuid;

pub use engine::{run, Adapter, Parts, Settings, Stores};

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent now.
    Sent,
    /// The delivery log already had it.
    AlreadyDone,
    /// Could not be sent; the failure is recorded with this reason.
    Failed(String),
    /// Nothing to send or edit in this chat (a stream's end the chat never saw begin, a
    /// first message the network no longer lets the bot edit); recorded as settled.
    NothingToDo,
    /// Not sent because of a transient failure, and not recorded: the event must be
    /// delivered again (to this chat and the others still missing) later.
    Deferred(String),
    /// Not sent: another instance holds the chat's claim until then (its claim was taken
    /// over while this one's lease could not be renewed).
    Held(chrono::DateTime<chrono::Utc>),
}

/// Who receives a message.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The Stargazer user.
    pub user: Uuid,
    /// The chat id the api gave (the delivery log is keyed by it).
    pub chat_id: String,
    /// Language of the message.
    pub language: String,
    /// Time zone of times in the message.
    pub timezone: Option<String>,
    /// Reminder leads the chat chose, minutes (empty: the default lead).
    pub reminder_leads: Vec<u32>,
    /// What to mention when posting (the subscription's mention, a Discord role id);
    /// `None`: no mention.
    pub mention: Option<String>,
}

impl From<api::Subscriber> for Recipient {
    fn from(subscriber: api::Subscriber) -> Self {
        Self {
            user: subscriber.user,
            chat_id: subscriber.chat_id,
            language: subscriber.language,
            timezone: subscriber.timezone,
            reminder_leads: subscriber.reminder_leads,
            mention: subscriber.mention,
        }
    }
}

/// The log entry saying `(event, chat)` of `im` was handled with `status`, now.
pub fn delivery_record(
    im: &str,
    event: Uuid,
    chat: &str,
    status: &str,
) -> stargazer_core::model::DeliveryRecord {
    stargazer_core::model::DeliveryRecord {
        event,
        im: im.to_owned(),
        chat_id: chat.to_owned(),
        status: status.to_owned(),
        at: chrono::Utc::now(),
    }
}

/// Whether `subscriber` wants `event`: its subscription's kinds and the event's gates,
/// and for a reminder, the chat's reminder leads.
pub fn wants(event: &Event, subscriber: &api::Subscriber) -> bool {
    let subscription = Subscription {
        user: subscriber.user,
        entity: event.entity,
        kinds: subscriber.kinds.clone(),
        mention: None,
    };
    if !subscription.wants_event(event) {
        return false;
    }
    if event.kind != kind::YOUTUBE_REMINDER {
        return true;
    }
    let settings = UserSettings {
        reminder_leads: subscriber.reminder_leads.clone(),
        ..UserSettings::default()
    };
    let lead = event
        .fields
        .get(field::LEAD_SECONDS)
        .and_then(serde_json::Value::as_u64);
    let is_default = event.fields.get(field::LEAD_DEFAULT) == Some(&serde_json::Value::Bool(true));
    settings.wants_reminder(lead, is_default)
}

/// The part an event plays in a stream's life in a chat: what a bot does with the
/// stream's first message there. The notes below are Telegram's; Discord posts every
/// event and then edits the first message (see `bot-discord/src/delivery.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Scheduled (a stream or a premiere): the first message.
    Opener,
    /// Its start moved: the first message is edited.
    Rescheduled,
    /// It starts soon: a new message replying to the first.
    Reminder,
    /// It is live: a new message replying to the first, which is edited.
    Live,
    /// It ended: the first message is edited, nothing is sent.
    Ended,
    /// It was cancelled: the first message is edited, nothing is sent.
    Cancelled,
}

impl Role {
    /// The stream (`contract::stream_key`) and the part `event` plays in its life, if it
    /// is a stream event carrying its key. Twitch and Bilibili streams are not announced
    /// ahead: their live message is the first one, and their end edits it.
    pub fn of(event: &Event) -> Option<(String, Role)> {
        let role = match event.kind.as_str() {
            k if kind::STREAM_OPENERS.contains(&k) => Role::Opener,
            kind::YOUTUBE_RESCHEDULED => Role::Rescheduled,
            kind::YOUTUBE_REMINDER => Role::Reminder,
            kind::YOUTUBE_LIVE | kind::TWITCH_LIVE | kind::BILIBILI_LIVE => Role::Live,
            kind::YOUTUBE_ENDED | kind::TWITCH_ENDED | kind::BILIBILI_ENDED => Role::Ended,
            kind::YOUTUBE_CANCELLED => Role::Cancelled,
            _ => return None,
        };
        Some((stargazer_core::contract::stream_key(event)?, role))
    }

    /// Whether this part ends the stream's life (its memories can go once delivered).
    pub fn ends(self) -> bool {
        matches!(self, Role::Ended | Role::Cancelled)
    }
}

/// The scheduler lane of `event`'s messages: urgent kinds first, one flow per event.
pub fn lane(event: &Event) -> scheduler::Lane {
    scheduler::Lane {
        urgent: kind::URGENT.contains(&event.kind.as_str()),
        flow: event.id.as_u128(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(kinds: &[&str], leads: &[u32]) -> api::Subscriber {
        serde_json::from_value(serde_json::json!({
            "user": Uuid::nil(), "chat_id": "1", "language": "en",
            "kinds": kinds, "reminder_leads": leads,
        }))
        .unwrap()
    }

    fn event(kind: &str, fields: serde_json::Value) -> Event {
        Event {
            id: Uuid::new_v4(),
            kind: kind.into(),
            entity: Uuid::nil(),
            time: chrono::Utc::now(),
            fields: fields.as_object().unwrap().clone(),
            control: Default::default(),
        }
    }

    #[test]
    fn reminders_reach_the_chats_whose_leads_they_match() {
        let at = |minutes: u64| {
            event(
                "youtube.reminder",
                serde_json::json!({"lead_seconds": minutes * 60, "lead_default": minutes == 30}),
            )
        };
        let chose = subscriber(&[], &[5, 60]);
        let default = subscriber(&[], &[]);
        let wanted = |s: &api::Subscriber| -> Vec<u64> {
            [5, 15, 30, 60]
                .into_iter()
                .filter(|m| wants(&at(*m), s))
                .collect()
        };
        assert_eq!(wanted(&chose), [5, 60]);
        assert_eq!(wanted(&default), [30]);
        // A reminder without a lead (an older worker) reaches everyone.
        assert!(wants(
            &event("youtube.reminder", serde_json::json!({})),
            &chose
        ));
        // Not subscribed to reminders at all: none.
        assert!(wanted(&subscriber(&["youtube.live"], &[5])).is_empty());
    }

    #[test]
    fn premieres_and_members_only_videos_need_their_gate() {
        let premiere = event("youtube.live", serde_json::json!({"format": "premiere"}));
        let members = event("youtube.live", serde_json::json!({"members_only": true}));
        assert!(!wants(&premiere, &subscriber(&["youtube.live"], &[])));
        assert!(wants(
            &premiere,
            &subscriber(&["youtube.live", "youtube.premiere"], &[])
        ));
        assert!(!wants(&members, &subscriber(&["youtube.live"], &[])));
        assert!(wants(
            &members,
            &subscriber(&["youtube.live", "youtube.members"], &[])
        ));
        assert!(wants(&members, &subscriber(&[], &[])));
    }

    #[test]
    fn live_and_reminders_are_urgent_posts_are_not() {
        assert!(lane(&event("youtube.live", serde_json::json!({}))).urgent);
        assert!(lane(&event("youtube.reminder", serde_json::json!({}))).urgent);
        assert!(!lane(&event("youtube.video", serde_json::json!({}))).urgent);
        assert!(!lane(&event("twitter.tweet", serde_json::json!({}))).urgent);
    }
}
