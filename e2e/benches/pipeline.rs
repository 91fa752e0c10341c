//! The event pipeline under load: a worker-like publisher → middleware-translate (with a
//! DeepL test server answering at once) → a bot-like consumer, measured end to end
//! (events/s; p50/p99 latency from a timestamp carried in each event), beside a raw
//! `lapin` chain with the same two hops in the same run: the same broker, exchange
//! type, persistent messages, publisher confirms (same window), prefetch, middleware
//! concurrency, republish-confirm-then-ack, and acks at the consumer. The raw middleware
//! does the JSON rewrite but no HTTP call, so the ratio charges the translation round
//! trips (batched by the middleware) to Stargazer.
//!
//! Then the same on the in-process bus (beside a raw chain of tokio channels), the
//! resident memory of the bench process under load and of a separate `stargazer
//! middleware-translate` process carrying the RabbitMQ load, and the idle resident memory
//! of every `stargazer <role>` and of `stargazer standalone`.
//!
//! ```text
//! cargo build --release -p stargazer        # the binary whose memory is measured
//! cargo bench -p stargazer-e2e --bench pipeline
//! ```
//!
//! Throughput is measured by flooding (publishing as fast as confirms allow), so its
//! latencies include the backlog; latency proper is measured separately at a steady rate
//! every path can carry (half the slower RabbitMQ path's throughput unless set).
//!
//! Environment: `BENCH_EVENTS` (100000), `BENCH_WARMUP` (2000), `BENCH_WINDOW` (publish
//! confirms in flight, 256), `BENCH_PREFETCH` (256), `BENCH_CONCURRENCY` (middleware
//! events in flight, 128), `BENCH_RATE` (events/s of the latency runs),
//! `BENCH_LATENCY_EVENTS` (8 s worth), `BENCH_ROUNDS` (throughput rounds, alternating
//! the raw and Stargazer chains; the median is reported; 3), `BENCH_STARGAZER_BIN` (default
//! `target/release/stargazer`), `BENCH_SKIP_ROLES=1` to skip the per-role memory part.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};
use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::contract::control::{TRANSLATE_FIELDS, TRANSLATE_TO};
use stargazer_core::contract::kind;
use stargazer_core::model::{Access, Credential, Event, Permissions};
use stargazer_core::service::Service;
use stargazer_core::CancellationToken;
use stargazer_e2e::backends::{service_context, TestDatabase, TestVhost};
use stargazer_e2e::servers::deepl::Deepl;
use stargazer_e2e::servers::telegram::TelegramServer;
use stargazer_middleware_translate::{TranslateConfig, TranslateService};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The allocator the `stargazer` binary uses, so the chains run in this process (the
/// in-process ones above all) allocate as the deployed services do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// ------------------------------------------------------------------ settings

struct Settings {
    events: usize,
    warmup: usize,
    window: usize,
    prefetch: u16,
    concurrency: usize,
    rounds: usize,
    binary: PathBuf,
    skip_roles: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| {
            eprintln!("ignoring unparsable {name}={value}");
            default
        }),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let default_binary =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/stargazer");
        Self {
            events: env_or("BENCH_EVENTS", 100_000),
            warmup: env_or("BENCH_WARMUP", 2_000),
            window: env_or("BENCH_WINDOW", 256),
            prefetch: env_or("BENCH_PREFETCH", 256),
            concurrency: env_or("BENCH_CONCURRENCY", 128),
            rounds: env_or("BENCH_ROUNDS", 3usize).max(1),
            binary: std::env::var("BENCH_STARGAZER_BIN")
                .map(PathBuf::from)
                .unwrap_or(default_binary),
            skip_roles: std::env::var("BENCH_SKIP_ROLES").is_ok_and(|v| v == "1"),
        }
    }
}

/// How a run offers its events.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Events in the run.
    count: usize,
    /// Publishes awaiting their confirms at once.
    window: usize,
    /// Events per second, or `None` to publish as fast as confirms allow.
    rate: Option<f64>,
}

impl Load {
    fn flood(count: usize, window: usize) -> Self {
        Self {
            count,
            window,
            rate: None,
        }
    }

