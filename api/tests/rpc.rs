//! Every RPC method over real HTTP against both storage backends: success paths through
//! the typed client, error statuses through raw requests.

mod common;

use chrono::{Duration, Utc};
use serde_json::json;
use stargazer_api::client::ClientError;
use stargazer_api::types::{
    AddUser, ErrorCode, Me, NewEntity, TaskParams, UpdateEntity, UpdateSetting, UpdateSubscription,
};
use stargazer_core::auth::{new_token, token_hash};
use stargazer_core::model::{Group, Session};
use uuid::Uuid;

use common::{assert_error, channel, entity_body, Auth, Backend, RawBody, TestServer};

#[track_caller]
fn assert_code(err: ClientError, status: u16, code: ErrorCode) {
    assert_eq!(err.status(), Some(status), "{err}");
    assert_eq!(err.code(), Some(code), "{err}");
}

fn add_user(chat: &str) -> AddUser {
    AddUser {
        im: "telegram".into(),
        chat_id: chat.into(),
        name: format!("chat {chat}"),
        language: "en".into(),
    }
}

fn new_entity(name: &str, n: u32) -> NewEntity {
    serde_json::from_value(entity_body(name, n)).unwrap()
}

async fn envelope_and_body_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.bot().await;
    bot.add_user(&add_user("1")).await.unwrap();

    let ok = server
        .post(
            "/v1/getEntities",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Empty,
        )
        .await;
    assert_eq!(ok.0, 200);
    assert_eq!(ok.2["success"], true);
    assert!(ok.2["time"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(ok.2["data"], json!([]));

    let unknown = server
        .post(
            "/v1/stealEverything",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Empty,
        )
        .await;
    assert_error(&unknown, 404, "unknown_method");
    let methods = unknown.2["error"]["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 20);
    assert!(methods.contains(&json!("getSubscribers")));

    let get = server
        .http
        .get(format!("{}/v1/getEntities", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");

    let broken = server
        .post(
            "/v1/getUser",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Text("{\"user\": ".into()),
        )
        .await;
    assert_error(&broken, 400, "bad_request");

    // Well-formed JSON that is not an object is a 422 saying so, in the error envelope
    // (serde alone would read a struct of optional fields from `[]`).
    for (method, body, kind) in [
        ("getUser", "[]", "an array"),
        ("getEntities", "[]", "an array"),
        ("getUserIndex", "[]", "an array"),
        (
            "getEntity",
            "[\"00000000-0000-0000-0000-000000000001\"]",
            "an array",
        ),
        ("getUser", "\"x\"", "a string"),
        ("getUser", "null", "null"),
        ("authMe", "true", "a boolean"),
        ("getUser", "7", "a number"),
    ] {
        let response = server
            .post(
                &format!("/v1/{method}"),
                Auth::Basic("bot", "pw-bot"),
                RawBody::Text(body.into()),
            )
            .await;
        assert_error(&response, 422, "invalid_input");
        assert_eq!(response.2["success"], json!(false), "{body}");
        assert_eq!(
            response.2["error"]["message"],
            json!(format!("the body must be a JSON object, not {kind}")),
            "{body}"
        );
    }
    // Truncated or broken JSON is a 400, whatever it would have been; whitespace alone is
    // not JSON either (only a body with no bytes at all reads as `{}`).
    for (method, body) in [
        ("getEntity", "{"),
        ("getEntity", "["),
        ("getEntity", "{\"id\": \""),
        ("getEntity", "{\"id\" 1}"),
        ("getEntity", "nul"),
        ("getEntities", "\r"),
        ("getEntities", " \n"),
    ] {
        let response = server
            .post(
                &format!("/v1/{method}"),
                Auth::Basic("bot", "pw-bot"),
                RawBody::Text(body.into()),
            )
            .await;
        assert_error(&response, 400, "bad_request");
    }

    let wrong_type = server
        .post(
            "/v1/getEntity",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"id": "not-a-uuid"})),
        )
        .await;
    assert_error(&wrong_type, 422, "invalid_input");
    assert!(
        wrong_type.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`id`"),
        "{}",
        wrong_type.2
    );

    let missing = server
        .post(
            "/v1/newSession",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({})),
        )
        .await;
    assert_error(&missing, 422, "invalid_input");
    assert!(
        missing.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`user`"),
        "{}",
        missing.2
    );

    let unknown_field = server
        .post(
            "/v1/getEntities",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"evil": 1})),
        )
        .await;
    assert_error(&unknown_field, 422, "invalid_input");
    assert!(unknown_field.2["error"]["message"]
        .as_str()
        .unwrap()
        .contains("evil"));

    let nested = server
        .post(
            "/v1/updateSubscription",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"user": Uuid::new_v4(), "entity": Uuid::new_v4(), "kinds": [1]})),
        )
        .await;
    assert_error(&nested, 422, "invalid_input");
    assert!(
        nested.2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kinds"),
        "{}",
        nested.2
    );

    let huge = format!("{{\"token\": \"{}\"}}", "x".repeat(100 * 1024));
    let too_large = server
        .post(
            "/v1/checkSession",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Text(huge),
        )
        .await;
    assert_error(&too_large, 413, "payload_too_large");

    let no_auth = server
        .post("/v1/getEntities", Auth::None, RawBody::Empty)
        .await;
    assert_error(&no_auth, 401, "unauthorized");
    let challenges: Vec<_> = no_auth.1.get_all("www-authenticate").iter().collect();
    assert!(
        challenges
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("Basic")),
        "{challenges:?}"
    );
    assert!(
        challenges
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("Bearer")),
        "{challenges:?}"
    );
    let garbage = server
        .post("/v1/getEntities", Auth::Header("Basic !!!"), RawBody::Empty)
        .await;
    assert_error(&garbage, 401, "unauthorized");
    let scheme = server
        .post("/v1/getEntities", Auth::Header("Digest x"), RawBody::Empty)
        .await;
    assert_error(&scheme, 401, "unauthorized");

    let nowhere = server
        .http
        .get(format!("{}/nothing-here", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    server.stop().await;
}

async fn users(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.bot().await;

    let user = bot.add_user(&add_user("-100123")).await.unwrap();
    assert_eq!(user.im, "telegram");
    assert_eq!(user.im_chat_id, "-100123");
    assert_eq!(user.language, "en");
    assert_code(
        bot.add_user(&add_user("-100123")).await.unwrap_err(),
        409,
        ErrorCode::Conflict,
    );
    let mut bad = add_user("1");
    bad.im = "Tele Gram".into();
    assert_code(
        bot.add_user(&bad).await.unwrap_err(),
        422,
        ErrorCode::InvalidInput,
    );
    let mut bad = add_user("1");
    bad.language = "english".into();
    assert_code(
        bot.add_user(&bad).await.unwrap_err(),
        422,
        ErrorCode::InvalidInput,
    );

    assert_eq!(bot.get_user(user.id).await.unwrap(), user);
    assert_eq!(bot.find_user("telegram", "-100123").await.unwrap(), user);
    assert_code(
        bot.find_user("telegram", "42").await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        bot.get_user(Uuid::new_v4()).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    let both = server
        .post(
            "/v1/getUser",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"user": user.id, "im": "telegram", "chat_id": "1"})),
        )
        .await;
    assert_error(&both, 422, "invalid_input");
    let half = server
        .post(
            "/v1/getUser",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"im": "telegram"})),
        )
        .await;
    assert_error(&half, 422, "invalid_input");
    // Neither asks for the caller's own user, which a service account does not have.
    let none = server
        .post("/v1/getUser", Auth::Basic("bot", "pw-bot"), RawBody::Empty)
        .await;
    assert_error(&none, 403, "forbidden");

    // Deleting a user removes their sessions and subscriptions.
    let admin = server.admin().await;
    let entity = admin.new_entity(&new_entity("Pekora", 1)).await.unwrap();
    bot.update_subscription(&UpdateSubscription {
        user: Some(user.id),
        entity: entity.id,
        subscribed: true,
        kinds: vec![],
        mention: None,
    })
    .await
    .unwrap();
    let session = bot.new_session(user.id).await.unwrap();
    assert_eq!(bot.del_user(Some(user.id)).await.unwrap().id, user.id);
    assert_code(
        bot.get_user(user.id).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        bot.del_user(Some(user.id)).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert!(server
        .storage
        .get_session(&token_hash(&session.token))
        .await
        .unwrap()
        .is_none());
    assert!(server
        .storage
        .list_subscriptions(user.id)
        .await
        .unwrap()
        .is_empty());
    assert!(bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap()
        .is_empty());
    let gone = server.client().with_bearer(&session.token);
    assert_code(
        gone.auth_me(None).await.unwrap_err(),
        401,
        ErrorCode::Unauthorized,
    );

    // A session may delete its own user, not another.
    let other = bot.add_user(&add_user("2")).await.unwrap();
    let me = bot.add_user(&add_user("3")).await.unwrap();
    let token = bot.new_session(me.id).await.unwrap().token;
    let session = server.client().with_bearer(&token);
    assert_code(
        session.del_user(Some(other.id)).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    assert_eq!(session.del_user(None).await.unwrap().id, me.id);
    server.stop().await;
}

async fn sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.bot().await;
    let user = bot.add_user(&add_user("10")).await.unwrap();
    let other = bot.add_user(&add_user("11")).await.unwrap();

    let issued = bot.new_session(user.id).await.unwrap();
    assert_eq!(issued.user, user.id);
    assert!(issued.token.len() >= 22, "at least 128 bits");
    assert!(issued.expires_at <= issued.max_expires_at);
    assert!(issued.expires_at > Utc::now() + Duration::seconds(500));
    let stored = server
        .storage
        .get_session(&token_hash(&issued.token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.user, user.id);
    assert_ne!(stored.token_hash, issued.token, "only the hash is stored");
    assert_code(
        bot.new_session(Uuid::new_v4()).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    let second = bot.new_session(user.id).await.unwrap();
    assert_ne!(second.token, issued.token);

    let session = server.client().with_bearer(&issued.token);
    let status = session.check_session(None).await.unwrap();
    assert!(status.valid);
    assert_eq!(status.user, Some(user.id));
    let Me::User { user: me, .. } = session.auth_me(None).await.unwrap() else {
        panic!("expected a user identity");
    };
    assert_eq!(me.id, user.id);
    session.auth_me(Some(user.id)).await.unwrap();
    assert_code(
        session.auth_me(Some(other.id)).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    assert_eq!(session.get_me().await.unwrap().id, user.id);
    assert_code(
        session.get_user(other.id).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    assert_code(
        session.find_user("telegram", "11").await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    assert_code(
        session.check_session(Some("x")).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );

    let Me::Service {
        username,
        permissions,
    } = bot.auth_me(None).await.unwrap()
    else {
        panic!("expected a service identity");
    };
    assert_eq!(username, "bot");
    assert!(permissions.api.is_some());
    assert_code(
        bot.auth_me(Some(user.id)).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );

    // Service accounts check named tokens.
    assert!(bot.check_session(Some(&issued.token)).await.unwrap().valid);
    assert!(
        !bot.check_session(Some("no-such-token"))
            .await
            .unwrap()
            .valid
    );
    assert_code(
        bot.check_session(None).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );

    // Unknown and expired tokens are 401.
    let stranger = server.client().with_bearer("no-such-token");
    assert_code(
        stranger.check_session(None).await.unwrap_err(),
        401,
        ErrorCode::Unauthorized,
    );
    let expired_token = new_token();
    let now = Utc::now();
    server
        .storage
        .insert_session(&Session {
            token_hash: token_hash(&expired_token),
            user: user.id,
            created_at: now - Duration::hours(2),
            expires_at: now - Duration::seconds(1),
            max_expires_at: now + Duration::hours(1),
        })
        .await
        .unwrap();
    let expired = server.client().with_bearer(&expired_token);
    assert_code(
        expired.check_session(None).await.unwrap_err(),
        401,
        ErrorCode::Unauthorized,
    );
    assert!(!bot.check_session(Some(&expired_token)).await.unwrap().valid);

    // Use slides the expiry forward, never past the cap.
    let sliding_token = new_token();
    server
        .storage
        .insert_session(&Session {
            token_hash: token_hash(&sliding_token),
            user: user.id,
            created_at: now,
            expires_at: now + Duration::seconds(30),
            max_expires_at: now + Duration::hours(1),
        })
        .await
        .unwrap();
    let sliding = server.client().with_bearer(&sliding_token);
    let status = sliding.check_session(None).await.unwrap();
    assert!(
        status.expires_at.unwrap() > now + Duration::seconds(500),
        "{status:?}"
    );
    let stored = server
        .storage
        .get_session(&token_hash(&sliding_token))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.expires_at > now + Duration::seconds(500));

    let capped_token = new_token();
    let cap = now + Duration::seconds(120);
    server
        .storage
        .insert_session(&Session {
            token_hash: token_hash(&capped_token),
            user: user.id,
            created_at: now,
            expires_at: now + Duration::seconds(30),
            max_expires_at: cap,
        })
        .await
        .unwrap();
    let capped = server.client().with_bearer(&capped_token);
    let status = capped.check_session(None).await.unwrap();
    let slid = status.expires_at.unwrap();
    assert!(
        (slid - cap).num_milliseconds().abs() < 1000,
        "{slid} vs cap {cap}"
    );
    server.stop().await;
}

async fn settings(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.bot().await;
    let user = bot.add_user(&add_user("20")).await.unwrap();
    bot.add_user(&add_user("21")).await.unwrap();

    let settings = bot.get_settings(Some(user.id)).await.unwrap();
    assert_eq!(
        (
            settings.language.as_str(),
            settings.timezone.as_deref(),
            settings.paused
        ),
        ("en", None, false)
    );
    assert_code(
        bot.get_settings(None).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    assert_code(
        bot.get_settings(Some(Uuid::new_v4())).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );

    let token = bot.new_session(user.id).await.unwrap().token;
    let session = server.client().with_bearer(&token);
    let changed = session
        .update_setting(&UpdateSetting {
            language: Some("ja".into()),
            timezone: Some("Asia/Tokyo".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (changed.language.as_str(), changed.timezone.as_deref()),
        ("ja", Some("Asia/Tokyo"))
    );
    assert_eq!(session.get_settings(None).await.unwrap(), changed);
    let reset = session
        .update_setting(&UpdateSetting {
            timezone: Some(String::new()),
            paused: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((reset.timezone.as_deref(), reset.paused), (None, true));

    // Nothing to change answers the settings as they are.
    assert_eq!(
        session
            .update_setting(&UpdateSetting::default())
            .await
            .unwrap(),
        reset
    );
    for bad in [
        json!({"language": "Japanese"}),
        json!({"timezone": "not a zone"}),
        json!({"timezone": "asia/tokyo"}),
        json!({"name": "\u{0007}", "user": user.id}),
    ] {
        let result = server
            .post(
                "/v1/updateSetting",
                Auth::Basic("bot", "pw-bot"),
                RawBody::Json(merge(bad.clone(), user.id)),
            )
            .await;
        assert_error(&result, 422, "invalid_input");
    }
    let taken = bot
        .update_setting(&UpdateSetting {
            user: Some(user.id),
            chat_id: Some("21".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(taken, 409, ErrorCode::Conflict);
    let migrated = bot
        .update_setting(&UpdateSetting {
            user: Some(user.id),
            chat_id: Some("-100999".into()),
            name: Some("renamed".into()),
            ..Default::default()
        })
        .await;
    assert!(migrated.is_ok(), "{migrated:?}");
    assert_eq!(
        bot.find_user("telegram", "-100999").await.unwrap().name,
        "renamed"
    );
    let sneaky = session
        .update_setting(&UpdateSetting {
            chat_id: Some("1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(sneaky, 403, ErrorCode::Forbidden);
    server.stop().await;
}

fn merge(mut body: serde_json::Value, user: Uuid) -> serde_json::Value {
    body["user"] = json!(user);
    body
}

async fn subscriptions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.bot().await;
    let admin = server.admin().await;
    let entity = admin.new_entity(&new_entity("Pekora", 1)).await.unwrap();
    let alice = bot.add_user(&add_user("30")).await.unwrap();
    let bob = bot.add_user(&add_user("31")).await.unwrap();
    let carol = bot.add_user(&add_user("32")).await.unwrap();

    // Prime the read cache; later writes through the api must show at once.
    assert!(bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap()
        .is_empty());

    let sub = |user: Uuid, kinds: &[&str], subscribed: bool| UpdateSubscription {
        user: Some(user),
        entity: entity.id,
        subscribed,
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        mention: None,
    };
    let first = bot
        .update_subscription(&sub(alice.id, &[], true))
        .await
        .unwrap();
    assert!(first.changed);
    assert_eq!(first.subscriptions.len(), 1);
    assert!(
        !bot.update_subscription(&sub(alice.id, &[], true))
            .await
            .unwrap()
            .changed
    );
    bot.update_subscription(&sub(
        bob.id,
        &["youtube.video", "youtube.live", "youtube.live"],
        true,
    ))
    .await
    .unwrap();
    let bob_subs = bot.get_subscription(Some(bob.id)).await.unwrap();
    assert_eq!(
        bob_subs[0].kinds,
        vec!["youtube.live".to_owned(), "youtube.video".to_owned()]
    );
    bot.update_subscription(&sub(carol.id, &["twitter.tweet"], true))
        .await
        .unwrap();

    let live = bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap();
    let mut ids: Vec<Uuid> = live.iter().map(|s| s.user).collect();
    ids.sort();
    let mut want = vec![alice.id, bob.id];
    want.sort();
    assert_eq!(ids, want);
    let tweet = bot
        .get_subscribers(entity.id, "twitter.tweet", "telegram")
        .await
        .unwrap();
    assert_eq!(tweet.len(), 2, "alice (all kinds) and carol");
    let entry = tweet.iter().find(|s| s.user == carol.id).unwrap();
    assert_eq!(
        (entry.chat_id.as_str(), entry.language.as_str()),
        ("32", "en")
    );
    assert!(bot
        .get_subscribers(entity.id, "youtube.live", "discord")
        .await
        .unwrap()
        .is_empty());

    // Paused users are left out.
    bot.update_setting(&UpdateSetting {
        user: Some(alice.id),
        paused: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    let live = bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap();
    assert_eq!(
        live.iter().map(|s| s.user).collect::<Vec<_>>(),
        vec![bob.id]
    );

    let gone = bot
        .update_subscription(&sub(bob.id, &[], false))
        .await
        .unwrap();
    assert!(gone.changed && gone.subscriptions.is_empty());
    assert!(
        !bot.update_subscription(&sub(bob.id, &[], false))
            .await
            .unwrap()
            .changed
    );
    assert!(bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap()
        .is_empty());

    let mut unknown = sub(alice.id, &[], true);
    unknown.entity = Uuid::new_v4();
    assert_code(
        bot.update_subscription(&unknown).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        bot.update_subscription(&sub(alice.id, &["live"], true))
            .await
            .unwrap_err(),
        422,
        ErrorCode::InvalidInput,
    );
    assert_code(
        bot.update_subscription(&sub(Uuid::new_v4(), &[], true))
            .await
            .unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        bot.get_subscribers(Uuid::new_v4(), "youtube.live", "telegram")
            .await
            .unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        bot.get_subscribers(entity.id, "live", "telegram")
            .await
            .unwrap_err(),
        422,
        ErrorCode::InvalidInput,
    );

    // A session manages its own subscriptions only.
    let token = bot.new_session(carol.id).await.unwrap().token;
    let session = server.client().with_bearer(&token);
    assert_eq!(session.get_subscription(None).await.unwrap().len(), 1);
    assert_code(
        session.get_subscription(Some(alice.id)).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    let mut other = sub(alice.id, &[], false);
    other.user = Some(alice.id);
    assert_code(
        session.update_subscription(&other).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    let mut own = sub(carol.id, &[], false);
    own.user = None;
    assert!(session.update_subscription(&own).await.unwrap().changed);
    server.stop().await;
}

/// A subscription's mention: set with the subscription or later, shown by getSubscription
/// and getSubscribers, kept when the kinds change without one, removed by `""` and with the
/// subscription; malformed ones are refused naming the field.
async fn subscription_mentions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.bot().await;
    let admin = server.admin().await;
    let entity = admin.new_entity(&new_entity("Miko", 1)).await.unwrap();
    let alice = bot.add_user(&add_user("50")).await.unwrap();
    let bob = bot.add_user(&add_user("51")).await.unwrap();
    const ROLE: &str = "123456789012345678";

    let sub = |user: Uuid, kinds: &[&str], mention: Option<&str>| UpdateSubscription {
        user: Some(user),
        entity: entity.id,
        subscribed: true,
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        mention: mention.map(str::to_owned),
    };
    let mention_of = |subscribers: &[stargazer_api::types::Subscriber], user: Uuid| {
        subscribers
            .iter()
            .find(|s| s.user == user)
            .map(|s| s.mention.clone())
    };

    // A new subscription with a mention; another without.
    let made = bot
        .update_subscription(&sub(alice.id, &["youtube.live"], Some(ROLE)))
        .await
        .unwrap();
    assert!(made.changed);
    assert_eq!(made.subscriptions[0].mention.as_deref(), Some(ROLE));
    bot.update_subscription(&sub(bob.id, &[], None))
        .await
        .unwrap();
    let live = bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap();
    assert_eq!(mention_of(&live, alice.id), Some(Some(ROLE.to_owned())));
    assert_eq!(mention_of(&live, bob.id), Some(None));
    // On the wire, no mention is no field.
    let raw = server
        .post(
            "/v1/getSubscribers",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"entity": entity.id, "kind": "youtube.live", "im": "telegram"})),
        )
        .await;
    assert_eq!(raw.0, 200, "{}", raw.2);
    for subscriber in raw.2["data"].as_array().unwrap() {
        let want = if subscriber["user"] == json!(alice.id) {
            json!(ROLE)
        } else {
            serde_json::Value::Null
        };
        assert_eq!(subscriber.get("mention").cloned().unwrap_or_default(), want);
    }

    // The same mention and kinds again change nothing.
    assert!(
        !bot.update_subscription(&sub(alice.id, &["youtube.live"], Some(ROLE)))
            .await
            .unwrap()
            .changed
    );
    assert!(
        !bot.update_subscription(&sub(alice.id, &["youtube.live"], None))
            .await
            .unwrap()
            .changed
    );
    // New kinds without a mention keep it.
    let kinds = bot
        .update_subscription(&sub(alice.id, &["youtube.video", "youtube.live"], None))
        .await
        .unwrap();
    assert!(kinds.changed);
    assert_eq!(
        kinds.subscriptions[0].kinds,
        ["youtube.live".to_owned(), "youtube.video".to_owned()]
    );
    assert_eq!(kinds.subscriptions[0].mention.as_deref(), Some(ROLE));
    let video = bot
        .get_subscribers(entity.id, "youtube.video", "telegram")
        .await
        .unwrap();
    assert_eq!(mention_of(&video, alice.id), Some(Some(ROLE.to_owned())));
    // A mention alone changes it, kinds as given.
    let changed = bot
        .update_subscription(&sub(
            alice.id,
            &["youtube.live", "youtube.video"],
            Some("role:2"),
        ))
        .await
        .unwrap();
    assert!(changed.changed);
    assert_eq!(
        bot.get_subscription(Some(alice.id)).await.unwrap()[0]
            .mention
            .as_deref(),
        Some("role:2")
    );

    // Malformed mentions are refused, naming the field, and change nothing.
    for bad in ["<@&1>".to_owned(), "9".repeat(65), "a b".to_owned()] {
        let err = bot
            .update_subscription(&sub(alice.id, &[], Some(&bad)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`mention`"), "{bad}: {err}");
        assert_code(err, 422, ErrorCode::InvalidInput);
    }
    let raw = server
        .post(
            "/v1/updateSubscription",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"user": alice.id, "entity": entity.id, "mention": 42})),
        )
        .await;
    assert_error(&raw, 422, "invalid_input");
    let live = bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap();
    assert_eq!(mention_of(&live, alice.id), Some(Some("role:2".to_owned())));

    // `""` removes it.
    let cleared = bot
        .update_subscription(&sub(alice.id, &["youtube.live", "youtube.video"], Some("")))
        .await
        .unwrap();
    assert!(cleared.changed);
    assert_eq!(cleared.subscriptions[0].mention, None);
    let live = bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap();
    assert_eq!(mention_of(&live, alice.id), Some(None));
    assert!(
        !bot.update_subscription(&sub(alice.id, &["youtube.live", "youtube.video"], Some("")))
            .await
            .unwrap()
            .changed
    );

    // Unsubscribing drops it: subscribing again starts without one.
    bot.update_subscription(&sub(alice.id, &[], Some(ROLE)))
        .await
        .unwrap();
    let mut gone = sub(alice.id, &[], None);
    gone.subscribed = false;
    assert!(bot.update_subscription(&gone).await.unwrap().changed);
    let again = bot
        .update_subscription(&sub(alice.id, &[], None))
        .await
        .unwrap();
    assert_eq!(again.subscriptions[0].mention, None);
    let live = bot
        .get_subscribers(entity.id, "youtube.live", "telegram")
        .await
        .unwrap();
    assert_eq!(mention_of(&live, alice.id), Some(None));
    server.stop().await;
}

async fn entities(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin().await;
    let bot = server.bot().await;

    let group = Group {
        id: Uuid::new_v4(),
        names: [("en".to_owned(), "Hololive".to_owned())].into(),
    };
    server.storage.upsert_group(&group).await.unwrap();

    let mut req = new_entity("Pekora", 1);
    req.group = Some(group.id);
    req.translate_to = vec!["ja".into()];
    let entity = admin.new_entity(&req).await.unwrap();
    assert_eq!(entity.tasks.len(), 2);
    assert!(entity.tasks.iter().all(|t| t.entity == entity.id));
    assert_eq!(entity.group, Some(group.id));
    assert_eq!(admin.get_entity(entity.id).await.unwrap(), entity);
    assert_eq!(bot.get_entity(entity.id).await.unwrap(), entity);
    assert_code(
        admin.get_entity(Uuid::new_v4()).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );

    // The same account cannot be watched twice; the same id cannot be reused.
    assert_code(
        admin.new_entity(&new_entity("Copy", 1)).await.unwrap_err(),
        409,
        ErrorCode::Conflict,
    );
    let mut same_id = new_entity("Other", 2);
    same_id.id = Some(entity.id);
    assert_code(
        admin.new_entity(&same_id).await.unwrap_err(),
        409,
        ErrorCode::Conflict,
    );
    let mut no_group = new_entity("Other", 3);
    no_group.group = Some(Uuid::new_v4());
    assert_code(
        admin.new_entity(&no_group).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );

    let bad_channel = server
        .post(
            "/v1/newEntity",
            Auth::Basic("admin", "pw-admin"),
            RawBody::Json(json!({"names": {"en": "X"}, "default_language": "en", "tasks": [{"kind": "youtube", "channel_id": "UC1"}]})),
        )
        .await;
    assert_error(&bad_channel, 422, "invalid_input");
    assert!(bad_channel.2["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tasks[0].channel_id"));
    let bad_default = server
        .post(
            "/v1/newEntity",
            Auth::Basic("admin", "pw-admin"),
            RawBody::Json(json!({"names": {"en": "X"}, "default_language": "Japanese"})),
        )
        .await;
    assert_error(&bad_default, 422, "invalid_input");
    let blank = server
        .post(
            "/v1/newEntity",
            Auth::Basic("admin", "pw-admin"),
            RawBody::Json(json!({"names": {"en": " "}, "default_language": "en"})),
        )
        .await;
    assert_error(&blank, 422, "invalid_input");
    let bad_kind = server
        .post(
            "/v1/newEntity",
            Auth::Basic("admin", "pw-admin"),
            RawBody::Json(json!({"names": {"en": "X"}, "default_language": "en", "tasks": [{"kind": "tiktok", "id": "1"}]})),
        )
        .await;
    assert_error(&bad_kind, 422, "invalid_input");

    // getEntities shows a new entity at once despite the read cache.
    assert_eq!(bot.get_entities().await.unwrap().len(), 1);
    let second = admin.new_entity(&new_entity("Miko", 2)).await.unwrap();
    assert_eq!(bot.get_entities().await.unwrap().len(), 2);

    // Updates: accounts kept keep their task ids, group null removes the group.
    let youtube_task = entity
        .tasks
        .iter()
        .find(|t| matches!(t.params, TaskParams::Youtube { .. }))
        .unwrap()
        .clone();
    let updated = admin
        .update_entity(&UpdateEntity {
            id: entity.id,
            names: Some(
                [
                    ("en".to_owned(), "Peko".to_owned()),
                    ("ja".to_owned(), "ぺこら".to_owned()),
                ]
                .into(),
            ),
            group: Some(None),
            tasks: Some(vec![
                youtube_task.params.clone(),
                TaskParams::Twitter {
                    user_id: "777".into(),
                },
            ]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.names["ja"], "ぺこら");
    assert_eq!(updated.group, None);
    assert_eq!(
        updated.translate_to,
        vec!["ja".to_owned()],
        "absent fields are kept"
    );
    assert_eq!(updated.tasks.len(), 2);
    assert!(updated.tasks.contains(&youtube_task));
    assert_eq!(admin.get_entity(entity.id).await.unwrap(), updated);
    // Twitch and Bilibili accounts are numeric ids; a login is refused with the field.
    let not_an_id = admin
        .update_entity(&UpdateEntity {
            id: entity.id,
            tasks: Some(vec![TaskParams::Twitch {
                broadcaster_id: "usadapekora".into(),
            }]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(not_an_id, 422, ErrorCode::InvalidInput);
    let streams = admin
        .update_entity(&UpdateEntity {
            id: entity.id,
            tasks: Some(vec![
                youtube_task.params.clone(),
                TaskParams::Twitter {
                    user_id: "777".into(),
                },
                TaskParams::Twitch {
                    broadcaster_id: "141981764".into(),
                },
                TaskParams::Bilibili {
                    uid: "1950658".into(),
                },
            ]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(streams.tasks.len(), 4);
    let index = admin.get_user_index(None).await.unwrap();
    let peko = index.entities.iter().find(|e| e.id == entity.id).unwrap();
    assert_eq!(
        peko.platforms,
        ["bilibili", "twitch", "twitter", "youtube"].map(String::from)
    );
    assert!(
        peko.search.contains(&"1950658".to_owned()),
        "{:?}",
        peko.search
    );
    let updated = admin
        .update_entity(&UpdateEntity {
            id: entity.id,
            tasks: Some(updated.tasks.iter().map(|t| t.params.clone()).collect()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.tasks.len(), 2);
    let stolen = admin
        .update_entity(&UpdateEntity {
            id: entity.id,
            tasks: Some(vec![TaskParams::Youtube {
                channel_id: channel(2),
            }]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(stolen, 409, ErrorCode::Conflict);
    let no_default = admin
        .update_entity(&UpdateEntity {
            id: entity.id,
            default_language: Some("French".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(no_default, 422, ErrorCode::InvalidInput);
    let missing = admin
        .update_entity(&UpdateEntity {
            id: Uuid::new_v4(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(missing, 404, ErrorCode::NotFound);

    // The index marks a session's subscriptions.
    let user = bot.add_user(&add_user("40")).await.unwrap();
    bot.update_subscription(&UpdateSubscription {
        user: Some(user.id),
        entity: second.id,
        subscribed: true,
        kinds: vec!["youtube.live".into()],
        mention: None,
    })
    .await
    .unwrap();
    let token = bot.new_session(user.id).await.unwrap().token;
    let index = server
        .client()
        .with_bearer(&token)
        .get_user_index(None)
        .await
        .unwrap();
    assert_eq!(index.groups.len(), 1);
    assert_eq!(index.entities.len(), 2);
    let miko = index.entities.iter().find(|e| e.id == second.id).unwrap();
    assert_eq!(miko.subscribed, Some(vec!["youtube.live".to_owned()]));
    assert_eq!(
        miko.platforms,
        vec!["twitter".to_owned(), "youtube".to_owned()]
    );
    assert!(miko.search.contains(&"miko".to_owned()));
    let peko = index.entities.iter().find(|e| e.id == entity.id).unwrap();
    assert_eq!(peko.subscribed, None);
    let plain = admin.get_user_index(None).await.unwrap();
    assert!(plain.entities.iter().all(|e| e.subscribed.is_none()));
    assert_eq!(
        bot.get_user_index(Some(user.id))
            .await
            .unwrap()
            .entities
            .len(),
        2
    );

    // Deleting an entity removes its tasks and the subscriptions to it.
    assert_eq!(admin.del_entity(second.id).await.unwrap().id, second.id);
    assert_code(
        admin.del_entity(second.id).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        admin.get_entity(second.id).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    assert!(bot
        .get_subscription(Some(user.id))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(bot.get_entities().await.unwrap().len(), 1);
    for task in &second.tasks {
        assert!(server.storage.get_task(task.id).await.unwrap().is_none());
    }
    server.stop().await;
}

/// `getEntity` is served from the read cache, and an entity write made through the api
/// shows in it at once.
async fn entity_reads_are_cached_until_written(backend: Backend) {
    // A lifetime far longer than the test, so only the writes can refresh an entry.
    let config = stargazer_api::ApiConfig {
        read_cache_ms: 600_000,
        ..common::test_config()
    };
    let server = TestServer::with_config(backend.connect().await, config).await;
    let admin = server.admin().await;
    let bot = server.bot().await;

    let entity = admin.new_entity(&new_entity("Towa", 21)).await.unwrap();
    assert_eq!(bot.get_entity(entity.id).await.unwrap(), entity);

    // A change behind the api's back is not seen while the entry lives: it is cached.
    let mut behind = server.storage.get_entity(entity.id).await.unwrap().unwrap();
    behind.names.insert("en".into(), "Changed elsewhere".into());
    server.storage.update_entity(&behind).await.unwrap();
    assert_eq!(bot.get_entity(entity.id).await.unwrap(), entity);

    // An update through the api shows at once.
    let updated = admin
        .update_entity(&UpdateEntity {
            id: entity.id,
            names: Some([("en".to_owned(), "Towa-sama".to_owned())].into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.names["en"], "Towa-sama");
    assert_eq!(bot.get_entity(entity.id).await.unwrap(), updated);

    // An unknown id is not remembered as missing, so creating it shows at once.
    let mut later = new_entity("Luna", 22);
    let id = Uuid::new_v4();
    later.id = Some(id);
    assert_code(
        bot.get_entity(id).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    let created = admin.new_entity(&later).await.unwrap();
    assert_eq!(bot.get_entity(id).await.unwrap(), created);

    // A deletion through the api shows at once.
    admin.del_entity(entity.id).await.unwrap();
    assert_code(
        bot.get_entity(entity.id).await.unwrap_err(),
        404,
        ErrorCode::NotFound,
    );
    server.stop().await;
}

async fn service_endpoints(backend: Backend) {
    let storage = backend.connect().await;
    let dir = std::env::temp_dir().join(format!("sg-frontend-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<html>stargazer</html>").unwrap();
    let config = stargazer_api::ApiConfig {
        cors_origins: vec!["https://sg.example".into()],
        frontend_dir: Some(dir.clone()),
        public_url: Some("https://api.sg.example".into()),
        ..common::test_config()
    };
    let server = TestServer::with_config(storage, config).await;
    let bot = server.bot().await;
    bot.get_entities().await.unwrap();

    let health = server
        .http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"stargazer_api_requests_total{method="getEntities",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("stargazer_api_request_duration_seconds_bucket"));

    let doc: serde_json::Value = server
        .http
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["servers"][0]["url"], "https://api.sg.example");
    for method in ["getUser", "getSubscribers", "getUserIndex", "newEntity"] {
        assert!(
            doc["paths"][format!("/v1/{method}")]["post"].is_object(),
            "{method}"
        );
    }

    let preflight = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/getSettings", server.base),
        )
        .header("origin", "https://sg.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://sg.example"
    );
    let foreign = server
        .http
        .post(format!("{}/v1/getEntities", server.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let page = server
        .http
        .get(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("stargazer"));
    server.stop().await;
    std::fs::remove_dir_all(dir).ok();
}

both_backends!(
    envelope_and_body_errors,
    users,
    sessions,
    settings,
    subscriptions,
    subscription_mentions,
    entities,
    entity_reads_are_cached_until_written,
    service_endpoints,
);
