//! Adding a service is a type implementing `Service` and one row in a service table: this
//! test-only service runs both alone (`run_service`, what `stargazer <role>` does) and
//! inside standalone (`Standalone::start_table`), with nothing else wired by hand.

use std::time::Duration;

use async_trait::async_trait;
use stargazer_core::config::{ConfigError, ConfigSource};
use stargazer_core::service::{Capability, Needs, Service, ServiceContext, ServiceError};
use stargazer_core::CancellationToken;
use stargazer_platform::roles::run_service;
use stargazer_platform::services::{Mode, ServiceRow};
use stargazer_platform::settings::Settings;
use stargazer_platform::standalone::Standalone;

/// Records that it ran (with a bus, as it asked) in the shared storage, then waits for
/// shutdown.
struct Dummy {
    mode: Mode,
}

#[async_trait]
impl Service for Dummy {
    fn name(&self) -> &'static str {
        "dummy"
    }

    fn needs(&self) -> Needs {
        Needs::storage_and_bus(&[Capability::State])
    }

    fn describe(&self) -> String {
        "talks to nobody".to_owned()
    }

    async fn run(self: Box<Self>, cx: ServiceContext) -> Result<(), ServiceError> {
        cx.bus()?;
        // It declared key/value state only: the rest of the storage is out of reach.
        if cx.user_store().is_ok() {
            return Err("granted a capability it did not declare".into());
        }
        let mode = format!("{:?}", self.mode);
        cx.state_store()?
            .kv_put("dummy", "ran", &serde_json::Value::String(mode))
            .await?;
        cx.shutdown.cancelled().await;
        Ok(())
    }
}

fn build(_: &Settings, mode: Mode) -> Result<Box<dyn Service>, ConfigError> {
    Ok(Box::new(Dummy { mode }))
}

/// The whole table: one row.
const TABLE: &[ServiceRow] = &[ServiceRow {
    name: "dummy",
    about: "A service that only proves the wiring.",
    build,
}];

fn settings(sqlite: &str) -> Settings {
    let env = [
        ("STARGAZER_SQLITE_PATH", sqlite),
        ("STARGAZER_API__LISTEN", "127.0.0.1:0"),
        ("STARGAZER_COORDINATOR__LISTEN", "127.0.0.1:0"),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    Settings::from_source(ConfigSource::load_with_env(None, env).unwrap()).unwrap()
}

/// What the service recorded, through a connection of the test's own; `None` until it
/// has, and while the file is busy with the service's own opening (SQLite can answer
/// "database is locked" at once then, whatever the busy timeout): the caller asks again.
async fn ran(storage_url: &str) -> Option<serde_json::Value> {
    let storage = stargazer_core::storage::connect(storage_url).await.ok()?;
    storage.kv_get("dummy", "ran").await.ok().flatten()
}

async fn wait_ran(storage_url: &str) -> serde_json::Value {
    for _ in 0..100 {
        if let Some(value) = ran(storage_url).await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the dummy service never ran");
}

#[tokio::test]
async fn a_one_row_table_runs_alone_and_in_standalone() {
    let dir = std::env::temp_dir().join(format!(
        "stargazer-dummy-{}",
        stargazer_core::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();

    // Alone, as `stargazer dummy` would run it.
    let alone = dir.join("alone.sqlite");
    let settings_alone = settings(alone.to_str().unwrap());
    let url = settings_alone.common.storage_url();
    let shutdown = CancellationToken::new();
    let process = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { run_service(&settings_alone, &TABLE[0], shutdown).await }
    });
    assert_eq!(wait_ran(&url).await, "Role");
    shutdown.cancel();
    process.await.unwrap().unwrap();

    // In standalone, next to nothing else.
    let together = dir.join("standalone.sqlite");
    let settings = settings(together.to_str().unwrap());
    let url = settings.common.storage_url();
    let storage = stargazer_core::storage::connect(&url).await.unwrap();
    let bus = stargazer_core::bus::connect_with("memory://", settings.bus_options())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = Standalone::start_table(settings, storage, bus, &shutdown, TABLE)
        .await
        .unwrap();
    assert!(
        running
            .summary()
            .iter()
            .any(|line| line.service == "dummy" && line.status == "talks to nobody"),
        "{}",
        running.summary_text()
    );
    let stopped = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { running.run(&shutdown).await }
    });
    assert_eq!(wait_ran(&url).await, "Standalone");
    shutdown.cancel();
    stopped.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
