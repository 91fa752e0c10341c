//! [`JobSet`]: the running jobs of a worker, one background job per task, keyed by task
//! id. It owns the bookkeeping every [`super::TaskRunner`] needs: spawning a task's job
//! with its own cancellation tokens, leaving a job alone when the same task is started
//! again, replacing it when the task changed, stopping one task, and ending and joining
//! every job at shutdown.
//!
//! Each job gets a [`JobTokens`] pair:
//! - `abort` (a child of the set's shutdown token): end now, keeping whatever the job holds
//!   outside the process (a lease, a subscription) so a later job can take it over;
//! - `stop`: wind down and release what the job holds, because no job will take it over.
//!
//! Whether `stop` is independent of `abort` is chosen when the set is built
//! ([`JobSet::new`] versus [`JobSet::with_graceful_stop`]).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The cancellation tokens one job watches; see the module docs for what each means.
#[derive(Debug, Clone)]
pub struct JobTokens {
    /// Cancelled when the job should wind down and release what it holds: by
    /// [`JobSet::stop`], [`JobSet::stop_and_wait`], or a start of the same key with a
    /// different spec. In a set built with [`JobSet::new`] it is also cancelled whenever
    /// `abort` is.
    pub stop: CancellationToken,
    /// Cancelled when the job should end at once and keep what it holds: at shutdown (it is
    /// a child of the set's shutdown token), by [`JobSet::abort_all`], or when a start of the
    /// same spec takes over a job that was stopping or had ended.
    pub abort: CancellationToken,
}

/// One running (or stopping) job.
struct Entry<S> {
    spec: S,
    tokens: JobTokens,
    /// Set by [`JobSet::stop`]: the job is winding down and no longer counts as running.
    stopping: bool,
    join: JoinHandle<()>,
}

impl<S> Entry<S> {
    fn is_running(&self) -> bool {
        !self.stopping && !self.join.is_finished()
    }
}

/// The jobs of a worker, keyed by `K` (a task id), each started from a spec `S` (the task)
/// that is compared on every start so that an unchanged task keeps its job.
///
/// Methods take `&self`; share the set behind an `Arc`. The map is behind a std mutex that
/// is never held across an `.await`.
pub struct JobSet<K, S> {
    shutdown: CancellationToken,
    /// `true`: `stop` tokens are independent of `abort`; `false`: `stop` is a child of
    /// `abort`.
    graceful_stop: bool,
    jobs: Mutex<HashMap<K, Entry<S>>>,
}

impl<K, S> std::fmt::Debug for JobSet<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSet")
            .field("jobs", &self.lock().len())
            .field("graceful_stop", &self.graceful_stop)
            .finish_non_exhaustive()
    }
}

impl<K, S> JobSet<K, S> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<S>>> {
        // Held only for map updates, never across an await: a poisoned lock is consistent.
        crate::sync::lock(&self.jobs)
    }
}

