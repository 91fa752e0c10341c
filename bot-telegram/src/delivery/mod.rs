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
use stargazer_core::backoff::Backoff;
use stargazer_core::bus::Bus;
use stargazer_core::model::{Entity, Event};
use stargazer_core::wait::sleep_unless_cancelled;
use stargazer_delivery::api::Api;
use stargazer_delivery::scheduler::{Limits, Order, PaidBroadcast};
use stargazer_delivery::{Adapter, Outcome, Parts, Recipient, Role, Settings, Stores};
use teloxide::Bot;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::BotConfig;
use crate::IM;
use send::{Fanout, SendContext, SendJob, StreamLife};
use streams::StreamMemory;

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
    let streams = Arc::new(StreamMemory::new(stores.state.clone()));
    let pruner = tokio::spawn(prune_streams(streams.clone(), shutdown.clone()));
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
                snapshot: self.load_stream(&video, shutdown).await?,
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
        // The stream's life is over and its last edits are done. A failure leaves the
        // memories to the periodic prune.
        let video = &stream.video;
        match self.sends.streams.forget(video, chrono::Utc::now()).await {
            Ok(chats) => tracing::debug!(video_id = %video, chats, "stream memories forgotten"),
            Err(cause) => {
                tracing::warn!(video_id = %video, %cause, "could not forget stream memories")
            }
        }
    }
}

impl Telegram {
    /// The memories of `video`'s first messages, read once for the event; `None` on
    /// shutdown (storage trouble is retried with backoff, as for the delivery log).
    async fn load_stream(
        &self,
        video: &str,
        shutdown: &CancellationToken,
    ) -> Option<streams::Snapshot> {
        let mut backoff = Backoff::default();
        loop {
            let loaded = tokio::select! {
                _ = shutdown.cancelled() => return None,
                loaded = self.sends.streams.load(video) => loaded,
            };
            match loaded {
                Ok(snapshot) => return Some(snapshot),
                Err(cause) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(video_id = video, %cause, retry_in_ms = wait.as_millis() as u64, "stream memory unavailable");
                    if sleep_unless_cancelled(wait, shutdown).await.is_cancelled() {
                        return None;
                    }
                }
            }
        }
    }
}

/// Prunes the memories of streams' first messages past the edit window, at start and
/// then every [`PRUNE_EVERY`], until `shutdown`.
async fn prune_streams(streams: Arc<StreamMemory>, shutdown: CancellationToken) {
    loop {
        match streams.prune(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(
                videos = pruned,
                "pruned first-message memories past the edit window"
            ),
            Err(cause) => tracing::warn!(%cause, "could not prune first-message memories"),
        }
        if sleep_unless_cancelled(PRUNE_EVERY, &shutdown)
            .await
            .is_cancelled()
        {
            return;
        }
    }
}
