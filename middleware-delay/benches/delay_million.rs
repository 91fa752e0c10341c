//! middleware-delay with 1,000,000 pending messages on a SQLite file, in-process bus.
//!
//! `cargo bench -p stargazer-middleware-delay` (release). Phases:
//! 1. load: 1,000,000 messages due over the next day are written with `Storage::put_delayed` (the
//!    storage the middleware uses, driven directly to save time);
//! 2. baseline: a fresh process (this binary re-executed) opens the file with one
//!    instance whose claim horizon covers every message, so it holds them all (what every
//!    instance did before claims); reported: claim time and resident memory (VmRSS);
//! 3. two instances: another fresh process runs two instances (each its own connection to
//!    the file) with the default 60 s horizon; reported: what each holds and VmRSS;
//! 4. firing: with the million still pending, 10,000 messages are published on the bus
//!    (`youtube.delay`, consumed by both instances through the real middleware runtime)
//!    due at 1,000 per second; a consumer of the ready queue measures arrival minus
//!    `x-delay-at`. Baseline: the lateness of plain `tokio::time::sleep_until` wake-ups
//!    over the same schedule, same process;
//! 5. takeover: 2,000 messages due in 3-5 s are held by whichever instance received them;
//!    one instance is killed (loops aborted, claims not released) and the time until the
//!    survivor fired its orphans is reported beside the bound (lease + claim interval).
//!
//! Figures go to stdout. `DELAY_BENCH_PENDING` overrides the million (e.g. for a smoke
//! run); `DELAY_BENCH_KEEP=1` keeps the SQLite file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use serde_json::json;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::contract::control::{DELAY_AT, LIVE_CHECK_VIDEO};
use stargazer_core::middleware::{self, RuntimeMetrics, RuntimeOptions};
use stargazer_core::model::{DelayedMessage, Event};
use stargazer_core::storage;
use stargazer_core::CancellationToken;
use stargazer_middleware_delay::delayer::now_ms;
use stargazer_middleware_delay::{ClaimOptions, DelayMetrics, Delayer, FireOptions};
use uuid::Uuid;

