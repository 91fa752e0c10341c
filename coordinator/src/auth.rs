//! HTTP Basic authentication of workers and status readers against the credentials in
//! storage (`coordinator: ro` or better).
//!
//! PBKDF2 is slow on purpose, and after a coordinator restart every worker reconnects at
//! once with the same few credentials. So a successful check is remembered for
//! `auth_cache_ttl_secs` under a SHA-256 of a per-process secret, the username, the
//! password and the stored hash (a changed password or a replaced credential misses the
//! cache at once; permissions are read fresh on every request); concurrent checks of the
//! same pair wait for one verification; and at most [`MAX_CONCURRENT_VERIFICATIONS`]
//! PBKDF2 runs happen at a time, so a storm of wrong passwords queues instead of eating
//! every core.
//!
//! That queue is bounded too: past `auth_max_pending` logins waiting for a check, the
//! next is answered 503 with `Retry-After` at once. Failures slow guessing down (core's
//! [`LoginThrottle`], per username and per peer address: an uncached attempt waits
//! before it is checked) but never refuse a right password, and a worker whose pair is
//! remembered is not throttled at all. Every attempt is also counted in the state store
//! ([`SharedCounts`]) and waits for the larger count, so the standby, which checks
//! credentials before it answers 503, and the api spend one budget with the leader
//! instead of giving a guesser one each. An unknown username costs no check: it waits as
//! long as one takes, so the answer does not tell whether the account exists.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use stargazer_core::auth::verify_password;
use stargazer_core::model::{Access, Component};
use stargazer_core::storage::AccessStore;
use stargazer_core::throttle::{LoginThrottle, SharedCounts};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::http::{AppState, HttpError};
use stargazer_core::sync::lock;

/// PBKDF2 verifications allowed to run at once.
pub(crate) const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

/// Entries beyond which expired ones are swept on insert.
const CACHE_SOFT_CAP: usize = 4096;

/// What an unknown username waits before its refusal until a real check has been timed.
const INITIAL_CHECK_TIME: Duration = Duration::from_millis(200);

type Key = [u8; 32];

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No or malformed `Authorization: Basic` header.
    Missing(&'static str),
    /// Unknown user or wrong password.
    BadCredentials,
    /// Right password, but no coordinator access.
    Forbidden,
    /// Storage could not be asked.
    Unavailable(String),
    /// Too many logins are already waiting for a password check.
    Busy,
}

/// Checks service credentials with a memory of recent successes.
pub(crate) struct Authenticator {
    storage: Arc<dyn AccessStore>,
    ttl: Duration,
    secret: [u8; 32],
    verified: Mutex<HashMap<Key, Instant>>,
    inflight: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    verifications: Semaphore,
    /// Logins waiting for (or running) a check, and the most allowed.
    pending: AtomicUsize,
    max_pending: usize,
    throttle: LoginThrottle,
    /// The throttle's count across instances.
    shared: SharedCounts,
    /// How long the last check took, microseconds: what an unknown username waits.
    check_time_us: AtomicU64,
}

