//! The status poller over 2,000 held rooms against the Bilibili API double: calls and
//! wall time of one cycle with the default batch size and least request gap, beside the
//! baseline of one call per room, measured in the same run.
//!
//! `cargo bench -p stargazer-worker-bilibili --bench poller`. Set `POLLER_BENCH_FULL=1` to
//! also run the baseline with the default 250 ms gap (about 500 s) instead of deriving it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::storage::sqlite::SqliteStorage;
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use stargazer_testkit::servers::bilibili::BilibiliServer;
use stargazer_worker_bilibili::{BilibiliConfig, BilibiliRunner};
use uuid::Uuid;

const ROOMS: usize = 2_000;
const CYCLES: usize = 3;

struct Run {
    label: String,
    calls_per_cycle: f64,
    cycle: Duration,
}

async fn measure(
    server: &BilibiliServer,
    uids: &[u64],
    label: &str,
    batch: usize,
    gap_ms: u64,
    cycles: usize,
) -> Run {
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open_in_memory().await.unwrap());
    let bus = MemoryBus::new();
    bus.declare(&QueueSpec::new("sink", "#", 1000))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let config = BilibiliConfig {
        live_base: server.base.clone(),
        api_base: server.base.clone(),
        status_batch_size: batch,
        min_request_gap_ms: gap_ms,
        // The background poller's own cycle stays out of the measurement.
        live_poll_interval_seconds: 3600,
        ..BilibiliConfig::default()
    };
    let runner = BilibiliRunner::new(
        config,
        storage.clone(),
        storage,
        Arc::new(bus),
        &Registry::new(),
        shutdown.clone(),
    )
    .unwrap();
    // Let the background poller's first cycle pass while nothing is held: its next one is
    // an hour away, so only the measured cycles reach the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for uid in uids {
        runner.hold_for_status(Uuid::new_v4(), Uuid::new_v4(), *uid);
    }
    let before = server.status_calls().len();
    let start = Instant::now();
    let mut calls = 0;
    for _ in 0..cycles {
        calls += runner.status_cycle_now().await;
    }
    let elapsed = start.elapsed();
    let seen = server.status_calls().len() - before;
    assert_eq!(seen, calls, "the server saw every call");
    shutdown.cancel();
    runner.join().await;
    Run {
        label: label.to_owned(),
        calls_per_cycle: calls as f64 / cycles as f64,
        cycle: elapsed / cycles as u32,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = BilibiliServer::start().await.unwrap();
    let uids: Vec<u64> = (0..ROOMS as u64).map(|i| 10_000_000 + i).collect();
    for (i, uid) in uids.iter().enumerate() {
        server.add_room(*uid, 50_000_000 + i as u64);
        // One room in twenty live: the cycles exercise the state path too.
        if i % 20 == 0 {
            server.set_live(*uid, "bench");
        }
    }
    let defaults = BilibiliConfig::default();
    let gap = defaults.min_request_gap_ms;
    let batch = defaults.status_batch_size;
    let mut runs = vec![
        measure(
            &server,
            &uids,
            &format!("batched ({batch}/call, gap {gap} ms)"),
            batch,
            gap,
            CYCLES,
        )
        .await,
        measure(
            &server,
            &uids,
            &format!("batched ({batch}/call, gap 0)"),
            batch,
            0,
            CYCLES,
        )
        .await,
        measure(&server, &uids, "one call per room (gap 0)", 1, 0, CYCLES).await,
    ];
    let full = std::env::var("POLLER_BENCH_FULL").is_ok_and(|v| v == "1");
    if full {
        runs.push(
            measure(
                &server,
                &uids,
                &format!("one call per room (gap {gap} ms)"),
                1,
                gap,
                1,
            )
            .await,
        );
    }
    let interval = defaults.live_poll_interval_seconds as f64;
    println!("{ROOMS} rooms held, live_poll_interval_seconds = {interval}");
    println!(
        "{:<38} {:>14} {:>14} {:>16}",
        "mode", "calls/cycle", "cycle time", "calls/minute"
    );
    for run in &runs {
        println!(
            "{:<38} {:>14.1} {:>12.3} s {:>16.0}",
            run.label,
            run.calls_per_cycle,
            run.cycle.as_secs_f64(),
            run.calls_per_cycle * 60.0 / interval
        );
    }
    if !full {
        let raw = runs[2].cycle.as_secs_f64();
        let floor = (ROOMS as f64 - 1.0) * gap as f64 / 1000.0;
        println!(
            "one call per room (gap {gap} ms): at least {:.1} s a cycle ({floor:.2} s of gaps + {raw:.3} s measured without), {:.0}x the {interval} s interval (derived; POLLER_BENCH_FULL=1 runs it)",
            floor + raw,
            (floor + raw) / interval
        );
    }
}
