//! One event to one chat, as a scheduler [`Job`]: make sure this instance still holds the
//! chat's claim ([`stargazer_delivery::claims`]), make the Bot API calls the event needs in that chat, interpret Telegram's answers, hand the
//! outcome to the [`Recorder`] (which reports it once it is in the log).
//!
//! Most events are one new message. An event of a stream's life (see
//! [`super::streams`]) is planned per chat from the stream's first message there: a
//! reply to it and/or an edit of it, or nothing at all for an end the chat never saw
//! begin (recorded as settled, never retried). Each call is paced by the scheduler like
//! a message ([`Attempt::Continue`] between them), an edit answered "message is not
//! modified" counts as done, and one Telegram no longer allows (not found, too old) is
//! given up quietly for that chat.
//!
//! A job moves through stages (and through its planned calls) so that a retry never
//! repeats a step that succeeded, and a message that went out is never sent again by
//! this job: recording it (retried by the recorder while storage blinks) is all that is
//! left.
//!
//! Only Telegram's permanent refusals end a job with a `failed` record: 400 (bad
//! request) and 403 (blocked, kicked, deactivated). Transient failures — 5xx, network
//! errors, a bad token, 429s past the retry budget — are retried a few times in place
//! and then given back unrecorded ([`Outcome::Deferred`]): the event is requeued and a
//! later delivery sends to this chat once Telegram is back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use stargazer_core::contract::field;
use stargazer_core::model::DeliveryRecord;
use teloxide::payloads::{
    EditMessageCaptionSetters, EditMessageTextSetters, SendMessageSetters, SendPhotoSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, LinkPreviewOptions, MessageId,
    ParseMode, ReplyParameters,
};
use teloxide::{ApiError, Bot, RequestError};
use tokio::sync::oneshot;
use uuid::Uuid;

use stargazer_delivery::api::Api;
use stargazer_delivery::claims::{Claims, Recheck};
use stargazer_delivery::recorder::Recorder;
use stargazer_delivery::scheduler::{Attempt, Job, Lane};
use stargazer_delivery::{Outcome, Recipient, Role};

use super::compose::{compose_view, scheduled_start, Composed, View};
use super::streams::{FirstMessage, Snapshot, StreamMemory};
use crate::telegram::{classify, Failure};
use crate::IM;

/// What every send job needs, shared by all of them.
pub(crate) struct SendContext {
    /// The Bot API client.
    pub bot: Bot,
    /// The Stargazer api (pausing blocked chats, following migrations).
    pub api: Api,
    /// This instance's claims on deliveries.
    pub claims: Arc<Claims>,
    /// Writes the delivery log in batches.
    pub recorder: Recorder,
    /// Attempts on transient errors (and 429s) before a message is given back unsent
    /// for its event to be requeued.
    pub max_attempts: u32,
    /// The first message of each stream in each chat.
    pub streams: Arc<StreamMemory>,
}

/// The log entry saying `(event, chat)` was handled with `status`, now.
fn delivery_record(event: Uuid, chat: &str, status: &str) -> DeliveryRecord {
    stargazer_delivery::delivery_record(IM, event, chat, status)
}

/// An event of a stream's life with the stream's first messages as read when the event
/// was prepared.
pub(crate) struct StreamLife {
    /// The YouTube video id.
    pub video: String,
    /// The part the event plays.
    pub role: Role,
    /// The first messages by chat id.
    pub snapshot: Snapshot,
}

/// One event on its way to its recipients: the event, its entity, its stream's life
/// when it is part of one, and the messages composed so far (one per view, language and
/// time zone, shared by every chat that reads them).
pub(crate) type Fanout = stargazer_delivery::fanout::Fanout<Composed, View, StreamLife>;

/// The reminder lead of a chat that chose none, minutes: the one the worker marks
/// `lead_default`.
pub(crate) const DEFAULT_LEAD_MINUTES: u32 = 30;

