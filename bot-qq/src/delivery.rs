//! Delivery to QQ: the QQ adapter on the shared engine ([`stargazer_delivery`]), which
//! consumes `stargazer.bot.qq`, looks up the chats subscribed to each event, claims and
//! paces them, and acks an event once every chat is sent or recorded failed.
//!
//! A QQ chat id, as the api stores it, is `group:<group number>` or `private:<QQ
//! number>`; groups are paced one message per `qq.group_interval_ms` (the scheduler's
//! group gap), everything at `qq.global_per_second`. The message is plain text (headline,
//! title, text or translation, time, the link) with the event's picture as an image
//! segment, in the chat's language. The implementation's answers decide the job's end:
//!
//! - sent: recorded `sent`;
//! - risk control: the chat waits (longer with each refusal, the overall pace slows) and
//!   the send is tried again, up to `max_send_attempts` times, then given back;
//! - the bot removed from the group, or muted there: recorded failed, and the chat's
//!   subscriptions paused through the api;
//! - an invalid request: recorded failed;
//! - the implementation down or a refused token: retried, then given back unrecorded so
//!   the event is requeued and resumes with the chats still missing.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::model::{Entity, Event};
use stargazer_delivery::api::Api;
use stargazer_delivery::claims::Claims;
use stargazer_delivery::compose::{notification, truncate, Body, View};
use stargazer_delivery::fanout;
use stargazer_delivery::job::Delivery;
use stargazer_delivery::recorder::Recorder;
use stargazer_delivery::scheduler::{Attempt, Job, Lane, Limits, Order};
use stargazer_delivery::{Adapter, Outcome, Parts, Recipient, Settings, Stores};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::QqConfig;
use crate::message::Message;
use crate::onebot::{ApiError, OneBotClient};
use crate::IM;

/// Longest text the bot sends in one message, in characters (QQ takes about 4,500; long
/// messages are folded or refused by some implementations).
pub(crate) const TEXT_LIMIT: usize = 3000;

/// The first wait after a risk-control refusal; it doubles with each one.
const RISK_CONTROL_WAIT: Duration = Duration::from_secs(5);

/// The chat id of a group, as the api stores it.
pub fn group_chat_id(group: i64) -> String {
    format!("group:{group}")
}

/// The chat id of a private chat, as the api stores it.
pub fn private_chat_id(user: i64) -> String {
    format!("private:{user}")
}

/// The scheduler's key of a QQ chat id: minus the group number for a group, the QQ
/// number for a private chat; `None` for anything else.
fn chat_key(chat_id: &str) -> Option<i64> {
    let number = |text: &str| text.parse::<i64>().ok().filter(|n| *n > 0);
    match chat_id.split_once(':')? {
        ("group", group) => number(group).map(|g| -g),
        ("private", user) => number(user),
        _ => None,
    }
}

/// The Stargazer api client for QQ chats, with the bot's service account.
pub fn api(config: &QqConfig) -> crate::Result<Api> {
    Ok(Api::new(
        IM,
        &config.stargazer_api_url,
        "qq.stargazer_api_url",
        &config.stargazer_api_username,
        &config.stargazer_api_password,
    )?)
}

/// Runs delivery to QQ until `shutdown`, with the engine's metrics in `registry`.
pub async fn run(
    config: &QqConfig,
    stores: Stores,
    bus: Arc<dyn Bus>,
    registry: Registry,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let client = Arc::new(OneBotClient::new(config)?);
    run_with(config, client, stores, bus, registry, shutdown).await
}

