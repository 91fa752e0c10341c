//! The contract every [`Storage`] implementation must honour, written once and run against
//! each backend.
//!
//! How to use it from a test file `core/tests/storage_<backend>.rs`:
//!
//! ```ignore
//! mod storage_suite;
//!
//! /// A fresh, empty storage per test (a new database, a new in-memory file, ...).
//! async fn fresh() -> std::sync::Arc<dyn stargazer_core::storage::Storage> {
//!     /* open the backend */
//! }
//!
//! storage_contract_tests!(fresh);
//! ```
//!
//! `storage_contract_tests!(factory)` expands to one `#[tokio::test]` per suite function,
//! each calling `factory().await` for its own storage. `mod storage_suite;` must sit at the
//! root of the test file (the macro names `$crate::storage_suite::…`); the macro itself may
//! be invoked anywhere, also inside a submodule to run the suite twice (see
//! `storage_sqlite.rs`). Every function here is also `pub` so
//! a backend file can call one directly with a storage it built differently.
//!
//! The suite checks only what the [`Storage`] docs promise. It uses fresh random ids and
//! namespaces, and asserts "contains" (not equality) on store-wide listings, so it stays
//! correct if a factory hands out a database that already holds data.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as TimeDelta, TimeZone, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::json;
use stargazer_core::model::{
    Access, Credential, DelayedMessage, DeliveryRecord, Entity, Group, Permissions, Session,
    Subscription, Task, TaskChange, TaskKind, TaskParams, User, UserSettings,
};
use stargazer_core::storage::{Result, Storage, StorageError, Subscriber};
use uuid::Uuid;

/// Expands to one `#[tokio::test]` per contract function, each given `$factory().await`.
#[macro_export]
macro_rules! storage_contract_tests {
    ($factory:expr) => {
        $crate::storage_contract_tests!(@each $factory;
            entities_crud,
            entity_conflicts,
            account_conflicts,
            entity_not_found,
            update_entity_replaces_tasks,
            delete_entity_cascades,
            groups_upsert_and_list,
            tasks_get_and_list_by_kind,
            watch_tasks_sees_changes,
            users_crud,
            user_conflicts,
            user_not_found,
            delete_user_cascades,
            subscriptions_crud,
            subscribers_filtering,
            sessions_lifecycle,
            credentials_crud,
            delayed_crud,
            delayed_pagination,
            kv_namespaces,
            seen_window,
            delivery_log,
            delivered_chats_of_an_event,
            delivery_batches,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let storage = ($factory)().await;
                $crate::storage_suite::$name(storage).await;
            }
        )*
    };
}

/// How long to wait for a task change before declaring it missing.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- fixtures

/// Now, truncated to milliseconds: the finest precision every backend keeps.
fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    Utc.timestamp_millis_opt(now.timestamp_millis())
        .single()
        .expect("now is representable")
}

fn youtube_task(entity: Uuid) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Youtube {
            channel_id: format!("UC{}", &Uuid::new_v4().simple().to_string()[..22]),
        },
    }
}

fn twitter_task(entity: Uuid) -> Task {
    Task {
        id: Uuid::new_v4(),
        entity,
        params: TaskParams::Twitter {
            user_id: (Uuid::new_v4().as_u128() % 1_000_000_000_000).to_string(),
        },
    }
}

/// An entity with one YouTube and one Twitter task.
fn entity() -> Entity {
    let id = Uuid::new_v4();
    Entity {
        id,
        names: [
            ("en".to_owned(), format!("Streamer {id}")),
            ("ja".to_owned(), "配信者".to_owned()),
        ]
        .into_iter()
        .collect(),
        default_language: "en".into(),
        group: Some(Uuid::new_v4()),
        translate_to: vec!["en".into(), "zh".into()],
        tasks: vec![youtube_task(id), twitter_task(id)],
    }
}

/// The entity with its tasks ordered by id, so comparisons ignore task order.
fn normalized(mut entity: Entity) -> Entity {
    entity.tasks.sort_by_key(|t| t.id);
    entity
}

fn user(im: &str) -> User {
    User {
        id: Uuid::new_v4(),
        im: im.to_owned(),
        im_chat_id: (Uuid::new_v4().as_u128() % 1_000_000_000_000).to_string(),
        name: "Chat".into(),
        language: "en".into(),
        settings: UserSettings::default(),
        created_at: now_ms(),
    }
}

/// An IM platform name no other test uses.
fn unique_im() -> String {
    format!("im-{}", Uuid::new_v4().simple())
}

fn session(user: Uuid, expires_at: DateTime<Utc>) -> Session {
    Session {
        token_hash: Uuid::new_v4().simple().to_string(),
        user,
        created_at: expires_at - TimeDelta::hours(1),
        expires_at,
        max_expires_at: expires_at + TimeDelta::days(1),
    }
}

