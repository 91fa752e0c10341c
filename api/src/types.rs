//! Request and response bodies of every RPC method, shared by the server and
//! [`crate::client::ApiClient`].
//!
//! Records mirror the core model field for field (so their JSON is the model's JSON) but
//! live here so that `/openapi.json` can describe them. Conversions from and to the model
//! are the `From` impls at the end.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use stargazer_core::model;
use utoipa::ToSchema;
use uuid::Uuid;

// ---------------------------------------------------------------- envelope

/// The body of every `/v1/{method}` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Envelope<T> {
    /// `true` for a result, `false` for an error.
    pub success: bool,
    /// Server time of the response, unix seconds.
    pub time: i64,
    /// The result (present when `success`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// The error (present when not `success`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The body of every error response (the error form of [`Envelope`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// Always `false`.
    pub success: bool,
    /// Server time of the response, unix seconds.
    pub time: i64,
    /// What went wrong.
    pub error: ErrorBody,
}

/// What went wrong, in an error envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail (names the offending field for `invalid_input`).
    pub message: String,
    /// For `unknown_method`: every method the api serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
}

/// Error codes and the HTTP status each is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not JSON, or a request is malformed.
    BadRequest,
    /// 401: no credentials, wrong credentials, or an unknown or expired session.
    Unauthorized,
    /// 403: the caller may not call this method or touch this user.
    Forbidden,
    /// 404: the record does not exist.
    NotFound,
    /// 404: there is no such method (the error lists the methods).
    UnknownMethod,
    /// 405: methods are called with POST.
    MethodNotAllowed,
    /// 409: the record already exists.
    Conflict,
    /// 413: the body exceeds the configured limit.
    PayloadTooLarge,
    /// 422: the body is JSON but a field is missing or invalid.
    InvalidInput,
    /// 429: every password check stayed busy; retry after the `Retry-After` header.
    RateLimited,
    /// 503: the database is unreachable.
    Unavailable,
    /// 500: an unexpected failure (logged server-side).
    Internal,
    /// A code this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire name (`not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------- records

/// Access level to one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read-only.
    Ro,
    /// Read-write.
    Rw,
}

/// What a service credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
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

/// What a task watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TaskParams {
    /// A YouTube channel.
    Youtube {
        /// The channel id (`UC` followed by 22 characters).
        channel_id: String,
    },
    /// An X (Twitter) account.
    Twitter {
        /// The numeric user id, as a string.
        user_id: String,
    },
    /// A Twitch broadcaster.
    Twitch {
        /// The numeric broadcaster id (Helix user id), as a string.
        broadcaster_id: String,
    },
    /// A Bilibili user (live room and dynamics).
    Bilibili {
        /// The numeric uid, as a string.
        uid: String,
    },
}

/// One watched account of an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// Task id.
    pub id: Uuid,
    /// The entity it belongs to.
    pub entity: Uuid,
    /// Platform and account.
    #[serde(flatten)]
    pub params: TaskParams,
}

/// A tracked streamer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entity {
    /// Entity id.
    pub id: Uuid,
    /// Names by language code.
    pub names: BTreeMap<String, String>,
    /// Language whose name is the default.
    pub default_language: String,
    /// Group (agency, unit), if any.
    #[serde(default)]
    pub group: Option<Uuid>,
    /// Languages its texts are translated into.
    #[serde(default)]
    pub translate_to: Vec<String>,
    /// Watched accounts.
    #[serde(default)]
    pub tasks: Vec<Task>,
}

/// A group of entities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    /// Group id.
    pub id: Uuid,
    /// Names by language code.
    pub names: BTreeMap<String, String>,
}

/// A user's preferences.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct UserSettings {
    /// IANA time zone; none means UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Whether deliveries are paused.
    #[serde(default)]
    pub paused: bool,
    /// Reminder leads wanted, minutes before a stream, sorted; empty means the default
    /// lead (30 minutes).
    #[serde(default)]
    pub reminder_leads: Vec<u32>,
    /// Whether a calendar feed link exists (its secret is shown only when it is made,
    /// by `createCalendarLink`).
    #[serde(default)]
    pub calendar_link: bool,
}

/// A chat on one IM platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// User id.
    pub id: Uuid,
    /// IM platform (`telegram`).
    pub im: String,
    /// Chat id on that platform.
    pub im_chat_id: String,
    /// Display name.
    pub name: String,
    /// Language for messages.
    pub language: String,
    /// Preferences.
    #[serde(default)]
    pub settings: UserSettings,
    /// When the user was registered.
    pub created_at: DateTime<Utc>,
}

/// A subscription of a user to an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    /// The user.
    pub user: Uuid,
    /// The entity.
    pub entity: Uuid,
    /// Event kinds wanted; empty means all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// What the bot mentions when it posts an event of this subscription (a Discord role
    /// id); absent: no mention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mention: Option<String>,
}

