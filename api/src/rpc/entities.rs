//! getEntities, getEntity, newEntity, updateEntity, delEntity, getUserIndex.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use stargazer_core::model::{self, Access, Component};
use stargazer_core::storage::{Storage, StorageError};
use uuid::Uuid;

use crate::auth::{AdminWrite, Authorized, Caller, EntityRead};
use crate::error::{Error, Result};
use crate::http::{Data, RawData, RpcBody};
use crate::rpc::validate;
use crate::state::AppState;
use crate::types::{
    Deleted, Empty, Entity, EntityRef, Envelope, GetUserIndex, IndexEntry, NewEntity, TaskParams,
    UpdateEntity, UserIndex,
};

/// The stored entity, read from storage (never the read cache: a write must start from
/// what is stored).
async fn load_entity(state: &AppState, id: Uuid) -> Result<model::Entity> {
    state
        .storage
        .get_entity(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no entity {id}")))
}

/// A write refused by the storage's unique keys is a 409 whose message is the storage's
/// own (for an account: which one, and which entity watches it).
fn conflict_as_is(err: StorageError) -> Error {
    match err {
        StorageError::Conflict(what) => Error::Conflict(what),
        other => other.into(),
    }
}

/// 404 unless `group` is absent or exists.
pub(crate) async fn ensure_group(storage: &dyn Storage, group: Option<Uuid>) -> Result<()> {
    let Some(group) = group else {
        return Ok(());
    };
    if storage.list_groups().await?.iter().any(|g| g.id == group) {
        Ok(())
    } else {
        Err(Error::NotFound(format!("no group {group}")))
    }
}

/// Builds the task list of `entity` from `params`, keeping the ids of accounts it already
/// watches, and refuses accounts another entity watches (409). This check answers early
/// with a clear message; the storage's unique `(kind, account)` index is what holds
/// when another api instance writes at the same time.
pub(crate) async fn build_tasks(
    storage: &dyn Storage,
    entity: Uuid,
    params: Vec<TaskParams>,
    current: &[model::Task],
) -> Result<Vec<model::Task>> {
    validate::tasks(&params)?;
    let everything = storage.list_entities().await?;
    let mut tasks = Vec::with_capacity(params.len());
    for params in params {
        let params: model::TaskParams = params.into();
        if let Some(owner) = everything
            .iter()
            .find(|other| other.id != entity && other.tasks.iter().any(|t| t.params == params))
        {
            return Err(Error::Conflict(format!(
                "{} account {} is already watched by entity {}",
                params.kind(),
                params.source_id(),
                owner.id
            )));
        }
        let id = current
            .iter()
            .find(|t| t.params == params)
            .map(|t| t.id)
            .unwrap_or_else(Uuid::new_v4);
        tasks.push(model::Task { id, entity, params });
    }
    Ok(tasks)
}

/// Every entity with its tasks, by id.
#[utoipa::path(post, path = "/v1/getEntities", tag = "entities", request_body = Empty,
    responses((status = 200, description = "Every entity", body = Envelope<Vec<Entity>>)))]
pub(crate) async fn get_entities(
    State(state): State<AppState>,
    _: Authorized<EntityRead>,
    RpcBody(_): RpcBody<Empty>,
) -> Result<RawData> {
    let bytes = state
        .entities
        .get_or_load((), || async {
            let entities: Vec<Entity> = state
                .storage
                .list_entities()
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            serde_json::to_vec(&entities)
                .map(Bytes::from)
                .map_err(|err| Error::Internal(format!("serializing entities: {err}")))
        })
        .await?;
    Ok(RawData(bytes))
}

/// One entity with its tasks. Bots ask for it on every event, so it is served from the
/// read cache (an unknown id is not remembered: it is looked up again next time).
#[utoipa::path(post, path = "/v1/getEntity", tag = "entities", request_body = EntityRef,
    responses((status = 200, description = "The entity", body = Envelope<Entity>)))]
pub(crate) async fn get_entity(
    State(state): State<AppState>,
    _: Authorized<EntityRead>,
    RpcBody(req): RpcBody<EntityRef>,
) -> Result<RawData> {
    let bytes = state
        .entity_by_id
        .get_or_load(req.id, || async {
            let entity: Entity = load_entity(&state, req.id).await?.into();
            serde_json::to_vec(&entity)
                .map(Bytes::from)
                .map_err(|err| Error::Internal(format!("serializing an entity: {err}")))
        })
        .await?;
    Ok(RawData(bytes))
}

/// Creates an entity and its tasks (admin).
#[utoipa::path(post, path = "/v1/newEntity", tag = "entities", request_body = NewEntity,
    responses((status = 200, description = "The new entity", body = Envelope<Entity>)))]