fn subscription(user: Uuid, entity: Uuid, kinds: &[&str]) -> Subscription {
    Subscription {
        user,
        entity,
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T>) {
    match result {
        Err(StorageError::Conflict(what)) => assert!(!what.is_empty(), "conflict names nothing"),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T>) {
    match result {
        Err(StorageError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_sorted<T, K: Ord + Debug>(items: &[T], key: impl Fn(&T) -> K) {
    let keys: Vec<K> = items.iter().map(key).collect();
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "not in order: {keys:?}"
    );
}

/// The next change concerning one of `ids`, failing the test if none arrives in time.
async fn next_change(
    stream: &mut BoxStream<'static, Result<TaskChange>>,
    ids: &HashSet<Uuid>,
) -> TaskChange {
    loop {
        let item = tokio::time::timeout(CHANGE_TIMEOUT, stream.next())
            .await
            .expect("no task change arrived in time")
            .expect("watch stream ended")
            .expect("watch stream failed");
        let id = match &item {
            TaskChange::Upserted(task) => task.id,
            TaskChange::Deleted(id) => *id,
        };
        if ids.contains(&id) {
            return item;
        }
    }
}

/// Collects `n` changes concerning `ids`, in arrival order.
async fn next_changes(
    stream: &mut BoxStream<'static, Result<TaskChange>>,
    ids: &HashSet<Uuid>,
    n: usize,
) -> Vec<TaskChange> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_change(stream, ids).await);
    }
    out
}

fn change_key(change: &TaskChange) -> (u8, Uuid) {
    match change {
        TaskChange::Upserted(task) => (0, task.id),
        TaskChange::Deleted(id) => (1, *id),
    }
}

/// Asserts two change lists hold the same changes, in any order.
#[track_caller]
fn assert_same_changes(mut got: Vec<TaskChange>, mut want: Vec<TaskChange>) {
    got.sort_by_key(change_key);
    want.sort_by_key(change_key);
    assert_eq!(got, want);
}

// ---------------------------------------------------------------- entities

/// Insert, get, list and delete round-trip an entity with its tasks.
pub async fn entities_crud(s: Arc<dyn Storage>) {
    let a = entity();
    let mut b = entity();
    b.group = None;
    b.translate_to.clear();
    b.tasks.clear();
    s.insert_entity(&a).await.unwrap();
    s.insert_entity(&b).await.unwrap();

    let got = s.get_entity(a.id).await.unwrap().expect("entity a stored");
    assert_eq!(normalized(got), normalized(a.clone()));
    let got = s.get_entity(b.id).await.unwrap().expect("entity b stored");
    assert_eq!(got, b);
    assert_eq!(s.get_entity(Uuid::new_v4()).await.unwrap(), None);

    let all = s.list_entities().await.unwrap();
    assert_sorted(&all, |e| e.id);
    let found_a = all.iter().find(|e| e.id == a.id).expect("a listed");
    assert_eq!(normalized(found_a.clone()), normalized(a.clone()));
    let found_b = all.iter().find(|e| e.id == b.id).expect("b listed");
    assert_eq!(found_b, &b);

    s.delete_entity(a.id).await.unwrap();
    assert_eq!(s.get_entity(a.id).await.unwrap(), None);
    let all = s.list_entities().await.unwrap();
    assert!(all.iter().all(|e| e.id != a.id));
    assert!(all.iter().any(|e| e.id == b.id));
}

/// Duplicate entity ids and task ids are refused and leave nothing behind.
pub async fn entity_conflicts(s: Arc<dyn Storage>) {
    let a = entity();
    s.insert_entity(&a).await.unwrap();

    // Same entity id again.
    let mut again = entity();
    again.id = a.id;
    for task in &mut again.tasks {
        task.entity = a.id;
    }
    assert_conflict(s.insert_entity(&again).await);

    // A new entity reusing one of a's task ids.
    let mut thief = entity();
    thief.tasks[0].id = a.tasks[0].id;
    assert_conflict(s.insert_entity(&thief).await);
    assert_eq!(s.get_entity(thief.id).await.unwrap(), None);
    let owner = s.get_task(a.tasks[0].id).await.unwrap().expect("task kept");
    assert_eq!(owner.entity, a.id);
    assert_eq!(s.get_task(thief.tasks[1].id).await.unwrap(), None);

    // An update moving another entity's task id here.
    let mut b = entity();
    s.insert_entity(&b).await.unwrap();
    let mut stolen = a.tasks[1].clone();
    stolen.entity = b.id;
    b.tasks.push(stolen);
    assert_conflict(s.update_entity(&b).await);
    let owner = s.get_task(a.tasks[1].id).await.unwrap().expect("task kept");
    assert_eq!(owner.entity, a.id);
    assert_eq!(
        normalized(s.get_entity(a.id).await.unwrap().unwrap()),
        normalized(a)
    );
}

/// One account is watched by one task: a second entity (inserted or updated) asking for
/// it is a `Conflict` naming the account and the entity that owns it, and changes nothing.
pub async fn account_conflicts(s: Arc<dyn Storage>) {
    let a = entity();
    s.insert_entity(&a).await.unwrap();
    let taken = a.tasks[0].params.clone();
    let account = taken.source_id().to_owned();

    let mut thief = entity();
    thief.tasks[0].params = taken.clone();
    match s.insert_entity(&thief).await {
        Err(StorageError::Conflict(what)) => {
            assert!(what.contains(&account), "{what}");
            assert!(what.contains(&a.id.to_string()), "{what}");
        }
        other => panic!("expected a conflict on {account}, got {other:?}"),
    }
    assert_eq!(s.get_entity(thief.id).await.unwrap(), None);
    assert_eq!(s.get_task(thief.tasks[1].id).await.unwrap(), None);

    let mut b = entity();
    s.insert_entity(&b).await.unwrap();
    let before = s.get_entity(b.id).await.unwrap().unwrap();
    b.tasks.push(Task {
        id: Uuid::new_v4(),
        entity: b.id,
        params: taken.clone(),
    });
    match s.update_entity(&b).await {
        Err(StorageError::Conflict(what)) => {
            assert!(what.contains(&account), "{what}");
            assert!(what.contains(&a.id.to_string()), "{what}");
        }
        other => panic!("expected a conflict on {account}, got {other:?}"),
    }
    assert_eq!(
        normalized(s.get_entity(b.id).await.unwrap().unwrap()),
        normalized(before)
    );
    let watching: Vec<Task> = s
        .list_tasks(Some(taken.kind()))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.params == taken)
        .collect();
    assert_eq!(watching.len(), 1, "{watching:?}");
    assert_eq!(watching[0].entity, a.id);

    // The same id on the other platform is another account.
    let mut other_kind = entity();
    other_kind.tasks[1].params = TaskParams::Twitter {
        user_id: account.clone(),
    };
    s.insert_entity(&other_kind).await.unwrap();

    // Once the owner lets go, the account is free.
    s.delete_entity(a.id).await.unwrap();
    s.update_entity(&b).await.unwrap();
    let owner = s
        .get_task(b.tasks[2].id)
        .await
        .unwrap()
        .expect("task stored");
    assert_eq!(owner.entity, b.id);
}

