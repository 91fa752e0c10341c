//! middleware-translate scaled out: the throughput of a translate-bound pipeline with one
//! and with two translate instances sharing the durable queue
//! `stargazer.middleware.translate`, on the same RabbitMQ broker in the same run.
//!
//! ```text
//! cargo bench -p stargazer-e2e --bench translate_scale
//! ```
//!
//! In production the middleware's bound is DeepL's round trip, not CPU, so the DeepL test
//! server answers every request after a fixed latency ([`Deepl::set_latency`]), each
//! request on its own (no cap on requests in flight): what is measured is how many events
//! the instances keep in DeepL calls at once, not how fast this 2-core machine runs two
//! processes' worth of JSON.
//!
//! Each run publishes `BENCH_EVENTS` translate-tagged tweets (routing key
//! `twitter.translate`, `x-translate-fields` + `x-translate-to`, every text distinct so no
//! cache hit) into a fresh vhost, as fast as publisher confirms allow, with K translate
//! instances running, each on a bus connection of its own (separate consumers, as
//! separate processes are) and with the production defaults apart from the DeepL base URL
//! and key and shortened retry pauses. A bot-like consumer on a ready queue bound to `*`
//! counts arrivals; throughput is events from the first publish to the last arrival. Every
//! run checks that each event arrived exactly once (by id) and translated, else the bench
//! fails. Rounds alternate K = 1 and K = 2; medians and the median of the per-round
//! ratios are printed.
//!
//! Environment: `BENCH_EVENTS` (2000), `BENCH_DEEPL_LATENCY_MS` (150), `BENCH_ROUNDS` (3),
//! `BENCH_WARMUP` (200 events through both instances first), `BENCH_WINDOW` (publish
//! confirms in flight, 256), `BENCH_RUN_TIMEOUT_SECS` (a run that has not delivered
//! everything by then fails the bench, 300).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::json;
use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::contract::control::{TRANSLATE_FIELDS, TRANSLATE_TO};
use stargazer_core::contract::kind;
use stargazer_core::model::Event;
use stargazer_core::CancellationToken;
use stargazer_e2e::backends::TestVhost;
use stargazer_e2e::servers::deepl::Deepl;
use stargazer_middleware_translate::{TranslateConfig, TranslateService};
use stargazer_testkit::backends::RunningService;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The allocator the `stargazer` binary uses, so the instances allocate as deployed ones.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most translate instances a run uses (one bus connection each, opened once).
const MAX_INSTANCES: usize = 2;

/// How long the consumer keeps listening after the last expected arrival, so a duplicate
/// delivered late still fails the run.
const DUPLICATE_GRACE: Duration = Duration::from_millis(500);

// ------------------------------------------------------------------ settings

struct Settings {
    events: usize,
    latency: Duration,
    rounds: usize,
    warmup: usize,
    window: usize,
    run_timeout: Duration,
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
        Self {
            events: env_or("BENCH_EVENTS", 2_000usize).max(1),
            latency: Duration::from_millis(env_or("BENCH_DEEPL_LATENCY_MS", 150)),
            rounds: env_or("BENCH_ROUNDS", 3usize).max(1),
            warmup: env_or("BENCH_WARMUP", 200),
            window: env_or("BENCH_WINDOW", 256usize).max(1),
            run_timeout: Duration::from_secs(env_or("BENCH_RUN_TIMEOUT_SECS", 300)),
        }
    }
}

/// Ends the bench with a failure: a broken run must not print a figure.
fn fail(why: &str) -> ! {
    eprintln!("translate_scale FAILED: {why}");
    std::process::exit(1);
}

// ------------------------------------------------------------------ events

/// Event `n` of a run: a tweet tagged `translate`, its text distinct across runs (so no
/// translation cache hit and no deduplication of texts between events).
fn tweet(run: &str, n: usize, entity: Uuid) -> Event {
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
    event
        .control
        .insert(TRANSLATE_FIELDS.into(), json!(["/fields/text"]));
    event.control.insert(TRANSLATE_TO.into(), json!(["en"]));
    event
}

