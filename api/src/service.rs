//! The api as a platform [`Service`].

use async_trait::async_trait;
use stargazer_core::service::{Capability, Listen, Needs, Service, ServiceContext, ServiceError};

use crate::{serve, ApiConfig, Listeners};

/// The api: RPC, sessions, the broker's auth backend, OpenAPI and the settings page on
/// `api.listen`, and the internal routes on `api.internal_listen` when set.
pub struct ApiService {
    config: ApiConfig,
}

impl ApiService {
    /// The api with these settings.
    pub fn new(config: ApiConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Service for ApiService {
    fn name(&self) -> &'static str {
        "api"
    }

    fn needs(&self) -> Needs {
        let mut listeners = vec![Listen {
            key: "api.listen",
            addr: self.config.listen,
        }];
        if let Some(addr) = self.config.internal_listen {
            listeners.push(Listen {
                key: "api.internal_listen",
                addr,
            });
        }
        Needs {
            // The api serves all of the storage (admins, users, brokers, bots).
            storage: Capability::ALL.to_vec(),
            bus: false,
            listeners,
            serves_metrics: true,
        }
    }

    fn describe(&self) -> String {
        let internal = match self.config.internal_listen {
            Some(addr) => format!("; internal /auth/* and /metrics on http://{addr}"),
            None => String::new(),
        };
        format!(
            "http://{} (RPC /v1/…, /openapi.json, /healthz, /metrics){internal}",
            self.config.listen
        )
    }

    async fn run(self: Box<Self>, mut cx: ServiceContext) -> Result<(), ServiceError> {
        let expected = self.needs().listeners.len();
        let mut listeners = cx.take_listeners(expected)?.into_iter();
        let public = listeners
            .next()
            .ok_or(stargazer_core::service::ContextError::NoListener(0))?;
        let listeners = Listeners {
            public,
            internal: listeners.next(),
        };
        serve(
            self.config,
            listeners,
            cx.storage()?,
            &cx.registry,
            cx.shutdown,
        )
        .await?;
        Ok(())
    }
}
