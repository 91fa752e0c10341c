//! A running service: either on a tokio runtime of its own, standing in for a separate
//! process, or a real `stargazer <role>` OS process.
//!
//! [`Process::stop`] is the graceful path (SIGTERM: the shutdown token is cancelled, or
//! the signal sent, and the service's `run` returns after finishing in-flight work).
//! [`Process::kill`] is the crash path (SIGKILL). For a runtime, it is shut down in the
//! background, which drops every task of the service at its next await point —
//! connections close without a goodbye, unacked deliveries go back to their queues,
//! nothing is flushed, nothing is acknowledged. For an OS process, the kernel does it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How long a graceful stop may take before it counts as a failure.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How a service runs.
enum Runner {
    /// On a runtime of its own inside the test process.
    Runtime {
        token: CancellationToken,
        runtime: Option<Runtime>,
        task: Option<JoinHandle<Result<(), String>>>,
    },
    /// As an OS process; its output goes to `log`.
    Os { child: Child, log: PathBuf },
}

/// A running service.
pub struct Process {
    name: String,
    runner: Runner,
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
            runner: Runner::Runtime {
                token,
                runtime: Some(runtime),
                task: Some(task),
            },
        })
    }

    /// Runs `binary --config <config> <args…>` as an OS process, its standard output and
    /// error appended to `log`. The child inherits no `STARGAZER_…` variable, so the
    /// configuration file alone decides what it does.
    pub fn spawn(
        name: &str,
        binary: &Path,
        config: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STARGAZER_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn()?;
        Ok(Self {
            name: name.to_owned(),
            runner: Runner::Os {
                child,
                log: log.to_owned(),
            },
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id, for a service running as a process.
    pub fn pid(&self) -> Option<u32> {
        match &self.runner {
            Runner::Os { child, .. } => Some(child.id()),
            Runner::Runtime { .. } => None,
        }
    }

    /// The file an OS process writes its output to.
    pub fn log(&self) -> Option<&Path> {
        match &self.runner {
            Runner::Os { log, .. } => Some(log),
            Runner::Runtime { .. } => None,
        }
    }

    /// Whether the service's `run` has returned (or panicked), or the process exited.
    pub fn is_finished(&mut self) -> bool {
        match &mut self.runner {
            Runner::Runtime { task, .. } => task.as_ref().is_none_or(JoinHandle::is_finished),
            Runner::Os { child, .. } => !matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Asks the service to stop (cancels its shutdown token, or sends SIGTERM) and waits
    /// for it to finish; its error, a panic, a non-zero exit or a stop slower than 30 s
    /// is an `Err`.
    pub async fn stop(mut self) -> Result<()> {
        let outcome = match &mut self.runner {
            Runner::Runtime {
                token,
                runtime,
                task,
            } => {
                token.cancel();
                let outcome = match task.take() {
                    Some(task) => match tokio::time::timeout(STOP_TIMEOUT, task).await {
                        Ok(Ok(Ok(()))) => Ok(()),
                        Ok(Ok(Err(reason))) => Err(reason),
                        Ok(Err(join)) => Err(format!("panicked: {join}")),
                        Err(_) => Err(format!("did not stop within {STOP_TIMEOUT:?}")),
                    },
                    None => Ok(()),
                };
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
                outcome
            }
            Runner::Os { child, .. } => stop_child(child).await,
        };
        outcome.map_err(|reason| Error::Service {
            service: self.name.clone(),
            reason,
        })
    }

    /// Kills the service as SIGKILL kills a process: no shutdown signal, every task
    /// dropped, every socket closed.
    pub fn kill(mut self) {
        match &mut self.runner {
            Runner::Runtime { task, runtime, .. } => {
                task.take();
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
            }
            Runner::Os { child, .. } => {
                // SIGKILL; an error means it had exited already.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// SIGTERM, then waits for the exit status; a process still running after
/// [`STOP_TIMEOUT`] is killed and reported.
async fn stop_child(child: &mut Child) -> Result<(), String> {
    if matches!(child.try_wait(), Ok(None)) {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map_err(|e| format!("sending SIGTERM: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM exited with {status}"));
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if tokio::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not stop within {STOP_TIMEOUT:?}"));
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::Runtime { token, runtime, .. } => {
                if let Some(runtime) = runtime.take() {
                    token.cancel();
                    runtime.shutdown_background();
                }
            }
            Runner::Os { child, .. } => {
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}
