//! Worker logins under attack: failures slow guessing down but never lock a worker out,
//! and logins waiting for a password check are bounded (503 with `Retry-After` beyond).

mod common;

use std::time::{Duration, Instant};

use common::{init_tracing, storage, test_config, Coordinator, PASSWORD, USER};
use stargazer_coordinator::CoordinatorConfig;
use stargazer_core::model::{Access, Permissions};

async fn status_as(coordinator: &Coordinator, user: &str, password: &str) -> (u16, Duration) {
    let started = Instant::now();
    let response = coordinator.get("/v1/status", Some((user, password))).await;
    (response.status().as_u16(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_guesses_never_lock_a_worker_out() {
    init_tracing();
    let config = CoordinatorConfig {
        login_delay_ms: 100,
        login_delay_max_ms: 400,
        ..test_config()
    };
    let coordinator = Coordinator::start(storage().await, config).await;
    let guesses = (0..20).map(|n| {
        let coordinator = &coordinator;
        async move { status_as(coordinator, USER, &format!("guess-{n}")).await }
    });
    let results = futures::future::join_all(guesses).await;
    assert!(
        results.iter().all(|(status, _)| *status == 401),
        "{results:?}"
    );
    let slowest = results
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest >= Duration::from_millis(350),
        "later guesses waited for the earlier ones' failures: {results:?}"
    );

    let (status, took) = status_as(&coordinator, USER, PASSWORD).await;
    assert_eq!(
        status, 200,
        "the right password is accepted after the burst"
    );
    assert!(
        took >= Duration::from_millis(350),
        "it was slowed: {took:?}"
    );
    let (status, took) = status_as(&coordinator, USER, PASSWORD).await;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(350),
        "a remembered worker is not throttled: {took:?}"
    );
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_waiting_for_a_check_are_bounded() {
    init_tracing();
    let storage = storage().await;
    // Expensive enough that the first checks are still running when the rest arrive.
    let hash = tokio::task::spawn_blocking(|| {
        stargazer_core::auth::hash_password("slow-password", 200_000)
    })
    .await
    .unwrap()
    .unwrap();
    storage
        .insert_credential(&stargazer_core::model::Credential {
            username: "slow".into(),
            hash,
            permissions: Permissions {
                coordinator: Some(Access::Ro),
                ..Default::default()
            },
            queues: Vec::new(),
        })
        .await
        .unwrap();
    let config = CoordinatorConfig {
        auth_max_pending: 1,
        login_delay_max_ms: 0,
        ..test_config()
    };
    let coordinator = Coordinator::start(storage, config).await;
    let guesses = (0..6).map(|n| {
        let coordinator = &coordinator;
        async move {
            coordinator
                .get("/v1/status", Some(("slow", &format!("guess-{n}"))))
                .await
        }
    });
    let responses = futures::future::join_all(guesses).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.contains(&401),
        "one guess was checked: {statuses:?}"
    );
    let busy: Vec<_> = responses.iter().filter(|r| r.status() == 503).collect();
    assert!(!busy.is_empty(), "the queue is bounded: {statuses:?}");
    for response in busy {
        assert_eq!(response.headers()["retry-after"], "1");
    }
    // The worker whose credential is cheap still logs in once the burst is over.
    let (status, _) = status_as(&coordinator, USER, PASSWORD).await;
    assert_eq!(status, 200);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_and_its_standby_share_one_login_budget() {
    init_tracing();
    let storage = storage().await;
    let config = |id: &str| CoordinatorConfig {
        instance_id: id.to_owned(),
        login_delay_ms: 200,
        login_delay_max_ms: 3_200,
        ..test_config()
    };
    let first = Coordinator::start(storage.clone(), config("coord-a")).await;
    let second = Coordinator::start(storage, config("coord-b")).await;
    // Three failures, alternating instances: each instance saw at most two itself.
    for coordinator in [&first, &second, &first] {
        assert_eq!(status_as(coordinator, USER, "guess").await.0, 401);
    }
    // The fourth guess, on the instance that saw only one failure, waits for all three
    // (200 ms × 2² = 800 ms); counting alone, it would wait 200 ms.
    let (status, took) = status_as(&second, USER, "guess").await;
    assert_eq!(status, 401);
    assert!(
        took >= Duration::from_millis(700),
        "the second instance counted the first one's failures: {took:?}"
    );
    // Slowed, never locked out: the right password still gets past the check on either
    // instance (the standby then refuses a worker with 503, not 401).
    for coordinator in [&first, &second] {
        let (status, _) = status_as(coordinator, USER, PASSWORD).await;
        assert_ne!(status, 401, "the owner's password is accepted");
    }
    first.stop().await;
    second.stop().await;
}
