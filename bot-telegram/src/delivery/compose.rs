//! Renders what a chat is shown of an event ([`stargazer_delivery::compose`]: the
//! entity's name in the chat's language, a headline for the kind, the title, the text or
//! its translation, the time in the chat's time zone, a link and a photo) as the Telegram
//! message it receives, per [`View`] of a stream's life.
//!
//! Output is Telegram HTML; every piece of event text is escaped. Text is cut to
//! Telegram's limits (4096 characters for a message, 1024 for a photo caption) with an
//! ellipsis, never rejected.

use reqwest::Url;
use stargazer_core::model::{Entity, Event};
use stargazer_delivery::compose::{notification, truncate, Body};
pub(crate) use stargazer_delivery::compose::{scheduled_start, View};

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
    let n = notification(event, entity, language, timezone, view);
    if view == View::MovedEarlier {
        let html = format!("<b>{}</b>", escape(&n.headline));
        return Composed {
            html: html.clone(),
            html_long: html,
            photo: None,
            button: None,
        };
    }
    let render = |limit: usize| -> String {
        // Headline, title and time are short and always kept; the body texts share what
        // is left of the limit (with room for separators and markup).
        let title_text = n.title.as_deref().map(|t| truncate(t, 256));
        let fixed = n.headline.chars().count()
            + title_text.as_ref().map_or(0, |t| t.chars().count() + 1)
            + n.members.as_ref().map_or(0, |m| m.chars().count() + 1)
            + n.category.as_ref().map_or(0, |c| c.chars().count() + 1)
            + n.time_line.as_ref().map_or(0, |t| t.chars().count())
            + 48;
        let mut budget = limit.saturating_sub(fixed);
        let mut out = format!("<b>{}</b>", escape(&n.headline));
        for line in [&title_text, &n.members, &n.category].into_iter().flatten() {
            out.push('\n');
            out.push_str(&escape(line));
        }
        match &n.body {
            Some(Body::Translated {
                translated,
                label,
                original,
            }) => {
                let first = truncate(translated, budget);
                budget = budget.saturating_sub(first.chars().count() + label.chars().count() + 3);
                out.push_str("\n\n");
                out.push_str(&escape(&first));
                if budget > 1 {
                    out.push_str("\n<blockquote>");
                    out.push_str(&escape(label));
                    out.push_str(&escape(&truncate(original, budget)));
                    out.push_str("</blockquote>");
                }
            }
            Some(Body::Text(text)) => {
                out.push_str("\n\n");
                out.push_str(&escape(&truncate(text, budget)));
            }
            None => {}
        }
        if let Some(time_line) = &n.time_line {
            out.push_str("\n\n");
            out.push_str(&escape(time_line));
        }
        out
    };
    let html_long = render(MESSAGE_LIMIT);
    let html = if n.photo.is_some() {
        render(CAPTION_LIMIT)
    } else {
        html_long.clone()
    };
    Composed {
        html,
        html_long,
        photo: n.photo.clone(),
        button: n.button.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::{json, Map, Value};
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
