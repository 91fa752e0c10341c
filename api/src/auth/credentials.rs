//! Verification of service credentials: a short memory of successes, a throttle on
//! failures and a bounded number of password checks at once.
//!
//! - **Cache.** PBKDF2 with 600 000 rounds costs a noticeable slice of a core, so a
//!   verified pair is remembered for `credential_cache_secs`. The key is a SHA-256 over a
//!   per-process random secret, the username, the password *and the stored hash*: the
//!   memory never holds the password or a fast unsalted hash of it, and a removed or
//!   changed credential misses the cache on its very next request (the credential is
//!   read from storage on every request; its permissions are always the stored ones).
//!   Concurrent first requests with the same pair wait for one verification.
//! - **Throttle.** An uncached attempt on the public api is reserved in the
//!   [`LoginThrottle`] first and waits the delay the username's and the client address's
//!   recent failures ask for *before* it is checked. The reservation is also counted in
//!   storage ([`SharedCounts`], one counter per username and per address, windowed by
//!   `login_forget_secs`), and the attempt waits for the larger of the two counts: api
//!   and coordinator instances on one store share one budget, and the in-memory throttle
//!   still bounds a single instance when the store cannot count.
//! - **Not on the broker path.** RabbitMQ asks for every AMQP login from its own
//!   address, so an address says nothing there, and its HTTP client sends us only a
//!   couple of requests at a time and queues the rest: an answer held back to slow a
//!   guesser would hold back the rightful owner's login queued behind it. Broker logins
//!   are answered as fast as a check allows; guessing there is bounded by the check
//!   concurrency below (and service passwords are long random secrets).
//! - **Bounded work.** At most `pbkdf2_concurrency` checks run at once; a login that
//!   finds none free within `pbkdf2_wait_ms` is answered 429 with `Retry-After`. An
//!   unknown username costs no check at all: on the public api it waits as long as a
//!   check takes, so the answer does not tell whether the account exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use stargazer_core::auth::verify_password;
use stargazer_core::model::Permissions;
use stargazer_core::storage::Storage;
use stargazer_core::sync::lock;
use stargazer_core::throttle::{Attempt, LoginThrottle, SharedCounts};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Cache entries beyond which expired ones are swept on insert.
const CACHE_SOFT_CAP: usize = 10_000;

/// What an unknown username waits before its refusal until a real check has been timed.
const INITIAL_CHECK_TIME: Duration = Duration::from_millis(200);

type Key = [u8; 32];

/// Where a login comes from, which decides how its throttle delay is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginVia {
    /// A request to the public api from this client address: wait, then check.
    Api(IpAddr),
    /// RabbitMQ asking on a client's behalf: never delayed.
    Broker,
}

/// How the check of one uncached login is limited.
pub(crate) struct CheckLimits {
    /// Password checks allowed at once.
    pub(crate) concurrency: usize,
    /// Longest wait for a free check.
    pub(crate) wait: Duration,
}

/// Verifies service passwords against the `auth` collection.
pub(crate) struct CredentialVerifier {
    storage: Arc<dyn Storage>,
    ttl: Duration,
    secret: [u8; 32],
    verified: Mutex<HashMap<Key, Instant>>,
    inflight: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    throttle: LoginThrottle,
    /// The throttle's count across instances.
    shared: SharedCounts,
    checks: Semaphore,
    check_wait: Duration,
    /// How long the last password check took, microseconds: what an unknown username
    /// waits instead of a check.
    check_time_us: AtomicU64,
    metrics: Arc<Metrics>,
}