// ---------------------------------------------------------------- users

/// `getUser`: a user by id, or by IM platform and chat id (never both). Giving neither
/// asks for the session's own user (a service account, having none, gets 403).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetUser {
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
    /// IM platform, with `chat_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im: Option<String>,
    /// Chat id on `im`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
}

/// `addUser`: registers a chat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    /// IM platform (`telegram`): lowercase letters, digits and `_`.
    pub im: String,
    /// Chat id on that platform.
    pub chat_id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Language code for messages; default `en`.
    #[serde(default = "default_language")]
    pub language: String,
}

fn default_language() -> String {
    "en".to_owned()
}

/// `delUser`: removes a user with their sessions and subscriptions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelUser {
    /// The user. Omitted: the session's own user (a service account, having none, gets
    /// 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
}

/// What `delUser` and `delEntity` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// The id of the removed record.
    pub id: Uuid,
}

// ---------------------------------------------------------------- sessions

/// `newSession`: issues a session for a user (to hand to the frontend).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// The user the session acts for.
    pub user: Uuid,
}

/// A freshly issued session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionToken {
    /// The bearer token (shown only here; the server keeps its hash).
    pub token: String,
    /// The user it acts for.
    pub user: Uuid,
    /// When it expires unless used.
    pub expires_at: DateTime<Utc>,
    /// When it expires however often it is used.
    pub max_expires_at: DateTime<Utc>,
}

/// `checkSession`: is a token valid? A bearer caller asks about its own token and omits
/// `token`; a service caller names it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSession {
    /// The token to check. Omitted: the calling session itself (a service account, having
    /// none, gets 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Whether a session is valid, and for whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionStatus {
    /// Known and not expired.
    pub valid: bool,
    /// Its user, when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
    /// Its current expiry, when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Its absolute expiry, when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_expires_at: Option<DateTime<Utc>>,
}

/// `authMe`: who is calling? With `user`, also checks that a session acts for that user
/// (403 otherwise).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthMe {
    /// The user the caller claims to act for (sessions only: a service account acts for
    /// no user, 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
}

/// The caller's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Me {
    /// A service account (HTTP Basic).
    Service {
        /// Its username.
        username: String,
        /// Its permissions.
        permissions: Permissions,
    },
    /// An end user (bearer session).
    User {
        /// The user.
        user: User,
        /// When the session expires unless used.
        expires_at: DateTime<Utc>,
    },
}

// ---------------------------------------------------------------- settings

/// `getSettings` / `getSubscription`: a user's settings or subscriptions. A session caller
/// omits `user` (itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    /// The user. Omitted: the session's own user (a service account, having none, gets
    /// 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
}

/// A user's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    /// Language for messages.
    pub language: String,
    /// IANA time zone; none means UTC.
    pub timezone: Option<String>,
    /// Whether deliveries are paused.
    pub paused: bool,
    /// Reminder leads wanted, minutes before a stream, sorted; empty means the default
    /// lead (30 minutes).
    #[serde(default)]
    pub reminder_leads: Vec<u32>,
    /// Whether a calendar feed link exists (made by `createCalendarLink`, removed by
    /// `revokeCalendarLink`).
    #[serde(default)]
    pub calendar_link: bool,
}

/// `updateSetting`: changes the given settings, leaving the others (none given: answers
/// the settings unchanged).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSetting {
    /// The user. Omitted: the session's own user (a service account, having none, gets
    /// 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
    /// New language code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// New IANA time zone (`Asia/Tokyo`); `""` resets to UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Pause or resume deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// New reminder leads, minutes before a stream: each one of 5, 15, 30, 60
    /// (`REMINDER_LEAD_CHOICES_MINUTES`), none twice; stored sorted. `[]` returns to the
    /// default lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder_leads: Option<Vec<u32>>,
    /// New display name (service callers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New chat id, after the platform migrated the chat (service callers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
}

// ---------------------------------------------------------------- subscriptions

/// `updateSubscription`: subscribes a user to an entity (with a kind filter) or
/// unsubscribes them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    /// The user. Omitted: the session's own user (a service account, having none, gets
    /// 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
    /// The entity.
    pub entity: Uuid,
    /// `true` (default) to subscribe or change kinds, `false` to unsubscribe.
    #[serde(default = "yes")]
    pub subscribed: bool,
    /// Event kinds wanted (`youtube.live`); empty means all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// What the bot mentions when it posts an event of this subscription, in the network's
    /// terms (a Discord role id): 1 to 64 ASCII letters, digits, `_`, `-` or `:`. `""`
    /// removes it; absent keeps what the subscription has (a new one has none).
    /// Unsubscribing drops it with the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mention: Option<String>,
}

fn yes() -> bool {
    true
}

