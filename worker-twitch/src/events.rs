//! From EventSub payloads to events: `twitch.live` / `twitch.rerun` when a stream starts,
//! `twitch.ended` when it stops, and the record of the current stream per broadcaster
//! (namespace [`LIVE_NAMESPACE`]) that relates the two.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stargazer_core::contract::{field, kind};
use stargazer_core::model::Event;
use uuid::Uuid;

/// Key/value namespace of the stream each broadcaster is live with, keyed by broadcaster
/// id: written when it goes live, updated by `channel.update`, removed when it ends.
pub const LIVE_NAMESPACE: &str = "twitch.live";

/// Field naming the broadcaster's login.
pub const BROADCASTER_LOGIN: &str = "broadcaster_login";

/// Size asked of Twitch's preview images.
const THUMBNAIL_SIZE: (&str, &str) = ("1280", "720");

/// `event` of a `stream.online` notification.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Online {
    /// The stream id.
    pub(crate) id: String,
    pub(crate) broadcaster_user_id: String,
    #[serde(default)]
    pub(crate) broadcaster_user_login: String,
    #[serde(default)]
    pub(crate) broadcaster_user_name: String,
    /// `live`, `playlist`, `watch_party`, `premiere`, `rerun`.
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) started_at: Option<DateTime<Utc>>,
}

/// `event` of `stream.offline` (and the broadcaster part of any event).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Broadcaster {
    pub(crate) broadcaster_user_id: String,
}

/// `event` of a `channel.update` (version 2) notification.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChannelUpdate {
    pub(crate) broadcaster_user_id: String,
    #[serde(default)]
    pub(crate) title: String,
    #[serde(default)]
    pub(crate) category_name: String,
}

/// What Helix adds to a notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Details {
    pub(crate) title: Option<String>,
    pub(crate) category: Option<String>,
    /// Preview URL with the size filled in.
    pub(crate) thumbnail: Option<String>,
}

/// The stream a broadcaster is live with, as stored in [`LIVE_NAMESPACE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// The stream id.
    pub stream_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The latest title known.
    pub title: String,
    /// The latest category known.
    pub category: String,
    /// The broadcaster's login.
    pub login: String,
    /// The entity the live event was published for.
    pub entity: Uuid,
}

/// A login as Twitch spells them (`[a-z0-9_]`); anything else is dropped so a link can
/// never carry a path or query of someone else's making.
fn clean_login(login: &str) -> String {
    login
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .flat_map(char::to_lowercase)
        .take(50)
        .collect()
}

/// The channel page.
pub(crate) fn link(login: &str) -> String {
    format!("https://www.twitch.tv/{}", clean_login(login))
}

/// Fills `{width}x{height}` of a Helix `thumbnail_url`.
pub(crate) fn sized_thumbnail(template: &str) -> String {
    template
        .replace("{width}", THUMBNAIL_SIZE.0)
        .replace("{height}", THUMBNAIL_SIZE.1)
}

