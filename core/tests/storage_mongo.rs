//! Runs the storage contract suite against [`MongoStorage`] on a real MongoDB-wire server
//! (`STARGAZER_TEST_MONGO_URL`, default `mongodb://127.0.0.1:27017/`), one fresh database
//! per test, plus the MongoDB-only behaviour: the BSON shape of stored documents, change
//! streams fed by other processes and by hand-made edits, indexes, corrupt documents.

use stargazer_core::storage::AccessStore;
use stargazer_core::storage::DeliveryStore;
use stargazer_core::storage::EntityStore;
use stargazer_core::storage::StateStore;
use stargazer_core::storage::UserStore;
mod storage_suite;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use mongodb::Client;
use serde_json::json;
use stargazer_core::model::{
    DeliveryRecord, Entity, Session, Subscription, Task, TaskChange, TaskParams, User, UserSettings,
};
use stargazer_core::storage::mongo::MongoStorage;
use stargazer_core::storage::{Storage, StorageError, StorageHealth};
use uuid::Uuid;

/// Prefix of every database these tests create.
const DB_PREFIX: &str = "sgtest_";

fn mongo_url() -> String {
    std::env::var("STARGAZER_TEST_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/".to_owned())
}

/// A database name no other test uses; it carries its creation time so later runs can
/// drop leftovers.
fn fresh_db_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    format!("{DB_PREFIX}{secs}_{}", Uuid::new_v4().simple())
}

/// Drops test databases older than an hour, once per test binary run: a storage cannot
/// drop its own database when a test ends, so leftovers are cleared by the next run.
async fn drop_stale_databases(client: &Client) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let Ok(names) = client.list_database_names().await else {
        return;
    };
    for name in names {
        let created = name
            .strip_prefix(DB_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|t| t + 3600 < now) {
            let _ = client.database(&name).drop().await;
        }
    }
}

async fn raw_client() -> Client {
    Client::with_uri_str(mongo_url())
        .await
        .expect("MongoDB url parses")
}

/// A storage on a fresh database, plus that database's name.
async fn fresh_named() -> (MongoStorage, String) {
    let name = fresh_db_name();
    drop_stale_databases(&raw_client().await).await;
    let storage = MongoStorage::connect_db(&mongo_url(), &name)
        .await
        .expect("MongoDB reachable (is SecantusDB running on 127.0.0.1:27017?)");
    (storage, name)
}

async fn fresh() -> Arc<dyn Storage> {
    Arc::new(fresh_named().await.0)
}

storage_contract_tests!(fresh);

/// The same suite with multi-document changes as ordered operations, the path taken on a
/// standalone server without transactions.
mod without_transactions {
    use super::*;

    pub(super) async fn fresh_ordered() -> Arc<dyn Storage> {
        Arc::new(fresh_named().await.0.without_transactions())
    }

    crate::storage_contract_tests!(fresh_ordered);
}

// ---------------------------------------------------------------- fixtures

fn sample_entity() -> Entity {
    let id = Uuid::new_v4();
    Entity {
        id,
        names: [("en".to_owned(), "Streamer".to_owned())]
            .into_iter()
            .collect(),
        default_language: "en".into(),
        group: Some(Uuid::new_v4()),
        translate_to: vec!["ja".into()],
        tasks: vec![
            Task {
                id: Uuid::new_v4(),
                entity: id,
                // Accounts are unique per kind across entities.
                params: TaskParams::Youtube {
                    channel_id: format!("UC{}", &Uuid::new_v4().simple().to_string()[..22]),
                },
            },
            Task {
                id: Uuid::new_v4(),
                entity: id,
                params: TaskParams::Twitter {
                    user_id: (Uuid::new_v4().as_u128() % 1_000_000_000_000).to_string(),
                },
            },
        ],
    }
}

fn sample_user(im: &str) -> User {
    User {
        id: Uuid::new_v4(),
        im: im.to_owned(),
        im_chat_id: Uuid::new_v4().simple().to_string(),
        name: "Chat".into(),
        language: "en".into(),
        settings: UserSettings::default(),
        created_at: Utc
            .timestamp_millis_opt(1_700_000_000_123)
            .single()
            .expect("valid time"),
    }
}

#[track_caller]
fn assert_uuid_binary(d: &Document, key: &str, want: Uuid) {
    match d.get(key) {
        Some(Bson::Binary(Binary { subtype, bytes })) => {
            assert_eq!(*subtype, BinarySubtype::Uuid, "`{key}` subtype in {d}");
            assert_eq!(bytes.as_slice(), want.as_bytes(), "`{key}` bytes in {d}");
        }
        other => panic!("`{key}` is not binary: {other:?} in {d}"),
    }
}

