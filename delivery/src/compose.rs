//! What a chat is shown of an event, before any network's markup: the entity's name in
//! the chat's language, a headline for the kind, the title, the text (its translation
//! into the chat's language when the translate middleware provided one), the time in the
//! chat's time zone, a link with its label and a photo when the event carries one. Each
//! bot renders a [`Notification`] in its network's form (Telegram HTML, a Discord embed,
//! OneBot segments) and cuts it to its limits.
//!
//! A stream's life is shown in [`View`]s: the event's own message, its first message
//! brought up to date (live now, moved, ended with its duration, cancelled), and the
//! short notice that it moved earlier. Premieres are worded as premieres
//! (`format = "premiere"`) and members-only videos are marked. The words are the
//! `notify-…` messages of `delivery/locales/<language>/notifications.ftl`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fluent_bundle::FluentValue;
use reqwest::Url;
use serde_json::{Map, Value};
use stargazer_core::contract::{field, format, kind, source};
use stargazer_core::model::{Entity, Event};

/// What a chat reading one language in one time zone is shown of an event in one view.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The headline: the entity's name and what happened (for the moved-earlier notice,
    /// the whole notice).
    pub headline: String,
    /// The title, in the chat's language when translated.
    pub title: Option<String>,
    /// The members-only mark.
    pub members: Option<String>,
    /// A Twitch game or Bilibili area.
    pub category: Option<String>,
    /// The text, translated or as posted.
    pub body: Option<Body>,
    /// When the stream starts, started or the event happened.
    pub time_line: Option<String>,
    /// A picture to show.
    pub photo: Option<Url>,
    /// Label and target of the link.
    pub button: Option<(String, Url)>,
}

/// The text of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// As posted (or only a translation was there).
    Text(String),
    /// Translated into the chat's language, with the original under its label.
    Translated {
        /// The translation.
        translated: String,
        /// `Original: ` in the chat's language.
        label: String,
        /// The text as posted.
        original: String,
    },
}

/// What a chat is shown of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// The event's own message, sent anew.
    Message,
    /// The stream's first message brought up to date by this event (an edit).
    FirstUpdated,
    /// The short notice, replying to the first message, that the stream moved earlier.
    MovedEarlier,
}

/// The words of notifications in one language: the `notify-…` messages of
/// `delivery/locales/<language>/notifications.ftl`, English when the language or a
/// message is missing.
#[derive(Clone, Copy)]
struct Words<'a> {
    language: &'a str,
}

impl Words<'_> {
    /// Message `notify-<key>` without arguments.
    fn get(&self, key: &str) -> String {
        self.with(key, &[])
    }

    /// Message `notify-<key>` with `args`.
    fn with(&self, key: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        crate::i18n::notifications().text(self.language, &format!("notify-{key}"), args)
    }
}

fn words(language: &str) -> Words<'_> {
    Words { language }
}

/// Cuts `text` to at most `max` characters, ending with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

fn str_field<'a>(fields: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|name| {
        fields
            .get(*name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    })
}

fn http_url(text: &str) -> Option<Url> {
    let url = Url::parse(text.trim()).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

/// The first picture of the event: `thumbnail`, `image`, `photo`, or the first of
/// `media` (URL strings or objects with `url`/`preview_image_url`).
fn photo_url(fields: &Map<String, Value>) -> Option<Url> {
    if let Some(url) = str_field(fields, &["thumbnail", "image", "photo"]).and_then(http_url) {
        return Some(url);
    }
    let media = fields.get("media")?;
    let items: Vec<&Value> = match media {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    items.into_iter().find_map(|item| match item {
        Value::String(s) => http_url(s),
        Value::Object(o) => {
            str_field(o, &["url", "preview_image_url", "thumbnail"]).and_then(http_url)
        }
        _ => None,
    })
}

/// The translation of the event's `field` (`text`, `title`) into `language`, from
/// `fields.translations.<language>`: either a string (the text's translation) or an
/// object keyed by field name or JSON pointer (`text`, `/fields/text`).
fn translation<'a>(fields: &'a Map<String, Value>, language: &str, field: &str) -> Option<&'a str> {
    let entry = fields.get("translations")?.get(language)?;
    let found = match entry {
        Value::String(s) if field == "text" => Some(s.as_str()),
        Value::Object(map) => map
            .get(field)
            .or_else(|| map.get(&format!("/fields/{field}")))
            .or_else(|| map.get(&format!("/{field}")))
            .and_then(Value::as_str),
        _ => None,
    };
    found.map(str::trim).filter(|s| !s.is_empty())
}

