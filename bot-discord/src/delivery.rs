//! Delivery to Discord: the Discord adapter on the shared engine
//! ([`stargazer_delivery`]), which consumes `stargazer.bot.discord`, looks up the channels
//! subscribed to each event, claims and paces them, and acks an event once every channel
//! is sent or recorded failed.
//!
//! What is Discord's: the message is an embed (the headline as its linked title, the
//! title, text or translation, time line as its description, the event's picture as its
//! thumbnail) with a link button, in the channel's language; the REST sender
//! ([`crate::rest`]) keeps to the buckets and the global limit, and its answers decide
//! the job's end:
//!
//! - created (or a 2xx whose answer was unreadable: the message probably exists, and
//!   sending it again could show it twice): recorded `sent`;
//! - a 429: tried again after `retry_after`, up to `max_send_attempts` times;
//! - the channel gone for the bot (deleted, the bot removed or not allowed to post):
//!   recorded failed, and the channel's subscriptions paused through the api, like a
//!   Telegram chat that blocked the bot;
//! - any other refusal of the request: recorded failed;
//! - Discord failing or a refused token: retried, then given back unrecorded so the
//!   event is requeued and resumes with the channels still missing.
//!
//! One message per stream, kept current (as on Telegram, [`stargazer_delivery::streams`]):
//! the first message of a stream's life in a channel (the scheduled announcement, or the
//! live message of a stream not announced ahead) is remembered, and each later event of
//! the stream is posted as usual and then edits that first message to the stream's
//! current state (live now, ended, cancelled, moved), so the first post always shows
//! it. The post comes first: it is the delivery, exactly once per event and channel;
//! the edit is a second step of the same job, and once the post is out a failing edit is
//! given up rather than the event requeued (which would post it again). An edit Discord
//! answers "Unknown Message" (the first message was deleted) forgets the memory, and the
//! post just made becomes the stream's first message. A reminder changes nothing about
//! the stream and edits nothing. The end of a stream (`ended`, `cancelled`) forgets the
//! video's memories once delivered. A later post of the stream (a reminder too) replies
//! to its first message, with `fail_if_not_exists: false`: a first message deleted in
//! the meantime makes the post a plain message rather than a refused one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use stargazer_core::bus::Bus;
use stargazer_core::model::{Entity, Event};
use stargazer_delivery::api::Api;
use stargazer_delivery::claims::{retry_backoff, Claims};
use stargazer_delivery::compose::{notification, truncate, Body, View};
use stargazer_delivery::fanout;
use stargazer_delivery::job::Delivery;
use stargazer_delivery::recorder::Recorder;
use stargazer_delivery::scheduler::{Attempt, Job, Lane, Limits, Order};
use stargazer_delivery::streams::{self, Snapshot};
use stargazer_delivery::{Adapter, Outcome, Parts, Recipient, Role, Settings, Stores};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use twilight_model::id::marker::{ChannelMarker, MessageMarker, RoleMarker};
use twilight_model::id::Id;
use uuid::Uuid;

use crate::config::DiscordConfig;
use crate::rest::{embed, MessageBody, RestClient, SendError};
use crate::IM;

/// How long a stream's first message is remembered. Discord lets a bot edit its own
/// messages for ever, but a stream's life is days at most: past this, a memory only
/// takes room, and the periodic prune drops it.
pub const REMEMBER_FOR: chrono::Duration = chrono::Duration::days(14);

/// How often memories of first messages past [`REMEMBER_FOR`] are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Discord's JSON error code for a message that does not exist (deleted).
const UNKNOWN_MESSAGE: u32 = 10008;

/// Longest embed description Discord accepts, in characters.
const DESCRIPTION_LIMIT: usize = 4096;
/// Longest embed title.
const TITLE_LIMIT: usize = 256;

