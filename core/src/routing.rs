//! Routing keys and the tag stack (docs/ARCHITECTURE.md §4).
//!
//! A key is `<source>.<tag1>.<tag2>…`. Tags form a stack: the LAST tag is processed
//! first. A message is *ready* when only the source word is left. This module also holds
//! the AMQP topic matcher the in-process bus uses, so both buses route alike.

pub use crate::topology::{
    DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, DEAD_REASON_HEADER, DEAD_ROUTING_KEY_HEADER, EXCHANGE,
};

/// The binding pattern that selects ready messages (source word only).
pub const READY_PATTERN: &str = "*";

/// The durable queue a middleware named `name` consumes.
pub fn middleware_queue(name: &str) -> String {
    format!("stargazer.middleware.{name}")
}

/// The binding pattern a middleware named `name` consumes (`#.name`).
pub fn middleware_pattern(name: &str) -> String {
    format!("#.{name}")
}

/// The durable queue a bot for IM platform `im` consumes.
pub fn bot_queue(im: &str) -> String {
    format!("stargazer.bot.{im}")
}

/// Pushes `tag` on top of the stack: it will be processed before the tags already there.
pub fn push_tag(key: &str, tag: &str) -> String {
    format!("{key}.{tag}")
}

/// Builds a key from a source and tags listed in processing order (first processed first).
pub fn key_with_tags(source: &str, tags_in_order: &[&str]) -> String {
    let mut key = source.to_owned();
    for tag in tags_in_order.iter().rev() {
        key.push('.');
        key.push_str(tag);
    }
    key
}

/// Splits off the tag processed next: `("youtube.live_check", Some("delay"))` for
/// `youtube.live_check.delay`; `(key, None)` for a ready key.
pub fn pop_tag(key: &str) -> (&str, Option<&str>) {
    match key.rsplit_once('.') {
        Some((rest, tag)) => (rest, Some(tag)),
        None => (key, None),
    }
}

/// The tag processed next, if any.
pub fn next_tag(key: &str) -> Option<&str> {
    pop_tag(key).1
}

/// Whether the key has no tags left.
pub fn is_ready(key: &str) -> bool {
    !key.contains('.')
}

/// The source word of a key.
pub fn source(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// AMQP topic matching: words are separated by `.`, `*` matches exactly one word and `#`
/// matches zero or more words.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    };
    matches_from(&pattern, &key)
}

fn matches_from(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| matches_from(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((first, key_rest)) => {
                (word == "*" || word == *first) && matches_from(rest, key_rest)
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_stack_processes_last_tag_first() {
        let key = key_with_tags("youtube", &["delay", "live_check"]);
        assert_eq!(key, "youtube.live_check.delay");
        assert_eq!(next_tag(&key), Some("delay"));
        let (rest, tag) = pop_tag(&key);
        assert_eq!((rest, tag), ("youtube.live_check", Some("delay")));
        let (rest, tag) = pop_tag(rest);
        assert_eq!((rest, tag), ("youtube", Some("live_check")));
        assert!(is_ready(rest));
        assert_eq!(pop_tag(rest), ("youtube", None));
        assert_eq!(push_tag("twitter", "translate"), "twitter.translate");
        assert_eq!(source("twitter.translate"), "twitter");
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(topic_matches("*", "youtube"));
        assert!(!topic_matches("*", "youtube.delay"));
        assert!(!topic_matches("*", ""));
        assert!(topic_matches("*.delay", "youtube.delay"));
        assert!(!topic_matches("*.delay", "youtube.live_check.delay"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(topic_matches("#.delay", "youtube.delay"));
        assert!(topic_matches("#.delay", "youtube.live_check.delay"));
        assert!(topic_matches("#.delay", "delay"));
        assert!(!topic_matches("#.delay", "youtube.delay.live_check"));
        assert!(!topic_matches("#.delay", "youtube.delayed"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#", "a.b.c"));
        assert!(topic_matches("a.#.c", "a.c"));
        assert!(topic_matches("a.#.c", "a.b.b.c"));
        assert!(!topic_matches("a.#.c", "a.b.d"));
        assert!(topic_matches("#.#", "a"));
        assert!(topic_matches("*.#", "a"));
        assert!(!topic_matches("*.*.#", "a"));
    }

    #[test]
    fn literal_words_must_match_whole() {
        assert!(topic_matches("youtube", "youtube"));
        assert!(!topic_matches("youtube", "youtube2"));
        assert!(!topic_matches("youtube.live", "youtube"));
    }
}
