//! The frontend end-to-end test's api: the real `stargazer-api` service on an in-memory
//! SQLite storage, seeded with groups, entities (YouTube and X accounts), one Telegram
//! user with a subscription, a live session and an expired one, and a schedule of
//! streams (one live and one upcoming of the subscribed entity, one upcoming of another).
//!
//! Prints one JSON line on stdout once it listens:
//! `{"url", "port", "token", "expired_token", "user", "entities": {key: id},
//! "groups": {key: id}, "streams": {video id: entity key}}`
//! and serves until SIGINT/SIGTERM, or until stdin closes when `--exit-on-stdin-eof` is
//! given (so a test runner that dies takes it along).
//!
//! ```text
//! stargazer-frontend-fixture [--listen 127.0.0.1:0] [--static-dir frontend/out]
//!                            [--cors-origin http://127.0.0.1:3000]... [--exit-on-stdin-eof]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{Duration, Utc};
use stargazer_api::ApiConfig;
use stargazer_core::auth::{new_token, token_hash};
use stargazer_core::model::{
    Entity, Group, Session, Subscription, Task, TaskParams, User, UserSettings,
};
use stargazer_core::schedule::{self, ScheduledStream, StreamState};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Command-line options.
struct Options {
    listen: SocketAddr,
    static_dir: Option<PathBuf>,
    cors_origins: Vec<String>,
    exit_on_stdin_eof: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        static_dir: None,
        cors_origins: Vec::new(),
        exit_on_stdin_eof: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let raw = value("--listen")?;
                options.listen = raw.parse().map_err(|err| {
                    format!("--listen `{raw}` is not an address like 127.0.0.1:0: {err}")
                })?;
            }
            "--static-dir" => options.static_dir = Some(PathBuf::from(value("--static-dir")?)),
            "--cors-origin" => options.cors_origins.push(value("--cors-origin")?),
            "--exit-on-stdin-eof" => options.exit_on_stdin_eof = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if let Some(dir) = &options.static_dir {
        if !dir.join("index.html").is_file() {
            return Err(format!(
                "--static-dir {}: no index.html there (build the frontend first)",
                dir.display()
            ));
        }
    }
    Ok(options)
}

fn names(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(lang, name)| ((*lang).to_owned(), (*name).to_owned()))
        .collect()
}

fn youtube(entity: Uuid, channel_id: &str) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Youtube {
            channel_id: channel_id.to_owned(),
        },
    }
}

fn twitter(entity: Uuid, user_id: &str) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Twitter {
            user_id: user_id.to_owned(),
        },
    }
}

