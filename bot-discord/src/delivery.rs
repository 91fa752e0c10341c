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
//! Each event is one new message: lifecycle edits of a stream's first message (as on
//! Telegram) are not done on Discord yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::model::{Entity, Event};
use stargazer_core::sync::lock;
use stargazer_delivery::api::Api;
use stargazer_delivery::claims::Claims;
use stargazer_delivery::compose::{notification, truncate, Body, View};
use stargazer_delivery::job::Delivery;
use stargazer_delivery::recorder::Recorder;
use stargazer_delivery::scheduler::{Attempt, Job, Lane, Limits, Order};
use stargazer_delivery::{Adapter, Outcome, Parts, Recipient, Settings, Stores};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use twilight_model::id::Id;
use uuid::Uuid;

use crate::config::DiscordConfig;
use crate::rest::{embed, MessageBody, RestClient, SendError};
use crate::IM;

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
            }),
        }
    })
    .await;
    Ok(())
}

/// What every Discord job shares.
struct Context {
    rest: RestClient,
    api: Api,
    claims: Arc<Claims>,
    recorder: Recorder,
    max_attempts: u32,
}

/// The Discord adapter.
struct Discord {
    context: Arc<Context>,
}

/// What a composed message depends on besides the event: language and time zone.
type ReaderKey = (String, Option<String>);

/// One event on its way to its channels, with the messages composed so far (one per
/// language and time zone).
struct Fanout {
    event: Event,
    entity: Entity,
    composed: Mutex<HashMap<ReaderKey, Arc<MessageBody>>>,
}

impl Fanout {
    fn message(&self, language: &str, timezone: Option<&str>) -> Arc<MessageBody> {
        let key = (language.to_owned(), timezone.map(str::to_owned));
        lock(&self.composed)
            .entry(key)
            .or_insert_with(|| Arc::new(compose(&self.event, &self.entity, language, timezone)))
            .clone()
    }
}

/// The message a channel reading `language` in `timezone` gets for `event`.
fn compose(event: &Event, entity: &Entity, language: &str, timezone: Option<&str>) -> MessageBody {
    let n = notification(event, entity, language, timezone, View::Message);
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
        None => body,
    }
}

impl Adapter for Discord {
    type Job = SendJob;
    type Fanout = Fanout;

    async fn fanout(&self, event: Event, entity: Entity, _: &CancellationToken) -> Option<Fanout> {
        Some(Fanout {
            event,
            entity,
            composed: Mutex::new(HashMap::new()),
        })
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
        };
        (job, rx)
    }

    async fn delivered(&self, _: &Fanout) {}
}

/// One event to one channel.
struct SendJob {
    context: Arc<Context>,
    fanout: Arc<Fanout>,
    delivery: Delivery,
    /// 429s so far.
    rate_limited: u32,
}

impl Job for SendJob {
    fn lane(&self) -> Lane {
        stargazer_delivery::lane(&self.fanout.event)
    }

    async fn attempt(&mut self, chat: i64, _paid: bool) -> Attempt {
        if let Some(end) = self.delivery.hold_claim().await {
            return end;
        }
        // `chat_key` let only positive ids through.
        let Some(channel) = u64::try_from(chat).ok().and_then(Id::new_checked) else {
            return self
                .delivery
                .fail(format!("invalid channel id {chat}"))
                .await;
        };
        let recipient = &self.delivery.recipient;
        let message = self
            .fanout
            .message(&recipient.language, recipient.timezone.as_deref());
        match self.context.rest.try_send_message(channel, &message).await {
            Ok(_) | Err(SendError::BadAnswer(_)) => {
                self.delivery.record("sent".to_owned(), Outcome::Sent).await
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
