//! MongoDB: entities, groups and tasks ([`EntityStore`]).

use super::*;
use crate::storage::EntityStore;

#[async_trait]
impl EntityStore for MongoStorage {
    async fn insert_entity(&self, entity: &Entity) -> Result<()> {
        check_distinct_tasks(entity)?;
        atomically!(self, tx => self.insert_entity_in(&mut tx, entity))
    }

    async fn get_entity(&self, id: Uuid) -> Result<Option<Entity>> {
        let Some(d) = self
            .entities
            .find_one(doc! { "_id": uuid_bson(id) })
            .await
            .map_err(|e| db_err("reading an entity", e))?
        else {
            return Ok(None);
        };
        let mut tasks = self.tasks_by_entity(Some(id)).await?;
        decode_entity(&d, tasks.remove(&id).unwrap_or_default()).map(Some)
    }

    async fn list_entities(&self) -> Result<Vec<Entity>> {
        // Two queries in all: every entity, then every task, joined here.
        let docs = find_all(
            &self.entities,
            doc! {},
            doc! { "_id": 1 },
            "reading entities",
        )
        .await?;
        let mut tasks = self.tasks_by_entity(None).await?;
        Ok(self.decode_each("entities", &docs, |d| {
            let id = get_uuid(d, "_id", "entity")?;
            decode_entity(d, tasks.remove(&id).unwrap_or_default())
        }))
    }

    async fn update_entity(&self, entity: &Entity) -> Result<()> {
        check_distinct_tasks(entity)?;
        atomically!(self, tx => self.update_entity_in(&mut tx, entity))
    }

    async fn delete_entity(&self, id: Uuid) -> Result<()> {
        atomically!(self, tx => self.delete_entity_in(&mut tx, id))
    }

    async fn upsert_group(&self, group: &Group) -> Result<()> {
        let key = uuid_bson(group.id);
        let d = doc! { "_id": key.clone(), "names": names_doc(&group.names) };
        upsert(
            &self.groups,
            doc! { "_id": key },
            d,
            "writing a group",
            || format!("group {}", group.id),
        )
        .await
    }

    async fn list_groups(&self) -> Result<Vec<Group>> {
        let docs = find_all(&self.groups, doc! {}, doc! { "_id": 1 }, "reading groups").await?;
        Ok(self.decode_each("groups", &docs, |d| {
            Ok(Group {
                id: get_uuid(d, "_id", "group")?,
                names: get_names(d, "names", "group")?,
            })
        }))
    }

    async fn list_tasks(&self, kind: Option<TaskKind>) -> Result<Vec<Task>> {
        let filter = match kind {
            Some(kind) => doc! { "kind": kind.as_str() },
            None => doc! {},
        };
        let docs = find_all(&self.tasks, filter, doc! { "_id": 1 }, "reading tasks").await?;
        Ok(self.decode_each("tasks", &docs, decode_task))
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>> {
        self.tasks
            .find_one(doc! { "_id": uuid_bson(id) })
            .await
            .map_err(|e| db_err("reading a task", e))?
            .as_ref()
            .map(decode_task)
            .transpose()
    }

    async fn watch_tasks(&self) -> Result<BoxStream<'static, Result<TaskChange>>> {
        // Opened before returning: the server fixes the stream's start here, so every
        // change made after this call is delivered.
        let stream = open_task_stream(&self.tasks, None).await?;
        let state = WatchState {
            tasks: self.tasks.clone(),
            stream: Some(stream),
            closed: self.closed.clone(),
            token: None,
            interrupted: None,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
        };
        Ok(futures::stream::unfold(state, next_task_change).boxed())
    }
}
