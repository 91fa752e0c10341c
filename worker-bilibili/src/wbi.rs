//! WBI request signing, which the web API asks of the space-dynamics feed.
//!
//! `GET /x/web-interface/nav` hands out two keys as the file names of
//! `data.wbi_img.img_url` and `sub_url`. Their concatenation goes through the fixed
//! 64-entry permutation [`MIXIN_KEY_ENC_TAB`]; the first 32 characters are the mixin key.
//! A request adds `wts` (unix seconds), sorts its parameters by name, strips `!'()*` from
//! the values, percent-encodes them as `encodeURIComponent` does, and appends
//! `w_rid` = md5(query ‖ mixin key) in hex.

use md5::{Digest, Md5};

/// The permutation applied to `img_key ‖ sub_key` (bilibili-API-collect, `docs/misc/sign/wbi.md`).
pub const MIXIN_KEY_ENC_TAB: [usize; 64] = [
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49, 33, 9, 42, 19, 29,
    28, 14, 39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40, 61, 26, 17, 0, 1, 60, 51, 30, 4, 22, 25,
    54, 21, 56, 59, 6, 63, 57, 62, 11, 36, 20, 34, 44, 52,
];

/// The signing keys of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WbiKeys {
    /// The mixin key: 32 characters.
    mixin: String,
}

/// Why keys could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable WBI key URL `{0}`")]
pub struct BadKeyUrl(pub String);

/// The file stem of a key URL: `https://i0.hdslb.com/bfs/wbi/<key>.png` → `<key>`.
fn key_of(url: &str) -> Result<&str, BadKeyUrl> {
    let name = url.rsplit('/').next().unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    // Real keys are 32 hex characters; anything shorter cannot fill the permutation.
    if stem.len() != 32 || !stem.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BadKeyUrl(url.to_owned()));
    }
    Ok(stem)
}

impl WbiKeys {
    /// Keys from the `img_url` and `sub_url` of `/nav`.
    pub fn from_urls(img_url: &str, sub_url: &str) -> Result<Self, BadKeyUrl> {
        Ok(Self::from_keys(key_of(img_url)?, key_of(sub_url)?))
    }

    /// Keys from `img_key` and `sub_key` themselves (each 32 ASCII characters).
    pub fn from_keys(img_key: &str, sub_key: &str) -> Self {
        let raw: Vec<u8> = img_key.bytes().chain(sub_key.bytes()).collect();
        let mixin = MIXIN_KEY_ENC_TAB
            .iter()
            .filter_map(|&i| raw.get(i).map(|&b| b as char))
            .take(32)
            .collect();
        Self { mixin }
    }

    /// The mixin key.
    pub fn mixin_key(&self) -> &str {
        &self.mixin
    }

    /// The signed query string for `params` at unix time `wts`: the sorted, encoded
    /// parameters with `wts`, then `&w_rid=…`.
    pub fn sign(&self, params: &[(&str, String)], wts: i64) -> String {
        let mut pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), strip(v)))
            .collect();
        pairs.push(("wts".into(), wts.to_string()));
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let w_rid = hex::encode(Md5::digest(format!("{query}{}", self.mixin).as_bytes()));
        format!("{query}&w_rid={w_rid}")
    }
}

/// Drops the characters the signer leaves out of values.
fn strip(value: &str) -> String {
    value.chars().filter(|c| !"!'()*".contains(*c)).collect()
}

/// Percent-encoding as JavaScript's `encodeURIComponent` (upper-case hex), which the web
/// client signs with; `!'()*` never reach it.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of bilibili-API-collect's WBI document.
    #[test]
    fn signs_the_published_example() {
        let keys = WbiKeys::from_urls(
            "https://i0.hdslb.com/bfs/wbi/7cd084941338484aae1ad9425b84077c.png",
            "https://i0.hdslb.com/bfs/wbi/4932caff0ff746eab6f01bf08b70ac45.png",
        )
        .unwrap();
        assert_eq!(keys.mixin_key(), "ea1db124af3c7062474693fa704f4ff8");
        let signed = keys.sign(
            &[
                ("foo", "114".into()),
                ("bar", "514".into()),
                ("zab", "1919810".into()),
            ],
            1_702_204_169,
        );
        assert_eq!(
            signed,
            "bar=514&foo=114&wts=1702204169&zab=1919810&w_rid=8f6f2b5b3d485fe1886cec6a0be8c5d4"
        );
    }

    #[test]
    fn values_are_stripped_and_encoded_like_encode_uri_component() {
        let keys = WbiKeys::from_keys(&"a".repeat(32), &"b".repeat(32));
        let signed = keys.sign(&[("q", "it's (a) *test*!".into()), ("z", "猫 &".into())], 1);
        let query = signed.split("&w_rid=").next().unwrap();
        assert_eq!(query, "q=its%20a%20test&wts=1&z=%E7%8C%AB%20%26");
        let expected = hex::encode(Md5::digest(format!("{query}{}", keys.mixin_key())));
        assert!(signed.ends_with(&expected));
    }

    #[test]
    fn a_key_url_without_a_key_is_refused() {
        assert!(WbiKeys::from_urls("https://x/short.png", "https://x/y.png").is_err());
        assert!(WbiKeys::from_urls("", "").is_err());
    }
}