const FIRINGS: usize = 10_000;
const FIRINGS_PER_SEC: u64 = 1_000;
const TAKEOVER: usize = 2_000;
const LEASE_SECONDS: u64 = 5;
/// Where the loaded (pending) messages go when they fire.
const POOL_ROUTING_KEY: &str = "youtube.live_check";
const CLAIM_INTERVAL_MS: u64 = 1_000;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// A realistic `youtube.live` body (~450 bytes).
fn sample_event(i: usize) -> Event {
    serde_json::from_value(json!({
        "id": Uuid::new_v4(),
        "kind": "youtube.live",
        "entity": Uuid::new_v4(),
        "time": "2026-01-01T12:00:00Z",
        "fields": {
            "video_id": format!("v{i:010}"),
            "title": "【歌枠】みんなで歌おう！ Singing stream with everyone — part 12",
            "link": format!("https://www.youtube.com/watch?v=v{i:010}"),
            "channel": "UCxxxxxxxxxxxxxxxxxxxxxx",
            "thumbnail": format!("https://i.ytimg.com/vi/v{i:010}/maxresdefault.jpg"),
            "scheduled_start_time": "2026-01-01T12:00:00Z"
        },
        (LIVE_CHECK_VIDEO): format!("v{i:010}")
    }))
    .expect("valid sample event")
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Ok(path) = std::env::var("DELAY_BENCH_CHILD") {
        runtime.block_on(child(&path));
        return;
    }
    let pending: usize = std::env::var("DELAY_BENCH_PENDING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let path = std::env::temp_dir().join(format!("delay-bench-{}.db", Uuid::new_v4().simple()));
    let path = path.to_string_lossy().into_owned();
    runtime.block_on(load(&path, pending));
    drop(runtime);

    // Fresh processes, as after a crash or deploy, so each VmRSS is its own.
    let mut status = std::process::ExitStatus::default();
    for mode in ["single", "pair"] {
        status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .env("DELAY_BENCH_CHILD", &path)
            .env("DELAY_BENCH_MODE", mode)
            .env("DELAY_BENCH_PENDING", pending.to_string())
            .status()
            .expect("re-execute the bench");
        if !status.success() {
            break;
        }
    }
    if std::env::var("DELAY_BENCH_KEEP").is_err() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    assert!(status.success(), "restart phase failed");
}

async fn load(path: &str, pending: usize) {
    println!(
        "delay_million: {pending} pending messages, SQLite file {path}, in-process bus (memory://)"
    );
    let storage = storage::connect(&format!("sqlite://{path}"))
        .await
        .expect("open sqlite");
    let started = Instant::now();
    let base = now_ms() + 120_000;
    let mut body_bytes = 0usize;
    // A few writes in flight: the single SQLite connection serialises them anyway.
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..pending {
        let body = sample_event(i).to_bytes();
        body_bytes += body.len();
        let message = DelayedMessage {
            id: Uuid::new_v4().to_string(),
            routing_key: POOL_ROUTING_KEY.to_owned(),
            body,
            // Spread evenly over the day, as reminders are.
            fire_at_ms: base + (i as i64 * 86_400_000) / pending.max(1) as i64,
        };
        let storage = storage.clone();
        in_flight.spawn(async move {
            storage
                .put_delayed(&message, None)
                .await
                .expect("put_delayed")
        });
        if in_flight.len() >= 64 {
            in_flight.join_next().await;
        }
    }
    while in_flight.join_next().await.is_some() {}
    println!(
        "load:    {pending} put_delayed in {:.1} s ({:.0}/s), mean body {} bytes",
        started.elapsed().as_secs_f64(),
        pending as f64 / started.elapsed().as_secs_f64(),
        body_bytes / pending.max(1)
    );
}

/// The claim settings of the bench's instances: the defaults, with a shorter lease so the
/// takeover phase stays short.
fn claims(horizon: Duration) -> ClaimOptions {
    ClaimOptions {
        lease: Duration::from_secs(LEASE_SECONDS),
        interval: Duration::from_millis(CLAIM_INTERVAL_MS),
        horizon,
        batch: 5000,
        max_held: 2_000_000,
    }
}

fn fire_options() -> FireOptions {
    FireOptions {
        concurrency: 64,
        shutdown_grace: Duration::from_secs(10),
    }
}

/// One instance with its own connection to the file and its own loops.
struct Instance {
    delayer: Arc<Delayer>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), stargazer_core::middleware::MiddlewareError>>>,
}

async fn instance(path: &str, bus: &Arc<dyn Bus>, horizon: Duration, consume: bool) -> Instance {
    let storage = storage::connect(&format!("sqlite://{path}"))
        .await
        .expect("open sqlite");
    let registry = Registry::new();
    let delayer = Delayer::new(
        storage,
        bus.clone(),
        fire_options(),
        claims(horizon),
        DelayMetrics::register(&registry),
    );
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let d = delayer.clone();
    let s = stop.clone();
    tasks.push(tokio::spawn(async move {
        d.fire_loop(s).await;
        Ok(())
    }));
    let d = delayer.clone();
    let s = stop.clone();
    tasks.push(tokio::spawn(async move {
        d.renew_loop(s).await;
        Ok(())
    }));
    if consume {
        let options = RuntimeOptions {
            prefetch: 256,
            concurrency: 16,
            ..RuntimeOptions::new("delay")
        };
        bus.declare(&options.queue_spec()).await.expect("declare");
        tasks.push(tokio::spawn(middleware::run(
            delayer.clone(),
            bus.clone(),
            options,
            RuntimeMetrics::register("delay", &registry),
            stop.clone(),
        )));
    }
    Instance {
        delayer,
        stop,
        tasks,
    }
}

impl Instance {
    /// Claims until storage has nothing more for this instance.
    async fn claim_all(&self) -> usize {
        let mut total = 0;
        loop {
            let claimed = self.delayer.claim_round(&self.stop).await;
            total += claimed;
            if claimed == 0 {
                return total;
            }
        }
    }

