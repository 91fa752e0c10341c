//! Turns an event into the Telegram message one chat receives: the entity's name in the
//! chat's language, a headline for the kind, the title, the text (its translation into
//! the chat's language when the translate middleware provided one), the time in the
//! chat's time zone, a link button and a photo when the event carries one.
//!
//! Output is Telegram HTML; every piece of event text is escaped. Text is cut to
//! Telegram's limits (4096 characters for a message, 1024 for a photo caption) with an
//! ellipsis, never rejected.

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde_json::{Map, Value};
use stargazer_core::contract::kind;
use stargazer_core::model::{Entity, Event};

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

/// The words of a message in one language.
struct Words {
    live: &'static str,
    scheduled: &'static str,
    reminder: &'static str,
    video: &'static str,
    tweet: &'static str,
    retweet: &'static str,
    other: &'static str,
    open_youtube: &'static str,
    open_x: &'static str,
    open: &'static str,
    starts: &'static str,
    started: &'static str,
    original: &'static str,
}

const EN: Words = Words {
    live: "🔴 {name} is live",
    scheduled: "📅 {name} scheduled a stream",
    reminder: "⏰ {name} goes live soon",
    video: "🎬 {name} uploaded a video",
    tweet: "🐦 {name} posted",
    retweet: "🔁 {name} reposted",
    other: "🔔 {name}",
    open_youtube: "Open on YouTube",
    open_x: "Open on X",
    open: "Open",
    starts: "Starts",
    started: "Started",
    original: "Original",
};

const JA: Words = Words {
    live: "🔴 {name} の配信が始まりました",
    scheduled: "📅 {name} が配信を予定しました",
    reminder: "⏰ {name} の配信がまもなく始まります",
    video: "🎬 {name} が動画を投稿しました",
    tweet: "🐦 {name} がポストしました",
    retweet: "🔁 {name} がリポストしました",
    other: "🔔 {name}",
    open_youtube: "YouTube で開く",
    open_x: "X で開く",
    open: "開く",
    starts: "開始",
    started: "配信開始",
    original: "原文",
};

const ZH: Words = Words {
    live: "🔴 {name} 开始直播了",
    scheduled: "📅 {name} 预定了直播",
    reminder: "⏰ {name} 的直播即将开始",
    video: "🎬 {name} 发布了视频",
    tweet: "🐦 {name} 发布了推文",
    retweet: "🔁 {name} 转发了推文",
    other: "🔔 {name}",
    open_youtube: "在 YouTube 打开",
    open_x: "在 X 打开",
    open: "打开",
    starts: "开始",
    started: "开播时间",
    original: "原文",
};

/// The languages the bot speaks (its own texts and notifications), with their names.
pub(crate) const LANGUAGES: [(&str, &str); 3] =
    [("en", "English"), ("ja", "日本語"), ("zh", "中文")];

/// The language the bot speaks for `code` (`ja`, `ja-JP`, `ZH_tw` …), if any.
pub(crate) fn spoken_language(code: &str) -> Option<&'static str> {
    let primary = code.split(['-', '_']).next().unwrap_or(code);
    LANGUAGES
        .iter()
        .map(|(code, _)| *code)
        .find(|spoken| primary.eq_ignore_ascii_case(spoken))
}

/// The spoken languages as `en (English), ja (日本語), zh (中文)`.
pub(crate) fn spoken_languages() -> String {
    LANGUAGES
        .iter()
        .map(|(code, name)| format!("{code} ({name})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn words(language: &str) -> &'static Words {
    match language.split(['-', '_']).next().unwrap_or(language) {
        "ja" => &JA,
        "zh" => &ZH,
        _ => &EN,
    }
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

/// Which time a message shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// A stream's scheduled start.
    Starts,
    /// When a live stream actually started.
    Started,
    /// When the event happened.
    At,
}

/// A time field of `fields` (RFC 3339), the first of `names` present and valid.
fn time_field(fields: &Map<String, Value>, names: &[&str]) -> Option<DateTime<Utc>> {
    str_field(fields, names)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The time the message shows: a stream's scheduled start for scheduled streams and
/// reminders (`scheduled_start`/`scheduled_start_time`); the actual start for a live
/// stream (`actual_start_time` from live-check, `actual_start` from the worker; a stream
/// released by its schedule carries the scheduled time as its event time); otherwise the
/// event time.
fn shown_time(event: &Event) -> (DateTime<Utc>, Shown) {
    match event.kind.as_str() {
        kind::YOUTUBE_SCHEDULED | kind::YOUTUBE_REMINDER => {
            let start = time_field(
                &event.fields,
                &[
                    "scheduled_start",
                    "scheduled_start_time",
                    "scheduledStartTime",
                ],
            );
            (start.unwrap_or(event.time), Shown::Starts)
        }
        kind::YOUTUBE_LIVE => {
            match time_field(&event.fields, &["actual_start_time", "actual_start"]) {
                Some(started) => (started, Shown::Started),
                None => (event.time, Shown::At),
            }
        }
        _ => (event.time, Shown::At),
    }
}

/// Composes the message for a chat reading `language` in `timezone`.
pub(crate) fn compose(
    event: &Event,
    entity: &Entity,
    language: &str,
    timezone: Option<&str>,
) -> Composed {
    let w = words(language);
    let name = entity.name_in(language);
    let headline = match event.kind.as_str() {
        kind::YOUTUBE_LIVE => w.live,
        kind::YOUTUBE_SCHEDULED => w.scheduled,
        kind::YOUTUBE_REMINDER => w.reminder,
        kind::YOUTUBE_VIDEO => w.video,
        kind::TWITTER_TWEET => w.tweet,
        kind::TWITTER_RETWEET => w.retweet,
        _ => w.other,
    };
    let fields = &event.fields;
    let title_original = str_field(fields, &["title"]);
    let title = translation(fields, language, "title").or(title_original);
    let text_original = str_field(fields, &["text", "description"]);
    let text_translated = translation(fields, language, "text");
    let (time, shown) = shown_time(event);
    let time_line = match shown {
        Shown::Starts => format!("🕒 {}: {}", w.starts, format_time(time, timezone)),
        Shown::Started => format!("🕒 {}: {}", w.started, format_time(time, timezone)),
        Shown::At => format!("🕒 {}", format_time(time, timezone)),
    };

    let render = |limit: usize| -> String {
        // Headline, title and time are short and always kept; the body texts share what
        // is left of the limit (with room for separators and markup).
        let headline_text = headline.replace("{name}", name);
        let title_text = title.map(|t| truncate(t, 256));
        let fixed = headline_text.chars().count()
            + title_text.as_ref().map_or(0, |t| t.chars().count() + 1)
            + time_line.chars().count()
            + 48;
        let mut budget = limit.saturating_sub(fixed);
        let mut out = format!("<b>{}</b>", escape(&headline_text));
        if let Some(title) = &title_text {
            out.push('\n');
            out.push_str(&escape(title));
        }
        match (text_translated, text_original) {
            (Some(translated), Some(original)) if translated != original => {
                let label = format!("{}: ", w.original);
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
        out.push_str("\n\n");
        out.push_str(&escape(&time_line));
        out
    };

    let photo = photo_url(fields);
    let link = str_field(fields, &["link", "url"]).and_then(http_url);
    let button = link.map(|url| {
        let label = match event.source() {
            "youtube" => w.open_youtube,
            "twitter" => w.open_x,
            _ => w.open,
        };
        (label.to_owned(), url)
    });
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
}
