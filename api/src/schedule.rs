//! The upcoming streams of one user, shared by `getUpcoming` and the calendar feed, and
//! the feed's secret.
//!
//! The schedule (`stargazer_core::schedule`, written by the source workers) and the
//! entities' names are the same for every user: each is read at most once per
//! `read_cache_ms` whatever the number of feeds fetched meanwhile, then filtered per user
//! by that user's own subscriptions. Nothing user-specific is cached, so one user's
//! answer can never be served to another.
//!
//! A stream is listed when the user subscribes to its entity and the subscription wants
//! the event that opens the stream's life in a chat (`youtube.scheduled`, or
//! `youtube.premiere` for a premiere) together with its gates (`youtube.members` for a
//! members-only stream): what the chat would have been told about, no more.
//!
//! # The feed secret
//!
//! `<user id, 32 lowercase hex>.<256 random bits, URL-safe base64>`. The user id lets the
//! feed look up exactly one user per request; the random part is the secret. Only its
//! SHA-256 ([`token_hash`] of the whole secret) is stored, in the user's settings, and
//! compared in constant time. A malformed secret is refused before any storage access.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use stargazer_core::auth::{constant_time_eq, new_token, token_hash};
use stargazer_core::contract::{field, format, kind};
use stargazer_core::model;
use stargazer_core::schedule::{self as core_schedule, ScheduledStream};
use stargazer_core::storage::StateStore;
use uuid::Uuid;

use crate::error::Result;
use crate::state::AppState;
use crate::types::{StreamState, UpcomingStream};

/// Length of the user id part of a secret (a simple, unhyphenated UUID).
const USER_PART_LEN: usize = 32;
/// Length of the random part of a secret (`auth::new_token`: 32 bytes, unpadded base64).
const TOKEN_PART_LEN: usize = 43;

/// A fresh feed secret for `user`; store [`secret_hash`] of it, hand it out once.
pub(crate) fn new_secret(user: Uuid) -> String {
    format!("{}.{}", user.simple(), new_token())
}

/// What the user's settings keep of `secret`.
pub(crate) fn secret_hash(secret: &str) -> String {
    token_hash(secret)
}

/// The user a well-formed secret names; `None` for anything else (no storage access is
/// needed to refuse it).
pub(crate) fn secret_user(secret: &str) -> Option<Uuid> {
    let (user, token) = secret.split_once('.')?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let url_safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if user.len() != USER_PART_LEN
        || !user.bytes().all(hex)
        || token.len() != TOKEN_PART_LEN
        || !token.bytes().all(url_safe)
    {
        return None;
    }
    Uuid::try_parse(user).ok()
}

/// Whether `secret` is the one whose hash `user` keeps (constant time).
pub(crate) fn secret_matches(user: &model::User, secret: &str) -> bool {
    user.settings
        .calendar_secret_hash
        .as_deref()
        .is_some_and(|stored| constant_time_eq(secret_hash(secret).as_bytes(), stored.as_bytes()))
}

/// The event that opens `stream`'s life in a chat, as a subscription judges it: its kind
/// and the fields the gates read (`contract::kind::gates`).
fn opener(stream: &ScheduledStream) -> model::Event {
    let premiere = stream.format == format::PREMIERE;
    let mut fields = serde_json::Map::new();
    fields.insert(field::FORMAT.into(), stream.format.clone().into());
    fields.insert(field::MEMBERS_ONLY.into(), stream.members_only.into());
    model::Event {
        id: Uuid::nil(),
        kind: if premiere {
            kind::YOUTUBE_PREMIERE
        } else {
            kind::YOUTUBE_SCHEDULED
        }
        .to_owned(),
        entity: stream.entity,
        time: stream.scheduled_start,
        fields,
        control: serde_json::Map::new(),
    }
}

/// Whether `subscription` wants to hear about `stream`.
pub(crate) fn wants(subscription: &model::Subscription, stream: &ScheduledStream) -> bool {
    subscription.entity == stream.entity && subscription.wants_event(&opener(stream))
}

/// The whole schedule, from the cache or one storage read.
async fn schedule(state: &AppState) -> Result<Arc<Vec<ScheduledStream>>> {
    state
        .schedule
        .get_or_load((), || async {
            let store: &dyn StateStore = state.storage.as_ref();
            Ok(Arc::new(core_schedule::list(store, Utc::now()).await?))
        })
        .await
}

/// Every entity by id, from the cache or one storage read.
async fn entities(state: &AppState) -> Result<Arc<HashMap<Uuid, model::Entity>>> {
    state
        .entity_names
        .get_or_load((), || async {
            let all = state.storage.list_entities().await?;
            Ok(Arc::new(all.into_iter().map(|e| (e.id, e)).collect()))
        })
        .await
}