/// Runs delivery to Discord until `shutdown`, with the engine's metrics in `registry`.
pub async fn run(
    config: &DiscordConfig,
    stores: Stores,
    bus: Arc<dyn Bus>,
    registry: Registry,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let rest = RestClient::new(config)?;
    let api = Api::new(
        IM,
        &config.stargazer_api_url,
        "discord.stargazer_api_url",
        &config.stargazer_api_username,
        &config.stargazer_api_password,
    )?;
    let streams = Arc::new(StreamMemory::new(stores.state.clone(), IM, REMEMBER_FOR));
    let pruner = tokio::spawn(streams.clone().prune_until(PRUNE_EVERY, shutdown.clone()));
    let interval = Duration::from_millis(config.channel_interval_ms);
    let settings = Settings {
        im: IM,
        queue: config.queue.clone(),
        prefetch: config.prefetch,
        limits: Limits {
            global_per_second: config.global_per_second,
            chat_interval: interval,
            group_interval: interval,
            max_in_flight: config.max_in_flight,
            order: Order::Fair,
            paid: None,
        },
        claim_lease: config.claim_lease(),
        only_entities: config.only_entities.clone(),
    };
    let max_attempts = config.max_send_attempts;
    stargazer_delivery::run(settings, api, stores, bus, registry, shutdown, |parts| {
        let Parts {
            api,
            claims,
            recorder,
        } = parts;
        Discord {
            context: Arc::new(Context {
                rest,
                api,
                claims,
                recorder,
                max_attempts,
                streams,
            }),
        }
    })
    .await;
    if let Err(err) = pruner.await {
        tracing::error!(cause = %err, "stream memory pruner panicked");
    }
    Ok(())
}

/// A stream's first message in one channel, as remembered (ids as Discord's strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstMessage {
    /// The channel it is in.
    pub channel: Id<ChannelMarker>,
    /// Its id.
    pub message_id: Id<MessageMarker>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

impl streams::FirstMessage for FirstMessage {
    fn sent_at(&self) -> DateTime<Utc> {
        self.sent_at
    }
}

/// The memories of Discord's first messages (`bot.discord.stream.<video>`).
type StreamMemory = streams::StreamMemory<FirstMessage>;

/// What every Discord job shares.
struct Context {
    rest: RestClient,
    api: Api,
    claims: Arc<Claims>,
    recorder: Recorder,
    max_attempts: u32,
    streams: Arc<StreamMemory>,
}

/// The Discord adapter.
struct Discord {
    context: Arc<Context>,
}

/// An event of a stream's life with the stream's first messages as read when the event
/// was prepared.
struct StreamLife {
    /// The stream's key (`contract::stream_key`).
    video: String,
    /// The part the event plays.
    role: Role,
    /// The first messages by channel id.
    snapshot: Snapshot<FirstMessage>,
}

/// One event on its way to its channels, with its stream's life and the messages
/// composed so far (one per view, language and time zone).
type Fanout = fanout::Fanout<MessageBody, View, StreamLife>;

/// The message a channel reading `language` in `timezone` is shown of `event` in
/// `view`.
fn compose(
    event: &Event,
    entity: &Entity,
    language: &str,
    timezone: Option<&str>,
    view: View,
) -> MessageBody {
    let n = notification(event, entity, language, timezone, view);
    let mut lines: Vec<String> = [&n.title, &n.members, &n.category]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    match &n.body {
        Some(Body::Text(text)) => lines.push(format!("\n{text}")),
        Some(Body::Translated {
            translated,
            label,
            original,
        }) => lines.push(format!("\n{translated}\n> {label}{original}")),
        None => {}
    }
    if let Some(time) = &n.time_line {
        lines.push(format!("\n{time}"));
    }
    let description = truncate(lines.join("\n").trim(), DESCRIPTION_LIMIT);
    let url = n.button.as_ref().map(|(_, url)| url.to_string());
    let body = MessageBody::default().with_embed(embed(
        truncate(&n.headline, TITLE_LIMIT),
        url,
        description,
        n.photo.as_ref().map(ToString::to_string),
    ));
    match n.button {
        Some((label, url)) => body.with_link_button(truncate(&label, 80), url.to_string()),
        // An edit leaves out what it does not name: an empty list removes the old
        // button of a first message whose new state has none (a cancelled stream).
        None if view == View::FirstUpdated => MessageBody {
            components: Some(Vec::new()),
            ..body
        },
        None => body,
    }
}

impl Adapter for Discord {
    type Job = SendJob;
    type Fanout = Fanout;

