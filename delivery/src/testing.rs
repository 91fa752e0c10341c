//! Test support for the bots' delivery tests (feature `testing`): the real api over a
//! storage, with a bot credential; a broker queue of one test's own; chats registered
//! and subscribed straight in storage.

use std::sync::Arc;

use chrono::Utc;
use prometheus::Registry;
use stargazer_api::{ApiConfig, Listeners};
use stargazer_core::bus::{Bus, QueueSpec};
use stargazer_core::model::{Access, Credential, Permissions, Subscription, User, UserSettings};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use uuid::Uuid;

/// The broker every bus test uses.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Password of the bot credential [`serve_api`] creates.
pub const BOT_PASSWORD: &str = "bot-secret";

/// Serves the real api over `storage` on a free port until `stop` (cheap hashes, no read
/// cache), with an api-rw credential `username` / [`BOT_PASSWORD`]; answers its URL.
pub async fn serve_api(
    storage: &Arc<dyn Storage>,
    username: &str,
    stop: &CancellationToken,
) -> String {
    let hash = stargazer_core::auth::hash_password(BOT_PASSWORD, 1_000).expect("hash");
    storage
        .insert_credential(&Credential {
            username: username.into(),
            hash,
            permissions: Permissions {
                api: Some(Access::Rw),
                mq: Some(Access::Ro),
                ..Default::default()
            },
            queues: Vec::new(),
        })
        .await
        .expect("bot credential");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    let config = ApiConfig {
        pbkdf2_iterations: 1_000,
        read_cache_ms: 0,
        ..Default::default()
    };
    let listeners = Listeners {
        public: listener,
        internal: None,
    };
    let (storage, stop) = (storage.clone(), stop.clone());
    tokio::spawn(async move {
        if let Err(err) =
            stargazer_api::serve(config, listeners, storage, &Registry::new(), stop).await
        {
            panic!("api failed: {err}");
        }
    });
    url
}

/// Registers chat `chat_id` of `im` reading `language` and subscribes it to every kind
/// of `entity`; answers the user id.
pub async fn subscribed_chat(
    storage: &Arc<dyn Storage>,
    im: &str,
    chat_id: &str,
    language: &str,
    entity: Uuid,
) -> Uuid {
    let user = User {
        id: Uuid::new_v4(),
        im: im.into(),
        im_chat_id: chat_id.into(),
        name: format!("chat {chat_id}"),
        language: language.into(),
        settings: UserSettings::default(),
        created_at: Utc::now(),
    };
    storage.insert_user(&user).await.expect("insert user");
    storage
        .put_subscription(&Subscription {
            user: user.id,
            entity,
            kinds: vec![],
        })
        .await
        .expect("insert subscription");
    user.id
}

/// A broker queue bound to `*` that no other test uses; deleted when dropped.
pub struct TestQueue {
    /// The queue name.
    pub name: String,
}

impl TestQueue {
    /// Declares a fresh queue for `bot`, so that events published from now on wait for
    /// it even before it consumes.
    pub async fn declare(bus: &Arc<dyn Bus>, bot: &str) -> Self {
        let name = format!("stargazer.test.{bot}.{}", Uuid::new_v4());
        bus.declare(&QueueSpec::new(
            name.clone(),
            stargazer_core::routing::READY_PATTERN,
            8,
        ))
        .await
        .expect("declare test queue");
        Self { name }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await: delete on a thread with its own runtime.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let connection =
                    lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                        .await?;
                let channel = connection.create_channel().await?;
                channel
                    .queue_delete(&name, lapin::options::QueueDeleteOptions::default())
                    .await?;
                connection.close(200, "bye").await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete test queue {}", self.name);
        }
    }
}

/// Waits until `condition` holds, polling every 50 ms; panics with `what` after
/// `timeout`.
pub async fn eventually(
    what: &str,
    timeout: std::time::Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Publishes `event` with its ready routing key.
pub async fn publish(bus: &Arc<dyn Bus>, event: &stargazer_core::model::Event) {
    bus.publish(event.source(), &event.to_bytes())
        .await
        .expect("publish");
}
