//! The wire contract between producers, middlewares and bots (docs/ARCHITECTURE.md §4), as
//! named constants: the source words and tags routing keys are made of, the control fields
//! a producer sets for a middleware, and the event kinds users filter on.
//!
//! Every producer and consumer names these constants instead of spelling the strings, so a
//! renamed field cannot drift between the side that writes it and the side that reads it.
//! Kinds stay open strings on the wire: a bot passes on a kind it does not know.

/// Source words: the first word of a routing key and of an event kind.
pub mod source {
    /// YouTube uploads and streams.
    pub const YOUTUBE: &str = "youtube";
    /// Posts on X.
    pub const TWITTER: &str = "twitter";
    /// Twitch streams.
    pub const TWITCH: &str = "twitch";
    /// Bilibili live rooms and dynamics (posts, videos).
    pub const BILIBILI: &str = "bilibili";
    /// Every source word of this workspace.
    pub const ALL: [&str; 4] = [YOUTUBE, TWITTER, TWITCH, BILIBILI];
}

/// Tags: the middleware words stacked on a routing key (the last one is processed first).
pub mod tag {
    /// Held until a time, replaced or cancelled by id (`middleware-delay`).
    pub const DELAY: &str = "delay";
    /// Texts translated into the entity's languages (`middleware-translate`).
    pub const TRANSLATE: &str = "translate";
    /// Held until a video is really live (`middleware-live-check`).
    pub const LIVE_CHECK: &str = "live_check";
    /// Every middleware tag of this workspace.
    pub const ALL: [&str; 3] = [DELAY, TRANSLATE, LIVE_CHECK];
}

/// Control fields: top-level `x-…` members of an event, removed by the middleware that
/// consumes them.
pub mod control {
    /// For `delay`: when to fire, unix milliseconds.
    pub const DELAY_AT: &str = "x-delay-at";
    /// For `delay`: the id a later message can replace or cancel this one by (default: the
    /// event id).
    pub const DELAY_ID: &str = "x-delay-id";
    /// For `delay`: `true` removes the pending message with the id and publishes nothing.
    pub const DELAY_CANCEL: &str = "x-delay-cancel";
    /// For `translate`: JSON pointers (RFC 6901) into the event naming the texts to
    /// translate.
    pub const TRANSLATE_FIELDS: &str = "x-translate-fields";
    /// For `translate`: language codes to translate into (else the configured default).
    pub const TRANSLATE_TO: &str = "x-translate-to";
    /// Set by `translate` for the bots when something could not be translated.
    pub const TRANSLATE_ERROR: &str = "x-translate-error";
    /// For `live_check`: the YouTube video id whose `actualStartTime` releases the event.
    pub const LIVE_CHECK_VIDEO: &str = "x-live-check-video";
}

/// Event kinds: `<source>.<what happened>`; chats subscribe to them.
pub mod kind {
    /// A new upload.
    pub const YOUTUBE_VIDEO: &str = "youtube.video";
    /// A new Short (an upload of the Shorts format, see docs/ARCHITECTURE.md §4).
    pub const YOUTUBE_SHORT: &str = "youtube.short";
    /// A stream was scheduled: the first message of its life in a chat.
    pub const YOUTUBE_SCHEDULED: &str = "youtube.scheduled";
    /// A premiere was scheduled: the first message of its life in a chat. The premiere's
    /// later events carry `format = "premiere"` and reach only chats that want this kind.
    pub const YOUTUBE_PREMIERE: &str = "youtube.premiere";
    /// A scheduled stream's start time moved (`previous_start` says from when).
    pub const YOUTUBE_RESCHEDULED: &str = "youtube.rescheduled";
    /// A scheduled stream starts soon (one event per offered lead, `lead_seconds`).
    pub const YOUTUBE_REMINDER: &str = "youtube.reminder";
    /// A stream is live now.
    pub const YOUTUBE_LIVE: &str = "youtube.live";
    /// A stream ended (`actual_end`, `duration_seconds`); its first message is edited.
    pub const YOUTUBE_ENDED: &str = "youtube.ended";
    /// A scheduled stream was cancelled or deleted before it went live.
    pub const YOUTUBE_CANCELLED: &str = "youtube.cancelled";
    /// Not an event's kind but a gate: events with `members_only = true` reach only chats
    /// that want this kind as well as the event's own.
    pub const YOUTUBE_MEMBERS: &str = "youtube.members";
    /// A new post on X.
    pub const TWITTER_TWEET: &str = "twitter.tweet";
    /// A repost on X.
    pub const TWITTER_RETWEET: &str = "twitter.retweet";
    /// A Twitch broadcaster went live (EventSub `stream.online` of type `live`).
    pub const TWITCH_LIVE: &str = "twitch.live";
    /// A Twitch stream ended (`stream.offline`); its live message is edited.
    pub const TWITCH_ENDED: &str = "twitch.ended";
    /// A Twitch broadcast that is not live (`stream_type`: rerun, playlist, watch_party,
    /// premiere), published only when `twitch.non_live_streams = "publish"`.
    pub const TWITCH_RERUN: &str = "twitch.rerun";
    /// A Bilibili live room went live (`live_status` 1).
    pub const BILIBILI_LIVE: &str = "bilibili.live";
    /// A Bilibili live stream ended; its live message is edited.
    pub const BILIBILI_ENDED: &str = "bilibili.ended";
    /// A Bilibili dynamic: a post, with or without pictures, or a repost.
    pub const BILIBILI_DYNAMIC: &str = "bilibili.dynamic";
    /// A Bilibili video upload.
    pub const BILIBILI_VIDEO: &str = "bilibili.video";
    /// Every kind produced in this workspace, in the order pickers show them. New kinds
    /// are appended, so the index a chat's keyboard carries keeps its meaning.
    pub const ALL: [&str; 19] = [
        YOUTUBE_LIVE,
        YOUTUBE_SCHEDULED,
        YOUTUBE_RESCHEDULED,
        YOUTUBE_REMINDER,
        YOUTUBE_ENDED,
        YOUTUBE_CANCELLED,
        YOUTUBE_PREMIERE,
        YOUTUBE_VIDEO,
        YOUTUBE_SHORT,
        YOUTUBE_MEMBERS,
        TWITTER_TWEET,
        TWITTER_RETWEET,
        TWITCH_LIVE,
        TWITCH_ENDED,
        TWITCH_RERUN,
        BILIBILI_LIVE,
        BILIBILI_ENDED,
        BILIBILI_DYNAMIC,
        BILIBILI_VIDEO,
    ];

