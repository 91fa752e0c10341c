//! Load benchmark of the api on SQLite: authenticated `getEntities` and `getSubscribers`
//! (10 000 subscribers of one entity) beside unauthenticated `/healthz` on the same server
//! in the same run, each under the same number of concurrent keep-alive clients.
//!
//! Run with `cargo bench -p stargazer-api` (a release build). It runs twice: with the
//! default read cache and with `read_cache_ms = 0` (every request reaches SQLite), and
//! prints throughput and latency percentiles per scenario. Traffic goes to 127.0.0.1 only
//! and every loop is bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use stargazer_api::ApiConfig;
use stargazer_core::auth::{hash_password, DEFAULT_ITERATIONS};
use stargazer_core::model::{
    Access, Credential, Entity, Permissions, Subscription, Task, TaskParams, User, UserSettings,
};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use uuid::Uuid;

const CLIENTS: usize = 32;
/// A bot's fan-out parallelism: the latency it sees when the server is not saturated.
const FEW_CLIENTS: usize = 4;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);
const ENTITIES: u32 = 50;
const SUBSCRIBERS: u32 = 10_000;
const USERNAME: &str = "bench";
const PASSWORD: &str = "bench-password";

struct Figures {
    name: String,
    requests: usize,
    errors: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    bytes: usize,
}

#[derive(Clone)]
enum Call {
    Health,
    Rpc(&'static str, serde_json::Value),
}

async fn load(
    name: &str,
    clients: usize,
    http: &reqwest::Client,
    base: &str,
    call: Call,
) -> Figures {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, call) = (http.clone(), base.to_owned(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut bytes) = (0usize, 0usize);
            let warm_until = started + WARMUP;
            let stop_at = warm_until + MEASURE;
            loop {
                let t0 = Instant::now();
                if t0 >= stop_at {
                    break;
                }
                let request = match &call {
                    Call::Health => http.get(format!("{base}/healthz")),
                    Call::Rpc(method, body) => http
                        .post(format!("{base}/v1/{method}"))
                        .basic_auth(USERNAME, Some(PASSWORD))
                        .json(body),
                };
                // Read the body chunk by chunk, as a streaming consumer would, without
                // gathering it into one buffer.
                let ok = match request.send().await {
                    Ok(mut response) if response.status().is_success() => {
                        let mut size = 0;
                        loop {
                            match response.chunk().await {
                                Ok(Some(chunk)) => size += chunk.len(),
                                Ok(None) => break true,
                                Err(_) => break false,
                            }
                        }
                        .then(|| bytes = size)
                        .is_some()
                    }
                    _ => false,
                };
                if t0 >= warm_until {
                    latencies.push(t0.elapsed());
                    errors += usize::from(!ok);
                }
            }
            (latencies, errors, bytes)
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut bytes) = (0, 0);
    for task in tasks {
        let (l, e, b) = task.await.expect("load task");
        latencies.extend(l);
        errors += e;
        bytes = bytes.max(b);
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        name: name.to_owned(),
        requests: latencies.len(),
        errors,
        per_sec: latencies.len() as f64 / MEASURE.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        max: *latencies.last().expect("some requests"),
        bytes,
    }
}

async fn seed(storage: &Arc<dyn Storage>) -> Uuid {
    let hash = tokio::task::spawn_blocking(|| hash_password(PASSWORD, DEFAULT_ITERATIONS))
        .await
        .expect("hash task")
        .expect("hash");
    storage
        .insert_credential(&Credential {
            username: USERNAME.into(),
            hash,
            permissions: Permissions {
                api: Some(Access::Ro),
                ..Default::default()
            },
            queues: Vec::new(),
        })
        .await
        .expect("credential");
    let mut popular = Uuid::nil();
    for n in 0..ENTITIES {
        let id = Uuid::new_v4();
        if n == 0 {
            popular = id;
        }
        let entity = Entity {
            id,
            names: [
                ("en".to_owned(), format!("Streamer {n}")),
                ("ja".to_owned(), format!("配信者 {n}")),
            ]
            .into(),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![
                Task {
                    id: Uuid::new_v4(),
                    entity: id,
                    params: TaskParams::Youtube {
                        channel_id: format!("UC{n:022}"),
                    },
                },
                Task {
                    id: Uuid::new_v4(),
                    entity: id,
                    params: TaskParams::Twitter {
                        user_id: format!("{}", 10_000 + n),
                    },
                },
            ],
        };
        storage.insert_entity(&entity).await.expect("entity");
    }
    for n in 0..SUBSCRIBERS {
        let user = User {
            id: Uuid::new_v4(),
            im: "telegram".into(),
            im_chat_id: format!("{}", 100_000_000 + n),
            name: format!("chat {n}"),
            language: if n % 3 == 0 { "ja".into() } else { "en".into() },
            settings: UserSettings {
                timezone: Some("Asia/Tokyo".into()),
                paused: false,
                ..UserSettings::default()
            },
            created_at: Utc::now(),
        };
        storage.insert_user(&user).await.expect("user");
        storage
            .put_subscription(&Subscription {
                user: user.id,
                entity: popular,
                kinds: if n % 2 == 0 {
                    vec![]
                } else {
                    vec!["youtube.live".into()]
                },
                mention: None,
            })
            .await
            .expect("subscription");
    }
    popular
}