/// Updating or deleting a missing entity is `NotFound`.
pub async fn entity_not_found(s: Arc<dyn Storage>) {
    let ghost = entity();
    assert_not_found(s.update_entity(&ghost).await);
    assert_not_found(s.delete_entity(ghost.id).await);
    assert_eq!(s.get_entity(ghost.id).await.unwrap(), None);
    assert_eq!(s.get_task(ghost.tasks[0].id).await.unwrap(), None);
}

/// `update_entity` replaces fields and the task list: removed tasks go, new ones arrive,
/// changed ones change.
pub async fn update_entity_replaces_tasks(s: Arc<dyn Storage>) {
    let mut e = entity();
    let extra = youtube_task(e.id);
    e.tasks.push(extra.clone());
    s.insert_entity(&e).await.unwrap();

    let removed = e.tasks.remove(0);
    let added = twitter_task(e.id);
    e.tasks.push(added.clone());
    e.tasks[0].params = TaskParams::Twitter {
        user_id: "424242".into(),
    };
    e.names.insert("zh".into(), "主播".into());
    e.default_language = "ja".into();
    e.group = None;
    e.translate_to = vec!["ja".into()];
    s.update_entity(&e).await.unwrap();

    let got = s.get_entity(e.id).await.unwrap().expect("entity kept");
    assert_eq!(normalized(got), normalized(e.clone()));
    assert_eq!(s.get_task(removed.id).await.unwrap(), None);
    assert_eq!(s.get_task(added.id).await.unwrap(), Some(added));
    assert_eq!(
        s.get_task(e.tasks[0].id).await.unwrap(),
        Some(e.tasks[0].clone())
    );

    // Emptying the task list removes every task.
    e.tasks.clear();
    s.update_entity(&e).await.unwrap();
    assert_eq!(s.get_entity(e.id).await.unwrap().unwrap().tasks, vec![]);
    assert_eq!(s.get_task(extra.id).await.unwrap(), None);
}

/// Deleting an entity deletes its tasks and every subscription to it, and nothing else.
pub async fn delete_entity_cascades(s: Arc<dyn Storage>) {
    let gone = entity();
    let kept = entity();
    s.insert_entity(&gone).await.unwrap();
    s.insert_entity(&kept).await.unwrap();
    let im = unique_im();
    let u = user(&im);
    s.insert_user(&u).await.unwrap();
    s.put_subscription(&subscription(u.id, gone.id, &[]))
        .await
        .unwrap();
    s.put_subscription(&subscription(u.id, kept.id, &[]))
        .await
        .unwrap();

    s.delete_entity(gone.id).await.unwrap();

    for task in &gone.tasks {
        assert_eq!(s.get_task(task.id).await.unwrap(), None);
    }
    let tasks = s.list_tasks(None).await.unwrap();
    assert!(tasks.iter().all(|t| t.entity != gone.id));
    assert!(tasks.iter().any(|t| t.id == kept.tasks[0].id));
    let subs = s.list_subscriptions(u.id).await.unwrap();
    assert_eq!(subs, vec![subscription(u.id, kept.id, &[])]);
    assert!(s
        .subscribers(gone.id, "youtube.live", &im)
        .await
        .unwrap()
        .is_empty());
    assert_not_found(s.delete_entity(gone.id).await);
}

/// Groups are inserted, replaced and listed in id order.
pub async fn groups_upsert_and_list(s: Arc<dyn Storage>) {
    let mut g = Group {
        id: Uuid::new_v4(),
        names: [("en".to_owned(), "Agency".to_owned())]
            .into_iter()
            .collect(),
    };
    let h = Group {
        id: Uuid::new_v4(),
        names: Default::default(),
    };
    s.upsert_group(&g).await.unwrap();
    s.upsert_group(&h).await.unwrap();
    g.names.insert("ja".into(), "事務所".into());
    s.upsert_group(&g).await.unwrap();

    let all = s.list_groups().await.unwrap();
    assert_sorted(&all, |g| g.id);
    assert_eq!(
        all.iter().filter(|x| x.id == g.id).collect::<Vec<_>>(),
        vec![&g]
    );
    assert_eq!(
        all.iter().filter(|x| x.id == h.id).collect::<Vec<_>>(),
        vec![&h]
    );
}

// ---------------------------------------------------------------- tasks

/// Tasks are readable one by one and listable by kind, in id order.
pub async fn tasks_get_and_list_by_kind(s: Arc<dyn Storage>) {
    let mut e = entity();
    e.tasks.push(youtube_task(e.id));
    e.tasks.push(twitter_task(e.id));
    s.insert_entity(&e).await.unwrap();

    for task in &e.tasks {
        assert_eq!(s.get_task(task.id).await.unwrap().as_ref(), Some(task));
    }
    assert_eq!(s.get_task(Uuid::new_v4()).await.unwrap(), None);

    for kind in TaskKind::ALL {
        let listed = s.list_tasks(Some(kind)).await.unwrap();
        assert_sorted(&listed, |t| t.id);
        assert!(listed.iter().all(|t| t.kind() == kind), "{listed:?}");
        let mine: Vec<&Task> = listed.iter().filter(|t| t.entity == e.id).collect();
        let mut want: Vec<&Task> = e.tasks.iter().filter(|t| t.kind() == kind).collect();
        want.sort_by_key(|t| t.id);
        assert_eq!(mine, want);
    }
    let all = s.list_tasks(None).await.unwrap();
    assert_sorted(&all, |t| t.id);
    let mine: HashSet<Uuid> = all
        .iter()
        .filter(|t| t.entity == e.id)
        .map(|t| t.id)
        .collect();
    assert_eq!(mine, e.tasks.iter().map(|t| t.id).collect());
}