    async fn fanout(
        &self,
        event: Event,
        entity: Entity,
        shutdown: &CancellationToken,
    ) -> Option<Fanout> {
        let stream = match Role::of(&event) {
            Some((video, role)) => Some(StreamLife {
                // Storage trouble is retried with backoff, as for the delivery log.
                snapshot: self.context.streams.load_until(&video, shutdown).await?,
                video,
                role,
            }),
            None => None,
        };
        Some(Fanout::new(event, entity, stream))
    }

    fn chat_key(&self, chat_id: &str) -> Option<i64> {
        // A channel id is a snowflake: a positive 64-bit number below 2^63 for ages.
        chat_id.parse::<i64>().ok().filter(|id| *id > 0)
    }

    fn job(
        &self,
        fanout: &Arc<Fanout>,
        recipient: Recipient,
        leased_until: tokio::time::Instant,
    ) -> (SendJob, oneshot::Receiver<Outcome>) {
        let (delivery, rx) = Delivery::new(
            IM,
            fanout.event.id,
            recipient,
            leased_until,
            self.context.claims.clone(),
            self.context.recorder.clone(),
        );
        let job = SendJob {
            context: self.context.clone(),
            fanout: fanout.clone(),
            delivery,
            rate_limited: 0,
            edit_failures: 0,
            plan: None,
            posted: None,
        };
        (job, rx)
    }

    async fn delivered(&self, fanout: &Fanout) {
        if let Some(stream) = fanout.stream.as_ref().filter(|s| s.role.ends()) {
            // The stream's life is over and its last edits are done.
            self.context.streams.forget_ended(&stream.video).await;
        }
    }
}

/// One REST call planned for a channel.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The event's own message, replying to the stream's first message `reply_to` if
    /// set, remembered as its stream's first message if `remember`.
    Post {
        remember: bool,
        reply_to: Option<Id<MessageMarker>>,
    },
    /// The stream's first message brought up to this event's state.
    Edit { first: FirstMessage },
}

/// What became of the post of a job, once it went out.
#[derive(Debug, Clone, Copy)]
enum Posted {
    /// Created with this id.
    Message(Id<MessageMarker>),
    /// Discord accepted it but its answer was unreadable: it probably exists, id unknown.
    Unknown,
}

/// One event to one channel: a post, and for a later event of a stream, an edit of the
/// stream's first message.
struct SendJob {
    context: Arc<Context>,
    fanout: Arc<Fanout>,
    delivery: Delivery,
    /// 429s so far.
    rate_limited: u32,
    /// Transient failures of the edit so far.
    edit_failures: u32,
    /// The calls still to make; planned at the first attempt.
    plan: Option<VecDeque<Step>>,
    /// The post, once it went out: nothing may send it again.
    posted: Option<Posted>,
}

impl SendJob {
    /// The REST calls this event needs in `channel`.
    fn plan_for(&self, channel: Id<ChannelMarker>) -> VecDeque<Step> {
        let Some(stream) = &self.fanout.stream else {
            return VecDeque::from([Step::Post {
                remember: false,
                reply_to: None,
            }]);
        };
        let first = self
            .context
            .streams
            .lookup(
                &stream.video,
                &self.delivery.recipient.chat_id,
                &stream.snapshot,
                Utc::now(),
            )
            // A message is edited through its own channel's route.
            .filter(|first| first.channel == channel);
        // A later post of the stream replies to its first message.
        let reply_to = first.map(|first| first.message_id);
        let post = |remember| Step::Post { remember, reply_to };
        let steps = match (stream.role, first) {
            (Role::Opener, _) => vec![post(true)],
            // A reminder changes nothing the first message shows.
            (Role::Reminder, _) => vec![post(false)],
            (Role::Rescheduled | Role::Live | Role::Ended | Role::Cancelled, Some(first)) => {
                vec![post(false), Step::Edit { first }]
            }
            // The channel has no message of the stream yet: this one becomes the first.
            (Role::Rescheduled | Role::Live, None) => vec![post(true)],
            // Nothing left to keep current after an end.
            (Role::Ended | Role::Cancelled, None) => vec![post(false)],
        };
        steps.into()
    }

