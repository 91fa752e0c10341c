//! A service running on a tokio runtime of its own, standing in for a separate process.
//!
//! [`Process::stop`] is the graceful path (SIGTERM: the shutdown token is cancelled and the
//! service's `run` returns after finishing in-flight work). [`Process::kill`] is the crash
//! path (SIGKILL): the runtime is shut down in the background, which drops every task of
//! the service at its next await point — connections close without a goodbye, unacked
//! deliveries go back to their queues, nothing is flushed, nothing is acknowledged.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How long a graceful stop may take before it counts as a failure.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running service.
pub struct Process {
    name: String,
    token: CancellationToken,
    runtime: Option<Runtime>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Process {
    /// Runs the future `make(shutdown)` builds on a fresh two-thread runtime. The future
    /// should open its connections itself, so they belong to this "process".
    pub fn start<F, Fut>(name: &str, make: F) -> Result<Self>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("svc-{name}"))
            .enable_all()
            .build()?;
        let token = CancellationToken::new();
        let task = runtime.spawn(make(token.clone()));
        Ok(Self {
            name: name.to_owned(),
            token,
            runtime: Some(runtime),
            task: Some(task),
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the service's `run` has returned (or panicked).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Cancels the shutdown token and waits for `run` to return; its error, a panic or a
    /// stop slower than 30 s is an `Err`.
    pub async fn stop(mut self) -> Result<()> {
        self.token.cancel();
        let outcome = match self.task.take() {
            Some(task) => match tokio::time::timeout(STOP_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(reason))) => Err(reason),
                Ok(Err(join)) => Err(format!("panicked: {join}")),
                Err(_) => Err(format!("did not stop within {STOP_TIMEOUT:?}")),
            },
            None => Ok(()),
        };
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        outcome.map_err(|reason| Error::Service {
            service: self.name.clone(),
            reason,
        })
    }

    /// Kills the service like SIGKILL kills a process: no shutdown signal, every task
    /// dropped, every socket closed.
    pub fn kill(mut self) {
        self.task.take();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            self.token.cancel();
            runtime.shutdown_background();
        }
    }
}
