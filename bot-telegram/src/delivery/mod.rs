//! Delivery of ready events: consume `stargazer.bot.telegram`, look up who wants each
//! event, queue one message per chat with the [`scheduler`], and ack the event once
//! every recipient is sent or recorded failed.
//!
//! Only a permanent refusal (400, 403) is recorded as failed. When Telegram is
//! unavailable (5xx, network errors, a bad token, 429s past the retry budget) a message
//! is retried a few times and then given back unrecorded; once the event's other
//! recipients are settled, the event is requeued after a pause that grows with every
//! such requeue (bounded, see [`OUTAGE_BACKOFF_MAX`]) and is reset by the next event
//! that goes out whole. Its next delivery skips every chat already in the log, so the
//! fan-out resumes with the chats still missing, and goes on until Telegram is back.
//!
//! Events are taken one at a time up to the point where their messages are queued, so
//! each chat's messages are queued — and, per chat, sent — in the order the events
//! arrived; their sending then overlaps (up to `prefetch` events are unacked at once).
//! An event whose entity or subscribers cannot be looked up because the api is down is
//! retried with backoff, never acked or dropped; one that can never be handled (bad
//! JSON, unknown entity) is dead-lettered with the reason.
//!
//! Who gets an event: the subscribers the api names for its kind, narrowed by the
//! event's gates (`Subscription::wants_event`: premieres, members-only videos) and, for
//! a reminder, by the chat's chosen reminder leads (`UserSettings::wants_reminder`).
//! Events of a stream's life reply to and edit the stream's first message in each chat
//! ([`streams`], [`send`]); an edit is a delivery of its event like a message.
//!
//! Exactly-once per (event, chat) rests on the delivery log in storage: recipients
//! already in it are skipped (checked per chat just before sending and, for redelivered
//! events, also when queueing, in one lookup for all of the event's chats; records are
//! written in batches by the [`recorder`]), and a duplicate delivery of an event still
//! being fanned out waits for the first one to finish instead of racing it.

pub(crate) mod compose;
pub(crate) mod recorder;
pub(crate) mod scheduler;
pub(crate) mod send;
pub(crate) mod streams;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, Registry};
use stargazer_core::backoff::Backoff;
use stargazer_core::bus::{Bus, BusError, Consumer, Delivery, QueueSpec};
use stargazer_core::contract::field;
use stargazer_core::model::{Event, Subscription, UserSettings};
use stargazer_core::routing::READY_PATTERN;
use stargazer_core::storage::{DeliveryStore, StateStore};
use stargazer_core::telemetry::register_int_counter_vec;
use stargazer_core::wait::sleep_unless_cancelled;
use teloxide::Bot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{Api, ApiError};
use crate::config::BotConfig;
use crate::Result;
use recorder::Recorder;
use scheduler::{Limits, SchedulerHandle};
use send::{Fanout, Outcome, Recipient, Role, SendContext, SendJob, StreamLife};
use stargazer_core::sync::lock;
use streams::StreamMemory;

/// First pause before an event whose messages Telegram could not take is requeued.
pub(crate) const OUTAGE_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest pause before such a requeue (the pause doubles with every consecutive one).
pub(crate) const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often memories of streams' first messages past the edit window are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What delivery keeps in storage.
pub(crate) struct Stores {
    /// The delivery log.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// The first message of each stream in each chat.
    pub state: Arc<dyn StateStore>,
}

