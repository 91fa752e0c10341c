//! Delivery of ready events: consume `stargazer.bot.<im>`, look up who wants each
//! event, queue one message per chat with the [`crate::scheduler`], and ack the event once
//! every recipient is sent or recorded failed.
//!
//! Only a permanent refusal (the chat is gone, the message is invalid) is recorded as
//! failed. When the network is unavailable (5xx, network errors, a bad token, 429s past
//! the retry budget) a message is retried a few times and then given back unrecorded
//! ([`Outcome::Deferred`]); once the event's other recipients are settled, the event is
//! requeued after a pause that grows with every such requeue (bounded, see
//! [`OUTAGE_BACKOFF_MAX`]) and is reset by the next event that goes out whole. Its next
//! delivery skips every chat already in the log, so the fan-out resumes with the chats
//! still missing, and goes on until the network is back.
//!
//! Events are taken one at a time up to the point where their messages are queued, so
//! each chat's messages are queued — and, per chat, sent — in the order the events
//! arrived; their sending then overlaps (up to `prefetch` events are unacked at once),
//! taking turns by urgency and event ([`crate::scheduler`]). An event whose entity or
//! subscribers cannot be looked up because the api is down is retried with backoff,
//! never acked or dropped; one that can never be handled (bad JSON, unknown entity) is
//! dead-lettered with the reason.
//!
//! Who gets an event: the subscribers the api names for its kind and the bot's IM
//! platform, narrowed by the event's gates (`Subscription::wants_event`: premieres,
//! members-only videos) and, for a reminder, by the chat's chosen reminder leads
//! (`UserSettings::wants_reminder`).
//!
//! Exactly-once per (event, chat), across instances, rests on claims in the delivery log
//! ([`crate::claims`]): when an event is queued, all its chats are claimed in one write; a job is
//! made only for the chats this instance won, chats already settled are skipped, and
//! chats another live instance holds are neither sent to nor given up: the event's
//! tracker waits (no more than [`HELD_RECHECK`] at a time, and not past the earliest of
//! their leases), claims them again, and sends to those it now wins (the holder died and
//! its lease ran out) until each is settled. Only then is the event acked. Records are
//! written in batches by the [`crate::recorder`] and settle the claims; a duplicate delivery of
//! an event this process is still fanning out waits for the first one instead of racing
//! it. An event requeued unfinished (network down, shutdown) releases this instance's
//! unsettled claims of it first, so its next delivery, on any instance, need not wait for
//! the leases.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, Registry};
use prometheus::{IntGauge, Opts};
use stargazer_core::backoff::Backoff;
use stargazer_core::bus::{Bus, BusError, Consumer, Delivery, QueueSpec};
use stargazer_core::model::{ClaimState, Entity, Event};
use stargazer_core::routing::READY_PATTERN;
use stargazer_core::storage::{DeliveryStore, StateStore};
use stargazer_core::sync::lock;
use stargazer_core::telemetry::register_collector;
use stargazer_core::wait::sleep_unless_cancelled;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{Api, ApiError};
use crate::claims::Claims;
use crate::recorder::Recorder;
use crate::scheduler::{self, Job, Limits, SchedulerHandle, Stats};
use crate::senders::{self, SenderCount};
use crate::{delivery_record, wants, Outcome, Recipient};

/// First pause before an event whose messages the network could not take is requeued.
pub const OUTAGE_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest pause before such a requeue (the pause doubles with every consecutive one).
pub const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Longest wait before chats held by another instance's claim are claimed again: the
/// holder usually settles them within moments; a dead holder's lease may run longer, and
/// the wait also ends when the earliest lease does.
pub const HELD_RECHECK: Duration = Duration::from_secs(2);

/// Shortest such wait, so that a lease ending now does not turn into a busy loop.
const HELD_RECHECK_MIN: Duration = Duration::from_millis(200);