    /// After a planned call is over: the next one (paced by the scheduler like a new
    /// message), or the record once none is left.
    async fn step_done(&mut self) -> Attempt {
        if let Some(plan) = self.plan.as_mut() {
            plan.pop_front();
        }
        if self.plan.as_ref().is_some_and(|p| !p.is_empty()) {
            return Attempt::Continue;
        }
        self.delivery.record("sent".to_owned(), Outcome::Sent).await
    }

    /// Remembers `message`, just posted in `channel`, as its stream's first message
    /// there.
    async fn remember(&self, channel: Id<ChannelMarker>, message: Id<MessageMarker>) {
        let Some(stream) = &self.fanout.stream else {
            return;
        };
        let first = FirstMessage {
            channel,
            message_id: message,
            sent_at: Utc::now(),
        };
        self.context
            .streams
            .remember_patiently(&stream.video, &self.delivery.recipient.chat_id, first)
            .await;
    }

    /// The post: exactly once per event and channel, so every failure before it went
    /// out leaves the job free to be given back for a later delivery.
    async fn post(
        &mut self,
        chat: i64,
        channel: Id<ChannelMarker>,
        remember: bool,
        reply_to: Option<Id<MessageMarker>>,
    ) -> Attempt {
        let recipient = &self.delivery.recipient;
        let mut message = self.fanout.message(
            View::Message,
            &recipient.language,
            recipient.timezone.as_deref(),
            compose,
        );
        // The composed message is shared by every channel; the reply and the mention are
        // this one's.
        if let Some(first) = reply_to {
            message = Arc::new((*message).clone().replying_to(first));
        }
        if let Some(role) = mention_of(recipient) {
            message = Arc::new((*message).clone().mentioning(role));
        }
        match self.context.rest.try_send_message(channel, &message).await {
            Ok(sent) => {
                self.posted = Some(Posted::Message(sent.id));
                if remember {
                    self.remember(channel, sent.id).await;
                }
                self.step_done().await
            }
            Err(SendError::BadAnswer(cause)) => {
                tracing::debug!(channel_id = chat, %cause, "message accepted, answer unreadable");
                self.posted = Some(Posted::Unknown);
                self.step_done().await
            }
            Err(SendError::RateLimited(wait)) => {
                self.rate_limited += 1;
                if self.rate_limited >= self.context.max_attempts {
                    return self
                        .delivery
                        .defer(format!("rate limited {} times", self.rate_limited));
                }
                Attempt::RetryAfter(wait)
            }
            Err(err @ SendError::Gone { .. }) => {
                // The bot can no longer post here: stop sending until the channel's
                // admins fix it.
                pause(&self.context.api, recipient.user, chat, &err).await;
                self.delivery.fail(err.to_string()).await
            }
            Err(err @ SendError::Invalid { .. }) => {
                tracing::warn!(channel_id = chat, reason = %err, "message refused");
                self.delivery.fail(err.to_string()).await
            }
            Err(err @ (SendError::Unauthorized | SendError::Transient(_))) => {
                self.delivery.retry(&err, self.context.max_attempts)
            }
        }
    }

    /// The edit of the stream's first message, after the post went out: retried while
    /// it may still work, else given up (the delivery itself is done).
    async fn edit(&mut self, chat: i64, first: FirstMessage) -> Attempt {
        let recipient = &self.delivery.recipient;
        let message = self.fanout.message(
            View::FirstUpdated,
            &recipient.language,
            recipient.timezone.as_deref(),
            compose,
        );
        let result = self
            .context
            .rest
            .try_edit_message(first.channel, first.message_id, &message)
            .await;
        let event = self.delivery.event();
        match result {
            // An unreadable answer to a 2xx: the edit was made.
            Ok(_) | Err(SendError::BadAnswer(_)) => self.step_done().await,
            Err(SendError::Invalid { code, .. }) if code == UNKNOWN_MESSAGE => {
                tracing::info!(event_id = %event, channel_id = chat, message_id = %first.message_id, "the stream's first message is gone; the new post takes its place");
                self.first_gone(first.channel).await;
                self.step_done().await
            }
            Err(SendError::RateLimited(wait)) => {
                self.rate_limited += 1;
                if self.rate_limited >= self.context.max_attempts {
                    return self
                        .give_up_edit(chat, format!("rate limited {} times", self.rate_limited))
                        .await;
                }
                Attempt::RetryAfter(wait)
            }
            Err(err @ (SendError::Unauthorized | SendError::Transient(_))) => {
                self.edit_failures += 1;
                if self.edit_failures >= self.context.max_attempts {
                    return self.give_up_edit(chat, err.to_string()).await;
                }
                Attempt::Retry(retry_backoff(self.edit_failures))
            }
            Err(err @ (SendError::Gone { .. } | SendError::Invalid { .. })) => {
                self.give_up_edit(chat, err.to_string()).await
            }
        }
    }

