//! The contract of entities, groups and tasks (`EntityStore`).

use super::*;

// ---------------------------------------------------------------- entities

/// Insert, get, list and delete round-trip an entity with its tasks.
pub(crate) async fn entities_crud(s: Arc<dyn Storage>) {
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
pub(crate) async fn entity_conflicts(s: Arc<dyn Storage>) {
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
pub(crate) async fn account_conflicts(s: Arc<dyn Storage>) {
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
pub(crate) async fn entity_not_found(s: Arc<dyn Storage>) {
    let ghost = entity();
    assert_not_found(s.update_entity(&ghost).await);
    assert_not_found(s.delete_entity(ghost.id).await);
    assert_eq!(s.get_entity(ghost.id).await.unwrap(), None);
    assert_eq!(s.get_task(ghost.tasks[0].id).await.unwrap(), None);
}

/// `update_entity` replaces fields and the task list: removed tasks go, new ones arrive,
/// changed ones change.
pub(crate) async fn update_entity_replaces_tasks(s: Arc<dyn Storage>) {
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
pub(crate) async fn delete_entity_cascades(s: Arc<dyn Storage>) {
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
pub(crate) async fn groups_upsert_and_list(s: Arc<dyn Storage>) {
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
pub(crate) async fn tasks_get_and_list_by_kind(s: Arc<dyn Storage>) {
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
pub(crate) async fn watch_tasks_sees_changes(s: Arc<dyn Storage>) {
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
