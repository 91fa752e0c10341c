//! Shared helpers of the api integration tests: storage backends, a server on a random
//! port, credentials of every kind and raw HTTP calls.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use stargazer_api::client::ApiClient;
use stargazer_api::ApiConfig;
use stargazer_core::auth::hash_password;
use stargazer_core::model::{Access, Credential, Permissions};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The storage implementations every HTTP test runs against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Mongo,
}

impl Backend {
    pub(crate) async fn connect(self) -> Arc<dyn Storage> {
        let url = match self {
            Backend::Sqlite => "sqlite::memory:".to_owned(),
            Backend::Mongo => format!(
                "mongodb://127.0.0.1:27017/sg_api_{}",
                Uuid::new_v4().simple()
            ),
        };
        stargazer_core::storage::connect(&url)
            .await
            .unwrap_or_else(|err| panic!("cannot open {url}: {err}"))
    }
}

/// Declares `sqlite::name` and `mongo::name` tests for each `async fn name(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Mongo).await
                }
            )*
        }
    };
}

/// Fast hashes for tests (production uses 600 000 rounds).
pub(crate) const TEST_ITERATIONS: u32 = 1000;

/// A config suited to tests.
pub(crate) fn test_config() -> ApiConfig {
    ApiConfig {
        pbkdf2_iterations: TEST_ITERATIONS,
        ..ApiConfig::default()
    }
}

/// The api running on `127.0.0.1:<random>` (and its internal listener on another
/// random port) until dropped or stopped.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    /// The internal listener: the RabbitMQ auth backend.
    pub internal_addr: SocketAddr,
    /// `http://<internal_addr>`.
    pub internal_base: String,
    pub storage: Arc<dyn Storage>,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), stargazer_api::Error>>>,
}

impl TestServer {
    pub(crate) async fn start(backend: Backend) -> Self {
        Self::with_config(backend.connect().await, test_config()).await
    }

    pub(crate) async fn with_config(storage: Arc<dyn Storage>, config: ApiConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on_listener(storage, config, listener).await
    }

    pub(crate) async fn on_listener(
        storage: Arc<dyn Storage>,
        config: ApiConfig,
        listener: tokio::net::TcpListener,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal_addr = internal.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (storage_for_server, stop) = (storage.clone(), shutdown.clone());
        let handle = tokio::spawn(async move {
            stargazer_api::serve(
                config,
                stargazer_api::Listeners {
                    public: listener,
                    internal: Some(internal),
                },
                storage_for_server,
                &prometheus::Registry::new(),
                stop,
            )
            .await
        });
        Self {
            addr,
            base: format!("http://{addr}"),
            internal_addr,
            internal_base: format!("http://{internal_addr}"),
            storage,
            http: reqwest::Client::new(),
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops the server and checks it returned cleanly.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }

    pub(crate) fn client(&self) -> ApiClient {
        ApiClient::new(&self.base).unwrap()
    }

    /// Stores a credential with the given permissions; returns a client using it.
    pub(crate) async fn credential(&self, username: &str, permissions: Permissions) -> ApiClient {
        self.credential_owning(username, permissions, &[]).await
    }

    /// Stores a credential with the given permissions owning broker `queues`
    /// (suffixes); its password is `pw-<username>`. Returns a client using it.
    pub(crate) async fn credential_owning(
        &self,
        username: &str,
        permissions: Permissions,
        queues: &[&str],
    ) -> ApiClient {
        let password = format!("pw-{username}");
        let hash = hash_password(&password, TEST_ITERATIONS).unwrap();
        self.storage
            .insert_credential(&Credential {
                username: username.to_owned(),
                hash,
                permissions,
                queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            })
            .await
            .unwrap();
        self.client().with_basic(username, password)
    }

    pub(crate) async fn admin(&self) -> ApiClient {
        self.credential(
            "admin",
            perms(&[("admin", Access::Rw), ("api", Access::Ro)]),
        )
        .await
    }

    pub(crate) async fn bot(&self) -> ApiClient {
        self.credential_owning(
            "bot",
            perms(&[("api", Access::Rw), ("mq", Access::Ro)]),
            &["bot.telegram"],
        )
        .await
    }

    /// A raw POST returning status, headers and JSON body.
    pub(crate) async fn post(
        &self,
        path: &str,
        auth: Auth<'_>,
        body: RawBody,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base));
        req = match auth {
            Auth::None => req,
            Auth::Basic(user, pass) => req.basic_auth(user, Some(pass)),
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Header(value) => req.header("authorization", value),
        };
        req = match body {
            RawBody::Json(value) => req.json(&value),
            RawBody::Text(text) => req.header("content-type", "application/json").body(text),
            RawBody::Empty => req,
        };
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, value)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
    Header(&'a str),
}

pub(crate) enum RawBody {
    Json(Value),
    Text(String),
    Empty,
}

pub(crate) fn perms(list: &[(&str, Access)]) -> Permissions {
    let mut p = Permissions::default();
    for (component, access) in list {
        match *component {
            "api" => p.api = Some(*access),
            "admin" => p.admin = Some(*access),
            "mq" => p.mq = Some(*access),
            "coordinator" => p.coordinator = Some(*access),
            other => panic!("unknown component {other}"),
        }
    }
    p
}

/// A valid YouTube channel id derived from `n`.
pub(crate) fn channel(n: u32) -> String {
    format!("UC{:022}", n)
}

/// A `newEntity` body.
pub(crate) fn entity_body(name: &str, n: u32) -> Value {
    json!({
        "names": {"en": name},
        "default_language": "en",
        "tasks": [{"kind": "youtube", "channel_id": channel(n)}, {"kind": "twitter", "user_id": format!("{}", 1000 + n)}],
    })
}

/// Asserts an error envelope with `status` and `code`.
#[track_caller]
pub(crate) fn assert_error(
    result: &(u16, reqwest::header::HeaderMap, Value),
    status: u16,
    code: &str,
) {
    let (got, _, body) = result;
    assert_eq!(*got, status, "body: {body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["time"].is_i64(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
