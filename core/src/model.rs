//! The data model every service shares: tracked entities and their tasks, chat users and
//! their subscriptions, sessions, service credentials, events and the records the
//! middlewares and workers persist.
//!
//! Every identifier is a [`Uuid`]; JSON carries it as a hyphenated string and MongoDB as
//! BSON binary subtype 4 (the storage layer converts, nothing here knows about BSON).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Names keyed by ISO-639-1 language code (`"en"`, `"ja"`, `"zh"`).
pub type LocalizedNames = BTreeMap<String, String>;

/// A tracked streamer (VTuber): what chat users subscribe to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Stable identifier.
    pub id: Uuid,
    /// Display names per language: at least one. Usually one of them is in
    /// `default_language`; readers fall back to any name when not ([`Entity::name_in`]).
    pub names: LocalizedNames,
    /// Language whose name is shown when the reader's language has none.
    pub default_language: String,
    /// Optional group (agency, unit) the entity belongs to.
    #[serde(default)]
    pub group: Option<Uuid>,
    /// Languages the entity's texts (tweets) are translated into; empty means none.
    #[serde(default)]
    pub translate_to: Vec<String>,
    /// Tasks that watch this entity's accounts.
    #[serde(default)]
    pub tasks: Vec<Task>,
}

impl Entity {
    /// The entity's name in `language`, falling back to its default language, then to any
    /// name it has.
    pub fn name_in(&self, language: &str) -> &str {
        self.names
            .get(language)
            .or_else(|| self.names.get(&self.default_language))
            .or_else(|| self.names.values().next())
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A group of entities (an agency or a unit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable identifier.
    pub id: Uuid,
    /// Display names per language.
    pub names: LocalizedNames,
}

/// The platform a task watches; also the first word of every routing key it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// A YouTube channel (WebSub + Data API).
    Youtube,
    /// An X (Twitter) account (API v2).
    Twitter,
    /// A Twitch broadcaster (EventSub webhooks + Helix).
    Twitch,
    /// A Bilibili user: their live room and their dynamics (posts, videos).
    Bilibili,
}

impl TaskKind {
    /// Every kind, in a fixed order.
    pub const ALL: [TaskKind; 4] = [
        TaskKind::Youtube,
        TaskKind::Twitter,
        TaskKind::Twitch,
        TaskKind::Bilibili,
    ];

    /// The lowercase name used in routing keys, worker announcements and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Youtube => "youtube",
            TaskKind::Twitter => "twitter",
            TaskKind::Twitch => "twitch",
            TaskKind::Bilibili => "bilibili",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "youtube" => Ok(TaskKind::Youtube),
            "twitter" => Ok(TaskKind::Twitter),
            "twitch" => Ok(TaskKind::Twitch),
            "bilibili" => Ok(TaskKind::Bilibili),
            other => Err(format!(
                "unknown task kind `{other}` (expected youtube, twitter, twitch or bilibili)"
            )),
        }
    }
}

/// What a task watches, typed per platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TaskParams {
    /// A YouTube channel, by its `UC…` channel id.
    Youtube {
        /// The channel id (`UC` followed by 22 characters).
        channel_id: String,
    },
    /// An X account, by its numeric user id.
    Twitter {
        /// The numeric user id, as a string (X ids exceed 2^53).
        user_id: String,
    },
    /// A Twitch broadcaster, by the numeric user id Helix gives its login.
    Twitch {
        /// The numeric broadcaster (user) id, as a string.
        broadcaster_id: String,
    },
    /// A Bilibili user, by their numeric uid (`mid`); their live room is found from it.
    Bilibili {
        /// The numeric uid, as a string.
        uid: String,
    },
}

impl TaskParams {
    /// The platform these parameters belong to.
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskParams::Youtube { .. } => TaskKind::Youtube,
            TaskParams::Twitter { .. } => TaskKind::Twitter,
            TaskParams::Twitch { .. } => TaskKind::Twitch,
            TaskParams::Bilibili { .. } => TaskKind::Bilibili,
        }
    }

    /// The platform-side identifier (channel id or user id).
    pub fn source_id(&self) -> &str {
        match self {
            TaskParams::Youtube { channel_id } => channel_id,
            TaskParams::Twitter { user_id } => user_id,
            TaskParams::Twitch { broadcaster_id } => broadcaster_id,
            TaskParams::Bilibili { uid } => uid,
        }
    }
}

/// One unit of watching work, assigned by the coordinator to one worker of its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    /// Stable identifier; the key of consistent-hash assignment.
    pub id: Uuid,
    /// The entity this task belongs to.
    pub entity: Uuid,
    /// Platform and platform-side id.
    #[serde(flatten)]
    pub params: TaskParams,
}

