//! `/healthz`, `/readyz` and `/metrics` for roles that serve no HTTP of their own, on the
//! top-level `metrics_listen` address, so every role can be scraped and health-checked.
//! The server starts before the role's backends are open, so `/readyz` says "connecting"
//! while the role waits for them.

use prometheus::Registry;
use stargazer_core::readiness::Readiness;
use stargazer_core::CancellationToken;
use tokio::task::JoinHandle;

use crate::backends::{bind, parse_addr};
use crate::Result;

/// A running metrics server, stopped by the shutdown token it was started with.
pub struct MetricsServer {
    task: Option<JoinHandle<()>>,
    addr: Option<std::net::SocketAddr>,
}

impl MetricsServer {
    /// Serves `registry` and `readiness` on `listen` (when set) until `shutdown`.
    pub async fn start(
        listen: Option<&str>,
        registry: &Registry,
        readiness: &Readiness,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        let Some(listen) = listen else {
            return Ok(Self {
                task: None,
                addr: None,
            });
        };
        let listener = bind(parse_addr(listen, "metrics_listen")?, "metrics_listen").await?;
        let addr = listener.local_addr().ok();
        let app = stargazer_core::telemetry::health_and_metrics_router::<()>(registry.clone())
            .merge(readiness.clone().router());
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(cause = %err, "metrics server failed");
            }
        });
        Ok(Self {
            task: Some(task),
            addr,
        })
    }

    /// The address it listens on (useful with port 0); `None` when not serving.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.addr
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