/// Publishes the bodies like a worker: through the bus, `window` publishes awaiting
/// their confirms at once.
async fn publish(bus: &Arc<dyn Bus>, bodies: Vec<Vec<u8>>, window: usize) {
    let mut in_flight: FuturesUnordered<JoinHandle<stargazer_core::bus::Result<()>>> =
        FuturesUnordered::new();
    for body in bodies {
        if in_flight.len() >= window {
            settle(in_flight.next().await);
        }
        let bus = bus.clone();
        in_flight.push(tokio::spawn(async move {
            bus.publish("twitter.translate", &body).await
        }));
    }
    while let Some(result) = in_flight.next().await {
        settle(Some(result));
    }
}

fn settle(result: Option<Result<stargazer_core::bus::Result<()>, tokio::task::JoinError>>) {
    match result {
        Some(Ok(Ok(()))) | None => {}
        Some(Ok(Err(err))) => fail(&format!("publish not confirmed: {err}")),
        Some(Err(err)) => fail(&format!("publish task: {err}")),
    }
}

// ------------------------------------------------------------------ the ready consumer

/// What the bot-like consumer saw in one run.
#[derive(Default)]
struct Tally {
    /// Arrivals per event id.
    arrivals: HashMap<Uuid, u32>,
    /// Arrivals without a translation of `/fields/text` into English.
    untranslated: usize,
    /// Arrivals that were not events.
    garbled: usize,
}

struct Receiver {
    expected: u64,
    count: AtomicU64,
    tally: Mutex<Tally>,
    done: tokio::sync::Notify,
}

impl Receiver {
    fn new(expected: usize) -> Arc<Self> {
        Arc::new(Self {
            expected: expected as u64,
            count: AtomicU64::new(0),
            tally: Mutex::new(Tally::default()),
            done: tokio::sync::Notify::new(),
        })
    }

    fn record(&self, body: &[u8]) {
        {
            let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            match Event::from_bytes(body) {
                Ok(event) => {
                    *tally.arrivals.entry(event.id).or_default() += 1;
                    let translated = event
                        .fields
                        .get("translations")
                        .and_then(|t| t.get("en"))
                        .is_some();
                    if !translated {
                        tally.untranslated += 1;
                    }
                }
                Err(_) => tally.garbled += 1,
            }
        }
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.expected {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        let notified = self.done.notified();
        if self.count.load(Ordering::Relaxed) >= self.expected {
            return;
        }
        notified.await;
    }
}

/// Consumes the ready queue, recording and acking every delivery.
async fn consume(
    bus: Arc<dyn Bus>,
    queue: QueueSpec,
    receiver: Arc<Receiver>,
    stop: CancellationToken,
) {
    let mut consumer = match bus.consume(&queue).await {
        Ok(consumer) => consumer,
        Err(err) => fail(&format!("consume the ready queue: {err}")),
    };
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return,
            next = consumer.next() => match next {
                Some(delivery) => delivery,
                None => return,
            },
        };
        receiver.record(&delivery.body);
        if let Err(err) = delivery.ack().await {
            fail(&format!("ack at the ready consumer: {err}"));
        }
    }
}

// ------------------------------------------------------------------ one run

/// The production configuration, pointed at the DeepL test server, with retry pauses
/// shortened (no retry is expected; they only bound a stray one).
fn translate_config(deepl: &Deepl) -> TranslateConfig {
    TranslateConfig {
        deepl_key: deepl.key.clone(),
        deepl_base_url: deepl.base.clone(),
        backoff_initial_ms: 50,
        backoff_max_ms: 200,
        retry_delay_ms: 100,
        ..TranslateConfig::default()
    }
}

/// Texts one instance translated (its `stargazer_translate_texts_total{result="translated"}`).
fn translated_texts(service: &RunningService) -> u64 {
    service
        .registry
        .gather()
        .iter()
        .filter(|family| family.name() == "stargazer_translate_texts_total")
        .flat_map(|family| family.get_metric().iter())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.name() == "result" && label.value() == "translated")
        })
        .map(|metric| metric.get_counter().value() as u64)
        .sum()
}

