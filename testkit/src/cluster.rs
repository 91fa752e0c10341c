//! A 3-node RabbitMQ cluster on this machine for fault tests (docs/ARCHITECTURE.md §7):
//! nodes `sgc1@localhost`, `sgc2@localhost`, `sgc3@localhost` on AMQP ports 5691–5693
//! (distribution ports +20000), each under user `rabbitmq` with its own directory in
//! `$TMPDIR/stargazer-cluster/` (so all share the cookie `rabbitmqctl` uses), 2 and 3
//! joined to 1.
//!
//! [`Cluster::shared`] hands out one cluster per test binary: the first caller starts it
//! (or adopts a healthy one left running, e.g. by `STARGAZER_TEST_KEEP_CLUSTER=1`), the
//! others share it, and the nodes are stopped when the last handle drops (unless that
//! variable is set). Stale nodes and data from a crashed run are stopped and wiped first.
//! Each test takes a virtual host of its own ([`ClusterVhost`]). A test that stops a node
//! ([`Cluster::stop_node`]) disturbs every test sharing the cluster at that moment, so
//! fault tests belong in a binary of their own or run one after the other.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::backends::unique;

/// How many nodes the cluster has.
pub const NODES: usize = 3;

/// AMQP port of node 1; node `n` listens on `BASE_PORT + n - 1`.
pub const BASE_PORT: u16 = 5691;

/// The distribution (inter-node) port of a node is its AMQP port plus this.
pub const DIST_PORT_OFFSET: u16 = 20000;

/// How long one node may take to boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// Keeps the cluster running after the last handle drops (for repeated local runs).
pub const KEEP_VARIABLE: &str = "STARGAZER_TEST_KEEP_CLUSTER";

/// A `rabbitmqctl` or `rabbitmq-server` call that failed, with its output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(String);

/// The running cluster; see the module docs. Stops its nodes on drop.
#[derive(Debug)]
pub struct Cluster {
    /// How long starting (or adopting) the cluster took.
    pub startup: Duration,
    /// Whether a healthy cluster was found running and adopted rather than started.
    pub adopted: bool,
}

/// The one cluster of this process, while some test holds it.
static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

impl Cluster {
    /// The cluster of this test binary: started (or adopted) by the first caller, shared
    /// by the later ones while any holds it. Blocks for the start (about half a minute);
    /// call from `spawn_blocking` in async code.
    pub fn shared() -> Result<Arc<Cluster>, ClusterError> {
        let mut shared = SHARED
            .lock()
            .map_err(|_| ClusterError("the cluster lock is poisoned".into()))?;
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// Starts the cluster, or adopts one already running with all nodes joined.
    fn start() -> Result<Cluster, ClusterError> {
        let began = Instant::now();
        if Self::healthy() {
            return Ok(Cluster {
                startup: began.elapsed(),
                adopted: true,
            });
        }
        // Leftovers of a crashed run: a stale node holds the ports, stale data would make
        // a node remember an old cluster.
        for n in 1..=NODES {
            let _ = ctl(n, &["stop"]);
        }
        let base = base_dir();
        if base.exists() {
            std::fs::remove_dir_all(&base)
                .map_err(|e| ClusterError(format!("cannot remove {}: {e}", base.display())))?;
        }
        for n in 1..=NODES {
            start_node_process(n)?;
        }
        for n in 1..=NODES {
            await_startup(n)?;
        }
        for n in 2..=NODES {
            ctl(n, &["stop_app"])?;
            ctl(n, &["join_cluster", &node_name(1)])?;
            ctl(n, &["start_app"])?;
        }
        for n in 1..=NODES {
            await_startup(n)?;
        }
        if !Self::healthy() {
            return Err(ClusterError(format!(
                "the nodes did not form a cluster; logs in {}",
                base.display()
            )));
        }
        Ok(Cluster {
            startup: began.elapsed(),
            adopted: false,
        })
    }

    /// Whether node 1 runs and lists every node as running in its cluster.
    fn healthy() -> bool {
        let Ok(status) = ctl(1, &["cluster_status", "--formatter", "json"]) else {
            return false;
        };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&status) else {
            return false;
        };
        let running = status["running_nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (1..=NODES).all(|n| {
            running
                .iter()
                .any(|node| node.as_str() == Some(&node_name(n)))
        })
    }

    /// The AMQP port of node `n` (1-based).
    pub fn port(n: usize) -> u16 {
        BASE_PORT + (n as u16) - 1
    }

    /// The Erlang node name of node `n` (1-based), e.g. `sgc1@localhost`.
    pub fn node_name(n: usize) -> String {
        node_name(n)
    }

    /// Stops the RabbitMQ application of node `n` (1-based): its clients lose their
    /// connections and its listener closes, the Erlang node stays up. Blocks.
    pub fn stop_node(&self, n: usize) -> Result<(), ClusterError> {
        ctl(n, &["stop_app"]).map(drop)
    }

    /// Starts node `n`'s application again and waits until it runs. Blocks.
    pub fn start_node(&self, n: usize) -> Result<(), ClusterError> {
        ctl(n, &["start_app"])?;
        await_startup(n)
    }

    /// `rabbitmqctl` against node `n` (1-based), returning its standard output. Blocks.
    pub fn rabbitmqctl(&self, n: usize, args: &[&str]) -> Result<String, ClusterError> {
        ctl(n, args)
    }

    /// A fresh virtual host where guest may do anything; deleted when dropped. Blocks.
    pub fn vhost(self: &Arc<Self>) -> Result<ClusterVhost, ClusterError> {
        let name = format!("sgcluster-{}", unique());
        ctl(1, &["add_vhost", &name])?;
        ctl(
            1,
            &["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"],
        )?;
        Ok(ClusterVhost {
            cluster: self.clone(),
            name,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_VARIABLE).is_some() {
            return;
        }
        // The joined nodes first, so node 1 does not wait for them as peers.
        for n in (1..=NODES).rev() {
            if let Err(err) = ctl(n, &["stop"]) {
                eprintln!("stopping {}: {err}", node_name(n));
            }
        }
        let _ = std::fs::remove_dir_all(base_dir());
    }
}

