//! Two middleware-live-check instances on one store and one queue (real RabbitMQ, SQLite
//! and the MongoDB-wire server), each with a YouTube Data API test server of its own so
//! that every call is known to come from one instance: the shard leases split the 120 held
//! videos between them (no video polled by both, calls per round ≈ ceil(120 / 50), not
//! doubled), every event is released exactly once, and the shards of an instance that
//! dies where it stands (its runtime dropped, nothing released) are taken over by the
//! other. Without the claims both instances poll everything, which the last test pins.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use stargazer_core::bus::amqp::AmqpBus;
use stargazer_core::bus::Bus;
use stargazer_core::model::Event;
use stargazer_core::storage::{self, Storage};
use stargazer_middleware_live_check::{LiveCheckConfig, LiveCheckService};
use stargazer_testkit::backends::{event, BusKind, Env, RunningService, StoreKind};
use stargazer_testkit::servers::youtube::{Broadcast, ListRequest, Video, Youtube};
use uuid::Uuid;

const KEY: &str = "test-api-key";
const VIDEOS: usize = 120;

/// Shards and lease term per store: the MongoDB-wire test server answers a lease call in
/// up to a second under load, so its leases get a longer term (and fewer shards).
fn tuning(store: StoreKind) -> (u32, u64) {
    match store {
        StoreKind::Sqlite => (16, 900),
        StoreKind::Mongo => (4, 8000),
    }
}

/// Both test servers know video `id` in state `broadcast`.
fn set_everywhere(apis: &[&Youtube], id: &str, broadcast: Broadcast) {
    for api in apis {
        api.put_video(
            Video {
                broadcast: broadcast.clone(),
                duration_seconds: 0,
                ..Video::upload(id, "UCliveCheckTestChannel", id, Utc::now())
            },
            false,
        );
    }
}

fn video(i: usize) -> String {
    format!("vid{i:08}")
}

fn config(
    queue: &str,
    url: &str,
    namespace: &str,
    claims: bool,
    store: StoreKind,
) -> LiveCheckConfig {
    let (shards, lease_term_ms) = tuning(store);
    LiveCheckConfig {
        queue: queue.to_owned(),
        api_base_url: url.to_owned(),
        api_key: KEY.to_owned(),
        poll_interval_ms: 100,
        backoff_initial_ms: 300,
        backoff_max_ms: 1000,
        kv_namespace: namespace.to_owned(),
        retry_delay_ms: 100,
        shards,
        lease_term_ms,
        claims,
        ..LiveCheckConfig::default()
    }
}

fn start(config: LiveCheckConfig, env: &Env) -> RunningService {
    RunningService::start(
        Box::new(LiveCheckService::new(config)),
        Some(env.storage.clone()),
        Some(env.bus.clone()),
    )
}

async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shard leases whose term runs now, by owner: `(name, epoch)` each.
async fn shard_holders(
    storage: &Arc<dyn Storage>,
    namespace: &str,
) -> HashMap<String, BTreeSet<(String, u64)>> {
    let now = Utc::now();
    let mut holders: HashMap<String, BTreeSet<(String, u64)>> = HashMap::new();
    for lease in storage.lease_list(namespace).await.unwrap() {
        if lease.name.starts_with("shard.") && lease.is_held_at(now) {
            holders
                .entry(lease.owner)
                .or_default()
                .insert((lease.name, lease.epoch));
        }
    }
    holders
}

/// Waits until the shards are held, `shards / owners` each by `owners` instances.
async fn wait_for_split(storage: &Arc<dyn Storage>, namespace: &str, shards: u32, owners: usize) {
    wait_until_async(
        "the shards split between the instances",
        Duration::from_secs(90),
        || async {
            let holders = shard_holders(storage, namespace).await;
            holders.len() == owners
                && holders
                    .values()
                    .all(|held| held.len() == shards as usize / owners)
        },
    )
    .await;
}

