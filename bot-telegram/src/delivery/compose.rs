//! Turns an event into the Telegram message one chat receives: the entity's name in the
//! chat's language, a headline for the kind, the title, the text (its translation into
//! the chat's language when the translate middleware provided one), the time in the
//! chat's time zone, a link button and a photo when the event carries one.
//!
//! A stream's life is shown in [`View`]s: the event's own message, its first message
//! brought up to date (live now, moved, ended with its duration, cancelled), and the
//! short notice that it moved earlier. Premieres are worded as premieres
//! (`format = "premiere"`) and members-only videos are marked.
//!
//! Output is Telegram HTML; every piece of event text is escaped. Text is cut to
//! Telegram's limits (4096 characters for a message, 1024 for a photo caption) with an
//! ellipsis, never rejected.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fluent_bundle::FluentValue;
use reqwest::Url;
use serde_json::{Map, Value};
use stargazer_core::contract::{field, format, kind, source};
use stargazer_core::model::{Entity, Event};

use crate::i18n::text;

/// Longest text of a message, in characters.
pub(crate) const MESSAGE_LIMIT: usize = 4096;
/// Longest caption of a photo, in characters.
pub(crate) const CAPTION_LIMIT: usize = 1024;

/// A message ready to send to one chat.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Composed {
    /// Telegram HTML for the message text (or the photo caption when `photo` is set).
    pub html: String,
    /// The same cut to the message limit, for a text message (a photo that fails to send
    /// falls back to it).
    pub html_long: String,
    /// A picture to send with `sendPhoto`.
    pub photo: Option<Url>,
    /// Label and target of the link button.
    pub button: Option<(String, Url)>,
}

/// What a chat is shown of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum View {
    /// The event's own message, sent anew.
    Message,
    /// The stream's first message brought up to date by this event (an edit).
    FirstUpdated,
    /// The short notice, replying to the first message, that the stream moved earlier.
    MovedEarlier,
}

/// The words of notifications in one language: the `notify-…` messages of the bot's
/// Fluent files (`locales/<language>/notifications.ftl`), English when the language or a
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
        text(self.language, &format!("notify-{key}"), args)
    }
}

fn words(language: &str) -> Words<'_> {
    Words { language }
}

