//! Degrade, don't fail (docs/ARCHITECTURE.md §3): two api instances cannot both accept
//! one channel, one malformed stored record does not fail reads for everyone, and a
//! database that stops answering is a 503 with `Retry-After` within
//! `storage_timeout_ms`, on both storage backends; `/readyz` reports storage.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use serde_json::{json, Value};
use stargazer_api::ApiConfig;
use stargazer_core::storage::Storage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use common::{assert_error, channel, test_config, Auth, Backend, RawBody, TestServer};

/// A database that two storages can open, each with its own connection.
enum Shared {
    /// A MongoDB database by name on the test server.
    Mongo(String),
    /// A SQLite file.
    Sqlite(String),
}

impl Shared {
    fn new(backend: Backend) -> Self {
        match backend {
            Backend::Mongo => Shared::Mongo(format!("sg_api_{}", Uuid::new_v4().simple())),
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join("stargazer-api-tests");
                std::fs::create_dir_all(&dir).unwrap();
                Shared::Sqlite(
                    dir.join(format!("{}.db", Uuid::new_v4()))
                        .to_str()
                        .unwrap()
                        .to_owned(),
                )
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Shared::Mongo(name) => format!("mongodb://127.0.0.1:27017/{name}"),
            Shared::Sqlite(path) => format!("sqlite://{path}"),
        }
    }

    async fn open(&self) -> Arc<dyn Storage> {
        stargazer_core::storage::connect(&self.url()).await.unwrap()
    }

    /// Writes a record the model cannot decode straight into the database: an entity
    /// whose names are not a map. Returns its id.
    async fn insert_malformed_entity(&self) -> Uuid {
        let id = Uuid::new_v4();
        match self {
            Shared::Mongo(name) => {
                let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017/")
                    .await
                    .unwrap();
                let uuid = Bson::Binary(Binary {
                    subtype: BinarySubtype::Uuid,
                    bytes: id.as_bytes().to_vec(),
                });
                client
                    .database(name)
                    .collection::<Document>("entities")
                    .insert_one(doc! { "_id": uuid, "names": 42, "default_language": "en" })
                    .await
                    .unwrap();
            }
            Shared::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute(
                    "INSERT INTO entities (id, names, default_language, group_id, translate_to)
                     VALUES (?1, '42', 'en', NULL, '[]')",
                    [id.to_string()],
                )
                .unwrap();
            }
        }
        id
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Shared::Sqlite(path) = self {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
}

fn new_entity_body(name: &str, youtube: &str, twitter: u32) -> Value {
    json!({
        "names": {"en": name},
        "default_language": "en",
        "tasks": [
            {"kind": "youtube", "channel_id": youtube},
            {"kind": "twitter", "user_id": twitter.to_string()},
        ],
    })
}

/// Two api instances, each on its own connection to one database, race to add one
/// YouTube channel to two entities: exactly one wins; the other gets 409 naming the
/// channel and the entity that has it.
async fn two_instances_race_for_one_channel(backend: Backend) {
    let shared = Shared::new(backend);
    let first = TestServer::with_config(shared.open().await, test_config()).await;
    let second = TestServer::with_config(shared.open().await, test_config()).await;
    first.admin().await;
    for round in 0..5u32 {
        let youtube = channel(9000 + round);
        let (a, b) = tokio::join!(
            first.post(
                "/v1/newEntity",
                Auth::Basic("admin", "pw-admin"),
                RawBody::Json(new_entity_body("A", &youtube, 100 + round)),
            ),
            second.post(
                "/v1/newEntity",
                Auth::Basic("admin", "pw-admin"),
                RawBody::Json(new_entity_body("B", &youtube, 200 + round)),
            ),
        );
        let (winner, loser) = match (a.0, b.0) {
            (200, 409) => (&a, &b),
            (409, 200) => (&b, &a),
            _ => panic!("round {round}: {} {} / {} {}", a.0, a.2, b.0, b.2),
        };
        assert_error(loser, 409, "conflict");
        let message = loser.2["error"]["message"].as_str().unwrap();
        let owner = winner.2["data"]["id"].as_str().unwrap();
        assert!(message.contains(&youtube), "{message}");
        assert!(message.contains(owner), "{message}");
    }
    let entities = first.client().with_basic("admin", "pw-admin");
    let all = entities.get_entities().await.unwrap();
    assert_eq!(all.len(), 5, "one entity per round");
    first.stop().await;
    second.stop().await;
}

/// One malformed entity in the database: listings leave it out (and count it), reads of
/// other entities work, and reading it by id names it.
async fn one_malformed_record_is_skipped(backend: Backend) {
    let shared = Shared::new(backend);
    let server = TestServer::with_config(shared.open().await, test_config()).await;
    let admin = server.admin().await;
    let good: stargazer_api::types::NewEntity =
        serde_json::from_value(new_entity_body("Good", &channel(1), 1)).unwrap();
    let good = admin.new_entity(&good).await.unwrap();
    let bad = shared.insert_malformed_entity().await;

    let bot = server.bot().await;
    let all = bot.get_entities().await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![good.id]);
    assert_eq!(bot.get_entity(good.id).await.unwrap().id, good.id);
    let index = bot.get_user_index(None).await.unwrap();
    assert_eq!(index.entities.len(), 1);
    let user = bot
        .add_user(&stargazer_api::types::AddUser {
            im: "telegram".into(),
            chat_id: "5".into(),
            name: String::new(),
            language: "en".into(),
        })
        .await
        .unwrap();
    let token = bot.new_session(user.id).await.unwrap().token;
    let session = server.client().with_bearer(&token);
    assert_eq!(
        session.get_user_index(None).await.unwrap().entities.len(),
        1
    );

