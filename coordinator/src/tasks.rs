//! Feeds the engine the task set: a full list, then every change from
//! `Storage::watch_tasks`. When the stream reports a lag or ends, the watch is reopened
//! (with backoff) and the list read again, and the engine diffs that list against what it
//! has, so a missed change costs a resynchronisation, never a reshuffle.

use std::sync::Arc;

use futures::StreamExt;
use stargazer_core::backoff::Backoff;
use stargazer_core::model::{Task, TaskChange};
use stargazer_core::storage::EntityStore;
use stargazer_core::wait::backoff_unless_cancelled;
use stargazer_core::CancellationToken;
use tokio::sync::mpsc;

/// What the watcher tells the engine.
#[derive(Debug)]
pub(crate) enum TaskFeed {
    /// The complete task set as of now.
    Resync(Vec<Task>),
    /// One change after the last list.
    Change(TaskChange),
}

/// Runs until `shutdown` (or until the engine is gone).
pub(crate) async fn watch(
    storage: Arc<dyn EntityStore>,
    feed: mpsc::Sender<TaskFeed>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        // Open the stream before listing so that nothing between the two is missed;
        // a change seen in both is applied twice, which is harmless.
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            opened = storage.watch_tasks() => opened,
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot watch tasks; retrying");
                if backoff_unless_cancelled(&mut backoff, &shutdown)
                    .await
                    .is_cancelled()
                {
                    return;
                }
                continue;
            }
        };
        let listed = tokio::select! {
            _ = shutdown.cancelled() => return,
            listed = storage.list_tasks(None) => listed,
        };
        match listed {
            Ok(tasks) => {
                tracing::debug!(tasks = tasks.len(), "task list loaded");
                if feed.send(TaskFeed::Resync(tasks)).await.is_err() {
                    return;
                }
                backoff.reset();
            }
            Err(err) => {
                tracing::warn!(cause = %err, "cannot list tasks; retrying");
                if backoff_unless_cancelled(&mut backoff, &shutdown)
                    .await
                    .is_cancelled()
                {
                    return;
                }
                continue;
            }
        }
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(change)) => {
                    if feed.send(TaskFeed::Change(change)).await.is_err() {
                        return;
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(cause = %err, "task change stream broke; resynchronising");
                    break;
                }
                None => {
                    tracing::warn!("task change stream ended; reopening");
                    break;
                }
            }
        }
        if backoff_unless_cancelled(&mut backoff, &shutdown)
            .await
            .is_cancelled()
        {
            return;
        }
    }
}
