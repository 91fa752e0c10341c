//! The event endpoint: the OneBot implementation's HTTP POST reporting
//! (`communication/http-post.md` of the spec) delivers every event of the QQ account here.
//!
//! With a secret configured, every report must carry `X-Signature: sha1=<hex>`, the
//! HMAC-SHA1 of the raw body keyed with the secret; [`Verified`] checks it (in constant
//! time) before anything reads the body, and a missing or wrong signature is answered 401
//! with nothing processed. Bodies over [`MAX_BODY_BYTES`] are answered 413.
//!
//! Message events are parsed into [`MessageEvent`]s (a `message` in array or string
//! format, CQ codes decoded); other events (heartbeats, notices, requests) are
//! acknowledged and ignored. A message whose text is one of the bot's commands
//! ([`Command`]) is handed to a channel as a [`CommandRequest`], for
//! [`crate::commands`] to answer; who may give which command is decided there, with the
//! sender's role confirmed by the implementation rather than read from the report. An
//! unknown `/command` is passed on from private chats only: in a group it is likely
//! another bot's.
//!
//! Every processed report is answered `204 No Content`, which the protocol reads as "no
//! quick operation": replies go through the HTTP API instead, paced like every send, so
//! a report is never held open for a reply's turn. A command arriving while the command
//! queue is full is answered `503` (and logged), not taken and lost.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha1::Sha1;
use tokio::sync::mpsc;

use crate::message::{AtTarget, Message, Segment};

/// Largest report accepted. A text message is a few KiB at most; a report quoting a long
/// forwarded message can be larger, but nothing the bot reads needs more than this.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The path reports are POSTed to (the implementation's `http_post.url` ends with it).
pub const EVENTS_PATH: &str = "/onebot/event";

/// What the endpoint needs: the secret reports are signed with, and where commands go.
#[derive(Clone)]
pub struct EventsState {
    secret: Option<Arc<[u8]>>,
    commands: mpsc::Sender<CommandRequest>,
}

impl EventsState {
    /// State checking signatures against `secret` (`None`: reports are not checked, for
    /// an implementation configured without one) and handing commands to `commands`.
    pub fn new(secret: Option<&str>, commands: mpsc::Sender<CommandRequest>) -> Self {
        Self {
            secret: secret.map(|s| Arc::from(s.as_bytes())),
            commands,
        }
    }
}

/// The endpoint's router: `POST` [`EVENTS_PATH`].
pub fn router(state: EventsState) -> Router {
    Router::new()
        .route(EVENTS_PATH, post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// A secret is configured and the report carries no `X-Signature`.
    #[error("missing signature")]
    MissingSignature,
    /// The signature is malformed or does not match the body.
    #[error("invalid signature")]
    BadSignature,
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body too large")]
    TooLarge,
    /// The body is not a OneBot event.
    #[error("not a OneBot event: {0}")]
    BadBody(String),
}

impl EventError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingSignature | Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for EventError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        tracing::debug!(cause = %self, status = status.as_u16(), "event report refused");
        (status, self.to_string()).into_response()
    }
}

/// A report body whose signature verified (or that needs none); refuses everything else.
#[derive(Debug)]
pub struct Verified(pub Bytes);

impl FromRequest<EventsState> for Verified {
    type Rejection = EventError;

    async fn from_request(request: Request, state: &EventsState) -> Result<Self, Self::Rejection> {
        let signature = signature_header(request.headers());
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    EventError::TooLarge
                } else {
                    EventError::BadBody(rejection.body_text())
                }
            })?;
        if let Some(secret) = &state.secret {
            let signature = signature.ok_or(EventError::MissingSignature)?;
            verify(secret, &signature, &body)?;
        }
        Ok(Verified(body))
    }
}

fn signature_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Checks `X-Signature` (`sha1=<40 hex digits>`) against the HMAC-SHA1 of `body`.
pub fn verify(secret: &[u8], signature: &str, body: &[u8]) -> Result<(), EventError> {
    let hex_digest = signature
        .trim()
        .strip_prefix("sha1=")
        .ok_or(EventError::BadSignature)?;
    let mut expected = [0u8; 20];
    hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| EventError::BadSignature)?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| EventError::BadSignature)
}

/// Where a message was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chat {
    /// A group, by group number.
    Group(i64),
    /// The private chat with this QQ account.
    Private(i64),
}

/// The sender's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The group's owner.
    Owner,
    /// An administrator.
    Admin,
    /// An ordinary member.
    Member,
}

/// Who wrote a message, as the report describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Their QQ number.
    pub user_id: i64,
    /// Their nickname.
    pub nickname: String,
    /// Their group card; empty when unset or private.
    pub card: String,
    /// Their role in the group; `None` in private chats (or when not reported).
    pub role: Option<Role>,
}

/// A message event (`post_type: "message"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The bot's own QQ number.
    pub self_id: i64,
    /// When it was written, unix seconds.
    pub time: i64,
    /// Where.
    pub chat: Chat,
    /// `normal`, `anonymous`, `notice` (groups); `friend`, `group`, `other` (private).
    pub sub_type: String,
    /// The message's id.
    pub message_id: i64,
    /// Who wrote it.
    pub sender: Sender,
    /// The message, CQ codes decoded.
    pub message: Message,
}