/// The watch stream reports inserted, changed, added and removed tasks, and nothing for
/// tasks an update left untouched.
pub async fn watch_tasks_sees_changes(s: Arc<dyn Storage>) {
    let mut stream = s.watch_tasks().await.unwrap();

    let mut e = entity();
    e.tasks.push(youtube_task(e.id));
    let marker = entity();
    let mut ids: HashSet<Uuid> = e.tasks.iter().map(|t| t.id).collect();
    ids.extend(marker.tasks.iter().map(|t| t.id));

    // Insert: every task is upserted.
    s.insert_entity(&e).await.unwrap();
    let got = next_changes(&mut stream, &ids, e.tasks.len()).await;
    assert_same_changes(
        got,
        e.tasks.iter().cloned().map(TaskChange::Upserted).collect(),
    );

    // Update: tasks[0] unchanged, tasks[1] changed, tasks[2] removed, one added.
    let removed = e.tasks.pop().expect("three tasks");
    e.tasks[1].params = TaskParams::Twitter {
        user_id: "777".into(),
    };
    let added = youtube_task(e.id);
    ids.insert(added.id);
    e.tasks.push(added.clone());
    e.names.insert("fr".into(), "Streameuse".into());
    s.update_entity(&e).await.unwrap();
    let got = next_changes(&mut stream, &ids, 3).await;
    assert_same_changes(
        got,
        vec![
            TaskChange::Upserted(e.tasks[1].clone()),
            TaskChange::Upserted(added),
            TaskChange::Deleted(removed.id),
        ],
    );

    // The unchanged task produced nothing: the next change is the marker's.
    s.insert_entity(&marker).await.unwrap();
    match next_change(&mut stream, &ids).await {
        TaskChange::Upserted(task) => assert_eq!(task.entity, marker.id, "unexpected change"),
        other => panic!("unexpected change {other:?}"),
    }
    let _ = next_changes(&mut stream, &ids, marker.tasks.len() - 1).await;

    // Delete: every task is deleted.
    s.delete_entity(e.id).await.unwrap();
    let got = next_changes(&mut stream, &ids, e.tasks.len()).await;
    assert_same_changes(
        got,
        e.tasks.iter().map(|t| TaskChange::Deleted(t.id)).collect(),
    );
}

// ---------------------------------------------------------------- users