async fn publish_held(env: &Env, namespace: &str) -> HashSet<Uuid> {
    let mut ours = HashSet::new();
    for i in 0..VIDEOS {
        let e: Event = event("youtube.live", json!({"x-live-check-video": video(i)}));
        ours.insert(e.id);
        env.bus
            .publish("youtube.live_check", &e.to_bytes())
            .await
            .unwrap();
    }
    wait_until_async("every event stored", Duration::from_secs(90), || async {
        env.storage.kv_list(namespace).await.unwrap().len() == VIDEOS
    })
    .await;
    ours
}

fn ids(calls: &[ListRequest]) -> BTreeSet<String> {
    calls.iter().flat_map(|c| c.ids.iter().cloned()).collect()
}

/// What one instance asked within the observed window.
struct Asked {
    calls: Vec<ListRequest>,
    videos: BTreeSet<String>,
}

impl Asked {
    fn since(api: &Youtube, mark: usize) -> Self {
        let calls = api.list_requests()[mark..].to_vec();
        let videos = ids(&calls);
        Self { calls, videos }
    }

    /// Rounds seen: the most times one video was asked.
    fn rounds(&self) -> usize {
        let mut times: HashMap<&String, usize> = HashMap::new();
        for id in self.calls.iter().flat_map(|c| c.ids.iter()) {
            *times.entry(id).or_default() += 1;
        }
        times.values().copied().max().unwrap_or(0)
    }
}