impl<K, S> JobSet<K, S>
where
    K: Eq + Hash + Clone + std::fmt::Debug,
    S: PartialEq,
{
    /// An empty set for jobs that end the same way whatever the reason: each job's `stop`
    /// token is a child of its `abort` token, so watching `stop` alone covers shutdown too.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            graceful_stop: false,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// An empty set for jobs that release something on a stop but must keep it on
    /// shutdown: `stop` is never cancelled by shutdown, so such a job watches both tokens.
    pub fn with_graceful_stop(shutdown: CancellationToken) -> Self {
        Self {
            graceful_stop: true,
            ..Self::new(shutdown)
        }
    }

    /// Keys of the jobs that are running: not stopping and not ended, sorted.
    pub fn running(&self) -> Vec<K>
    where
        K: Ord,
    {
        let mut keys: Vec<K> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.is_running())
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Starts the job of `key` from `spec`; `spawn` builds the job's future from its tokens
    /// and the set runs it on the tokio runtime. Returns `false`, without calling `spawn`,
    /// when a job of `key` with an equal spec is already running.
    ///
    /// Any other job held under `key` is ended first and waited for, so two jobs of one
    /// key never run at once: a job with a different spec that is still running is
    /// stopped (what it holds belongs to the old spec); a job that was stopping or had
    /// ended is aborted, so the new job takes over what it holds.
    ///
    /// Refusing starts after shutdown is the caller's job; a job spawned anyway sees its
    /// `abort` token already cancelled.
    pub async fn start<F>(&self, key: K, spec: S, spawn: impl FnOnce(JobTokens) -> F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let previous = {
            let mut jobs = self.lock();
            // Forget jobs that finished stopping, so churn does not grow the map.
            jobs.retain(|held, entry| {
                *held == key || !(entry.stopping && entry.join.is_finished())
            });
            match jobs.get(&key) {
                Some(entry) if entry.is_running() && entry.spec == spec => return false,
                Some(_) => jobs.remove(&key),
                None => None,
            }
        };
        if let Some(old) = previous {
            if old.spec != spec && !old.stopping {
                old.tokens.stop.cancel();
            } else {
                old.tokens.abort.cancel();
            }
            join_job(&key, old.join).await;
        }
        let abort = self.shutdown.child_token();
        let stop = if self.graceful_stop {
            CancellationToken::new()
        } else {
            abort.child_token()
        };
        let tokens = JobTokens { stop, abort };
        let join = tokio::spawn(spawn(tokens.clone()));
        self.lock().insert(
            key,
            Entry {
                spec,
                tokens,
                stopping: false,
                join,
            },
        );
        true
    }

    /// Tells the job of `key` to stop (cancels its `stop` token) and returns at once; the
    /// job stays in the set, no longer running, until [`JobSet::wait_stopped`], a new
    /// start of `key` or [`JobSet::abort_all`]. Returns `false` when nothing is held
    /// under `key` or its job is already stopping.
    pub fn stop(&self, key: &K) -> bool {
        let mut jobs = self.lock();
        match jobs.get_mut(key) {
            Some(entry) if !entry.stopping => {
                entry.stopping = true;
                entry.tokens.stop.cancel();
                true
            }
            _ => false,
        }
    }

    /// Waits until the job of `key`, if it was told to stop, has ended, and forgets it.
    /// Does nothing for a key that is running or not held.
    pub async fn wait_stopped(&self, key: &K) {
        let stopped = {
            let mut jobs = self.lock();
            match jobs.get(key) {
                Some(entry) if entry.stopping => jobs.remove(key),
                _ => None,
            }
        };
        if let Some(entry) = stopped {
            join_job(key, entry.join).await;
        }
    }

    /// Removes the job of `key`, cancels its `stop` token and waits for it to end.
    /// Returns `false` when no job was held under `key`.
    pub async fn stop_and_wait(&self, key: &K) -> bool {
        let removed = self.lock().remove(key);
        match removed {
            Some(entry) => {
                entry.tokens.stop.cancel();
                join_job(key, entry.join).await;
                true
            }
            None => false,
        }
    }

    /// The shutdown path: aborts every job (as cancelling the shutdown token does), then
    /// waits for each to end and empties the set.
    pub async fn abort_all(&self) {
        let jobs: Vec<(K, Entry<S>)> = self.lock().drain().collect();
        for (_, entry) in &jobs {
            entry.tokens.abort.cancel();
        }
        for (key, entry) in jobs {
            join_job(&key, entry.join).await;
        }
    }
}

