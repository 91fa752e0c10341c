//! EventSub message checks: `Twitch-Eventsub-Message-Signature` is `sha256=` + hex
//! HMAC-SHA256(secret, message id + timestamp + raw body), compared in constant time, and
//! the timestamp must be within [`MAX_AGE`] of now either way.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};

/// How far a message's timestamp may be from now (Twitch's recommendation), so a captured
/// message cannot be replayed later; the replay window remembers ids at least this long.
pub const MAX_AGE: chrono::Duration = chrono::Duration::minutes(10);

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("no signature")]
    Missing,
    /// A header that is not `sha256=<64 hex digits>`, or a MAC that does not match.
    #[error("signature does not match")]
    Forged,
    /// A timestamp that does not parse or is too far from now.
    #[error("timestamp {0} is missing, unreadable or more than 10 minutes from now")]
    Stale(String),
}

impl SignatureError {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "unsigned",
            Self::Forged => "forged",
            Self::Stale(_) => "stale",
        }
    }
}

/// Checks a message's signature, then its timestamp, against `secret` and `now`; returns
/// the timestamp.
pub fn verify(
    secret: &[u8],
    message_id: &str,
    timestamp: &str,
    body: &[u8],
    signature: Option<&str>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let hex = signature
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Forged)?;
    // Bounded: a hex string of any other length cannot be a SHA-256 MAC.
    if hex.len() != 64 {
        return Err(SignatureError::Forged);
    }
    let expected = hex::decode(hex).map_err(|_| SignatureError::Forged)?;
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(message_id.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Forged)?;
    let stale = || SignatureError::Stale(timestamp.chars().take(40).collect());
    let at = DateTime::parse_from_rfc3339(timestamp)
        .map_err(|_| stale())?
        .with_timezone(&Utc);
    if (now - at).abs() > MAX_AGE {
        return Err(stale());
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, id: &str, ts: &str, body: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{id}{ts}{body}").as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn good_forged_unsigned_and_stale_messages() {
        let now = Utc::now();
        let ts = now.to_rfc3339();
        let good = sign("secret-secret", "m1", &ts, "{}");
        assert!(verify(b"secret-secret", "m1", &ts, b"{}", Some(&good), now).is_ok());
        assert_eq!(
            verify(b"other-secret", "m1", &ts, b"{}", Some(&good), now),
            Err(SignatureError::Forged)
        );
        // The id is part of the MAC: a signature cannot be moved to another message.
        assert_eq!(
            verify(b"secret-secret", "m2", &ts, b"{}", Some(&good), now),
            Err(SignatureError::Forged)
        );
        assert_eq!(
            verify(b"secret-secret", "m1", &ts, b"{}", None, now),
            Err(SignatureError::Missing)
        );
        for bad in ["sha256=zz", "sha1=00", "", "sha256="] {
            assert_eq!(
                verify(b"secret-secret", "m1", &ts, b"{}", Some(bad), now),
                Err(SignatureError::Forged),
                "{bad}"
            );
        }
        let old = (now - chrono::Duration::minutes(11)).to_rfc3339();
        let signed_old = sign("secret-secret", "m1", &old, "{}");
        assert!(matches!(
            verify(b"secret-secret", "m1", &old, b"{}", Some(&signed_old), now),
            Err(SignatureError::Stale(_))
        ));
        let future = (now + chrono::Duration::minutes(11)).to_rfc3339();
        let signed_future = sign("secret-secret", "m1", &future, "{}");
        assert!(verify(
            b"secret-secret",
            "m1",
            &future,
            b"{}",
            Some(&signed_future),
            now
        )
        .is_err());
    }
}
