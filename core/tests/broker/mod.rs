//! Looking at RabbitMQ from outside with `rabbitmqctl`, for tests that check what the
//! broker itself sees of the bus's connections, and vhosts of their own for tests.

#![allow(dead_code)]

use std::process::Command;

/// `field` (a `rabbitmqctl list_connections` info item such as `pid` or `frame_max`) of
/// every open connection whose client-provided name is one of `names`, as
/// `(name, value)` pairs sorted by name. Blocking: call from `spawn_blocking`.
pub(crate) fn connections_named(field: &str, names: &[String]) -> Vec<(String, String)> {
    let listing = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            field,
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .expect("run rabbitmqctl list_connections");
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let mut found = Vec::new();
    for line in listing.lines() {
        let Some((value, properties)) = line.split_once('\t') else {
            continue;
        };
        for name in names {
            if properties.contains(&format!("{{\"connection_name\",\"{name}\"}}")) {
                found.push((name.clone(), value.trim().to_owned()));
            }
        }
    }
    found.sort();
    found
}

/// Runs `rabbitmqctl` with `args`, failing the test if it fails. Blocking.
pub(crate) fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `STARGAZER_TEST_AMQP_URL` (default guest on 127.0.0.1:5672) without its vhost.
fn amqp_root() -> String {
    let url = std::env::var("STARGAZER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let (scheme, rest) = url.split_once("://").expect("an amqp:// url");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// A virtual host of one test, where guest may do anything; [`TestVhost::delete`] removes
/// it with everything in it.
pub(crate) struct TestVhost {
    /// The vhost's name.
    pub name: String,
}

impl TestVhost {
    /// Creates a fresh vhost.
    pub(crate) async fn create() -> Self {
        let name = format!("sg-bus-{}", uuid::Uuid::new_v4().simple());
        let vhost = name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_vhost", &vhost]);
            rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        })
        .await
        .expect("vhost setup");
        Self { name }
    }

    /// The guest URL of this vhost.
    pub(crate) fn url(&self) -> String {
        format!("{}/{}", amqp_root(), self.name)
    }

    /// The URL of this vhost for `user` with `password`.
    pub(crate) fn url_as(&self, user: &str, password: &str) -> String {
        let root = amqp_root();
        let (scheme, rest) = root.split_once("://").expect("an amqp:// url");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{user}:{password}@{host}/{}", self.name)
    }

    /// Deletes the vhost.
    pub(crate) async fn delete(self) {
        let vhost = self.name;
        tokio::task::spawn_blocking(move || rabbitmqctl(&["delete_vhost", &vhost]))
            .await
            .expect("vhost cleanup");
    }
}
