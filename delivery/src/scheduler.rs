//! The send scheduler: one task that decides when each queued message may go out.
//!
//! Telegram limits a bot to about 30 messages per second overall, one per second per
//! private chat and 20 per minute per group. Sleeping between sends in sequence would
//! either break those limits or waste most of the budget, so instead:
//!
//! - a token bucket paces every send overall (capacity just above one token, so sends
//!   are spread evenly and a late timer wake-up does not lose its share of the budget);
//! - each chat has a FIFO queue and a "next allowed" instant; at most one message per
//!   chat is in flight, which keeps every chat's messages in the order they were queued;
//! - chats whose next allowed instant is still to come wait in a min-heap keyed by it;
//! - chats that may send now take turns by the [`Turn`] of their first message: urgent
//!   kinds (a stream is live, starts soon) before everything else, then fan-outs in
//!   turn, so a new event's chats are not queued behind a long fan-out of an earlier one
//!   (start-time fair queuing: each event's messages are numbered from the virtual clock
//!   of the message last started, one number apart); many chats' sends run concurrently,
//!   up to `max_in_flight`.
//!
//! One event to 3,000 chats at 30 messages a second takes 100 s; a reminder for 10 other
//! chats arriving meanwhile now goes out within the next 10 sends instead of after the
//! 3,000 (`cargo bench -p stargazer-bot-telegram --bench interleave`). A chat's own
//! messages still go in the order they were queued, whatever their kind: a stream's
//! later messages reply to and edit its first one.
//!
//! Telegram's paid broadcasts lift the overall limit (up to 1,000 messages a second) for a
//! fee per message: with [`PaidBroadcast`] set, a send that finds the overall bucket
//! empty may take a token of a second bucket (the paid rate above the free one) while
//! the day's budget lasts, and goes out marked paid; per-chat gaps still hold.
//!
//! A 429 puts the chat on hold for `retry_after` and lowers the overall rate, which then
//! climbs back while no 429 arrives. The overall rate is the token's: with N bot
//! instances counted ([`SenderCount`]), each paces at `global_per_second / N`. On
//! shutdown the scheduler stops starting sends, lets the ones in flight finish, and drops
//! the rest (their owners see them abandoned).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use prometheus::{IntCounter, Registry};
use stargazer_core::telemetry::register_collector;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::senders::SenderCount;

/// What one attempt at a queued message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The message was sent, or its failure recorded: the job is finished and the chat's
    /// interval starts counting from the attempt.
    Done,
    /// Nothing was sent (the delivery log already had it): finished without using the
    /// chat's interval or the overall budget.
    Skipped,
    /// One Bot API call of a job that makes several (a reply, then an edit of the first
    /// message) went through: the job stays first in the chat's queue and makes its next
    /// call once the chat's interval and the overall budget allow, like a new message.
    Continue,
    /// Telegram answered 429: try again after this long, and slow down overall.
    RetryAfter(Duration),
    /// A transient failure: try again after this long.
    Retry(Duration),
    /// The chat became a supergroup with this id: send there instead.
    Moved(i64),
    /// Telegram kept failing transiently past the job's retry budget: the job is over
    /// without a final outcome (its event goes back to the queue), and the chat is held
    /// for at least this long (a long `retry_after`, or zero).
    Deferred(Duration),
}

/// Which messages a job takes turns with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// The message loses its worth within minutes (a stream is live or starts soon): it
    /// goes before every message that is not.
    pub urgent: bool,
    /// The fan-out the message belongs to (its event's id): fan-outs take turns.
    pub flow: u128,
}

/// A queued message: something that can be attempted (again) against a chat id.
pub trait Job: Send + 'static {
    /// The lane the job waits in; asked once, when it is queued.
    fn lane(&self) -> Lane;

    /// Attempts the job for `chat`; `paid` says the attempt took a paid-broadcast token
    /// and may be sent as one (networks without paid sends never see it set). A job
    /// stays with the scheduler until it returns `Done`, `Skipped`, `Deferred`, or the
    /// scheduler shuts down (then it is dropped).
    fn attempt(&mut self, chat: i64, paid: bool) -> impl Future<Output = Attempt> + Send;
}

/// Paid sends past the overall limit (Telegram's `allow_paid_broadcast`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaidBroadcast {
    /// Overall sends per second with paid ones (above `Limits::global_per_second`).
    pub per_second: f64,
    /// Paid sends per UTC day, over all instances (each spends its share).
    pub daily_budget: u64,
}

/// The pacing the scheduler enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Sends per second over all chats.
    pub global_per_second: f64,
    /// Minimum gap between two sends to one private chat (positive id).
    pub chat_interval: Duration,
    /// Minimum gap between two sends to one group (negative id).
    pub group_interval: Duration,
    /// Sends open at once.
    pub max_in_flight: usize,
    /// How chats that may send take turns.
    pub order: Order,
    /// Paid sends past the overall limit, if allowed.
    pub paid: Option<PaidBroadcast>,
}

