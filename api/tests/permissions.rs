//! The permission matrix: every credential kind × every method → 200, 401 or 403, with
//! bodies that succeed whenever the caller is allowed.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use serde_json::{json, Value};
use stargazer_core::model::{Access, Entity, Task, TaskParams, User, UserSettings};
use uuid::Uuid;

use common::{channel, entity_body, perms, Auth, Backend, RawBody, TestServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Admin,
    Bot,
    Reader,
    Worker,
    Middleware,
    NoCredentials,
    WrongPassword,
    Session,
}

const KINDS: [Kind; 8] = [
    Kind::Admin,
    Kind::Bot,
    Kind::Reader,
    Kind::Worker,
    Kind::Middleware,
    Kind::NoCredentials,
    Kind::WrongPassword,
    Kind::Session,
];

/// Expected status per method: which kinds get 200 (the rest of the authenticated kinds
/// get 403; no or wrong credentials always 401).
fn allowed(method: &str) -> &'static [Kind] {
    use Kind::*;
    match method {
        "authMe" => &[Admin, Bot, Reader, Worker, Middleware, Session],
        "getEntities" | "getEntity" | "getUserIndex" => &[Admin, Bot, Reader, Session],
        "getUser" | "getSettings" | "getSubscription" | "checkSession" | "getUpcoming" => {
            &[Bot, Reader, Session]
        }
        "delUser" | "updateSetting" | "updateSubscription" | "createCalendarLink"
        | "revokeCalendarLink" => &[Bot, Session],
        "getSubscribers" => &[Bot, Reader],
        "addUser" | "newSession" => &[Bot],
        "newEntity" | "updateEntity" | "delEntity" => &[Admin],
        other => panic!("method {other} has no row in the matrix"),
    }
}

static NEXT: AtomicU32 = AtomicU32::new(1000);

struct Fixture {
    user: Uuid,
    entity: Uuid,
    token: String,
}

async fn fixture(server: &TestServer) -> Fixture {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let user = User {
        id: Uuid::new_v4(),
        im: "telegram".into(),
        im_chat_id: format!("chat-{n}"),
        name: "x".into(),
        language: "en".into(),
        settings: UserSettings::default(),
        created_at: Utc::now(),
    };
    server.storage.insert_user(&user).await.unwrap();
    let entity_id = Uuid::new_v4();
    let entity = Entity {
        id: entity_id,
        names: [("en".to_owned(), format!("E{n}"))].into(),
        default_language: "en".into(),
        group: None,
        translate_to: vec![],
        tasks: vec![Task {
            id: Uuid::new_v4(),
            entity: entity_id,
            params: TaskParams::Youtube {
                channel_id: channel(n),
            },
        }],
    };
    server.storage.insert_entity(&entity).await.unwrap();
    // Sessions are issued through the api, as bots do.
    let (status, _, body) = server
        .post(
            "/v1/newSession",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"user": user.id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    Fixture {
        user: user.id,
        entity: entity_id,
        token: body["data"]["token"].as_str().unwrap().to_owned(),
    }
}

fn body(method: &str, f: &Fixture, session: bool) -> Value {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    match method {
        "getUser" | "delUser" | "getSettings" | "getSubscription" | "getUpcoming"
        | "createCalendarLink" | "revokeCalendarLink" => json!({"user": f.user}),
        "addUser" => json!({"im": "telegram", "chat_id": format!("new-{n}")}),
        "getEntities" | "authMe" | "getUserIndex" => json!({}),
        "newSession" => json!({"user": f.user}),
        "checkSession" if session => json!({}),
        "checkSession" => json!({"token": f.token}),
        "updateSetting" => json!({"user": f.user, "language": "ja"}),
        "updateSubscription" => json!({"user": f.user, "entity": f.entity}),
        "newEntity" => entity_body("New", n),
        "getEntity" | "delEntity" => json!({"id": f.entity}),
        "updateEntity" => json!({"id": f.entity, "names": {"en": "Renamed"}}),
        "getSubscribers" => json!({"entity": f.entity, "kind": "youtube.live", "im": "telegram"}),
        other => panic!("no body for {other}"),
    }
}

async fn permission_matrix(backend: Backend) {
    // Wrong passwords slow the next checks of their username down; turn that off so the
    // matrix runs at full speed.
    let config = stargazer_api::ApiConfig {
        login_delay_max_ms: 0,
        ..common::test_config()
    };
    let server = TestServer::with_config(backend.connect().await, config).await;
    server
        .credential("admin", perms(&[("admin", Access::Rw)]))
        .await;
    server.bot().await;
    server
        .credential("reader", perms(&[("api", Access::Ro)]))
        .await;
    server
        .credential(
            "worker",
            perms(&[("coordinator", Access::Ro), ("mq", Access::Rw)]),
        )
        .await;
    server
        .credential("middleware", perms(&[("mq", Access::Rw)]))
        .await;

    let methods = [
        "getUser",
        "addUser",
        "delUser",
        "getEntities",
        "newSession",
        "checkSession",
        "authMe",
        "getSettings",
        "updateSetting",
        "getSubscription",
        "updateSubscription",
        "newEntity",
        "getEntity",
        "updateEntity",
        "delEntity",
        "getUserIndex",
        "getSubscribers",
        "getUpcoming",
        "createCalendarLink",
        "revokeCalendarLink",
    ];
    let mut failures = Vec::new();
    for method in methods {
        for kind in KINDS {
            let f = fixture(&server).await;
            let auth = match kind {
                Kind::Admin => Auth::Basic("admin", "pw-admin"),
                Kind::Bot => Auth::Basic("bot", "pw-bot"),
                Kind::Reader => Auth::Basic("reader", "pw-reader"),
                Kind::Worker => Auth::Basic("worker", "pw-worker"),
                Kind::Middleware => Auth::Basic("middleware", "pw-middleware"),
                Kind::NoCredentials => Auth::None,
                Kind::WrongPassword => Auth::Basic("bot", "wrong"),
                Kind::Session => Auth::Bearer(&f.token),
            };
            let expected = match kind {
                Kind::NoCredentials | Kind::WrongPassword => 401,
                k if allowed(method).contains(&k) => 200,
                _ => 403,
            };
            let request = body(method, &f, kind == Kind::Session);
            let (status, _, response) = server
                .post(&format!("/v1/{method}"), auth, RawBody::Json(request))
                .await;
            if status != expected {
                failures.push(format!(
                    "{method} as {kind:?}: expected {expected}, got {status}: {response}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    server.stop().await;
}

both_backends!(permission_matrix);