/// Gives a pending slot back when dropped (the request may be cancelled while waiting).
struct PendingSlot<'a>(&'a AtomicUsize);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Authenticator {
    pub(crate) fn new(
        storage: Arc<dyn AccessStore>,
        ttl: Duration,
        throttle: LoginThrottle,
        shared: SharedCounts,
        max_pending: usize,
    ) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            storage,
            ttl,
            secret,
            verified: Mutex::default(),
            inflight: Mutex::default(),
            verifications: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
            pending: AtomicUsize::new(0),
            max_pending: max_pending.max(1),
            throttle,
            shared,
            check_time_us: AtomicU64::new(INITIAL_CHECK_TIME.as_micros() as u64),
        }
    }

    /// The authenticated username, if the header carries valid credentials with at least
    /// `coordinator: ro`.
    pub(crate) async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        peer: Option<IpAddr>,
    ) -> Result<String, AuthFailure> {
        let (username, password) = parse_basic(authorization)?;
        let credential = self
            .storage
            .get_credential(&username)
            .await
            .map_err(|err| AuthFailure::Unavailable(err.to_string()))?;
        let Some(credential) = credential else {
            let attempt = self.throttle.reserve(&username, peer);
            let shared = self.shared.add(&username, peer, 1).await;
            attempt.wait_with(shared).await;
            tokio::time::sleep(Duration::from_micros(
                self.check_time_us.load(Ordering::Relaxed),
            ))
            .await;
            attempt.failed();
            return Err(AuthFailure::BadCredentials);
        };
        let key = self.key(&username, &password, &credential.hash);
        if !self.is_cached(&key) {
            let gate = {
                let mut inflight = lock(&self.inflight);
                inflight.entry(key).or_default().clone()
            };
            let turn = gate.lock().await;
            let matched = if self.is_cached(&key) {
                Ok(true)
            } else {
                self.throttled_verify(&username, &password, &credential.hash, peer)
                    .await
            };
            if let Ok(true) = matched {
                self.remember(key);
            }
            drop(turn);
            lock(&self.inflight).remove(&key);
            if !matched? {
                return Err(AuthFailure::BadCredentials);
            }
        }
        if !credential
            .permissions
            .allows(Component::Coordinator, Access::Ro)
        {
            return Err(AuthFailure::Forbidden);
        }
        Ok(username)
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
            .is_some_and(|until| *until > Instant::now())
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

    /// Waits out the throttle, then checks within the bound on pending checks.
    async fn throttled_verify(
        &self,
        username: &str,
        password: &str,
        stored: &str,
        peer: Option<IpAddr>,
    ) -> Result<bool, AuthFailure> {
        let attempt = self.throttle.reserve(username, peer);
        let shared = self.shared.add(username, peer, 1).await;
        attempt.wait_with(shared).await;
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            attempt.refund();
            self.refund_shared(shared, username, peer).await;
            return Err(AuthFailure::Busy);
        }
        let slot = PendingSlot(&self.pending);
        let matched = self.verify(password, stored).await;
        drop(slot);
        match matched {
            Some(true) => {
                attempt.succeeded();
                self.refund_shared(shared, username, peer).await;
            }
            Some(false) => {
                tracing::info!(username, peer = ?peer, "failed worker login");
                attempt.failed();
            }
            None => {
                attempt.refund();
                self.refund_shared(shared, username, peer).await;
            }
        }
        Ok(matched == Some(true))
    }

    /// Takes a shared reservation back (one that was counted: `shared` is `Some`).
    async fn refund_shared(&self, shared: Option<u32>, username: &str, peer: Option<IpAddr>) {
        if shared.is_some() {
            self.shared.add(username, peer, -1).await;
        }
    }

    /// Forgets shared counters past the throttle's window (called periodically).
    pub(crate) async fn purge_shared(&self) {
        self.shared.purge().await;
    }

    /// `None` when the check could not run.
    async fn verify(&self, password: &str, stored: &str) -> Option<bool> {
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(_permit) = self.verifications.acquire().await else {
            return None;
        };
        let password = password.to_owned();
        let stored = stored.to_owned();
        let started = Instant::now();
        let outcome =
            tokio::task::spawn_blocking(move || verify_password(&password, &stored)).await;
        match outcome {
            Ok(Ok(matched)) => {
                let took = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                self.check_time_us.store(took, Ordering::Relaxed);
                Some(matched)
            }
            Ok(Err(err)) => {
                // A broken stored hash must not lock a worker out silently.
                tracing::error!(cause = %err, "stored credential hash is unusable");
                Some(false)
            }
            Err(err) => {
                tracing::error!(cause = %err, "password check task failed");
                None
            }
        }
    }
}

fn parse_basic(authorization: Option<&HeaderValue>) -> Result<(String, String), AuthFailure> {
    let value = authorization.ok_or(AuthFailure::Missing("missing Authorization header"))?;
    let value = value
        .to_str()
        .map_err(|_| AuthFailure::Missing("Authorization header is not ASCII"))?;
    let (scheme, encoded) = value.split_once(' ').ok_or(AuthFailure::Missing(
        "Authorization header is not `Basic <credentials>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthFailure::Missing("Authorization scheme must be Basic"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthFailure::Missing("Basic credentials are not base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| AuthFailure::Missing("Basic credentials are not UTF-8"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or(AuthFailure::Missing("Basic credentials lack a `:`"))?;
    Ok((username.to_owned(), password.to_owned()))
}

/// A request authenticated with HTTP Basic and `coordinator: ro`.
#[derive(Debug, Clone)]
pub(crate) struct ServiceAuth {
    /// Who authenticated.
    pub(crate) username: String,
}

impl FromRequestParts<AppState> for ServiceAuth {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let result = state
            .auth
            .authenticate(parts.headers.get(header::AUTHORIZATION), peer)
            .await;
        match result {
            Ok(username) => Ok(ServiceAuth { username }),
            Err(failure) => {
                let reason = match &failure {
                    AuthFailure::Missing(_) => "missing",
                    AuthFailure::BadCredentials => "bad_credentials",
                    AuthFailure::Forbidden => "forbidden",
                    AuthFailure::Unavailable(_) => "unavailable",
                    AuthFailure::Busy => "busy",
                };
                state
                    .metrics
                    .auth_failures
                    .with_label_values(&[reason])
                    .inc();
                Err(HttpError::from(failure))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_are_parsed_strictly() {
        let ok = HeaderValue::from_static("Basic dTpwOng=");
        assert_eq!(parse_basic(Some(&ok)).unwrap(), ("u".into(), "p:x".into()));
        let lower = HeaderValue::from_static("basic dTpw");
        assert!(parse_basic(Some(&lower)).is_ok());
        for bad in ["Bearer dTpw", "Basic", "Basic !!!", "Basic dXA="] {
            let value = HeaderValue::from_str(bad).unwrap();
            assert!(
                matches!(parse_basic(Some(&value)), Err(AuthFailure::Missing(_))),
                "{bad}"
            );
        }
        assert!(parse_basic(None).is_err());
    }
}
