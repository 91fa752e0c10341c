//! SQLite: entities, groups and tasks ([`EntityStore`]).

use super::*;
use crate::storage::EntityStore;

#[async_trait]
impl EntityStore for SqliteStorage {
    async fn insert_entity(&self, entity: &Entity) -> Result<()> {
        check_distinct_tasks(entity)?;
        let entity = entity.clone();
        let changes = self
            .call(move |conn| {
                let tx = conn.transaction().db()?;
                write_entity_row(&tx, &entity, true)?;
                let mut changes = Vec::with_capacity(entity.tasks.len());
                for (position, task) in entity.tasks.iter().enumerate() {
                    let task = owned_task(task, entity.id);
                    insert_task(&tx, &task, position)?;
                    changes.push(TaskChange::Upserted(task));
                }
                tx.commit().db()?;
                Ok(changes)
            })
            .await?;
        self.announce(changes);
        Ok(())
    }

    async fn get_entity(&self, id: Uuid) -> Result<Option<Entity>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let entity = conn
                .query_row(
                    &format!("SELECT {ENTITY_COLUMNS} FROM entities WHERE id = ?1"),
                    [uuid_text(id)],
                    entity_from_row,
                )
                .optional()
                .db()
                .map_err(|e| in_record(e, "entity", id))?;
            match entity {
                Some(mut entity) => {
                    entity.tasks = tasks_of(conn, id, &malformed)?;
                    Ok(Some(entity))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_entities(&self) -> Result<Vec<Entity>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let tx = conn.transaction().db()?;
            let mut by_entity: HashMap<Uuid, Vec<Task>> = HashMap::new();
            {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT {TASK_COLUMNS} FROM tasks ORDER BY entity, position"
                    ))
                    .db()?;
                let rows = stmt
                    .query_map([], |row| lenient(row, &[0], task_from_row))
                    .db()?;
                for task in keep_decoded(rows, &malformed, "tasks")? {
                    by_entity.entry(task.entity).or_default().push(task);
                }
            }
            let mut entities = {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT {ENTITY_COLUMNS} FROM entities ORDER BY id"
                    ))
                    .db()?;
                let rows = stmt
                    .query_map([], |row| lenient(row, &[0], entity_from_row))
                    .db()?;
                keep_decoded(rows, &malformed, "entities")?
            };
            for entity in &mut entities {
                entity.tasks = by_entity.remove(&entity.id).unwrap_or_default();
            }
            tx.commit().db()?;
            Ok(entities)
        })
        .await
    }

    async fn update_entity(&self, entity: &Entity) -> Result<()> {
        check_distinct_tasks(entity)?;
        let entity = entity.clone();
        let malformed = self.malformed();
        let changes = self
            .call(move |conn| {
                let tx = conn.transaction().db()?;
                if write_entity_row(&tx, &entity, false)? == 0 {
                    return Err(StorageError::NotFound(format!("entity {}", entity.id)));
                }
                let old: HashMap<Uuid, Task> = tasks_of(&tx, entity.id, &malformed)?
                    .into_iter()
                    .map(|t| (t.id, t))
                    .collect();
                let wanted: HashSet<Uuid> = entity.tasks.iter().map(|t| t.id).collect();
                let mut changes = Vec::new();

                for id in old.keys().filter(|id| !wanted.contains(id)) {
                    tx.execute("DELETE FROM tasks WHERE id = ?1", [uuid_text(*id)])
                        .db()?;
                    changes.push(TaskChange::Deleted(*id));
                }
                for (position, task) in entity.tasks.iter().enumerate() {
                    let task = owned_task(task, entity.id);
                    match old.get(&task.id) {
                        None => {
                            // Taken by another entity: the insert names the task in `Conflict`.
                            insert_task(&tx, &task, position)?;
                            changes.push(TaskChange::Upserted(task));
                        }
                        Some(previous) => {
                            let updated = tx.execute(
                                "UPDATE tasks SET position = ?2, kind = ?3, params = ?4,
                                     account = ?5
                                 WHERE id = ?1",
                                params![
                                    uuid_text(task.id),
                                    position as i64,
                                    task.kind().as_str(),
                                    json_text(&task.params)?,
                                    task.params.source_id(),
                                ],
                            );
                            match updated {
                                Ok(_) => {}
                                Err(e) if is_account_violation(&e) => {
                                    return Err(account_conflict(&tx, &task))
                                }
                                Err(e) => return Err(db_error(e)),
                            }
                            if *previous != task {
                                changes.push(TaskChange::Upserted(task));
                            }
                        }
                    }
                }
                tx.commit().db()?;
                Ok(changes)
            })
            .await?;
        self.announce(changes);
        Ok(())
    }

    async fn delete_entity(&self, id: Uuid) -> Result<()> {
        let changes = self
            .call(move |conn| {
                let tx = conn.transaction().db()?;
                let key = uuid_text(id);
                // Every task row goes, decodable or not: announce each by its id.
                let tasks: Vec<Uuid> = {
                    let mut stmt = tx.prepare("SELECT id FROM tasks WHERE entity = ?1").db()?;
                    let rows = stmt.query_map([&key], |row| col_uuid(row, 0)).db()?;
                    rows.filter_map(|id| id.ok()).collect()
                };
                if tx
                    .execute("DELETE FROM entities WHERE id = ?1", [&key])
                    .db()?
                    == 0
                {
                    return Err(StorageError::NotFound(format!("entity {id}")));
                }
                tx.execute("DELETE FROM tasks WHERE entity = ?1", [&key])
                    .db()?;
                tx.execute("DELETE FROM subscriptions WHERE entity = ?1", [&key])
                    .db()?;
                tx.commit().db()?;
                Ok(tasks.into_iter().map(TaskChange::Deleted).collect())
            })
            .await?;
        self.announce(changes);
        Ok(())
    }

    async fn upsert_group(&self, group: &Group) -> Result<()> {
        let id = uuid_text(group.id);
        let names = json_text(&group.names)?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO groups (id, names) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET names = excluded.names",
                params![id, names],
            )
            .db()?;
            Ok(())
        })
        .await
    }

    async fn list_groups(&self) -> Result<Vec<Group>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, names FROM groups ORDER BY id")
                .db()?;
            let rows = stmt
                .query_map([], |row| {
                    lenient(row, &[0], |row| {
                        Ok(Group {
                            id: col_uuid(row, 0)?,
                            names: col_json(row, 1)?,
                        })
                    })
                })
                .db()?;
            keep_decoded(rows, &malformed, "groups")
        })
        .await
    }

    async fn list_tasks(&self, kind: Option<TaskKind>) -> Result<Vec<Task>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let decode = |row: &Row<'_>| lenient(row, &[0], task_from_row);
            match kind {
                Some(kind) => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {TASK_COLUMNS} FROM tasks WHERE kind = ?1 ORDER BY id"
                        ))
                        .db()?;
                    let rows = stmt.query_map([kind.as_str()], decode).db()?;
                    keep_decoded(rows, &malformed, "tasks")
                }
                None => all_tasks(conn, &malformed),
            }
        })
        .await
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                [uuid_text(id)],
                task_from_row,
            )
            .optional()
            .db()
            .map_err(|e| in_record(e, "task", id))
        })
        .await
    }

    async fn watch_tasks(&self) -> Result<BoxStream<'static, Result<TaskChange>>> {
        let receiver = self.inner.changes.subscribe();
        self.watch_other_processes().await?;
        let stream = BroadcastStream::new(receiver).map(|item| {
            item.map_err(|BroadcastStreamRecvError::Lagged(missed)| {
                StorageError::Backend(format!(
                    "lagged: {missed} task changes were missed; resynchronise with list_tasks"
                ))
            })
        });
        Ok(stream.boxed())
    }
}