struct Outcome {
    events: usize,
    elapsed: Duration,
    /// Texts each instance translated.
    per_instance: Vec<u64>,
    /// DeepL calls answered during the run.
    calls: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// The connections of the run: the publisher, the ready consumer, and one per translate
/// instance, opened once for the whole bench.
struct Buses {
    publisher: Arc<dyn Bus>,
    consumer: Arc<dyn Bus>,
    instances: Vec<Arc<dyn Bus>>,
}

impl Buses {
    async fn connect(url: &str) -> Self {
        let connect = |name: String| async move {
            match AmqpBus::connect_named(url, &name).await {
                Ok(bus) => Arc::new(bus) as Arc<dyn Bus>,
                Err(err) => fail(&format!("connect {name} to RabbitMQ: {err}")),
            }
        };
        let mut instances = Vec::with_capacity(MAX_INSTANCES);
        for n in 0..MAX_INSTANCES {
            instances.push(connect(format!("bench-translate-{n}")).await);
        }
        Self {
            publisher: connect("bench-worker".to_owned()).await,
            consumer: connect("bench-bot".to_owned()).await,
            instances,
        }
    }

    async fn close(&self) {
        self.publisher.close().await;
        self.consumer.close().await;
        for bus in &self.instances {
            bus.close().await;
        }
    }
}

/// Runs `count` events through `instances` translate instances; fails the bench unless
/// every event arrived exactly once, translated.
async fn run(
    buses: &Buses,
    deepl: &Deepl,
    settings: &Settings,
    instances: usize,
    count: usize,
) -> Outcome {
    let ready = QueueSpec::new(
        "stargazer.bot.bench",
        stargazer_core::routing::READY_PATTERN,
        256,
    );
    if let Err(err) = buses.consumer.declare(&ready).await {
        fail(&format!("declare the ready queue: {err}"));
    }
    let config = translate_config(deepl);
    let translate_queue = QueueSpec::new(config.queue.clone(), "#.translate", config.prefetch);
    if let Err(err) = buses.publisher.declare(&translate_queue).await {
        fail(&format!("declare the translate queue: {err}"));
    }

    let services: Vec<RunningService> = buses.instances[..instances]
        .iter()
        .map(|bus| {
            let service = Box::new(TranslateService::new(config.clone()));
            RunningService::start(service, None, Some(bus.clone()))
        })
        .collect();
    let receiver = Receiver::new(count);
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(consume(
        buses.consumer.clone(),
        ready,
        receiver.clone(),
        stop.clone(),
    ));

    // Bodies are built before the clock starts: the run measures the pipeline only.
    let run_id = stargazer_e2e::unique();
    let entity = Uuid::new_v4();
    let events: Vec<Event> = (0..count).map(|n| tweet(&run_id, n, entity)).collect();
    let bodies = events.iter().map(Event::to_bytes).collect();
    let calls_before = deepl.calls();
    let started = Instant::now();
    publish(&buses.publisher, bodies, settings.window).await;
    if tokio::time::timeout(settings.run_timeout, receiver.wait())
        .await
        .is_err()
    {
        let seen = receiver.count.load(Ordering::Relaxed);
        fail(&format!(
            "K={instances}: {seen} of {count} events arrived within {:?}",
            settings.run_timeout
        ));
    }
    let elapsed = started.elapsed();
    let calls = deepl.calls() - calls_before;
    tokio::time::sleep(DUPLICATE_GRACE).await;
    stop.cancel();
    let _ = consumer.await;
    let per_instance = services.iter().map(translated_texts).collect();
    for service in services {
        service.stop().await;
    }

    let tally = std::mem::take(&mut *receiver.tally.lock().unwrap_or_else(|p| p.into_inner()));
    check_exactly_once(instances, &events, &tally);
    Outcome {
        events: count,
        elapsed,
        per_instance,
        calls,
    }
}

/// Fails the bench unless each published event arrived once, translated, and nothing else
/// arrived.
fn check_exactly_once(instances: usize, events: &[Event], tally: &Tally) {
    let missing = events
        .iter()
        .filter(|e| !tally.arrivals.contains_key(&e.id))
        .count();
    let duplicated = tally.arrivals.values().filter(|&&n| n > 1).count();
    let published: std::collections::HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    let strangers = tally
        .arrivals
        .keys()
        .filter(|id| !published.contains(id))
        .count();
    if missing > 0 || duplicated > 0 || strangers > 0 || tally.garbled > 0 {
        fail(&format!(
            "K={instances}: not exactly once: {missing} missing, {duplicated} arrived more \
             than once, {strangers} unknown ids, {} not events",
            tally.garbled
        ));
    }
    if tally.untranslated > 0 {
        fail(&format!(
            "K={instances}: {} events arrived without a translation",
            tally.untranslated
        ));
    }
}

// ------------------------------------------------------------------ report

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn describe(instances: usize, outcome: &Outcome) -> String {
    let split = outcome
        .per_instance
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" + ");
    format!(
        "K={instances}: {:>7.1} events/s ({} events in {:.2} s; {} DeepL calls, {:.1} texts/call; texts per instance {split})",
        outcome.rate(),
        outcome.events,
        outcome.elapsed.as_secs_f64(),
        outcome.calls,
        outcome.events as f64 / outcome.calls.max(1) as f64,
    )
}

