//! `/healthz` and `/metrics` for roles that serve no HTTP of their own, on the top-level
//! `metrics_listen` address, so every role can be scraped and health-checked.

use prometheus::Registry;
use stargazer_core::CancellationToken;
use tokio::task::JoinHandle;

use crate::backends::{bind, parse_addr};
use crate::Result;

/// A running metrics server, stopped by the shutdown token it was started with.
pub struct MetricsServer {
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `registry` on `listen` (when set) until `shutdown`.
    pub async fn start(
        listen: Option<&str>,
        registry: &Registry,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        let Some(listen) = listen else {
            return Ok(Self { task: None });
        };
        let listener = bind(parse_addr(listen, "metrics_listen")?, "metrics_listen").await?;
        let app = stargazer_core::telemetry::health_and_metrics_router::<()>(registry.clone());
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(cause = %err, "metrics server failed");
            }
        });
        Ok(Self { task: Some(task) })
    }

    /// Waits for the server to finish after shutdown.
    pub async fn join(self) {
        if let Some(task) = self.task {
            if let Err(err) = task.await {
                tracing::error!(cause = %err, "metrics server task failed");
            }
        }
    }
}
