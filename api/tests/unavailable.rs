//! Storage outages: a database that stops answering turns requests into 503
//! `unavailable` (and RabbitMQ auth checks into a non-200 deny), never a 500 or a hang.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use stargazer_testkit::faulty::FaultyStorage;

use common::{assert_error, Auth, Backend, RawBody, TestServer};

async fn storage_outage_is_503(backend: Backend) {
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let storage = FaultyStorage::new(backend.connect().await, move |_| {
        switch.load(Ordering::SeqCst)
    });
    let server = TestServer::with_config(Arc::new(storage), common::test_config()).await;
    let bot = server.bot().await;
    let user = bot
        .add_user(&stargazer_api::types::AddUser {
            im: "telegram".into(),
            chat_id: "1".into(),
            name: String::new(),
            language: "en".into(),
        })
        .await
        .unwrap();
    let token = bot.new_session(user.id).await.unwrap().token;
    server
        .credential(
            "fresh",
            common::perms(&[("api", stargazer_core::model::Access::Ro)]),
        )
        .await;

    down.store(true, Ordering::SeqCst);
    // A verified (cached) credential reaches the method, which fails.
    let cached = server
        .post(
            "/v1/getUser",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(serde_json::json!({"user": user.id})),
        )
        .await;
    assert_error(&cached, 503, "unavailable");
    assert!(
        !cached.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.1.2.3"),
        "driver detail leaked"
    );
    // An uncached credential cannot be checked.
    let fresh = server
        .post(
            "/v1/getEntities",
            Auth::Basic("fresh", "pw-fresh"),
            RawBody::Empty,
        )
        .await;
    assert_error(&fresh, 503, "unavailable");
    // Sessions cannot be looked up.
    let session = server
        .post("/v1/getSettings", Auth::Bearer(&token), RawBody::Empty)
        .await;
    assert_error(&session, 503, "unavailable");
    // RabbitMQ gets a non-200 (which it treats as deny).
    let mq = server
        .http
        .post(format!("{}/auth/user", server.internal_base))
        .form(&[("username", "fresh"), ("password", "pw-fresh")])
        .send()
        .await
        .unwrap();
    assert_eq!(mq.status(), 503);
    assert_eq!(mq.text().await.unwrap(), "deny");

    down.store(false, Ordering::SeqCst);
    assert_eq!(bot.get_user(user.id).await.unwrap().id, user.id);
    server.stop().await;
}

both_backends!(storage_outage_is_503);