    /// The kinds whose messages lose their worth within minutes (a stream is live, or
    /// starts soon): bots send them before every other kind waiting to go out.
    pub const URGENT: [&str; 4] = [YOUTUBE_REMINDER, YOUTUBE_LIVE, TWITCH_LIVE, BILIBILI_LIVE];

    /// The kinds that open a stream's life in a chat: the message later events of the
    /// stream reply to or edit.
    pub const STREAM_OPENERS: [&str; 2] = [YOUTUBE_SCHEDULED, YOUTUBE_PREMIERE];

    /// The kinds a subscription must want, besides the event's own, for `event` to reach
    /// it: `youtube.premiere` for a premiere's later events, `youtube.members` for a
    /// members-only video.
    pub fn gates(event: &crate::model::Event) -> Vec<&'static str> {
        let mut gates = Vec::new();
        let format = event.fields.get(super::field::FORMAT);
        if format.and_then(|f| f.as_str()) == Some(super::format::PREMIERE)
            && event.kind != YOUTUBE_PREMIERE
        {
            gates.push(YOUTUBE_PREMIERE);
        }
        if event.fields.get(super::field::MEMBERS_ONLY) == Some(&serde_json::Value::Bool(true)) {
            gates.push(YOUTUBE_MEMBERS);
        }
        gates
    }
}

/// Event fields (`Event::fields`) that more than one crate reads.
pub mod field {
    /// The YouTube video id of a stream or upload: the key of a stream's life in a chat.
    pub const VIDEO_ID: &str = "video_id";
    /// The title.
    pub const TITLE: &str = "title";
    /// The watch link.
    pub const LINK: &str = "link";
    /// A picture URL.
    pub const THUMBNAIL: &str = "thumbnail";
    /// Scheduled start, RFC 3339.
    pub const SCHEDULED_START: &str = "scheduled_start";
    /// For `youtube.rescheduled`: the start it moved from, RFC 3339.
    pub const PREVIOUS_START: &str = "previous_start";
    /// Actual start, RFC 3339.
    pub const ACTUAL_START: &str = "actual_start";
    /// Actual end, RFC 3339.
    pub const ACTUAL_END: &str = "actual_end";
    /// For `youtube.ended`: how long the stream lasted, seconds.
    pub const DURATION_SECONDS: &str = "duration_seconds";
    /// What a YouTube video is: one of [`super::format`].
    pub const FORMAT: &str = "format";
    /// `true` for a video only channel members can watch.
    pub const MEMBERS_ONLY: &str = "members_only";
    /// For `youtube.reminder`: seconds between the reminder and the scheduled start.
    pub const LEAD_SECONDS: &str = "lead_seconds";
    /// For `youtube.reminder`: `true` on the reminder at the default lead, the one chats
    /// that chose no lead receive.
    pub const LEAD_DEFAULT: &str = "lead_default";
    /// For `youtube.live`: `true` when live-check released the event at its scheduled start
    /// without confirming it (the day's Data API quota was spent).
    pub const LIVE_UNVERIFIED: &str = "live_unverified";
    /// For Twitch and Bilibili streams: the id of one broadcast (Twitch: the stream id;
    /// Bilibili: `<room id>:<live start, unix seconds>`), carried by its live and ended
    /// events alike: the key of the stream's life in a chat (see [`stream_key`]).
    pub const STREAM_ID: &str = "stream_id";
    /// A stream's category (Twitch game, Bilibili area).
    pub const CATEGORY: &str = "category";
    /// For `twitch.rerun`: Twitch's stream type (`rerun`, `playlist`, `watch_party`,
    /// `premiere`).
    pub const STREAM_TYPE: &str = "stream_type";
    /// The text of a post (X, Bilibili dynamic); translated when the entity wants it.
    pub const TEXT: &str = "text";
    /// Picture URLs of a post.
    pub const MEDIA: &str = "media";
    /// For Bilibili: the dynamic's id.
    pub const DYNAMIC_ID: &str = "dynamic_id";
    /// For `bilibili.video`: the video's BV id.
    pub const BVID: &str = "bvid";
    /// For a Bilibili repost: the id of the dynamic it forwards.
    pub const FORWARDED_ID: &str = "forwarded_id";
}