/// A virtual host of the cluster for one test; deleted (with its queues) when dropped.
#[derive(Debug)]
pub struct ClusterVhost {
    cluster: Arc<Cluster>,
    /// The virtual host name.
    pub name: String,
}

impl ClusterVhost {
    /// The cluster it lives on.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The AMQP URL of this virtual host on node `n` (1-based), as guest.
    pub fn amqp_url(&self, n: usize) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{}",
            Cluster::port(n),
            self.name
        )
    }

    /// The URLs of every node, comma-separated: what `amqp_url` takes for a cluster.
    pub fn amqp_url_list(&self) -> String {
        (1..=NODES)
            .map(|n| self.amqp_url(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `(name, type, leader node)` of every queue of this virtual host, asked of the
    /// first running node. Blocks.
    pub fn queues(&self) -> Result<Vec<(String, String, String)>, ClusterError> {
        let args = [
            "list_queues",
            "-p",
            &self.name,
            "-q",
            "--no-table-headers",
            "name",
            "type",
            "leader",
        ];
        let listing = self.on_any_node(&args)?;
        Ok(listing
            .lines()
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                Some((
                    cols.next()?.to_owned(),
                    cols.next()?.to_owned(),
                    cols.next().unwrap_or("").to_owned(),
                ))
            })
            .collect())
    }

    /// Messages waiting in `queue` (ready plus unacknowledged); `None` if there is no
    /// such queue. Blocks.
    pub fn queue_depth(&self, queue: &str) -> Result<Option<u64>, ClusterError> {
        let args = [
            "list_queues",
            "-p",
            &self.name,
            "-q",
            "--no-table-headers",
            "name",
            "messages",
        ];
        let listing = self.on_any_node(&args)?;
        Ok(listing.lines().find_map(|line| {
            let mut cols = line.split_whitespace();
            (cols.next() == Some(queue))
                .then(|| cols.next().and_then(|n| n.parse().ok()))
                .flatten()
        }))
    }

    /// Runs `args` on the first node that answers (one may be stopped by the test).
    fn on_any_node(&self, args: &[&str]) -> Result<String, ClusterError> {
        let mut last = ClusterError("no node answered".into());
        for n in 1..=NODES {
            match ctl(n, args) {
                Ok(output) => return Ok(output),
                Err(err) => last = err,
            }
        }
        Err(last)
    }
}

impl Drop for ClusterVhost {
    fn drop(&mut self) {
        if let Err(err) = self.on_any_node(&["delete_vhost", &self.name]) {
            eprintln!("could not delete cluster vhost {}: {err}", self.name);
        }
    }
}

fn node_name(n: usize) -> String {
    format!("sgc{n}@localhost")
}

fn base_dir() -> PathBuf {
    std::env::temp_dir().join("stargazer-cluster")
}

/// Writes node `n`'s files (owned by user `rabbitmq`) and starts it detached.
fn start_node_process(n: usize) -> Result<(), ClusterError> {
    let dir = base_dir().join(format!("sgc{n}"));
    let port = Cluster::port(n);
    let io = |e: std::io::Error| ClusterError(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("log")).map_err(io)?;
    std::fs::create_dir_all(dir.join("mnesia")).map_err(io)?;
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!("listeners.tcp.default = {port}\n"),
    )
    .map_err(io)?;
    std::fs::write(dir.join("enabled_plugins"), "[].\n").map_err(io)?;
    let chown = Command::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(base_dir())
        .status()
        .map_err(|e| ClusterError(format!("chown: {e}")))?;
    if !chown.success() {
        return Err(ClusterError(format!(
            "cannot chown {} to rabbitmq",
            dir.display()
        )));
    }
    let status = Command::new("rabbitmq-server")
        .arg("-detached")
        .env("RABBITMQ_NODENAME", node_name(n))
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", (port + DIST_PORT_OFFSET).to_string())
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .status()
        .map_err(|e| ClusterError(format!("rabbitmq-server: {e}")))?;
    if !status.success() {
        return Err(ClusterError(format!(
            "rabbitmq-server -detached for {} failed: {status}",
            node_name(n)
        )));
    }
    Ok(())
}

/// Waits until node `n` runs its RabbitMQ application.
fn await_startup(n: usize) -> Result<(), ClusterError> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        match ctl(n, &["await_startup", "--timeout", "30"]) {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                return Err(ClusterError(format!(
                    "{} did not start within {BOOT_TIMEOUT:?}: {err}; logs in {}",
                    node_name(n),
                    base_dir().display()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Longest a single `rabbitmqctl` call may take: a node stuck in boot must fail the
/// test, not hang it.
const CTL_TIMEOUT_SECS: &str = "120";

/// `rabbitmqctl -n sgc<n>@localhost args…` (run as user `rabbitmq` by its wrapper, so it
/// shares the nodes' cookie), killed after [`CTL_TIMEOUT_SECS`].
fn ctl(n: usize, args: &[&str]) -> Result<String, ClusterError> {
    let output = Command::new("timeout")
        .args([CTL_TIMEOUT_SECS, "rabbitmqctl", "-n", &node_name(n)])
        .args(args)
        .output()
        .map_err(|e| ClusterError(format!("cannot run rabbitmqctl: {e}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ClusterError(format!(
            "rabbitmqctl -n {} {} failed: {} {}",
            node_name(n),
            args.join(" "),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