/// Waits for one job; a job that panicked is logged, since nobody else will see it.
async fn join_job<K: std::fmt::Debug>(key: &K, join: JoinHandle<()>) {
    if let Err(err) = join.await {
        if err.is_panic() {
            tracing::error!(job = ?key, "job panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::wait::{sleep_unless_cancelled, Waited};

    /// What a test job reports when it ends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ended {
        Stopped,
        Aborted,
    }

    /// A job that records how it ended on `ended`, after an optional wind-down delay.
    async fn job(id: u32, tokens: JobTokens, wind_down: Duration, ended: Reports) {
        let how = tokio::select! {
            biased;
            _ = tokens.abort.cancelled() => Ended::Aborted,
            _ = tokens.stop.cancelled() => Ended::Stopped,
        };
        tokio::time::sleep(wind_down).await;
        let _ = ended.send((id, how));
    }

    type Reports = mpsc::UnboundedSender<(u32, Ended)>;

    fn setup(graceful: bool) -> (Arc<JobSet<u32, &'static str>>, CancellationToken) {
        let shutdown = CancellationToken::new();
        let set = if graceful {
            JobSet::with_graceful_stop(shutdown.clone())
        } else {
            JobSet::new(shutdown.clone())
        };
        (Arc::new(set), shutdown)
    }

    #[tokio::test]
    async fn start_runs_a_job_once_per_unchanged_spec() {
        let (set, _shutdown) = setup(false);
        let (tx, mut ended) = mpsc::unbounded_channel();
        let spawned = Arc::new(std::sync::atomic::AtomicU32::new(0));
        for attempt in 0..3 {
            let count = spawned.clone();
            let tx = tx.clone();
            let started = set
                .start(1, "a", move |tokens| {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    job(1, tokens, Duration::ZERO, tx)
                })
                .await;
            assert_eq!(started, attempt == 0);
        }
        assert_eq!(spawned.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(set.running(), [1]);
        assert!(ended.try_recv().is_err(), "the running job was not touched");
    }

    #[tokio::test]
    async fn stop_and_wait_ends_the_job_before_returning() {
        let (set, _shutdown) = setup(false);
        let (tx, mut ended) = mpsc::unbounded_channel();
        assert!(
            set.start(1, "a", |t| job(1, t, Duration::from_millis(20), tx.clone()))
                .await
        );
        assert!(
            set.start(2, "b", |t| job(2, t, Duration::ZERO, tx.clone()))
                .await
        );

        assert!(set.stop_and_wait(&1).await);
        assert_eq!(ended.try_recv().unwrap(), (1, Ended::Stopped));
        assert_eq!(set.running(), [2]);
        assert!(!set.stop_and_wait(&1).await, "an unknown key is not held");
        assert!(ended.try_recv().is_err(), "the other job keeps running");
    }

    #[tokio::test]
    async fn stop_marks_the_job_stopping_and_wait_stopped_joins_it() {
        let (set, _shutdown) = setup(true);
        let (tx, mut ended) = mpsc::unbounded_channel();
        set.start(1, "a", |t| job(1, t, Duration::from_millis(20), tx.clone()))
            .await;

        assert!(set.stop(&1));
        assert!(!set.stop(&1), "a second stop is a no-op");
        assert!(set.running().is_empty(), "a stopping job is not running");
        assert!(ended.try_recv().is_err(), "stop does not wait");
        set.wait_stopped(&1).await;
        assert_eq!(ended.try_recv().unwrap(), (1, Ended::Stopped));
        assert!(!set.stop(&1), "the job was forgotten");
    }

    #[tokio::test]
    async fn restart_with_a_new_spec_stops_the_old_job_first() {
        restart_with_a_new_spec(true).await;
        restart_with_a_new_spec(false).await;
    }

    async fn restart_with_a_new_spec(graceful: bool) {
        let (set, _shutdown) = setup(graceful);
        let (tx, mut ended) = mpsc::unbounded_channel();
        set.start(1, "a", |t| {
            job(10, t, Duration::from_millis(20), tx.clone())
        })
        .await;
        assert!(
            set.start(1, "b", |t| job(11, t, Duration::ZERO, tx.clone()))
                .await
        );
        // The old job had ended (and been stopped, not aborted) before the new one started.
        assert_eq!(ended.try_recv().unwrap(), (10, Ended::Stopped));
        assert_eq!(set.running(), [1]);
        assert!(
            !set.start(1, "b", |t| job(12, t, Duration::ZERO, tx.clone()))
                .await
        );
    }

    #[tokio::test]
    async fn restart_of_a_stopping_job_aborts_it_and_takes_over() {
        let (set, _shutdown) = setup(true);
        let (tx, mut ended) = mpsc::unbounded_channel();
        // The job winds down slowly after a stop, so the restart finds it stopping.
        let slow = |t: JobTokens, tx: Reports| async move {
            tokio::select! {
                _ = t.abort.cancelled() => { let _ = tx.send((20, Ended::Aborted)); return; }
                _ = t.stop.cancelled() => {}
            }
            let how = match sleep_unless_cancelled(Duration::from_secs(30), &t.abort).await {
                Waited::Cancelled => Ended::Aborted,
                Waited::Elapsed => Ended::Stopped,
            };
            let _ = tx.send((20, how));
        };
        set.start(1, "a", |t| slow(t, tx.clone())).await;
        assert!(set.stop(&1));
        tokio::time::timeout(
            Duration::from_secs(5),
            set.start(1, "a", |t| job(21, t, Duration::ZERO, tx.clone())),
        )
        .await
        .expect("the stopping job was aborted, not waited out");
        assert_eq!(ended.try_recv().unwrap(), (20, Ended::Aborted));
        assert_eq!(set.running(), [1]);
    }

    #[tokio::test]
    async fn a_restart_after_the_job_ended_spawns_a_new_one() {
        let (set, _shutdown) = setup(false);
        let (tx, mut ended) = mpsc::unbounded_channel();
        // A job that ends on its own, with its task still assigned.
        set.start(1, "a", |_| async {}).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while !set.running().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the job ends by itself");
        assert!(
            set.start(1, "a", |t| job(31, t, Duration::ZERO, tx.clone()))
                .await
        );
        assert_eq!(set.running(), [1]);
        assert!(ended.try_recv().is_err());
    }

    #[tokio::test]
    async fn shutdown_aborts_but_does_not_stop_graceful_jobs() {
        let (set, shutdown) = setup(true);
        let (tx, mut ended) = mpsc::unbounded_channel();
        set.start(1, "a", |t| job(1, t, Duration::ZERO, tx.clone()))
            .await;
        let tokens = {
            let jobs = set.lock();
            jobs[&1].tokens.clone()
        };
        shutdown.cancel();
        assert!(tokens.abort.is_cancelled());
        assert!(
            !tokens.stop.is_cancelled(),
            "shutdown keeps what the job holds"
        );
        set.abort_all().await;
        assert_eq!(ended.try_recv().unwrap(), (1, Ended::Aborted));
    }

    #[tokio::test]
    async fn shutdown_also_cancels_stop_in_a_plain_set() {
        let (set, shutdown) = setup(false);
        let (tx, _ended) = mpsc::unbounded_channel();
        set.start(1, "a", |t| job(1, t, Duration::ZERO, tx)).await;
        let stop = set.lock()[&1].tokens.stop.clone();
        shutdown.cancel();
        assert!(stop.is_cancelled());
    }

    #[tokio::test]
    async fn abort_all_ends_and_joins_every_job() {
        let (set, _shutdown) = setup(true);
        let (tx, mut ended) = mpsc::unbounded_channel();
        for id in 0..5u32 {
            let key = id;
            set.start(key, "a", |t| {
                job(id, t, Duration::from_millis(10), tx.clone())
            })
            .await;
        }
        assert!(set.stop(&3), "a stopping job is joined too");
        tokio::time::timeout(Duration::from_secs(5), set.abort_all())
            .await
            .expect("every job ends once aborted");
        let mut seen: Vec<u32> = std::iter::from_fn(|| ended.try_recv().ok())
            .map(|(id, _)| id)
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [0, 1, 2, 3, 4],
            "abort_all returned before every job ended"
        );
        assert!(set.running().is_empty());
        assert_eq!(set.lock().len(), 0);
    }
}
