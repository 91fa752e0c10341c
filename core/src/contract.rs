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
    /// A stream was scheduled (or its start time moved).
    pub const YOUTUBE_SCHEDULED: &str = "youtube.scheduled";
    /// A scheduled stream starts soon.
    pub const YOUTUBE_REMINDER: &str = "youtube.reminder";
    /// A stream is live now.
    pub const YOUTUBE_LIVE: &str = "youtube.live";
    /// A new post on X.
    pub const TWITTER_TWEET: &str = "twitter.tweet";
    /// A repost on X.
    pub const TWITTER_RETWEET: &str = "twitter.retweet";
    /// Every kind produced in this workspace, in the order pickers show them.
    pub const ALL: [&str; 6] = [
        YOUTUBE_LIVE,
        YOUTUBE_SCHEDULED,
        YOUTUBE_REMINDER,
        YOUTUBE_VIDEO,
        TWITTER_TWEET,
        TWITTER_RETWEET,
    ];
}

/// IM words: the suffix of a bot's queue (`stargazer.bot.<im>`) and of a chat's platform.
pub mod im {
    /// Telegram.
    pub const TELEGRAM: &str = "telegram";
    /// Every IM platform with a bot in this workspace.
    pub const ALL: [&str; 1] = [TELEGRAM];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_start_with_their_source_word() {
        for kind in kind::ALL {
            let (word, what) = kind.split_once('.').expect("kind has a source word");
            assert!([source::YOUTUBE, source::TWITTER].contains(&word), "{kind}");
            assert!(!what.is_empty() && !what.contains('.'), "{kind}");
        }
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
