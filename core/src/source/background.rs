//! The background tasks of a source's runner (housekeeping, batchers), joined at shutdown.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::sync::lock;

/// Tasks spawned for the life of a runner, ended by its shutdown token and waited for by
/// [`Background::join`]. Cheap to clone: clones share the tasks.
///
/// The handles sit behind a lock so a runner (itself cheap to clone and shared with the
/// worker runtime) can join them through `&self`, whichever clone is asked first.
#[derive(Clone, Default)]
pub struct Background {
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("tasks", &lock(&self.tasks).len())
            .finish()
    }
}

impl Background {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task`; it must end on its own once the runner's shutdown token is
    /// cancelled, as [`Background::join`] waits for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        lock(&self.tasks).push(tokio::spawn(task));
    }

    /// Waits for every task spawned so far to end; call after cancelling the shutdown
    /// token. A task that panicked counts as ended: shutdown carries on.
    pub async fn join(&self) {
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn join_waits_for_every_task_to_end() {
        let background = Background::new();
        let shutdown = CancellationToken::new();
        let ended = Arc::new(AtomicBool::new(false));
        let (token, flag) = (shutdown.clone(), ended.clone());
        background.clone().spawn(async move {
            token.cancelled().await;
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
        });
        background.spawn(async { panic!("a failed task does not stop the join") });
        shutdown.cancel();
        background.join().await;
        assert!(ended.load(Ordering::SeqCst));
        // Joined tasks are gone; a second join returns at once.
        background.join().await;
    }
}
