//! Delivery to Telegram: the Telegram adapter on the shared engine
//! ([`stargazer_delivery`]), which consumes `stargazer.bot.telegram`, looks up who wants
//! each event, claims and paces the chats, and acks an event once every recipient is
//! sent or recorded failed.
//!
//! What is Telegram's: composing the message in HTML per chat language and time zone
//! ([`compose`]), the Bot API calls and their answers ([`send`]: 400 and 403 are
//! permanent, a 429's `retry_after` is waited out, a group that became a supergroup is
//! followed), and one message per stream in each chat ([`streams`]): events of a
//! stream's life reply to and edit the stream's first message in each chat; an edit is a
//! delivery of its event like a message.

pub(crate) mod compose;
pub(crate) mod send;
pub(crate) mod streams;

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use stargazer_core::bus::Bus;
use stargazer_core::model::{Entity, Event};
use stargazer_delivery::api::Api;
use stargazer_delivery::scheduler::{Limits, Order, PaidBroadcast};
use stargazer_delivery::{Adapter, Outcome, Parts, Recipient, Role, Settings, Stores};
use teloxide::Bot;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::BotConfig;
use crate::IM;
use send::{Fanout, SendContext, SendJob, StreamLife};

/// How often memories of streams' first messages past the edit window are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs the delivery half of the bot until `shutdown`.
pub(crate) async fn run(
    bot: Bot,
    api: Api,
    stores: Stores,
    bus: Arc<dyn Bus>,
    config: Arc<BotConfig>,
    registry: Registry,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let streams = Arc::new(streams::memory(stores.state.clone()));
    let pruner = tokio::spawn(streams.clone().prune_until(PRUNE_EVERY, shutdown.clone()));
    let settings = Settings {
        im: IM,
        queue: config.queue.clone(),
        prefetch: config.prefetch,
        limits: Limits {
            global_per_second: config.global_per_second,
            chat_interval: config.chat_interval(),
            group_interval: config.group_interval(),
            max_in_flight: config.max_in_flight,
            order: if config.fair_fanout {
                Order::Fair
            } else {
                Order::Arrival
            },
            paid: (config.paid_broadcast_per_second > 0.0).then_some(PaidBroadcast {
                per_second: config.paid_broadcast_per_second,
                daily_budget: config.paid_broadcast_daily_budget,
            }),
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
        Telegram {
            sends: Arc::new(SendContext {
                bot,
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

/// The Telegram adapter: what the engine's jobs for Telegram share.
struct Telegram {
    sends: Arc<SendContext>,
}

impl Adapter for Telegram {
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
                snapshot: self.sends.streams.load_until(&video, shutdown).await?,
                video,
                role,
            }),
            None => None,
        };
        Some(Fanout::new(event, entity, stream))
    }

    fn chat_key(&self, chat_id: &str) -> Option<i64> {
        chat_id.parse().ok()
    }

    fn job(
        &self,
        fanout: &Arc<Fanout>,
        recipient: Recipient,
        leased_until: tokio::time::Instant,
    ) -> (SendJob, oneshot::Receiver<Outcome>) {
        SendJob::new(self.sends.clone(), fanout.clone(), recipient, leased_until)
    }

    async fn delivered(&self, fanout: &Fanout) {
        let Some(stream) = fanout.stream.as_ref().filter(|s| s.role.ends()) else {
            return;
        };
        // The stream's life is over and its last edits are done.
        self.sends.streams.forget_ended(&stream.video).await;
    }
}
