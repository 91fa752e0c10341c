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
            s.put_delayed(&message).await.unwrap();
            s.kv_put("ns", "k", &serde_json::json!(1)).await.unwrap();
        }
        let s = SqliteStorage::open(&path_text).await.unwrap();
        assert_eq!(s.get_delayed("m1").await.unwrap(), Some(message));
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
    use std::collections::HashSet;
    use std::time::Duration;

    use chrono::Utc;
    use futures::StreamExt;
    use stargazer_core::model::{Entity, Subscription, Task, TaskParams, User, UserSettings};
    use stargazer_core::storage::{Storage, StorageError};
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
                    params: TaskParams::Twitter {
                        user_id: i.to_string(),
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
        b.tasks.push(a.tasks[0].clone());
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
}
