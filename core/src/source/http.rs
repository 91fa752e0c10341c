//! The HTTP client a source calls its service with.

use std::time::Duration;

use super::SourceError;

/// An HTTP client with a `timeout` on every request and the user agent
/// `stargazer-worker-<name>/<version>`.
///
/// The user agent names the worker so the operators of the service called (and of any
/// proxy in between) can tell Stargazer's traffic apart and reach its owners; the
/// version is the workspace's, which every crate shares. A bad client setup is a
/// configuration error: it depends only on the TLS backend and the settings.
pub fn http_client(name: &str, timeout: Duration) -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(user_agent(name))
        .build()
        .map_err(|err| SourceError::Config(format!("HTTP client: {err}")))
}

fn user_agent(name: &str) -> String {
    format!("stargazer-worker-{name}/{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_user_agent_names_the_worker_and_the_version() {
        assert_eq!(
            user_agent("twitter"),
            format!("stargazer-worker-twitter/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[tokio::test]
    async fn requests_carry_the_user_agent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed before the request head ended");
                head.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap().to_ascii_lowercase()
        });
        let client = http_client("youtube", Duration::from_secs(5)).unwrap();
        let response = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(response.status(), 204);
        let head = server.await.unwrap();
        assert!(
            head.contains(&format!("user-agent: {}", user_agent("youtube"))),
            "{head}"
        );
    }
}
