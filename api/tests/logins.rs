//! Service logins under attack: failures slow guessing down without ever refusing the
//! rightful owner, concurrent guesses are counted before they are checked, password
//! checks are bounded, a changed credential stops working at once, and only the
//! `X-Forwarded-For` hops our proxy added are believed.

mod common;

use std::time::{Duration, Instant};

use common::{perms, Auth, Backend, RawBody, TestServer, TEST_ITERATIONS};
use stargazer_api::ApiConfig;
use stargazer_core::auth::hash_password;
use stargazer_core::model::{Access, Credential};

/// Delays short enough for a test, long enough to tell from no delay at all.
fn throttled_config() -> ApiConfig {
    ApiConfig {
        login_delay_ms: 200,
        login_delay_max_ms: 800,
        ..common::test_config()
    }
}

/// `getEntities` as `username`, with an optional `X-Forwarded-For`: status and time taken.
async fn login(
    server: &TestServer,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (u16, Duration) {
    let mut request = server
        .http
        .post(format!("{}/v1/getEntities", server.base))
        .basic_auth(username, Some(password));
    if let Some(hops) = forwarded_for {
        request = request.header("x-forwarded-for", hops);
    }
    let started = Instant::now();
    let response = request.send().await.expect("the api answers");
    (response.status().as_u16(), started.elapsed())
}

async fn broker_login(server: &TestServer, username: &str, password: &str) -> (String, Duration) {
    let started = Instant::now();
    let response = server
        .http
        .post(format!("{}/auth/user", server.internal_base))
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .expect("the internal listener answers");
    let text = response.text().await.expect("a body");
    (text, started.elapsed())
}

async fn wrong_guesses_slow_the_username_but_never_refuse_its_owner(backend: Backend) {
    let server = TestServer::with_config(backend.connect().await, throttled_config()).await;
    server.bot().await;
    let worker = perms(&[("api", Access::Ro), ("mq", Access::Rw)]);
    server.credential("worker", worker).await;
    // The bot logged in before the attack: its verified pair is remembered.
    assert_eq!(login(&server, "bot", "pw-bot", None).await.0, 200);

    let mut last = Duration::ZERO;
    for _ in 0..4 {
        let (status, took) = login(&server, "bot", "guess", None).await;
        assert_eq!(status, 401);
        last = took;
    }
    assert!(
        last >= Duration::from_millis(700),
        "the fourth guess waited for the three failures before it: {last:?}"
    );
    let (status, took) = login(&server, "bot", "pw-bot", None).await;
    assert_eq!(status, 200, "the owner's remembered pair is never refused");
    assert!(
        took < Duration::from_millis(700),
        "a remembered pair skips the throttle: {took:?}"
    );

    // A right password that was never verified is slowed like any attempt, then accepted.
    for _ in 0..3 {
        assert_eq!(login(&server, "worker", "guess", None).await.0, 401);
    }
    let (status, took) = login(&server, "worker", "pw-worker", None).await;
    assert_eq!(status, 200, "a right password is accepted after its delay");
    assert!(took >= Duration::from_millis(350), "it waited: {took:?}");
    server.stop().await;
}

async fn concurrent_guesses_are_counted_before_they_are_checked(backend: Backend) {
    let server = TestServer::with_config(backend.connect().await, throttled_config()).await;
    server.bot().await;
    let guesses = (0..6).map(|n| {
        let server = &server;
        async move { login(server, "bot", &format!("guess-{n}"), None).await }
    });
    let results = futures::future::join_all(guesses).await;
    assert!(results.iter().all(|(status, _)| *status == 401));
    let slowest = results
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest >= Duration::from_millis(700),
        "later guesses of the burst waited for the earlier ones: {results:?}"
    );
    server.stop().await;
}

async fn a_changed_or_removed_credential_stops_working_at_once(backend: Backend) {
    let server = TestServer::with_config(backend.connect().await, common::test_config()).await;
    let bot = server.bot().await;
    bot.get_entities().await.expect("the bot logs in");
    let stored = server
        .storage
        .get_credential("bot")
        .await
        .expect("storage answers")
        .expect("the bot's credential");

    assert!(server.storage.delete_credential("bot").await.unwrap());
    assert_eq!(
        login(&server, "bot", "pw-bot", None).await.0,
        401,
        "a removed credential is refused on the next request, cache or not"
    );

    let replaced = Credential {
        hash: hash_password("new-password", TEST_ITERATIONS).unwrap(),
        ..stored
    };
    server.storage.insert_credential(&replaced).await.unwrap();
    assert_eq!(login(&server, "bot", "pw-bot", None).await.0, 401);
    assert_eq!(login(&server, "bot", "new-password", None).await.0, 200);
    server.stop().await;
}