async fn next_change(
    stream: &mut futures::stream::BoxStream<'static, stargazer_core::storage::Result<TaskChange>>,
    ids: &HashSet<Uuid>,
) -> TaskChange {
    loop {
        let change = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a change in time")
            .expect("stream open")
            .expect("no stream error");
        let id = match &change {
            TaskChange::Upserted(t) => t.id,
            TaskChange::Deleted(id) => *id,
        };
        if ids.contains(&id) {
            return change;
        }
    }
}

// ---------------------------------------------------------------- BSON shape

/// Every UUID is stored as BSON binary subtype 4, as other MongoDB tools expect.
#[tokio::test]
async fn uuids_are_binary_subtype_4() {
    let (s, name) = fresh_named().await;
    let e = sample_entity();
    s.insert_entity(&e).await.unwrap();
    let u = sample_user("telegram");
    s.insert_user(&u).await.unwrap();
    s.put_subscription(&Subscription {
        user: u.id,
        entity: e.id,
        kinds: vec!["youtube.live".into()],
        mention: None,
    })
    .await
    .unwrap();
    let token = Uuid::new_v4().simple().to_string();
    s.insert_session(&Session {
        token_hash: token.clone(),
        user: u.id,
        created_at: u.created_at,
        expires_at: u.created_at,
        max_expires_at: u.created_at,
    })
    .await
    .unwrap();
    let event = Uuid::new_v4();
    s.record_delivery(&DeliveryRecord {
        event,
        im: "telegram".into(),
        chat_id: "1".into(),
        status: "sent".into(),
        at: u.created_at,
    })
    .await
    .unwrap();

    let client = raw_client().await;
    let db = client.database(&name);
    let one = |collection: &str, filter: Document| {
        let c = db.collection::<Document>(collection);
        async move { c.find_one(filter).await.unwrap().expect("document stored") }
    };

    let entity = one("entities", doc! {}).await;
    assert_uuid_binary(&entity, "_id", e.id);
    assert_uuid_binary(&entity, "group", e.group.unwrap());
    for task in &e.tasks {
        let d = one("tasks", doc! { "_id": Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes: task.id.as_bytes().to_vec() }) }).await;
        assert_uuid_binary(&d, "_id", task.id);
        assert_uuid_binary(&d, "entity", e.id);
        assert_eq!(d.get_str("kind").unwrap(), task.kind().as_str());
    }
    let user = one("users", doc! {}).await;
    assert_uuid_binary(&user, "_id", u.id);
    assert!(matches!(user.get("created_at"), Some(Bson::DateTime(_))));
    let sub = one("subscriptions", doc! {}).await;
    assert_uuid_binary(&sub, "user", u.id);
    assert_uuid_binary(&sub, "entity", e.id);
    let session = one("sessions", doc! { "token_hash": &token }).await;
    assert_uuid_binary(&session, "user", u.id);
    let delivery = one("deliveries", doc! {}).await;
    assert_uuid_binary(&delivery, "event", event);

    // The bson crate's own UUID type reads them back as the same value.
    let id: bson::Uuid = bson::from_bson(entity.get("_id").unwrap().clone()).unwrap();
    assert_eq!(Uuid::from(id), e.id);
}

/// Credentials live in `auth` with the documented field names.
#[tokio::test]
async fn credentials_have_the_documented_shape() {
    use stargazer_core::model::{Access, Credential, Permissions};
    let (s, name) = fresh_named().await;
    let credential = Credential {
        username: "bot".into(),
        hash: "$pbkdf2-sha256$i=1000,l=32$c2FsdA$aGFzaA".into(),
        permissions: Permissions {
            api: Some(Access::Rw),
            mq: Some(Access::Ro),
            ..Default::default()
        },
        queues: vec!["bot.telegram".into()],
    };
    s.insert_credential(&credential).await.unwrap();
    let d = raw_client()
        .await
        .database(&name)
        .collection::<Document>("auth")
        .find_one(doc! { "username": "bot" })
        .await
        .unwrap()
        .expect("credential in `auth`");
    assert_eq!(d.get_str("hash").unwrap(), credential.hash);
    assert_eq!(
        d.get_document("permissions").unwrap(),
        &doc! { "api": "rw", "mq": "ro" }
    );
    assert_eq!(
        d.get_array("queues").unwrap(),
        &vec![Bson::String("bot.telegram".into())]
    );
    // A credential stored before `queues` existed owns none.
    raw_client()
        .await
        .database(&name)
        .collection::<Document>("auth")
        .insert_one(doc! { "username": "old", "hash": "h", "permissions": { "mq": "rw" } })
        .await
        .unwrap();
    let old = s.get_credential("old").await.unwrap().unwrap();
    assert!(old.queues.is_empty());
    assert_eq!(old.permissions.mq, Some(Access::Rw));
}

