//! One message to one chat, as a scheduler [`Job`]: check the delivery log, send,
//! interpret Telegram's answer, hand the outcome to the [`Recorder`] (which reports it
//! once it is in the log).
//!
//! A job moves through stages so that a retry never repeats a step that succeeded, and
//! a message that went out is never sent again by this job: recording it (retried by the
//! recorder while storage blinks) is all that is left.
//!
//! Only Telegram's permanent refusals end a job with a `failed` record: 400 (bad
//! request) and 403 (blocked, kicked, deactivated). Transient failures — 5xx, network
//! errors, a bad token, 429s past the retry budget — are retried a few times in place
//! and then given back unrecorded ([`Outcome::Deferred`]): the event is requeued and a
//! later delivery sends to this chat once Telegram is back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use stargazer_core::model::{DeliveryRecord, Entity, Event};
use stargazer_core::storage::DeliveryStore;
use teloxide::payloads::{SendMessageSetters, SendPhotoSetters};
use teloxide::prelude::Requester;
use teloxide::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, LinkPreviewOptions, ParseMode,
};
use teloxide::Bot;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::compose::{compose, Composed};
use super::recorder::Recorder;
use super::scheduler::{Attempt, Job};
use crate::api::Api;
use crate::telegram::{classify, Failure};
use crate::IM;
use stargazer_core::sync::lock;

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Sent now.
    Sent,
    /// The delivery log already had it.
    AlreadyDone,
    /// Could not be sent; the failure is recorded with this reason.
    Failed(String),
    /// Not sent because of a transient failure, and not recorded: the event must be
    /// delivered again (to this chat and the others still missing) later.
    Deferred(String),
}

/// What every send job needs, shared by all of them.
pub(crate) struct SendContext {
    /// The Bot API client.
    pub bot: Bot,
    /// The Stargazer api (pausing blocked chats, following migrations).
    pub api: Api,
    /// The delivery log lives here (read directly, written through `recorder`).
    pub storage: Arc<dyn DeliveryStore>,
    /// Writes the delivery log in batches.
    pub recorder: Recorder,
    /// Attempts on transient errors (and 429s) before a message is given back unsent
    /// for its event to be requeued.
    pub max_attempts: u32,
}

impl SendContext {
    /// Which of `chats` are in the delivery log for `event`, in one storage query.
    pub(crate) async fn delivered(
        &self,
        event: Uuid,
        chats: &[String],
    ) -> Result<HashSet<String>, String> {
        self.storage
            .delivered_chats(event, IM, chats)
            .await
            .map_err(|e| e.to_string())
    }

    async fn record(&self, event: Uuid, chat: &str, status: &str) -> Result<(), String> {
        // An already recorded key is as good as recorded.
        self.recorder
            .record(delivery_record(event, chat, status))
            .await
    }
}

/// The log entry saying `(event, chat)` was handled with `status`, now.
fn delivery_record(event: Uuid, chat: &str, status: &str) -> DeliveryRecord {
    DeliveryRecord {
        event,
        im: IM.to_owned(),
        chat_id: chat.to_owned(),
        status: status.to_owned(),
        at: Utc::now(),
    }
}

/// What a composed message depends on besides the event: language and time zone.
type ReaderKey = (String, Option<String>);

/// One event on its way to its recipients: the event, its entity, and the messages
/// composed so far (one per language and time zone, shared by every chat that reads
/// them).
pub(crate) struct Fanout {
    /// The event.
    pub event: Event,
    /// The entity it is about.
    pub entity: Entity,
    composed: Mutex<HashMap<ReaderKey, Arc<Composed>>>,
}

impl Fanout {
    /// A fan-out of `event` about `entity`.
    pub(crate) fn new(event: Event, entity: Entity) -> Self {
        Self {
            event,
            entity,
            composed: Mutex::new(HashMap::new()),
        }
    }

    fn message(&self, language: &str, timezone: Option<&str>) -> Arc<Composed> {
        let key = (language.to_owned(), timezone.map(str::to_owned));
        let mut cache = lock(&self.composed);
        cache
            .entry(key)
            .or_insert_with(|| Arc::new(compose(&self.event, &self.entity, language, timezone)))
            .clone()
    }
}

/// Who receives a message.
#[derive(Debug, Clone)]
pub(crate) struct Recipient {
    /// The Stargazer user.
    pub user: Uuid,
    /// The chat id the api gave (the delivery log is keyed by it).
    pub chat_id: String,
    /// Language of the message.
    pub language: String,
    /// Time zone of times in the message.
    pub timezone: Option<String>,
}