/// How chats that may send now take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Urgent kinds first, then fan-outs in turn (see the module documentation).
    #[default]
    Fair,
    /// By when each chat's first message was queued, whatever its kind: every chat of an
    /// event behind every chat of the events before it. Kept as the benches' baseline.
    Arrival,
}

/// A queued message's place among those of other chats; smaller goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Turn {
    /// 0 for urgent messages, 1 for the others.
    rank: u8,
    /// The message's number in its fan-out, on the scheduler's virtual clock.
    virtual_start: u64,
    /// Order of queueing: ties go to the message queued first.
    seq: u64,
}

impl Limits {
    fn interval(&self, chat: i64) -> Duration {
        if chat < 0 {
            self.group_interval
        } else {
            self.chat_interval
        }
    }
}

/// Counters the scheduler keeps, read by tests and benches and exported as Prometheus
/// metrics once [`Stats::register`]ed.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Attempts that ended `Done` (sent, or recorded failed for good).
    pub done: IntCounter,
    /// Attempts that ended `Skipped` (already in the delivery log).
    pub skipped: IntCounter,
    /// 429 answers received.
    pub retry_after: IntCounter,
    /// Transient failures retried.
    pub retried: IntCounter,
    /// Chats followed to their new id.
    pub moved: IntCounter,
    /// Messages given back unsent after transient failures past the retry budget.
    pub deferred: IntCounter,
    /// Calls made by jobs with more calls to make (a reply before an edit).
    pub steps: IntCounter,
    /// Attempts that took a paid-broadcast token.
    pub paid: IntCounter,
}

impl Default for Stats {
    /// Counters without the `im` label (a scheduler outside a bot).
    fn default() -> Self {
        Self::labelled(None)
    }
}

impl Stats {
    /// Counters labelled `im="<im>"`, so that the bots of one process (standalone runs
    /// every bot configured) export their counts side by side under the same names.
    pub fn new(im: &str) -> Self {
        Self::labelled(Some(im))
    }

    fn labelled(im: Option<&str>) -> Self {
        // Names, help texts and the label are fixed valid literals (an im is a short
        // lowercase word), so construction cannot fail.
        let counter = |name: &str, help: &str| {
            let mut opts = prometheus::Opts::new(name, help);
            if let Some(im) = im {
                opts = opts.const_label("im", im);
            }
            IntCounter::with_opts(opts).expect("valid metric")
        };
        Self {
            done: counter(
                "stargazer_bot_send_attempts_done_total",
                "Message sends that ended: sent, or recorded failed for good.",
            ),
            skipped: counter(
                "stargazer_bot_send_attempts_skipped_total",
                "Message sends skipped because the delivery log already had them.",
            ),
            retry_after: counter(
                "stargazer_bot_rate_limited_total",
                "429 Too Many Requests answers from the Bot API.",
            ),
            retried: counter(
                "stargazer_bot_send_retries_total",
                "Message sends retried after a transient failure.",
            ),
            moved: counter(
                "stargazer_bot_chats_migrated_total",
                "Chats followed to their new id after a group migration.",
            ),
            deferred: counter(
                "stargazer_bot_send_deferred_total",
                "Message sends given back unsent (their event requeued) after transient failures past the retry budget.",
            ),
            steps: counter(
                "stargazer_bot_send_steps_total",
                "Bot API calls of deliveries that make more than one (a reply, then an edit of the stream's first message).",
            ),
            paid: counter(
                "stargazer_bot_paid_broadcasts_total",
                "Send attempts past the overall limit as paid broadcasts (charged by Telegram when sent).",
            ),
        }
    }

    /// Exports the counters through `registry`.
    pub fn register(&self, registry: &Registry) {
        for counter in [
            &self.done,
            &self.skipped,
            &self.retry_after,
            &self.retried,
            &self.moved,
            &self.deferred,
            &self.steps,
            &self.paid,
        ] {
            register_collector(registry, counter.clone());
        }
    }
}

/// The handle jobs are queued through. Cloning it is cheap; the scheduler task ends once
/// shutdown is requested and the sends in flight have finished.
pub struct SchedulerHandle<J> {
    tx: mpsc::UnboundedSender<(i64, J)>,
    stats: Arc<Stats>,
}

impl<J> Clone for SchedulerHandle<J> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<J: Job> SchedulerHandle<J> {
    /// Queues `job` behind every job already queued for `chat`. Returns the job back if
    /// the scheduler has stopped.
    pub fn submit(&self, chat: i64, job: J) -> Result<(), J> {
        self.tx.send((chat, job)).map_err(|err| err.0 .1)
    }

