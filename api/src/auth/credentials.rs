//! Verification of service credentials with a short-lived memory of successes.
//!
//! PBKDF2 with 600 000 rounds costs a noticeable slice of a core, so a verified
//! `(username, password)` pair is remembered for `credential_cache_secs`. The cache key
//! is a SHA-256 over a per-process random secret, the username and the password: the
//! memory never holds the password or a fast unsalted hash of it. Concurrent first
//! requests with the same pair wait for one verification instead of each paying for it.
//! A removed or changed credential keeps working for at most the cache lifetime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use stargazer_core::auth::{hash_password, verify_password};
use stargazer_core::model::Permissions;
use stargazer_core::storage::Storage;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Cache entries beyond which expired ones are swept on insert.
const CACHE_SOFT_CAP: usize = 10_000;

type Key = [u8; 32];

/// Verifies service passwords against the `auth` collection.
pub(crate) struct CredentialVerifier {
    storage: Arc<dyn Storage>,
    ttl: Duration,
    iterations: u32,
    secret: [u8; 32],
    verified: Mutex<HashMap<Key, (Permissions, Instant)>>,
    inflight: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// A hash checked against when the username is unknown, so that unknown and known
    /// usernames take the same time to refuse.
    decoy: OnceLock<String>,
}

impl CredentialVerifier {
    pub(crate) fn new(storage: Arc<dyn Storage>, ttl: Duration, iterations: u32) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            storage,
            ttl,
            iterations,
            secret,
            verified: Mutex::default(),
            inflight: Mutex::default(),
            decoy: OnceLock::new(),
        }
    }

    fn key(&self, username: &str, password: &str) -> Key {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        hasher.update((username.len() as u64).to_le_bytes());
        hasher.update(username.as_bytes());
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    fn cached(&self, key: &Key) -> Option<Permissions> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(permissions, _)| *permissions)
    }

    /// The permissions of `username` if `password` is right, `None` if the username is
    /// unknown or the password wrong.
    pub(crate) async fn verify(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Permissions>> {
        let key = self.key(username, password);
        if let Some(permissions) = self.cached(&key) {
            return Ok(Some(permissions));
        }
        let gate = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.entry(key).or_default().clone()
        };
        let _turn = gate.lock().await;
        if let Some(permissions) = self.cached(&key) {
            return Ok(Some(permissions));
        }
        let result = self.verify_uncached(username, password).await;
        if let Ok(Some(permissions)) = &result {
            self.remember(key, *permissions);
        }
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result
    }

    async fn verify_uncached(&self, username: &str, password: &str) -> Result<Option<Permissions>> {
        let credential = self.storage.get_credential(username).await?;
        let (hash, permissions) = match credential {
            Some(credential) => (Some(credential.hash), Some(credential.permissions)),
            None => (self.decoy.get().cloned(), None),
        };
        let password = password.to_owned();
        let iterations = self.iterations;
        let (matched, decoy) = tokio::task::spawn_blocking(move || {
            let (hash, decoy) = match hash {
                Some(hash) => (hash, None),
                // First unknown username: make the decoy now (and pay for it once).
                None => match hash_password("decoy", iterations) {
                    Ok(hash) => (hash.clone(), Some(hash)),
                    Err(err) => return (Err(err), None),
                },
            };
            (verify_password(&password, &hash), decoy)
        })
        .await
        .map_err(|err| Error::Internal(format!("password check task failed: {err}")))?;
        if let Some(decoy) = decoy {
            let _ = self.decoy.set(decoy);
        }
        match matched {
            Ok(true) => Ok(permissions),
            Ok(false) => Ok(None),
            Err(err) => {
                // A broken stored hash must not lock everyone out silently: log it loudly.
                tracing::error!(username, cause = %err, "stored credential hash is unusable");
                Ok(None)
            }
        }
    }

    fn remember(&self, key: Key, permissions: Permissions) {
        let expires = Instant::now() + self.ttl;
        {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= CACHE_SOFT_CAP {
                let now = Instant::now();
                verified.retain(|_, (_, until)| *until > now);
                if verified.len() >= CACHE_SOFT_CAP {
                    verified.clear();
                }
            }
            verified.insert(key, (permissions, expires));
        }
    }

    /// Drops expired entries (called periodically).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (_, until)| *until > now);
    }
}
