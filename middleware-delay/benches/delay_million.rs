//! middleware-delay with 1,000,000 pending messages on a SQLite file, in-process bus.
//!
//! `cargo bench -p stargazer-middleware-delay` (release). Phases:
//! 1. load: 1,000,000 messages due in a day are written with `Storage::put_delayed` (the
//!    storage the middleware uses, driven directly to save time);
//! 2. restart: a fresh process (this binary re-executed) opens the file and reloads them
//!    through `Delayer::reload`; reported: reload time and resident memory (VmRSS) before
//!    and after, beside the same process's baseline;
//! 3. firing: with the million still pending, 10,000 messages are published on the bus
//!    (`youtube.delay`, handled by the real middleware runtime) due at 1,000 per second;
//!    a consumer of the ready queue measures arrival minus `x-delay-at`. Baseline: the
//!    lateness of plain `tokio::time::sleep_until` wake-ups over the same schedule, same
//!    process.
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
use stargazer_middleware_delay::{DelayMetrics, Delayer, FireOptions};
use uuid::Uuid;

const FIRINGS: usize = 10_000;
const FIRINGS_PER_SEC: u64 = 1_000;

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

    // The restart: a new process, as after a crash or deploy.
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("DELAY_BENCH_CHILD", &path)
        .env("DELAY_BENCH_PENDING", pending.to_string())
        .status()
        .expect("re-execute the bench");
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
    let base = now_ms() + 86_400_000;
    let mut body_bytes = 0usize;
    // A few writes in flight: the single SQLite connection serialises them anyway.
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..pending {
        let body = sample_event(i).to_bytes();
        body_bytes += body.len();
        let message = DelayedMessage {
            id: Uuid::new_v4().to_string(),
            routing_key: "youtube.live_check".to_owned(),
            body,
            fire_at_ms: base + i as i64,
        };
        let storage = storage.clone();
        in_flight.spawn(async move { storage.put_delayed(&message).await.expect("put_delayed") });
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

async fn child(path: &str) {
    let pending: usize = std::env::var("DELAY_BENCH_PENDING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rss_start = status_kb("VmRSS:");
    let storage = storage::connect(&format!("sqlite://{path}"))
        .await
        .expect("reopen sqlite");
    let memory = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(memory.clone());
    let registry = Registry::new();
    let delayer = Delayer::new(
        storage.clone(),
        bus.clone(),
        FireOptions {
            concurrency: 64,
            shutdown_grace: Duration::from_secs(10),
        },
        DelayMetrics::register(&registry),
    );
    let shutdown = CancellationToken::new();
    let firing = tokio::spawn(delayer.clone().fire_loop(shutdown.clone()));
    let rss_before = status_kb("VmRSS:");

    let started = Instant::now();
    let loaded = delayer.reload(5000, &shutdown).await.expect("reload");
    let reload_time = started.elapsed();
    assert_eq!(loaded, pending, "every stored message reloaded");
    assert_eq!(delayer.pending(), pending);
    let rss_after = status_kb("VmRSS:");
    println!(
        "reload:  {loaded} messages in {:.2} s ({:.0}/s)   [goal < 20 s]",
        reload_time.as_secs_f64(),
        loaded as f64 / reload_time.as_secs_f64()
    );
    println!(
        "memory:  VmRSS {:.1} MB with {} pending   [goal < 300 MB]; baseline: {:.1} MB at process start, {:.1} MB with storage and bus open; timer share {:.1} MB ({:.0} bytes/message); peak VmHWM {:.1} MB",
        mb(rss_after),
        delayer.pending(),
        mb(rss_start),
        mb(rss_before),
        mb(rss_after.saturating_sub(rss_before)),
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / pending.max(1) as f64,
        mb(status_kb("VmHWM:")),
    );

    // Firing: the real consuming runtime on the in-process bus.
    let options = RuntimeOptions {
        prefetch: 256,
        concurrency: 16,
        ..RuntimeOptions::new("delay")
    };
    bus.declare(&options.queue_spec()).await.expect("declare");
    let mut ready = bus
        .consume(&QueueSpec::new("bench.ready", "*", 512))
        .await
        .expect("consume ready");
    let consuming = tokio::spawn(middleware::run(
        delayer.clone(),
        bus.clone(),
        options,
        RuntimeMetrics::register("delay", &registry),
        shutdown.clone(),
    ));
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
    let mut lateness = Vec::with_capacity(FIRINGS);
    let deadline = Instant::now() + Duration::from_secs(60 + FIRINGS as u64 / FIRINGS_PER_SEC);
    while lateness.len() < FIRINGS && Instant::now() < deadline {
        let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(5), ready.next()).await
        else {
            continue;
        };
        let arrived = now_ms();
        if let Ok(event) = Event::from_bytes(&delivery.body) {
            if let Some(due) = event.fields.get("due_ms").and_then(|v| v.as_i64()) {
                lateness.push(arrived - due);
            }
        }
        let _ = delivery.ack().await;
    }
    lateness.sort_unstable();
    let early = lateness.iter().filter(|l| **l < 0).count();
    println!(
        "firing:  {} of {FIRINGS} at {FIRINGS_PER_SEC}/s with {} pending: lateness p50 {} ms, p99 {} ms, max {} ms, early {early}   [goal p99 < 50 ms]",
        lateness.len(),
        delayer.pending(),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0),
    );

    // Baseline: bare timer wake-ups over the same schedule.
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
        "memory:  VmRSS {:.1} MB at the end, VmHWM {:.1} MB",
        mb(status_kb("VmRSS:")),
        mb(status_kb("VmHWM:"))
    );

    shutdown.cancel();
    let _ = consuming.await;
    let _ = firing.await;
    let _ = memory.queue_len("bench.ready");
}