    /// The scheduler's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// Starts the scheduler; it runs until `shutdown` is cancelled and the sends in flight
/// have finished. Await the returned future (usually spawned) to wait for that.
/// `senders` says how many instances share `limits.global_per_second`.
pub fn start<J: Job>(
    limits: Limits,
    senders: SenderCount,
    shutdown: CancellationToken,
) -> (SchedulerHandle<J>, impl Future<Output = ()> + Send) {
    start_counting(limits, senders, Stats::default(), shutdown)
}

/// [`start`], counting in `stats` (a bot's, labelled with its im).
pub fn start_counting<J: Job>(
    limits: Limits,
    senders: SenderCount,
    stats: Stats,
    shutdown: CancellationToken,
) -> (SchedulerHandle<J>, impl Future<Output = ()> + Send) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(stats);
    let share = senders.get();
    let now = Instant::now();
    let scheduler = Scheduler {
        limits,
        bucket: Bucket::new(limits.global_per_second / f64::from(share), now),
        paid: limits.paid.map(|paid| PaidState {
            bucket: Bucket::new(paid_rate(&limits, paid, share), now),
            day: chrono::Utc::now().date_naive(),
            spent: 0,
            exhausted_logged: false,
        }),
        senders,
        share,
        chats: HashMap::new(),
        waiting: BinaryHeap::new(),
        eligible: BinaryHeap::new(),
        clock: 0,
        flows: HashMap::new(),
        seq: 0,
        stats: stats.clone(),
    };
    (SchedulerHandle { tx, stats }, scheduler.run(rx, shutdown))
}

/// Overall pacing: a token bucket whose rate drops on 429 and recovers over time.
#[derive(Debug)]
struct Bucket {
    max_rate: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
    last_throttle: Option<Instant>,
}

/// Just above one token: sends stay evenly spaced, yet a timer that fires a little late
/// keeps the fraction of a token it earned meanwhile.
const BUCKET_CAPACITY: f64 = 1.1;
/// Factor the rate is multiplied by on each 429. Mild, because one 429 is usually one
/// chat or one unlucky second; repeated 429s compound it quickly (0.85^5 ≈ 0.44).
const THROTTLE_FACTOR: f64 = 0.85;
/// After a 429, the rate stays lowered this long before it starts to climb back.
const RECOVER_AFTER: Duration = Duration::from_secs(1);
/// Share of the configured rate regained per second while recovering.
const RECOVER_PER_SECOND: f64 = 0.2;

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            max_rate: rate,
            rate,
            tokens: 1.0,
            last: now,
            last_throttle: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if self.rate < self.max_rate {
            let calm = self
                .last_throttle
                .is_none_or(|at| now.saturating_duration_since(at) >= RECOVER_AFTER);
            if calm {
                self.rate =
                    (self.rate + self.max_rate * RECOVER_PER_SECOND * elapsed).min(self.max_rate);
            }
        }
        self.tokens = (self.tokens + self.rate * elapsed).min(BUCKET_CAPACITY);
    }

    /// Takes a token, or says when one will be there.
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            Err(now + Duration::from_secs_f64(wait))
        }
    }

    fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(BUCKET_CAPACITY);
    }

    /// A new configured rate (this instance's share changed): an unthrottled bucket
    /// moves to it at once, a throttled one keeps recovering towards it.
    fn set_max_rate(&mut self, max_rate: f64, now: Instant) {
        self.refill(now);
        let unthrottled = self.rate >= self.max_rate;
        self.max_rate = max_rate;
        self.rate = if unthrottled {
            max_rate
        } else {
            self.rate.min(max_rate)
        };
    }

    fn throttle(&mut self, now: Instant) {
        self.refill(now);
        // Never below one message per second, or a burst of 429s could stall delivery.
        self.rate = (self.rate * THROTTLE_FACTOR).max(1.0_f64.min(self.max_rate));
        self.last_throttle = Some(now);
    }
}

struct ChatQueue<J> {
    jobs: VecDeque<(Turn, J)>,
    next_at: Instant,
    busy: bool,
    /// The heap entry that stands for the chat; any other entry of it is stale.
    filed: Option<Filed>,
}

/// Where a chat is filed, and under which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filed {
    Waiting(Instant),
    Eligible(Turn),
}

impl<J> ChatQueue<J> {
    fn new(now: Instant) -> Self {
        Self {
            jobs: VecDeque::new(),
            next_at: now,
            busy: false,
            filed: None,
        }
    }
}

type InFlight<J> = Pin<Box<dyn Future<Output = (i64, Instant, Sent, J, Attempt)> + Send>>;

/// How an attempt was started: its turn, and whether it took a paid token.
#[derive(Debug, Clone, Copy)]
struct Sent {
    turn: Turn,
    paid: bool,
}

/// The paid sends of one instance: their bucket and the day's spending.
#[derive(Debug)]
struct PaidState {
    bucket: Bucket,
    /// The UTC day `spent` counts.
    day: chrono::NaiveDate,
    spent: u64,
    /// Whether the day's exhaustion was logged.
    exhausted_logged: bool,
}

