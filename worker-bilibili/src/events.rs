//! Turning what Bilibili shows into events: `bilibili.live` / `bilibili.ended` for a
//! room's stream (always ready, routing key `bilibili`), `bilibili.video` /
//! `bilibili.dynamic` for a dynamic (tagged `translate` with `x-translate-fields` and
//! `x-translate-to` when the entity wants translations, like tweets).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use stargazer_core::contract::control::{TRANSLATE_FIELDS, TRANSLATE_TO};
use stargazer_core::contract::{field, kind, source, tag};
use stargazer_core::model::Event;
use stargazer_core::routing::key_with_tags;
use uuid::Uuid;

use crate::api::Dynamic;

/// A room's watch page.
pub(crate) fn room_link(room_id: u64) -> String {
    format!("https://live.bilibili.com/{room_id}")
}

/// The id of one broadcast: `<room id>:<live start, unix seconds>`.
pub(crate) fn stream_id(room_id: u64, live_time: i64) -> String {
    format!("{room_id}:{live_time}")
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn unix(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_else(Utc::now)
}

/// What a live event says about the stream.
#[derive(Debug, Clone)]
pub(crate) struct Stream<'a> {
    pub(crate) entity: Uuid,
    pub(crate) uid: &'a str,
    pub(crate) room_id: u64,
    pub(crate) stream_id: &'a str,
    /// Unix seconds.
    pub(crate) started: i64,
    pub(crate) title: &'a str,
    pub(crate) link: String,
    /// The room's area.
    pub(crate) category: &'a str,
    /// The room's cover, else its keyframe.
    pub(crate) thumbnail: &'a str,
}

fn stream_fields(stream: &Stream<'_>) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(field::STREAM_ID.into(), json!(stream.stream_id));
    fields.insert(field::TITLE.into(), json!(stream.title));
    fields.insert(field::LINK.into(), json!(stream.link));
    fields.insert(
        field::ACTUAL_START.into(),
        json!(rfc3339(unix(stream.started))),
    );
    fields.insert(field::CATEGORY.into(), json!(stream.category));
    fields.insert(field::THUMBNAIL.into(), json!(stream.thumbnail));
    fields.insert("room_id".into(), json!(stream.room_id.to_string()));
    fields.insert("uid".into(), json!(stream.uid));
    fields
}

/// `bilibili.live` for a stream that started.
pub(crate) fn live_event(stream: &Stream<'_>) -> Event {
    let fields = stream_fields(stream);
    Event {
        id: Event::make_id(kind::BILIBILI_LIVE, stream.stream_id, None),
        kind: kind::BILIBILI_LIVE.into(),
        entity: stream.entity,
        time: unix(stream.started),
        fields,
        control: Map::new(),
    }
}

/// `bilibili.ended` for a stream seen off at `ended` (unix seconds).
pub(crate) fn ended_event(stream: &Stream<'_>, ended: i64) -> Event {
    let mut fields = stream_fields(stream);
    fields.insert(field::ACTUAL_END.into(), json!(rfc3339(unix(ended))));
    fields.insert(
        field::DURATION_SECONDS.into(),
        json!((ended - stream.started).max(0)),
    );
    Event {
        id: Event::make_id(kind::BILIBILI_ENDED, stream.stream_id, None),
        kind: kind::BILIBILI_ENDED.into(),
        entity: stream.entity,
        time: unix(ended),
        fields,
        control: Map::new(),
    }
}

/// The routing key of every ready Bilibili event.
pub(crate) fn ready_key() -> String {
    key_with_tags(source::BILIBILI, &[])
}

