//! Runs the storage contract suite against [`SqliteStorage`], in memory and on disk, plus
//! the SQLite-only behaviour: reopening a file keeps data and the schema version.

mod storage_suite;

use std::sync::Arc;

use stargazer_core::storage::sqlite::SqliteStorage;
use stargazer_core::storage::Storage;

/// A private in-memory database per test.
async fn in_memory() -> Arc<dyn Storage> {
    stargazer_core::storage::connect("sqlite::memory:")
        .await
        .expect("in-memory sqlite opens")
}

storage_contract_tests!(in_memory);

/// The same suite against a WAL file database, one file per test.
mod on_disk {
    use super::*;
    use stargazer_core::storage::DelayStore;
    use stargazer_core::storage::StateStore;

    use std::time::{Duration, SystemTime};

    /// A fresh file path in a directory shared by test runs. Files there outlive their
    /// test (the storage cannot delete itself), so each call clears ones older than an hour.
    fn temp_path() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join("stargazer-sqlite-tests");
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let stale = SystemTime::now() - Duration::from_secs(3600);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < stale);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        dir.join(format!("{}.db", uuid::Uuid::new_v4()))
    }

    pub(super) async fn file_storage() -> Arc<dyn Storage> {
        let path = temp_path();
        let url = format!("sqlite://{}", path.display());
        stargazer_core::storage::connect(&url)
            .await
            .expect("file sqlite opens")
    }

    crate::storage_contract_tests!(file_storage);

    #[tokio::test]
    async fn reopening_keeps_data() {
        use stargazer_core::model::DelayedMessage;

        let path = temp_path();
        let path_text = path.to_str().expect("utf-8 temp path").to_owned();
        let message = DelayedMessage {
            id: "m1".into(),
            routing_key: "youtube.live".into(),
            body: b"{}".to_vec(),
            fire_at_ms: 1,
        };
        {
            let s = SqliteStorage::open(&path_text).await.unwrap();
            s.put_delayed(&message, None).await.unwrap();
            s.kv_put("ns", "k", &serde_json::json!(1)).await.unwrap();
        }
        let s = SqliteStorage::open(&path_text).await.unwrap();
        assert_eq!(
            s.get_delayed("m1")
                .await
                .unwrap()
                .map(|stored| stored.message),
            Some(message)
        );
        assert_eq!(
            s.kv_get("ns", "k").await.unwrap(),
            Some(serde_json::json!(1))
        );
        drop(s);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path_text}{suffix}"));
        }
    }
}

/// SQLite-only behaviour: error wording, lag reporting, schema versioning, scale.
mod sqlite_specific {
    use stargazer_core::storage::EntityStore;
    use stargazer_core::storage::UserStore;
    use std::collections::HashSet;
    use std::time::Duration;

    use chrono::Utc;
    use futures::StreamExt;
    use stargazer_core::model::{
        Entity, Subscription, Task, TaskChange, TaskParams, User, UserSettings,
    };
    use stargazer_core::storage::sqlite::FOREIGN_POLL;
    use stargazer_core::storage::{StorageError, StorageHealth};
    use uuid::Uuid;

    use super::SqliteStorage;

    fn entity_with_tasks(n: usize) -> Entity {
        let id = Uuid::new_v4();
        Entity {
            id,
            names: [("en".to_owned(), "E".to_owned())].into_iter().collect(),
            default_language: "en".into(),
            group: None,
            translate_to: vec![],
            tasks: (0..n)
                .map(|i| Task {
                    id: Uuid::new_v4(),
                    entity: id,
                    // Accounts are unique per kind across entities.
                    params: TaskParams::Twitter {
                        user_id: format!("{}{i:05}", id.as_u128() % 1_000_000_000),
                    },
                })
                .collect(),
        }
    }

