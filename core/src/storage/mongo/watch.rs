//! MongoDB: the task change stream, reopened from its resume token after errors.

use super::*;

pub(super) async fn open_task_stream(
    tasks: &Collection<Document>,
    token: Option<ResumeToken>,
) -> Result<TaskStream> {
    // `updateLookup` gives updates made outside this code (an operator's `$set`) their
    // whole document; inserts and replaces carry it anyway.
    let mut action = tasks.watch().full_document(FullDocumentType::UpdateLookup);
    if let Some(token) = token {
        action = action.start_after(token);
    }
    action
        .await
        .map_err(|e| db_err("opening the task change stream", e))
}

pub(super) struct WatchState {
    pub(super) tasks: Collection<Document>,
    pub(super) stream: Option<TaskStream>,
    pub(super) closed: CancellationToken,
    /// Where to resume after an interruption.
    pub(super) token: Option<ResumeToken>,
    /// Why the stream broke, reported once it is open again so the reader resynchronises
    /// against a stream that already sees new changes.
    pub(super) interrupted: Option<StorageError>,
    pub(super) backoff: Backoff,
}

pub(super) async fn next_task_change(
    mut st: WatchState,
) -> Option<(Result<TaskChange>, WatchState)> {
    loop {
        let Some(stream) = st.stream.as_mut() else {
            let reopened = tokio::select! {
                _ = st.closed.cancelled() => return None,
                r = reopen(&st.tasks, st.token.take()) => r,
            };
            match reopened {
                Ok(stream) => {
                    st.backoff.reset();
                    st.stream = Some(stream);
                    if let Some(error) = st.interrupted.take() {
                        return Some((Err(error), st));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reopen the task change stream");
                    let delay = st.backoff.next_delay();
                    if crate::wait::sleep_unless_cancelled(delay, &st.closed)
                        .await
                        .is_cancelled()
                    {
                        return None;
                    }
                }
            }
            continue;
        };
        let item = tokio::select! {
            _ = st.closed.cancelled() => return None,
            item = stream.next() => item,
        };
        match item {
            Some(Ok(event)) => match event.operation_type {
                OperationType::Insert | OperationType::Update | OperationType::Replace => {
                    // No document on an update means it was deleted since; its delete
                    // event follows.
                    if let Some(d) = event.full_document {
                        return Some((decode_task(&d).map(TaskChange::Upserted), st));
                    }
                }
                OperationType::Delete => {
                    let id = event
                        .document_key
                        .as_ref()
                        .ok_or_else(|| {
                            StorageError::Corrupt("task delete event without a key".to_owned())
                        })
                        .and_then(|key| get_uuid(key, "_id", "deleted task"));
                    return Some((id.map(TaskChange::Deleted), st));
                }
                OperationType::Invalidate => {
                    // The collection was dropped or renamed; the stream is over. Start a
                    // fresh one and tell the reader to reload.
                    st.stream = None;
                    st.token = None;
                    st.interrupted = Some(StorageError::Backend(
                        "the tasks collection was dropped or renamed; reload the tasks".into(),
                    ));
                }
                // Drops and renames are followed by an invalidate.
                _ => {}
            },
            Some(Err(e)) => {
                // The driver already retried once for resumable errors.
                tracing::warn!(error = %e, "task change stream failed");
                st.token = stream.resume_token();
                st.stream = None;
                st.interrupted = Some(db_err(
                    "task change stream interrupted; reload the tasks",
                    e,
                ));
            }
            None => {
                st.stream = None;
                st.interrupted.get_or_insert_with(|| {
                    StorageError::Backend("task change stream ended; reload the tasks".into())
                });
            }
        }
    }
}

/// Reopens after the resume token when there is one, else from now.
pub(super) async fn reopen(
    tasks: &Collection<Document>,
    token: Option<ResumeToken>,
) -> Result<TaskStream> {
    if token.is_some() {
        match open_task_stream(tasks, token).await {
            Ok(stream) => return Ok(stream),
            // The token may be too old for the oplog; the reader reloads anyway.
            Err(e) => tracing::warn!(error = %e, "cannot resume the task change stream"),
        }
    }
    open_task_stream(tasks, None).await
}

// -------------------------------------------------------------------- errors