/// The live preview of a login, for when Helix did not list the stream yet: Twitch serves
/// it at this address as soon as the stream is up.
fn preview(login: &str) -> String {
    sized_thumbnail(&format!(
        "https://static-cdn.jtvnw.net/previews-ttv/live_user_{}-{{width}}x{{height}}.jpg",
        clean_login(login)
    ))
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn put(fields: &mut Map<String, Value>, name: &str, value: impl Into<String>) {
    let value = value.into();
    if !value.is_empty() {
        fields.insert(name.to_owned(), Value::String(value));
    }
}

/// The record to store and the event to publish for a stream that started: `twitch.live`
/// for type `live`, else `twitch.rerun` with `stream_type`.
pub(crate) fn started(
    entity: Uuid,
    online: &Online,
    details: &Details,
    received: DateTime<Utc>,
) -> (LiveRecord, Event) {
    let login = if online.broadcaster_user_login.is_empty() {
        online.broadcaster_user_name.to_lowercase()
    } else {
        online.broadcaster_user_login.clone()
    };
    let record = LiveRecord {
        stream_id: online.id.clone(),
        started_at: online.started_at.unwrap_or(received),
        title: details.title.clone().unwrap_or_default(),
        category: details.category.clone().unwrap_or_default(),
        login: clean_login(&login),
        entity,
    };
    let live = online.kind == "live";
    let event_kind = if live {
        kind::TWITCH_LIVE
    } else {
        kind::TWITCH_RERUN
    };
    let mut fields = Map::new();
    put(&mut fields, field::STREAM_ID, &record.stream_id);
    put(&mut fields, field::TITLE, &record.title);
    put(&mut fields, field::CATEGORY, &record.category);
    put(
        &mut fields,
        field::THUMBNAIL,
        details.thumbnail.clone().unwrap_or_else(|| preview(&login)),
    );
    put(&mut fields, field::LINK, link(&login));
    put(&mut fields, field::ACTUAL_START, rfc3339(record.started_at));
    put(&mut fields, BROADCASTER_LOGIN, &record.login);
    if !live {
        put(&mut fields, field::STREAM_TYPE, &online.kind);
    }
    let event = Event {
        id: Event::make_id(event_kind, &record.stream_id, None),
        kind: event_kind.to_owned(),
        entity,
        time: received,
        fields,
        control: Map::new(),
    };
    (record, event)
}

/// `twitch.ended` for the stream of `record`, ended at `ended`.
pub(crate) fn ended(record: &LiveRecord, ended: DateTime<Utc>) -> Event {
    let mut fields = Map::new();
    put(&mut fields, field::STREAM_ID, &record.stream_id);
    put(&mut fields, field::TITLE, &record.title);
    put(&mut fields, field::CATEGORY, &record.category);
    put(&mut fields, field::LINK, link(&record.login));
    put(&mut fields, field::ACTUAL_START, rfc3339(record.started_at));
    put(&mut fields, field::ACTUAL_END, rfc3339(ended));
    put(&mut fields, BROADCASTER_LOGIN, &record.login);
    let seconds = (ended - record.started_at).num_seconds().max(0);
    fields.insert(field::DURATION_SECONDS.to_owned(), Value::from(seconds));
    Event {
        id: Event::make_id(kind::TWITCH_ENDED, &record.stream_id, None),
        kind: kind::TWITCH_ENDED.to_owned(),
        entity: record.entity,
        time: ended,
        fields,
        control: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(kind: &str) -> Online {
        Online {
            id: "9001".into(),
            broadcaster_user_id: "1337".into(),
            broadcaster_user_login: "cool_user".into(),
            broadcaster_user_name: "Cool_User".into(),
            kind: kind.into(),
            started_at: Some("2026-01-01T10:00:00Z".parse().unwrap()),
        }
    }

    #[test]
    fn live_and_ended_share_the_stream_id_and_measure_the_duration() {
        let entity = Uuid::new_v4();
        let details = Details {
            title: Some("Title".into()),
            category: Some("Just Chatting".into()),
            thumbnail: None,
        };
        let (record, live) = started(entity, &online("live"), &details, Utc::now());
        assert_eq!(live.kind, kind::TWITCH_LIVE);
        assert_eq!(live.fields[field::STREAM_ID], "9001");
        assert_eq!(live.fields[field::LINK], "https://www.twitch.tv/cool_user");
        assert!(live.fields[field::THUMBNAIL]
            .as_str()
            .unwrap()
            .ends_with("live_user_cool_user-1280x720.jpg"));
        assert_eq!(live.id, Event::make_id(kind::TWITCH_LIVE, "9001", None));
        let end = ended(&record, "2026-01-01T11:30:00Z".parse().unwrap());
        assert_eq!(end.fields[field::STREAM_ID], "9001");
        assert_eq!(end.fields[field::DURATION_SECONDS], 5400);
        assert_eq!(end.entity, entity);
    }

    #[test]
    fn non_live_types_are_reruns_with_their_type_and_logins_are_cleaned() {
        let mut rerun = online("rerun");
        rerun.broadcaster_user_login = "evil/../path?x".into();
        let (_, event) = started(Uuid::new_v4(), &rerun, &Details::default(), Utc::now());
        assert_eq!(event.kind, kind::TWITCH_RERUN);
        assert_eq!(event.fields[field::STREAM_TYPE], "rerun");
        assert_eq!(event.fields[field::LINK], "https://www.twitch.tv/evilpathx");
    }
}