/// The user's subscriptions after an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionUpdate {
    /// Whether anything changed.
    pub changed: bool,
    /// Every subscription of the user, by entity id.
    pub subscriptions: Vec<Subscription>,
}

/// `getSubscribers`: who on `im` wants events of `kind` about `entity` (the bots' fan-out
/// lookup; paused users are left out).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetSubscribers {
    /// The entity the event is about.
    pub entity: Uuid,
    /// The event kind (`youtube.live`).
    pub kind: String,
    /// The IM platform (`telegram`).
    pub im: String,
}

/// One recipient of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subscriber {
    /// The user id.
    pub user: Uuid,
    /// Chat id on the platform.
    pub chat_id: String,
    /// Language for the message.
    pub language: String,
    /// IANA time zone for times in the message; none means UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The kinds the subscription filters on (empty: all).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The chat's reminder leads, minutes (empty: the default lead only); see
    /// `UserSettings::wants_reminder` in the core model.
    #[serde(default)]
    pub reminder_leads: Vec<u32>,
    /// What to mention when posting the event (the subscription's mention, a Discord role
    /// id); absent: no mention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mention: Option<String>,
}

// ---------------------------------------------------------------- schedule

/// A freshly made calendar feed link (`createCalendarLink`). Making one invalidates the
/// previous link of the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CalendarLink {
    /// The feed's secret, shown only here (the server keeps its hash).
    pub secret: String,
    /// The feed's path on the api: `/ical/<secret>.ics`.
    pub path: String,
    /// The feed's full URL when the api knows its public URL (`api.public_url`); else
    /// none, and the client puts its api base before `path`.
    pub url: Option<String>,
}

/// What `revokeCalendarLink` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CalendarRevoked {
    /// Whether a link existed (and now answers 404).
    pub revoked: bool,
}

/// Where a stream of the schedule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Scheduled, not started.
    Upcoming,
    /// Live now.
    Live,
}

/// One stream of `getUpcoming`: announced, not over, of an entity the user subscribes
/// to with a subscription that wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpcomingStream {
    /// Source word (`youtube`).
    pub source: String,
    /// The stream's id at its source (a YouTube video id).
    pub id: String,
    /// The entity streaming.
    pub entity: Uuid,
    /// The entity's name in the user's language.
    pub entity_name: String,
    /// Title.
    pub title: String,
    /// Where to watch.
    pub link: String,
    /// When it starts (or started, when live).
    pub start: DateTime<Utc>,
    /// When it was scheduled to start.
    pub scheduled_start: DateTime<Utc>,
    /// Upcoming or live.
    pub state: StreamState,
    /// What it is: `stream` or `premiere`.
    pub format: String,
    /// Whether only channel members can watch.
    pub members_only: bool,
    /// When the source last reported on the stream.
    pub updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- entities

/// `newEntity`: creates an entity with its tasks; ids are assigned unless given.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEntity {
    /// Id to use; a new random one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Names by language code, at least one, none blank.
    pub names: BTreeMap<String, String>,
    /// The language whose name readers without a name in their own language see (falling
    /// back to any name when it has none).
    pub default_language: String,
    /// Group, which must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Uuid>,
    /// Languages to translate its texts into.
    #[serde(default)]
    pub translate_to: Vec<String>,
    /// Accounts to watch; each account may belong to one entity only.
    #[serde(default)]
    pub tasks: Vec<TaskParams>,
}

/// `getEntity` / `delEntity`: one entity by id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    /// The entity id.
    pub id: Uuid,
}

/// `updateEntity`: changes the given fields. A given `tasks` list replaces the tasks;
/// accounts already watched keep their task ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEntity {
    /// The entity id.
    pub id: Uuid,
    /// New names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<BTreeMap<String, String>>,
    /// New default language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_language: Option<String>,
    /// New group; `null` removes it, absent keeps it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub group: Option<Option<Uuid>>,
    /// New translation languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translate_to: Option<Vec<String>>,
    /// New task list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskParams>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An empty request (methods without parameters). An empty body is accepted too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `getUserIndex`: the searchable index of entities, marked with one user's
/// subscriptions when a user is given (a session caller: always itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetUserIndex {
    /// The user whose subscriptions to mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Uuid>,
}

/// A compact, searchable list of what can be subscribed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserIndex {
    /// Every group.
    pub groups: Vec<Group>,
    /// Every entity, by id.
    pub entities: Vec<IndexEntry>,
}

/// One entity in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IndexEntry {
    /// Entity id.
    pub id: Uuid,
    /// Names by language code.
    pub names: BTreeMap<String, String>,
    /// Default language.
    pub default_language: String,
    /// Group id.
    pub group: Option<Uuid>,
    /// Platforms it is watched on (`youtube`, `twitter`, `twitch`, `bilibili`).
    pub platforms: Vec<String>,
    /// Lowercased names and account ids, for substring search.
    pub search: Vec<String>,
    /// The user's kinds filter when subscribed (empty list: all kinds); absent when not
    /// subscribed or no user given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Vec<String>>,
}