pub(crate) async fn new_entity(
    State(state): State<AppState>,
    _: Authorized<AdminWrite>,
    RpcBody(req): RpcBody<NewEntity>,
) -> Result<Data<Entity>> {
    validate::names(&req.names, &req.default_language)?;
    validate::languages("translate_to", &req.translate_to)?;
    validate::tasks(&req.tasks)?;
    // One entity write at a time in this process, so its own creations do not race
    // between the check and the insert (other processes meet the storage's index).
    let _write = state.entity_writes.lock().await;
    ensure_group(state.storage.as_ref(), req.group).await?;
    let id = req.id.unwrap_or_else(Uuid::new_v4);
    let tasks = build_tasks(state.storage.as_ref(), id, req.tasks, &[]).await?;
    let entity = model::Entity {
        id,
        names: req.names,
        default_language: req.default_language,
        group: req.group,
        translate_to: req.translate_to,
        tasks,
    };
    state
        .storage
        .insert_entity(&entity)
        .await
        .map_err(conflict_as_is)?;
    state.entities_changed();
    Ok(Data(entity.into()))
}

/// Changes the given fields of an entity (admin).
#[utoipa::path(post, path = "/v1/updateEntity", tag = "entities", request_body = UpdateEntity,
    responses((status = 200, description = "The entity after the change", body = Envelope<Entity>)))]
pub(crate) async fn update_entity(
    State(state): State<AppState>,
    _: Authorized<AdminWrite>,
    RpcBody(req): RpcBody<UpdateEntity>,
) -> Result<Data<Entity>> {
    let _write = state.entity_writes.lock().await;
    let mut entity = load_entity(&state, req.id).await?;
    if let Some(names) = req.names {
        entity.names = names;
    }
    if let Some(default_language) = req.default_language {
        entity.default_language = default_language;
    }
    validate::names(&entity.names, &entity.default_language)?;
    if let Some(translate_to) = req.translate_to {
        validate::languages("translate_to", &translate_to)?;
        entity.translate_to = translate_to;
    }
    if let Some(group) = req.group {
        ensure_group(state.storage.as_ref(), group).await?;
        entity.group = group;
    }
    if let Some(params) = req.tasks {
        entity.tasks =
            build_tasks(state.storage.as_ref(), entity.id, params, &entity.tasks).await?;
    }
    state
        .storage
        .update_entity(&entity)
        .await
        .map_err(conflict_as_is)?;
    state.entities_changed();
    Ok(Data(entity.into()))
}

/// Removes an entity, its tasks and every subscription to it (admin).
#[utoipa::path(post, path = "/v1/delEntity", tag = "entities", request_body = EntityRef,
    responses((status = 200, description = "The removed entity's id", body = Envelope<Deleted>)))]
pub(crate) async fn del_entity(
    State(state): State<AppState>,
    _: Authorized<AdminWrite>,
    RpcBody(req): RpcBody<EntityRef>,
) -> Result<Data<Deleted>> {
    let _write = state.entity_writes.lock().await;
    state.storage.delete_entity(req.id).await?;
    state.entities_changed();
    Ok(Data(Deleted { id: req.id }))
}

/// The searchable index of entities and groups, marked with a user's subscriptions.
#[utoipa::path(post, path = "/v1/getUserIndex", tag = "entities", request_body = GetUserIndex,
    responses((status = 200, description = "The index", body = Envelope<UserIndex>)))]
pub(crate) async fn get_user_index(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<EntityRead>,
    RpcBody(req): RpcBody<GetUserIndex>,
) -> Result<Data<UserIndex>> {
    let user = match (&caller, req.user) {
        (Caller::User(session), requested) => {
            Some(caller.target_user(requested.or(Some(session.user)))?)
        }
        (Caller::Service(account), Some(user)) => {
            if !account.permissions.allows(Component::Api, Access::Ro) {
                return Err(Error::Forbidden(
                    "marking a user's subscriptions needs api ro".into(),
                ));
            }
            Some(user)
        }
        (Caller::Service(_), None) => None,
    };
    let subscribed: BTreeMap<Uuid, Vec<String>> = match user {
        Some(user) => {
            crate::rpc::users::load_user(&state, user).await?;
            state
                .storage
                .list_subscriptions(user)
                .await?
                .into_iter()
                .map(|s| (s.entity, s.kinds))
                .collect()
        }
        None => BTreeMap::new(),
    };
    let groups = state
        .storage
        .list_groups()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let entities = state
        .storage
        .list_entities()
        .await?
        .into_iter()
        .map(|entity| {
            let mut platforms: Vec<String> = entity
                .tasks
                .iter()
                .map(|t| t.kind().as_str().to_owned())
                .collect();
            platforms.sort();
            platforms.dedup();
            let mut search: Vec<String> = entity
                .names
                .values()
                .map(|name| name.to_lowercase())
                .chain(
                    entity
                        .tasks
                        .iter()
                        .map(|t| t.params.source_id().to_lowercase()),
                )
                .collect();
            search.sort();
            search.dedup();
            IndexEntry {
                subscribed: subscribed.get(&entity.id).cloned(),
                id: entity.id,
                names: entity.names,
                default_language: entity.default_language,
                group: entity.group,
                platforms,
                search,
            }
        })
        .collect();
    Ok(Data(UserIndex { groups, entities }))
}