/// Users round-trip and are found by id and by chat; updates replace their fields.
pub async fn users_crud(s: Arc<dyn Storage>) {
    let im = unique_im();
    let mut a = user(&im);
    let b = user(&im);
    let other = user(&unique_im());
    for u in [&a, &b, &other] {
        s.insert_user(u).await.unwrap();
    }

    assert_eq!(s.get_user(a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(s.get_user(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        s.find_user_by_chat(&im, &a.im_chat_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );
    assert_eq!(
        s.find_user_by_chat(&im, "no-such-chat").await.unwrap(),
        None
    );
    assert_eq!(
        s.find_user_by_chat(&unique_im(), &a.im_chat_id)
            .await
            .unwrap(),
        None
    );

    let mut want = vec![a.clone(), b.clone()];
    want.sort_by_key(|u| u.id);
    assert_eq!(s.list_users(Some(&im)).await.unwrap(), want);
    let all = s.list_users(None).await.unwrap();
    assert_sorted(&all, |u| u.id);
    for u in [&a, &b, &other] {
        assert!(all.contains(u), "{u:?} not listed");
    }

    let old_chat = a.im_chat_id.clone();
    a.name = "Renamed".into();
    a.language = "ja".into();
    a.settings = UserSettings {
        timezone: Some("Asia/Tokyo".into()),
        paused: true,
    };
    a.im_chat_id = format!("{old_chat}0");
    s.update_user(&a).await.unwrap();
    assert_eq!(s.get_user(a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(s.find_user_by_chat(&im, &old_chat).await.unwrap(), None);
    assert_eq!(
        s.find_user_by_chat(&im, &a.im_chat_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );

    s.delete_user(b.id).await.unwrap();
    assert_eq!(s.get_user(b.id).await.unwrap(), None);
    assert_eq!(s.list_users(Some(&im)).await.unwrap(), vec![a]);
}

/// Duplicate user ids and chats are refused, also when an update would take a chat.
pub async fn user_conflicts(s: Arc<dyn Storage>) {
    let im = unique_im();
    let a = user(&im);
    let b = user(&im);
    s.insert_user(&a).await.unwrap();
    s.insert_user(&b).await.unwrap();

    let mut same_id = user(&im);
    same_id.id = a.id;
    assert_conflict(s.insert_user(&same_id).await);

    let mut same_chat = user(&im);
    same_chat.im_chat_id = a.im_chat_id.clone();
    assert_conflict(s.insert_user(&same_chat).await);
    assert_eq!(s.get_user(same_chat.id).await.unwrap(), None);

    // The same chat id on another platform is a different chat.
    let mut elsewhere = user(&unique_im());
    elsewhere.im_chat_id = a.im_chat_id.clone();
    s.insert_user(&elsewhere).await.unwrap();

    let mut taker = b.clone();
    taker.im_chat_id = a.im_chat_id.clone();
    assert_conflict(s.update_user(&taker).await);
    assert_eq!(s.get_user(b.id).await.unwrap().as_ref(), Some(&b));
    assert_eq!(
        s.find_user_by_chat(&im, &a.im_chat_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );
}

/// Updating or deleting a missing user is `NotFound`.
pub async fn user_not_found(s: Arc<dyn Storage>) {
    let ghost = user(&unique_im());
    assert_not_found(s.update_user(&ghost).await);
    assert_not_found(s.delete_user(ghost.id).await);
    assert_eq!(s.get_user(ghost.id).await.unwrap(), None);
}

/// Deleting a user deletes their sessions and subscriptions, and nobody else's.
pub async fn delete_user_cascades(s: Arc<dyn Storage>) {
    let im = unique_im();
    let gone = user(&im);
    let kept = user(&im);
    let e = entity();
    s.insert_entity(&e).await.unwrap();
    s.insert_user(&gone).await.unwrap();
    s.insert_user(&kept).await.unwrap();
    let later = now_ms() + TimeDelta::hours(1);
    let gone_session = session(gone.id, later);
    let kept_session = session(kept.id, later);
    s.insert_session(&gone_session).await.unwrap();
    s.insert_session(&kept_session).await.unwrap();
    s.put_subscription(&subscription(gone.id, e.id, &[]))
        .await
        .unwrap();
    s.put_subscription(&subscription(kept.id, e.id, &[]))
        .await
        .unwrap();

    s.delete_user(gone.id).await.unwrap();

    assert_eq!(s.get_session(&gone_session.token_hash).await.unwrap(), None);
    assert_eq!(
        s.get_session(&kept_session.token_hash).await.unwrap(),
        Some(kept_session)
    );
    assert!(s.list_subscriptions(gone.id).await.unwrap().is_empty());
    let subs = s.subscribers(e.id, "youtube.live", &im).await.unwrap();
    assert_eq!(
        subs.iter().map(|x| x.user.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    assert_not_found(s.delete_user(gone.id).await);
}

// ---------------------------------------------------------------- subscriptions

/// Subscriptions are put, replaced, listed in entity order and deleted.
pub async fn subscriptions_crud(s: Arc<dyn Storage>) {
    let u = user(&unique_im());
    s.insert_user(&u).await.unwrap();
    let mut entities = vec![entity(), entity(), entity()];
    for e in &entities {
        s.insert_entity(e).await.unwrap();
    }
    entities.sort_by_key(|e| e.id);

    // Inserted out of order on purpose.
    for e in entities.iter().rev() {
        s.put_subscription(&subscription(u.id, e.id, &["youtube.live"]))
            .await
            .unwrap();
    }
    let want: Vec<Subscription> = entities
        .iter()
        .map(|e| subscription(u.id, e.id, &["youtube.live"]))
        .collect();
    assert_eq!(s.list_subscriptions(u.id).await.unwrap(), want);

    // Replacing keeps one subscription per (user, entity).
    let replaced = subscription(u.id, entities[1].id, &["twitter.tweet", "youtube.video"]);
    s.put_subscription(&replaced).await.unwrap();
    let listed = s.list_subscriptions(u.id).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1], replaced);

    assert!(s.delete_subscription(u.id, entities[0].id).await.unwrap());
    assert!(!s.delete_subscription(u.id, entities[0].id).await.unwrap());
    assert!(!s
        .delete_subscription(Uuid::new_v4(), entities[1].id)
        .await
        .unwrap());
    let listed = s.list_subscriptions(u.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|x| x.entity).collect::<Vec<_>>(),
        vec![entities[1].id, entities[2].id]
    );
    assert!(s
        .list_subscriptions(Uuid::new_v4())
        .await
        .unwrap()
        .is_empty());
}

/// `subscribers` matches the platform and kind, treats empty kinds as all, skips paused
/// users and orders by user id.
pub async fn subscribers_filtering(s: Arc<dyn Storage>) {
    let im = unique_im();
    let other_im = unique_im();
    let e = entity();
    let unrelated = entity();
    s.insert_entity(&e).await.unwrap();
    s.insert_entity(&unrelated).await.unwrap();

    let all_kinds = user(&im);
    let live_only = user(&im);
    let tweets_only = user(&im);
    let mut paused = user(&im);
    paused.settings.paused = true;
    let elsewhere = user(&other_im);
    let not_subscribed = user(&im);
    let subs = [
        subscription(all_kinds.id, e.id, &[]),
        subscription(live_only.id, e.id, &["youtube.live"]),
        subscription(tweets_only.id, e.id, &["twitter.tweet", "twitter.retweet"]),
        subscription(paused.id, e.id, &[]),
        subscription(elsewhere.id, e.id, &["youtube.live"]),
        subscription(not_subscribed.id, unrelated.id, &[]),
    ];
    for u in [
        &all_kinds,
        &live_only,
        &tweets_only,
        &paused,
        &elsewhere,
        &not_subscribed,
    ] {
        s.insert_user(u).await.unwrap();
    }
    for sub in &subs {
        s.put_subscription(sub).await.unwrap();
    }

    let expect = |pairs: &[(&User, &Subscription)]| {
        let mut v: Vec<Subscriber> = pairs
            .iter()
            .map(|(u, sub)| Subscriber {
                user: (*u).clone(),
                subscription: (*sub).clone(),
            })
            .collect();
        v.sort_by_key(|x| x.user.id);
        v
    };

    assert_eq!(
        s.subscribers(e.id, "youtube.live", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0]), (&live_only, &subs[1])])
    );
    assert_eq!(
        s.subscribers(e.id, "twitter.retweet", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0]), (&tweets_only, &subs[2])])
    );
    assert_eq!(
        s.subscribers(e.id, "youtube.video", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0])])
    );
    // A kind that is a prefix of a wanted one does not match it.
    assert_eq!(
        s.subscribers(e.id, "twitter", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0])])
    );
    assert_eq!(
        s.subscribers(e.id, "youtube.live", &other_im)
            .await
            .unwrap(),
        expect(&[(&elsewhere, &subs[4])])
    );
    assert!(s
        .subscribers(e.id, "youtube.live", &unique_im())
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .subscribers(Uuid::new_v4(), "youtube.live", &im)
        .await
        .unwrap()
        .is_empty());

    // Unpausing brings the user back.
    paused.settings.paused = false;
    s.update_user(&paused).await.unwrap();
    let got = s.subscribers(e.id, "youtube.video", &im).await.unwrap();
    assert_eq!(got, expect(&[(&all_kinds, &subs[0]), (&paused, &subs[3])]));
}