/// Two instances share 120 held videos; returns what each asked in a settled window,
/// after checking that every event was released once.
async fn two_instances(store: StoreKind, claims: bool) -> (Asked, Asked) {
    let mut env = Env::new(BusKind::Amqp, store).await;
    let api_a = Youtube::start(KEY).await.unwrap();
    let api_b = Youtube::start(KEY).await.unwrap();
    let scheduled = Utc::now() + chrono::Duration::minutes(5);
    for i in 0..VIDEOS {
        set_everywhere(&[&api_a, &api_b], &video(i), Broadcast::Upcoming(scheduled));
    }
    let queue = env.middleware_queue("live_check").await;
    let namespace = format!("live_check_{}", Uuid::new_v4().simple());
    let mut ready = env.ready().await;
    let a = start(config(&queue, &api_a.base, &namespace, claims, store), &env);
    let b = start(config(&queue, &api_b.base, &namespace, claims, store), &env);
    let (shards, _) = tuning(store);
    let ours = publish_held(&env, &namespace).await;

    let leases_before = if claims {
        wait_for_split(&env.storage, &namespace, shards, 2).await;
        Some(shard_holders(&env.storage, &namespace).await)
    } else {
        None
    };
    // A call arriving from here on was sent after both instances settled their shares.
    let marks = (api_a.list_requests().len(), api_b.list_requests().len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while api_a.list_requests().len() < marks.0 + 6 || api_b.list_requests().len() < marks.1 + 6 {
        assert!(Instant::now() < deadline, "both instances keep polling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked_a = Asked::since(&api_a, marks.0);
    let asked_b = Asked::since(&api_b, marks.1);
    if let Some(before) = leases_before {
        assert_eq!(
            shard_holders(&env.storage, &namespace)
                .await
                .into_iter()
                .map(|(owner, held)| (owner, held.into_iter().map(|(n, _)| n).collect()))
                .collect::<HashMap<String, BTreeSet<String>>>(),
            before
                .into_iter()
                .map(|(owner, held)| (owner, held.into_iter().map(|(n, _)| n).collect()))
                .collect::<HashMap<String, BTreeSet<String>>>(),
            "no shard moved during the window"
        );
    }

    for i in 0..VIDEOS {
        set_everywhere(
            &[&api_a, &api_b],
            &video(i),
            Broadcast::Live {
                scheduled,
                started: Utc::now(),
            },
        );
    }
    // Long enough for the MongoDB-wire test server, which takes up to a second per
    // storage call under load (each release is a read, a publish and a delete).
    let mut got = ready
        .collect_n(&ours, VIDEOS, Duration::from_secs(150))
        .await;
    got.extend(ready.collect_for(&ours, Duration::from_millis(800)).await);
    let mut times: HashMap<Uuid, usize> = HashMap::new();
    for r in &got {
        *times.entry(r.event.id).or_default() += 1;
    }
    assert_eq!(times.len(), VIDEOS, "every held event released");
    let repeated = times.values().filter(|n| **n > 1).count();
    if claims {
        assert_eq!(repeated, 0, "no event released twice");
        wait_until_async(
            "released events left storage",
            Duration::from_secs(60),
            || async { env.storage.kv_list(&namespace).await.unwrap().is_empty() },
        )
        .await;
    } else {
        println!("without claims: {repeated} of {VIDEOS} events released more than once");
    }
    a.stop().await;
    b.stop().await;
    if claims {
        assert!(
            shard_holders(&env.storage, &namespace).await.is_empty(),
            "a graceful stop releases the shards"
        );
    }
    env.close().await;
    (asked_a, asked_b)
}

fn check_shared(asked_a: &Asked, asked_b: &Asked) {
    let all: BTreeSet<String> = (0..VIDEOS).map(video).collect();
    let both: BTreeSet<&String> = asked_a.videos.intersection(&asked_b.videos).collect();
    assert!(both.is_empty(), "polled by both instances: {both:?}");
    let union: BTreeSet<String> = asked_a.videos.union(&asked_b.videos).cloned().collect();
    assert_eq!(union, all, "every held video polled by one instance");
    for asked in [asked_a, asked_b] {
        assert!(asked.calls.iter().all(|c| c.ids.len() <= 50));
        // Each round asks every video of the instance's shards once, in calls of ≤ 50.
        let per_round = asked.videos.len().div_ceil(50);
        assert!(
            asked.calls.len() <= per_round * asked.rounds(),
            "{} calls over {} rounds of {} videos",
            asked.calls.len(),
            asked.rounds(),
            asked.videos.len()
        );
    }
    let per_round = asked_a.videos.len().div_ceil(50) + asked_b.videos.len().div_ceil(50);
    println!(
        "calls per round: {per_round} ({} + {} videos), one instance alone: {}",
        asked_a.videos.len(),
        asked_b.videos.len(),
        VIDEOS.div_ceil(50)
    );
    assert!(
        per_round <= VIDEOS.div_ceil(50) + 1,
        "not doubled: {per_round}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_held_videos_sqlite() {
    let (a, b) = two_instances(StoreKind::Sqlite, true).await;
    check_shared(&a, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_held_videos_mongo() {
    let (a, b) = two_instances(StoreKind::Mongo, true).await;
    check_shared(&a, &b);
}

/// What the claims prevent: without them each instance polls every held video, so the
/// checks of the sharing tests fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_claims_both_instances_poll_everything() {
    let (a, b) = two_instances(StoreKind::Sqlite, false).await;
    assert_eq!(a.videos.len(), VIDEOS);
    assert_eq!(b.videos.len(), VIDEOS);
    assert!(std::panic::catch_unwind(|| check_shared(&a, &b)).is_err());
}

/// An instance running on a runtime of its own, with its own connections, as another
/// process would; `kill` drops the runtime where it stands, so nothing is released.
struct OtherProcess {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherProcess {
    fn start(config: LiveCheckConfig, storage_url: String, amqp_url: String) -> Self {
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let storage = storage::connect(&storage_url).await.unwrap();
                let bus: Arc<dyn Bus> = Arc::new(
                    AmqpBus::connect_named(&amqp_url, "sgtest-live-check-b")
                        .await
                        .unwrap(),
                );
                // Never stopped: the runtime goes with its tasks.
                let _running = RunningService::start(
                    Box::new(LiveCheckService::new(config)),
                    Some(storage),
                    Some(bus),
                );
                let _ = killed.await;
            });
            runtime.shutdown_background();
        });
        Self {
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// B holds all the shards, A joins and takes half, B dies where it stands: its leases are
/// not released, run out, and A takes them over and releases every event exactly once.
async fn a_dead_instance_is_taken_over(store: StoreKind) {
    let mut env = Env::new(BusKind::Amqp, store).await;
    let api_a = Youtube::start(KEY).await.unwrap();
    let api_b = Youtube::start(KEY).await.unwrap();
    let scheduled = Utc::now() + chrono::Duration::minutes(5);
    for i in 0..VIDEOS {
        set_everywhere(&[&api_a, &api_b], &video(i), Broadcast::Upcoming(scheduled));
    }
    let queue = env.middleware_queue("live_check").await;
    let namespace = format!("live_check_{}", Uuid::new_v4().simple());
    let mut ready = env.ready().await;
    let b = OtherProcess::start(
        config(&queue, &api_b.base, &namespace, true, store),
        env.storage_url.clone(),
        env.amqp_url().unwrap(),
    );
    let (shards, _) = tuning(store);
    wait_for_split(&env.storage, &namespace, shards, 1).await;
    let b_owner = shard_holders(&env.storage, &namespace)
        .await
        .into_keys()
        .next()
        .unwrap();
    let a = start(config(&queue, &api_a.base, &namespace, true, store), &env);
    let ours = publish_held(&env, &namespace).await;
    wait_for_split(&env.storage, &namespace, shards, 2).await;
    // B polls its half.
    let mark = api_b.list_requests().len();
    wait_until_async("B polls", Duration::from_secs(60), || async {
        api_b.list_requests().len() > mark
    })
    .await;

    b.kill();
    let killed = Instant::now();
    let b_calls = api_b.list_requests().len();
    let held_by_b = shard_holders(&env.storage, &namespace)
        .await
        .get(&b_owner)
        .map_or(0, BTreeSet::len);
    assert_eq!(held_by_b, shards as usize / 2, "a crash releases nothing");

    wait_until_async("A holds every shard", Duration::from_secs(90), || async {
        let holders = shard_holders(&env.storage, &namespace).await;
        holders.len() == 1
            && !holders.contains_key(&b_owner)
            && holders.values().all(|held| held.len() == shards as usize)
    })
    .await;
    let mark_a = api_a.list_requests().len();
    wait_until_async("A polls every video", Duration::from_secs(60), || async {
        ids(&api_a.list_requests()[mark_a..]).len() == VIDEOS
    })
    .await;
    println!(
        "shards taken over {:?} after the kill (lease term {} ms, poll interval 100 ms)",
        killed.elapsed(),
        tuning(store).1
    );
    for i in 0..VIDEOS {
        set_everywhere(
            &[&api_a, &api_b],
            &video(i),
            Broadcast::Live {
                scheduled,
                started: Utc::now(),
            },
        );
    }
    // Long enough for the MongoDB-wire test server, which takes up to a second per
    // storage call under load (each release is a read, a publish and a delete).
    let mut got = ready
        .collect_n(&ours, VIDEOS, Duration::from_secs(150))
        .await;
    got.extend(ready.collect_for(&ours, Duration::from_millis(800)).await);
    let released: HashSet<Uuid> = got.iter().map(|r| r.event.id).collect();
    assert_eq!(released.len(), VIDEOS, "every held event released");
    assert_eq!(got.len(), VIDEOS, "each exactly once");
    assert_eq!(
        api_b.list_requests().len(),
        b_calls,
        "the dead instance polls no more"
    );
    a.stop().await;
    env.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_is_taken_over_sqlite() {
    a_dead_instance_is_taken_over(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_is_taken_over_mongo() {
    a_dead_instance_is_taken_over(StoreKind::Mongo).await;
}