/// What a bot for one chat network supplies to the engine.
pub trait Adapter: Send + Sync + 'static {
    /// The job that delivers one event to one chat.
    type Job: Job;
    /// What the jobs of one event share: the event, its entity, the messages composed
    /// so far, the stream's first messages.
    type Fanout: Send + Sync + 'static;

    /// The fan-out of `event` about `entity`, with whatever the adapter reads for it
    /// (retried until `shutdown` while storage fails); `None` on shutdown.
    fn fanout(
        &self,
        event: Event,
        entity: Entity,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Option<Self::Fanout>> + Send;

    /// The scheduler's key for `chat_id` (negative for group chats, which the
    /// scheduler paces by `Limits::group_interval`), or `None` if it is no chat id of
    /// this network.
    fn chat_key(&self, chat_id: &str) -> Option<i64>;

    /// A job delivering `fanout` to `recipient`, whose claim this instance won (leased
    /// until `leased_until`), and the receiver that learns its outcome (dropped
    /// unfinished on shutdown).
    fn job(
        &self,
        fanout: &Arc<Self::Fanout>,
        recipient: Recipient,
        leased_until: tokio::time::Instant,
    ) -> (Self::Job, oneshot::Receiver<Outcome>);

    /// Called once every recipient of `fanout` is settled, before the event is acked
    /// (a stream's end: its first messages can be forgotten).
    fn delivered(&self, fanout: &Self::Fanout) -> impl Future<Output = ()> + Send;
}

/// What delivery keeps in storage.
pub struct Stores {
    /// The delivery log.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Leases of the instances sharing the send rate, and the adapter's own state.
    pub state: Arc<dyn StateStore>,
}

/// How the engine runs for one bot.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The IM platform (`contract::im`), as in the delivery log and the api.
    pub im: &'static str,
    /// The durable queue of ready events.
    pub queue: String,
    /// Events being fanned out at once.
    pub prefetch: u16,
    /// The pacing the network asks for.
    pub limits: Limits,
    /// How long a claim keeps other instances off; renewed every third of it.
    pub claim_lease: Duration,
    /// Deliver events about these entities only (empty: all); the others are acked.
    pub only_entities: Vec<Uuid>,
}

/// What the engine hands the adapter once it is set up: the parts its jobs use.
pub struct Parts {
    /// The api client.
    pub api: Api,
    /// This instance's claims on deliveries.
    pub claims: Arc<Claims>,
    /// Writes the delivery log in batches.
    pub recorder: Recorder,
}

