//! Logins to user ids for the admin CLI (`stargazer admin entity add --twitch LOGIN`):
//! `GET /users?login=…` with the app token, at most 100 logins per call.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::Registry;
use stargazer_core::source::http_client;
use tokio_util::sync::CancellationToken;

use crate::config::TwitchConfig;
use crate::helix::{Helix, HelixError, MAX_IDS};
use crate::metrics::Metrics;

/// Why logins could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The `[twitch]` section lacks what the lookup needs.
    #[error("{0}")]
    Config(String),
    /// Helix has no user with this login.
    #[error("Twitch has no user with the login `{0}`")]
    UnknownLogin(String),
    /// A value that cannot be a login (Twitch logins are 1–25 of `a-z`, `0-9`, `_`).
    #[error("`{0}` is not a Twitch login or numeric user id")]
    InvalidLogin(String),
    /// Helix failed.
    #[error("Helix: {0}")]
    Helix(#[from] HelixError),
}

fn is_login(value: &str) -> bool {
    (1..=25).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The numeric user ids of `logins`, in order; all-digit values pass through unchanged
/// (and need no credentials), logins are matched case-insensitively.
pub async fn resolve_logins(
    config: &TwitchConfig,
    logins: &[String],
) -> Result<Vec<String>, ResolveError> {
    let is_id = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    let mut wanted: Vec<String> = Vec::new();
    for value in logins.iter().map(|v| v.trim()) {
        if is_id(value) {
            continue;
        }
        if !is_login(value) {
            return Err(ResolveError::InvalidLogin(value.to_owned()));
        }
        wanted.push(value.to_lowercase());
    }
    let mut ids: HashMap<String, String> = HashMap::new();
    if !wanted.is_empty() {
        for (key, value) in [
            ("twitch.client_id", &config.client_id),
            (
                "twitch.client_secret (STARGAZER_TWITCH_CLIENT_SECRET)",
                &config.client_secret,
            ),
        ] {
            if value.trim().is_empty() {
                return Err(ResolveError::Config(format!(
                    "looking up Twitch logins needs {key}; or give the numeric user id"
                )));
            }
        }
        let http = http_client("twitch", config.http_timeout())
            .map_err(|err| ResolveError::Config(err.to_string()))?;
        let helix = Helix::new(
            http,
            Arc::new(config.clone()),
            Metrics::register(&Registry::new()),
            CancellationToken::new(),
        );
        wanted.sort();
        wanted.dedup();
        for chunk in wanted.chunks(MAX_IDS) {
            for user in helix.users(chunk).await? {
                ids.insert(user.login.to_lowercase(), user.id);
            }
        }
    }
    logins
        .iter()
        .map(|v| v.trim())
        .map(|value| {
            if is_id(value) {
                Ok(value.to_owned())
            } else {
                ids.get(&value.to_lowercase())
                    .cloned()
                    .ok_or_else(|| ResolveError::UnknownLogin(value.to_owned()))
            }
        })
        .collect()
}
