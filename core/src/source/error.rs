//! [`SourceError`], the one error type of every source worker.

use uuid::Uuid;

use crate::storage::StorageError;
use crate::worker_runtime::WorkerRuntimeError;

/// Errors of a source worker.
///
/// One enum for every source, because the ways a source worker fails outside its protocol
/// are the same everywhere, and a protocol error never leaves its job (the job logs it and
/// backs off).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A configuration value is unusable (the message names the key).
    #[error("bad configuration: {0}")]
    Config(String),
    /// A task the worker cannot run.
    #[error("task {task}: {reason}")]
    InvalidTask {
        /// The task id.
        task: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The source's callback server (YouTube's WebSub endpoint) could not bind or serve.
    #[error("callback server: {0}")]
    Io(#[from] std::io::Error),
    /// The coordinator connection is misconfigured.
    #[error(transparent)]
    Runtime(#[from] WorkerRuntimeError),
    /// The worker is shutting down.
    #[error("worker is shutting down")]
    ShuttingDown,
}

impl From<crate::config::ConfigError> for SourceError {
    fn from(err: crate::config::ConfigError) -> Self {
        Self::Config(err.to_string())
    }
}