// ---------------------------------------------------------------- sessions

/// Sessions are stored once, read, slid, deleted and purged when expired.
pub async fn sessions_lifecycle(s: Arc<dyn Storage>) {
    let u = user(&unique_im());
    s.insert_user(&u).await.unwrap();
    let now = now_ms();
    let mut live = session(u.id, now + TimeDelta::minutes(30));
    s.insert_session(&live).await.unwrap();
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );
    assert_eq!(s.get_session("no-such-token").await.unwrap(), None);

    let mut dup = session(u.id, now + TimeDelta::minutes(5));
    dup.token_hash = live.token_hash.clone();
    assert_conflict(s.insert_session(&dup).await);
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );

    live.expires_at = now + TimeDelta::hours(2);
    s.touch_session(&live.token_hash, live.expires_at)
        .await
        .unwrap();
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );
    assert_not_found(s.touch_session("no-such-token", live.expires_at).await);

    // Purging at a moment long past touches only sessions expired by then.
    let epoch = Utc
        .with_ymd_and_hms(2001, 2, 3, 4, 5, 6)
        .single()
        .expect("valid date");
    let old_a = session(u.id, epoch - TimeDelta::hours(1));
    let old_b = session(u.id, epoch - TimeDelta::days(3));
    let young = session(u.id, epoch + TimeDelta::hours(1));
    for x in [&old_a, &old_b, &young] {
        s.insert_session(x).await.unwrap();
    }
    // Expired ones stay readable until purged; callers check the time.
    assert_eq!(
        s.get_session(&old_a.token_hash).await.unwrap().as_ref(),
        Some(&old_a)
    );
    assert_eq!(s.purge_sessions(epoch).await.unwrap(), 2);
    assert_eq!(s.get_session(&old_a.token_hash).await.unwrap(), None);
    assert_eq!(s.get_session(&old_b.token_hash).await.unwrap(), None);
    assert_eq!(
        s.get_session(&young.token_hash).await.unwrap().as_ref(),
        Some(&young)
    );
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );
    assert_eq!(s.purge_sessions(epoch).await.unwrap(), 0);

    assert!(s.delete_session(&live.token_hash).await.unwrap());
    assert!(!s.delete_session(&live.token_hash).await.unwrap());
    assert_eq!(s.get_session(&live.token_hash).await.unwrap(), None);
}

// ---------------------------------------------------------------- credentials

/// Credentials are unique by username, listed in username order and deletable.
pub async fn credentials_crud(s: Arc<dyn Storage>) {
    let suffix = Uuid::new_v4().simple().to_string();
    let bot = Credential {
        username: format!("bot-{suffix}"),
        hash: "$pbkdf2-sha256$i=1000,l=32$c2FsdA$aGFzaA".into(),
        permissions: Permissions {
            api: Some(Access::Rw),
            mq: Some(Access::Ro),
            ..Default::default()
        },
        queues: vec!["bot.telegram".into(), "bot.telegram-eu".into()],
    };
    let admin = Credential {
        username: format!("admin-{suffix}"),
        hash: "$pbkdf2-sha256$i=1000,l=32$c2FsdDI$aGFzaDI".into(),
        permissions: Permissions {
            admin: Some(Access::Rw),
            coordinator: Some(Access::Ro),
            ..Default::default()
        },
        queues: Vec::new(),
    };
    s.insert_credential(&bot).await.unwrap();
    s.insert_credential(&admin).await.unwrap();
    assert_eq!(
        s.get_credential(&bot.username).await.unwrap().as_ref(),
        Some(&bot)
    );
    assert_eq!(
        s.get_credential(&format!("nobody-{suffix}")).await.unwrap(),
        None
    );

    let mut dup = admin.clone();
    dup.username = bot.username.clone();
    assert_conflict(s.insert_credential(&dup).await);
    assert_eq!(
        s.get_credential(&bot.username).await.unwrap().as_ref(),
        Some(&bot)
    );

    let all = s.list_credentials().await.unwrap();
    assert_sorted(&all, |c| c.username.clone());
    assert!(all.contains(&bot) && all.contains(&admin));

    assert!(s.delete_credential(&bot.username).await.unwrap());
    assert!(!s.delete_credential(&bot.username).await.unwrap());
    assert_eq!(s.get_credential(&bot.username).await.unwrap(), None);
    let all = s.list_credentials().await.unwrap();
    assert!(!all.iter().any(|c| c.username == bot.username));
    assert!(all.contains(&admin));
}

// ---------------------------------------------------------------- delayed messages

fn delayed(id: String, fire_at_ms: i64) -> DelayedMessage {
    DelayedMessage {
        routing_key: format!("youtube.live.{id}"),
        body: id
            .as_bytes()
            .iter()
            .chain([0u8, 255, 10].iter())
            .copied()
            .collect(),
        id,
        fire_at_ms,
    }
}

/// Delayed messages are put, replaced by id, read and deleted.
pub async fn delayed_crud(s: Arc<dyn Storage>) {
    let id = format!("delay-{}", Uuid::new_v4());
    let first = delayed(id.clone(), 1_700_000_000_000);
    s.put_delayed(&first).await.unwrap();
    assert_eq!(s.get_delayed(&id).await.unwrap().as_ref(), Some(&first));

    let mut second = delayed(id.clone(), 1_800_000_000_000);
    second.routing_key = "twitter.tweet".into();
    second.body = vec![];
    s.put_delayed(&second).await.unwrap();
    assert_eq!(s.get_delayed(&id).await.unwrap().as_ref(), Some(&second));
    let page = s.list_delayed(Some(&id[..id.len() - 1]), 10).await.unwrap();
    assert_eq!(page.iter().filter(|m| m.id == id).count(), 1);

    assert!(s.delete_delayed(&id).await.unwrap());
    assert!(!s.delete_delayed(&id).await.unwrap());
    assert_eq!(s.get_delayed(&id).await.unwrap(), None);
}