/// This instance's paid rate: its share of the paid rate above the free one.
fn paid_rate(limits: &Limits, paid: PaidBroadcast, share: u32) -> f64 {
    (paid.per_second - limits.global_per_second).max(0.0) / f64::from(share)
}

struct Scheduler<J> {
    limits: Limits,
    bucket: Bucket,
    /// Paid sends, when allowed.
    paid: Option<PaidState>,
    /// How many instances share the overall rate, and the count the bucket is set for.
    senders: SenderCount,
    share: u32,
    chats: HashMap<i64, ChatQueue<J>>,
    /// Chats with messages whose next allowed instant is still to come.
    waiting: BinaryHeap<Reverse<(Instant, i64)>>,
    /// Chats that may send now, by the turn of their first message.
    eligible: BinaryHeap<Reverse<(Turn, i64)>>,
    /// The virtual start of the last message started.
    clock: u64,
    /// The virtual start given to each fan-out's latest message. A fan-out whose last
    /// number is behind the clock is forgotten: its next message would start at the
    /// clock anyway.
    flows: HashMap<u128, u64>,
    /// Messages queued so far.
    seq: u64,
    stats: Arc<Stats>,
}

/// How often idle chat entries (empty, past their interval) are forgotten.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

impl<J: Job> Scheduler<J> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<(i64, J)>, shutdown: CancellationToken) {
        let mut in_flight: FuturesUnordered<InFlight<J>> = FuturesUnordered::new();
        let mut stopping = false;
        let mut last_cleanup = Instant::now();
        loop {
            let wake = if stopping {
                None
            } else {
                self.dispatch(&mut in_flight)
            };
            if stopping && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                }
                Some((chat, started, sent, job, attempt)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.finish(chat, started, sent, job, attempt);
                }
                queued = rx.recv(), if !stopping => match queued {
                    Some((chat, job)) => {
                        let turn = self.turn(job.lane());
                        self.enqueue(chat, turn, job, false);
                    }
                    // Every handle is gone: nothing more can arrive.
                    None => stopping = true,
                },
                _ = sleep_until_opt(wake) => {}
            }
            let now = Instant::now();
            if now.saturating_duration_since(last_cleanup) >= CLEANUP_EVERY {
                last_cleanup = now;
                self.chats
                    .retain(|_, q| q.busy || !q.jobs.is_empty() || q.next_at > now);
                let clock = self.clock;
                self.flows.retain(|_, last| *last >= clock);
            }
        }
        let abandoned: usize = self.chats.values().map(|q| q.jobs.len()).sum();
        if abandoned > 0 {
            tracing::info!(abandoned, "scheduler stopped with messages still queued");
        }
    }

    /// Starts every send allowed now; returns when to look again.
    fn dispatch(&mut self, in_flight: &mut FuturesUnordered<InFlight<J>>) -> Option<Instant> {
        while in_flight.len() < self.limits.max_in_flight {
            let now = Instant::now();
            self.promote(now);
            let Some(&Reverse((turn, chat))) = self.eligible.peek() else {
                return self.waiting.peek().map(|&Reverse((at, _))| at);
            };
            let current = self
                .chats
                .get(&chat)
                .is_some_and(|q| q.filed == Some(Filed::Eligible(turn)));
            if !current {
                // A stale entry: the chat was filed again under another key.
                self.eligible.pop();
                continue;
            }
            let share = self.senders.get();
            if share != self.share {
                self.share = share;
                self.bucket
                    .set_max_rate(self.limits.global_per_second / f64::from(share), now);
                if let (Some(state), Some(paid)) = (self.paid.as_mut(), self.limits.paid) {
                    state
                        .bucket
                        .set_max_rate(paid_rate(&self.limits, paid, share), now);
                }
            }
            let paid = match self.bucket.take(now) {
                Ok(()) => false,
                Err(free_at) => match self.take_paid(now) {
                    Ok(()) => true,
                    Err(paid_at) => return Some(paid_at.map_or(free_at, |at| at.min(free_at))),
                },
            };
            self.eligible.pop();
            let Some(queue) = self.chats.get_mut(&chat) else {
                continue;
            };
            queue.filed = None;
            let Some((turn, mut job)) = queue.jobs.pop_front() else {
                continue;
            };
            self.clock = self.clock.max(turn.virtual_start);
            queue.busy = true;
            if paid {
                self.stats.paid.inc();
            }
            in_flight.push(Box::pin(async move {
                let attempt = job.attempt(chat, paid).await;
                (chat, now, Sent { turn, paid }, job, attempt)
            }));
        }
        None
    }

    /// Takes a paid token while the day's budget (this instance's share) lasts; else
    /// says when one will be there (`None`: not today, or paid sends are off).
    fn take_paid(&mut self, now: Instant) -> Result<(), Option<Instant>> {
        let (Some(state), Some(paid)) = (self.paid.as_mut(), self.limits.paid) else {
            return Err(None);
        };
        let today = chrono::Utc::now().date_naive();
        if state.day != today {
            state.day = today;
            state.spent = 0;
            state.exhausted_logged = false;
        }
        let budget = paid.daily_budget / u64::from(self.share.max(1));
        if state.spent >= budget {
            if !state.exhausted_logged {
                state.exhausted_logged = true;
                tracing::info!(
                    budget,
                    "paid broadcast budget of the day spent; back to the free rate until midnight UTC"
                );
            }
            return Err(None);
        }
        state.bucket.take(now).map_err(Some)?;
        state.spent += 1;
        Ok(())
    }

    /// Gives back the token an attempt took (it sent nothing).
    fn refund(&mut self, paid: bool) {
        match self.paid.as_mut() {
            Some(state) if paid => {
                state.bucket.refund();
                state.spent = state.spent.saturating_sub(1);
            }
            _ => self.bucket.refund(),
        }
    }

    /// Moves the chats whose next allowed instant has come to the eligible ones.
    fn promote(&mut self, now: Instant) {
        while let Some(&Reverse((at, chat))) = self.waiting.peek() {
            if at > now {
                return;
            }
            self.waiting.pop();
            if let Some(queue) = self.chats.get_mut(&chat) {
                if queue.filed == Some(Filed::Waiting(at)) {
                    queue.filed = None;
                    self.refile(chat);
                }
            }
        }
    }

    /// The turn of a message newly queued in `lane`.
    fn turn(&mut self, lane: Lane) -> Turn {
        self.seq += 1;
        let (rank, virtual_start) = match self.limits.order {
            Order::Fair => {
                let last = self.flows.entry(lane.flow).or_insert(0);
                let virtual_start = last.saturating_add(1).max(self.clock);
                *last = virtual_start;
                (u8::from(!lane.urgent), virtual_start)
            }
            Order::Arrival => (0, self.seq),
        };
        Turn {
            rank,
            virtual_start,
            seq: self.seq,
        }
    }

    fn enqueue(&mut self, chat: i64, turn: Turn, job: J, front: bool) {
        let now = Instant::now();
        let queue = self
            .chats
            .entry(chat)
            .or_insert_with(|| ChatQueue::new(now));
        if front {
            queue.jobs.push_front((turn, job));
            // The chat's first message changed: file it again under its turn.
            queue.filed = None;
        } else {
            queue.jobs.push_back((turn, job));
        }
        self.refile(chat);
    }

    /// Files a chat that has work and is neither busy nor filed: with the eligible ones
    /// if it may send now, else with the waiting ones.
    fn refile(&mut self, chat: i64) {
        let now = Instant::now();
        if let Some(queue) = self.chats.get_mut(&chat) {
            if queue.busy || queue.filed.is_some() {
                return;
            }
            let Some(&(turn, _)) = queue.jobs.front() else {
                return;
            };
            if queue.next_at <= now {
                queue.filed = Some(Filed::Eligible(turn));
                self.eligible.push(Reverse((turn, chat)));
            } else {
                queue.filed = Some(Filed::Waiting(queue.next_at));
                self.waiting.push(Reverse((queue.next_at, chat)));
            }
        }
    }

    fn finish(&mut self, chat: i64, started: Instant, sent: Sent, job: J, attempt: Attempt) {
        let Sent { turn, paid } = sent;
        let now = Instant::now();
        let interval = self.limits.interval(chat);
        let Some(queue) = self.chats.get_mut(&chat) else {
            return;
        };
        queue.busy = false;
        match attempt {
            Attempt::Done => {
                self.stats.done.inc();
                queue.next_at = queue.next_at.max(started + interval);
                drop(job);
            }
            Attempt::Skipped => {
                self.stats.skipped.inc();
                self.refund(paid);
                drop(job);
            }
            Attempt::Continue => {
                self.stats.steps.inc();
                queue.next_at = queue.next_at.max(started + interval);
                queue.jobs.push_front((turn, job));
            }
            Attempt::RetryAfter(wait) => {
                self.stats.retry_after.inc();
                tracing::warn!(
                    chat_id = chat,
                    retry_after_ms = wait.as_millis() as u64,
                    "telegram asked to slow down"
                );
                queue.next_at = queue.next_at.max(now + wait.max(interval));
                queue.jobs.push_front((turn, job));
                self.bucket.throttle(now);
            }
            Attempt::Retry(wait) => {
                self.stats.retried.inc();
                queue.next_at = queue.next_at.max(now + wait);
                queue.jobs.push_front((turn, job));
            }
            Attempt::Deferred(hold) => {
                self.stats.deferred.inc();
                queue.next_at = queue.next_at.max(started + interval).max(now + hold);
                drop(job);
            }
            Attempt::Moved(to) => {
                self.stats.moved.inc();
                queue.next_at = queue.next_at.max(started + interval);
                self.refile(chat);
                // The message was not delivered: it goes first in the new chat's queue.
                self.enqueue(to, turn, job, true);
                return;
            }
        }
        self.refile(chat);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A job that logs when it ran and answers from a script.
    #[derive(Debug)]
    struct Scripted {
        id: u32,
        log: Arc<Mutex<Vec<(u32, i64, Instant)>>>,
        script: VecDeque<Attempt>,
        done: Option<tokio::sync::oneshot::Sender<()>>,
        lane: Lane,
    }

    impl Job for Scripted {
        fn lane(&self) -> Lane {
            self.lane
        }

        async fn attempt(&mut self, chat: i64, _paid: bool) -> Attempt {
            self.log
                .lock()
                .unwrap()
                .push((self.id, chat, Instant::now()));
            let result = self.script.pop_front().unwrap_or(Attempt::Done);
            if matches!(
                result,
                Attempt::Done | Attempt::Skipped | Attempt::Deferred(_)
            ) {
                if let Some(done) = self.done.take() {
                    let _ = done.send(());
                }
            }
            result
        }
    }

    fn limits(rate: f64) -> Limits {
        Limits {
            global_per_second: rate,
            chat_interval: Duration::from_secs(1),
            group_interval: Duration::from_secs(3),
            max_in_flight: 8,
            order: Order::Fair,
            paid: None,
        }
    }

    type Log = Arc<Mutex<Vec<(u32, i64, Instant)>>>;

    fn job(
        id: u32,
        log: &Log,
        script: &[Attempt],
    ) -> (Scripted, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Scripted {
                id,
                log: log.clone(),
                script: script.iter().copied().collect(),
                done: Some(tx),
                lane: Lane {
                    urgent: false,
                    flow: 0,
                },
            },
            rx,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn paces_overall_and_per_chat_keeping_order() {
        let shutdown = CancellationToken::new();
        let (handle, task) =
            start::<Scripted>(limits(10.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let mut waits = Vec::new();
        let t0 = Instant::now();
        // 20 private chats, one message each, plus 3 messages to chat 1 and 2 to a group.
        for chat in 1..=20 {
            let (j, rx) = job(chat as u32, &log, &[]);
            handle.submit(chat, j).unwrap();
            waits.push(rx);
        }
        for id in 100..103 {
            let (j, rx) = job(id, &log, &[]);
            handle.submit(1, j).unwrap();
            waits.push(rx);
        }
        for id in 200..202 {
            let (j, rx) = job(id, &log, &[]);
            handle.submit(-5, j).unwrap();
            waits.push(rx);
        }
        for rx in waits {
            rx.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 25);
        // Overall: 25 sends at 10/s with a ~1 token start take about 2.4 s.
        let span = log.last().unwrap().2 - t0;
        assert!(span >= Duration::from_millis(2300), "{span:?}");
        // Any one-second window holds at most rate + capacity sends.
        for (i, (_, _, at)) in log.iter().enumerate() {
            let in_window = log[i..]
                .iter()
                .filter(|e| e.2 < *at + Duration::from_secs(1))
                .count();
            assert!(in_window <= 11, "{in_window} sends within 1 s of {at:?}");
        }
        // Chat 1: its messages in queue order, a second apart.
        let chat1: Vec<_> = log.iter().filter(|e| e.1 == 1).collect();
        assert_eq!(
            chat1.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 100, 101, 102]
        );
        for pair in chat1.windows(2) {
            assert!(pair[1].2 - pair[0].2 >= Duration::from_secs(1));
        }
        // The group: three seconds apart.
        let group: Vec<_> = log.iter().filter(|e| e.1 == -5).collect();
        assert_eq!(group.len(), 2);
        assert!(group[1].2 - group[0].2 >= Duration::from_secs(3));
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn each_step_of_a_job_is_paced_like_a_message_and_keeps_its_place() {
        let shutdown = CancellationToken::new();
        let (handle, task) =
            start::<Scripted>(limits(10.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        // A reply then an edit (two calls), queued before another message to that chat.
        let (two_steps, rx1) = job(1, &log, &[Attempt::Continue, Attempt::Done]);
        handle.submit(7, two_steps).unwrap();
        let (next, rx2) = job(2, &log, &[]);
        handle.submit(7, next).unwrap();
        rx1.await.unwrap();
        rx2.await.unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 1, 2]);
        for pair in log.windows(2) {
            assert!(pair[1].2 - pair[0].2 >= Duration::from_secs(1), "{log:?}");
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_the_chat_and_slows_everyone() {
        let shutdown = CancellationToken::new();
        let (handle, task) =
            start::<Scripted>(limits(20.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let (first, rx1) = job(1, &log, &[Attempt::RetryAfter(Duration::from_secs(5))]);
        let (second, rx2) = job(2, &log, &[]);
        handle.submit(7, first).unwrap();
        handle.submit(7, second).unwrap();
        rx1.await.unwrap();
        rx2.await.unwrap();
        let log = log.lock().unwrap().clone();
        // Attempt, retry of the same job after 5 s, then the next one (order kept).
        assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 1, 2]);
        assert!(log[1].2 - log[0].2 >= Duration::from_secs(5));
        assert_eq!(handle.stats().retry_after.get(), 1);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_job_leaves_the_queue_and_its_hold_delays_the_chat() {
        let shutdown = CancellationToken::new();
        let (handle, task) =
            start::<Scripted>(limits(20.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let (given_back, rx1) = job(1, &log, &[Attempt::Deferred(Duration::from_secs(90))]);
        let (next, rx2) = job(2, &log, &[]);
        handle.submit(7, given_back).unwrap();
        handle.submit(7, next).unwrap();
        rx1.await.unwrap();
        rx2.await.unwrap();
        let log = log.lock().unwrap().clone();
        // Attempted once, not retried; the chat's next job waits out the hold.
        assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(log[1].2 - log[0].2 >= Duration::from_secs(90));
        assert_eq!(handle.stats().deferred.get(), 1);
        assert_eq!(handle.stats().done.get(), 1);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_new_share_moves_an_unthrottled_rate_at_once() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(30.0, t0);
        bucket.set_max_rate(15.0, t0);
        assert!(
            (bucket.rate - 15.0).abs() < 1e-9,
            "a second instance halves it"
        );
        bucket.set_max_rate(30.0, t0);
        assert!(
            (bucket.rate - 30.0).abs() < 1e-9,
            "alone again, the whole rate"
        );
        bucket.throttle(t0);
        bucket.set_max_rate(15.0, t0);
        assert!(
            (bucket.rate - 15.0).abs() < 1e-9,
            "never above the new share"
        );
        bucket.throttle(t0);
        bucket.set_max_rate(30.0, t0);
        assert!(
            (bucket.rate - 12.75).abs() < 1e-9,
            "a throttled rate keeps recovering from where it is"
        );
    }

    #[test]
    fn bucket_throttles_then_recovers() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(30.0, t0);
        bucket.throttle(t0);
        assert!((bucket.rate - 25.5).abs() < 1e-9);
        bucket.throttle(t0);
        assert!((bucket.rate - 21.675).abs() < 1e-9, "429s compound");
        bucket.refill(t0 + Duration::from_millis(500));
        assert!(
            (bucket.rate - 21.675).abs() < 1e-9,
            "no recovery right after a 429"
        );
        bucket.refill(t0 + Duration::from_secs(2));
        bucket.refill(t0 + Duration::from_secs(10));
        assert!((bucket.rate - 30.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn moved_jobs_go_to_the_new_chat_and_skips_cost_nothing() {
        let shutdown = CancellationToken::new();
        let (handle, task) = start::<Scripted>(limits(1.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let (moved, rx1) = job(1, &log, &[Attempt::Moved(-100)]);
        handle.submit(-1, moved).unwrap();
        rx1.await.unwrap();
        let mut rxs = Vec::new();
        for id in 10..15 {
            let (j, rx) = job(id, &log, &[Attempt::Skipped]);
            handle.submit(i64::from(id), j).unwrap();
            rxs.push(rx);
        }
        let before = Instant::now();
        for rx in rxs {
            rx.await.unwrap();
        }
        // Skipped jobs give their token back: five of them do not take five seconds.
        assert!(Instant::now() - before < Duration::from_secs(2));
        let log = log.lock().unwrap().clone();
        assert_eq!((log[0].1, log[1].1), (-1, -100));
        shutdown.cancel();
        task.await.unwrap();
    }

    /// Queues one job per chat of `chats` in `lane`; the receivers learn when each ends.
    fn fan_out(
        handle: &SchedulerHandle<Scripted>,
        log: &Log,
        chats: std::ops::RangeInclusive<i64>,
        lane: Lane,
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        chats
            .map(|chat| {
                let (mut j, rx) = job(chat as u32, log, &[]);
                j.lane = lane;
                handle.submit(chat, j).unwrap();
                rx
            })
            .collect()
    }

    /// How long after `from` the last of `waits` ended.
    async fn all_done(waits: Vec<tokio::sync::oneshot::Receiver<()>>, from: Instant) -> Duration {
        for rx in waits {
            rx.await.unwrap();
        }
        Instant::now() - from
    }

    const POST: Lane = Lane {
        urgent: false,
        flow: 1,
    };

    /// 100 chats of one event at 10 messages a second, then 5 chats of a second event
    /// 1 s later: how long those 5 wait, in the given order.
    async fn second_event_wait(order: Order, second: Lane) -> Duration {
        let shutdown = CancellationToken::new();
        let limits = Limits {
            order,
            ..limits(10.0)
        };
        let (handle, task) = start::<Scripted>(limits, SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let first = fan_out(&handle, &log, 1..=100, POST);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        let waited = all_done(fan_out(&handle, &log, 1001..=1005, second), t0).await;
        all_done(first, t0).await;
        shutdown.cancel();
        task.await.unwrap();
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_event_takes_turns_with_a_long_fan_out() {
        let other_post = Lane {
            urgent: false,
            flow: 2,
        };
        // Taking turns, the 5 chats go out among the next 10 sends (about 1 s)...
        let fair = second_event_wait(Order::Fair, other_post).await;
        assert!(fair <= Duration::from_millis(1100), "{fair:?}");
        // ...where arrival order puts them behind the 90 left of the first event.
        let arrival = second_event_wait(Order::Arrival, other_post).await;
        assert!(arrival >= Duration::from_secs(9), "{arrival:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_kinds_go_before_a_fan_out_of_posts() {
        let live = Lane {
            urgent: true,
            flow: 2,
        };
        // The 5 live messages are the next 5 sends: half a second at 10/s.
        let waited = second_event_wait(Order::Fair, live).await;
        assert!(waited <= Duration::from_millis(600), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chats_own_messages_keep_their_order_whatever_their_kind() {
        let shutdown = CancellationToken::new();
        let (handle, task) =
            start::<Scripted>(limits(10.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        // A post to chat 7 queued behind other chats' posts, then a live message to it.
        let mut waits = fan_out(&handle, &log, 1..=20, POST);
        let (post, rx1) = job(100, &log, &[]);
        handle.submit(7, post).unwrap();
        let (mut live, rx2) = job(101, &log, &[]);
        live.lane = Lane {
            urgent: true,
            flow: 2,
        };
        handle.submit(7, live).unwrap();
        waits.extend([rx1, rx2]);
        all_done(waits, Instant::now()).await;
        let chat7: Vec<u32> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.1 == 7)
            .map(|e| e.0)
            .collect();
        assert_eq!(chat7, vec![7, 100, 101]);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn paid_sends_go_past_the_overall_rate_until_the_budget_is_spent() {
        let shutdown = CancellationToken::new();
        let limits = Limits {
            paid: Some(PaidBroadcast {
                per_second: 50.0,
                daily_budget: 20,
            }),
            max_in_flight: 64,
            ..limits(10.0)
        };
        let (handle, task) = start::<Scripted>(limits, SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let t0 = Instant::now();
        let span = all_done(fan_out(&handle, &log, 1..=60, POST), t0).await;
        // 20 paid sends at 40/s beside the free 10/s, then the other 40 or so at 10/s:
        // about 4 s instead of 6.
        assert_eq!(handle.stats().paid.get(), 20);
        assert!(span < Duration::from_millis(4600), "{span:?}");
        assert!(span > Duration::from_millis(3500), "{span:?}");
        shutdown.cancel();
        task.await.unwrap();
    }

    /// Two bots in one process (standalone) export their counters side by side, told
    /// apart by `im`, instead of the second one counting privately.
    #[test]
    fn the_counters_of_two_bots_share_one_registry() {
        let registry = Registry::new();
        let (telegram, discord) = (Stats::new("telegram"), Stats::new("discord"));
        for stats in [&telegram, &discord] {
            for counter in [&stats.done, &stats.retry_after] {
                registry
                    .register(Box::new(counter.clone()))
                    .expect("a second bot's counter registers");
            }
        }
        telegram.done.inc();
        discord.done.inc_by(2);
        let family = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "stargazer_bot_send_attempts_done_total")
            .expect("exported");
        let by_im: Vec<(String, f64)> = family
            .get_metric()
            .iter()
            .map(|m| {
                let im = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "im")
                    .map(|l| l.value().to_owned());
                (im.unwrap_or_default(), m.get_counter().value())
            })
            .collect();
        assert_eq!(
            by_im,
            vec![("discord".into(), 2.0), ("telegram".into(), 1.0)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_paid_send_without_paid_broadcasts() {
        let shutdown = CancellationToken::new();
        let (handle, task) =
            start::<Scripted>(limits(10.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let t0 = Instant::now();
        let span = all_done(fan_out(&handle, &log, 1..=60, POST), t0).await;
        assert_eq!(handle.stats().paid.get(), 0);
        assert!(span > Duration::from_millis(5800), "{span:?}");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drops_queued_jobs() {
        let shutdown = CancellationToken::new();
        let (handle, task) = start::<Scripted>(limits(1.0), SenderCount::alone(), shutdown.clone());
        let task = tokio::spawn(task);
        let log: Log = Default::default();
        let mut rxs = Vec::new();
        for id in 0..5 {
            let (j, rx) = job(id, &log, &[]);
            handle.submit(i64::from(id) + 1, j).unwrap();
            rxs.push(rx);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.cancel();
        task.await.unwrap();
        let finished = futures::future::join_all(rxs).await;
        let ok = finished.iter().filter(|r| r.is_ok()).count();
        assert!((1..5).contains(&ok), "{ok}");
        assert!(handle.submit(1, job(9, &log, &[]).0).is_err());
    }
}