/// One Bot API call planned for a chat.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A new message in `view`, replying to `reply_to` if set, remembered as its
    /// stream's first message if `remember`.
    Send {
        view: View,
        reply_to: Option<i32>,
        remember: bool,
    },
    /// The stream's first message brought up to date.
    Edit { first: FirstMessage },
}

/// How an edit Telegram refused ends, when it is not a failure of the delivery.
enum EditEnd {
    /// "message is not modified": it already shows this.
    Unchanged,
    /// The message is gone or too old to edit: nothing more to do in this chat.
    Gone(String),
}

/// Sorts out the refusals of an edit that end it without failing the delivery.
fn edit_end(err: &RequestError) -> Option<EditEnd> {
    let RequestError::Api(api) = err else {
        return None;
    };
    match api {
        ApiError::MessageNotModified => Some(EditEnd::Unchanged),
        ApiError::MessageToEditNotFound
        | ApiError::MessageCantBeEdited
        | ApiError::MessageIdInvalid => Some(EditEnd::Gone(api.to_string())),
        ApiError::Unknown(text)
            if text.contains("message to edit not found")
                || text.contains("message can't be edited")
                || text.contains("in the message to edit") =>
        {
            Some(EditEnd::Gone(text.clone()))
        }
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Stage {
    Send,
    Record { chats: Vec<String>, status: String },
    Pause { reason: String },
    Migrate { to: i64 },
}

/// A scheduler job delivering one event to one chat.
pub(crate) struct SendJob {
    sends: Arc<SendContext>,
    fanout: Arc<Fanout>,
    recipient: Recipient,
    /// When this instance's claim on the chat runs out unless renewed.
    leased_until: tokio::time::Instant,
    stage: Stage,
    attempts: u32,
    rate_limited: u32,
    moves: u32,
    as_text: bool,
    /// The calls still to make; planned at the first attempt.
    plan: Option<VecDeque<Step>>,
    /// Whether a call went through (a message sent, an edit made).
    delivered: bool,
    /// Why a planned edit was given up.
    gave_up: Option<String>,
    /// Whether the current attempt took a paid-broadcast token: a new message goes out
    /// with `allow_paid_broadcast` (edits have no such flag).
    paid: bool,
    outcome: Option<Outcome>,
    done: Option<oneshot::Sender<Outcome>>,
}

/// Migrations followed for one message before it is recorded failed (a chat migrates
/// once; more means something is wrong).
const MAX_MOVES: u32 = 3;

/// A `retry_after` longer than this is not waited out with the event unacked (the broker
/// would time the consumer out): the message is given back at once, and the chat stays
/// held for the whole wait.
const LONGEST_HELD_RETRY_AFTER: Duration = Duration::from_secs(60);

use stargazer_delivery::claims::retry_backoff as backoff;

impl SendJob {
    /// A job for a chat whose claim this instance won, leased until `leased_until`, and
    /// the receiver that learns its outcome (dropped unfinished on shutdown).
    pub(crate) fn new(
        sends: Arc<SendContext>,
        fanout: Arc<Fanout>,
        recipient: Recipient,
        leased_until: tokio::time::Instant,
    ) -> (Self, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let job = Self {
            sends,
            fanout,
            recipient,
            leased_until,
            stage: Stage::Send,
            attempts: 0,
            rate_limited: 0,
            moves: 0,
            as_text: false,
            plan: None,
            delivered: false,
            gave_up: None,
            paid: false,
            outcome: None,
            done: Some(tx),
        };
        (job, rx)
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(done) = self.done.take() {
            // The event's tracker may be gone (shutdown); nothing to tell then.
            let _ = done.send(outcome);
        }
    }

    fn event_id(&self) -> Uuid {
        self.fanout.event.id
    }

    /// Both chat ids the log knows this delivery under: the one sent to and, after a
    /// migration, the one the api gave.
    fn log_keys(&self, chat: i64) -> Vec<String> {
        let sent_to = chat.to_string();
        if sent_to == self.recipient.chat_id {
            vec![sent_to]
        } else {
            vec![sent_to, self.recipient.chat_id.clone()]
        }
    }

    fn markup(message: &Composed) -> Option<InlineKeyboardMarkup> {
        message.button.as_ref().map(|(label, url)| {
            InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::url(
                label.clone(),
                url.clone(),
            )]])
        })
    }

    fn link_preview(message: &Composed) -> LinkPreviewOptions {
        LinkPreviewOptions {
            is_disabled: message.button.is_none(),
            url: None,
            prefer_small_media: false,
            prefer_large_media: false,
            show_above_text: false,
        }
    }

    /// Sends `message` to `chat`, replying to `reply_to` when set (and sent anyway if
    /// that message is gone); answers the new message's id and whether it is a photo.
    async fn send(
        &self,
        chat: i64,
        message: &Composed,
        reply_to: Option<i32>,
    ) -> Result<(i32, bool), RequestError> {
        let bot = &self.sends.bot;
        let markup = Self::markup(message);
        let reply =
            reply_to.map(|id| ReplyParameters::new(MessageId(id)).allow_sending_without_reply());
        match (&message.photo, self.as_text) {
            (Some(photo), false) => {
                let mut request = bot
                    .send_photo(ChatId(chat), InputFile::url(photo.clone()))
                    .caption(message.html.clone())
                    .parse_mode(ParseMode::Html)
                    .allow_paid_broadcast(self.paid);
                if let Some(markup) = markup {
                    request = request.reply_markup(markup);
                }
                if let Some(reply) = reply {
                    request = request.reply_parameters(reply);
                }
                request.await.map(|sent| (sent.id.0, true))
            }
            _ => {
                let mut request = bot
                    .send_message(ChatId(chat), message.html_long.clone())
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(Self::link_preview(message))
                    .allow_paid_broadcast(self.paid);
                if let Some(markup) = markup {
                    request = request.reply_markup(markup);
                }
                if let Some(reply) = reply {
                    request = request.reply_parameters(reply);
                }
                request.await.map(|sent| (sent.id.0, false))
            }
        }
    }

    /// Replaces the text (or caption) and button of the stream's first message with
    /// `message`; no button removes the old one.
    async fn edit(&self, first: &FirstMessage, message: &Composed) -> Result<(), RequestError> {
        let bot = &self.sends.bot;
        let markup = Self::markup(message);
        let (chat, id) = (ChatId(first.chat), MessageId(first.message_id));
        if first.photo {
            let mut request = bot
                .edit_message_caption(chat, id)
                .caption(message.html.clone())
                .parse_mode(ParseMode::Html);
            if let Some(markup) = markup {
                request = request.reply_markup(markup);
            }
            request.await.map(|_| ())
        } else {
            let mut request = bot
                .edit_message_text(chat, id, message.html_long.clone())
                .parse_mode(ParseMode::Html)
                .link_preview_options(Self::link_preview(message));
            if let Some(markup) = markup {
                request = request.reply_markup(markup);
            }
            request.await.map(|_| ())
        }
    }

    /// Whether a stream moved earlier, to a start the chat's longest reminder lead has
    /// already passed (so the chat would miss its reminder): then it gets a short notice.
    fn moved_into_lead(&self, now: DateTime<Utc>) -> bool {
        let event = &self.fanout.event;
        let (Some(start), Some(previous)) = (
            scheduled_start(event),
            event
                .fields
                .get(field::PREVIOUS_START)
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc)),
        ) else {
            return false;
        };
        let lead = self
            .recipient
            .reminder_leads
            .iter()
            .copied()
            .max()
            .unwrap_or(DEFAULT_LEAD_MINUTES);
        start < previous && now + chrono::Duration::minutes(i64::from(lead)) > start
    }

    /// The Bot API calls this event needs in `chat`.
    fn plan_for(&self, chat: i64) -> VecDeque<Step> {
        let message = |reply_to, remember| Step::Send {
            view: View::Message,
            reply_to,
            remember,
        };
        let Some(stream) = &self.fanout.stream else {
            return VecDeque::from([message(None, false)]);
        };
        let now = Utc::now();
        let first = self.sends.streams.lookup(
            &stream.video,
            &self.recipient.chat_id,
            &stream.snapshot,
            now,
        );
        // A reply can only point at a message of the same chat.
        let reply_to = first.filter(|f| f.chat == chat).map(|f| f.message_id);
        let steps = match (stream.role, first) {
            (Role::Opener, _) => vec![message(None, true)],
            (Role::Rescheduled, Some(first)) => {
                let mut steps = vec![Step::Edit { first }];
                if self.moved_into_lead(now) {
                    steps.push(Step::Send {
                        view: View::MovedEarlier,
                        reply_to,
                        remember: false,
                    });
                }
                steps
            }
            (Role::Reminder, _) => vec![message(reply_to, false)],
            (Role::Live, Some(first)) => vec![message(reply_to, false), Step::Edit { first }],
            // The chat has no message of the stream yet: this one becomes the first.
            (Role::Rescheduled | Role::Live, None) => vec![message(None, true)],
            (Role::Ended | Role::Cancelled, Some(first)) => vec![Step::Edit { first }],
            // Never announce the end of something the chat did not see begin.
            (Role::Ended | Role::Cancelled, None) => {
                self.skip_reason("no message of the stream to edit");
                Vec::new()
            }
        };
        steps.into()
    }

    fn skip_reason(&self, reason: &str) {
        tracing::debug!(event_id = %self.event_id(), chat_id = %self.recipient.chat_id, reason, "nothing to deliver to this chat");
    }

    /// Remembers the message just sent as its stream's first message in this chat. A
    /// memory that cannot be stored costs later edits, not this delivery: it is tried a
    /// few times, then given up with a warning.
    async fn remember(&self, chat: i64, message_id: i32, photo: bool) {
        let Some(stream) = &self.fanout.stream else {
            return;
        };
        let first = FirstMessage {
            chat,
            message_id,
            photo,
            sent_at: Utc::now(),
        };
        self.sends
            .streams
            .remember_patiently(&stream.video, &self.recipient.chat_id, first)
            .await;
    }

    /// After a planned call is over: the next one (paced by the scheduler), or the
    /// record once there is none left.
    fn step_done(&mut self, chat: i64) -> Option<Attempt> {
        if let Some(plan) = self.plan.as_mut() {
            plan.pop_front();
        }
        if self.plan.as_ref().is_some_and(|p| !p.is_empty()) {
            return Some(Attempt::Continue);
        }
        let (status, outcome) = if self.delivered {
            ("sent".to_owned(), Outcome::Sent)
        } else {
            let reason = self
                .gave_up
                .clone()
                .unwrap_or_else(|| "no message of the stream to edit".to_owned());
            (format!("skipped: {reason}"), Outcome::NothingToDo)
        };
        self.outcome = Some(outcome);
        self.stage = Stage::Record {
            chats: self.log_keys(chat),
            status,
        };
        None
    }

    /// Gives up the calls left once one already went through: a later delivery of the
    /// event would repeat that one (the message would arrive twice), so the delivery is
    /// recorded as it stands.
    fn abandon_rest(&mut self, chat: i64, reason: String) -> Option<Attempt> {
        tracing::warn!(event_id = %self.event_id(), chat_id = chat, %reason, "telegram unavailable after part of a delivery; the rest is given up");
        self.gave_up = Some(reason);
        if let Some(plan) = self.plan.as_mut() {
            plan.clear();
        }
        self.step_done(chat)
    }

    /// Makes sure this instance still holds the chat's claim before a call that could
    /// deliver: a claim no longer known to be leased (renewals failing, a long wait in the
    /// queue) is claimed again, since another instance may have taken it over. `None` to
    /// go on, else how the attempt ends.
    async fn hold_claim(&mut self) -> Option<Attempt> {
        if self.delivered {
            return None;
        }
        let event = self.event_id();
        match self
            .sends
            .claims
            .recheck(event, &self.recipient.chat_id, &mut self.leased_until)
            .await
        {
            Recheck::Held => None,
            Recheck::Lost(outcome) => {
                self.finish(outcome);
                Some(Attempt::Skipped)
            }
            Recheck::Unknown => Some(Attempt::Retry(backoff(self.attempts.min(5)))),
        }
    }

    /// The send stage: claim check and plan (once), then the next planned call and what
    /// Telegram's answer leads to.
    async fn attempt_send(&mut self, chat: i64) -> Option<Attempt> {
        let event = self.event_id();
        if let Some(end) = self.hold_claim().await {
            return Some(end);
        }
        if self.plan.is_none() {
            self.plan = Some(self.plan_for(chat));
        }
        let Some(step) = self.plan.as_ref().and_then(|p| p.front()).copied() else {
            // Nothing to do in this chat: settled without a call.
            return self.step_done(chat);
        };
        let (language, timezone) = (
            self.recipient.language.clone(),
            self.recipient.timezone.clone(),
        );
        let (result, is_photo) = match step {
            Step::Send {
                view,
                reply_to,
                remember,
            } => {
                let message =
                    self.fanout
                        .message(view, &language, timezone.as_deref(), compose_view);
                match self.send(chat, &message, reply_to).await {
                    Ok((id, photo)) => {
                        if remember {
                            self.remember(chat, id, photo).await;
                        }
                        (Ok(()), message.photo.is_some())
                    }
                    Err(err) => (Err(err), message.photo.is_some()),
                }
            }
            Step::Edit { first } => {
                let message = self.fanout.message(
                    View::FirstUpdated,
                    &language,
                    timezone.as_deref(),
                    compose_view,
                );
                match self.edit(&first, &message).await {
                    Ok(()) => (Ok(()), false),
                    Err(err) => match edit_end(&err) {
                        Some(EditEnd::Unchanged) => (Ok(()), false),
                        Some(EditEnd::Gone(reason)) => {
                            tracing::debug!(event_id = %event, chat_id = first.chat, message_id = first.message_id, %reason, "first message cannot be edited; giving up on it");
                            self.gave_up = Some(reason);
                            return self.step_done(chat);
                        }
                        None => (Err(err), false),
                    },
                }
            }
        };
        let failure = match result {
            Ok(()) => {
                self.delivered = true;
                return self.step_done(chat);
            }
            Err(err) => classify(&err),
        };
        let editing = matches!(step, Step::Edit { .. });
        match failure {
            Failure::RetryAfter(wait) => {
                self.rate_limited += 1;
                if self.rate_limited >= self.sends.max_attempts || wait > LONGEST_HELD_RETRY_AFTER {
                    let reason = format!("429 Too Many Requests (retry after {wait:?})");
                    if self.delivered {
                        return self.abandon_rest(chat, reason);
                    }
                    tracing::warn!(event_id = %event, chat_id = chat, %reason, answers = self.rate_limited, "rate limited past the retry budget; requeueing");
                    self.finish(Outcome::Deferred(reason));
                    Some(Attempt::Deferred(wait))
                } else {
                    Some(Attempt::RetryAfter(wait))
                }
            }
            // The first message's chat moved or refuses it: the edit is over, the
            // delivery is not failed for it.
            Failure::Migrated(_) | Failure::Rejected(_) if editing => {
                tracing::warn!(event_id = %event, chat_id = chat, ?failure, "edit refused; giving up on it");
                self.gave_up = Some(format!("edit refused: {failure:?}"));
                self.step_done(chat)
            }
            Failure::Migrated(to) => {
                tracing::info!(event_id = %event, chat_id = chat, to, "chat migrated to a supergroup");
                self.moves += 1;
                if self.moves > MAX_MOVES {
                    self.fail(chat, format!("chat keeps migrating (last to {to})"));
                } else {
                    self.stage = Stage::Migrate { to };
                }
                None
            }
            Failure::Forbidden(reason) => {
                tracing::info!(event_id = %event, chat_id = chat, %reason, "chat refuses messages; pausing it");
                self.stage = Stage::Pause { reason };
                None
            }
            Failure::Rejected(reason) if is_photo && !self.as_text => {
                // A picture Telegram cannot fetch must not cost the chat its message.
                tracing::info!(event_id = %event, chat_id = chat, %reason, "photo refused; sending as text");
                self.as_text = true;
                Some(Attempt::Retry(Duration::ZERO))
            }
            Failure::Rejected(reason) => {
                tracing::warn!(event_id = %event, chat_id = chat, %reason, "message refused");
                self.fail(chat, reason);
                None
            }
            Failure::Transient(reason) => {
                self.attempts += 1;
                if self.attempts >= self.sends.max_attempts {
                    // Not final: nothing is recorded, so a later delivery of the event
                    // sends to this chat once Telegram answers again.
                    if self.delivered {
                        return self.abandon_rest(chat, reason);
                    }
                    tracing::warn!(event_id = %event, chat_id = chat, %reason, attempts = self.attempts, "telegram unavailable; message given back for a later delivery");
                    self.finish(Outcome::Deferred(reason));
                    Some(Attempt::Deferred(Duration::ZERO))
                } else {
                    tracing::debug!(event_id = %event, chat_id = chat, %reason, "transient send failure");
                    Some(Attempt::Retry(backoff(self.attempts)))
                }
            }
        }
    }

    fn fail(&mut self, chat: i64, reason: String) {
        self.stage = Stage::Record {
            chats: self.log_keys(chat),
            status: format!("failed: {reason}"),
        };
        self.outcome = Some(Outcome::Failed(reason));
    }
}