/// `list_delayed` pages through thousands of messages in id order without gaps or repeats.
pub async fn delayed_pagination(s: Arc<dyn Storage>) {
    const COUNT: usize = 2_500;
    const PAGE: u32 = 700;
    let prefix = format!("page-{}-", Uuid::new_v4().simple());
    let mut ids: Vec<String> = (0..COUNT).map(|i| format!("{prefix}{i:05}")).collect();
    // Insert in a scrambled order so id order is the store's doing.
    let mut scrambled = ids.clone();
    scrambled.sort_by_key(|id| Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes()));
    futures::stream::iter(scrambled)
        .map(|id| {
            let s = s.clone();
            async move {
                let fire_at = 1_700_000_000_000 + id.len() as i64;
                s.put_delayed(&delayed(id, fire_at)).await
            }
        })
        .buffer_unordered(16)
        .for_each(|r| async move { r.unwrap() })
        .await;
    ids.sort();

    let mut seen = Vec::with_capacity(COUNT);
    // The prefix itself sorts before every id that extends it.
    let mut cursor = prefix.clone();
    loop {
        let page = s.list_delayed(Some(&cursor), PAGE).await.unwrap();
        assert!(page.len() <= PAGE as usize);
        assert_sorted(&page, |m| m.id.clone());
        let mine: Vec<&DelayedMessage> = page
            .iter()
            .take_while(|m| m.id.starts_with(&prefix))
            .collect();
        for m in &mine {
            assert!(m.id > cursor);
            assert_eq!(**m, delayed(m.id.clone(), m.fire_at_ms));
        }
        seen.extend(mine.iter().map(|m| m.id.clone()));
        if mine.len() < PAGE as usize {
            break;
        }
        cursor = mine.last().expect("page not empty").id.clone();
    }
    assert_eq!(seen, ids);

    // Unbounded start: the whole set is there, still in order.
    let first = s.list_delayed(None, 3).await.unwrap();
    assert!(!first.is_empty() && first.len() <= 3);
    assert_sorted(&first, |m| m.id.clone());
}

// ---------------------------------------------------------------- key/value

