//! Reminder leads in the settings, the Upcoming list and the calendar feed, over real
//! HTTP on both storage backends: leads validated and stored sorted; a calendar link made,
//! fetched and parsed back as iCalendar holding exactly the streams its user's
//! subscriptions want; rotated and revoked links answering 404; malformed secrets refused
//! before any storage access and well-formed wrong ones after exactly one user lookup;
//! one schedule read for a burst of feeds without one user's streams reaching another.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, DurationRound, Utc};
use icalendar::{CalendarDateTime, Component, DatePerhapsTime};
use serde_json::json;
use stargazer_api::client::ApiClient;
use stargazer_api::types::{
    AddUser, ErrorCode, NewEntity, StreamState, UpdateSetting, UpdateSubscription,
};
use stargazer_core::schedule::{self, ScheduledStream};
use stargazer_core::storage::{StateStore, Storage};
use stargazer_testkit::faulty::FaultyStorage;
use uuid::Uuid;

use common::{assert_error, channel, test_config, Auth, Backend, RawBody, TestServer};

/// Storage method names called through the server's storage, in order.
type Calls = Arc<Mutex<Vec<&'static str>>>;

/// The api on `backend` behind a storage that records every call; the real storage is
/// returned too, for seeding without recording.
async fn recorded_server(backend: Backend) -> (TestServer, Arc<dyn Storage>, Calls) {
    let inner = backend.connect().await;
    let calls: Calls = Arc::default();
    let log = calls.clone();
    let recorded: Arc<dyn Storage> = Arc::new(FaultyStorage::new(inner.clone(), move |method| {
        log.lock().unwrap().push(method);
        false
    }));
    let config = stargazer_api::ApiConfig {
        // Long enough that a burst of fetches in this test always falls in one window.
        read_cache_ms: 60_000,
        public_url: Some("https://sg.example/api/".into()),
        ..test_config()
    };
    (
        TestServer::with_config(recorded, config).await,
        inner,
        calls,
    )
}

/// The calls recorded since the last `take`, without the periodic session sweep.
fn take(calls: &Calls) -> Vec<&'static str> {
    std::mem::take(&mut *calls.lock().unwrap())
        .into_iter()
        .filter(|method| *method != "purge_sessions")
        .collect()
}

fn chat(chat_id: &str, language: &str) -> AddUser {
    AddUser {
        im: "telegram".into(),
        chat_id: chat_id.into(),
        name: format!("chat {chat_id}"),
        language: language.into(),
    }
}

fn entity(en: &str, ja: &str, n: u32) -> NewEntity {
    serde_json::from_value(json!({
        "names": {"en": en, "ja": ja},
        "default_language": "ja",
        "tasks": [{"kind": "youtube", "channel_id": channel(n)}],
    }))
    .unwrap()
}

/// A stream of `entity` starting `hours` from now (whole seconds: iCalendar's precision).
fn stream(entity: Uuid, id: &str, hours: i64, format: &str, members_only: bool) -> ScheduledStream {
    let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    ScheduledStream {
        source: "youtube".into(),
        id: id.into(),
        entity,
        task: Uuid::new_v4(),
        title: format!("title of {id}"),
        link: format!("https://www.youtube.com/watch?v={id}"),
        scheduled_start: now + Duration::hours(hours),
        actual_start: None,
        state: schedule::StreamState::Upcoming,
        format: format.into(),
        members_only,
        updated_at: now - Duration::minutes(5),
    }
}

