//! Group commit of the delivery log: send jobs hand their records to one writer task,
//! which stores everything that arrived while its previous write was in flight with a
//! single [`DeliveryStore::record_deliveries`](stargazer_core::storage::DeliveryStore::record_deliveries) call.
//!
//! A database write costs about the same for one record as for dozens, and a chat sends
//! its next message only when the previous job is over. So a job that has sent its
//! message does not wait for the write: it hands the record over together with its
//! outcome ([`Recorder::finish_after_recording`]) and frees the chat. The outcome reaches
//! the event's tracker only once the write that carried the record succeeded, so an event
//! is still acked only after every recipient is in the log, exactly as before. A failed
//! write is retried with backoff until it succeeds or `stop` is cancelled; a record given
//! up then leaves its job unfinished and the event requeued, like a job dropped at
//! shutdown in the middle of recording.
//!
//! When idle a record is written at once (nothing waits for a batch to fill). The writer
//! ends when the last [`Recorder`] handle is dropped and the queue is empty, so it
//! outlives every job that could still hand it something.

use std::sync::Arc;

use stargazer_core::backoff::Backoff;
use stargazer_core::model::DeliveryRecord;
use stargazer_core::storage::DeliveryStore;
use stargazer_core::wait::sleep_unless_cancelled;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::Outcome;

/// Requests stored by one write at most (each carries one or two records).
const MAX_BATCH: usize = 256;

/// Requests waiting for the writer before senders wait for room.
const QUEUE: usize = 1024;

/// Who learns that a request's records are stored.
enum Waiter {
    /// A caller awaiting the result of one write (it retries on its own).
    Caller(oneshot::Sender<Result<(), String>>),
    /// A finished job: its outcome is announced once the records are stored; the writer
    /// retries failed writes for it.
    Job {
        done: oneshot::Sender<Outcome>,
        outcome: Outcome,
    },
}

/// Records to store and who to tell.
struct Request {
    records: Vec<DeliveryRecord>,
    waiter: Waiter,
}

/// Hands records to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    requests: mpsc::Sender<Request>,
}

/// The writer is gone (it only stops once every handle is dropped, so this means it
/// panicked).
const WRITER_GONE: &str = "the delivery log writer has stopped";

impl Recorder {
    /// A recorder writing to `storage`, and the writer task to spawn. The writer stops
    /// retrying failed writes once `stop` is cancelled, and returns once every handle is
    /// dropped and the queue is empty.
    pub fn start(
        storage: Arc<dyn DeliveryStore>,
        stop: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (requests, queue) = mpsc::channel(QUEUE);
        (Self { requests }, write_batches(storage, queue, stop))
    }

    /// Stores `record` (an already recorded key counts as stored); `Err` with the cause
    /// if the write failed, in which case recording it again is safe.
    pub async fn record(&self, record: DeliveryRecord) -> Result<(), String> {
        let (stored, outcome) = oneshot::channel();
        let request = Request {
            records: vec![record],
            waiter: Waiter::Caller(stored),
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| WRITER_GONE.to_owned())?;
        outcome.await.map_err(|_| WRITER_GONE.to_owned())?
    }

    /// Takes over a finished job: stores `records`, then sends `outcome` on `done`. If
    /// the records are never stored, `done` is dropped unanswered.
    pub async fn finish_after_recording(
        &self,
        records: Vec<DeliveryRecord>,
        done: oneshot::Sender<Outcome>,
        outcome: Outcome,
    ) {
        let request = Request {
            records,
            waiter: Waiter::Job { done, outcome },
        };
        if self.requests.send(request).await.is_err() {
            tracing::error!("{WRITER_GONE}; the job stays unfinished");
        }
    }
}