/// [`run`] sending through `client`, which command replies share: one account speaks,
/// so one pace must cover everything it says.
pub async fn run_with(
    config: &QqConfig,
    client: Arc<OneBotClient>,
    stores: Stores,
    bus: Arc<dyn Bus>,
    registry: Registry,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let api = api(config)?;
    let settings = Settings {
        im: IM,
        queue: config.queue.clone(),
        prefetch: config.prefetch,
        limits: Limits {
            global_per_second: config.global_per_second,
            // One account speaks: private chats get the group gap too.
            chat_interval: config.group_interval(),
            group_interval: config.group_interval(),
            max_in_flight: 4,
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
        Qq {
            context: Arc::new(Context {
                client,
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

/// What every QQ job shares.
struct Context {
    client: Arc<OneBotClient>,
    api: Api,
    claims: Arc<Claims>,
    recorder: Recorder,
    max_attempts: u32,
}

/// The QQ adapter.
struct Qq {
    context: Arc<Context>,
}

/// One event on its way to its chats, with the messages composed so far (one per
/// language and time zone).
type Fanout = fanout::Fanout<Message>;

/// The message a chat reading `language` in `timezone` gets for `event`.
fn compose(event: &Event, entity: &Entity, language: &str, timezone: Option<&str>) -> Message {
    let n = notification(event, entity, language, timezone, View::Message);
    let mut lines = vec![n.headline.clone()];
    lines.extend(
        [&n.title, &n.members, &n.category]
            .into_iter()
            .flatten()
            .cloned(),
    );
    match &n.body {
        Some(Body::Text(text)) => lines.push(format!("\n{text}")),
        Some(Body::Translated {
            translated,
            label,
            original,
        }) => lines.push(format!("\n{translated}\n{label}{original}")),
        None => {}
    }
    if let Some(time) = &n.time_line {
        lines.push(format!("\n{time}"));
    }
    if let Some((label, url)) = &n.button {
        lines.push(format!("{label}: {url}"));
    }
    let message = Message::new().text(truncate(&lines.join("\n"), TEXT_LIMIT));
    match &n.photo {
        Some(photo) => message.image(photo.to_string()),
        None => message,
    }
}

impl Adapter for Qq {
    type Job = SendJob;
    type Fanout = Fanout;

    async fn fanout(&self, event: Event, entity: Entity, _: &CancellationToken) -> Option<Fanout> {
        Some(Fanout::new(event, entity, None))
    }

    fn chat_key(&self, chat_id: &str) -> Option<i64> {
        chat_key(chat_id)
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
            refused: 0,
        };
        (job, rx)
    }

    async fn delivered(&self, _: &Fanout) {}
}

/// One event to one chat.
struct SendJob {
    context: Arc<Context>,
    fanout: Arc<Fanout>,
    delivery: Delivery,
    /// Risk-control refusals so far.
    refused: u32,
}

impl Job for SendJob {
    fn lane(&self) -> Lane {
        stargazer_delivery::lane(&self.fanout.event)
    }

    async fn attempt(&mut self, chat: i64, _paid: bool) -> Attempt {
        if let Some(end) = self.delivery.hold_claim().await {
            return end;
        }
        let recipient = &self.delivery.recipient;
        // QQ has one view of an event.
        let message = self.fanout.message(
            (),
            &recipient.language,
            recipient.timezone.as_deref(),
            |event, entity, language, timezone, ()| compose(event, entity, language, timezone),
        );
        let sent = if chat < 0 {
            self.context.client.send_group_msg(-chat, &message).await
        } else {
            self.context.client.send_private_msg(chat, &message).await
        };
        match sent {
            Ok(_) => self.delivery.record("sent".to_owned(), Outcome::Sent).await,
            Err(ApiError::RateLimited { .. }) => {
                self.refused += 1;
                if self.refused >= self.context.max_attempts {
                    return self
                        .delivery
                        .defer(format!("refused by risk control {} times", self.refused));
                }
                Attempt::RetryAfter(RISK_CONTROL_WAIT * (1 << self.refused.min(6)) / 2)
            }
            Err(err @ ApiError::Gone { .. }) => {
                // The bot can no longer speak here: stop sending until the group's admins
                // fix it.
                let chat_id = recipient.chat_id.clone();
                match self.context.api.set_paused(recipient.user, true).await {
                    Ok(()) => {
                        tracing::info!(%chat_id, reason = %err, "chat gone for the bot; subscriptions paused")
                    }
                    Err(cause) => {
                        tracing::warn!(%chat_id, %cause, "could not pause the chat's subscriptions")
                    }
                }
                self.delivery.fail(err.to_string()).await
            }
            Err(err @ ApiError::Invalid(_)) => {
                tracing::warn!(chat_id = %recipient.chat_id, reason = %err, "message refused");
                self.delivery.fail(err.to_string()).await
            }
            Err(err @ (ApiError::Unauthorized { .. } | ApiError::Transient(_))) => {
                self.delivery.retry(&err, self.context.max_attempts)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_are_groups_or_private_chats() {
        assert_eq!(chat_key(&group_chat_id(123456)), Some(-123456));
        assert_eq!(chat_key(&private_chat_id(10001)), Some(10001));
        for bad in [
            "123",
            "group:",
            "group:-5",
            "private:x",
            "channel:1",
            "group:0",
        ] {
            assert_eq!(chat_key(bad), None, "{bad}");
        }
    }
}