/// The event and routing key of `dynamic`: `bilibili.video` for a video, else
/// `bilibili.dynamic`.
pub(crate) fn dynamic_event(
    entity: Uuid,
    uid: &str,
    dynamic: &Dynamic,
    translate_to: &[String],
) -> (String, Event) {
    let mut fields = Map::new();
    fields.insert(field::DYNAMIC_ID.into(), json!(dynamic.id));
    fields.insert("uid".into(), json!(uid));
    fields.insert("dynamic_type".into(), json!(dynamic.kind));
    let (event_kind, translated): (&str, &[&str]) = match &dynamic.archive {
        Some(archive) if dynamic.kind == "DYNAMIC_TYPE_AV" => {
            fields.insert(field::BVID.into(), json!(archive.bvid));
            fields.insert(field::TITLE.into(), json!(archive.title));
            // The dynamic's own words when the uploader wrote some, else the video's.
            let text = if archive.desc.is_empty() {
                &dynamic.text
            } else {
                &archive.desc
            };
            fields.insert(field::TEXT.into(), json!(text));
            fields.insert(field::THUMBNAIL.into(), json!(archive.cover));
            fields.insert(field::MEDIA.into(), json!([archive.cover]));
            fields.insert(
                field::LINK.into(),
                json!(format!("https://www.bilibili.com/video/{}", archive.bvid)),
            );
            (kind::BILIBILI_VIDEO, &["/fields/text", "/fields/title"])
        }
        _ => {
            fields.insert(field::TEXT.into(), json!(dynamic.text));
            fields.insert(field::MEDIA.into(), json!(dynamic.pictures));
            fields.insert(
                field::LINK.into(),
                json!(format!("https://t.bilibili.com/{}", dynamic.id)),
            );
            if let Some(forwarded) = &dynamic.forwarded_id {
                fields.insert(field::FORWARDED_ID.into(), json!(forwarded));
            }
            (kind::BILIBILI_DYNAMIC, &["/fields/text"])
        }
    };
    let mut control = Map::new();
    let routing_key = if translate_to.is_empty() {
        ready_key()
    } else {
        control.insert(TRANSLATE_FIELDS.into(), json!(translated));
        control.insert(TRANSLATE_TO.into(), json!(translate_to));
        key_with_tags(source::BILIBILI, &[tag::TRANSLATE])
    };
    let time = if dynamic.pub_ts > 0 {
        unix(dynamic.pub_ts)
    } else {
        Utc::now()
    };
    let event = Event {
        id: Event::make_id(event_kind, &dynamic.id, None),
        kind: event_kind.into(),
        entity,
        time,
        fields,
        control,
    };
    (routing_key, event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Archive;

    fn dynamic(kind: &str) -> Dynamic {
        Dynamic {
            id: "1000".into(),
            kind: kind.into(),
            pub_ts: 1_700_000_000,
            pinned: false,
            text: "hello".into(),
            pictures: vec!["https://i0.hdslb.com/a.jpg".into()],
            archive: None,
            forwarded_id: None,
        }
    }

    #[test]
    fn a_video_is_tagged_for_text_and_title() {
        let mut d = dynamic("DYNAMIC_TYPE_AV");
        d.archive = Some(Archive {
            bvid: "BV1".into(),
            title: "T".into(),
            desc: "D".into(),
            cover: "c".into(),
        });
        let (key, event) = dynamic_event(Uuid::nil(), "1", &d, &["en".into()]);
        assert_eq!(key, "bilibili.translate");
        assert_eq!(event.kind, "bilibili.video");
        assert_eq!(event.fields["link"], "https://www.bilibili.com/video/BV1");
        assert_eq!(event.fields["text"], "D");
        assert_eq!(
            event.control["x-translate-fields"],
            json!(["/fields/text", "/fields/title"])
        );
        assert_eq!(event.id, Event::make_id("bilibili.video", "1000", None));
    }

    #[test]
    fn a_repost_is_a_ready_dynamic_with_the_forwarded_id() {
        let mut d = dynamic("DYNAMIC_TYPE_FORWARD");
        d.forwarded_id = Some("7".into());
        let (key, event) = dynamic_event(Uuid::nil(), "1", &d, &[]);
        assert_eq!(key, "bilibili");
        assert_eq!(event.kind, "bilibili.dynamic");
        assert_eq!(event.fields["forwarded_id"], "7");
        assert_eq!(event.fields["link"], "https://t.bilibili.com/1000");
        assert!(event.control.is_empty());
    }

    #[test]
    fn live_and_ended_share_the_stream_id() {
        let stream = Stream {
            entity: Uuid::nil(),
            uid: "1",
            room_id: 5,
            stream_id: "5:100",
            started: 100,
            title: "t",
            link: room_link(5),
            category: "Games",
            thumbnail: "thumb",
        };
        let live = live_event(&stream);
        let ended = ended_event(&stream, 400);
        assert_eq!(live.fields["stream_id"], ended.fields["stream_id"]);
        assert_eq!(ended.fields["duration_seconds"], 300);
        assert_eq!(ended.fields["category"], "Games");
        assert_eq!(live.fields["actual_start"], "1970-01-01T00:01:40Z");
        assert_ne!(live.id, ended.id);
    }
}