impl MessageEvent {
    /// The text a command is read from: the text segments, so that a command written
    /// after a mention of the bot (`@Stargazer /list`) still starts the text.
    pub fn text(&self) -> String {
        self.message.plain_text()
    }

    /// Whether the message mentions the bot.
    pub fn mentions_bot(&self) -> bool {
        self.message
            .segments
            .iter()
            .any(|s| matches!(s, Segment::At(AtTarget::User(id)) if *id == self.self_id))
    }

    /// Whether the report says the sender may change the chat: anybody privately, the
    /// owner or an administrator in a group. Only what the report claims (the field may
    /// be missing or stale): [`crate::commands`] asks the implementation before acting.
    pub fn may_command(&self) -> bool {
        match self.chat {
            Chat::Private(_) => true,
            Chat::Group(_) => matches!(self.sender.role, Some(Role::Owner | Role::Admin)),
        }
    }
}

/// The bot's text commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/subscribe <name>`: subscribe the chat to an entity.
    Subscribe {
        /// What follows the command (may be empty).
        query: String,
    },
    /// `/unsubscribe <name>`: remove a subscription.
    Unsubscribe {
        /// What follows the command (may be empty).
        query: String,
    },
    /// `/list`: the chat's subscriptions.
    List,
    /// `/lang [code]`: the chat's language.
    Lang {
        /// The language asked for, if given.
        language: Option<String>,
    },
    /// `/settings`: a link to the web settings.
    Settings,
    /// `/delete` asks to confirm; `/delete confirm` forgets the chat.
    Delete {
        /// Whether `confirm` followed.
        confirmed: bool,
    },
    /// `/help`: what the bot does and its commands.
    Help,
    /// A `/word` that is none of the above (perhaps another bot's command).
    Unknown {
        /// The word after the slash, lower-cased.
        name: String,
    },
}