/// Runs delivery for one bot until `shutdown`: `make` builds the adapter from the
/// engine's parts. Metrics (events settled, sends, 429s, retries, migrations, the
/// instances sharing the rate) go to `registry`.
pub async fn run<A: Adapter>(
    settings: Settings,
    api: Api,
    stores: Stores,
    bus: Arc<dyn Bus>,
    registry: Registry,
    shutdown: CancellationToken,
    make: impl FnOnce(Parts) -> A,
) {
    let Stores {
        deliveries: storage,
        state,
    } = stores;
    // The scheduler stops on its own token, cancelled only once no new event can be
    // accepted, so that it never drops jobs of an event still being queued.
    let scheduler_stop = CancellationToken::new();
    // Instances of this bot count each other and split the token's overall rate.
    let senders = SenderCount::alone();
    let counting = tokio::spawn(senders::run(
        state.clone(),
        senders::namespace(settings.im),
        format!("bot-{}", uuid::Uuid::new_v4().simple()),
        settings.claim_lease,
        senders.clone(),
        register_collector(
            &registry,
            IntGauge::with_opts(
                Opts::new(
                    "stargazer_bot_senders",
                    "Bot instances sharing the token's overall send rate (counted through storage).",
                )
                .const_label("im", settings.im),
            )
            .expect("valid metric"),
        ),
        scheduler_stop.clone(),
    ));
    let (scheduler, scheduler_task) = scheduler::start_counting::<A::Job>(
        settings.limits,
        senders,
        Stats::new(settings.im),
        scheduler_stop.clone(),
    );
    let scheduler_task = tokio::spawn(scheduler_task);
    scheduler.stats().register(&registry);
    let settled = register_collector(
        &registry,
        IntCounterVec::new(
            Opts::new(
                "stargazer_bot_events_total",
                "Ready events by how they were settled: delivered, dead_lettered, requeued, ignored.",
            )
            .const_label("im", settings.im),
            &["outcome"],
        )
        .expect("valid metric"),
    );
    // The log writer ends by itself once the last job (and the adapter) is gone; it
    // stops retrying failed writes with the scheduler.
    let (recorder, writer) = Recorder::start(storage.clone(), scheduler_stop.clone());
    let writer_task = tokio::spawn(writer);
    let claims = Arc::new(Claims::new(storage, settings.im, settings.claim_lease));
    tracing::info!(
        im = settings.im,
        owner = claims.owner(),
        lease_secs = settings.claim_lease.as_secs(),
        "claiming deliveries"
    );
    // Renewals go on until every record is written, so a claim is never left to lapse
    // while this instance may still send on it.
    let renewer_stop = CancellationToken::new();
    let renewer = tokio::spawn(claims.clone().renew_until(renewer_stop.clone()));
    let adapter = Arc::new(make(Parts {
        api: api.clone(),
        claims: claims.clone(),
        recorder: recorder.clone(),
    }));
    let consumer = EventConsumer {
        im: settings.im,
        api,
        adapter,
        claims: claims.clone(),
        recorder,
        scheduler,
        locks: EventLocks::default(),
        only_entities: settings.only_entities.clone(),
        settled,
        outage: Arc::new(Mutex::new(Backoff::new(
            OUTAGE_BACKOFF_MIN,
            OUTAGE_BACKOFF_MAX,
        ))),
        shutdown: shutdown.clone(),
    };
    let stats = consumer.scheduler.stats().clone();
    let spec = QueueSpec::new(settings.queue.clone(), READY_PATTERN, settings.prefetch);
    consumer.consume(bus, spec, scheduler_stop.clone()).await;
    scheduler_stop.cancel();
    if let Err(err) = scheduler_task.await {
        tracing::error!(cause = %err, "send scheduler panicked");
    }
    if let Err(err) = writer_task.await {
        tracing::error!(cause = %err, "delivery log writer panicked");
    }
    renewer_stop.cancel();
    if let Err(err) = renewer.await {
        tracing::error!(cause = %err, "claim renewer panicked");
    }
    // Every record is written (or given up): what this instance still claims was not
    // sent, so the other instances may have it now rather than after the lease.
    match claims.release(None).await {
        Ok(0) => {}
        Ok(released) => tracing::info!(released, "unsent delivery claims released"),
        Err(cause) => {
            tracing::warn!(%cause, "could not release delivery claims; other instances take them over when their leases end")
        }
    }
    if let Err(err) = counting.await {
        tracing::error!(cause = %err, "sender count panicked");
    }
    tracing::info!(
        im = settings.im,
        sent_or_failed = stats.done.get(),
        skipped = stats.skipped.get(),
        retry_after = stats.retry_after.get(),
        retried = stats.retried.get(),
        migrated = stats.moved.get(),
        "delivery stopped"
    );
}

/// An event's chats sorted by their claims.
struct Claimed {
    /// Won by this instance: to send.
    won: Vec<Recipient>,
    /// Held by another instance, with the end of its lease.
    held: Vec<(Recipient, chrono::DateTime<chrono::Utc>)>,
    /// Settled already.
    settled: usize,
    /// When the claims won run out unless renewed.
    leased_until: tokio::time::Instant,
}