/// Values are stored per namespace, replaced, listed in key order and deleted.
pub async fn kv_namespaces(s: Arc<dyn Storage>) {
    let ns = format!("kv-{}", Uuid::new_v4());
    let other = format!("kv-{}", Uuid::new_v4());
    assert_eq!(s.kv_get(&ns, "cursor").await.unwrap(), None);

    s.kv_put(&ns, "cursor", &json!({"since_id": "123"}))
        .await
        .unwrap();
    s.kv_put(&ns, "a-lease", &json!(42)).await.unwrap();
    s.kv_put(&ns, "z", &json!(["x", null, 1.5, true]))
        .await
        .unwrap();
    s.kv_put(&other, "cursor", &json!("elsewhere"))
        .await
        .unwrap();
    assert_eq!(
        s.kv_get(&ns, "cursor").await.unwrap(),
        Some(json!({"since_id": "123"}))
    );

    s.kv_put(&ns, "cursor", &json!({"since_id": "456", "n": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(
        s.kv_get(&ns, "cursor").await.unwrap(),
        Some(json!({"since_id": "456", "n": [1, 2]}))
    );
    assert_eq!(
        s.kv_list(&ns).await.unwrap(),
        vec![
            ("a-lease".to_owned(), json!(42)),
            ("cursor".to_owned(), json!({"since_id": "456", "n": [1, 2]})),
            ("z".to_owned(), json!(["x", null, 1.5, true])),
        ]
    );
    assert_eq!(
        s.kv_list(&other).await.unwrap(),
        vec![("cursor".to_owned(), json!("elsewhere"))]
    );

    assert!(s.kv_delete(&ns, "cursor").await.unwrap());
    assert!(!s.kv_delete(&ns, "cursor").await.unwrap());
    assert_eq!(s.kv_get(&ns, "cursor").await.unwrap(), None);
    assert_eq!(
        s.kv_get(&other, "cursor").await.unwrap(),
        Some(json!("elsewhere"))
    );
    assert!(s
        .kv_list(&format!("kv-{}", Uuid::new_v4()))
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- seen windows

/// An id is new once per namespace; purging forgets ids seen before the cut.
pub async fn seen_window(s: Arc<dyn Storage>) {
    let ns = format!("seen-{}", Uuid::new_v4());
    let other = format!("seen-{}", Uuid::new_v4());
    let now = now_ms();
    let old = now - TimeDelta::hours(2);

    assert!(s.mark_seen(&ns, "v1", old).await.unwrap());
    assert!(!s.mark_seen(&ns, "v1", old).await.unwrap());
    assert!(s.mark_seen(&ns, "v2", old).await.unwrap());
    assert!(s.mark_seen(&ns, "v3", now).await.unwrap());
    assert!(s.mark_seen(&other, "v1", old).await.unwrap());

    assert_eq!(
        s.purge_seen(&ns, now - TimeDelta::hours(1)).await.unwrap(),
        2
    );
    assert_eq!(
        s.purge_seen(&ns, now - TimeDelta::hours(1)).await.unwrap(),
        0
    );
    // Forgotten ids are new again; kept ones are not; other namespaces are untouched.
    assert!(s.mark_seen(&ns, "v1", now).await.unwrap());
    assert!(!s.mark_seen(&ns, "v3", now).await.unwrap());
    assert!(!s.mark_seen(&other, "v1", now).await.unwrap());
}

// ---------------------------------------------------------------- delivery log

/// A delivery is recorded once per (event, im, chat) and can be read back.
pub async fn delivery_log(s: Arc<dyn Storage>) {
    let event = Uuid::new_v4();
    let im = unique_im();
    let record = DeliveryRecord {
        event,
        im: im.clone(),
        chat_id: "1001".into(),
        status: "sent".into(),
        at: now_ms(),
    };
    assert_eq!(s.get_delivery(event, &im, "1001").await.unwrap(), None);
    assert!(s.record_delivery(&record).await.unwrap());

    let mut again = record.clone();
    again.status = "failed: blocked".into();
    again.at = record.at + TimeDelta::seconds(5);
    assert!(!s.record_delivery(&again).await.unwrap());
    assert_eq!(
        s.get_delivery(event, &im, "1001").await.unwrap().as_ref(),
        Some(&record)
    );

    // Another chat or platform is a separate delivery.
    let mut other_chat = record.clone();
    other_chat.chat_id = "1002".into();
    assert!(s.record_delivery(&other_chat).await.unwrap());
    let mut other_im = record.clone();
    other_im.im = unique_im();
    assert!(s.record_delivery(&other_im).await.unwrap());
    assert_eq!(
        s.get_delivery(event, &im, "1002").await.unwrap().as_ref(),
        Some(&other_chat)
    );
    assert_eq!(
        s.get_delivery(Uuid::new_v4(), &im, "1001").await.unwrap(),
        None
    );
}

/// `delivered_chats` answers, for one event and platform, exactly which of the asked
/// chats are logged: not other chats, events or platforms, and not chats never asked.
pub async fn delivered_chats_of_an_event(s: Arc<dyn Storage>) {
    let event = Uuid::new_v4();
    let im = unique_im();
    let record = |event: Uuid, im: &str, chat: &str| DeliveryRecord {
        event,
        im: im.to_owned(),
        chat_id: chat.to_owned(),
        status: "sent".into(),
        at: now_ms(),
    };
    let chats = |ids: &[&str]| ids.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let set = |ids: &[&str]| ids.iter().map(|c| c.to_string()).collect::<HashSet<_>>();

    let asked = chats(&["1", "2", "3", "4", "5"]);
    assert_eq!(
        s.delivered_chats(event, &im, &asked).await.unwrap(),
        HashSet::new()
    );
    for chat in ["1", "3"] {
        assert!(s.record_delivery(&record(event, &im, chat)).await.unwrap());
    }
    // Logged, but for another platform, another event, or a chat not asked about.
    assert!(s
        .record_delivery(&record(event, &unique_im(), "2"))
        .await
        .unwrap());
    assert!(s
        .record_delivery(&record(Uuid::new_v4(), &im, "4"))
        .await
        .unwrap());
    assert!(s.record_delivery(&record(event, &im, "9")).await.unwrap());
    // A failure is as much "delivered" as a send: the recipient is done.
    let mut failed = record(event, &im, "5");
    failed.status = "failed: blocked".into();
    assert!(s.record_delivery(&failed).await.unwrap());

    assert_eq!(
        s.delivered_chats(event, &im, &asked).await.unwrap(),
        set(&["1", "3", "5"])
    );
    assert_eq!(
        s.delivered_chats(event, &im, &chats(&["3", "3", "2"]))
            .await
            .unwrap(),
        set(&["3"])
    );
    assert_eq!(
        s.delivered_chats(event, &im, &[]).await.unwrap(),
        HashSet::new()
    );
    assert_eq!(
        s.delivered_chats(Uuid::new_v4(), &im, &asked)
            .await
            .unwrap(),
        HashSet::new()
    );

    // A long candidate list (a big fan-out) answers the same way.
    let many: Vec<String> = (0..25_000).map(|n| format!("c{n}")).collect();
    for chat in ["c0", "c12345", "c24999"] {
        assert!(s.record_delivery(&record(event, &im, chat)).await.unwrap());
    }
    assert_eq!(
        s.delivered_chats(event, &im, &many).await.unwrap(),
        set(&["c0", "c12345", "c24999"])
    );
}

/// `record_deliveries` stores a batch in one call and says, per record, whether it was
/// new: records already logged and repeats within the batch keep the first record.
pub async fn delivery_batches(s: Arc<dyn Storage>) {
    let event = Uuid::new_v4();
    let im = unique_im();
    let record = |chat: &str, status: &str| DeliveryRecord {
        event,
        im: im.clone(),
        chat_id: chat.to_owned(),
        status: status.to_owned(),
        at: now_ms(),
    };
    assert_eq!(s.record_deliveries(&[]).await.unwrap(), Vec::<bool>::new());
    let earlier = record("2", "sent");
    assert!(s.record_delivery(&earlier).await.unwrap());

    let batch = vec![
        record("1", "sent"),
        record("2", "failed: late"),
        record("3", "sent"),
        record("1", "failed: repeat"),
        record("4", "failed: blocked"),
    ];
    assert_eq!(
        s.record_deliveries(&batch).await.unwrap(),
        vec![true, false, true, false, true]
    );
    for (chat, want) in [
        ("1", &batch[0]),
        ("2", &earlier),
        ("3", &batch[2]),
        ("4", &batch[4]),
    ] {
        assert_eq!(
            s.get_delivery(event, &im, chat).await.unwrap().as_ref(),
            Some(want),
            "chat {chat}"
        );
    }
    // The whole batch again: nothing is new, nothing changes.
    assert_eq!(s.record_deliveries(&batch).await.unwrap(), vec![false; 5]);
    assert_eq!(
        s.delivered_chats(
            event,
            &im,
            &["1".into(), "2".into(), "3".into(), "4".into(), "5".into()]
        )
        .await
        .unwrap(),
        ["1", "2", "3", "4"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>()
    );
}