/// The writer: takes whatever is queued (up to [`MAX_BATCH`] requests), writes it in one
/// call and answers every request of the batch; keeps jobs' requests of a failed write
/// for the next try.
async fn write_batches(
    storage: Arc<dyn DeliveryStore>,
    mut queue: mpsc::Receiver<Request>,
    stop: CancellationToken,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut backoff = Backoff::default();
    loop {
        if batch.is_empty() {
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            // A retry also carries whatever arrived meanwhile, without waiting for more.
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        let records: Vec<DeliveryRecord> = batch
            .iter()
            .flat_map(|r| r.records.iter().cloned())
            .collect();
        match storage.record_deliveries(&records).await {
            Ok(_) => {
                backoff.reset();
                tracing::debug!(records = records.len(), "delivery log batch written");
                for request in batch.drain(..) {
                    // A tracker or caller gone meanwhile (shutdown) needs no answer.
                    match request.waiter {
                        Waiter::Caller(stored) => {
                            let _ = stored.send(Ok(()));
                        }
                        Waiter::Job { done, outcome } => {
                            let _ = done.send(outcome);
                        }
                    }
                }
            }
            Err(err) => {
                let cause = err.to_string();
                let mut kept = Vec::with_capacity(batch.len());
                for request in batch.drain(..) {
                    match request.waiter {
                        Waiter::Caller(stored) => {
                            let _ = stored.send(Err(cause.clone()));
                        }
                        job @ Waiter::Job { .. } => kept.push(Request {
                            records: request.records,
                            waiter: job,
                        }),
                    }
                }
                if kept.is_empty() {
                    continue;
                }
                if stop.is_cancelled() {
                    // Their jobs stay unfinished: the events are requeued and the next
                    // consumer finds these recipients not in the log.
                    tracing::warn!(%cause, records = records.len(), "delivery log unavailable at shutdown; giving up on these records");
                    continue;
                }
                batch = kept;
                let wait = backoff.next_delay();
                tracing::warn!(%cause, retry_in_ms = wait.as_millis() as u64, "could not record deliveries; will retry");
                // A stop only cuts the wait short: the batch gets one last try, and is
                // given up above if that fails too.
                let _ = sleep_unless_cancelled(wait, &stop).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::Utc;
    use stargazer_testkit::faulty::FaultyStorage;
    use uuid::Uuid;

    fn record(event: Uuid, chat: &str) -> DeliveryRecord {
        DeliveryRecord {
            event,
            im: "telegram".into(),
            chat_id: chat.into(),
            status: "sent".into(),
            at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn concurrent_records_are_all_stored_and_the_writer_ends_with_its_handles() {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let (recorder, writer) = Recorder::start(storage.clone(), CancellationToken::new());
        let writer = tokio::spawn(writer);
        let event = Uuid::new_v4();
        let chats: Vec<String> = (0..600).map(|n| n.to_string()).collect();
        let writes = chats.iter().map(|chat| {
            let recorder = recorder.clone();
            let record = record(event, chat);
            async move { recorder.record(record).await }
        });
        for outcome in futures::future::join_all(writes).await {
            outcome.unwrap();
        }
        // Recording an existing key again is as good as recording it.
        recorder.record(record(event, "7")).await.unwrap();
        assert_eq!(
            storage
                .delivered_chats(event, "telegram", &chats)
                .await
                .unwrap()
                .len(),
            chats.len()
        );
        drop(recorder);
        tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer ends once every handle is gone")
            .unwrap();
    }

    #[tokio::test]
    async fn a_job_outcome_arrives_only_once_its_records_are_stored() {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let (recorder, writer) = Recorder::start(storage.clone(), CancellationToken::new());
        let writer = tokio::spawn(writer);
        let event = Uuid::new_v4();
        let (done, outcome) = oneshot::channel();
        recorder
            .finish_after_recording(
                vec![record(event, "1"), record(event, "2")],
                done,
                Outcome::Sent,
            )
            .await;
        // The handle may go: the writer still finishes what it was given.
        drop(recorder);
        assert_eq!(outcome.await.unwrap(), Outcome::Sent);
        let asked = ["1".to_owned(), "2".to_owned(), "3".to_owned()];
        let logged = storage
            .delivered_chats(event, "telegram", &asked)
            .await
            .unwrap();
        assert_eq!(logged.len(), 2);
        assert!(!logged.contains("3"));
        writer.await.unwrap();
    }

    /// Storage whose first `failures` delivery-log writes fail.
    async fn flaky(failures: u32) -> Arc<dyn stargazer_core::storage::Storage> {
        use std::sync::atomic::{AtomicU32, Ordering};
        let inner = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let left = AtomicU32::new(failures);
        Arc::new(FaultyStorage::new(inner, move |method| {
            method == "record_deliveries"
                && left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_reach_callers_and_are_retried_for_jobs() {
        let storage = flaky(2).await;
        let (recorder, writer) = Recorder::start(storage.clone(), CancellationToken::new());
        let writer = tokio::spawn(writer);
        let event = Uuid::new_v4();
        // A caller hears of the failure and decides itself.
        assert!(recorder.record(record(event, "1")).await.is_err());
        // A job's outcome waits through the next failure and the retry.
        let (done, outcome) = oneshot::channel();
        recorder
            .finish_after_recording(vec![record(event, "2")], done, Outcome::Sent)
            .await;
        assert_eq!(outcome.await.unwrap(), Outcome::Sent);
        assert_eq!(
            storage
                .get_delivery(event, "telegram", "2")
                .await
                .unwrap()
                .map(|r| r.chat_id),
            Some("2".to_owned())
        );
        assert_eq!(
            storage.get_delivery(event, "telegram", "1").await.unwrap(),
            None
        );
        drop(recorder);
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_failing_at_shutdown_leaves_the_job_unfinished() {
        let storage = flaky(u32::MAX).await;
        let stop = CancellationToken::new();
        let (recorder, writer) = Recorder::start(storage, stop.clone());
        let writer = tokio::spawn(writer);
        let (done, outcome) = oneshot::channel();
        recorder
            .finish_after_recording(vec![record(Uuid::new_v4(), "1")], done, Outcome::Sent)
            .await;
        stop.cancel();
        assert!(outcome.await.is_err(), "the outcome is never reported");
        drop(recorder);
        writer.await.unwrap();
    }
}
