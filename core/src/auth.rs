//! Password hashing for service credentials and tokens for user sessions.
//!
//! Passwords are stored as PBKDF2-HMAC-SHA256 PHC strings
//! (`$pbkdf2-sha256$i=600000,l=32$salt$hash`) and verified in constant time. Hashing is
//! deliberately slow; async callers run it through `spawn_blocking` and keep a cache of
//! verified credentials (see the api crate). Session tokens are random 256-bit values
//! handed to the user once; only their SHA-256 is stored.

use base64::Engine;
use pbkdf2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use pbkdf2::{Algorithm, Params, Pbkdf2};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Default PBKDF2 iteration count (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;

/// Errors of password hashing.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The stored hash is not a PBKDF2 PHC string.
    #[error("stored hash is malformed: {0}")]
    MalformedHash(String),
    /// Hashing failed (invalid parameters).
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// Hashes `password` with a fresh random salt and `iterations` rounds.
pub fn hash_password(password: &str, iterations: u32) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let params = Params {
        rounds: iterations,
        output_length: 32,
    };
    Pbkdf2
        .hash_password_customized(
            password.as_bytes(),
            Some(Algorithm::Pbkdf2Sha256.ident()),
            None,
            params,
            &salt,
        )
        .map(|hash| hash.to_string())
        .map_err(|err| AuthError::Hashing(err.to_string()))
}

/// Checks `password` against a stored PHC string in constant time.
pub fn verify_password(password: &str, stored: &str) -> Result<bool, AuthError> {
    let parsed =
        PasswordHash::new(stored).map_err(|err| AuthError::MalformedHash(err.to_string()))?;
    match Pbkdf2.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(pbkdf2::password_hash::Error::Password) => Ok(false),
        Err(err) => Err(AuthError::MalformedHash(err.to_string())),
    }
}

/// A fresh random token of 256 bits, URL-safe base64 without padding.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A random password for generated service accounts (192 bits, URL-safe).
pub fn new_password() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token, hex: what is stored and looked up instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let hash = hash_password("s3cret", 1_000).unwrap();
        assert!(hash.starts_with("$pbkdf2-sha256$i=1000,l=32$"), "{hash}");
        assert!(verify_password("s3cret", &hash).unwrap());
        assert!(!verify_password("s3cret!", &hash).unwrap());
        assert!(matches!(
            verify_password("x", "not a hash"),
            Err(AuthError::MalformedHash(_))
        ));
    }

    #[test]
    fn default_hash_uses_the_default_iterations() {
        let hash = hash_password("p", DEFAULT_ITERATIONS).unwrap();
        assert!(hash.contains("i=600000"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token();
        assert_ne!(a, new_token());
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