impl Task {
    /// The platform this task watches.
    pub fn kind(&self) -> TaskKind {
        self.params.kind()
    }
}

/// A change to the task set, as observed by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskChange {
    /// A task was inserted or replaced.
    Upserted(Task),
    /// The task with this id was deleted.
    Deleted(Uuid),
}

/// Per-user preferences edited from the bot or the frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserSettings {
    /// IANA time zone for times in messages (`"Asia/Tokyo"`); `None` means UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Whether deliveries are paused (set when the chat blocked the bot).
    #[serde(default)]
    pub paused: bool,
    /// Reminder leads this chat wants, minutes before a stream (a subset of
    /// `contract::REMINDER_LEAD_CHOICES_MINUTES`); empty means the default lead only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reminder_leads: Vec<u32>,
    /// SHA-256 (hex, `auth::token_hash`) of the secret in the chat's calendar feed link;
    /// `None` when the chat has no link (never made, or revoked). The secret itself is
    /// shown once, when made; this hash never leaves storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_secret_hash: Option<String>,
}

impl UserSettings {
    /// Whether a reminder at `lead_seconds` before the start reaches this chat. A chat that
    /// chose no lead gets the reminder marked as the default (`is_default`); a reminder
    /// without a lead (from an older worker) reaches everyone.
    pub fn wants_reminder(&self, lead_seconds: Option<u64>, is_default: bool) -> bool {
        let Some(lead) = lead_seconds else {
            return true;
        };
        if self.reminder_leads.is_empty() {
            return is_default;
        }
        lead % 60 == 0
            && self
                .reminder_leads
                .iter()
                .any(|&minutes| u64::from(minutes) * 60 == lead)
    }
}

/// A chat (a person or a group) on one IM platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Stable identifier.
    pub id: Uuid,
    /// IM platform name, e.g. `"telegram"`.
    pub im: String,
    /// The chat id on that platform, as a string.
    pub im_chat_id: String,
    /// Display name (chat title or user name).
    pub name: String,
    /// ISO-639-1 language for messages.
    pub language: String,
    /// Preferences.
    #[serde(default)]
    pub settings: UserSettings,
    /// When the user was registered.
    pub created_at: DateTime<Utc>,
}

/// A user's subscription to one entity, filtered by event kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscribing user.
    pub user: Uuid,
    /// The entity subscribed to.
    pub entity: Uuid,
    /// Event kinds wanted (`"youtube.live"`, …); empty means every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// What the bot mentions when it posts an event of this subscription, in the network's
    /// own terms (a Discord role id); `None`: no mention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mention: Option<String>,
}

impl Subscription {
    /// Whether this subscription wants events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }

    /// Whether this subscription wants `event`: its kind and every gate kind it carries
    /// (`contract::kind::gates`: premieres, members-only videos).
    pub fn wants_event(&self, event: &Event) -> bool {
        self.wants(&event.kind)
            && crate::contract::kind::gates(event)
                .into_iter()
                .all(|gate| self.wants(gate))
    }
}

/// A short-lived end-user session (the bot's `/settings` link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the bearer token, hex; the token itself is never stored.
    pub token_hash: String,
    /// The user the session acts for.
    pub user: Uuid,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it expires unless used (sliding).
    pub expires_at: DateTime<Utc>,
    /// Absolute limit the sliding expiry never passes.
    pub max_expires_at: DateTime<Utc>,
}

/// Access level to one central component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read-only.
    Ro,
    /// Read-write (implies read).
    Rw,
}

impl std::str::FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ro" => Ok(Access::Ro),
            "rw" => Ok(Access::Rw),
            other => Err(format!("unknown access `{other}` (expected ro or rw)")),
        }
    }
}

/// The central components a credential can be granted access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The RPC api.
    Api,
    /// Entity administration through the api.
    Admin,
    /// RabbitMQ.
    Mq,
    /// The coordinator's worker endpoint.
    Coordinator,
}

/// What a credential may do: a partial map from component to access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Permissions {
    /// Access to the RPC api.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Access>,
    /// Access to entity administration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Access>,
    /// Access to RabbitMQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mq: Option<Access>,
    /// Access to the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<Access>,
}

impl Permissions {
    /// The access granted to `component`, if any.
    pub fn get(&self, component: Component) -> Option<Access> {
        match component {
            Component::Api => self.api,
            Component::Admin => self.admin,
            Component::Mq => self.mq,
            Component::Coordinator => self.coordinator,
        }
    }

    /// Whether at least `needed` access to `component` is granted (rw satisfies ro).
    pub fn allows(&self, component: Component, needed: Access) -> bool {
        self.get(component).is_some_and(|granted| granted >= needed)
    }
}

