//! Login-attack benchmark of the api on SQLite: authenticated `getEntities` throughput
//! and latency while 200 concurrent clients hammer the public listener with failing Basic
//! logins, beside the same load without the attack, measured in the same run. A broker
//! login (`POST /auth/user` on the internal listener, as RabbitMQ sends it) is probed every
//! 200 ms throughout, and its slowest answer reported.
//!
//! Scenarios, each on a fresh server (fresh throttle records) over one seeded database:
//! - `baseline`: no attack;
//! - `unknown users`: random unknown usernames from one address (the attack);
//! - `unknown users, forged XFF`: the same with `trust_forwarded_for` on and a random
//!   `X-Forwarded-For` per request, so no per-source record ever repeats;
//! - `wrong passwords, forged XFF`: guesses at one real service username, from random
//!   sources: every guess that gets through the throttle costs a real PBKDF2 check.
//!
//! Run with `cargo bench -p stargazer-api --bench login_attack` (a release build). Traffic
//! goes to 127.0.0.1 only and every loop is bounded in time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stargazer_api::{ApiConfig, Listeners};
use stargazer_core::auth::{hash_password, DEFAULT_ITERATIONS};
use stargazer_core::model::{Access, Credential, Entity, Permissions, Task, TaskParams};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use uuid::Uuid;

const CLIENTS: usize = 32;
const ATTACKERS: usize = 200;
/// Long enough for the attackers' throttle records to reach their longest delay.
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(5);
const PROBE_EVERY: Duration = Duration::from_millis(200);
const ENTITIES: u32 = 50;
const READER: (&str, &str) = ("bench", "bench-password");
const WORKER: (&str, &str) = ("worker", "worker-password");
/// A real service account the last scenario guesses at.
const VICTIM: (&str, &str) = ("victim", "victim-password");

#[derive(Clone, Copy, PartialEq)]
enum Attack {
    None,
    UnknownUsers,
    UnknownUsersForgedSource,
    WrongPasswordsForgedSource,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::None => "baseline (no attack)",
            Attack::UnknownUsers => "unknown users",
            Attack::UnknownUsersForgedSource => "unknown users, forged XFF",
            Attack::WrongPasswordsForgedSource => "wrong passwords, forged XFF",
        }
    }
}

struct Figures {
    attack: Attack,
    requests: usize,
    errors: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    probes: usize,
    probe_failures: usize,
    probe_max: Duration,
    attempts: usize,
    attempts_401: usize,
    attempts_429: usize,
}

async fn seed(storage: &Arc<dyn Storage>) {
    for ((username, password), permissions) in [
        (
            READER,
            Permissions {
                api: Some(Access::Ro),
                ..Default::default()
            },
        ),
        (
            WORKER,
            Permissions {
                api: Some(Access::Ro),
                mq: Some(Access::Rw),
                ..Default::default()
            },
        ),
        (
            VICTIM,
            Permissions {
                api: Some(Access::Ro),
                ..Default::default()
            },
        ),
    ] {
        let hash = tokio::task::spawn_blocking(move || hash_password(password, DEFAULT_ITERATIONS))
            .await
            .expect("hash task")
            .expect("hash");
        storage
            .insert_credential(&Credential {
                username: username.into(),
                hash,
                permissions,
                queues: Vec::new(),
            })
            .await
            .expect("credential");
    }
    for n in 0..ENTITIES {
        let id = Uuid::new_v4();
        let entity = Entity {
            id,
            names: [("en".to_owned(), format!("Streamer {n}"))].into(),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![Task {
                id: Uuid::new_v4(),
                entity: id,
                params: TaskParams::Youtube {
                    channel_id: format!("UC{n:022}"),
                },
            }],
        };
        storage.insert_entity(&entity).await.expect("entity");
    }
}

/// A random address for a forged `X-Forwarded-For`.
fn random_ip() -> String {
    let bytes = Uuid::new_v4().into_bytes();
    format!("{}.{}.{}.{}", bytes[0], bytes[1], bytes[2], bytes[3])
}

