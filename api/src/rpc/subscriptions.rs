//! getSubscription, updateSubscription, getSubscribers.

use axum::body::Bytes;
use axum::extract::State;
use stargazer_core::model;
use uuid::Uuid;

use crate::auth::{Authorized, ServiceRead, UserRead, UserWrite};
use crate::error::{Error, Result};
use crate::http::{Data, RawData, RpcBody};
use crate::rpc::users::load_user;
use crate::rpc::validate;
use crate::state::AppState;
use crate::types::{
    Envelope, GetSubscribers, Subscriber, Subscription, SubscriptionUpdate, UpdateSubscription,
    UserRef,
};

async fn subscriptions_of(state: &AppState, user: Uuid) -> Result<Vec<Subscription>> {
    Ok(state
        .storage
        .list_subscriptions(user)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

async fn ensure_entity(state: &AppState, entity: Uuid) -> Result<()> {
    match state.storage.get_entity(entity).await? {
        Some(_) => Ok(()),
        None => Err(Error::NotFound(format!("no entity {entity}"))),
    }
}

/// A user's subscriptions, by entity id.
#[utoipa::path(post, path = "/v1/getSubscription", tag = "subscriptions", request_body = UserRef,
    responses((status = 200, description = "The subscriptions", body = Envelope<Vec<Subscription>>)))]
pub(crate) async fn get_subscription(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserRead>,
    RpcBody(req): RpcBody<UserRef>,
) -> Result<Data<Vec<Subscription>>> {
    let user = load_user(&state, caller.target_user(req.user)?).await?;
    Ok(Data(subscriptions_of(&state, user.id).await?))
}

/// Subscribes (or changes the kinds or mention of) or unsubscribes one entity.
#[utoipa::path(post, path = "/v1/updateSubscription", tag = "subscriptions", request_body = UpdateSubscription,
    responses((status = 200, description = "The subscriptions after the change", body = Envelope<SubscriptionUpdate>)))]
pub(crate) async fn update_subscription(
    State(state): State<AppState>,
    Authorized(caller, ..): Authorized<UserWrite>,
    RpcBody(req): RpcBody<UpdateSubscription>,
) -> Result<Data<SubscriptionUpdate>> {
    let user = load_user(&state, caller.target_user(req.user)?).await?;
    if req.kinds.len() > validate::MAX_KINDS {
        return Err(Error::invalid(
            "kinds",
            format!("at most {} kinds", validate::MAX_KINDS),
        ));
    }
    for (index, kind) in req.kinds.iter().enumerate() {
        validate::kind(&format!("kinds[{index}]"), kind)?;
    }
    // `None`: keep the stored mention; `Some(None)`: remove it; `Some(Some(_))`: set it.
    let mention = match req.mention {
        None => None,
        Some(mention) => {
            validate::mention("mention", &mention)?;
            Some((!mention.is_empty()).then_some(mention))
        }
    };
    let mut kinds = req.kinds;
    kinds.sort();
    kinds.dedup();
    let changed = if req.subscribed {
        ensure_entity(&state, req.entity).await?;
        let current = state.storage.list_subscriptions(user.id).await?;
        let same = current.iter().any(|s| {
            s.entity == req.entity
                && s.kinds == kinds
                && mention.as_ref().is_none_or(|m| &s.mention == m)
        });
        if !same {
            match mention {
                // Kinds only, in one step: a mention set meanwhile is not lost.
                None => {
                    state
                        .storage
                        .put_subscription_kinds(user.id, req.entity, &kinds)
                        .await?
                }
                Some(mention) => {
                    state
                        .storage
                        .put_subscription(&model::Subscription {
                            user: user.id,
                            entity: req.entity,
                            kinds,
                            mention,
                        })
                        .await?
                }
            }
        }
        !same
    } else {
        state
            .storage
            .delete_subscription(user.id, req.entity)
            .await?
    };
    if changed {
        state.users_changed();
    }
    Ok(Data(SubscriptionUpdate {
        changed,
        subscriptions: subscriptions_of(&state, user.id).await?,
    }))
}

/// Who on `im` wants events of `kind` about `entity` (paused users left out).
#[utoipa::path(post, path = "/v1/getSubscribers", tag = "subscriptions", request_body = GetSubscribers,
    responses((status = 200, description = "The recipients, by user id", body = Envelope<Vec<Subscriber>>)))]
pub(crate) async fn get_subscribers(
    State(state): State<AppState>,
    _: Authorized<ServiceRead>,
    RpcBody(req): RpcBody<GetSubscribers>,
) -> Result<RawData> {
    validate::kind("kind", &req.kind)?;
    validate::im("im", &req.im)?;
    let key = (req.entity, req.kind.clone(), req.im.clone());
    let bytes = state
        .subscribers
        .get_or_load(key, || async {
            ensure_entity(&state, req.entity).await?;
            let found = state
                .storage
                .subscribers(req.entity, &req.kind, &req.im)
                .await?;
            let list: Vec<Subscriber> = found
                .into_iter()
                .map(|s| Subscriber {
                    user: s.user.id,
                    chat_id: s.user.im_chat_id,
                    language: s.user.language,
                    timezone: s.user.settings.timezone,
                    kinds: s.subscription.kinds,
                    reminder_leads: s.user.settings.reminder_leads,
                    mention: s.subscription.mention,
                })
                .collect();
            serde_json::to_vec(&list)
                .map(Bytes::from)
                .map_err(|err| Error::Internal(format!("serializing subscribers: {err}")))
        })
        .await?;
    Ok(RawData(bytes))
}
