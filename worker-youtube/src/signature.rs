//! WebSub content signatures: `X-Hub-Signature: <method>=<hex>`, an HMAC of the raw body
//! keyed with the subscription's secret. WebSub allows `sha1` (what Google's hub sends),
//! `sha256`, `sha384` and `sha512` (Flask-WebSub's default); all four are accepted.

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

/// The HMAC hash functions WebSub allows for `X-Hub-Signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `sha1=`: what Google's hub sends.
    Sha1,
    /// `sha256=`.
    Sha256,
    /// `sha384=`.
    Sha384,
    /// `sha512=`: Flask-WebSub's default.
    Sha512,
}

impl Method {
    /// Every method, weakest first.
    pub const ALL: [Method; 4] = [Method::Sha1, Method::Sha256, Method::Sha384, Method::Sha512];

    /// The name in the header (`sha1`, …).
    pub fn name(self) -> &'static str {
        match self {
            Method::Sha1 => "sha1",
            Method::Sha256 => "sha256",
            Method::Sha384 => "sha384",
            Method::Sha512 => "sha512",
        }
    }

    /// The method named `name` (case-insensitive), if WebSub allows it.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|method| name.eq_ignore_ascii_case(method.name()))
    }

    /// The HMAC of `body` keyed with `secret`.
    fn mac(self, secret: &[u8], body: &[u8]) -> Vec<u8> {
        match self {
            Method::Sha1 => mac::<Hmac<sha1::Sha1>>(secret, body),
            Method::Sha256 => mac::<Hmac<sha2::Sha256>>(secret, body),
            Method::Sha384 => mac::<Hmac<sha2::Sha384>>(secret, body),
            Method::Sha512 => mac::<Hmac<sha2::Sha512>>(secret, body),
        }
    }
}

/// Checks `header` against `body` keyed with `secret`, in constant time.
pub fn verify(header: Option<&str>, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let (method, digest) = header
        .split_once('=')
        .ok_or_else(|| SignatureError::Malformed(truncate(header)))?;
    let given =
        hex::decode(digest.trim()).map_err(|_| SignatureError::Malformed(truncate(header)))?;
    let method = Method::from_name(method.trim())
        .ok_or_else(|| SignatureError::Malformed(truncate(header)))?;
    let expected = method.mac(secret, body);
    // `ct_eq` on slices of different lengths is false without leaking where they differ.
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `<method>=<hex>` header value a hub sends for `body` (used by tests and tools).
pub fn sign(method: Method, secret: &[u8], body: &[u8]) -> String {
    format!(
        "{}={}",
        method.name(),
        hex::encode(method.mac(secret, body))
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
    fn accepts_every_websub_method_and_rejects_the_rest() {
        let body = b"<feed/>";
        let secret = b"s3cret";
        for method in Method::ALL {
            let header = sign(method, secret, body);
            assert_eq!(verify(Some(&header), secret, body), Ok(()), "{header}");
            let upper = header.replacen(method.name(), &method.name().to_uppercase(), 1);
            assert_eq!(verify(Some(&upper), secret, body), Ok(()), "{upper}");
            assert_eq!(
                verify(Some(&sign(method, b"other", body)), secret, body),
                Err(SignatureError::Mismatch)
            );
        }
        // A digest of one method under another method's name does not match.
        let sha512 = sign(Method::Sha512, secret, body);
        let relabelled = sha512.replacen("sha512", "sha384", 1);
        assert_eq!(
            verify(Some(&relabelled), secret, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&sign(Method::Sha1, secret, b"<feed />")), secret, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(None, secret, body), Err(SignatureError::Missing));
        for malformed in ["md5=abcd", "sha224=abcd", "sha1=zz", "garbage"] {
            assert!(
                matches!(
                    verify(Some(malformed), secret, body),
                    Err(SignatureError::Malformed(_))
                ),
                "{malformed}"
            );
        }
        assert_eq!(
            verify(Some("sha1=abcd"), secret, body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn known_vector() {
        // RFC 2202 test case 2 for HMAC-SHA1.
        assert_eq!(
            sign(Method::Sha1, b"Jefe", b"what do ya want for nothing?"),
            "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // RFC 4231 test case 2 for HMAC-SHA-384 and HMAC-SHA-512.
        assert_eq!(
            sign(Method::Sha384, b"Jefe", b"what do ya want for nothing?"),
            "sha384=af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
             8e2240ca5e69e2c78b3239ecfab21649"
        );
        assert_eq!(
            sign(Method::Sha512, b"Jefe", b"what do ya want for nothing?"),
            "sha512=164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }
}