/// The consuming side: turns deliveries into queued jobs and settles them.
struct EventConsumer<A: Adapter> {
    im: &'static str,
    api: Api,
    adapter: Arc<A>,
    claims: Arc<Claims>,
    recorder: Recorder,
    scheduler: SchedulerHandle<A::Job>,
    locks: EventLocks,
    /// `stargazer_bot_events_total{outcome}`.
    settled: IntCounterVec,
    only_entities: Vec<Uuid>,
    /// The pause before requeueing an event the network could not take, shared by every
    /// event: an outage is the network's, not one event's.
    outage: Arc<Mutex<Backoff>>,
    shutdown: CancellationToken,
}

/// An event's queued jobs, each with its recipient.
type Waits = Vec<(Recipient, oneshot::Receiver<Outcome>)>;

/// An event whose jobs are queued.
struct Queued<F> {
    /// The fan-out the jobs share (more jobs are made from it for chats won later).
    fanout: Arc<F>,
    /// The jobs to wait for.
    waits: Waits,
    /// Chats another instance holds, with the end of its lease.
    held: Vec<(Recipient, chrono::DateTime<chrono::Utc>)>,
    /// Chats found settled when claiming.
    settled: usize,
}

/// How the preparation of one event ended.
enum Prepared<F> {
    /// Jobs queued; wait for them (and for the chats held elsewhere).
    Queued(Queued<F>),
    /// It can never be handled.
    DeadLetter(String),
    /// Shutdown came first.
    Interrupted,
}

impl<A: Adapter> EventConsumer<A> {
    async fn consume(self, bus: Arc<dyn Bus>, spec: QueueSpec, scheduler_stop: CancellationToken) {
        let this = Arc::new(self);
        let mut backoff = Backoff::default();
        let mut consumer: Box<dyn Consumer> = loop {
            tokio::select! {
                _ = this.shutdown.cancelled() => return,
                consumer = bus.consume(&spec) => match consumer {
                    Ok(consumer) => break consumer,
                    Err(BusError::Closed) => return,
                    Err(err) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(queue = %spec.name, cause = %err, retry_in_ms = wait.as_millis() as u64, "cannot consume yet");
                        if sleep_unless_cancelled(wait, &this.shutdown).await.is_cancelled() {
                            return;
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
                let prepared = self.prepare(event).await;
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
                    let prepared = this.prepare(event).await;
                    let _guard = guard;
                    this.settle(id, delivery, prepared).await;
                });
            }
        }
    }

    /// Looks up the entity and the subscribers, claims their chats (one write for all of
    /// them) and queues a job for each chat won; chats settled already are skipped, chats
    /// held by another instance are left to [`EventConsumer::settle`].
    #[tracing::instrument(skip_all, fields(event_id = %event.id, entity_id = %event.entity, kind = %event.kind))]
    async fn prepare(&self, event: Event) -> Prepared<A::Fanout> {
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
        let recipients: Vec<Recipient> = subscribers.into_iter().map(Recipient::from).collect();
        let Some(claimed) = self.claim(event.id, recipients).await else {
            return Prepared::Interrupted;
        };
        tracing::info!(
            subscribers = asked,
            wanting = total,
            to_send = claimed.won.len(),
            settled = claimed.settled,
            held_elsewhere = claimed.held.len(),
            "fanning out event"
        );
        let event_id = event.id;
        let Some(fanout) = self.adapter.fanout(event, entity, &self.shutdown).await else {
            return Prepared::Interrupted;
        };
        let fanout = Arc::new(fanout);
        let Some(waits) = self
            .queue_jobs(event_id, &fanout, claimed.won, claimed.leased_until)
            .await
        else {
            return Prepared::Interrupted;
        };
        Prepared::Queued(Queued {
            fanout,
            waits,
            held: claimed.held,
            settled: claimed.settled,
        })
    }