    let direct = server
        .post(
            "/v1/getEntity",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"id": bad})),
        )
        .await;
    assert_error(&direct, 500, "internal");
    let message = direct.2["error"]["message"].as_str().unwrap();
    assert!(message.contains(&bad.to_string()), "{message}");

    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"stargazer_storage_malformed_total{collection="entities"}"#),
        "{metrics}"
    );
    server.stop().await;
}

both_backends!(
    two_instances_race_for_one_channel,
    one_malformed_record_is_skipped,
    readyz_reports_storage
);

/// A TCP relay to the MongoDB-wire server that can be told to stop answering: bytes
/// still arrive but nothing is relayed, as when a network path silently drops packets.
struct SilentableProxy {
    port: u16,
    silent: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentableProxy {
    async fn start(upstream: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(relay(cr, sw, flag.clone()));
                tokio::spawn(relay(sr, cw, flag.clone()));
            }
        });
        Self { port, silent, task }
    }

    fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

impl Drop for SilentableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A config whose storage calls give up after one second, with no read cache (so every
/// request reaches the database).
fn bounded_config() -> ApiConfig {
    ApiConfig {
        storage_timeout_ms: 1000,
        read_cache_ms: 0,
        ..test_config()
    }
}

/// Asserts a 503 `unavailable` with `Retry-After`, answered within the bound (1 s) plus
/// scheduling slack.
#[track_caller]
fn assert_prompt_503(result: &(u16, reqwest::header::HeaderMap, Value), elapsed: Duration) {
    assert_error(result, 503, "unavailable");
    assert!(
        result.1.get("retry-after").is_some(),
        "no Retry-After: {:?}",
        result.1
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "answered after {elapsed:?}"
    );
}

/// MongoDB stops answering mid-flight: reads and writes are 503 within the bound instead
/// of the driver's 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mongodb_is_503_within_the_bound() {
    let proxy = SilentableProxy::start("127.0.0.1:27017").await;
    let url = format!(
        "mongodb://127.0.0.1:{}/sg_api_{}?directConnection=true",
        proxy.port,
        Uuid::new_v4().simple()
    );
    let storage = stargazer_core::storage::connect(&url).await.unwrap();
    let server = TestServer::with_config(storage, bounded_config()).await;
    let admin = server.admin().await;
    admin.get_entities().await.unwrap();

    proxy.go_silent();
    for (method, body) in [
        ("/v1/getEntities", RawBody::Empty),
        (
            "/v1/newEntity",
            RawBody::Json(new_entity_body("A", &channel(3), 3)),
        ),
    ] {
        let started = Instant::now();
        let answer = server
            .post(method, Auth::Basic("admin", "pw-admin"), body)
            .await;
        assert_prompt_503(&answer, started.elapsed());
    }
    server.stop().await;
}

/// Another process holds the SQLite file's write lock: writes (which would wait the
/// 5 s busy timeout) and the reads queued behind them are 503 within the bound, and the
/// api recovers once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_503_within_the_bound() {
    let shared = Shared::new(Backend::Sqlite);
    let server = TestServer::with_config(shared.open().await, bounded_config()).await;
    let admin = server.admin().await;
    admin.get_entities().await.unwrap();
    let Shared::Sqlite(path) = &shared else {
        unreachable!()
    };
    let blocker = rusqlite::Connection::open(path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let started = Instant::now();
    let write = server
        .post(
            "/v1/newEntity",
            Auth::Basic("admin", "pw-admin"),
            RawBody::Json(new_entity_body("A", &channel(4), 4)),
        )
        .await;
    assert_prompt_503(&write, started.elapsed());
    let started = Instant::now();
    let read = server
        .post(
            "/v1/getEntities",
            Auth::Basic("admin", "pw-admin"),
            RawBody::Empty,
        )
        .await;
    assert_prompt_503(&read, started.elapsed());

    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    // The write that timed out may still land once the lock is free: either way the
    // api answers again.
    let mut answered = false;
    for _ in 0..50 {
        if admin.get_entities().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        answered,
        "the api did not recover after the lock was released"
    );
    server.stop().await;
}

/// `/readyz` reports storage (pinged) while `/healthz` stays a plain liveness check.
async fn readyz_reports_storage(backend: Backend) {
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let storage =
        stargazer_testkit::faulty::FaultyStorage::new(backend.connect().await, move |_| {
            switch.load(Ordering::SeqCst)
        });
    let server = TestServer::with_config(Arc::new(storage), test_config()).await;
    let get = |path: &'static str| {
        let url = format!("{}{path}", server.base);
        let http = server.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"ready": true, "checks": {"storage": {"ready": true}}})
    );

    down.store(true, Ordering::SeqCst);
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["storage"]["ready"], false);
    assert!(
        !body.to_string().contains("10.1.2.3"),
        "driver detail leaked: {body}"
    );
    assert_eq!(get("/healthz").await.0, 200);

    down.store(false, Ordering::SeqCst);
    assert_eq!(get("/readyz").await.0, 200);
    server.stop().await;
}
