//! `/readyz` on the metrics listener of roles without an HTTP server of their own
//! (docs/ARCHITECTURE.md §6): "connecting" while the role waits for its backends, ready
//! once storage answers and the broker connection is up, not ready again when the broker
//! connection is gone; `/healthz` answers 200 throughout.

use serde_json::Value;
use stargazer_core::readiness::Readiness;
use stargazer_core::CancellationToken;
use stargazer_platform::metrics::MetricsServer;
use stargazer_testkit::backends::{BusKind, Env, StoreKind};

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_storage_and_the_broker() {
    let shutdown = CancellationToken::new();
    let registry = prometheus::Registry::new();
    let readiness = Readiness::expecting(true, true);
    let server = MetricsServer::start(Some("127.0.0.1:0"), &registry, &readiness, &shutdown)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());

    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["storage"]["detail"], "connecting");
    assert_eq!(body["checks"]["broker"]["detail"], "connecting");
    assert_eq!(get(&base, "/healthz").await.0, 200);

    let env = Env::new(BusKind::Amqp, StoreKind::Sqlite).await;
    readiness.provide_storage(env.storage.clone());
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["storage"]["ready"], true);
    readiness.provide_bus(env.bus.clone());
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["broker"]["ready"], true);

    // The broker connection goes away: not ready, still alive.
    env.close().await;
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["broker"]["detail"], "not connected");
    assert_eq!(body["checks"]["storage"]["ready"], true);
    assert_eq!(get(&base, "/healthz").await.0, 200);

    shutdown.cancel();
    server.join().await;
}