    /// Queues a job for each of `recipients`, whose claims this instance won (leased
    /// until `leased_until`); `None` if the scheduler stopped.
    async fn queue_jobs(
        &self,
        event: Uuid,
        fanout: &Arc<A::Fanout>,
        recipients: Vec<Recipient>,
        leased_until: tokio::time::Instant,
    ) -> Option<Waits> {
        let mut waits = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let rx = match self.adapter.chat_key(&recipient.chat_id) {
                Some(chat) => {
                    let (job, rx) = self.adapter.job(fanout, recipient.clone(), leased_until);
                    if self.scheduler.submit(chat, job).is_err() {
                        return None;
                    }
                    rx
                }
                None => {
                    // Not a chat id of this network: record the failure so the event can
                    // settle. If even that cannot be recorded the outcome is dropped, so
                    // the event is retried.
                    tracing::warn!(im = self.im, chat_id = %recipient.chat_id, "subscriber has an invalid chat id");
                    let (done, rx) = oneshot::channel();
                    let reason = format!("invalid chat id `{}`", recipient.chat_id);
                    let record = delivery_record(
                        self.im,
                        event,
                        &recipient.chat_id,
                        &format!("failed: {reason}"),
                    );
                    match self.recorder.record(record).await {
                        Ok(()) => {
                            let _ = done.send(Outcome::Failed(reason));
                        }
                        Err(cause) => {
                            tracing::warn!(chat_id = %recipient.chat_id, %cause, "could not record delivery");
                        }
                    }
                    rx
                }
            };
            waits.push((recipient, rx));
        }
        Some(waits)
    }

    /// Claims the chats of `recipients` for `event` in one write (retried with backoff
    /// while storage fails) and sorts them; `None` on shutdown.
    async fn claim(&self, event: Uuid, recipients: Vec<Recipient>) -> Option<Claimed> {
        let chats: Vec<String> = recipients.iter().map(|r| r.chat_id.clone()).collect();
        let mut backoff = Backoff::default();
        let (states, leased_until) = loop {
            let claimed = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                claimed = self.claims.claim(event, &chats) => claimed,
            };
            match claimed {
                Ok(claimed) => break claimed,
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
        let mut claimed = Claimed {
            won: Vec::new(),
            held: Vec::new(),
            settled: 0,
            leased_until,
        };
        for (recipient, state) in recipients.into_iter().zip(states) {
            match state {
                ClaimState::Won => claimed.won.push(recipient),
                ClaimState::Settled(_) => claimed.settled += 1,
                ClaimState::Held { lease_until, .. } => claimed.held.push((recipient, lease_until)),
            }
        }
        Some(claimed)
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

impl<A: Adapter> EventConsumer<A> {
    /// Waits for an event's recipients and settles the delivery accordingly.
    async fn settle(&self, event: Uuid, delivery: Delivery, prepared: Prepared<A::Fanout>) {
        let (outcome, settled) = match prepared {
            Prepared::DeadLetter(reason) => {
                tracing::warn!(event_id = %event, %reason, "dead-lettering event");
                ("dead_lettered", delivery.dead_letter(&reason).await)
            }
            Prepared::Interrupted => {
                self.release(event).await;
                ("requeued", delivery.requeue().await)
            }
            Prepared::Queued(queued) => {
                let Queued {
                    fanout,
                    mut waits,
                    mut held,
                    settled: settled_before,
                } = queued;
                let total = waits.len() + held.len() + settled_before;
                let (mut sent, mut skipped, mut failed, mut deferred, mut unfinished) =
                    (0, settled_before, 0, 0, 0);
                let mut cause = None;
                loop {
                    let outcomes = futures::future::join_all(
                        waits
                            .drain(..)
                            .map(|(recipient, rx)| async move { (recipient, rx.await) }),
                    )
                    .await;
                    for (recipient, outcome) in outcomes {
                        match outcome {
                            Ok(Outcome::Sent) => sent += 1,
                            Ok(Outcome::AlreadyDone | Outcome::NothingToDo) => skipped += 1,
                            Ok(Outcome::Failed(_)) => failed += 1,
                            Ok(Outcome::Deferred(reason)) => {
                                deferred += 1;
                                cause.get_or_insert(reason);
                            }
                            Ok(Outcome::Held(lease_until)) => held.push((recipient, lease_until)),
                            Err(_) => unfinished += 1,
                        }
                    }
                    if held.is_empty() || unfinished > 0 || deferred > 0 {
                        break;
                    }
                    // Another instance holds some chats: neither send nor give them up;
                    // look again once it has likely settled them or its lease ran out.
                    match self.wait_for_held(event, &fanout, &mut held).await {
                        Some((more, done)) => {
                            waits = more;
                            skipped += done;
                        }
                        None => {
                            unfinished += held.len();
                            break;
                        }
                    }
                }
                if unfinished > 0 || deferred > 0 {
                    self.release(event).await;
                }
                if unfinished > 0 {
                    // Shutdown interrupted the fan-out: the log keeps what went out, and
                    // the next consumer finishes the rest.
                    tracing::info!(event_id = %event, total, sent, unfinished, held = held.len(), "fan-out interrupted; requeueing event");
                    ("requeued", delivery.requeue().await)
                } else if deferred > 0 {
                    // The network is unavailable: hold the event for a while (which also
                    // keeps this consumer from taking more while it lasts), then put it
                    // back; its next delivery sends only to the chats still missing.
                    let wait = lock(&self.outage).next_delay();
                    tracing::warn!(
                        event_id = %event, total, sent, skipped, failed, deferred,
                        cause = cause.as_deref().unwrap_or_default(),
                        requeue_in_ms = wait.as_millis() as u64,
                        im = self.im,
                        "chat network unavailable; event will be requeued"
                    );
                    // Requeued either way: a shutdown only cuts the hold short.
                    let _ = sleep_unless_cancelled(wait, &self.shutdown).await;
                    ("requeued", delivery.requeue().await)
                } else {
                    if sent > 0 {
                        // The network answers again: the next outage starts from a short pause.
                        lock(&self.outage).reset();
                    }
                    tracing::info!(event_id = %event, total, sent, skipped, failed, "event delivered");
                    self.adapter.delivered(&fanout).await;
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

impl<A: Adapter> EventConsumer<A> {
    /// Waits until the chats in `held` may have settled (at most [`HELD_RECHECK`], at most
    /// until the earliest lease ends), claims them again and queues jobs for those won
    /// now. Leaves in `held` those still held; answers the new jobs and how many were
    /// found settled, or `None` on shutdown.
    async fn wait_for_held(
        &self,
        event: Uuid,
        fanout: &Arc<A::Fanout>,
        held: &mut Vec<(Recipient, chrono::DateTime<chrono::Utc>)>,
    ) -> Option<(Waits, usize)> {
        let earliest = held.iter().map(|(_, lease)| *lease).min();
        let until_lease = earliest
            .and_then(|lease| (lease - chrono::Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO);
        let wait = until_lease.clamp(HELD_RECHECK_MIN, HELD_RECHECK);
        tracing::info!(event_id = %event, chats = held.len(), wait_ms = wait.as_millis() as u64, "chats claimed by another instance; waiting for them");
        if sleep_unless_cancelled(wait, &self.shutdown)
            .await
            .is_cancelled()
        {
            return None;
        }
        let recipients: Vec<Recipient> = held.drain(..).map(|(r, _)| r).collect();
        let claimed = self.claim(event, recipients).await?;
        *held = claimed.held;
        if !claimed.won.is_empty() {
            tracing::info!(event_id = %event, chats = claimed.won.len(), "took over lapsed claims");
        }
        let waits = self
            .queue_jobs(event, fanout, claimed.won, claimed.leased_until)
            .await?;
        Some((waits, claimed.settled))
    }

    /// Releases this instance's unsettled claims of `event` before it is requeued, so
    /// its next delivery need not wait for their leases; a failure leaves them to lapse.
    async fn release(&self, event: Uuid) {
        if let Err(cause) = self.claims.release(Some(event)).await {
            tracing::warn!(event_id = %event, %cause, "could not release delivery claims");
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