/// A watched account in the seed.
enum Account {
    Youtube(&'static str),
    Twitter(&'static str),
}

/// One seeded entity: the key the ready line names it by, names, default language,
/// group and watched accounts.
struct EntitySeed(
    &'static str,
    BTreeMap<String, String>,
    &'static str,
    Option<Uuid>,
    &'static [Account],
);

/// What the seed created, printed for the test.
struct Seeded {
    user: Uuid,
    token: String,
    expired_token: String,
    entities: BTreeMap<&'static str, Uuid>,
    groups: BTreeMap<&'static str, Uuid>,
    /// Seeded streams: video id → entity key.
    streams: BTreeMap<&'static str, &'static str>,
}

async fn seed(storage: &dyn Storage, config: &ApiConfig) -> Result<Seeded, BoxError> {
    let starlight = Group {
        id: Uuid::new_v4(),
        names: names(&[
            ("en", "Starlight Unit"),
            ("ja", "スターライト"),
            ("zh", "星光组"),
        ]),
    };
    let moonlit = Group {
        id: Uuid::new_v4(),
        names: names(&[
            ("en", "Moonlit Records"),
            ("ja", "ムーンリット"),
            ("zh", "月光唱片"),
        ]),
    };
    for group in [&starlight, &moonlit] {
        storage.upsert_group(group).await?;
    }

    let mut entities = BTreeMap::new();
    let specs: [EntitySeed; 4] = [
        EntitySeed(
            "aki",
            names(&[
                ("en", "Aki Hoshino"),
                ("ja", "星野アキ"),
                ("zh", "星野亚纪"),
            ]),
            "ja",
            Some(starlight.id),
            &[
                Account::Youtube("UCakiHoshino0000000000aa"),
                Account::Twitter("1000000000000000001"),
            ],
        ),
        EntitySeed(
            "kaze",
            names(&[("en", "Kaze Aozora"), ("ja", "青空カゼ")]),
            "ja",
            Some(starlight.id),
            &[
                Account::Youtube("UCkazeAozora0000000000bb"),
                Account::Twitter("1000000000000000002"),
            ],
        ),
        EntitySeed(
            "luna",
            names(&[("en", "Luna Tsukishiro"), ("ja", "月城ルナ")]),
            "ja",
            Some(moonlit.id),
            &[Account::Youtube("UClunaTsukishiro000000cc")],
        ),
        EntitySeed(
            "mira",
            names(&[("en", "Mira Sol")]),
            "en",
            None,
            &[Account::Twitter("1000000000000000003")],
        ),
    ];
    for EntitySeed(key, names, default_language, group, accounts) in specs {
        let id = Uuid::new_v4();
        let tasks = accounts
            .iter()
            .map(|account| match account {
                Account::Youtube(channel_id) => youtube(id, channel_id),
                Account::Twitter(user_id) => twitter(id, user_id),
            })
            .collect();
        storage
            .insert_entity(&Entity {
                id,
                names,
                default_language: default_language.to_owned(),
                group,
                translate_to: Vec::new(),
                tasks,
            })
            .await?;
        entities.insert(key, id);
    }

    let now = Utc::now();
    let user = User {
        id: Uuid::new_v4(),
        im: "telegram".to_owned(),
        im_chat_id: "100200300".to_owned(),
        name: "Stargazer Fans".to_owned(),
        language: "en".to_owned(),
        settings: UserSettings::default(),
        created_at: now,
    };
    storage.insert_user(&user).await?;
    if let Some(luna) = entities.get("luna") {
        storage
            .put_subscription(&Subscription {
                user: user.id,
                entity: *luna,
                kinds: Vec::new(),
                mention: None,
            })
            .await?;
    }

    let token = new_token();
    storage
        .insert_session(&Session {
            token_hash: token_hash(&token),
            user: user.id,
            created_at: now,
            expires_at: now + Duration::seconds(i64::try_from(config.session_ttl_secs)?),
            max_expires_at: now + Duration::seconds(i64::try_from(config.session_max_secs)?),
        })
        .await?;
    // Issued two hours ago and unused since: past both its sliding and absolute expiry.
    let expired_token = new_token();
    storage
        .insert_session(&Session {
            token_hash: token_hash(&expired_token),
            user: user.id,
            created_at: now - Duration::hours(2),
            expires_at: now - Duration::hours(2) + Duration::minutes(10),
            max_expires_at: now - Duration::hours(1),
        })
        .await?;

    // The schedule, as the YouTube worker records it.
    let streams: [(&str, &str, i64, StreamState, &str); 3] = [
        (
            "lunaLive0001",
            "luna",
            -30,
            StreamState::Live,
            "Luna: morning chat",
        ),
        (
            "lunaNext0002",
            "luna",
            180,
            StreamState::Upcoming,
            "Luna: karaoke night",
        ),
        (
            "akiNext00003",
            "aki",
            240,
            StreamState::Upcoming,
            "Aki: game night",
        ),
    ];
    for (id, key, minutes, state, title) in streams {
        let Some(entity) = entities.get(key) else {
            continue;
        };
        let start = now + Duration::minutes(minutes);
        schedule::record(
            storage,
            &ScheduledStream {
                source: "youtube".to_owned(),
                id: id.to_owned(),
                entity: *entity,
                task: Uuid::new_v4(),
                title: title.to_owned(),
                link: format!("https://www.youtube.com/watch?v={id}"),
                scheduled_start: start,
                actual_start: (state == StreamState::Live).then_some(start),
                state,
                format: "stream".to_owned(),
                members_only: false,
                updated_at: now,
            },
        )
        .await?;
    }

    Ok(Seeded {
        streams: streams.iter().map(|(id, key, ..)| (*id, *key)).collect(),
        user: user.id,
        token,
        expired_token,
        entities,
        groups: BTreeMap::from([("starlight", starlight.id), ("moonlit", moonlit.id)]),
    })
}

async fn stop_signal(exit_on_stdin_eof: bool) {
    let stdin_closed = async {
        if !exit_on_stdin_eof {
            return std::future::pending::<()>().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 256];
        // Anything written is ignored; end of input (or a read error) means stop.
        while let Ok(n) = stdin.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    };
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = terminated => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("stargazer-frontend-fixture: {message}");
            std::process::exit(2);
        }
    };
    stargazer_core::telemetry::init_tracing(stargazer_core::config::LogFormat::Text, "warn");

    let config = ApiConfig {
        listen: options.listen,
        frontend_dir: options.static_dir.clone(),
        cors_origins: options.cors_origins.clone(),
        // Cheap hashes: the fixture has no service accounts worth protecting.
        pbkdf2_iterations: 1000,
        ..ApiConfig::default()
    };
    let storage: Arc<dyn Storage> = stargazer_core::storage::connect("sqlite::memory:").await?;
    let seeded = seed(storage.as_ref(), &config).await?;

    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let listeners = stargazer_api::Listeners {
        public: listener,
        internal: None,
    };
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let registry = prometheus::Registry::new();
            stargazer_api::serve(config, listeners, storage, &registry, shutdown).await
        }
    });

    let ready = serde_json::json!({
        "url": format!("http://{addr}"),
        "port": addr.port(),
        "token": seeded.token,
        "expired_token": seeded.expired_token,
        "user": seeded.user,
        "entities": seeded.entities,
        "groups": seeded.groups,
        "streams": seeded.streams,
    });
    println!("{ready}");

    let mut server = server;
    tokio::select! {
        _ = stop_signal(options.exit_on_stdin_eof) => {
            shutdown.cancel();
            server.await??;
            Ok(())
        }
        finished = &mut server => {
            finished??;
            Err("the api stopped on its own".into())
        }
    }
}