/// `GET` of a feed path: status, content type and body.
async fn fetch(server: &TestServer, path: &str) -> (u16, String, String) {
    let response = server
        .http
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// A feed parsed back, as its events' UIDs.
fn uids(body: &str) -> BTreeSet<String> {
    let calendar: icalendar::Calendar = body.parse().unwrap();
    calendar
        .events()
        .map(|event| event.get_uid().unwrap().to_owned())
        .collect()
}

fn uid(id: &str) -> String {
    format!("youtube-{id}@stargazer")
}

fn utc(time: DateTime<Utc>) -> DatePerhapsTime {
    DatePerhapsTime::DateTime(CalendarDateTime::Utc(time))
}

#[track_caller]
fn assert_code(err: stargazer_api::client::ClientError, status: u16, code: ErrorCode) {
    assert_eq!(err.status(), Some(status), "{err}");
    assert_eq!(err.code(), Some(code), "{err}");
}

async fn reminder_leads(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.bot().await;
    let admin = server.admin().await;
    let streamer = admin.new_entity(&entity("Aki", "アキ", 1)).await.unwrap();
    let user = bot.add_user(&chat("10", "en")).await.unwrap();
    assert!(user.settings.reminder_leads.is_empty());
    let token = bot.new_session(user.id).await.unwrap().token;
    let session = server.client().with_bearer(&token);

    let changed = session
        .update_setting(&UpdateSetting {
            reminder_leads: Some(vec![60, 5, 15]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(changed.reminder_leads, [5, 15, 60]);
    assert_eq!(
        session.get_settings(None).await.unwrap().reminder_leads,
        [5, 15, 60]
    );
    assert_eq!(
        bot.get_user(user.id).await.unwrap().settings.reminder_leads,
        [5, 15, 60]
    );
    // Stored: the core model reads them back sorted.
    let stored = server.storage.get_user(user.id).await.unwrap().unwrap();
    assert_eq!(stored.settings.reminder_leads, [5, 15, 60]);
    // The bots' fan-out lookup carries them.
    session
        .update_subscription(&UpdateSubscription {
            user: None,
            entity: streamer.id,
            subscribed: true,
            kinds: Vec::new(),
            mention: None,
        })
        .await
        .unwrap();
    let subscribers = bot
        .get_subscribers(streamer.id, "youtube.reminder", "telegram")
        .await
        .unwrap();
    assert_eq!(subscribers.len(), 1);
    assert_eq!(subscribers[0].reminder_leads, [5, 15, 60]);

    // Other changes leave them; absent and null leave them too.
    let other = session
        .update_setting(&UpdateSetting {
            paused: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(other.reminder_leads, [5, 15, 60]);
    let null = server
        .post(
            "/v1/updateSetting",
            Auth::Bearer(&token),
            RawBody::Json(json!({"reminder_leads": null, "paused": false})),
        )
        .await;
    assert_eq!(null.0, 200, "{}", null.2);
    assert_eq!(null.2["data"]["reminder_leads"], json!([5, 15, 60]));

    for (bad, field, words) in [
        (json!([10]), "reminder_leads[0]", "5, 15, 30, 60"),
        (json!([5, 0]), "reminder_leads[1]", "5, 15, 30, 60"),
        (json!([30, 5, 30]), "reminder_leads[2]", "twice"),
        (json!([-5]), "reminder_leads", ""),
        (json!("30"), "reminder_leads", ""),
    ] {
        let refused = server
            .post(
                "/v1/updateSetting",
                Auth::Bearer(&token),
                RawBody::Json(json!({ "reminder_leads": bad })),
            )
            .await;
        assert_error(&refused, 422, "invalid_input");
        let message = refused.2["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}")), "{bad}: {message}");
        assert!(message.contains(words), "{bad}: {message}");
    }
    // A refused change changes nothing.
    assert_eq!(
        session.get_settings(None).await.unwrap().reminder_leads,
        [5, 15, 60]
    );

    // The empty list returns to the default lead.
    let reset = session
        .update_setting(&UpdateSetting {
            reminder_leads: Some(Vec::new()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(reset.reminder_leads.is_empty());
    let stored = server.storage.get_user(user.id).await.unwrap().unwrap();
    assert!(stored.settings.reminder_leads.is_empty());
    server.stop().await;
}

async fn calendar_feed(backend: Backend) {
    let (server, storage, calls) = recorded_server(backend).await;
    let bot = server.bot().await;
    let admin = server.admin().await;
    let aki = admin.new_entity(&entity("Aki", "アキ", 1)).await.unwrap();
    let kaze = admin.new_entity(&entity("Kaze", "カゼ", 2)).await.unwrap();
    let luna = admin.new_entity(&entity("Luna", "ルナ", 3)).await.unwrap();
    let alice = bot.add_user(&chat("20", "ja")).await.unwrap();
    let bob = bot.add_user(&chat("21", "en")).await.unwrap();
    let session = |token: String| server.client().with_bearer(&token);
    let alice_api = session(bot.new_session(alice.id).await.unwrap().token);
    let bob_api = session(bot.new_session(bob.id).await.unwrap().token);
    let subscribe = |api: &ApiClient, entity: Uuid, kinds: &[&str]| {
        let req = UpdateSubscription {
            user: None,
            entity,
            subscribed: true,
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            mention: None,
        };
        let api = api.clone();
        async move { api.update_subscription(&req).await.unwrap() }
    };
    // Alice: every kind of Aki; only plain scheduled streams of Kaze. Bob: Luna.
    subscribe(&alice_api, aki.id, &[]).await;
    subscribe(&alice_api, kaze.id, &["youtube.scheduled", "youtube.live"]).await;
    subscribe(&bob_api, luna.id, &[]).await;

    let store: &dyn StateStore = storage.as_ref();
    let mut live = stream(aki.id, "akiLive", -1, "stream", false);
    live.state = schedule::StreamState::Live;
    live.actual_start = Some(live.scheduled_start + Duration::minutes(3));
    let seeded = [
        live.clone(),
        stream(aki.id, "akiNext", 2, "stream", false),
        stream(aki.id, "akiPremiere", 3, "premiere", false),
        stream(aki.id, "akiMembers", 4, "stream", true),
        stream(kaze.id, "kazeNext", 5, "stream", false),
        stream(kaze.id, "kazePremiere", 6, "premiere", false),
        stream(kaze.id, "kazeMembers", 7, "stream", true),
        stream(luna.id, "lunaNext", 8, "stream", false),
        // Never reported over and long past: not listed.
        stream(aki.id, "akiStale", -20, "stream", false),
    ];
    for s in &seeded {
        schedule::record(store, s).await.unwrap();
    }
    take(&calls);
    let alice_wants: BTreeSet<String> = [
        "akiLive",
        "akiNext",
        "akiPremiere",
        "akiMembers",
        "kazeNext",
    ]
    .into_iter()
    .map(uid)
    .collect();

    // The Upcoming list: the same streams, by start, named in the user's language.
    let upcoming = alice_api.get_upcoming(None).await.unwrap();
    let ids: Vec<&str> = upcoming.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "akiLive",
            "akiNext",
            "akiPremiere",
            "akiMembers",
            "kazeNext"
        ]
    );
    assert_eq!(upcoming[0].entity_name, "アキ");
    assert_eq!(upcoming[0].state, StreamState::Live);
    assert_eq!(upcoming[0].start, live.actual_start.unwrap());
    assert_eq!(upcoming[1].state, StreamState::Upcoming);
    assert_eq!(upcoming[2].format, "premiere");
    assert!(upcoming[3].members_only);
    assert_eq!(upcoming[4].entity, kaze.id);
    let bob_upcoming = bob_api.get_upcoming(None).await.unwrap();
    assert_eq!(
        bob_upcoming
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["lunaNext"]
    );
    assert_eq!(bob_upcoming[0].entity_name, "Luna");

    // No link yet.
    assert!(!alice_api.get_settings(None).await.unwrap().calendar_link);
    let link = alice_api.create_calendar_link(None).await.unwrap();
    assert_eq!(link.path, format!("/ical/{}.ics", link.secret));
    assert_eq!(
        link.url.as_deref(),
        Some(format!("https://sg.example/api{}", link.path).as_str())
    );
    assert!(link.secret.starts_with(&alice.id.simple().to_string()));
    assert!(alice_api.get_settings(None).await.unwrap().calendar_link);

    let (status, content_type, body) = fetch(&server, &link.path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/calendar; charset=utf-8");
    assert_eq!(uids(&body), alice_wants);
    let calendar: icalendar::Calendar = body.parse().unwrap();
    let next = calendar
        .events()
        .find(|e| e.get_uid() == Some(uid("akiNext").as_str()))
        .unwrap();
    let akinext = &seeded[1];
    assert_eq!(next.get_summary(), Some("アキ: title of akiNext"));
    assert_eq!(next.get_url(), Some(akinext.link.as_str()));
    assert_eq!(next.get_start(), Some(utc(akinext.scheduled_start)));
    assert_eq!(
        next.get_end(),
        Some(utc(akinext.scheduled_start + Duration::hours(1)))
    );
    assert_eq!(next.get_last_modified(), Some(akinext.updated_at));
    assert_eq!(next.get_timestamp(), Some(akinext.updated_at));
    assert!(next.get_description().unwrap().contains("estimate"));
    let on_air = calendar
        .events()
        .find(|e| e.get_uid() == Some(uid("akiLive").as_str()))
        .unwrap();
    assert_eq!(on_air.get_start(), Some(utc(live.actual_start.unwrap())));

    // A burst of fetches by two users: one schedule read in all (the Upcoming lists
    // above included), and each feed only its own user's streams.
    let bob_link = bob_api.create_calendar_link(None).await.unwrap();
    for _ in 0..3 {
        let (status, _, body) = fetch(&server, &bob_link.path).await;
        assert_eq!(status, 200);
        assert_eq!(uids(&body), BTreeSet::from([uid("lunaNext")]));
        let (status, _, body) = fetch(&server, &link.path).await;
        assert_eq!(status, 200);
        assert_eq!(uids(&body), alice_wants);
    }
    let reads = take(&calls);
    assert_eq!(
        reads.iter().filter(|m| **m == "kv_list").count(),
        1,
        "{reads:?}"
    );

    // Rotating: the old secret is gone, the new one works.
    let rotated = alice_api.create_calendar_link(None).await.unwrap();
    assert_ne!(rotated.secret, link.secret);
    let (status, _, body) = fetch(&server, &link.path).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = fetch(&server, &rotated.path).await;
    assert_eq!(status, 200);
    assert_eq!(uids(&body), alice_wants);

    // The secret's hash never shows in any answer, nor can a setting write it.
    let stored = server.storage.get_user(alice.id).await.unwrap().unwrap();
    let hash = stored.settings.calendar_secret_hash.clone().unwrap();
    assert_ne!(hash, rotated.secret);
    for method in ["getSettings", "getUser", "authMe"] {
        let (status, _, answer) = server
            .post(
                &format!("/v1/{method}"),
                Auth::Basic("bot", "pw-bot"),
                RawBody::Json(if method == "authMe" {
                    json!({})
                } else {
                    json!({"user": alice.id})
                }),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(!answer.to_string().contains(&hash), "{method}: {answer}");
        assert!(!answer.to_string().contains("secret"), "{method}: {answer}");
    }
    let sneaky = server
        .post(
            "/v1/updateSetting",
            Auth::Basic("bot", "pw-bot"),
            RawBody::Json(json!({"user": alice.id, "calendar_secret_hash": "00"})),
        )
        .await;
    assert_error(&sneaky, 422, "invalid_input");
    // Other settings changes keep the link.
    alice_api
        .update_setting(&UpdateSetting {
            reminder_leads: Some(vec![15]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(fetch(&server, &rotated.path).await.0, 200);

    // A secret only works for the user it names.
    let (_, bob_random) = bob_link.secret.split_once('.').unwrap();
    let crossed = format!("/ical/{}.{bob_random}.ics", alice.id.simple());
    assert_eq!(fetch(&server, &crossed).await.0, 404);

    // Malformed secrets: 404 before any storage access.
    take(&calls);
    let (user_part, random) = rotated.secret.split_once('.').unwrap();
    for path in [
        "/ical/.ics".to_owned(),
        "/ical/nothing.ics".to_owned(),
        format!("/ical/{}", rotated.secret),
        format!("/ical/{}.ical", rotated.secret),
        format!("/ical/{user_part}.ics"),
        format!("/ical/{}.{random}.ics", alice.id.hyphenated()),
        format!("/ical/{user_part}.{random}x.ics"),
        format!("/ical/{user_part}.{}.ics", &random[1..]),
        format!("/ical/{user_part}.{}%21.ics", &random[1..]),
        format!("/ical/{user_part}.{random}.ics/more"),
        "/ical/%FF%FE.ics".to_owned(),
    ] {
        let (status, _, body) = fetch(&server, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains(user_part), "{path}: {body}");
    }
    let reads = take(&calls);
    assert!(
        reads.is_empty(),
        "malformed secrets reached storage: {reads:?}"
    );

    // Well-formed but wrong: one user lookup, then 404 saying no more than above.
    let mut wrong_random = random.to_owned();
    wrong_random.replace_range(0..1, if random.starts_with('A') { "B" } else { "A" });
    let unknown_user = format!("/ical/{}.{random}.ics", Uuid::new_v4().simple());
    let wrong_secret = format!("/ical/{user_part}.{wrong_random}.ics");
    let mut bodies = Vec::new();
    for path in [&unknown_user, &wrong_secret] {
        let (status, _, body) = fetch(&server, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(take(&calls), ["get_user"], "{path}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        bodies.push(value["error"].clone());
    }
    assert_eq!(
        bodies[0], bodies[1],
        "the 404s must not tell which part was wrong"
    );

    // Revoking: 404 from now on; revoking again finds nothing.
    assert!(alice_api.revoke_calendar_link(None).await.unwrap().revoked);
    assert_eq!(fetch(&server, &rotated.path).await.0, 404);
    assert!(!alice_api.revoke_calendar_link(None).await.unwrap().revoked);
    assert!(!alice_api.get_settings(None).await.unwrap().calendar_link);
    // Bob's link is his own and unaffected.
    assert_eq!(fetch(&server, &bob_link.path).await.0, 200);

    // Sessions act for their own user only.
    assert_code(
        alice_api
            .create_calendar_link(Some(bob.id))
            .await
            .unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    assert_code(
        alice_api.get_upcoming(Some(bob.id)).await.unwrap_err(),
        403,
        ErrorCode::Forbidden,
    );
    // The feed is a GET; other verbs are refused.
    let post = server
        .http
        .post(format!("{}{}", server.base, bob_link.path))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    server.stop().await;
}

/// A user without subscriptions gets an empty, valid feed, without a schedule read.
async fn empty_feed(backend: Backend) {
    let (server, _storage, calls) = recorded_server(backend).await;
    let bot = server.bot().await;
    let user = bot.add_user(&chat("30", "en")).await.unwrap();
    let link = bot.create_calendar_link(Some(user.id)).await.unwrap();
    take(&calls);
    let (status, _, body) = fetch(&server, &link.path).await;
    assert_eq!(status, 200, "{body}");
    assert!(uids(&body).is_empty());
    let calendar: icalendar::Calendar = body.parse().unwrap();
    assert_eq!(calendar.get_name(), Some("Stargazer"));
    assert_eq!(take(&calls), ["get_user", "list_subscriptions"]);
    assert!(bot.get_upcoming(Some(user.id)).await.unwrap().is_empty());
    server.stop().await;
}

both_backends!(reminder_leads, calendar_feed, empty_feed);