impl Job for SendJob {
    fn lane(&self) -> Lane {
        stargazer_delivery::lane(&self.fanout.event)
    }

    async fn attempt(&mut self, chat: i64, paid: bool) -> Attempt {
        self.paid = paid;
        loop {
            match self.stage.clone() {
                Stage::Send => {
                    if let Some(result) = self.attempt_send(chat).await {
                        return result;
                    }
                }
                Stage::Record { chats, status } => {
                    // The recorder stores the records (retrying if it must) and only then
                    // reports the outcome; the chat is free for its next message now.
                    let event = self.event_id();
                    let records = chats
                        .iter()
                        .map(|key| delivery_record(event, key, &status))
                        .collect();
                    let outcome = self.outcome.take().unwrap_or(Outcome::Sent);
                    if let Some(done) = self.done.take() {
                        self.sends
                            .recorder
                            .finish_after_recording(records, done, outcome)
                            .await;
                    }
                    return Attempt::Done;
                }
                Stage::Pause { reason } => {
                    match self.sends.api.set_paused(self.recipient.user, true).await {
                        Ok(()) => {}
                        Err(err)
                            if err.is_transient()
                                && self.attempts + 1 < self.sends.max_attempts =>
                        {
                            self.attempts += 1;
                            tracing::warn!(user = %self.recipient.user, cause = %err, "could not pause chat; will retry");
                            return Attempt::Retry(backoff(self.attempts));
                        }
                        // Not pausing only means the next event tries (and pauses) again.
                        Err(err) => {
                            tracing::warn!(user = %self.recipient.user, cause = %err, "could not pause chat")
                        }
                    }
                    self.fail(chat, reason);
                }
                Stage::Migrate { to } => {
                    match self.sends.api.move_chat(self.recipient.user, to).await {
                        Ok(()) => {}
                        Err(err) if err.is_transient() => {
                            self.attempts += 1;
                            tracing::warn!(user = %self.recipient.user, cause = %err, "could not record chat migration; will retry");
                            return Attempt::Retry(backoff(self.attempts.min(5)));
                        }
                        // The message still goes to where the chat now lives.
                        Err(err) => {
                            tracing::warn!(user = %self.recipient.user, to, cause = %err, "api refused the chat migration")
                        }
                    }
                    self.stage = Stage::Send;
                    return Attempt::Moved(to);
                }
            }
        }
    }
}