/// One attacker: failing logins back to back until `stop`, counting answers by status.
async fn attacker(
    attack: Attack,
    http: reqwest::Client,
    base: String,
    stop: CancellationToken,
    counts: Arc<[AtomicUsize; 3]>,
) {
    while !stop.is_cancelled() {
        let username = match attack {
            Attack::WrongPasswordsForgedSource => VICTIM.0.to_owned(),
            _ => format!("u{}", Uuid::new_v4().simple()),
        };
        let mut request = http
            .post(format!("{base}/v1/getEntities"))
            .basic_auth(username, Some(Uuid::new_v4().simple().to_string()))
            .body("{}");
        if attack != Attack::UnknownUsers {
            request = request.header("x-forwarded-for", random_ip());
        }
        let status = tokio::select! {
            _ = stop.cancelled() => break,
            sent = request.send() => sent.map(|response| response.status().as_u16()),
        };
        let slot = match status {
            Ok(401) => 0,
            Ok(429) => 1,
            _ => 2,
        };
        counts[slot].fetch_add(1, Ordering::Relaxed);
        if slot == 2 {
            // A refused connection would otherwise spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The broker's view: a worker's AMQP login, as RabbitMQ's HTTP backend asks for it.
/// Whether it was allowed, and how long the answer took.
async fn broker_login(http: &reqwest::Client, internal: &str) -> (bool, Duration) {
    let started = Instant::now();
    let answer = http
        .post(format!("{internal}/auth/user"))
        .form(&[("username", WORKER.0), ("password", WORKER.1)])
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let allowed = match answer {
        Ok(response) => response
            .text()
            .await
            .is_ok_and(|text| text.starts_with("allow")),
        Err(_) => false,
    };
    (allowed, started.elapsed())
}

/// Broker logins every [`PROBE_EVERY`] until `until`: probes, refusals, slowest answer.
async fn probe(
    http: reqwest::Client,
    internal: String,
    until: Instant,
) -> (usize, usize, Duration) {
    let (mut probes, mut failures, mut max) = (0, 0, Duration::ZERO);
    let mut tick = tokio::time::interval(PROBE_EVERY);
    while Instant::now() < until {
        tick.tick().await;
        let (allowed, took) = broker_login(&http, &internal).await;
        probes += 1;
        failures += usize::from(!allowed);
        max = max.max(took);
    }
    (probes, failures, max)
}

async fn scenario(storage: Arc<dyn Storage>, attack: Attack) -> Figures {
    let public = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", public.local_addr().expect("addr"));
    let internal_base = format!("http://{}", internal.local_addr().expect("addr"));
    let config = ApiConfig {
        trust_forwarded_for: attack != Attack::UnknownUsers && attack != Attack::None,
        ..ApiConfig::default()
    };
    let shutdown = CancellationToken::new();
    let registry = prometheus::Registry::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            stargazer_api::serve(
                config,
                Listeners {
                    public,
                    internal: Some(internal),
                },
                storage,
                &registry,
                shutdown,
            )
            .await
        }
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    // Both service accounts log in once before the attack (as running services have):
    // their verified pairs are remembered from then on.
    for (username, password) in [READER, VICTIM] {
        let first = http
            .post(format!("{base}/v1/getEntities"))
            .basic_auth(username, Some(password))
            .body("{}")
            .send()
            .await
            .expect("first login");
        assert!(
            first.status().is_success(),
            "first login: {}",
            first.status()
        );
    }
    assert!(
        broker_login(&http, &internal_base).await.0,
        "the worker's first broker login is allowed"
    );

    let stop = CancellationToken::new();
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let mut attackers = Vec::new();
    if attack != Attack::None {
        // Their own pool: one connection per attacker, as separate clients would have.
        let hostile = reqwest::Client::builder()
            .pool_max_idle_per_host(ATTACKERS)
            .build()
            .expect("client");
        for _ in 0..ATTACKERS {
            attackers.push(tokio::spawn(attacker(
                attack,
                hostile.clone(),
                base.clone(),
                stop.clone(),
                counts.clone(),
            )));
        }
    }
    let started = Instant::now();
    let warm_until = started + WARMUP;
    let stop_at = warm_until + MEASURE;
    let prober = tokio::spawn(probe(http.clone(), internal_base, stop_at));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, base) = (http.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            loop {
                let t0 = Instant::now();
                if t0 >= stop_at {
                    break;
                }
                let ok = match http
                    .post(format!("{base}/v1/getEntities"))
                    .basic_auth(READER.0, Some(READER.1))
                    .body("{}")
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => {
                        response.bytes().await.is_ok()
                    }
                    _ => false,
                };
                if t0 >= warm_until {
                    latencies.push(t0.elapsed());
                    errors += usize::from(!ok);
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for client in clients {
        let (l, e) = client.await.expect("client task");
        latencies.extend(l);
        errors += e;
    }
    let (probes, probe_failures, probe_max) = prober.await.expect("probe task");
    stop.cancel();
    for task in attackers {
        task.await.expect("attacker task");
    }
    shutdown.cancel();
    server.await.expect("server task").expect("server");

    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let attempts = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    Figures {
        attack,
        requests: latencies.len(),
        errors,
        per_sec: latencies.len() as f64 / MEASURE.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        probes,
        probe_failures,
        probe_max,
        attempts,
        attempts_401: counts[0].load(Ordering::Relaxed),
        attempts_429: counts[1].load(Ordering::Relaxed),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("sg-login-bench-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let storage = stargazer_core::storage::connect(&url).await.expect("sqlite");
        seed(&storage).await;
        println!(
            "{CLIENTS} clients on getEntities ({ENTITIES} entities), {ATTACKERS} attackers, \
             {MEASURE:?} measured after {WARMUP:?}; broker login probed every {PROBE_EVERY:?}; \
             PBKDF2 {DEFAULT_ITERATIONS} rounds, default [api] login settings"
        );
        let mut rows = Vec::new();
        for attack in [
            Attack::None,
            Attack::UnknownUsers,
            Attack::UnknownUsersForgedSource,
            Attack::WrongPasswordsForgedSource,
        ] {
            rows.push(scenario(storage.clone(), attack).await);
        }
        let baseline = rows[0].per_sec;
        println!(
            "  {:<28} {:>8} {:>6} {:>9} {:>7} {:>8} {:>8} {:>7} {:>11} {:>9} {:>6} {:>6}",
            "scenario",
            "requests",
            "errors",
            "req/s",
            "ratio",
            "p50 ms",
            "p99 ms",
            "probes",
            "probe max ms",
            "attempts",
            "401",
            "429"
        );
        for f in &rows {
            println!(
                "  {:<28} {:>8} {:>6} {:>9.0} {:>7.2} {:>8.2} {:>8.2} {:>7} {:>11.1} {:>9} {:>6} {:>6}",
                f.attack.name(),
                f.requests,
                f.errors,
                f.per_sec,
                f.per_sec / baseline,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                format!("{}/{}", f.probes - f.probe_failures, f.probes),
                f.probe_max.as_secs_f64() * 1e3,
                f.attempts,
                f.attempts_401,
                f.attempts_429,
            );
        }
        let attacked = &rows[1..];
        let worst_ratio = attacked
            .iter()
            .map(|f| f.per_sec / baseline)
            .fold(f64::INFINITY, f64::min);
        let worst_probe = attacked
            .iter()
            .map(|f| f.probe_max)
            .max()
            .unwrap_or_default();
        println!(
            "  under attack: worst throughput ratio {worst_ratio:.2} (goal >= 0.5), slowest broker login {:.1} ms (goal < 1000 ms)",
            worst_probe.as_secs_f64() * 1e3
        );
        drop(storage);
        let _ = std::fs::remove_dir_all(dir);
    });
}