/// Escapes text for Telegram HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Cuts `text` to at most `max` characters, ending with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
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
pub(crate) fn format_time(time: DateTime<Utc>, timezone: Option<&str>) -> String {
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
pub(crate) fn scheduled_start(event: &Event) -> Option<DateTime<Utc>> {
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
pub(crate) fn is_premiere(event: &Event) -> bool {
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

/// Composes the event's own message for a chat reading `language` in `timezone`.
#[cfg(test)]
pub(crate) fn compose(
    event: &Event,
    entity: &Entity,
    language: &str,
    timezone: Option<&str>,
) -> Composed {
    compose_view(event, entity, language, timezone, View::Message)
}

/// Composes what a chat reading `language` in `timezone` is shown of `event` in `view`.
pub(crate) fn compose_view(
    event: &Event,
    entity: &Entity,
    language: &str,
    timezone: Option<&str>,
    view: View,
) -> Composed {
    let w = words(language);
    let name = entity.name_in(language);
    let fields = &event.fields;
    let link = str_field(fields, &["link", "url"]).and_then(http_url);
    if view == View::MovedEarlier {
        let start = scheduled_start(event).unwrap_or(event.time);
        let notice = w.with(
            "moved-earlier",
            &[
                ("name", name.into()),
                ("time", format_clock(start, timezone).into()),
            ],
        );
        let html = format!("<b>{}</b>", escape(&notice));
        return Composed {
            html: html.clone(),
            html_long: html,
            photo: None,
            button: None,
        };
    }
    let headline_text = w.with(
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
    let title_original = str_field(fields, &["title"]);
    let title = translation(fields, language, "title").or(title_original);
    let text_original = str_field(fields, &["text", "description"]);
    let text_translated = translation(fields, language, "text");
    let time_line = time_line(event, view, w, timezone);
    let members = members_only(event).then(|| w.get("members-only"));
    // A Twitch game or Bilibili area: one short line under the title.
    let category = str_field(fields, &[field::CATEGORY]).map(|c| format!("🎮 {}", truncate(c, 64)));

    let render = |limit: usize| -> String {
        // Headline, title and time are short and always kept; the body texts share what
        // is left of the limit (with room for separators and markup).
        let title_text = title.map(|t| truncate(t, 256));
        let fixed = headline_text.chars().count()
            + title_text.as_ref().map_or(0, |t| t.chars().count() + 1)
            + members.as_ref().map_or(0, |m| m.chars().count() + 1)
            + category.as_ref().map_or(0, |c| c.chars().count() + 1)
            + time_line.as_ref().map_or(0, |t| t.chars().count())
            + 48;
        let mut budget = limit.saturating_sub(fixed);
        let mut out = format!("<b>{}</b>", escape(&headline_text));
        if let Some(title) = &title_text {
            out.push('\n');
            out.push_str(&escape(title));
        }
        if let Some(members) = &members {
            out.push('\n');
            out.push_str(&escape(members));
        }
        if let Some(category) = &category {
            out.push('\n');
            out.push_str(&escape(category));
        }
        match (text_translated, text_original) {
            (Some(translated), Some(original)) if translated != original => {
                let label = format!("{}: ", w.get("original"));
                let first = truncate(translated, budget);
                budget = budget.saturating_sub(first.chars().count() + label.chars().count() + 3);
                out.push_str("\n\n");
                out.push_str(&escape(&first));
                if budget > 1 {
                    out.push_str("\n<blockquote>");
                    out.push_str(&escape(&label));
                    out.push_str(&escape(&truncate(original, budget)));
                    out.push_str("</blockquote>");
                }
            }
            (Some(text), _) | (None, Some(text)) => {
                out.push_str("\n\n");
                out.push_str(&escape(&truncate(text, budget)));
            }
            (None, None) => {}
        }
        if let Some(time_line) = &time_line {
            out.push_str("\n\n");
            out.push_str(&escape(time_line));
        }
        out
    };

    let photo = photo_url(fields);
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
    let html_long = render(MESSAGE_LIMIT);
    let html = if photo.is_some() {
        render(CAPTION_LIMIT)
    } else {
        html_long.clone()
    };
    Composed {
        html,
        html_long,
        photo,
        button,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn entity() -> Entity {
        Entity {
            id: Uuid::nil(),
            names: [
                ("en".to_owned(), "Aqua".to_owned()),
                ("ja".to_owned(), "湊あくあ".to_owned()),
            ]
            .into_iter()
            .collect(),
            default_language: "ja".into(),
            group: None,
            translate_to: vec![],
            tasks: vec![],
        }
    }

    fn event(kind: &str, fields: Value) -> Event {
        Event {
            id: Uuid::nil(),
            kind: kind.into(),
            entity: Uuid::nil(),
            time: DateTime::parse_from_rfc3339("2026-03-01T12:30:00Z")
                .unwrap()
                .into(),
            fields: fields.as_object().unwrap().clone(),
            control: Map::new(),
        }
    }

    #[test]
    fn names_headline_and_time_follow_the_chat() {
        let e = event(
            "youtube.live",
            json!({"title": "Minecraft <3", "link": "https://youtu.be/x"}),
        );
        let en = compose(&e, &entity(), "en", None);
        assert!(
            en.html
                .starts_with("<b>🔴 Aqua is live</b>\nMinecraft &lt;3"),
            "{}",
            en.html
        );
        assert!(en.html.ends_with("🕒 2026-03-01 12:30 UTC"));
        assert_eq!(en.button.as_ref().unwrap().0, "Open on YouTube");
        let ja = compose(&e, &entity(), "ja", Some("Asia/Tokyo"));
        assert!(ja.html.contains("湊あくあ の配信が始まりました"));
        assert!(ja.html.ends_with("2026-03-01 21:30 JST"), "{}", ja.html);
        // An unknown language falls back to the default name and English words.
        let fr = compose(&e, &entity(), "fr", Some("Not/AZone"));
        assert!(fr.html.contains("湊あくあ is live") && fr.html.ends_with("UTC"));
    }

    #[test]
    fn a_live_stream_shows_when_it_actually_started() {
        // Released by live-check at the scheduled time (the event time), started later.
        let e = event(
            "youtube.live",
            json!({"title": "Late start", "actual_start_time": "2026-03-01T12:41:07+00:00"}),
        );
        let en = compose(&e, &entity(), "en", None);
        assert!(
            en.html.ends_with("🕒 Started: 2026-03-01 12:41 UTC"),
            "{}",
            en.html
        );
        let ja = compose(&e, &entity(), "ja", Some("Asia/Tokyo"));
        assert!(
            ja.html.ends_with("配信開始: 2026-03-01 21:41 JST"),
            "{}",
            ja.html
        );
        // Announced by the worker when it found the stream already live.
        let e = event(
            "youtube.live",
            json!({"title": "Early", "actual_start": "2026-03-01T12:20:00Z"}),
        );
        let en = compose(&e, &entity(), "en", None);
        assert!(
            en.html.ends_with("🕒 Started: 2026-03-01 12:20 UTC"),
            "{}",
            en.html
        );
        // A broken value falls back to the event time.
        let e = event("youtube.live", json!({"actual_start_time": "soon"}));
        let en = compose(&e, &entity(), "en", None);
        assert!(en.html.ends_with("🕒 2026-03-01 12:30 UTC"), "{}", en.html);
    }

    #[test]
    fn translation_replaces_text_and_keeps_the_original() {
        let e = event(
            "twitter.tweet",
            json!({"text": "おはよう", "translations": {"en": {"/fields/text": "Good morning"}}}),
        );
        let en = compose(&e, &entity(), "en", None);
        assert!(
            en.html
                .contains("\n\nGood morning\n<blockquote>Original: おはよう</blockquote>"),
            "{}",
            en.html
        );
        let ja = compose(&e, &entity(), "ja", None);
        assert!(ja.html.contains("\n\nおはよう\n") && !ja.html.contains("blockquote"));
        let plain = event(
            "twitter.tweet",
            json!({"text": "hi", "translations": {"ja": "やあ"}}),
        );
        assert!(compose(&plain, &entity(), "ja", None).html.contains("やあ"));
    }

    #[test]
    fn photo_caption_is_cut_to_the_limit() {
        let long = "x".repeat(5000);
        let e = event(
            "twitter.tweet",
            json!({"text": long, "media": [{"type": "photo", "url": "https://pbs.example/a.jpg"}]}),
        );
        let c = compose(&e, &entity(), "en", None);
        assert_eq!(c.photo.unwrap().as_str(), "https://pbs.example/a.jpg");
        assert!(
            c.html.chars().count() <= CAPTION_LIMIT,
            "{}",
            c.html.chars().count()
        );
        assert!(c.html.contains('…'));
        assert!(c.html_long.chars().count() <= MESSAGE_LIMIT);
        assert!(c.html_long.chars().count() > CAPTION_LIMIT);
    }

    #[test]
    fn a_streams_life_is_worded_per_view_and_language() {
        let moved = event(
            "youtube.rescheduled",
            json!({"title": "Karaoke", "scheduled_start": "2026-03-02T10:00:00Z",
                   "previous_start": "2026-03-02T12:00:00Z", "link": "https://youtu.be/k"}),
        );
        let edit = compose_view(&moved, &entity(), "en", None, View::FirstUpdated);
        assert!(
            edit.html.starts_with("<b>📅 Aqua scheduled a stream</b>"),
            "{}",
            edit.html
        );
        assert!(
            edit.html
                .ends_with("Starts: 2026-03-02 10:00 UTC (moved from 2026-03-02 12:00 UTC)"),
            "{}",
            edit.html
        );
        let notice = compose_view(
            &moved,
            &entity(),
            "ja",
            Some("Asia/Tokyo"),
            View::MovedEarlier,
        );
        assert_eq!(
            notice.html,
            "<b>⏩ 予定が早まりました: 湊あくあ は 19:00 JST 開始</b>"
        );
        assert!(notice.button.is_none());

        let ended = event(
            "youtube.ended",
            json!({"title": "Karaoke", "format": "premiere", "members_only": true,
                   "actual_start": "2026-03-02T10:00:00Z", "duration_seconds": 7980,
                   "link": "https://youtu.be/archive"}),
        );
        let en = compose_view(&ended, &entity(), "en", None, View::FirstUpdated);
        assert!(
            en.html
                .starts_with("<b>⏹ Ended, lasted 2h13m: Aqua</b>\nKaraoke\n🔒 Members only"),
            "{}",
            en.html
        );
        assert_eq!(en.button.unwrap().0, "Watch the archive");
        let zh = compose_view(&ended, &entity(), "zh", None, View::FirstUpdated);
        assert!(zh.html.contains("时长 2小时13分钟"), "{}", zh.html);
        let short = event("youtube.ended", json!({"duration_seconds": 300}));
        let ja = compose_view(&short, &entity(), "ja", None, View::FirstUpdated);
        assert!(ja.html.contains("配信終了（5分）"), "{}", ja.html);

        let premiere_live = event("youtube.live", json!({"format": "premiere"}));
        let en = compose_view(&premiere_live, &entity(), "en", None, View::FirstUpdated);
        assert!(
            en.html.starts_with("<b>🎞 Premiere live now: Aqua</b>"),
            "{}",
            en.html
        );
        let en = compose(&premiere_live, &entity(), "en", None);
        assert!(
            en.html.starts_with("<b>🎞 Aqua's premiere has started</b>"),
            "{}",
            en.html
        );

        let cancelled = event(
            "youtube.cancelled",
            json!({"title": "Karaoke", "link": "https://youtu.be/k", "scheduled_start": "2026-03-02T10:00:00Z"}),
        );
        let en = compose_view(&cancelled, &entity(), "en", None, View::FirstUpdated);
        assert_eq!(en.html, "<b>❌ Cancelled: Aqua</b>\nKaraoke");
        assert!(en.button.is_none());
    }

    #[test]
    fn scheduled_streams_show_their_start_and_bad_urls_are_ignored() {
        let e = event(
            "youtube.scheduled",
            json!({"scheduled_start": "2026-03-02T10:00:00Z", "thumbnail": "javascript:alert(1)", "link": "not a url"}),
        );
        let c = compose(&e, &entity(), "en", Some("Europe/London"));
        assert!(
            c.html.ends_with("Starts: 2026-03-02 10:00 GMT"),
            "{}",
            c.html
        );
        assert!(c.photo.is_none() && c.button.is_none());
    }

    #[test]
    fn twitch_and_bilibili_streams_and_posts_are_worded_per_platform() {
        let live = event(
            "twitch.live",
            json!({"title": "Elden Ring <blind>", "category": "Elden Ring",
                   "stream_id": "40952121085", "link": "https://www.twitch.tv/aqua",
                   "thumbnail": "https://static-cdn.jtvnw.net/x-1280x720.jpg",
                   "actual_start": "2026-03-01T12:31:00Z"}),
        );
        let en = compose(&live, &entity(), "en", None);
        assert!(
            en.html.starts_with(
                "<b>🟣 Aqua is live on Twitch</b>\nElden Ring &lt;blind&gt;\n🎮 Elden Ring"
            ),
            "{}",
            en.html
        );
        assert!(
            en.html.ends_with("🕒 Started: 2026-03-01 12:31 UTC"),
            "{}",
            en.html
        );
        assert_eq!(en.button.as_ref().unwrap().0, "Open on Twitch");
        assert!(en.photo.is_some());
        let ja = compose(&live, &entity(), "ja", Some("Asia/Tokyo"));
        assert!(
            ja.html.contains("湊あくあ が Twitch で配信を始めました"),
            "{}",
            ja.html
        );

        // Its end edits the live message: the duration, and still a link to the channel
        // (a Twitch channel is not an archive).
        let ended = event(
            "twitch.ended",
            json!({"title": "Elden Ring", "stream_id": "40952121085",
                   "link": "https://www.twitch.tv/aqua",
                   "actual_start": "2026-03-01T12:31:00Z", "actual_end": "2026-03-01T15:02:00Z",
                   "duration_seconds": 9060}),
        );
        let edited = compose_view(&ended, &entity(), "en", None, View::FirstUpdated);
        assert!(
            edited
                .html
                .starts_with("<b>⏹ Ended, lasted 2h31m: Aqua</b>"),
            "{}",
            edited.html
        );
        assert_eq!(edited.button.as_ref().unwrap().0, "Open on Twitch");

        let room = event(
            "bilibili.live",
            json!({"title": "杂谈", "category": "虚拟主播", "stream_id": "21452505:1772368260",
                   "link": "https://live.bilibili.com/21452505"}),
        );
        let zh = compose(&room, &entity(), "zh", None);
        assert!(
            zh.html
                .starts_with("<b>📺 湊あくあ 在B站开播了</b>\n杂谈\n🎮 虚拟主播"),
            "{}",
            zh.html
        );
        assert_eq!(zh.button.as_ref().unwrap().0, "在B站打开");

        let repost = event(
            "bilibili.dynamic",
            json!({"text": "转发", "dynamic_id": "9", "forwarded_id": "8",
                   "link": "https://t.bilibili.com/9"}),
        );
        let en = compose(&repost, &entity(), "en", None);
        assert!(
            en.html
                .starts_with("<b>🔁 Aqua reposted on Bilibili</b>\n\n转发"),
            "{}",
            en.html
        );
        let video = event(
            "bilibili.video",
            json!({"title": "新曲", "bvid": "BV1xx411c7mD", "dynamic_id": "10",
                   "link": "https://www.bilibili.com/video/BV1xx411c7mD"}),
        );
        let ja = compose(&video, &entity(), "ja", None);
        assert!(
            ja.html
                .starts_with("<b>🎬 湊あくあ がビリビリに動画を投稿しました</b>\n新曲"),
            "{}",
            ja.html
        );
        assert_eq!(ja.button.as_ref().unwrap().0, "ビリビリで開く");
    }
}