/// The key a stream's events share, under which a bot remembers the stream's messages in
/// a chat: a YouTube event's `video_id` as it is (the key bots used before other sources
/// streamed), else `<source>:<stream_id>`. `None` for an event that is no stream's.
pub fn stream_key(event: &crate::model::Event) -> Option<String> {
    let text = |name: &str| {
        event
            .fields
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match event.source() {
        source::YOUTUBE => text(field::VIDEO_ID).map(str::to_owned),
        source => text(field::STREAM_ID).map(|id| format!("{source}:{id}")),
    }
}

/// Values of [`field::FORMAT`].
pub mod format {
    /// A live stream.
    pub const STREAM: &str = "stream";
    /// A premiere: a pre-recorded video shown first at a scheduled time.
    pub const PREMIERE: &str = "premiere";
    /// A Short.
    pub const SHORT: &str = "short";
    /// Any other upload.
    pub const VIDEO: &str = "video";
}

/// Reminder leads a chat can pick, minutes before the scheduled start; the worker's
/// default offers each of them.
pub const REMINDER_LEAD_CHOICES_MINUTES: [u32; 4] = [5, 15, 30, 60];

/// IM words: the suffix of a bot's queue (`stargazer.bot.<im>`) and of a chat's platform.
pub mod im {
    /// Telegram.
    pub const TELEGRAM: &str = "telegram";
    /// Discord (channels of guilds).
    pub const DISCORD: &str = "discord";
    /// QQ, through a OneBot v11 implementation.
    pub const QQ: &str = "qq";
    /// Every IM platform whose bot runs as a service of the platform (each gets its queue
    /// in the standard topology; Discord's and QQ's bots are not services yet).
    pub const ALL: [&str; 1] = [TELEGRAM];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_start_with_their_source_word() {
        for kind in kind::ALL {
            let (word, what) = kind.split_once('.').expect("kind has a source word");
            assert!(source::ALL.contains(&word), "{kind}");
            assert!(!what.is_empty() && !what.contains('.'), "{kind}");
        }
    }

    #[test]
    fn a_stream_s_events_share_one_key_per_source() {
        let event = |kind: &str, fields: serde_json::Value| crate::model::Event {
            id: uuid::Uuid::nil(),
            kind: kind.into(),
            entity: uuid::Uuid::nil(),
            time: chrono::Utc::now(),
            fields: fields.as_object().cloned().unwrap_or_default(),
            control: serde_json::Map::new(),
        };
        let youtube = event(kind::YOUTUBE_LIVE, serde_json::json!({"video_id": "abc"}));
        assert_eq!(stream_key(&youtube).as_deref(), Some("abc"));
        let twitch = event(kind::TWITCH_ENDED, serde_json::json!({"stream_id": " 42 "}));
        assert_eq!(stream_key(&twitch).as_deref(), Some("twitch:42"));
        let room = event(kind::BILIBILI_LIVE, serde_json::json!({"stream_id": "42"}));
        assert_eq!(stream_key(&room).as_deref(), Some("bilibili:42"));
        // A YouTube event names its stream by video id only; a post names none.
        let odd = event(kind::YOUTUBE_LIVE, serde_json::json!({"stream_id": "42"}));
        assert_eq!(stream_key(&odd), None);
        let post = event(kind::BILIBILI_DYNAMIC, serde_json::json!({"text": "hi"}));
        assert_eq!(stream_key(&post), None);
    }

    #[test]
    fn control_fields_are_x_prefixed_and_distinct() {
        let fields = [
            control::DELAY_AT,
            control::DELAY_ID,
            control::DELAY_CANCEL,
            control::TRANSLATE_FIELDS,
            control::TRANSLATE_TO,
            control::TRANSLATE_ERROR,
            control::LIVE_CHECK_VIDEO,
        ];
        for field in fields {
            assert!(field.starts_with("x-"), "{field}");
        }
        let distinct: std::collections::BTreeSet<_> = fields.iter().collect();
        assert_eq!(distinct.len(), fields.len());
    }

    #[test]
    fn tags_are_single_routing_words() {
        for tag in tag::ALL {
            assert!(!tag.is_empty() && !tag.contains(['.', '*', '#']), "{tag}");
        }
    }
}