// ---------------------------------------------------------------- conversions

impl From<model::Access> for Access {
    fn from(value: model::Access) -> Self {
        match value {
            model::Access::Ro => Access::Ro,
            model::Access::Rw => Access::Rw,
        }
    }
}

impl From<Access> for model::Access {
    fn from(value: Access) -> Self {
        match value {
            Access::Ro => model::Access::Ro,
            Access::Rw => model::Access::Rw,
        }
    }
}

impl From<model::Permissions> for Permissions {
    fn from(p: model::Permissions) -> Self {
        Self {
            api: p.api.map(Into::into),
            admin: p.admin.map(Into::into),
            mq: p.mq.map(Into::into),
            coordinator: p.coordinator.map(Into::into),
        }
    }
}

impl From<model::TaskParams> for TaskParams {
    fn from(p: model::TaskParams) -> Self {
        match p {
            model::TaskParams::Youtube { channel_id } => TaskParams::Youtube { channel_id },
            model::TaskParams::Twitter { user_id } => TaskParams::Twitter { user_id },
            model::TaskParams::Twitch { broadcaster_id } => TaskParams::Twitch { broadcaster_id },
            model::TaskParams::Bilibili { uid } => TaskParams::Bilibili { uid },
        }
    }
}

impl From<TaskParams> for model::TaskParams {
    fn from(p: TaskParams) -> Self {
        match p {
            TaskParams::Youtube { channel_id } => model::TaskParams::Youtube { channel_id },
            TaskParams::Twitter { user_id } => model::TaskParams::Twitter { user_id },
            TaskParams::Twitch { broadcaster_id } => model::TaskParams::Twitch { broadcaster_id },
            TaskParams::Bilibili { uid } => model::TaskParams::Bilibili { uid },
        }
    }
}

impl From<model::Task> for Task {
    fn from(t: model::Task) -> Self {
        Self {
            id: t.id,
            entity: t.entity,
            params: t.params.into(),
        }
    }
}

impl From<model::Entity> for Entity {
    fn from(e: model::Entity) -> Self {
        Self {
            id: e.id,
            names: e.names,
            default_language: e.default_language,
            group: e.group,
            translate_to: e.translate_to,
            tasks: e.tasks.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<model::Group> for Group {
    fn from(g: model::Group) -> Self {
        Self {
            id: g.id,
            names: g.names,
        }
    }
}

impl From<model::User> for User {
    fn from(u: model::User) -> Self {
        Self {
            id: u.id,
            im: u.im,
            im_chat_id: u.im_chat_id,
            name: u.name,
            language: u.language,
            settings: UserSettings {
                calendar_link: u.settings.calendar_secret_hash.is_some(),
                timezone: u.settings.timezone,
                paused: u.settings.paused,
                reminder_leads: u.settings.reminder_leads,
            },
            created_at: u.created_at,
        }
    }
}

impl From<model::Subscription> for Subscription {
    fn from(s: model::Subscription) -> Self {
        Self {
            user: s.user,
            entity: s.entity,
            kinds: s.kinds,
            mention: s.mention,
        }
    }
}

impl From<&model::User> for Settings {
    fn from(u: &model::User) -> Self {
        Self {
            language: u.language.clone(),
            timezone: u.settings.timezone.clone(),
            paused: u.settings.paused,
            reminder_leads: u.settings.reminder_leads.clone(),
            calendar_link: u.settings.calendar_secret_hash.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_entity_tells_null_from_absent() {
        let absent: UpdateEntity =
            serde_json::from_str(r#"{"id":"00000000-0000-0000-0000-000000000001"}"#).unwrap();
        assert_eq!(absent.group, None);
        let null: UpdateEntity =
            serde_json::from_str(r#"{"id":"00000000-0000-0000-0000-000000000001","group":null}"#)
                .unwrap();
        assert_eq!(null.group, Some(None));
    }

    #[test]
    fn error_codes_round_trip_and_tolerate_new_ones() {
        let code: ErrorCode = serde_json::from_str(r#""not_found""#).unwrap();
        assert_eq!(code, ErrorCode::NotFound);
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{code}\""));
        let code: ErrorCode = serde_json::from_str(r#""brand_new""#).unwrap();
        assert_eq!(code, ErrorCode::Unknown);
    }

    #[test]
    fn task_json_matches_the_model() {
        let task = model::Task {
            id: Uuid::nil(),
            entity: Uuid::nil(),
            params: model::TaskParams::Twitter {
                user_id: "12".into(),
            },
        };
        let ours = Task::from(task.clone());
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            serde_json::to_value(&task).unwrap()
        );
    }
}