    /// The first message in `channel` was deleted: its memory goes, and the post just
    /// made there (unless the stream is over) is the one later events edit.
    async fn first_gone(&mut self, channel: Id<ChannelMarker>) {
        let Some(stream) = &self.fanout.stream else {
            return;
        };
        let chat_id = &self.delivery.recipient.chat_id;
        if let Err(cause) = self
            .context
            .streams
            .forget_chat(&stream.video, chat_id, Utc::now())
            .await
        {
            tracing::warn!(video_id = %stream.video, chat_id = %chat_id, %cause, "could not forget a deleted first message");
        }
        if let (false, Some(Posted::Message(posted))) = (stream.role.ends(), self.posted) {
            self.remember(channel, posted).await;
        }
    }

    /// Gives up the edit once the post went out: giving the event back would post it
    /// again, so the delivery is recorded as it stands.
    async fn give_up_edit(&mut self, chat: i64, reason: String) -> Attempt {
        tracing::warn!(event_id = %self.delivery.event(), channel_id = chat, %reason, "could not edit the stream's first message; given up");
        if let Some(plan) = self.plan.as_mut() {
            plan.clear();
        }
        self.delivery.record("sent".to_owned(), Outcome::Sent).await
    }
}

impl Job for SendJob {
    fn lane(&self) -> Lane {
        stargazer_delivery::lane(&self.fanout.event)
    }

    async fn attempt(&mut self, chat: i64, _paid: bool) -> Attempt {
        // Once the post is out, the job finishes whoever holds the claim now: the claim
        // guards against posting twice, and nothing will post again.
        if self.posted.is_none() {
            if let Some(end) = self.delivery.hold_claim().await {
                return end;
            }
        }
        // `chat_key` let only positive ids through.
        let Some(channel) = u64::try_from(chat).ok().and_then(Id::new_checked) else {
            return self
                .delivery
                .fail(format!("invalid channel id {chat}"))
                .await;
        };
        if self.plan.is_none() {
            self.plan = Some(self.plan_for(channel));
        }
        match self.plan.as_ref().and_then(|p| p.front()).copied() {
            Some(Step::Post { remember, reply_to }) => {
                self.post(chat, channel, remember, reply_to).await
            }
            Some(Step::Edit { first }) => self.edit(chat, first).await,
            // Every plan has a post; an empty one has nothing left but the record.
            None => self.delivery.record("sent".to_owned(), Outcome::Sent).await,
        }
    }
}

/// Pauses the subscriptions of `user`, whose channel is gone for the bot.
async fn pause(api: &Api, user: Uuid, channel: i64, reason: &SendError) {
    match api.set_paused(user, true).await {
        Ok(()) => {
            tracing::info!(channel_id = channel, %reason, "channel gone for the bot; subscriptions paused")
        }
        Err(cause) => {
            tracing::warn!(channel_id = channel, %cause, "could not pause the channel's subscriptions")
        }
    }
}
/// The role a recipient's subscription pings, if it names one. The api lets any short
/// word through; on Discord only a role id (a snowflake) means something, so anything
/// else is logged and ignored rather than posted as text.
fn mention_of(recipient: &Recipient) -> Option<Id<RoleMarker>> {
    let mention = recipient.mention.as_deref()?;
    match mention.parse::<u64>().ok().and_then(Id::new_checked) {
        Some(role) => Some(role),
        None => {
            tracing::warn!(chat = %recipient.chat_id, mention, "a mention that is not a role id; posting without it");
            None
        }
    }
}
