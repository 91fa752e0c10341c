//! A RabbitMQ node of a test's own that authenticates through the api's internal
//! listener (docs/ARCHITECTURE.md §7), stopped by a guard even when an assertion fails.
//! Included by the tests that start one; each uses only part of it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use uuid::Uuid;

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long one AMQP operation may take before the test fails.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops the node and removes its directory when dropped.
pub(crate) struct Node {
    name: &'static str,
    /// The AMQP port.
    pub port: u16,
    dir: PathBuf,
}

impl Node {
    /// Starts node `name` (`<name>@localhost`) on AMQP `port` (distribution port
    /// `port + 20000`), asking `auth_base` (`http://[user:secret@]host:port`) for every
    /// login and permission.
    pub(crate) fn start(name: &'static str, port: u16, auth_base: &str) -> Node {
        let node = Node {
            name,
            port,
            dir: std::env::temp_dir().join(format!("{name}-{}", Uuid::new_v4().simple())),
        };
        // A node left over from an interrupted run would hold the ports.
        let _ = node.rabbitmqctl(&["stop"]);
        std::fs::create_dir_all(node.dir.join("log")).unwrap();
        std::fs::create_dir_all(node.dir.join("mnesia")).unwrap();
        std::fs::write(
            node.dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = {port}\n\
                 auth_backends.1 = http\n\
                 auth_http.http_method = post\n\
                 auth_http.user_path = {auth_base}/auth/user\n\
                 auth_http.vhost_path = {auth_base}/auth/vhost\n\
                 auth_http.resource_path = {auth_base}/auth/resource\n\
                 auth_http.topic_path = {auth_base}/auth/topic\n"
            ),
        )
        .unwrap();
        std::fs::write(
            node.dir.join("enabled_plugins"),
            "[rabbitmq_auth_backend_http].\n",
        )
        .unwrap();
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&node.dir)
            .status()
            .expect("chown runs");
        assert!(
            chown.success(),
            "cannot chown {} to rabbitmq",
            node.dir.display()
        );
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", node.node_name())
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", (port + 20000).to_string())
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                node.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .status()
            .expect("rabbitmq-server runs");
        assert!(
            status.success(),
            "rabbitmq-server -detached failed: {status}"
        );
        node
    }

    fn node_name(&self) -> String {
        format!("{}@localhost", self.name)
    }

    /// Waits until the node accepts connections.
    pub(crate) async fn await_startup(&self) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let name = self.node_name();
            let output = tokio::task::spawn_blocking(move || {
                rabbitmqctl(&name, &["await_startup", "--timeout", "30"])
            })
            .await
            .unwrap();
            match output {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => panic!(
                    "node {} did not start within {BOOT_TIMEOUT:?}: {err}; logs in {}",
                    self.node_name(),
                    self.dir.join("log").display()
                ),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Connects as `user` to the default virtual host.
    pub(crate) async fn connect(&self, user: &str, password: &str) -> lapin::Result<Connection> {
        let uri = format!("amqp://{user}:{password}@127.0.0.1:{}/%2f", self.port);
        match tokio::time::timeout(
            OP_TIMEOUT,
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => panic!("connecting as {user} timed out after {OP_TIMEOUT:?}"),
        }
    }

    fn rabbitmqctl(&self, args: &[&str]) -> Result<(), String> {
        rabbitmqctl(&self.node_name(), args)
    }
}

fn rabbitmqctl(node: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new("rabbitmqctl")
        .args(["-n", node])
        .args(args)
        .output()
        .map_err(|err| format!("rabbitmqctl: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {} {}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(err) = self.rabbitmqctl(&["stop"]) {
            eprintln!("stopping {}: {err}", self.node_name());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `err` is RabbitMQ's 403 ACCESS_REFUSED.
pub(crate) fn access_refused(err: &lapin::Error) -> bool {
    match err {
        lapin::Error::ProtocolError(amqp) => amqp.get_id() == 403,
        other => format!("{other:?}").contains("ACCESS_REFUSED"),
    }
}

/// Runs `fut`, failing the test when it takes longer than [`OP_TIMEOUT`].
pub(crate) async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(OP_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out after {OP_TIMEOUT:?}"))
}