    fn user(im: &str, chat: &str) -> User {
        User {
            id: Uuid::new_v4(),
            im: im.into(),
            im_chat_id: chat.into(),
            name: "n".into(),
            language: "en".into(),
            settings: UserSettings::default(),
            created_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn conflicts_name_what_collided() {
        let s = SqliteStorage::open_in_memory().await.unwrap();
        let a = entity_with_tasks(1);
        s.insert_entity(&a).await.unwrap();
        let mut b = entity_with_tasks(1);
        // a's task id, watching an account of its own.
        let mut stolen = a.tasks[0].clone();
        stolen.params = TaskParams::Twitter {
            user_id: format!("{}", b.id.as_u128() % 1_000_000_007),
        };
        b.tasks.push(stolen);
        match s.insert_entity(&b).await {
            Err(StorageError::Conflict(what)) => {
                assert!(what.contains(&a.tasks[0].id.to_string()), "{what}")
            }
            other => panic!("{other:?}"),
        }
        let mut c = entity_with_tasks(0);
        c.id = a.id;
        match s.insert_entity(&c).await {
            Err(StorageError::Conflict(what)) => assert!(what.contains("entity"), "{what}"),
            other => panic!("{other:?}"),
        }
        // The same task id twice in one list is refused, not collapsed.
        let mut d = entity_with_tasks(1);
        d.tasks.push(d.tasks[0].clone());
        assert!(matches!(
            s.update_entity(&{
                let mut a2 = a.clone();
                a2.tasks = d.tasks.clone();
                a2
            })
            .await,
            Err(StorageError::Conflict(_))
        ));

        let u = user("telegram", "42");
        s.insert_user(&u).await.unwrap();
        match s.insert_user(&user("telegram", "42")).await {
            Err(StorageError::Conflict(what)) => assert!(what.contains("telegram:42"), "{what}"),
            other => panic!("{other:?}"),
        }
        let mut same_id = user("telegram", "43");
        same_id.id = u.id;
        match s.insert_user(&same_id).await {
            Err(StorageError::Conflict(what)) => {
                assert!(what.contains(&u.id.to_string()), "{what}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lagging_watcher_is_told_so() {
        let s = SqliteStorage::open_in_memory().await.unwrap();
        let mut stream = s.watch_tasks().await.unwrap();
        // More changes than the watch buffer holds, none read meanwhile.
        s.insert_entity(&entity_with_tasks(5_000)).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .expect("stream open");
        match first {
            Err(StorageError::Backend(message)) => {
                assert!(message.starts_with("lagged"), "{message}")
            }
            other => panic!("expected a lag error, got {other:?}"),
        }
        // After the error the stream carries on with what it still holds.
        assert!(matches!(stream.next().await, Some(Ok(_))));
    }

    #[tokio::test]
    async fn the_watch_stream_ends_when_the_storage_is_dropped() {
        let s = SqliteStorage::open_in_memory().await.unwrap();
        let mut stream = s.watch_tasks().await.unwrap();
        drop(s);
        let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap();
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = std::env::temp_dir().join("stargazer-sqlite-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.db", Uuid::new_v4()));
        let path = path.to_str().unwrap().to_owned();
        drop(SqliteStorage::open(&path).await.unwrap());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        match SqliteStorage::open(&path).await {
            Err(StorageError::Backend(message)) => assert!(message.contains("99"), "{message}"),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("a newer schema was accepted"),
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }

    #[tokio::test]
    async fn subscribers_of_a_popular_entity() {
        const USERS: usize = 10_000;
        let s = SqliteStorage::open_in_memory().await.unwrap();
        let e = entity_with_tasks(0);
        s.insert_entity(&e).await.unwrap();
        let mut wanted = Vec::new();
        for i in 0..USERS {
            let mut u = user("telegram", &i.to_string());
            u.settings.paused = i % 10 == 0;
            s.insert_user(&u).await.unwrap();
            let kinds = if i % 3 == 0 {
                vec!["twitter.tweet".to_owned()]
            } else {
                vec![]
            };
            s.put_subscription(&Subscription {
                user: u.id,
                entity: e.id,
                kinds: kinds.clone(),
                mention: None,
            })
            .await
            .unwrap();
            if !u.settings.paused && kinds.is_empty() {
                wanted.push(u.id);
            }
        }
        wanted.sort();
        let got = s
            .subscribers(e.id, "youtube.live", "telegram")
            .await
            .unwrap();
        assert_eq!(got.iter().map(|x| x.user.id).collect::<Vec<_>>(), wanted);
        let ids: HashSet<Uuid> = got.iter().map(|x| x.subscription.user).collect();
        assert_eq!(ids.len(), wanted.len());
    }

    /// A fresh database file path (removed, with its WAL files, by [`remove_db`]).
    fn db_path() -> String {
        let dir = std::env::temp_dir().join("stargazer-sqlite-tests");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(format!("{}.db", Uuid::new_v4()))
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn remove_db(path: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }

    /// Rows that do not decode are left out of listings (and counted), and are a
    /// `Corrupt` error naming them when read by id.
    #[tokio::test]
    async fn malformed_rows_are_skipped_and_counted() {
        let path = db_path();
        let s = SqliteStorage::open(&path).await.unwrap();
        let registry = prometheus::Registry::new();
        s.register_metrics(&registry);
        let good = entity_with_tasks(2);
        s.insert_entity(&good).await.unwrap();
        let broken = Uuid::new_v4();
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO entities (id, names, default_language, group_id, translate_to)
                 VALUES (?1, 'not json', 'en', NULL, '[]')",
                [broken.to_string()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO tasks (id, entity, position, kind, params) VALUES ('junk', ?1, 9, 'twitter', '{')",
                [good.id.to_string()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO users (id, im, im_chat_id, name, language, settings, paused, created_at)
                 VALUES ('not-a-uuid', 'telegram', '1', 'n', 'en', '{}', 0, 'yesterday')",
                [],
            )
            .unwrap();
        }
        let entities = s.list_entities().await.unwrap();
        assert_eq!(entities.len(), 1);
        assert_eq!(entities[0].tasks, good.tasks);
        assert_eq!(
            s.get_entity(good.id).await.unwrap().unwrap().tasks,
            good.tasks
        );
        assert_eq!(s.list_tasks(None).await.unwrap().len(), 2);
        assert!(s.list_users(None).await.unwrap().is_empty());
        match s.get_entity(broken).await {
            Err(StorageError::Corrupt(what)) => {
                assert!(
                    what.contains(&format!("entity {broken}: column 1")),
                    "{what}"
                )
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let metrics = stargazer_core::telemetry::render_metrics(&registry);
        for line in [
            // The bad task, seen by list_entities, get_entity(good) and list_tasks.
            r#"stargazer_storage_malformed_total{collection="tasks"} 3"#,
            r#"stargazer_storage_malformed_total{collection="entities"} 1"#,
            r#"stargazer_storage_malformed_total{collection="users"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} missing in\n{metrics}");
        }
        drop(s);
        remove_db(&path);
    }

    /// Two connections to one file race to give one account to two entities: exactly
    /// one wins, the other gets a `Conflict` naming the account and the winner.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_connections_race_for_one_account() {
        let path = db_path();
        let first = SqliteStorage::open(&path).await.unwrap();
        let second = SqliteStorage::open(&path).await.unwrap();
        for round in 0..5 {
            let a = entity_with_tasks(1);
            let mut b = entity_with_tasks(1);
            b.tasks[0].params = a.tasks[0].params.clone();
            let (ra, rb) = tokio::join!(first.insert_entity(&a), second.insert_entity(&b));
            let (winner, loser) = match (&ra, &rb) {
                (Ok(()), Err(StorageError::Conflict(what))) => (a.id, what.clone()),
                (Err(StorageError::Conflict(what)), Ok(())) => (b.id, what.clone()),
                other => panic!("round {round}: {other:?}"),
            };
            assert!(loser.contains(a.tasks[0].params.source_id()), "{loser}");
            assert!(loser.contains(&winner.to_string()), "{loser}");
        }
        drop((first, second));
        remove_db(&path);
    }

    /// The next `count` task changes of `stream`, each within a few polls of other
    /// processes' commits.
    async fn next_changes(
        stream: &mut futures::stream::BoxStream<
            'static,
            stargazer_core::storage::Result<TaskChange>,
        >,
        count: usize,
    ) -> Vec<TaskChange> {
        let mut changes = Vec::new();
        while changes.len() < count {
            let change = tokio::time::timeout(FOREIGN_POLL * 10, stream.next())
                .await
                .expect("a task change within ten polls")
                .expect("the stream is open")
                .expect("no lag");
            changes.push(change);
        }
        changes
    }

    /// A watcher sees the tasks another connection (the admin CLI, a second api: another
    /// process) inserts and deletes, within a few polls; its own writes once, at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn task_changes_by_another_connection_are_seen() {
        let path = db_path();
        let watched = SqliteStorage::open(&path).await.unwrap();
        let other = SqliteStorage::open(&path).await.unwrap();
        // Already there when the watch starts: not a change.
        other.insert_entity(&entity_with_tasks(1)).await.unwrap();
        let mut stream = watched.watch_tasks().await.unwrap();

        let added = entity_with_tasks(2);
        other.insert_entity(&added).await.unwrap();
        let mut upserted: Vec<Task> = next_changes(&mut stream, 2)
            .await
            .into_iter()
            .map(|change| match change {
                TaskChange::Upserted(task) => task,
                other => panic!("expected an upsert, got {other:?}"),
            })
            .collect();
        upserted.sort_by_key(|task| task.id);
        let mut expected = added.tasks.clone();
        expected.sort_by_key(|task| task.id);
        assert_eq!(upserted, expected);

        let own = entity_with_tasks(1);
        watched.insert_entity(&own).await.unwrap();
        assert_eq!(
            next_changes(&mut stream, 1).await,
            vec![TaskChange::Upserted(own.tasks[0].clone())]
        );

        other.delete_entity(added.id).await.unwrap();
        let deleted: HashSet<Uuid> = next_changes(&mut stream, 2)
            .await
            .into_iter()
            .map(|change| match change {
                TaskChange::Deleted(id) => id,
                other => panic!("expected a deletion, got {other:?}"),
            })
            .collect();
        assert_eq!(deleted, added.tasks.iter().map(|task| task.id).collect());
        // Nothing else: the own write is not announced a second time.
        assert!(
            tokio::time::timeout(FOREIGN_POLL * 3, stream.next())
                .await
                .is_err(),
            "no further changes"
        );
        drop((watched, other));
        remove_db(&path);
    }

    /// Turns a current database file back into schema version 1 (no account column,
    /// no account index), as an older build left it.
    fn downgrade_to_v1(path: &str) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "DROP INDEX tasks_by_account;
             ALTER TABLE tasks DROP COLUMN account;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }

    /// A version-1 file migrates (accounts filled in, index created); one where two tasks
    /// share an account refuses to open with `Inconsistent` naming both, keeping them.
    #[tokio::test]
    async fn version_1_files_migrate_unless_accounts_repeat() {
        let path = db_path();
        let a = entity_with_tasks(1);
        let mut b = entity_with_tasks(1);
        drop(SqliteStorage::open(&path).await.unwrap());
        downgrade_to_v1(&path);
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for (e, task) in [(&a, &a.tasks[0]), (&b, &b.tasks[0])] {
                conn.execute(
                    "INSERT INTO entities (id, names, default_language, group_id, translate_to)
                     VALUES (?1, '{}', 'en', NULL, '[]')",
                    [e.id.to_string()],
                )
                .unwrap();
                // Both watch a's account.
                conn.execute(
                    "INSERT INTO tasks (id, entity, position, kind, params) VALUES (?1, ?2, 0, 'twitter', ?3)",
                    [
                        task.id.to_string(),
                        e.id.to_string(),
                        serde_json::to_string(&a.tasks[0].params).unwrap(),
                    ],
                )
                .unwrap();
            }
        }
        let account = a.tasks[0].params.source_id();
        match SqliteStorage::open(&path).await {
            Err(StorageError::Inconsistent(what)) => {
                for part in [
                    account.to_owned(),
                    a.tasks[0].id.to_string(),
                    b.tasks[0].id.to_string(),
                    a.id.to_string(),
                    b.id.to_string(),
                ] {
                    assert!(what.contains(&part), "{part} missing in {what}");
                }
            }
            Err(other) => panic!("expected Inconsistent, got {other:?}"),
            Ok(_) => panic!("a repeated account was accepted"),
        }
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let (tasks, version): (i64, i64) = (
                conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
                    .unwrap(),
                conn.query_row("PRAGMA user_version", [], |r| r.get(0))
                    .unwrap(),
            );
            assert_eq!((tasks, version), (2, 1), "nothing changed");
            conn.execute(
                "DELETE FROM tasks WHERE id = ?1",
                [b.tasks[0].id.to_string()],
            )
            .unwrap();
        }
        let s = SqliteStorage::open(&path).await.unwrap();
        b.tasks[0].params = a.tasks[0].params.clone();
        match s.update_entity(&b).await {
            Err(StorageError::Conflict(what)) => {
                assert!(what.contains(&a.id.to_string()), "{what}")
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        drop(s);
        remove_db(&path);
    }
}
