//! The app access token (OAuth client credentials), fetched on first use, refreshed at
//! 90 % of its lifetime, and replaced at once when Helix says it is no longer valid.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::helix::HelixError;

/// Part of a token's lifetime after which it is refreshed before use.
const REFRESH_AT: f64 = 0.9;

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

struct Current {
    token: String,
    refresh_at: Instant,
}

/// The worker's app token. One fetch at a time: callers waiting for a refresh share its
/// result instead of each asking the token endpoint.
pub(crate) struct AppToken {
    http: reqwest::Client,
    url: String,
    client_id: String,
    client_secret: String,
    current: Mutex<Option<Current>>,
}

impl AppToken {
    pub(crate) fn new(http: reqwest::Client, url: String, client_id: &str, secret: &str) -> Self {
        Self {
            http,
            url,
            client_id: client_id.to_owned(),
            client_secret: secret.to_owned(),
            current: Mutex::new(None),
        }
    }

    /// A token valid now (fetched when there is none or it is due for refresh).
    pub(crate) async fn get(&self) -> Result<String, HelixError> {
        let mut current = self.current.lock().await;
        if let Some(held) = current.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(held.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *current = Some(fresh);
        Ok(token)
    }

    /// Forgets `token` after Helix refused it, unless a newer one replaced it already.
    pub(crate) async fn invalidate(&self, token: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| c.token == token) {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<Current, HelixError> {
        let response = self
            .http
            .post(&self.url)
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .map_err(|err| HelixError::Network(err.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(HelixError::Token {
                status: status.as_u16(),
                detail: crate::helix::snippet(&body),
            });
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|err| HelixError::BadResponse(format!("token: {err}")))?;
        let lifetime = Duration::from_secs(body.expires_in).mul_f64(REFRESH_AT);
        tracing::debug!(expires_in = body.expires_in, "app access token fetched");
        Ok(Current {
            token: body.access_token,
            refresh_at: Instant::now() + lifetime,
        })
    }
}