/// A service account (bot, worker, middleware, admin) in the `auth` collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Login name; unique.
    pub username: String,
    /// PBKDF2-HMAC-SHA256 PHC string.
    pub hash: String,
    /// What the account may do.
    pub permissions: Permissions,
    /// The broker queues the account owns, as suffixes under the exchange prefix
    /// (`bot.telegram` for `stargazer.bot.telegram`); see docs/ARCHITECTURE.md §8.
    #[serde(default)]
    pub queues: Vec<String>,
}

/// Longest queue suffix a credential may own, bytes (RabbitMQ names are at most 255).
pub const MAX_QUEUE_SUFFIX_LEN: usize = 200;

/// Checks a queue suffix for [`Credential::queues`]: 1 to [`MAX_QUEUE_SUFFIX_LEN`]
/// bytes of ASCII letters, digits, `_` and `-`, in dot-separated words (no empty word),
/// so a suffix names exactly one queue and never a wildcard.
pub fn check_queue_suffix(suffix: &str) -> Result<(), String> {
    if suffix.is_empty() || suffix.len() > MAX_QUEUE_SUFFIX_LEN {
        return Err(format!(
            "queue suffix must be 1 to {MAX_QUEUE_SUFFIX_LEN} bytes"
        ));
    }
    let word_ok = |word: &str| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !suffix.split('.').all(word_ok) {
        return Err(format!(
            "queue suffix `{suffix}` must be dot-separated words of letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// A thing that happened, as it travels on the bus (docs/ARCHITECTURE.md §4).
///
/// Control values (`x-…` keys) sit at the top level beside the fixed fields; each
/// middleware removes the ones it consumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Deterministic id (see [`Event::make_id`]); consumers deduplicate on it.
    pub id: Uuid,
    /// Event kind, `<source>.<what>` (`youtube.live`, `twitter.tweet`).
    pub kind: String,
    /// The entity the event is about.
    pub entity: Uuid,
    /// When it happened (or is scheduled to).
    pub time: DateTime<Utc>,
    /// Kind-specific content (title, text, link, media, translations…).
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Control values for middlewares; every key starts with `x-`.
    #[serde(flatten)]
    pub control: serde_json::Map<String, serde_json::Value>,
}

/// Namespace for event ids (UUIDv5), fixed forever so ids stay stable across releases.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f8e_1c52_3a7d_4b0e_9c41_5d2a_7e3f_0b19);

impl Event {
    /// The deterministic id of a happening: UUIDv5 of kind, source id and, for scheduled
    /// things, the schedule, so a re-push or redelivery yields the same id.
    pub fn make_id(kind: &str, source_id: &str, schedule: Option<&str>) -> Uuid {
        let mut name = format!("{kind}\n{source_id}");
        if let Some(schedule) = schedule {
            name.push('\n');
            name.push_str(schedule);
        }
        Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
    }

    /// The platform word of the kind (`youtube` for `youtube.live`).
    pub fn source(&self) -> &str {
        self.kind.split('.').next().unwrap_or(&self.kind)
    }

    /// Removes a control value and returns it.
    pub fn take_control(&mut self, key: &str) -> Option<serde_json::Value> {
        self.control.remove(key)
    }

    /// Serializes the event to the JSON bytes published on the bus.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of JSON values and strings cannot fail.
        serde_json::to_vec(self).expect("an Event always serializes")
    }

    /// Parses an event from bus bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A message held by middleware-delay until `fire_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayedMessage {
    /// The `x-delay-id` (or the event id when none was given); a new message with the
    /// same id replaces the pending one.
    pub id: String,
    /// Routing key to republish with (the `delay` tag already removed).
    pub routing_key: String,
    /// The message body to republish.
    pub body: Vec<u8>,
    /// When to fire, unix milliseconds.
    pub fire_at_ms: i64,
}

/// A claim on a pending delayed message: which middleware-delay instance fires it, and
/// until when the claim holds unless renewed (docs/ARCHITECTURE.md §5 middleware-delay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayLease {
    /// The claiming instance's id.
    pub owner: String,
    /// The claim lapses after this time (unix milliseconds) unless renewed.
    pub until_ms: i64,
}

/// A pending delayed message as stored, with its revision and claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDelayed {
    /// The message.
    pub message: DelayedMessage,
    /// A fresh value written by every `put_delayed`, telling a replacement from its
    /// predecessor (rows stored before revisions existed read as 0).
    pub revision: i64,
    /// Who holds the message, if anyone (an expired lease is still reported).
    pub lease: Option<DelayLease>,
}

/// A delayed message just claimed: what the claiming instance keeps in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedDelayed {
    /// The delay id.
    pub id: String,
    /// When to fire, unix milliseconds.
    pub fire_at_ms: i64,
    /// The revision claimed: only this one may be fired by the claimant.
    pub revision: i64,
}