    /// Waits until event `n` is due (paced runs only).
    async fn pace(&self, n: usize, started: Instant) {
        if let Some(rate) = self.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

// ------------------------------------------------------------------ measurements

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Event `n` of a run as a worker publishes it: a tweet tagged `translate`, its text
/// distinct (so no translation cache hit), stamped with the publish time.
fn event_body(run: &str, n: usize, entity: uuid::Uuid) -> Vec<u8> {
    let mut event = Event {
        id: Event::make_id(kind::TWITTER_TWEET, &format!("{run}-{n}"), None),
        kind: kind::TWITTER_TWEET.into(),
        entity,
        time: chrono::Utc::now(),
        fields: Default::default(),
        control: Default::default(),
    };
    event.fields.insert(
        "text".into(),
        json!(format!("今日の配信ありがとう！ またね {run} {n}")),
    );
    event.fields.insert(
        "link".into(),
        json!(format!("https://x.com/account/status/{n}")),
    );
    event.fields.insert("sent_at_ns".into(), json!(now_ns()));
    event
        .control
        .insert(TRANSLATE_FIELDS.into(), json!(["/fields/text"]));
    event.control.insert(TRANSLATE_TO.into(), json!(["en"]));
    event.to_bytes()
}

/// The publish-to-consume latency of a delivered body, from its `sent_at_ns`.
fn latency_ns(body: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let sent = value.get("fields")?.get("sent_at_ns")?.as_u64()?;
    Some(now_ns().saturating_sub(sent))
}

/// Whether the body carries a translation (the middleware did its work).
fn translated(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("fields")?.get("translations")?.get("en").cloned())
        .is_some()
}

struct Outcome {
    events: usize,
    elapsed: Duration,
    latencies: Vec<u64>,
    untranslated: usize,
    peak_rss_kb: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index] as f64 / 1e6
    }
}

/// Collects what the bot-like consumer saw.
struct Receiver {
    expected: usize,
    count: AtomicU64,
    untranslated: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
    done: tokio::sync::Notify,
}

impl Receiver {
    fn new(expected: usize) -> Arc<Self> {
        Arc::new(Self {
            expected,
            count: AtomicU64::new(0),
            untranslated: AtomicU64::new(0),
            latencies: std::sync::Mutex::new(Vec::with_capacity(expected)),
            done: tokio::sync::Notify::new(),
        })
    }

