//! The RabbitMQ bus on the 3-node test cluster ([`stargazer_testkit::cluster`]) with
//! quorum queues: it connects through the list of the three URLs, and when the node it is
//! connected to (which also leads the queue) stops while messages flow, it reconnects to
//! another node and every message published before and after is consumed, nothing
//! dead-lettered (docs/ARCHITECTURE.md §4, §6).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stargazer_core::bus::amqp::{self, AmqpBus};
use stargazer_core::bus::{Bus, BusOptions, QueueSpec};
use stargazer_core::topology::{QueueType, Topology, DEAD_LETTER_QUEUE};
use stargazer_testkit::cluster::{Cluster, ClusterVhost};

/// Messages published in all; the node stops after [`STOP_AFTER`] of them.
const MESSAGES: usize = 400;
const STOP_AFTER: usize = 150;

/// Runs a blocking cluster call off the runtime.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call).await.expect("join")
}

/// The leader node of `queue` (e.g. `sgc1@localhost`), as the cluster lists it.
async fn leader(vhost: &Arc<ClusterVhost>, queue: &str) -> String {
    let vhost = vhost.clone();
    let queue = queue.to_owned();
    blocking(move || {
        vhost
            .queues()
            .expect("list queues")
            .into_iter()
            .find(|(name, _, _)| *name == queue)
            .map(|(_, _, leader)| leader)
            .unwrap_or_default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_keep_every_message_when_the_connected_node_stops() {
    // The bus's reconnect log lines show the failover in the test output.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let cluster = blocking(Cluster::shared).await.expect("start the cluster");
    eprintln!(
        "cluster {} in {:.1} s",
        if cluster.adopted {
            "adopted"
        } else {
            "started"
        },
        cluster.startup.as_secs_f64()
    );
    let vhost = Arc::new({
        let cluster = cluster.clone();
        blocking(move || cluster.vhost())
            .await
            .expect("cluster vhost")
    });
    let urls = vhost.amqp_url_list();
    let spec = QueueSpec::new("stargazer.middleware.cluster", "#.cluster", 50);
    let topology = Topology::new(vec![spec.clone()]).with_queue_type(QueueType::Quorum);
    let steps = amqp::setup(&urls, &topology).await.expect("setup");
    assert!(
        steps.iter().all(|step| step.outcome.is_ok()),
        "setup: {steps:?}"
    );
    let queues = {
        let vhost = vhost.clone();
        blocking(move || vhost.queues()).await.expect("queues")
    };
    for queue in [DEAD_LETTER_QUEUE, spec.name.as_str()] {
        let (_, kind, _) = queues
            .iter()
            .find(|(name, _, _)| name == queue)
            .unwrap_or_else(|| panic!("{queue} missing: {queues:?}"));
        assert_eq!(kind, "quorum", "{queue}");
    }

    let options = BusOptions {
        topology,
        ..BusOptions::default()
    };
    let bus = Arc::new(
        AmqpBus::connect_named_with(&urls, "cluster-test", options)
            .await
            .expect("connect through the list"),
    );
    let mut consumer = bus.consume(&spec).await.expect("consume");
    let connected = bus.connected_endpoint() + 1;
    let leader_before = leader(&vhost, &spec.name).await;
    eprintln!("bus on node {connected}, queue leader {leader_before}");

    // Publish while consuming; stop the bus's node part-way.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for id in 0..MESSAGES {
                let body = format!("{{\"id\":{id}}}");
                bus.publish("youtube.cluster", body.as_bytes())
                    .await
                    .unwrap_or_else(|err| panic!("publish {id}: {err}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut seen = HashSet::new();
    let mut deliveries = 0;
    let mut stopped: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} messages consumed",
            seen.len()
        );
        if stopped.is_none() && seen.len() >= STOP_AFTER {
            let cluster = cluster.clone();
            blocking(move || cluster.stop_node(connected))
                .await
                .expect("stop the bus's node");
            eprintln!("stopped node {connected} after {} messages", seen.len());
            stopped = Some(Instant::now());
        }
        let Ok(next) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await else {
            continue;
        };
        let delivery = next.expect("bus open");
        deliveries += 1;
        let body: serde_json::Value = serde_json::from_slice(&delivery.body).expect("a JSON body");
        let id = body["id"].as_u64().expect("an id");
        // Deliveries taken from the lost channel cannot be acked; they come back.
        if delivery.ack().await.is_ok() {
            seen.insert(id);
        }
    }
    publisher.await.expect("publisher done");
    let reconnected_after = stopped.map(|at| at.elapsed());
    eprintln!(
        "all {MESSAGES} consumed ({deliveries} deliveries); bus now on node {}, {} connections opened; {reconnected_after:?} after the stop",
        bus.connected_endpoint() + 1,
        bus.connections_opened()
    );
    assert_ne!(
        bus.connected_endpoint() + 1,
        connected,
        "the bus moved to another node"
    );
    assert!(bus.connections_opened() >= 2);
    let leader_after = leader(&vhost, &spec.name).await;
    if leader_before == Cluster::node_name(connected) {
        assert_ne!(leader_after, leader_before, "a new leader took over");
    }
    let dead = {
        let vhost = vhost.clone();
        blocking(move || vhost.queue_depth(DEAD_LETTER_QUEUE))
            .await
            .expect("dead-letter depth")
    };
    assert_eq!(dead, Some(0), "nothing dead-lettered");
    bus.close().await;
    {
        let cluster = cluster.clone();
        blocking(move || cluster.start_node(connected))
            .await
            .expect("restart the node");
    }
    drop(vhost);
    blocking(move || drop(cluster)).await;
}