    fn spawn_claim_loop(&mut self) {
        let d = self.delayer.clone();
        let s = self.stop.clone();
        self.tasks.push(tokio::spawn(async move {
            d.claim_loop(s).await;
            Ok(())
        }));
    }

    /// Stops without releasing the claims: what a killed process leaves behind.
    async fn kill(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.abort();
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.delayer.release().await;
    }
}

async fn child(path: &str) {
    let pending: usize = std::env::var("DELAY_BENCH_PENDING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mode = std::env::var("DELAY_BENCH_MODE").unwrap_or_default();
    let rss_start = status_kb("VmRSS:");
    let memory = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(memory.clone());
    if mode == "single" {
        // Baseline: one instance holding every pending message, as before claims (a
        // horizon beyond the last due time makes the claim rounds a full reload).
        let single = instance(path, &bus, Duration::from_secs(3 * 86_400), false).await;
        let rss_before = status_kb("VmRSS:");
        let started = Instant::now();
        let held = single.claim_all().await;
        let took = started.elapsed();
        let rss_after = status_kb("VmRSS:");
        println!(
            "baseline (1 instance holding all): {held} of {pending} claimed in {:.1} s; VmRSS {:.1} MB (process start {:.1} MB, storage open {:.1} MB; timer share {:.1} MB, {:.0} bytes/message)",
            took.as_secs_f64(),
            mb(rss_after),
            mb(rss_start),
            mb(rss_before),
            mb(rss_after.saturating_sub(rss_before)),
            (rss_after.saturating_sub(rss_before) * 1024) as f64 / held.max(1) as f64,
        );
        single.stop().await;
        return;
    }

    // The ready queue exists before any instance fires: the load's earliest messages are
    // due by now, and a firing whose publish is unroutable is retried with a growing
    // pause, holding its stripe (what a bot queue declared at start prevents in
    // production).
    let mut ready = bus
        .consume(&QueueSpec::new("bench.ready", "*", 512))
        .await
        .expect("consume ready");
    // The loaded messages go to `youtube.live_check`, which `*` does not match: drained
    // by a queue of their own.
    let mut pool = bus
        .consume(&QueueSpec::new("bench.pool", POOL_ROUTING_KEY, 512))
        .await
        .expect("consume pool");
    tokio::spawn(async move {
        while let Some(delivery) = pool.next().await {
            let _ = delivery.ack().await;
        }
    });

    // Two instances, default horizon, one store, one queue.
    let horizon = Duration::from_secs(60);
    let mut a = instance(path, &bus, horizon, true).await;
    let mut b = instance(path, &bus, horizon, true).await;
    let rss_before = status_kb("VmRSS:");
    let started = Instant::now();
    let (held_a, held_b) = tokio::join!(a.claim_all(), b.claim_all());
    let took = started.elapsed();
    let rss_after = status_kb("VmRSS:");
    println!(
        "2 instances, horizon 60 s: {pending} pending in storage; held {held_a} + {held_b} after the first claim rounds ({:.2} s); VmRSS {:.1} MB for both (storage open {:.1} MB, +{:.1} MB)",
        took.as_secs_f64(),
        mb(rss_after),
        mb(rss_before),
        mb(rss_after.saturating_sub(rss_before)),
    );
    a.spawn_claim_loop();
    b.spawn_claim_loop();

    // Firing: both instances consume the one queue.
    let first_due = now_ms() + 3_000;
    for i in 0..FIRINGS {
        let due = first_due + (i as i64 * 1000) / FIRINGS_PER_SEC as i64;
        let mut event = sample_event(i);
        event.control.insert(DELAY_AT.into(), json!(due));
        event.fields.insert("due_ms".into(), json!(due));
        bus.publish("youtube.delay", &event.to_bytes())
            .await
            .expect("publish");
    }
    let lateness = collect_lateness(&mut ready, FIRINGS, 60).await;
    let early = lateness.iter().filter(|l| **l < 0).count();
    println!(
        "firing:  {} of {FIRINGS} at {FIRINGS_PER_SEC}/s over 2 instances ({pending} pending in storage): lateness p50 {} ms, p99 {} ms, max {} ms, early {early}; held now {} + {}",
        lateness.len(),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0),
        a.delayer.pending(),
        b.delayer.pending(),
    );

    // Takeover: 2,000 messages due in 4-6 s are held by whichever instance received
    // them; one instance is killed (no release) 1 s in.
    let first_due = now_ms() + 4_000;
    for i in 0..TAKEOVER {
        let due = first_due + (i as i64 * 2000) / TAKEOVER as i64;
        let mut event = sample_event(i);
        event.control.insert(DELAY_AT.into(), json!(due));
        event.fields.insert("due_ms".into(), json!(due));
        bus.publish("youtube.delay", &event.to_bytes())
            .await
            .expect("publish");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let orphaned = a.delayer.pending();
    let killed_at = now_ms();
    a.kill().await;
    let arrivals = collect_arrivals(&mut ready, TAKEOVER, 60).await;
    let taken_over: Vec<i64> = arrivals
        .iter()
        .filter(|(due, arrived)| {
            *arrived >= killed_at + LEASE_SECONDS as i64 * 1000 && *arrived - *due > 500
        })
        .map(|(_, arrived)| arrived - killed_at)
        .collect();
    let last = taken_over.iter().copied().max().unwrap_or(0);
    println!(
        "takeover: killed one instance holding {orphaned} of {TAKEOVER} due in 3-5 s; {} of {TAKEOVER} arrived; the survivor fired the orphans {:.1} s to {:.1} s after the kill   [bound: lease {LEASE_SECONDS} s + claim interval {CLAIM_INTERVAL_MS} ms]",
        arrivals.len(),
        taken_over.iter().copied().min().unwrap_or(0) as f64 / 1000.0,
        last as f64 / 1000.0,
    );

    // Baseline: bare timer wake-ups over the same schedule as the firing phase.
    let first = Instant::now() + Duration::from_millis(500);
    let mut bare = Vec::with_capacity(FIRINGS);
    for i in 0..FIRINGS {
        let due = first + Duration::from_millis(i as u64 * 1000 / FIRINGS_PER_SEC);
        if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
        }
        bare.push(Instant::now().duration_since(due).as_millis() as i64);
    }
    bare.sort_unstable();
    println!(
        "baseline: tokio sleep wake-ups on the same schedule: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&bare, 0.5),
        percentile(&bare, 0.99),
        bare.last().copied().unwrap_or(0)
    );
    println!(
        "memory:  VmRSS {:.1} MB at the end (both instances), VmHWM {:.1} MB",
        mb(status_kb("VmRSS:")),
        mb(status_kb("VmHWM:"))
    );
    b.stop().await;
    let _ = memory.queue_len("bench.ready");
}

/// `(due, arrived)` of up to `count` ready messages, waiting at most `seconds`.
async fn collect_arrivals(
    ready: &mut Box<dyn stargazer_core::bus::Consumer>,
    count: usize,
    seconds: u64,
) -> Vec<(i64, i64)> {
    let mut out = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while out.len() < count && Instant::now() < deadline {
        let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(5), ready.next()).await
        else {
            continue;
        };
        let arrived = now_ms();
        if let Ok(event) = Event::from_bytes(&delivery.body) {
            if let Some(due) = event.fields.get("due_ms").and_then(|v| v.as_i64()) {
                out.push((due, arrived));
            }
        }
        let _ = delivery.ack().await;
    }
    out
}

/// Sorted lateness of up to `count` ready messages.
async fn collect_lateness(
    ready: &mut Box<dyn stargazer_core::bus::Consumer>,
    count: usize,
    seconds: u64,
) -> Vec<i64> {
    let mut lateness: Vec<i64> = collect_arrivals(ready, count, seconds)
        .await
        .into_iter()
        .map(|(due, arrived)| arrived - due)
        .collect();
    lateness.sort_unstable();
    lateness
}