/// Runs the delivery half of the bot until `shutdown`.
pub(crate) async fn run(
    bot: Bot,
    api: Api,
    stores: Stores,
    bus: Arc<dyn Bus>,
    config: Arc<BotConfig>,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<()> {
    let Stores {
        deliveries: storage,
        state,
    } = stores;
    let streams = Arc::new(StreamMemory::new(state));
    let pruner = tokio::spawn(prune_streams(streams.clone(), shutdown.clone()));
    let limits = Limits {
        global_per_second: config.global_per_second,
        chat_interval: config.chat_interval(),
        group_interval: config.group_interval(),
        max_in_flight: config.max_in_flight,
    };
    // The scheduler stops on its own token, cancelled only once no new event can be
    // accepted, so that it never drops jobs of an event still being queued.
    let scheduler_stop = CancellationToken::new();
    let (scheduler, scheduler_task) = scheduler::start::<SendJob>(limits, scheduler_stop.clone());
    let scheduler_task = tokio::spawn(scheduler_task);
    scheduler.stats().register(&registry);
    let settled = register_int_counter_vec(
        &registry,
        "stargazer_bot_events_total",
        "Ready events by how they were settled: delivered, dead_lettered, requeued, ignored.",
        &["outcome"],
    );
    // The log writer ends by itself once the last job (and the send context) is gone; it
    // stops retrying failed writes with the scheduler.
    let (recorder, writer) = Recorder::start(storage.clone(), scheduler_stop.clone());
    let writer_task = tokio::spawn(writer);
    let sends = Arc::new(SendContext {
        bot,
        api: api.clone(),
        storage,
        recorder,
        max_attempts: config.max_send_attempts,
        streams,
    });
    let consumer = EventConsumer {
        api,
        sends,
        scheduler,
        locks: EventLocks::default(),
        only_entities: config.only_entities.clone(),
        settled,
        outage: Arc::new(Mutex::new(Backoff::new(
            OUTAGE_BACKOFF_MIN,
            OUTAGE_BACKOFF_MAX,
        ))),
        shutdown: shutdown.clone(),
    };
    let stats = consumer.scheduler.stats().clone();
    let spec = QueueSpec::new(config.queue.clone(), READY_PATTERN, config.prefetch);
    let result = consumer.consume(bus, spec, scheduler_stop.clone()).await;
    scheduler_stop.cancel();
    if let Err(err) = scheduler_task.await {
        tracing::error!(cause = %err, "send scheduler panicked");
    }
    if let Err(err) = writer_task.await {
        tracing::error!(cause = %err, "delivery log writer panicked");
    }
    if let Err(err) = pruner.await {
        tracing::error!(cause = %err, "stream memory pruner panicked");
    }
    tracing::info!(
        sent_or_failed = stats.done.get(),
        skipped = stats.skipped.get(),
        retry_after = stats.retry_after.get(),
        retried = stats.retried.get(),
        migrated = stats.moved.get(),
        "delivery stopped"
    );
    result
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

/// Whether `subscriber` wants `event`: its subscription's kinds and the event's gates,
/// and for a reminder, the chat's reminder leads.
fn wants(event: &Event, subscriber: &crate::api::Subscriber) -> bool {
    let subscription = Subscription {
        user: subscriber.user,
        entity: event.entity,
        kinds: subscriber.kinds.clone(),
    };
    if !subscription.wants_event(event) {
        return false;
    }
    if event.kind != stargazer_core::contract::kind::YOUTUBE_REMINDER {
        return true;
    }
    let settings = UserSettings {
        reminder_leads: subscriber.reminder_leads.clone(),
        ..UserSettings::default()
    };
    let lead = event
        .fields
        .get(field::LEAD_SECONDS)
        .and_then(serde_json::Value::as_u64);
    let is_default = event.fields.get(field::LEAD_DEFAULT) == Some(&serde_json::Value::Bool(true));
    settings.wants_reminder(lead, is_default)
}

/// The consuming side: turns deliveries into queued jobs and settles them.
struct EventConsumer {
    api: Api,
    sends: Arc<SendContext>,
    scheduler: SchedulerHandle<SendJob>,
    locks: EventLocks,
    /// `stargazer_bot_events_total{outcome}`.
    settled: IntCounterVec,
    only_entities: Vec<Uuid>,
    /// The pause before requeueing an event Telegram could not take, shared by every
    /// event: an outage is Telegram's, not one event's.
    outage: Arc<Mutex<Backoff>>,
    shutdown: CancellationToken,
}

/// How the preparation of one event ended.
enum Prepared {
    /// Jobs queued; wait for these outcomes. Once they are all settled, the memories of
    /// the stream named (whose life the event ended) are forgotten.
    Queued(Vec<tokio::sync::oneshot::Receiver<Outcome>>, Option<String>),
    /// It can never be handled.
    DeadLetter(String),
    /// Shutdown came first.
    Interrupted,
}

impl EventConsumer {
    async fn consume(
        self,
        bus: Arc<dyn Bus>,
        spec: QueueSpec,
        scheduler_stop: CancellationToken,
    ) -> Result<()> {
        let this = Arc::new(self);
        let mut backoff = Backoff::default();
        let mut consumer: Box<dyn Consumer> = loop {
            tokio::select! {
                _ = this.shutdown.cancelled() => return Ok(()),
                consumer = bus.consume(&spec) => match consumer {
                    Ok(consumer) => break consumer,
                    Err(BusError::Closed) => return Ok(()),
                    Err(err) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(queue = %spec.name, cause = %err, retry_in_ms = wait.as_millis() as u64, "cannot consume yet");
                        if sleep_unless_cancelled(wait, &this.shutdown).await.is_cancelled() {
                            return Ok(());
                        }
                    }
                },
            }
        };
        tracing::info!(queue = %spec.name, "delivering ready events");
        let mut trackers = JoinSet::new();
        loop {
            tokio::select! {
                _ = this.shutdown.cancelled() => break,
                Some(joined) = trackers.join_next(), if !trackers.is_empty() => {
                    if let Err(err) = joined {
                        tracing::error!(cause = %err, "event tracker panicked");
                    }
                }
                delivery = consumer.next() => match delivery {
                    Some(delivery) => this.clone().accept(delivery, &mut trackers).await,
                    None => {
                        tracing::info!("bus closed; delivery stops");
                        break;
                    }
                },
            }
        }
        // No new event now: let the scheduler finish its sends in flight and drop the
        // rest, which settles every tracker (requeueing what was not finished).
        scheduler_stop.cancel();
        while let Some(joined) = trackers.join_next().await {
            if let Err(err) = joined {
                tracing::error!(cause = %err, "event tracker panicked");
            }
        }
        Ok(())
    }

    /// Takes one delivery: queues its messages (in arrival order) and leaves a tracker
    /// that settles it once they are all done.
    async fn accept(self: Arc<Self>, delivery: Delivery, trackers: &mut JoinSet<()>) {
        let event = match Event::from_bytes(&delivery.body) {
            Ok(event) => event,
            Err(err) => {
                let reason = format!("invalid event JSON: {err}");
                tracing::warn!(routing_key = %delivery.routing_key, %reason, "dead-lettering event");
                if let Err(err) = delivery.dead_letter(&reason).await {
                    tracing::warn!(cause = %err, "could not dead-letter event");
                }
                return;
            }
        };
        if !self.only_entities.is_empty() && !self.only_entities.contains(&event.entity) {
            tracing::debug!(event_id = %event.id, entity_id = %event.entity, "event about an entity this bot does not serve");
            self.settled.with_label_values(&["ignored"]).inc();
            if let Err(err) = delivery.ack().await {
                tracing::warn!(cause = %err, "could not ack event");
            }
            return;
        }
        let id = event.id;
        match self.locks.try_lock(id) {
            Some(guard) => {
                let prepared = self.prepare(event, delivery.redelivered).await;
                let this = self.clone();
                trackers.spawn(async move {
                    let _guard = guard;
                    this.settle(id, delivery, prepared).await;
                });
            }
            None => {
                // The same event is still being fanned out (a redelivery after a broker
                // reconnect): wait for it, then every recipient is in the log.
                tracing::info!(event_id = %id, "event already in progress; waiting for it");
                let this = self.clone();
                trackers.spawn(async move {
                    let guard = this.locks.lock(id).await;
                    let prepared = this.prepare(event, true).await;
                    let _guard = guard;
                    this.settle(id, delivery, prepared).await;
                });
            }
        }
    }

    /// Looks up the entity and the subscribers, filters out recipients already in the
    /// log (when `check_log`) and queues a job for each of the rest.
    ///
    /// The queue-time check only spares jobs that would be skipped anyway: every job
    /// checks the log again just before sending, and a copy of an event this process is
    /// still fanning out waits for it (see [`EventLocks`]). So it is made for copies the
    /// broker marks redelivered (or that waited for such a copy), whose recipients are
    /// likely in the log; a first delivery goes straight to the jobs, which keeps one
    /// storage round trip per event off this one-event-at-a-time path.
    #[tracing::instrument(skip_all, fields(event_id = %event.id, entity_id = %event.entity, kind = %event.kind))]
    async fn prepare(&self, event: Event, check_log: bool) -> Prepared {
        let entity = match self
            .with_retry("getEntity", || self.api.entity(event.entity))
            .await
        {
            Some(Ok(entity)) => entity,
            Some(Err(ApiError::NotFound(_))) => {
                return Prepared::DeadLetter(format!("unknown entity {}", event.entity));
            }
            Some(Err(err)) => return Prepared::DeadLetter(format!("entity lookup refused: {err}")),
            None => return Prepared::Interrupted,
        };
        let subscribers = match self
            .with_retry("getSubscribers", || {
                self.api.subscribers(event.entity, &event.kind)
            })
            .await
        {
            Some(Ok(subscribers)) => subscribers,
            Some(Err(err)) => {
                return Prepared::DeadLetter(format!("subscriber lookup refused: {err}"))
            }
            None => return Prepared::Interrupted,
        };
        let asked = subscribers.len();
        let subscribers: Vec<_> = subscribers
            .into_iter()
            .filter(|s| wants(&event, s))
            .collect();
        let total = subscribers.len();
        let stream = match Role::of(&event) {
            Some((video, role)) => match self.load_stream(&video).await {
                Some(snapshot) => Some(StreamLife {
                    video,
                    role,
                    snapshot,
                }),
                None => return Prepared::Interrupted,
            },
            None => None,
        };
        let forget = stream
            .as_ref()
            .filter(|s| s.role.ends())
            .map(|s| s.video.clone());
        let recipients = if check_log {
            match self.unlogged(event.id, subscribers).await {
                Some(r) => r,
                None => return Prepared::Interrupted,
            }
        } else {
            subscribers.into_iter().map(Recipient::from).collect()
        };
        tracing::info!(
            subscribers = asked,
            wanting = total,
            to_send = recipients.len(),
            "fanning out event"
        );
        let fanout = Arc::new(Fanout::new(event, entity, stream));
        let mut waits = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let chat = match recipient.chat_id.parse::<i64>() {
                Ok(chat) => chat,
                Err(_) => {
                    // Not a Telegram chat id: record the failure so the event can settle.
                    tracing::warn!(chat_id = %recipient.chat_id, "subscriber has an invalid chat id");
                    let (job, rx) = SendJob::new(self.sends.clone(), fanout.clone(), recipient);
                    job.record_invalid().await;
                    waits.push(rx);
                    continue;
                }
            };
            let (job, rx) = SendJob::new(self.sends.clone(), fanout.clone(), recipient);
            if self.scheduler.submit(chat, job).is_err() {
                return Prepared::Interrupted;
            }
            waits.push(rx);
        }
        Prepared::Queued(waits, forget)
    }

    /// The memories of `video`'s first messages, read once for the event; `None` on
    /// shutdown (storage trouble is retried with backoff, as for the delivery log).
    async fn load_stream(&self, video: &str) -> Option<streams::Snapshot> {
        let mut backoff = Backoff::default();
        loop {
            let loaded = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                loaded = self.sends.streams.load(video) => loaded,
            };
            match loaded {
                Ok(snapshot) => return Some(snapshot),
                Err(cause) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(video_id = video, %cause, retry_in_ms = wait.as_millis() as u64, "stream memory unavailable");
                    if sleep_unless_cancelled(wait, &self.shutdown)
                        .await
                        .is_cancelled()
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// Subscribers not yet in the delivery log, in the api's order; `None` on shutdown.
    /// The log is asked once for all of them, not once per chat.
    async fn unlogged(
        &self,
        event: Uuid,
        subscribers: Vec<crate::api::Subscriber>,
    ) -> Option<Vec<Recipient>> {
        let chats: Vec<String> = subscribers.iter().map(|s| s.chat_id.clone()).collect();
        let mut backoff = Backoff::default();
        let logged = loop {
            let lookup = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                lookup = self.sends.delivered(event, &chats) => lookup,
            };
            match lookup {
                Ok(logged) => break logged,
                Err(cause) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%cause, retry_in_ms = wait.as_millis() as u64, "delivery log unavailable");
                    if sleep_unless_cancelled(wait, &self.shutdown)
                        .await
                        .is_cancelled()
                    {
                        return None;
                    }
                }
            }
        };
        Some(
            subscribers
                .into_iter()
                .filter(|s| !logged.contains(&s.chat_id))
                .map(Recipient::from)
                .collect(),
        )
    }

    /// Calls the api until it answers (transient failures retried with backoff);
    /// `None` on shutdown.
    async fn with_retry<T, F, Fut>(&self, what: &str, mut call: F) -> Option<Result<T, ApiError>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut backoff = Backoff::default();
        loop {
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                result = call() => result,
            };
            match result {
                Err(err) if err.is_transient() => {
                    let wait = backoff.next_delay();
                    tracing::warn!(call = what, cause = %err, retry_in_ms = wait.as_millis() as u64, "api unavailable");
                    if sleep_unless_cancelled(wait, &self.shutdown)
                        .await
                        .is_cancelled()
                    {
                        return None;
                    }
                }
                other => return Some(other),
            }
        }
    }
}

