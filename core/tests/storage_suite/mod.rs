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
//! `storage_sqlite.rs`). Every function here is also reachable as `storage_suite::name`, so
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
    Access, ClaimState, ClaimedDelayed, Credential, DelayLease, DelayedMessage, DeliveryClaim,
    DeliveryRecord, Entity, Group, Permissions, Session, Subscription, Task, TaskChange, TaskKind,
    TaskParams, User, UserSettings, DELIVERY_CLAIMED,
};
use stargazer_core::storage::{Lease, Result, Storage, StorageError, Subscriber};
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
            subscription_mentions,
            sessions_lifecycle,
            credentials_crud,
            delayed_crud,
            delayed_pagination,
            delayed_claims,
            delayed_claims_race,
            kv_namespaces,
            seen_window,
            leases_one_holder_at_a_time,
            leases_under_contention,
            windowed_counters,
            delivery_log,
            delivered_chats_of_an_event,
            delivery_batches,
            delivery_claims,
            delivery_claims_renew_and_release,
            delivery_claim_takeover_race,
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
fn now_truncated_to_ms() -> DateTime<Utc> {
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
        created_at: now_truncated_to_ms(),
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
        mention: None,
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

// One file per storage capability, as in the backends.
mod access;
mod delayed;
mod deliveries;
mod entities;
mod state;
mod users;

pub(crate) use access::*;
pub(crate) use delayed::*;
pub(crate) use deliveries::*;
pub(crate) use entities::*;
pub(crate) use state::*;
pub(crate) use users::*;