fn main() {
    let settings = Settings::from_env();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => fail(&format!("tokio runtime: {err}")),
    };
    runtime.block_on(bench(settings));
}

async fn bench(settings: Settings) {
    let deepl = match Deepl::start("bench-deepl-key:fx").await {
        Ok(deepl) => deepl,
        Err(err) => fail(&format!("DeepL test server: {err}")),
    };
    deepl.set_latency(settings.latency);
    let vhost = match tokio::task::spawn_blocking(TestVhost::create).await {
        Ok(Ok(vhost)) => vhost,
        Ok(Err(err)) => fail(&format!("a RabbitMQ virtual host: {err}")),
        Err(err) => fail(&format!("vhost task: {err}")),
    };
    let defaults = translate_config(&deepl);
    println!(
        "translate_scale: {} events per run, DeepL latency {} ms, {} rounds (K=1 then K=2), publish window {}",
        settings.events,
        settings.latency.as_millis(),
        settings.rounds,
        settings.window,
    );
    println!(
        "RabbitMQ vhost {}; each instance: prefetch {}, concurrency {}, call_concurrency {}, batch window {} ms (production defaults)",
        vhost.name,
        defaults.prefetch,
        defaults.concurrency,
        defaults.call_concurrency,
        defaults.batch_window_ms,
    );
    let buses = Buses::connect(&vhost.amqp_url()).await;
    if settings.warmup > 0 {
        run(&buses, &deepl, &settings, MAX_INSTANCES, settings.warmup).await;
    }

    let (mut single, mut double, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=settings.rounds {
        let one = run(&buses, &deepl, &settings, 1, settings.events).await;
        println!("round {round} {}", describe(1, &one));
        let two = run(&buses, &deepl, &settings, 2, settings.events).await;
        println!("round {round} {}", describe(2, &two));
        // Paired rounds run back to back, so the broker's drift cancels out of the ratio.
        ratios.push(two.rate() / one.rate());
        single.push(one.rate());
        double.push(two.rate());
    }
    buses.close().await;
    let (one, two, ratio) = (median(single), median(double), median(ratios));
    println!();
    println!(
        "| translate instances | events/s (median of {}) |",
        settings.rounds
    );
    println!("|---------------------|------------------------:|");
    println!("| 1                   | {one:>23.1} |");
    println!("| 2                   | {two:>23.1} |");
    println!("2 vs 1 instances: {ratio:.2}x (median of the per-round ratios; goal >= 1.6x)");
}