impl DelayedMessage {
    /// A fresh random revision for a new write of this message (never 0, the revision
    /// of rows stored before revisions existed).
    pub fn new_revision() -> i64 {
        let (high, _) = Uuid::new_v4().as_u64_pair();
        // Dropping the sign bit keeps it positive, so it is never 0 after the `max`.
        i64::try_from(high >> 1).unwrap_or(i64::MAX).max(1)
    }
}

/// One row of the bot delivery log: `event` was handled for `chat` on `im`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The event id.
    pub event: Uuid,
    /// IM platform name.
    pub im: String,
    /// Chat id on that platform.
    pub chat_id: String,
    /// `"sent"`, `"failed: <reason>"`, `"skipped: <reason>"` or, while a bot instance
    /// holds it unsent, [`DELIVERY_CLAIMED`].
    pub status: String,
    /// When the record was written.
    pub at: DateTime<Utc>,
}

/// The status of a delivery a bot instance has claimed and not settled yet: it may send,
/// nobody else may until its lease runs out (docs/ARCHITECTURE.md §5, bot-telegram).
pub const DELIVERY_CLAIMED: &str = "claimed";

/// A bot instance's claim on the deliveries of one event: who claims, and until when the
/// claim keeps other instances off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    /// The event id.
    pub event: Uuid,
    /// IM platform name.
    pub im: String,
    /// The claiming instance (unique per process run).
    pub owner: String,
    /// The claimant's clock: a claim whose lease ended at or before it may be taken over.
    pub now: DateTime<Utc>,
    /// When the claim lapses unless renewed or settled.
    pub lease_until: DateTime<Utc>,
}

/// What a claim found for one chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// The claimant holds it now (a new claim, its own claim again, or one taken over
    /// from an owner whose lease had run out): it may send.
    Won,
    /// Already settled with this status (sent, failed, skipped): nothing to send.
    Settled(String),
    /// Another instance's live claim: do not send before it settles or lapses.
    Held {
        /// The instance holding it.
        owner: String,
        /// When its lease runs out.
        lease_until: DateTime<Utc>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_suffixes_are_plain_dotted_words() {
        for good in ["bot.telegram", "middleware.live_check", "a", "x-1.y_2"] {
            assert!(check_queue_suffix(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_QUEUE_SUFFIX_LEN + 1);
        for bad in [
            "", ".", "bot.", ".bot", "a..b", "#", "bot.*", "a b", "é", &long,
        ] {
            assert!(check_queue_suffix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_without_queues_read_as_owning_none() {
        let credential: Credential = serde_json::from_value(serde_json::json!({
            "username": "old", "hash": "h", "permissions": {"mq": "rw"}
        }))
        .unwrap();
        assert!(credential.queues.is_empty());
    }

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let a = Event::make_id("youtube.live", "abc", None);
        assert_eq!(a, Event::make_id("youtube.live", "abc", None));
        assert_ne!(a, Event::make_id("youtube.video", "abc", None));
        assert_ne!(
            a,
            Event::make_id("youtube.live", "abc", Some("2026-01-01T00:00:00Z"))
        );
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn event_json_keeps_control_fields_at_top_level() {
        let json = serde_json::json!({
            "id": "6f8e1c52-3a7d-4b0e-9c41-5d2a7e3f0b19",
            "kind": "youtube.live",
            "entity": "00000000-0000-0000-0000-000000000001",
            "time": "2026-01-01T00:00:00Z",
            "fields": {"title": "hi"},
            "x-delay-at": 5
        });
        let event: Event = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(event.control["x-delay-at"], 5);
        assert_eq!(event.source(), "youtube");
        assert_eq!(serde_json::to_value(&event).unwrap(), json);
    }

    #[test]
    fn task_json_is_flat() {
        let task = Task {
            id: Uuid::nil(),
            entity: Uuid::nil(),
            params: TaskParams::Youtube {
                channel_id: "UC1".into(),
            },
        };
        let value = serde_json::to_value(&task).unwrap();
        assert_eq!(value["kind"], "youtube");
        assert_eq!(value["channel_id"], "UC1");
        assert_eq!(serde_json::from_value::<Task>(value).unwrap(), task);
    }

    #[test]
    fn rw_satisfies_ro() {
        let p = Permissions {
            api: Some(Access::Rw),
            mq: Some(Access::Ro),
            ..Default::default()
        };
        assert!(p.allows(Component::Api, Access::Ro));
        assert!(p.allows(Component::Mq, Access::Ro));
        assert!(!p.allows(Component::Mq, Access::Rw));
        assert!(!p.allows(Component::Admin, Access::Ro));
    }
}