impl Command {
    /// Reads a command from the start of `text` (`/name args`, the name in any case,
    /// a full-width `／` accepted as QQ's input methods produce it); `None` for anything
    /// else. A name of letters, digits and `_` that is not the bot's is
    /// [`Command::Unknown`]; anything else after a slash (`/微笑`, `/ hi`, a lone `/`) is
    /// no command at all.
    pub fn parse(text: &str) -> Option<Command> {
        let text = text.trim();
        let rest = text.strip_prefix('/').or_else(|| text.strip_prefix('／'))?;
        let (name, args) = match rest.split_once(char::is_whitespace) {
            Some((name, args)) => (name, args.trim()),
            None => (rest, ""),
        };
        match name.to_lowercase().as_str() {
            "subscribe" => Some(Command::Subscribe {
                query: args.to_owned(),
            }),
            "unsubscribe" => Some(Command::Unsubscribe {
                query: args.to_owned(),
            }),
            "list" => Some(Command::List),
            "lang" => Some(Command::Lang {
                language: args.split_whitespace().next().map(str::to_owned),
            }),
            "settings" => Some(Command::Settings),
            "delete" => Some(Command::Delete {
                confirmed: args
                    .split_whitespace()
                    .next()
                    .is_some_and(|word| word.eq_ignore_ascii_case("confirm")),
            }),
            "help" => Some(Command::Help),
            name if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Some(Command::Unknown {
                    name: name.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// A command someone gave, with the event it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// The message it was read from.
    pub event: MessageEvent,
    /// The command.
    pub command: Command,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    post_type: String,
    #[serde(default)]
    time: i64,
    #[serde(default)]
    self_id: i64,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    sub_type: String,
    #[serde(default)]
    message_id: i64,
    #[serde(default)]
    user_id: i64,
    #[serde(default)]
    group_id: Option<i64>,
    #[serde(default)]
    message: Value,
    #[serde(default)]
    sender: RawSender,
}

#[derive(Debug, Default, Deserialize)]
struct RawSender {
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    nickname: String,
    #[serde(default)]
    card: String,
    #[serde(default)]
    role: Option<String>,
}

/// Parses a report; `Ok(None)` for events other than messages.
pub fn parse_event(body: &[u8]) -> Result<Option<MessageEvent>, EventError> {
    let raw: RawEvent =
        serde_json::from_slice(body).map_err(|err| EventError::BadBody(err.to_string()))?;
    if raw.post_type != "message" {
        return Ok(None);
    }
    let chat = match (raw.message_type.as_deref(), raw.group_id) {
        (Some("group"), Some(group)) => Chat::Group(group),
        (Some("private"), _) => Chat::Private(raw.user_id),
        (other, _) => {
            return Err(EventError::BadBody(format!(
                "message_type {other:?} without the fields it needs"
            )))
        }
    };
    let message =
        Message::from_json(&raw.message).map_err(|err| EventError::BadBody(err.to_string()))?;
    let role = match raw.sender.role.as_deref() {
        Some("owner") => Some(Role::Owner),
        Some("admin") => Some(Role::Admin),
        Some("member") => Some(Role::Member),
        _ => None,
    };
    Ok(Some(MessageEvent {
        self_id: raw.self_id,
        time: raw.time,
        chat,
        sub_type: raw.sub_type,
        message_id: raw.message_id,
        sender: Sender {
            user_id: raw.sender.user_id.unwrap_or(raw.user_id),
            nickname: raw.sender.nickname,
            card: raw.sender.card,
            role: if matches!(chat, Chat::Group(_)) {
                role
            } else {
                None
            },
        },
        message,
    }))
}

async fn handle(
    State(state): State<EventsState>,
    Verified(body): Verified,
) -> Result<StatusCode, EventError> {
    let Some(event) = parse_event(&body)? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let Some(command) = Command::parse(&event.text()) else {
        return Ok(StatusCode::NO_CONTENT);
    };
    // Groups often hold several bots; one answering every command it does not know
    // would talk over the others.
    if matches!(command, Command::Unknown { .. }) && matches!(event.chat, Chat::Group(_)) {
        return Ok(StatusCode::NO_CONTENT);
    }
    tracing::debug!(chat = ?event.chat, ?command, "command");
    // The report is answered at once: the implementation waits for the answer. A full
    // queue (replies far behind already) is said as 503 rather than a 204 for a command
    // that will not run.
    if let Err(err) = state.commands.try_send(CommandRequest { event, command }) {
        tracing::warn!(cause = %err, "command refused: the queue is full or closed");
        return Ok(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised() {
        assert_eq!(
            Command::parse("  /Subscribe  Hoshimachi Suisei "),
            Some(Command::Subscribe {
                query: "Hoshimachi Suisei".into()
            })
        );
        assert_eq!(
            Command::parse("／unsubscribe x"),
            Some(Command::Unsubscribe { query: "x".into() })
        );
        assert_eq!(Command::parse("/list"), Some(Command::List));
        assert_eq!(
            Command::parse("/lang ja extra"),
            Some(Command::Lang {
                language: Some("ja".into())
            })
        );
        assert_eq!(
            Command::parse("/lang"),
            Some(Command::Lang { language: None })
        );
        assert_eq!(
            Command::parse("/delete"),
            Some(Command::Delete { confirmed: false })
        );
        assert_eq!(
            Command::parse("/DELETE  Confirm"),
            Some(Command::Delete { confirmed: true })
        );
        assert_eq!(
            Command::parse("/delete everything"),
            Some(Command::Delete { confirmed: false })
        );
        assert_eq!(Command::parse("/settings"), Some(Command::Settings));
        assert_eq!(Command::parse("／help me"), Some(Command::Help));
        assert_eq!(
            Command::parse("/Roll 2d6"),
            Some(Command::Unknown {
                name: "roll".into()
            })
        );
        for not_a_command in ["list", "hi /list", "/", "/ list", "/微笑", "/:)"] {
            assert_eq!(Command::parse(not_a_command), None, "{not_a_command}");
        }
    }

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"post_type":"meta_event"}"#;
        let mut mac = Hmac::<Sha1>::new_from_slice(b"secret").unwrap();
        mac.update(body);
        let good = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        verify(b"secret", &good, body).unwrap();
        assert!(verify(b"other", &good, body).is_err());
        assert!(verify(b"secret", &good, b"{}").is_err());
        assert!(verify(b"secret", good.trim_start_matches("sha1="), body).is_err());
        assert!(verify(b"secret", "sha1=zz", body).is_err());
    }

    #[test]
    fn events_parse_in_both_formats() {
        let array = serde_json::json!({
            "time": 1, "self_id": 10, "post_type": "message", "message_type": "group",
            "sub_type": "normal", "message_id": 5, "user_id": 7, "group_id": 99,
            "message": [{"type": "at", "data": {"qq": "10"}}, {"type": "text", "data": {"text": " /list"}}],
            "raw_message": "[CQ:at,qq=10] /list",
            "sender": {"user_id": 7, "nickname": "n", "card": "c", "role": "admin"},
        });
        let event = parse_event(array.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(event.chat, Chat::Group(99));
        assert_eq!(event.sender.role, Some(Role::Admin));
        assert!(event.mentions_bot() && event.may_command());
        assert_eq!(Command::parse(&event.text()), Some(Command::List));

        let string = serde_json::json!({
            "time": 1, "self_id": 10, "post_type": "message", "message_type": "private",
            "sub_type": "friend", "message_id": 6, "user_id": 8,
            "message": "/subscribe &#91;A&#93; &amp; B[CQ:face,id=1]",
            "sender": {"user_id": 8, "nickname": "m"},
        });
        let event = parse_event(string.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(event.chat, Chat::Private(8));
        assert_eq!(event.text(), "/subscribe [A] & B");
        assert_eq!(event.sender.role, None);

        let heartbeat = br#"{"post_type":"meta_event","meta_event_type":"heartbeat"}"#;
        assert_eq!(parse_event(heartbeat).unwrap(), None);
        assert!(parse_event(b"[]").is_err());
        assert!(parse_event(br#"{"post_type":"message","message_type":"group"}"#).is_err());
    }
}