impl CredentialVerifier {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        ttl: Duration,
        throttle: LoginThrottle,
        limits: CheckLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            shared: SharedCounts::new(storage.clone(), throttle.settings()),
            storage,
            ttl,
            secret,
            verified: Mutex::default(),
            inflight: Mutex::default(),
            throttle,
            checks: Semaphore::new(limits.concurrency.max(1)),
            check_wait: limits.wait,
            check_time_us: AtomicU64::new(INITIAL_CHECK_TIME.as_micros() as u64),
            metrics,
        }
    }

    fn key(&self, username: &str, password: &str, stored: &str) -> Key {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        for part in [username, password, stored] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().into()
    }

    fn is_cached(&self, key: &Key) -> bool {
        let verified = lock(&self.verified);
        verified
            .get(key)
            .is_some_and(|expires| *expires > Instant::now())
    }

    /// The permissions of `username` if `password` is right, `None` if the username is
    /// unknown or the password wrong; `RateLimited` when no check came free in time.
    pub(crate) async fn verify(
        &self,
        username: &str,
        password: &str,
        via: LoginVia,
    ) -> Result<Option<Permissions>> {
        let credential = self.storage.get_credential(username).await?;
        let Some(credential) = credential else {
            self.refuse_unknown(username, via).await;
            return Ok(None);
        };
        let key = self.key(username, password, &credential.hash);
        if self.is_cached(&key) {
            return Ok(Some(credential.permissions));
        }
        let gate = {
            let mut inflight = lock(&self.inflight);
            inflight.entry(key).or_default().clone()
        };
        let turn = gate.lock().await;
        let result = if self.is_cached(&key) {
            Ok(true)
        } else {
            self.check(username, password, &credential.hash, via).await
        };
        if let Ok(true) = result {
            self.remember(key);
        }
        drop(turn);
        lock(&self.inflight).remove(&key);
        Ok(result?.then_some(credential.permissions))
    }

    /// One throttled, bounded password check.
    async fn check(
        &self,
        username: &str,
        password: &str,
        hash: &str,
        via: LoginVia,
    ) -> Result<bool> {
        let attempt = self.reserve(username, via);
        let shared = self.count_shared(username, via, 1).await;
        if let Some(attempt) = &attempt {
            attempt.wait_with(shared).await;
        }
        let permit = match tokio::time::timeout(self.check_wait, self.checks.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; a timeout means every check stayed busy.
            Ok(Err(_)) | Err(_) => {
                if let Some(attempt) = attempt {
                    attempt.refund();
                    self.count_shared(username, via, -1).await;
                }
                self.metrics.login("busy");
                return Err(Error::RateLimited {
                    retry_after_secs: 1,
                });
            }
        };
        let (password, hash) = (password.to_owned(), hash.to_owned());
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await;
        drop(permit);
        let matched = match outcome {
            Ok(Ok(matched)) => {
                let took = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                self.check_time_us.store(took, Ordering::Relaxed);
                matched
            }
            Ok(Err(err)) => {
                // A broken stored hash must not lock everyone out silently: log it loudly.
                tracing::error!(username, cause = %err, "stored credential hash is unusable");
                false
            }
            Err(err) => {
                if let Some(attempt) = attempt {
                    attempt.refund();
                    self.count_shared(username, via, -1).await;
                }
                return Err(Error::Internal(format!(
                    "password check task failed: {err}"
                )));
            }
        };
        if matched {
            if let Some(attempt) = attempt {
                attempt.succeeded();
                self.count_shared(username, via, -1).await;
            }
            self.metrics.login("ok");
        } else {
            self.fail(attempt, username, via);
        }
        Ok(matched)
    }

    /// The throttled attempt of a public api login; none for the broker's.
    fn reserve(&self, username: &str, via: LoginVia) -> Option<Attempt> {
        match via {
            LoginVia::Api(ip) => Some(self.throttle.reserve(username, Some(ip))),
            LoginVia::Broker => None,
        }
    }

    /// Adds `delta` to the shared counters of a public api login's username and address
    /// (a reservation, or a refund); answers the larger count before a reservation.
    /// `None` for the broker's logins and when the store cannot count.
    async fn count_shared(&self, username: &str, via: LoginVia, delta: i64) -> Option<u32> {
        let LoginVia::Api(ip) = via else {
            return None;
        };
        self.shared.add(username, Some(ip), delta).await
    }

    /// Forgets shared counters past the throttle's window (called periodically).
    pub(crate) async fn purge_shared(&self) {
        self.shared.purge().await;
    }

    /// Counts a failure against the attempt's username and address.
    fn fail(&self, attempt: Option<Attempt>, username: &str, via: LoginVia) {
        self.metrics.login("failed");
        match via {
            LoginVia::Api(ip) => tracing::info!(username, %ip, "failed login"),
            LoginVia::Broker => tracing::info!(username, "failed broker login"),
        }
        if let Some(attempt) = attempt {
            attempt.failed();
        }
    }

    /// An unknown username: on the public api throttled like a wrong password and as
    /// slow as a check would be, without spending a core on one.
    async fn refuse_unknown(&self, username: &str, via: LoginVia) {
        let attempt = self.reserve(username, via);
        let shared = self.count_shared(username, via, 1).await;
        if let Some(attempt) = &attempt {
            attempt.wait_with(shared).await;
            let check_time = Duration::from_micros(self.check_time_us.load(Ordering::Relaxed));
            tokio::time::sleep(check_time).await;
        }
        self.fail(attempt, username, via);
    }

    fn remember(&self, key: Key) {
        let now = Instant::now();
        let mut verified = lock(&self.verified);
        if verified.len() >= CACHE_SOFT_CAP {
            verified.retain(|_, until| *until > now);
            if verified.len() >= CACHE_SOFT_CAP {
                verified.clear();
            }
        }
        verified.insert(key, now + self.ttl);
    }

    /// Drops expired entries and forgotten failures (called periodically).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        lock(&self.verified).retain(|_, until| *until > now);
        self.throttle.sweep();
    }
}