fn print(figures: &[Figures]) {
    println!(
        "  {:<34} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "scenario", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "body B"
    );
    for f in figures {
        println!(
            "  {:<34} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>10}",
            f.name,
            f.requests,
            f.errors,
            f.per_sec,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.max.as_secs_f64() * 1e3,
            f.bytes
        );
    }
}

async fn round(storage: Arc<dyn Storage>, popular: Uuid, read_cache_ms: u64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let config = ApiConfig {
        read_cache_ms,
        ..ApiConfig::default()
    };
    let shutdown = CancellationToken::new();
    let listeners = stargazer_api::Listeners {
        public: listener,
        internal: None,
    };
    let (registry, stop) = (prometheus::Registry::new(), shutdown.clone());
    let server = tokio::spawn(async move {
        stargazer_api::serve(config, listeners, storage, &registry, stop).await
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    // The first authenticated request pays PBKDF2 (600 000 rounds) once; later ones hit
    // the verified-credential cache.
    let first = Instant::now();
    let probe = http
        .post(format!("{base}/v1/getEntities"))
        .basic_auth(USERNAME, Some(PASSWORD))
        .body("{}")
        .send()
        .await
        .expect("probe");
    assert!(
        probe.status().is_success(),
        "probe failed: {}",
        probe.status()
    );
    println!(
        "read_cache_ms = {read_cache_ms}: first authenticated call (PBKDF2 {DEFAULT_ITERATIONS} rounds) took {:.1} ms",
        first.elapsed().as_secs_f64() * 1e3
    );

    let health = load(
        "GET /healthz (no auth)",
        CLIENTS,
        &http,
        &base,
        Call::Health,
    )
    .await;
    let entities = load(
        &format!("getEntities ({ENTITIES} entities)"),
        CLIENTS,
        &http,
        &base,
        Call::Rpc("getEntities", serde_json::json!({})),
    )
    .await;
    let fan_out = Call::Rpc(
        "getSubscribers",
        serde_json::json!({"entity": popular, "kind": "youtube.live", "im": "telegram"}),
    );
    let subscribers = load(
        &format!("getSubscribers ({SUBSCRIBERS} subscribers)"),
        CLIENTS,
        &http,
        &base,
        fan_out.clone(),
    )
    .await;
    let subscribers_few = load(
        &format!("getSubscribers, {FEW_CLIENTS} clients"),
        FEW_CLIENTS,
        &http,
        &base,
        fan_out,
    )
    .await;
    let health_after = load("GET /healthz (again)", CLIENTS, &http, &base, Call::Health).await;
    let baseline = (health.per_sec + health_after.per_sec) / 2.0;
    println!(
        "  getEntities at {:.0}% of /healthz throughput (goal >= 50%); getSubscribers p99 {:.1} ms with {CLIENTS} clients, {:.1} ms with {FEW_CLIENTS} (goal < 50 ms)",
        entities.per_sec / baseline * 100.0,
        subscribers.p99.as_secs_f64() * 1e3,
        subscribers_few.p99.as_secs_f64() * 1e3
    );
    print(&[health, entities, subscribers, subscribers_few, health_after]);
    shutdown.cancel();
    server.await.expect("server task").expect("server");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("sg-api-bench-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let storage = stargazer_core::storage::connect(&url).await.expect("sqlite");
        let seeding = Instant::now();
        let popular = seed(&storage).await;
        println!(
            "seeded {ENTITIES} entities and {SUBSCRIBERS} subscribers in {:.1} s; {CLIENTS} concurrent clients, {:?} per scenario after {:?} warm-up",
            seeding.elapsed().as_secs_f64(),
            MEASURE,
            WARMUP
        );
        for read_cache_ms in [ApiConfig::default().read_cache_ms, 0] {
            round(storage.clone(), popular, read_cache_ms).await;
        }
        drop(storage);
        let _ = std::fs::remove_dir_all(dir);
    });
}