/// Formats `time` in the IANA zone `timezone` (UTC when absent or unknown).
pub fn format_time(time: DateTime<Utc>, timezone: Option<&str>) -> String {
    match timezone
        .filter(|tz| !tz.is_empty())
        .and_then(|tz| tz.parse::<chrono_tz::Tz>().ok())
    {
        Some(tz) => time
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
        None => time.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// A time field of `fields` (RFC 3339), the first of `names` present and valid.
fn time_field(fields: &Map<String, Value>, names: &[&str]) -> Option<DateTime<Utc>> {
    str_field(fields, names)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A stream's scheduled start (`scheduled_start`, or the spellings of older producers).
pub fn scheduled_start(event: &Event) -> Option<DateTime<Utc>> {
    time_field(
        &event.fields,
        &[
            field::SCHEDULED_START,
            "scheduled_start_time",
            "scheduledStartTime",
        ],
    )
}

/// When a stream actually started: `actual_start_time` from live-check, `actual_start`
/// from the worker.
fn actual_start(event: &Event) -> Option<DateTime<Utc>> {
    time_field(&event.fields, &["actual_start_time", field::ACTUAL_START])
}

/// Whether the event is about a premiere (the opener's kind, or the video's format).
pub fn is_premiere(event: &Event) -> bool {
    event.kind == kind::YOUTUBE_PREMIERE
        || event.fields.get(field::FORMAT).and_then(Value::as_str) == Some(format::PREMIERE)
}

/// Whether only channel members can watch the video.
fn members_only(event: &Event) -> bool {
    event.fields.get(field::MEMBERS_ONLY) == Some(&Value::Bool(true))
}

/// How long a stream lasted: `duration_seconds`, else end minus start.
fn duration(event: &Event) -> Option<Duration> {
    let seconds = event
        .fields
        .get(field::DURATION_SECONDS)
        .and_then(Value::as_u64)
        .or_else(|| {
            let end = time_field(&event.fields, &[field::ACTUAL_END])?;
            u64::try_from((end - actual_start(event)?).num_seconds()).ok()
        })?;
    Some(Duration::from_secs(seconds))
}

/// `2h13m` (in the chat's words); under an hour only minutes, at least one.
fn format_duration(w: Words<'_>, lasted: Duration) -> String {
    let minutes = (lasted.as_secs() / 60).max(1);
    let (h, m) = (minutes / 60, minutes % 60);
    if h > 0 {
        w.with("hours-minutes", &[("h", h.into()), ("m", m.into())])
    } else {
        w.with("minutes", &[("m", m.into())])
    }
}

/// `HH:MM` and the zone in the IANA zone `timezone` (UTC when absent or unknown).
fn format_clock(time: DateTime<Utc>, timezone: Option<&str>) -> String {
    match timezone
        .filter(|tz| !tz.is_empty())
        .and_then(|tz| tz.parse::<chrono_tz::Tz>().ok())
    {
        Some(tz) => time.with_timezone(&tz).format("%H:%M %Z").to_string(),
        None => time.format("%H:%M UTC").to_string(),
    }
}

/// The time line of a message, if it has one.
fn time_line(event: &Event, view: View, w: Words<'_>, timezone: Option<&str>) -> Option<String> {
    let starts =
        |start: DateTime<Utc>| format!("🕒 {}: {}", w.get("starts"), format_time(start, timezone));
    let started =
        |start: DateTime<Utc>| format!("🕒 {}: {}", w.get("started"), format_time(start, timezone));
    let at = || format!("🕒 {}", format_time(event.time, timezone));
    Some(match event.kind.as_str() {
        kind::YOUTUBE_SCHEDULED | kind::YOUTUBE_PREMIERE | kind::YOUTUBE_REMINDER => {
            starts(scheduled_start(event).unwrap_or(event.time))
        }
        kind::YOUTUBE_RESCHEDULED => {
            let mut line = starts(scheduled_start(event).unwrap_or(event.time));
            if let Some(previous) = time_field(&event.fields, &[field::PREVIOUS_START]) {
                let moved = w.with(
                    "moved-from",
                    &[("time", format_time(previous, timezone).into())],
                );
                line.push_str(&format!(" ({moved})"));
            }
            line
        }
        // A stream released by live-check carries the scheduled time as its event time.
        kind::YOUTUBE_LIVE | kind::TWITCH_LIVE | kind::TWITCH_RERUN | kind::BILIBILI_LIVE => {
            actual_start(event).map_or_else(at, started)
        }
        kind::YOUTUBE_ENDED | kind::TWITCH_ENDED | kind::BILIBILI_ENDED => {
            started(actual_start(event)?)
        }
        // A cancelled stream has no time worth showing.
        kind::YOUTUBE_CANCELLED if view == View::FirstUpdated => return None,
        _ => at(),
    })
}

/// The headline message of `event` in `view` (`notify-<key>`, formatted with `name` and
/// `duration`).
fn headline(event: &Event, view: View) -> &'static str {
    let premiere = is_premiere(event);
    let pick = |plain: &'static str, premiere_word: &'static str| {
        if premiere {
            premiere_word
        } else {
            plain
        }
    };
    match (event.kind.as_str(), view) {
        (kind::YOUTUBE_LIVE, View::FirstUpdated) => pick("live-now", "premiere-live-now"),
        (kind::YOUTUBE_LIVE, _) => pick("live", "premiere-live"),
        // An edited first message keeps its opener's headline; only its time moves.
        (kind::YOUTUBE_RESCHEDULED, View::FirstUpdated) => pick("scheduled", "premiere"),
        (kind::YOUTUBE_RESCHEDULED, _) => pick("rescheduled", "premiere-rescheduled"),
        (kind::YOUTUBE_SCHEDULED, _) => pick("scheduled", "premiere"),
        (kind::YOUTUBE_PREMIERE, _) => "premiere",
        (kind::YOUTUBE_REMINDER, _) => pick("reminder", "premiere-reminder"),
        (kind::YOUTUBE_ENDED, _) if duration(event).is_some() => "ended",
        (kind::YOUTUBE_ENDED, _) => "ended-plain",
        (kind::YOUTUBE_CANCELLED, _) => "cancelled",
        (kind::YOUTUBE_VIDEO, _) => "video",
        (kind::YOUTUBE_SHORT, _) => "short",
        (kind::TWITTER_TWEET, _) => "tweet",
        (kind::TWITTER_RETWEET, _) => "retweet",
        (kind::TWITCH_LIVE, View::FirstUpdated) => "live-now",
        (kind::TWITCH_LIVE, _) => "twitch-live",
        (kind::TWITCH_RERUN, _) => "twitch-rerun",
        (kind::BILIBILI_LIVE, View::FirstUpdated) => "live-now",
        (kind::BILIBILI_LIVE, _) => "bilibili-live",
        (kind::TWITCH_ENDED | kind::BILIBILI_ENDED, _) if duration(event).is_some() => "ended",
        (kind::TWITCH_ENDED | kind::BILIBILI_ENDED, _) => "ended-plain",
        (kind::BILIBILI_DYNAMIC, _) if event.fields.contains_key(field::FORWARDED_ID) => {
            "bilibili-repost"
        }
        (kind::BILIBILI_DYNAMIC, _) => "bilibili-dynamic",
        (kind::BILIBILI_VIDEO, _) => "bilibili-video",
        _ => "other",
    }
}

/// What a chat reading `language` in `timezone` is shown of `event` about `entity` in
/// `view`.
pub fn notification(
    event: &Event,
    entity: &Entity,
    language: &str,
    timezone: Option<&str>,
    view: View,
) -> Notification {
    let w = words(language);
    let name = entity.name_in(language);
    let fields = &event.fields;
    if view == View::MovedEarlier {
        let start = scheduled_start(event).unwrap_or(event.time);
        let notice = w.with(
            "moved-earlier",
            &[
                ("name", name.into()),
                ("time", format_clock(start, timezone).into()),
            ],
        );
        return Notification {
            headline: notice,
            title: None,
            members: None,
            category: None,
            body: None,
            time_line: None,
            photo: None,
            button: None,
        };
    }
    let headline = w.with(
        headline(event, view),
        &[
            ("name", name.into()),
            (
                "duration",
                duration(event)
                    .map(|d| format_duration(w, d))
                    .unwrap_or_default()
                    .into(),
            ),
        ],
    );
    let title = translation(fields, language, "title")
        .or(str_field(fields, &["title"]))
        .map(str::to_owned);
    let text_original = str_field(fields, &["text", "description"]);
    let text_translated = translation(fields, language, "text");
    let body = match (text_translated, text_original) {
        (Some(translated), Some(original)) if translated != original => Some(Body::Translated {
            translated: translated.to_owned(),
            label: format!("{}: ", w.get("original")),
            original: original.to_owned(),
        }),
        (Some(text), _) | (None, Some(text)) => Some(Body::Text(text.to_owned())),
        (None, None) => None,
    };
    let link = str_field(fields, &["link", "url"]).and_then(http_url);
    let button = match (event.kind.as_str(), link) {
        // The video of a cancelled stream is gone or private: no link to follow.
        (kind::YOUTUBE_CANCELLED, _) | (_, None) => None,
        (kind::YOUTUBE_ENDED, Some(url)) => Some((w.get("archive"), url)),
        (_, Some(url)) => {
            let label = match event.source() {
                source::YOUTUBE => "open-youtube",
                source::TWITTER => "open-x",
                source::TWITCH => "open-twitch",
                source::BILIBILI => "open-bilibili",
                _ => "open",
            };
            Some((w.get(label), url))
        }
    };
    Notification {
        headline,
        title,
        members: members_only(event).then(|| w.get("members-only")),
        // A Twitch game or Bilibili area: one short line under the title.
        category: str_field(fields, &[field::CATEGORY]).map(|c| format!("🎮 {}", truncate(c, 64))),
        body,
        time_line: time_line(event, view, w, timezone),
        photo: photo_url(fields),
        button,
    }
}
