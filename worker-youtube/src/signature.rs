//! WebSub content signatures: `X-Hub-Signature: sha1=<hex>` (what Google's hub sends) or
//! `sha256=<hex>`, an HMAC of the raw body keyed with the subscription's secret.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// Why a notification's signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature` header.
    #[error("unsigned notification")]
    Missing,
    /// The header is not `<method>=<hex>` with a supported method.
    #[error("unsupported signature format `{0}`")]
    Malformed(String),
    /// The digest does not match the body.
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks `header` against `body` keyed with `secret`, in constant time.
pub fn verify(header: Option<&str>, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let (method, digest) = header
        .split_once('=')
        .ok_or_else(|| SignatureError::Malformed(truncate(header)))?;
    let given =
        hex::decode(digest.trim()).map_err(|_| SignatureError::Malformed(truncate(header)))?;
    let expected = match method.trim().to_ascii_lowercase().as_str() {
        "sha1" => mac::<Hmac<sha1::Sha1>>(secret, body),
        "sha256" => mac::<Hmac<sha2::Sha256>>(secret, body),
        _ => return Err(SignatureError::Malformed(truncate(header))),
    };
    // `ct_eq` on slices of different lengths is false without leaking where they differ.
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `sha1=<hex>` header value a hub sends for `body` (used by tests and tools).
pub fn sign_sha1(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha1={}",
        hex::encode(mac::<Hmac<sha1::Sha1>>(secret, body))
    )
}

/// The `sha256=<hex>` header value for `body`.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac::<Hmac<sha2::Sha256>>(secret, body))
    )
}

fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn truncate(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sha1_and_sha256_and_rejects_the_rest() {
        let body = b"<feed/>";
        let secret = b"s3cret";
        assert_eq!(verify(Some(&sign_sha1(secret, body)), secret, body), Ok(()));
        assert_eq!(
            verify(Some(&sign_sha256(secret, body)), secret, body),
            Ok(())
        );
        assert_eq!(
            verify(Some(&sign_sha1(b"other", body)), secret, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&sign_sha1(secret, b"<feed />")), secret, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(None, secret, body), Err(SignatureError::Missing));
        assert!(matches!(
            verify(Some("md5=abcd"), secret, body),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("sha1=zz"), secret, body),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("garbage"), secret, body),
            Err(SignatureError::Malformed(_))
        ));
        assert_eq!(
            verify(Some("sha1=abcd"), secret, body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn known_vector() {
        // RFC 2202 test case 2 for HMAC-SHA1.
        assert_eq!(
            sign_sha1(b"Jefe", b"what do ya want for nothing?"),
            "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }
}
