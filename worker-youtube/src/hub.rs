//! The WebSub hub client: subscribe and unsubscribe requests (`POST {hub_url}` with a
//! form body). The hub answers 202 (it will verify asynchronously) or 204 (verified
//! synchronously); anything else is an error the caller retries with backoff.

/// Why a hub request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    /// The hub answered with an error status (4xx incl. 409, 5xx).
    #[error("hub answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The hub could not be reached.
    #[error("hub unreachable: {0}")]
    Transport(String),
}

/// `subscribe` or `unsubscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `hub.mode=subscribe`.
    Subscribe,
    /// `hub.mode=unsubscribe`.
    Unsubscribe,
}

impl Mode {
    /// The `hub.mode` value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Subscribe => "subscribe",
            Mode::Unsubscribe => "unsubscribe",
        }
    }
}

/// A subscription request.
#[derive(Debug, Clone)]
pub(crate) struct HubRequest<'a> {
    /// Subscribe or unsubscribe.
    pub mode: Mode,
    /// `hub.topic`.
    pub topic: &'a str,
    /// `hub.callback`.
    pub callback: &'a str,
    /// `hub.secret` (subscribe only).
    pub secret: &'a str,
    /// `hub.lease_seconds` (subscribe only).
    pub lease_seconds: u64,
}

/// Sends requests to one hub.
#[derive(Debug, Clone)]
pub(crate) struct HubClient {
    http: reqwest::Client,
    url: String,
}

impl HubClient {
    /// A client for the hub at `url`.
    pub(crate) fn new(http: reqwest::Client, url: &str) -> Self {
        Self {
            http,
            url: url.to_owned(),
        }
    }

    /// Sends one request; `Ok` when the hub accepted it (202 or 204).
    pub(crate) async fn send(&self, request: &HubRequest<'_>) -> Result<(), HubError> {
        let lease = request.lease_seconds.to_string();
        let mut form = vec![
            ("hub.mode", request.mode.as_str()),
            ("hub.topic", request.topic),
            ("hub.callback", request.callback),
            ("hub.verify", "async"),
        ];
        if request.mode == Mode::Subscribe {
            form.push(("hub.secret", request.secret));
            form.push(("hub.lease_seconds", lease.as_str()));
        }
        let response = self
            .http
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|err| HubError::Transport(err.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(HubError::Status {
            status: status.as_u16(),
            body: body.chars().take(200).collect(),
        })
    }
}