impl EventConsumer {
    /// Waits for an event's recipients and settles the delivery accordingly.
    async fn settle(&self, event: Uuid, delivery: Delivery, prepared: Prepared) {
        let (outcome, settled) = match prepared {
            Prepared::DeadLetter(reason) => {
                tracing::warn!(event_id = %event, %reason, "dead-lettering event");
                ("dead_lettered", delivery.dead_letter(&reason).await)
            }
            Prepared::Interrupted => ("requeued", delivery.requeue().await),
            Prepared::Queued(waits, forget) => {
                let outcomes = futures::future::join_all(waits).await;
                let total = outcomes.len();
                let (mut sent, mut skipped, mut failed, mut deferred, mut unfinished) =
                    (0, 0, 0, 0, 0);
                let mut cause = None;
                for outcome in outcomes {
                    match outcome {
                        Ok(Outcome::Sent) => sent += 1,
                        Ok(Outcome::AlreadyDone | Outcome::NothingToDo) => skipped += 1,
                        Ok(Outcome::Failed(_)) => failed += 1,
                        Ok(Outcome::Deferred(reason)) => {
                            deferred += 1;
                            cause.get_or_insert(reason);
                        }
                        Err(_) => unfinished += 1,
                    }
                }
                if unfinished > 0 {
                    // Shutdown interrupted the fan-out: the log keeps what went out, and
                    // the next consumer finishes the rest.
                    tracing::info!(event_id = %event, total, sent, unfinished, "fan-out interrupted; requeueing event");
                    ("requeued", delivery.requeue().await)
                } else if deferred > 0 {
                    // Telegram is unavailable: hold the event for a while (which also
                    // keeps this consumer from taking more while it lasts), then put it
                    // back; its next delivery sends only to the chats still missing.
                    let wait = lock(&self.outage).next_delay();
                    tracing::warn!(
                        event_id = %event, total, sent, skipped, failed, deferred,
                        cause = cause.as_deref().unwrap_or_default(),
                        requeue_in_ms = wait.as_millis() as u64,
                        "telegram unavailable; event will be requeued"
                    );
                    // Requeued either way: a shutdown only cuts the hold short.
                    let _ = sleep_unless_cancelled(wait, &self.shutdown).await;
                    ("requeued", delivery.requeue().await)
                } else {
                    if sent > 0 {
                        // Telegram answers again: the next outage starts from a short pause.
                        lock(&self.outage).reset();
                    }
                    tracing::info!(event_id = %event, total, sent, skipped, failed, "event delivered");
                    if let Some(video) = forget {
                        // The stream's life is over and its last edits are done. A
                        // failure leaves the memories to the periodic prune.
                        match self.sends.streams.forget(&video, chrono::Utc::now()).await {
                            Ok(chats) => {
                                tracing::debug!(video_id = %video, chats, "stream memories forgotten")
                            }
                            Err(cause) => {
                                tracing::warn!(video_id = %video, %cause, "could not forget stream memories")
                            }
                        }
                    }
                    ("delivered", delivery.ack().await)
                }
            }
        };
        match settled {
            Ok(()) => self.settled.with_label_values(&[outcome]).inc(),
            // The broker will redeliver it; the delivery log prevents repeats.
            Err(err) => tracing::warn!(event_id = %event, cause = %err, "could not settle event"),
        }
    }
}