/// Values BSON documents cannot hold exactly still round-trip.
#[tokio::test]
async fn kv_values_round_trip_exactly() {
    let (s, _) = fresh_named().await;
    let value = json!({
        "big": u64::MAX,
        "$set": {"a.b": 1},
        "neg": i64::MIN,
        "float": 0.1,
        "nested": [{"x": null}]
    });
    s.kv_put("ns", "k", &value).await.unwrap();
    assert_eq!(s.kv_get("ns", "k").await.unwrap(), Some(value));
}

fn uuid_bson(id: Uuid) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.as_bytes().to_vec(),
    })
}

/// A document that does not match the model is left out of listings (with the metric
/// counting it) and is a `Corrupt` error naming it when read by id, never a panic and
/// never a failure of the whole listing.
#[tokio::test]
async fn malformed_documents_are_skipped_and_counted() {
    let (s, name) = fresh_named().await;
    let registry = prometheus::Registry::new();
    s.register_metrics(&registry);
    s.register_metrics(&registry);
    let good = sample_entity();
    s.insert_entity(&good).await.unwrap();
    let db = raw_client().await.database(&name);
    let tasks = db.collection::<Document>("tasks");
    tasks
        .insert_one(
            doc! { "_id": "not-a-uuid", "entity": "x", "kind": "youtube", "channel_id": "UC" },
        )
        .await
        .unwrap();
    let myspace = Uuid::new_v4();
    tasks
        .insert_one(
            doc! { "_id": uuid_bson(myspace), "entity": uuid_bson(good.id), "kind": "myspace" },
        )
        .await
        .unwrap();
    let broken = Uuid::new_v4();
    db.collection::<Document>("entities")
        .insert_one(doc! { "_id": uuid_bson(broken), "names": "not a map", "default_language": 7 })
        .await
        .unwrap();
    db.collection::<Document>("users")
        .insert_one(doc! { "_id": uuid_bson(Uuid::new_v4()), "im": "telegram" })
        .await
        .unwrap();

    let listed = s.list_tasks(None).await.unwrap();
    assert_eq!(listed.len(), good.tasks.len(), "{listed:?}");
    let entities = s.list_entities().await.unwrap();
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0].tasks.len(), good.tasks.len());
    assert_eq!(
        s.get_entity(good.id).await.unwrap().unwrap().tasks.len(),
        good.tasks.len()
    );
    assert!(s.list_users(None).await.unwrap().is_empty());
    match s.get_entity(broken).await {
        Err(StorageError::Corrupt(what)) => assert!(what.contains(&broken.to_string()), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    match s.get_task(myspace).await {
        Err(StorageError::Corrupt(what)) => assert!(what.contains("myspace"), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let metrics = stargazer_core::telemetry::render_metrics(&registry);
    for line in [
        // Two bad tasks, seen by list_tasks, list_entities and get_entity(good).
        r#"stargazer_storage_malformed_total{collection="tasks"} 5"#,
        r#"stargazer_storage_malformed_total{collection="entities"} 1"#,
        r#"stargazer_storage_malformed_total{collection="users"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
}

/// Two instances, each with its own connection, race to give one channel to two
/// entities: exactly one wins and the other gets a `Conflict` naming the account and the
/// winner, with transactions and without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_race_for_one_account() {
    for transactions in [true, false] {
        let (first, name) = fresh_named().await;
        let second = MongoStorage::connect_db(&mongo_url(), &name).await.unwrap();
        let (first, second) = if transactions {
            (first, second)
        } else {
            (first.without_transactions(), second.without_transactions())
        };
        for round in 0..5 {
            let (a, b) = (sample_entity(), sample_entity());
            let mut b = b;
            b.tasks[0].params = a.tasks[0].params.clone();
            let (ra, rb) = tokio::join!(first.insert_entity(&a), second.insert_entity(&b));
            let account = a.tasks[0].params.source_id().to_owned();
            let (winner, loser) = match (&ra, &rb) {
                (Ok(()), Err(StorageError::Conflict(what))) => (a.id, what.clone()),
                (Err(StorageError::Conflict(what)), Ok(())) => (b.id, what.clone()),
                other => panic!("round {round} (transactions: {transactions}): {other:?}"),
            };
            assert!(loser.contains(&account), "{loser}");
            assert!(loser.contains(&winner.to_string()), "{loser}");
            let watching: Vec<Task> = first
                .list_tasks(None)
                .await
                .unwrap()
                .into_iter()
                .filter(|t| t.params.source_id() == account)
                .collect();
            assert_eq!(watching.len(), 1, "{watching:?}");
            assert_eq!(watching[0].entity, winner);
        }
    }
}

/// Tasks written before the account index existed get their account on open; two that
/// share one make opening fail with `Inconsistent` naming both, and nothing is deleted.
#[tokio::test]
async fn opening_checks_accounts_written_before_the_index() {
    let name = fresh_db_name();
    let db = raw_client().await.database(&name);
    let tasks = db.collection::<Document>("tasks");
    let (t1, t2, e1, e2) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let channel = "UCdupdupdupdupdupdupdupd";
    tasks
        .insert_many([
            doc! { "_id": uuid_bson(t1), "entity": uuid_bson(e1), "kind": "youtube", "channel_id": channel },
            doc! { "_id": uuid_bson(t2), "entity": uuid_bson(e2), "kind": "youtube", "channel_id": channel },
            doc! { "_id": "junk", "kind": "youtube" },
        ])
        .await
        .unwrap();
    match MongoStorage::connect_db(&mongo_url(), &name).await {
        Err(StorageError::Inconsistent(what)) => {
            for part in [
                channel.to_owned(),
                t1.to_string(),
                t2.to_string(),
                e1.to_string(),
                e2.to_string(),
            ] {
                assert!(what.contains(&part), "{part} missing in {what}");
            }
        }
        other => panic!("expected Inconsistent, got {other:?}"),
    }
    assert_eq!(tasks.count_documents(doc! {}).await.unwrap(), 3);

    // The operator removes one; now it opens and the other has its account.
    tasks
        .delete_one(doc! { "_id": uuid_bson(t2) })
        .await
        .unwrap();
    let s = MongoStorage::connect_db(&mongo_url(), &name).await.unwrap();
    let stored = tasks
        .find_one(doc! { "_id": uuid_bson(t1) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("account").unwrap(), channel);
    let mut thief = sample_entity();
    thief.tasks[0].params = TaskParams::Youtube {
        channel_id: channel.to_owned(),
    };
    assert!(matches!(
        s.insert_entity(&thief).await,
        Err(StorageError::Conflict(what)) if what.contains(&e1.to_string())
    ));
}

// ---------------------------------------------------------------- connection and indexes

/// A server that is not there fails opening within the server-selection bound (a few
/// seconds), not the driver's default 30 s.
#[tokio::test]
async fn an_unreachable_server_fails_within_the_selection_timeout() {
    let started = std::time::Instant::now();
    let result = MongoStorage::connect_db("mongodb://127.0.0.1:1/", &fresh_db_name()).await;
    assert!(
        matches!(result, Err(StorageError::Backend(_))),
        "{result:?}"
    );
    let bound = stargazer_core::storage::mongo::SERVER_SELECTION_TIMEOUT + Duration::from_secs(3);
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
}

/// Connecting twice to one database is fine (index creation is idempotent) and both
/// instances see the same data; the URL path picks the database.
#[tokio::test]
async fn connect_is_idempotent_and_uses_the_url_database() {
    let name = fresh_db_name();
    let base = mongo_url();
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    let a = MongoStorage::connect(&url).await.unwrap();
    let b = stargazer_core::storage::connect(&url).await.unwrap();
    assert_eq!(a.database().name(), name);
    assert!(a.uses_transactions(), "SecantusDB is a replica set");
    a.kv_put("ns", "k", &json!(1)).await.unwrap();
    assert_eq!(b.kv_get("ns", "k").await.unwrap(), Some(json!(1)));

    let users = a.database().collection::<Document>("users");
    let names = users.list_index_names().await.unwrap();
    assert!(names.contains(&"im_chat".to_owned()), "{names:?}");
    let subs = a.database().collection::<Document>("subscriptions");
    let names = subs.list_index_names().await.unwrap();
    for index in ["user_entity", "entity_user"] {
        assert!(names.contains(&index.to_owned()), "{names:?}");
    }
}

/// A URL that is not a MongoDB URL is a clear error, not a hang or a panic.
#[tokio::test]
async fn bad_url_is_an_error() {
    match MongoStorage::connect("mongodb://").await {
        Err(StorageError::Backend(message)) => assert!(message.contains("url"), "{message}"),
        other => panic!("expected Backend, got {other:?}"),
    }
}

/// The conflict message says which key collided.
#[tokio::test]
async fn conflicts_name_the_key() {
    let (s, _) = fresh_named().await;
    let a = sample_user("telegram");
    s.insert_user(&a).await.unwrap();
    let mut b = sample_user("telegram");
    b.im_chat_id = a.im_chat_id.clone();
    match s.insert_user(&b).await {
        Err(StorageError::Conflict(what)) => assert!(what.contains(&a.im_chat_id), "{what}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let mut c = sample_user("telegram");
    c.id = a.id;
    match s.insert_user(&c).await {
        Err(StorageError::Conflict(what)) => assert!(what.contains(&a.id.to_string()), "{what}"),
        other => panic!("expected Conflict, got {other:?}"),
    }

    let e = sample_entity();
    s.insert_entity(&e).await.unwrap();
    let mut thief = sample_entity();
    thief.tasks[1].id = e.tasks[0].id;
    match s.insert_entity(&thief).await {
        Err(StorageError::Conflict(what)) => {
            assert!(what.contains(&e.tasks[0].id.to_string()), "{what}")
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // Nothing of the refused entity stays behind.
    assert_eq!(s.get_entity(thief.id).await.unwrap(), None);
    assert_eq!(s.get_task(thief.tasks[0].id).await.unwrap(), None);
}

/// Tasks come back in the order the entity lists them, not in id order.
#[tokio::test]
async fn entity_keeps_task_order() {
    let (s, _) = fresh_named().await;
    let mut e = sample_entity();
    e.tasks.sort_by_key(|t| std::cmp::Reverse(t.id));
    s.insert_entity(&e).await.unwrap();
    assert_eq!(s.get_entity(e.id).await.unwrap().as_ref(), Some(&e));
    e.tasks.reverse();
    s.update_entity(&e).await.unwrap();
    assert_eq!(s.list_entities().await.unwrap(), vec![e]);
}

// ---------------------------------------------------------------- change streams

/// Changes written by another `MongoStorage` (another process, as far as the server can
/// tell) reach the watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_another_instance() {
    let (watcher, name) = fresh_named().await;
    let writer = MongoStorage::connect_db(&mongo_url(), &name).await.unwrap();
    let mut stream = watcher.watch_tasks().await.unwrap();

    let e = sample_entity();
    let ids: HashSet<Uuid> = e.tasks.iter().map(|t| t.id).collect();
    writer.insert_entity(&e).await.unwrap();
    let mut got = vec![
        next_change(&mut stream, &ids).await,
        next_change(&mut stream, &ids).await,
    ];
    got.sort_by_key(|c| match c {
        TaskChange::Upserted(t) => t.id,
        TaskChange::Deleted(id) => *id,
    });
    let mut want: Vec<TaskChange> = e.tasks.iter().cloned().map(TaskChange::Upserted).collect();
    want.sort_by_key(|c| match c {
        TaskChange::Upserted(t) => t.id,
        TaskChange::Deleted(id) => *id,
    });
    assert_eq!(got, want);

    writer.delete_entity(e.id).await.unwrap();
    let mut deleted = HashSet::new();
    for _ in 0..2 {
        match next_change(&mut stream, &ids).await {
            TaskChange::Deleted(id) => {
                deleted.insert(id);
            }
            other => panic!("expected a delete, got {other:?}"),
        }
    }
    assert_eq!(deleted, ids);
}

/// Edits made with other tools (`$set`, raw delete) are reported too: updates carry the
/// whole task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_hand_made_edits() {
    let (s, name) = fresh_named().await;
    let e = sample_entity();
    s.insert_entity(&e).await.unwrap();
    let mut stream = s.watch_tasks().await.unwrap();
    let ids: HashSet<Uuid> = e.tasks.iter().map(|t| t.id).collect();

    let tasks = raw_client()
        .await
        .database(&name)
        .collection::<Document>("tasks");
    let key = |id: Uuid| {
        Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: id.as_bytes().to_vec(),
        })
    };
    tasks
        .update_one(
            doc! { "_id": key(e.tasks[0].id) },
            doc! { "$set": { "channel_id": "UCbbbbbbbbbbbbbbbbbbbbbb" } },
        )
        .await
        .unwrap();
    let mut changed = e.tasks[0].clone();
    changed.params = TaskParams::Youtube {
        channel_id: "UCbbbbbbbbbbbbbbbbbbbbbb".into(),
    };
    assert_eq!(
        change_after_inserts(&mut stream, &ids, &e.tasks).await,
        TaskChange::Upserted(changed)
    );

    tasks
        .delete_one(doc! { "_id": key(e.tasks[1].id) })
        .await
        .unwrap();
    assert_eq!(
        change_after_inserts(&mut stream, &ids, &e.tasks).await,
        TaskChange::Deleted(e.tasks[1].id)
    );
}

/// The next change of `ids` that is not one of the `inserted` tasks as first written:
/// the MongoDB-wire test server may still report inserts made just before a watch
/// opened, and the change under test must follow them.
async fn change_after_inserts(
    stream: &mut futures::stream::BoxStream<'static, stargazer_core::storage::Result<TaskChange>>,
    ids: &HashSet<Uuid>,
    inserted: &[Task],
) -> TaskChange {
    loop {
        let change = next_change(stream, ids).await;
        if !inserted
            .iter()
            .any(|t| change == TaskChange::Upserted(t.clone()))
        {
            return change;
        }
    }
}

/// Dropping the storage ends its watch streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_storage_is_dropped() {
    let (s, _) = fresh_named().await;
    let mut stream = s.watch_tasks().await.unwrap();
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("stream ends in time");
    assert!(end.is_none(), "expected the end, got {end:?}");
}

/// Dropping the tasks collection under a watcher yields one error (reload), after which
/// the stream keeps reporting new changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_dropped_collection() {
    let (s, name) = fresh_named().await;
    let mut stream = s.watch_tasks().await.unwrap();
    raw_client()
        .await
        .database(&name)
        .collection::<Document>("tasks")
        .drop()
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item in time")
        .expect("stream still open");
    assert!(item.is_err(), "expected a reload signal, got {item:?}");

    let e = sample_entity();
    let ids: HashSet<Uuid> = e.tasks.iter().map(|t| t.id).collect();
    s.insert_entity(&e).await.unwrap();
    assert!(matches!(
        next_change(&mut stream, &ids).await,
        TaskChange::Upserted(_)
    ));
}

// ---------------------------------------------------------------- fan-out at scale

/// `subscribers` returns exactly the matching users among 10 000 subscriptions, in user
/// order (correctness at scale; speed is measured by the `mongo_subscribers` bench).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_at_scale() {
    const N: usize = 10_000;
    let (s, name) = fresh_named().await;
    let e = sample_entity();
    s.insert_entity(&e).await.unwrap();

    // Bulk-load through the driver: the storage's per-record calls are not what is tested.
    let db = raw_client().await.database(&name);
    let bin = |id: Uuid| {
        Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: id.as_bytes().to_vec(),
        })
    };
    let mut users = Vec::with_capacity(N);
    let mut subs = Vec::with_capacity(N);
    let mut want = Vec::new();
    for i in 0..N {
        let id = Uuid::new_v4();
        let im = if i % 10 == 0 { "other" } else { "telegram" };
        let paused = i % 7 == 0;
        let kinds: Vec<&str> = match i % 3 {
            0 => vec![],
            1 => vec!["youtube.live"],
            _ => vec!["twitter.tweet"],
        };
        users.push(doc! {
            "_id": bin(id), "im": im, "im_chat_id": i.to_string(), "name": "u",
            "language": "en", "settings": { "timezone": Bson::Null, "paused": paused },
            "created_at": bson::DateTime::from_millis(1_700_000_000_000),
        });
        subs.push(doc! { "user": bin(id), "entity": bin(e.id), "kinds": &kinds });
        if im == "telegram" && !paused && i % 3 != 2 {
            want.push(id);
        }
    }
    db.collection::<Document>("users")
        .insert_many(users)
        .await
        .unwrap();
    db.collection::<Document>("subscriptions")
        .insert_many(subs)
        .await
        .unwrap();
    want.sort();

    let got = s
        .subscribers(e.id, "youtube.live", "telegram")
        .await
        .unwrap();
    assert_eq!(got.iter().map(|x| x.user.id).collect::<Vec<_>>(), want);
    assert!(got
        .iter()
        .all(|x| x.subscription.entity == e.id && x.subscription.wants("youtube.live")));
}