async fn password_checks_are_bounded(backend: Backend) {
    let config = ApiConfig {
        pbkdf2_concurrency: 1,
        pbkdf2_wait_ms: 1,
        login_delay_max_ms: 0,
        ..common::test_config()
    };
    let server = TestServer::with_config(backend.connect().await, config).await;
    // A hash expensive enough that one check is still running when the others arrive.
    let hash = tokio::task::spawn_blocking(|| hash_password("slow-password", 200_000))
        .await
        .unwrap()
        .unwrap();
    server
        .storage
        .insert_credential(&Credential {
            username: "slow".into(),
            hash,
            permissions: perms(&[("api", Access::Ro)]),
            queues: Vec::new(),
        })
        .await
        .unwrap();
    let guesses = (0..4).map(|n| {
        let server = &server;
        async move {
            server
                .post(
                    "/v1/getEntities",
                    Auth::Basic("slow", &format!("guess-{n}")),
                    RawBody::Empty,
                )
                .await
        }
    });
    let results = futures::future::join_all(guesses).await;
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(results.iter().any(|r| r.0 == 401), "one guess was checked");
    assert!(
        !busy.is_empty(),
        "the others found no free check: {results:?}"
    );
    for response in busy {
        common::assert_error(response, 429, "rate_limited");
        assert_eq!(response.1["retry-after"], "1");
    }
    server.stop().await;
}

async fn only_the_hops_our_proxy_added_are_believed(backend: Backend) {
    let config = ApiConfig {
        trust_forwarded_for: true,
        ..throttled_config()
    };
    let server = TestServer::with_config(backend.connect().await, config).await;
    server.bot().await;
    // One real check first, so unknown usernames wait as long as a (fast, test) check.
    assert_eq!(login(&server, "bot", "pw-bot", None).await.0, 200);
    // The client writes `6.6.6.6` itself; the proxy appends the address it saw.
    for n in 0..4 {
        let (status, _) = login(
            &server,
            &format!("guess{n}"),
            "x",
            Some("6.6.6.6, 10.0.0.1"),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (_, from_guesser) = login(&server, "fresh", "x", Some("6.6.6.6, 10.0.0.1")).await;
    assert!(
        from_guesser >= Duration::from_millis(700),
        "the guessing address is slowed for any username: {from_guesser:?}"
    );
    let (_, from_other) = login(&server, "fresh2", "x", Some("6.6.6.6, 10.0.0.2")).await;
    assert!(
        from_other < Duration::from_millis(700),
        "a client cannot borrow (or escape) an address by writing it first: {from_other:?}"
    );
    server.stop().await;
}

async fn broker_logins_answer_the_owner_at_once(backend: Backend) {
    let server = TestServer::with_config(backend.connect().await, throttled_config()).await;
    let worker = perms(&[("mq", Access::Rw), ("coordinator", Access::Ro)]);
    server.credential_owning("worker", worker, &[]).await;
    // Every broker login comes from the broker's own address and RabbitMQ queues its
    // requests to us: 20 wrong ones must hold up neither the worker's right one nor
    // each other.
    let started = Instant::now();
    for n in 0..20 {
        let (answer, _) = broker_login(&server, "worker", &format!("guess-{n}")).await;
        assert_eq!(answer, "deny");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no refusal was held back: {:?}",
        started.elapsed()
    );
    let (answer, took) = broker_login(&server, "worker", "pw-worker").await;
    assert!(answer.starts_with("allow"), "{answer}");
    assert!(
        took < Duration::from_secs(1),
        "the right password is answered at once: {took:?}"
    );
    // The public api's throttle did not count the broker's failures against the owner.
    let (status, took) = login(&server, "worker", "pw-worker", None).await;
    assert_eq!(status, 403, "authenticated (no api permission)");
    assert!(took < Duration::from_millis(700), "{took:?}");
    server.stop().await;
}

/// Two api instances on one store share the throttle: failures spread over both slow
/// the next guess on either as if they had all hit it, and the owner still gets in.
async fn two_instances_share_one_login_budget(backend: Backend) {
    let storage = backend.connect().await;
    let first = TestServer::with_config(storage.clone(), throttled_config()).await;
    let second = TestServer::with_config(storage, throttled_config()).await;
    first.bot().await;
    // Three failures, alternating instances: each instance saw at most two itself.
    for server in [&first, &second, &first] {
        assert_eq!(login(server, "bot", "guess", None).await.0, 401);
    }
    // The fourth guess, on the instance that saw only one failure, waits for all three
    // (200 ms × 2² = 800 ms); counting alone, it would wait 200 ms.
    let (status, took) = login(&second, "bot", "guess", None).await;
    assert_eq!(status, 401);
    assert!(
        took >= Duration::from_millis(700),
        "the second instance counted the first one's failures: {took:?}"
    );
    // Slowed, never locked out: the right password still gets in on either instance.
    let (status, _) = login(&first, "bot", "pw-bot", None).await;
    assert_eq!(status, 200);
    first.stop().await;
    second.stop().await;
}

both_backends!(
    two_instances_share_one_login_budget,
    wrong_guesses_slow_the_username_but_never_refuse_its_owner,
    concurrent_guesses_are_counted_before_they_are_checked,
    a_changed_or_removed_credential_stops_working_at_once,
    password_checks_are_bounded,
    only_the_hops_our_proxy_added_are_believed,
    broker_logins_answer_the_owner_at_once,
);