/// One async lock per event id being fanned out; entries vanish with their last user.
#[derive(Default, Clone)]
struct EventLocks {
    locks: Arc<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds an event's lock; releasing it forgets the entry if nobody else waits.
struct EventGuard {
    id: Uuid,
    locks: EventLocks,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for EventGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = lock(&self.locks.locks);
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

impl EventLocks {
    fn entry(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(id).or_default().clone()
    }

    fn try_lock(&self, id: Uuid) -> Option<EventGuard> {
        let guard = self.entry(id).try_lock_owned().ok()?;
        Some(EventGuard {
            id,
            locks: self.clone(),
            guard: Some(guard),
        })
    }

    async fn lock(&self, id: Uuid) -> EventGuard {
        let guard = self.entry(id).lock_owned().await;
        EventGuard {
            id,
            locks: self.clone(),
            guard: Some(guard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(kinds: &[&str], leads: &[u32]) -> crate::api::Subscriber {
        serde_json::from_value(serde_json::json!({
            "user": Uuid::nil(), "chat_id": "1", "language": "en",
            "kinds": kinds, "reminder_leads": leads,
        }))
        .unwrap()
    }

    fn event(kind: &str, fields: serde_json::Value) -> Event {
        Event {
            id: Uuid::new_v4(),
            kind: kind.into(),
            entity: Uuid::nil(),
            time: chrono::Utc::now(),
            fields: fields.as_object().unwrap().clone(),
            control: Default::default(),
        }
    }

    #[test]
    fn reminders_reach_the_chats_whose_leads_they_match() {
        let at = |minutes: u64| {
            event(
                "youtube.reminder",
                serde_json::json!({"lead_seconds": minutes * 60, "lead_default": minutes == 30}),
            )
        };
        let chose = subscriber(&[], &[5, 60]);
        let default = subscriber(&[], &[]);
        let wanted = |s: &crate::api::Subscriber| -> Vec<u64> {
            [5, 15, 30, 60]
                .into_iter()
                .filter(|m| wants(&at(*m), s))
                .collect()
        };
        assert_eq!(wanted(&chose), [5, 60]);
        assert_eq!(wanted(&default), [30]);
        // A reminder without a lead (an older worker) reaches everyone.
        assert!(wants(
            &event("youtube.reminder", serde_json::json!({})),
            &chose
        ));
        // Not subscribed to reminders at all: none.
        assert!(wanted(&subscriber(&["youtube.live"], &[5])).is_empty());
    }

    #[test]
    fn premieres_and_members_only_videos_need_their_gate() {
        let premiere = event("youtube.live", serde_json::json!({"format": "premiere"}));
        let members = event("youtube.live", serde_json::json!({"members_only": true}));
        assert!(!wants(&premiere, &subscriber(&["youtube.live"], &[])));
        assert!(wants(
            &premiere,
            &subscriber(&["youtube.live", "youtube.premiere"], &[])
        ));
        assert!(!wants(&members, &subscriber(&["youtube.live"], &[])));
        assert!(wants(
            &members,
            &subscriber(&["youtube.live", "youtube.members"], &[])
        ));
        assert!(wants(&members, &subscriber(&[], &[])));
    }

    #[tokio::test]
    async fn event_locks_serialize_one_event_and_clean_up() {
        let locks = EventLocks::default();
        let id = Uuid::new_v4();
        let first = locks.try_lock(id).unwrap();
        assert!(locks.try_lock(id).is_none());
        assert!(locks.try_lock(Uuid::new_v4()).is_some());
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock(id).await) })
        };
        tokio::task::yield_now().await;
        drop(first);
        waiter.await.unwrap();
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