/// The streams `user` wants to hear about, by scheduled start, with entity names in the
/// user's language. A user without subscriptions costs no schedule read.
pub(crate) async fn upcoming_of(
    state: &AppState,
    user: &model::User,
) -> Result<Vec<UpcomingStream>> {
    let subscriptions = state.storage.list_subscriptions(user.id).await?;
    if subscriptions.is_empty() {
        return Ok(Vec::new());
    }
    let by_entity: HashMap<Uuid, &model::Subscription> =
        subscriptions.iter().map(|s| (s.entity, s)).collect();
    let schedule = schedule(state).await?;
    let wanted: Vec<&ScheduledStream> = schedule
        .iter()
        .filter(|stream| {
            by_entity
                .get(&stream.entity)
                .is_some_and(|subscription| wants(subscription, stream))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let entities = entities(state).await?;
    Ok(wanted
        .into_iter()
        // A stream of an entity deleted meanwhile has no name to show: left out.
        .filter_map(|stream| {
            let entity = entities.get(&stream.entity)?;
            Some(UpcomingStream {
                source: stream.source.clone(),
                id: stream.id.clone(),
                entity: stream.entity,
                entity_name: entity.name_in(&user.language).to_owned(),
                title: stream.title.clone(),
                link: stream.link.clone(),
                start: stream.actual_start.unwrap_or(stream.scheduled_start),
                scheduled_start: stream.scheduled_start,
                state: match stream.state {
                    core_schedule::StreamState::Upcoming => StreamState::Upcoming,
                    core_schedule::StreamState::Live => StreamState::Live,
                },
                format: stream.format.clone(),
                members_only: stream.members_only,
                updated_at: stream.updated_at,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn stream(format: &str, members_only: bool) -> ScheduledStream {
        let now = Utc::now();
        ScheduledStream {
            source: "youtube".into(),
            id: "v".into(),
            entity: Uuid::from_u128(1),
            task: Uuid::from_u128(2),
            title: "t".into(),
            link: "https://www.youtube.com/watch?v=v".into(),
            scheduled_start: now + Duration::hours(1),
            actual_start: None,
            state: core_schedule::StreamState::Upcoming,
            format: format.into(),
            members_only,
            updated_at: now,
        }
    }

    fn subscription(kinds: &[&str]) -> model::Subscription {
        model::Subscription {
            user: Uuid::from_u128(3),
            entity: Uuid::from_u128(1),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            mention: None,
        }
    }

    #[test]
    fn streams_are_wanted_by_their_opening_kind_and_gates() {
        let plain = stream("stream", false);
        let premiere = stream("premiere", false);
        let members = stream("stream", true);
        let all = subscription(&[]);
        for s in [&plain, &premiere, &members] {
            assert!(wants(&all, s));
        }
        let scheduled = subscription(&["youtube.scheduled"]);
        assert!(wants(&scheduled, &plain));
        assert!(!wants(&scheduled, &premiere));
        assert!(!wants(&scheduled, &members));
        let with_members = subscription(&["youtube.scheduled", "youtube.members"]);
        assert!(wants(&with_members, &members));
        assert!(wants(&subscription(&["youtube.premiere"]), &premiere));
        assert!(!wants(&subscription(&["youtube.live"]), &plain));
        let mut other = subscription(&[]);
        other.entity = Uuid::from_u128(9);
        assert!(!wants(&other, &plain));
    }

    #[test]
    fn secrets_name_their_user_and_only_well_formed_ones_parse() {
        let user = Uuid::new_v4();
        let secret = new_secret(user);
        assert_eq!(secret_user(&secret), Some(user));
        assert_ne!(new_secret(user), secret);
        for bad in [
            String::new(),
            "x".into(),
            user.simple().to_string(),
            format!("{}.", user.simple()),
            format!("{}.{}", user.hyphenated(), new_token()),
            format!(
                "{}.{}",
                user.simple().to_string().to_uppercase(),
                new_token()
            ),
            format!("{}.{}x", user.simple(), new_token()),
            format!("{}.{}", user.simple(), new_token().replace(|_| true, "!")),
            secret.replacen('.', "/", 1),
        ] {
            assert_eq!(secret_user(&bad), None, "{bad}");
        }
        let mut record = model::User {
            id: user,
            im: "telegram".into(),
            im_chat_id: "1".into(),
            name: String::new(),
            language: "en".into(),
            settings: model::UserSettings::default(),
            created_at: Utc::now(),
        };
        assert!(!secret_matches(&record, &secret));
        record.settings.calendar_secret_hash = Some(secret_hash(&secret));
        assert!(secret_matches(&record, &secret));
        assert!(!secret_matches(&record, &new_secret(user)));
    }
}