impl From<crate::api::Subscriber> for Recipient {
    fn from(subscriber: crate::api::Subscriber) -> Self {
        Self {
            user: subscriber.user,
            chat_id: subscriber.chat_id,
            language: subscriber.language,
            timezone: subscriber.timezone,
        }
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
    stage: Stage,
    attempts: u32,
    rate_limited: u32,
    moves: u32,
    as_text: bool,
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

/// Waits between retries of storage or api calls and of transient send failures.
fn backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << attempt.min(7));
    Duration::from_millis(ms.min(30_000))
}

impl SendJob {
    /// A job and the receiver that learns its outcome (dropped unfinished on shutdown).
    pub(crate) fn new(
        sends: Arc<SendContext>,
        fanout: Arc<Fanout>,
        recipient: Recipient,
    ) -> (Self, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let job = Self {
            sends,
            fanout,
            recipient,
            stage: Stage::Send,
            attempts: 0,
            rate_limited: 0,
            moves: 0,
            as_text: false,
            outcome: None,
            done: Some(tx),
        };
        (job, rx)
    }

    /// Records a recipient whose chat id is not a Telegram chat id as failed. If even
    /// that cannot be recorded the job is dropped unfinished, so the event is retried.
    pub(crate) async fn record_invalid(mut self) {
        let event = self.event_id();
        let chat = self.recipient.chat_id.clone();
        let reason = format!("invalid chat id `{chat}`");
        match self
            .sends
            .record(event, &chat, &format!("failed: {reason}"))
            .await
        {
            Ok(()) => self.finish(Outcome::Failed(reason)),
            Err(cause) => {
                tracing::warn!(event_id = %event, chat_id = %chat, %cause, "could not record delivery")
            }
        }
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

    async fn send(&self, chat: i64, message: &Composed) -> Result<(), teloxide::RequestError> {
        let bot = &self.sends.bot;
        let markup = message.button.as_ref().map(|(label, url)| {
            InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::url(
                label.clone(),
                url.clone(),
            )]])
        });
        match (&message.photo, self.as_text) {
            (Some(photo), false) => {
                let mut request = bot
                    .send_photo(ChatId(chat), InputFile::url(photo.clone()))
                    .caption(message.html.clone())
                    .parse_mode(ParseMode::Html);
                if let Some(markup) = markup {
                    request = request.reply_markup(markup);
                }
                request.await.map(|_| ())
            }
            _ => {
                let mut request = bot
                    .send_message(ChatId(chat), message.html_long.clone())
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(LinkPreviewOptions {
                        is_disabled: message.button.is_none(),
                        url: None,
                        prefer_small_media: false,
                        prefer_large_media: false,
                        show_above_text: false,
                    });
                if let Some(markup) = markup {
                    request = request.reply_markup(markup);
                }
                request.await.map(|_| ())
            }
        }
    }

    /// The send stage: log check, send, and what Telegram's answer leads to.
    async fn attempt_send(&mut self, chat: i64) -> Option<Attempt> {
        let event = self.event_id();
        // Checked again here, not only when the event was queued: another bot process may
        // have sent a redelivered copy of the event meanwhile.
        match self.sends.delivered(event, &self.log_keys(chat)).await {
            Ok(logged) if !logged.is_empty() => {
                self.finish(Outcome::AlreadyDone);
                return Some(Attempt::Skipped);
            }
            Ok(_) => {}
            Err(cause) => {
                tracing::warn!(event_id = %event, chat_id = chat, %cause, "delivery log unavailable; will retry");
                return Some(Attempt::Retry(backoff(self.attempts.min(5))));
            }
        }
        let message = self
            .fanout
            .message(&self.recipient.language, self.recipient.timezone.as_deref());
        let failure = match self.send(chat, &message).await {
            Ok(()) => {
                self.outcome = Some(Outcome::Sent);
                self.stage = Stage::Record {
                    chats: self.log_keys(chat),
                    status: "sent".to_owned(),
                };
                return None;
            }
            Err(err) => classify(&err),
        };
        match failure {
            Failure::RetryAfter(wait) => {
                self.rate_limited += 1;
                if self.rate_limited >= self.sends.max_attempts || wait > LONGEST_HELD_RETRY_AFTER {
                    let reason = format!("429 Too Many Requests (retry after {wait:?})");
                    tracing::warn!(event_id = %event, chat_id = chat, %reason, answers = self.rate_limited, "rate limited past the retry budget; requeueing");
                    self.finish(Outcome::Deferred(reason));
                    Some(Attempt::Deferred(wait))
                } else {
                    Some(Attempt::RetryAfter(wait))
                }
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
            Failure::Rejected(reason) if message.photo.is_some() && !self.as_text => {
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
    async fn attempt(&mut self, chat: i64) -> Attempt {
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