    fn record(&self, body: &[u8]) {
        if let Some(latency) = latency_ns(body) {
            self.latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(latency);
        }
        if !translated(body) {
            self.untranslated.fetch_add(1, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.expected as u64 {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        let notified = self.done.notified();
        if self.count.load(Ordering::Relaxed) >= self.expected as u64 {
            return;
        }
        notified.await;
    }

    fn outcome(&self, elapsed: Duration, peak_rss_kb: u64) -> Outcome {
        Outcome {
            events: self.expected,
            elapsed,
            latencies: std::mem::take(
                &mut *self.latencies.lock().unwrap_or_else(|p| p.into_inner()),
            ),
            untranslated: self.untranslated.load(Ordering::Relaxed) as usize,
            peak_rss_kb,
        }
    }
}

/// `VmRSS` (or another field) of `/proc/<pid>/status`, in kB.
fn proc_status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples the resident memory of `pid` every 50 ms until stopped; yields the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = proc_status_kb(&pid, "VmRSS:") {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

// ------------------------------------------------------------------ raw lapin chain

const RAW_EXCHANGE: &str = "bench.raw";
const RAW_MIDDLEWARE_QUEUE: &str = "bench.raw.translate";
const RAW_BOT_QUEUE: &str = "bench.raw.bot";

async fn lapin_connect(url: &str) -> Connection {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, properties)
        .await
        .expect("connect to RabbitMQ")
}

fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

async fn raw_declare(channel: &Channel) {
    channel
        .exchange_declare(
            RAW_EXCHANGE,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    for (queue, pattern) in [(RAW_MIDDLEWARE_QUEUE, "#.translate"), (RAW_BOT_QUEUE, "*")] {
        channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                queue,
                RAW_EXCHANGE,
                pattern,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
    }
}

/// The raw middleware hop: consume, rewrite the JSON as the translate middleware does
/// (control fields out, a translation in, tag popped), republish with a confirm, ack.
async fn raw_middleware(connection: Connection, settings: (u16, usize), stop: CancellationToken) {
    let (prefetch, concurrency) = settings;
    let consume = connection.create_channel().await.expect("channel");
    consume
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let publish = connection.create_channel().await.expect("channel");
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let consumer = consume
        .basic_consume(
            RAW_MIDDLEWARE_QUEUE,
            "raw-middleware",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let work = consumer
        .take_until(stop.cancelled_owned())
        .for_each_concurrent(concurrency, |delivery| {
            let publish = publish.clone();
            async move {
                let Ok(delivery) = delivery else { return };
                let mut event: Value = serde_json::from_slice(&delivery.data).expect("event JSON");
                let text = event["fields"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(object) = event.as_object_mut() {
                    object.remove(TRANSLATE_FIELDS);
                    object.remove(TRANSLATE_TO);
                }
                event["fields"]["translations"] =
                    json!({"en": {"/fields/text": format!("[EN-US] {text}")}});
                let body = serde_json::to_vec(&event).expect("serialize");
                let key = delivery
                    .routing_key
                    .as_str()
                    .rsplit_once('.')
                    .map_or("twitter", |(rest, _)| rest)
                    .to_owned();
                let confirm = publish
                    .basic_publish(
                        RAW_EXCHANGE,
                        &key,
                        BasicPublishOptions::default(),
                        &body,
                        persistent_json(),
                    )
                    .await
                    .expect("publish");
                assert!(
                    matches!(confirm.await.expect("confirm"), Confirmation::Ack(_)),
                    "nacked"
                );
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
            }
        });
    work.await;
}

async fn raw_consumer(
    connection: Connection,
    prefetch: u16,
    receiver: Arc<Receiver>,
    stop: CancellationToken,
) {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            RAW_BOT_QUEUE,
            "raw-bot",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                _ => return,
            },
        };
        receiver.record(&delivery.data);
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

async fn raw_publish(connection: &Connection, run: &str, load: Load) {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let entity = uuid::Uuid::new_v4();
    let mut in_flight: FuturesUnordered<lapin::publisher_confirm::PublisherConfirm> =
        FuturesUnordered::new();
    let started = Instant::now();
    for n in 0..load.count {
        load.pace(n, started).await;
        if in_flight.len() >= load.window {
            let confirmation = in_flight.next().await.expect("in flight").expect("confirm");
            assert!(matches!(confirmation, Confirmation::Ack(_)), "nacked");
        }
        let confirm = channel
            .basic_publish(
                RAW_EXCHANGE,
                "twitter.translate",
                BasicPublishOptions::default(),
                &event_body(run, n, entity),
                persistent_json(),
            )
            .await
            .expect("publish");
        in_flight.push(confirm);
    }
    while let Some(confirmation) = in_flight.next().await {
        assert!(
            matches!(confirmation.expect("confirm"), Confirmation::Ack(_)),
            "nacked"
        );
    }
}

async fn raw_lapin_chain(url: &str, settings: &Settings, load: Load) -> Outcome {
    let count = load.count;
    let publisher = lapin_connect(url).await;
    raw_declare(&publisher.create_channel().await.expect("channel")).await;
    let stop = CancellationToken::new();
    let receiver = Receiver::new(count);
    let middleware = tokio::spawn(raw_middleware(
        lapin_connect(url).await,
        (settings.prefetch, settings.concurrency),
        stop.clone(),
    ));
    let consumer = tokio::spawn(raw_consumer(
        lapin_connect(url).await,
        settings.prefetch,
        receiver.clone(),
        stop.clone(),
    ));
    let sampler = RssSampler::start("self".into());
    let started = Instant::now();
    raw_publish(&publisher, &stargazer_e2e::unique(), load).await;
    receiver.wait().await;
    let elapsed = started.elapsed();
    let peak = sampler.finish();
    stop.cancel();
    let _ = middleware.await;
    let _ = consumer.await;
    let _ = publisher.close(200, "done").await;
    receiver.outcome(elapsed, peak)
}

// ------------------------------------------------------------------ stargazer chain

/// Publishes like a worker: through the bus, `window` publishes awaiting confirms.
async fn bus_publish(bus: &Arc<dyn Bus>, run: &str, load: Load) {
    let entity = uuid::Uuid::new_v4();
    // Spawned, so each publish goes out at once and only its confirm is awaited later, as
    // with lapin's `basic_publish` + `PublisherConfirm`.
    let mut in_flight: FuturesUnordered<JoinHandle<stargazer_core::bus::Result<()>>> =
        FuturesUnordered::new();
    let started = Instant::now();
    for n in 0..load.count {
        load.pace(n, started).await;
        if in_flight.len() >= load.window {
            in_flight
                .next()
                .await
                .expect("in flight")
                .expect("publish task")
                .expect("publish confirmed");
        }
        let bus = bus.clone();
        let body = event_body(run, n, entity);
        in_flight.push(tokio::spawn(async move {
            bus.publish("twitter.translate", &body).await
        }));
    }
    while let Some(result) = in_flight.next().await {
        result.expect("publish task").expect("publish confirmed");
    }
}

/// The bot-like consumer: the ready queue, decode, ack.
async fn bus_consumer(
    bus: Arc<dyn Bus>,
    queue: QueueSpec,
    receiver: Arc<Receiver>,
    stop: CancellationToken,
) {
    let mut consumer = bus.consume(&queue).await.expect("consume");
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return,
            next = consumer.next() => match next {
                Some(delivery) => delivery,
                None => return,
            },
        };
        if Event::from_bytes(&delivery.body).is_err() {
            delivery
                .dead_letter("not an event")
                .await
                .expect("dead-letter");
            continue;
        }
        receiver.record(&delivery.body);
        delivery.ack().await.expect("ack");
    }
}

fn translate_config(settings: &Settings, deepl: &Deepl) -> TranslateConfig {
    TranslateConfig {
        deepl_key: deepl.key.clone(),
        deepl_base_url: deepl.base.clone(),
        prefetch: settings.prefetch,
        concurrency: settings.concurrency,
        ..TranslateConfig::default()
    }
}

/// Where middleware-translate runs for a stargazer chain.
enum Translate<'a> {
    /// In this process, through its library `run`.
    InProcess,
    /// As a separate `stargazer middleware-translate` process.
    Process(&'a mut Child),
}

async fn stargazer_chain(
    publisher: Arc<dyn Bus>,
    middleware_bus: Option<Arc<dyn Bus>>,
    consumer_bus: Arc<dyn Bus>,
    translate: Translate<'_>,
    settings: &Settings,
    deepl: &Deepl,
    load: Load,
) -> Outcome {
    let count = load.count;
    let ready = QueueSpec::new("stargazer.bot.bench", "*", settings.prefetch);
    consumer_bus.declare(&ready).await.expect("declare");
    let translate_queue = QueueSpec::new(
        stargazer_core::routing::middleware_queue("translate"),
        "#.translate",
        settings.prefetch,
    );
    publisher.declare(&translate_queue).await.expect("declare");
    let stop = CancellationToken::new();
    let receiver = Receiver::new(count);
    let (middleware, sampler) = match translate {
        Translate::InProcess => {
            let bus = middleware_bus.expect("a bus for the middleware");
            let service = Box::new(TranslateService::new(translate_config(settings, deepl)));
            let cx = service_context(&*service, None, Some(bus), vec![], stop.clone());
            let task = tokio::spawn(service.run(cx));
            (Some(task), RssSampler::start("self".into()))
        }
        Translate::Process(child) => (None, RssSampler::start(child.id().to_string())),
    };
    let consumer = tokio::spawn(bus_consumer(
        consumer_bus,
        ready,
        receiver.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    bus_publish(&publisher, &stargazer_e2e::unique(), load).await;
    receiver.wait().await;
    let elapsed = started.elapsed();
    let peak = sampler.finish();
    stop.cancel();
    if let Some(task) = middleware {
        task.await
            .expect("translate task")
            .expect("translate stopped cleanly");
    }
    let _ = consumer.await;
    receiver.outcome(elapsed, peak)
}

// ------------------------------------------------------------------ raw in-process chain

async fn raw_channel_chain(settings: &Settings, load: Load) -> Outcome {
    let count = load.count;
    let receiver = Receiver::new(count);
    let (to_middleware, mut middleware_in) = mpsc::channel::<Vec<u8>>(settings.prefetch as usize);
    let (to_consumer, mut consumer_in) = mpsc::channel::<Vec<u8>>(settings.prefetch as usize);
    let middleware = tokio::spawn(async move {
        while let Some(body) = middleware_in.recv().await {
            let mut event: Value = serde_json::from_slice(&body).expect("event JSON");
            let text = event["fields"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(object) = event.as_object_mut() {
                object.remove(TRANSLATE_FIELDS);
                object.remove(TRANSLATE_TO);
            }
            event["fields"]["translations"] =
                json!({"en": {"/fields/text": format!("[EN-US] {text}")}});
            if to_consumer
                .send(serde_json::to_vec(&event).expect("serialize"))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let consumer = {
        let receiver = receiver.clone();
        tokio::spawn(async move {
            while let Some(body) = consumer_in.recv().await {
                receiver.record(&body);
            }
        })
    };
    let sampler = RssSampler::start("self".into());
    let started = Instant::now();
    let run = stargazer_e2e::unique();
    let entity = uuid::Uuid::new_v4();
    for n in 0..count {
        load.pace(n, started).await;
        to_middleware
            .send(event_body(&run, n, entity))
            .await
            .expect("middleware alive");
    }
    receiver.wait().await;
    let elapsed = started.elapsed();
    drop(to_middleware);
    let _ = middleware.await;
    let _ = consumer.await;
    receiver.outcome(elapsed, sampler.finish())
}

// ------------------------------------------------------------------ stargazer processes

/// A `stargazer <role>` child; killed when dropped.
struct Role {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spawn_role(
    binary: &PathBuf,
    dir: &std::path::Path,
    name: &'static str,
    args: &[&str],
    env: &[(String, String)],
) -> Role {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(binary);
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("STARGAZER_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.env("STARGAZER_LOG_LEVEL", "warn");
    let child = command
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Role { name, child, log }
}

async fn wait_http(url: &str) -> bool {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn pairs(items: &[(&str, String)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

struct RoleMemory {
    role: &'static str,
    rss_kb: Option<u64>,
    /// Of `rss_kb`: heap and stacks (`RssAnon`) and mapped files, mostly the binary's
    /// code (`RssFile`).
    anon_kb: Option<u64>,
    file_kb: Option<u64>,
    threads: Option<u64>,
    goal_mb: u64,
    note: String,
}

/// Starts every role on the production backends (and standalone on embedded ones), lets
/// them settle idle, and reads their resident memory.
async fn idle_roles(
    settings: &Settings,
    amqp: &str,
    mongo: &str,
    telegram: &TelegramServer,
    deepl: &Deepl,
) -> Vec<RoleMemory> {
    let dir = std::env::temp_dir().join(format!("sg-bench-roles-{}", stargazer_e2e::unique()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let storage = stargazer_core::storage::connect(mongo)
        .await
        .expect("mongo");
    let password = "bench-password";
    let hash = stargazer_core::auth::hash_password(password, 1_000).expect("hash");
    for (username, permissions) in [
        (
            "bench-worker",
            Permissions {
                coordinator: Some(Access::Ro),
                mq: Some(Access::Rw),
                ..Default::default()
            },
        ),
        (
            "bench-bot",
            Permissions {
                api: Some(Access::Rw),
                mq: Some(Access::Ro),
                ..Default::default()
            },
        ),
    ] {
        storage
            .insert_credential(&Credential {
                username: username.into(),
                hash: hash.clone(),
                permissions,
                queues: Vec::new(),
            })
            .await
            .expect("credential");
    }
    let (api_port, coordinator_port) = (free_port(), free_port());
    let common = [
        ("STARGAZER_AMQP_URL", amqp.to_owned()),
        ("STARGAZER_MONGO_URL", mongo.to_owned()),
    ];
    let keys = [
        ("STARGAZER_YOUTUBE_API_KEY", "bench-key".to_owned()),
        ("STARGAZER_YOUTUBE__DATA_API_BASE", deepl.base.clone()),
        ("STARGAZER_YOUTUBE__LISTEN", "127.0.0.1:0".to_owned()),
        ("STARGAZER_TWITTER_BEARER_TOKEN", "bench-token".to_owned()),
        ("STARGAZER_TWITTER__API_BASE", deepl.base.clone()),
        ("STARGAZER_DEEPL_KEY", deepl.key.clone()),
        ("STARGAZER_TRANSLATE__DEEPL_BASE_URL", deepl.base.clone()),
        ("STARGAZER_LIVE_CHECK__API_BASE_URL", deepl.base.clone()),
        ("STARGAZER_TELEGRAM_TOKEN", telegram.token.clone()),
        ("STARGAZER_TELEGRAM__API_URL", telegram.url.clone()),
    ];
    let worker = [
        (
            "STARGAZER_WORKER__COORDINATOR_URL",
            format!("ws://127.0.0.1:{coordinator_port}/v1/worker"),
        ),
        ("STARGAZER_WORKER__USERNAME", "bench-worker".to_owned()),
        ("STARGAZER_WORKER__PASSWORD", password.to_owned()),
    ];
    let env_for = |extra: &[(&str, String)]| {
        let mut all = pairs(&common);
        all.extend(pairs(&keys));
        all.extend(pairs(extra));
        all
    };
    let mut roles = Vec::new();
    let api_env = env_for(&[("STARGAZER_API__LISTEN", format!("127.0.0.1:{api_port}"))]);
    roles.push(spawn_role(
        &settings.binary,
        &dir,
        "api",
        &["api"],
        &api_env,
    ));
    let coordinator_env = env_for(&[(
        "STARGAZER_COORDINATOR__LISTEN",
        format!("127.0.0.1:{coordinator_port}"),
    )]);
    roles.push(spawn_role(
        &settings.binary,
        &dir,
        "coordinator",
        &["coordinator"],
        &coordinator_env,
    ));
    let api_up = wait_http(&format!("http://127.0.0.1:{api_port}/healthz")).await;
    let coordinator_up = wait_http(&format!("http://127.0.0.1:{coordinator_port}/healthz")).await;
    let mut worker_env = env_for(&worker);
    worker_env.push(("STARGAZER_WORKER__ID".into(), "bench-youtube".into()));
    roles.push(spawn_role(
        &settings.binary,
        &dir,
        "worker-youtube",
        &["worker-youtube"],
        &worker_env,
    ));
    // Roles without an HTTP server of their own serve /healthz and /metrics on
    // metrics_listen, as the compose file deploys them.
    let metrics_listen = || {
        (
            "STARGAZER_METRICS_LISTEN".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        )
    };
    let mut worker_env = env_for(&worker);
    worker_env.push(("STARGAZER_WORKER__ID".into(), "bench-twitter".into()));
    worker_env.push(metrics_listen());
    roles.push(spawn_role(
        &settings.binary,
        &dir,
        "worker-twitter",
        &["worker-twitter"],
        &worker_env,
    ));
    for (name, arg) in [
        ("middleware-delay", "middleware-delay"),
        ("middleware-translate", "middleware-translate"),
        ("middleware-live-check", "middleware-live-check"),
    ] {
        let mut env = env_for(&[]);
        env.push(metrics_listen());
        roles.push(spawn_role(&settings.binary, &dir, name, &[arg], &env));
    }
    let mut bot_env = env_for(&[
        (
            "STARGAZER_TELEGRAM__STARGAZER_API_URL",
            format!("http://127.0.0.1:{api_port}"),
        ),
        (
            "STARGAZER_TELEGRAM__STARGAZER_API_USERNAME",
            "bench-bot".to_owned(),
        ),
        (
            "STARGAZER_TELEGRAM__STARGAZER_API_PASSWORD",
            password.to_owned(),
        ),
    ]);
    bot_env.push(metrics_listen());
    roles.push(spawn_role(
        &settings.binary,
        &dir,
        "bot-telegram",
        &["bot-telegram"],
        &bot_env,
    ));
    // Standalone on its embedded backends, every service enabled.
    let mut standalone_env = pairs(&keys);
    standalone_env.extend(pairs(&[
        (
            "STARGAZER_SQLITE_PATH",
            dir.join("standalone.db").display().to_string(),
        ),
        ("STARGAZER_API__LISTEN", "127.0.0.1:0".to_owned()),
        ("STARGAZER_COORDINATOR__LISTEN", "127.0.0.1:0".to_owned()),
    ]));
    roles.push(spawn_role(
        &settings.binary,
        &dir,
        "standalone",
        &["standalone"],
        &standalone_env,
    ));

    // Idle: connected, nothing to do.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut measured = Vec::new();
    for role in &mut roles {
        let pid = role.child.id().to_string();
        let alive = matches!(role.child.try_wait(), Ok(None));
        let read = |field: &str| alive.then(|| proc_status_kb(&pid, field)).flatten();
        let rss = read("VmRSS:");
        let note = if alive {
            match role.name {
                "api" if !api_up => "healthz never answered".to_owned(),
                "coordinator" if !coordinator_up => "healthz never answered".to_owned(),
                _ => String::new(),
            }
        } else {
            let log = std::fs::read_to_string(&role.log).unwrap_or_default();
            format!("exited: {}", log.lines().last().unwrap_or("").trim())
        };
        measured.push(RoleMemory {
            role: role.name,
            rss_kb: rss,
            anon_kb: read("RssAnon:"),
            file_kb: read("RssFile:"),
            threads: read("Threads:"),
            goal_mb: if role.name == "standalone" { 60 } else { 30 },
            note,
        });
    }
    drop(roles);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

// ------------------------------------------------------------------ report

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn header(title: &str) {
    println!();
    println!(
        "| {title:<54} | {:>9} | {:>8} | {:>8} | {:>8} |",
        "events/s", "p50 ms", "p99 ms", "peak MB"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(56),
        "-".repeat(11),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(10)
    );
}

fn row(path: &str, outcome: &Outcome) {
    println!(
        "| {path:<54} | {:>9.0} | {:>8.1} | {:>8.1} | {:>8.1} |",
        outcome.rate(),
        outcome.percentile_ms(0.50),
        outcome.percentile_ms(0.99),
        mb(outcome.peak_rss_kb),
    );
    if outcome.untranslated > 0 {
        println!(
            "|   !! {} events arrived without a translation",
            outcome.untranslated
        );
    }
}

/// The round with the median throughput.
fn median(mut rounds: Vec<Outcome>) -> Outcome {
    rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let middle = rounds.len() / 2;
    rounds.swap_remove(middle)
}

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(settings));
}

/// The buses of a Stargazer chain on RabbitMQ: one connection per role, as separate
/// processes have.
struct AmqpChain {
    publisher: Arc<dyn Bus>,
    middleware: Arc<dyn Bus>,
    consumer: Arc<dyn Bus>,
}

impl AmqpChain {
    async fn connect(url: &str) -> Self {
        let connect = |name: &'static str| async move {
            Arc::new(AmqpBus::connect_named(url, name).await.expect("amqp")) as Arc<dyn Bus>
        };
        Self {
            publisher: connect("bench-worker").await,
            middleware: connect("bench-translate").await,
            consumer: connect("bench-bot").await,
        }
    }

    async fn run(&self, settings: &Settings, deepl: &Deepl, load: Load) -> Outcome {
        stargazer_chain(
            self.publisher.clone(),
            Some(self.middleware.clone()),
            self.consumer.clone(),
            Translate::InProcess,
            settings,
            deepl,
            load,
        )
        .await
    }

    async fn close(&self) {
        self.publisher.close().await;
        self.middleware.close().await;
        self.consumer.close().await;
    }
}

async fn memory_chain(settings: &Settings, deepl: &Deepl, load: Load) -> Outcome {
    let memory: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    stargazer_chain(
        memory.clone(),
        Some(memory.clone()),
        memory,
        Translate::InProcess,
        settings,
        deepl,
        load,
    )
    .await
}

async fn bench(settings: Settings) {
    let deepl = Deepl::start("bench-deepl-key:fx")
        .await
        .expect("DeepL test server");
    let telegram = TelegramServer::start("6100000042:AAbench")
        .await
        .expect("Telegram test server");
    let vhost = tokio::task::spawn_blocking(TestVhost::create)
        .await
        .expect("vhost task")
        .expect("a RabbitMQ virtual host (is rabbitmqctl available?)");
    let database = TestDatabase::new();
    let amqp = vhost.amqp_url();
    let n = settings.events;
    println!(
        "pipeline: {n} events (+{} warm-up); publish window {}, prefetch {}, middleware concurrency {}",
        settings.warmup, settings.window, settings.prefetch, settings.concurrency
    );
    println!(
        "RabbitMQ vhost {} (persistent messages, publisher confirms, acks); DeepL test server {}",
        vhost.name, deepl.base
    );

    // ---- throughput: publish as fast as confirms allow; raw and Stargazer alternate.
    header(&format!(
        "throughput (flood; median of {} rounds)",
        settings.rounds
    ));
    let flood = Load::flood(n, settings.window);
    let warmup = Load::flood(settings.warmup, settings.window);
    let chain = AmqpChain::connect(&amqp).await;
    if settings.warmup > 0 {
        raw_lapin_chain(&amqp, &settings, warmup).await;
        chain.run(&settings, &deepl, warmup).await;
    }
    let (mut raw_rounds, mut sg_rounds) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        raw_rounds.push(raw_lapin_chain(&amqp, &settings, flood).await);
        sg_rounds.push(chain.run(&settings, &deepl, flood).await);
    }
    let spread = |rounds: &[Outcome]| {
        rounds
            .iter()
            .map(|o| format!("{:.0}", o.rate()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (raw_spread, sg_spread) = (spread(&raw_rounds), spread(&sg_rounds));
    // Rounds are paired (run back to back), so the broker's drift over the run cancels
    // out of each round's ratio.
    let mut ratios: Vec<f64> = raw_rounds
        .iter()
        .zip(&sg_rounds)
        .map(|(r, s)| s.rate() / r.rate())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let (raw, sg) = (median(raw_rounds), median(sg_rounds));
    row("rabbitmq raw lapin: publish → rewrite → consume", &raw);
    row("rabbitmq stargazer: worker → translate → bot", &sg);

    // The same with middleware-translate as its own `stargazer` process.
    let mut translate_idle = None;
    if settings.binary.is_file() {
        let dir = std::env::temp_dir();
        let env = pairs(&[
            ("STARGAZER_AMQP_URL", amqp.clone()),
            ("STARGAZER_MONGO_URL", database.url()),
            ("STARGAZER_DEEPL_KEY", deepl.key.clone()),
            ("STARGAZER_TRANSLATE__DEEPL_BASE_URL", deepl.base.clone()),
            (
                "STARGAZER_TRANSLATE__PREFETCH",
                settings.prefetch.to_string(),
            ),
            (
                "STARGAZER_TRANSLATE__CONCURRENCY",
                settings.concurrency.to_string(),
            ),
        ]);
        let mut role = spawn_role(
            &settings.binary,
            &dir,
            "middleware-translate",
            &["middleware-translate"],
            &env,
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        translate_idle = proc_status_kb(&role.child.id().to_string(), "VmRSS:");
        let outcome = stargazer_chain(
            chain.publisher.clone(),
            None,
            chain.consumer.clone(),
            Translate::Process(&mut role.child),
            &settings,
            &deepl,
            flood,
        )
        .await;
        row(
            "rabbitmq stargazer, translate in its own process (¹)",
            &outcome,
        );
        let _ = std::fs::remove_file(&role.log);
    }
    let (mut raw_memory_rounds, mut memory_rounds) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        raw_memory_rounds.push(raw_channel_chain(&settings, flood).await);
        memory_rounds.push(memory_chain(&settings, &deepl, flood).await);
    }
    let (raw_memory, memory) = (median(raw_memory_rounds), median(memory_rounds));
    row("in-process raw tokio channels: same two hops", &raw_memory);
    row(
        "in-process bus stargazer: worker → translate → bot",
        &memory,
    );

    // ---- latency: a steady load every path can carry.
    let rate = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| ((sg.rate().min(raw.rate()) * 0.5) / 100.0).floor().max(1.0) * 100.0);
    let paced_count: usize = env_or("BENCH_LATENCY_EVENTS", (rate * 8.0) as usize);
    let paced = Load {
        count: paced_count,
        window: settings.window,
        rate: Some(rate),
    };
    header(&format!(
        "latency ({paced_count} events paced at {rate:.0}/s)"
    ));
    row(
        "rabbitmq raw lapin",
        &raw_lapin_chain(&amqp, &settings, paced).await,
    );
    row(
        "rabbitmq stargazer",
        &chain.run(&settings, &deepl, paced).await,
    );
    row(
        "in-process raw tokio channels",
        &raw_channel_chain(&settings, paced).await,
    );
    row(
        "in-process bus stargazer",
        &memory_chain(&settings, &deepl, paced).await,
    );
    chain.close().await;

    println!();
    println!(
        "rabbitmq stargazer / raw lapin throughput: {ratio:.2} (median of the rounds' ratios; goal ≥ 0.8); \
         in-process stargazer / raw channels: {:.2}",
        memory.rate() / raw_memory.rate()
    );
    let ratios: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "rabbitmq rounds, events/s: raw lapin [{raw_spread}], stargazer [{sg_spread}]; ratios [{}]",
        ratios.join(", ")
    );
    println!(
        "flood rows: the publisher outruns the chain, so their p50/p99 mostly measure the backlog."
    );
    println!(
        "DeepL: {} calls for {} texts (batched by middleware-translate; the raw chains make no HTTP call)",
        deepl.calls(),
        deepl.texts()
    );
    println!(
        "peak MB: highest VmRSS of this bench process (publisher, middleware and consumer all in it) during \
         the row's run, sampled every 50 ms; it includes what the allocator kept from earlier rows."
    );
    if let Some(idle) = translate_idle {
        println!(
            "(¹) peak MB of the `stargazer middleware-translate` process under that load (idle before: {:.1} MB)",
            mb(idle)
        );
    }

    // ---- idle memory per role.
    println!();
    if settings.skip_roles {
        println!("per-role idle memory: skipped (BENCH_SKIP_ROLES=1)");
    } else if !settings.binary.is_file() {
        println!(
            "per-role idle memory: skipped, {} not found (cargo build --release -p stargazer)",
            settings.binary.display()
        );
    } else {
        let roles = idle_roles(&settings, &amqp, &database.url(), &telegram, &deepl).await;
        println!(
            "| {:<22} | {:>9} | {:>7} | {:>7} | {:>7} | {:>7} | (roles on mongodb + rabbitmq; standalone on sqlite + in-process bus)",
            "stargazer <role>, idle", "VmRSS MB", "anon MB", "file MB", "threads", "goal MB"
        );
        println!(
            "|{}|{}|{}|{}|{}|{}|",
            "-".repeat(24),
            "-".repeat(11),
            "-".repeat(9),
            "-".repeat(9),
            "-".repeat(9),
            "-".repeat(9)
        );
        let mut separate = 0;
        for measured in &roles {
            let rss = measured
                .rss_kb
                .map_or("-".to_owned(), |kb| format!("{:.1}", mb(kb)));
            let verdict = match measured.rss_kb {
                Some(kb) if kb <= measured.goal_mb * 1024 => "ok",
                Some(_) => "OVER",
                None => "",
            };
            let part = |kb: Option<u64>| kb.map_or("-".to_owned(), |kb| format!("{:.1}", mb(kb)));
            println!(
                "| {:<22} | {:>9} | {:>7} | {:>7} | {:>7} | {:>7} | {verdict} {}",
                measured.role,
                rss,
                part(measured.anon_kb),
                part(measured.file_kb),
                measured.threads.map_or("-".to_owned(), |n| n.to_string()),
                measured.goal_mb,
                measured.note
            );
            if measured.role != "standalone" {
                separate += measured.rss_kb.unwrap_or(0);
            }
        }
        println!(
            "the eight roles as separate processes: {:.1} MB together",
            mb(separate)
        );
    }
    drop(vhost);
    drop(database);
}
