//! Turning a tweet into an event: `twitter.tweet` or `twitter.retweet`, ready (`twitter`)
//! or tagged `translate` with `x-translate-fields: ["/fields/text"]` and `x-translate-to`
//! when the entity wants translations.

use chrono::Utc;
use serde_json::{json, Map, Value};
use stargazer_core::contract::control::{TRANSLATE_FIELDS, TRANSLATE_TO};
use stargazer_core::contract::{kind, source, tag};
use stargazer_core::model::Event;
use stargazer_core::routing::key_with_tags;
use uuid::Uuid;

use crate::api::{Includes, Tweet};

/// The link to a tweet.
pub(crate) fn tweet_link(id: &str) -> String {
    format!("https://x.com/i/web/status/{id}")
}

/// The event and routing key for `tweet`.
pub(crate) fn tweet_event(
    entity: Uuid,
    account_id: &str,
    tweet: &Tweet,
    includes: &Includes,
    translate_to: &[String],
) -> (String, Event) {
    let retweet_ref = tweet
        .referenced_tweets
        .iter()
        .find(|r| r.kind == "retweeted");
    // The original when the page expanded it, else only its id.
    let retweeted: Option<Result<&Tweet, &str>> = retweet_ref.map(|r| {
        includes
            .tweets
            .iter()
            .find(|t| t.id == r.id)
            .ok_or(r.id.as_str())
    });
    let kind = if retweet_ref.is_some() {
        kind::TWITTER_RETWEET
    } else {
        kind::TWITTER_TWEET
    };
    let mut fields = Map::new();
    fields.insert("tweet_id".into(), json!(tweet.id));
    fields.insert("link".into(), json!(tweet_link(&tweet.id)));
    let author_id = tweet.author_id.as_deref().unwrap_or(account_id);
    fields.insert("author_id".into(), json!(author_id));
    if let Some(user) = includes.users.iter().find(|u| u.id == author_id) {
        fields.insert("author_username".into(), json!(user.username));
        fields.insert("author_name".into(), json!(user.name));
    }
    // A retweet's own text is truncated ("RT @user: …"); the original has it whole.
    let (text, media_source) = match retweeted {
        Some(Ok(original)) => {
            fields.insert("retweeted_id".into(), json!(original.id));
            fields.insert("retweeted_link".into(), json!(tweet_link(&original.id)));
            if let Some(author) = original.author_id.as_deref() {
                fields.insert("retweeted_author_id".into(), json!(author));
                if let Some(user) = includes.users.iter().find(|u| u.id == author) {
                    fields.insert("retweeted_author_username".into(), json!(user.username));
                    fields.insert("retweeted_author_name".into(), json!(user.name));
                }
            }
            (original.text.clone(), original)
        }
        Some(Err(id)) => {
            fields.insert("retweeted_id".into(), json!(id));
            fields.insert("retweeted_link".into(), json!(tweet_link(id)));
            (tweet.text.clone(), tweet)
        }
        None => (tweet.text.clone(), tweet),
    };
    fields.insert("text".into(), json!(text));
    for reference in &tweet.referenced_tweets {
        match reference.kind.as_str() {
            "quoted" => {
                fields.insert("quoted_id".into(), json!(reference.id));
            }
            "replied_to" => {
                fields.insert("in_reply_to_id".into(), json!(reference.id));
            }
            _ => {}
        }
    }
    let media: Vec<Value> = media_source
        .attachments
        .iter()
        .flat_map(|a| a.media_keys.iter())
        .filter_map(|key| includes.media.iter().find(|m| &m.media_key == key))
        .filter_map(|m| m.url.clone().or_else(|| m.preview_image_url.clone()))
        .map(Value::String)
        .collect();
    fields.insert("media".into(), Value::Array(media));

    let mut control = Map::new();
    let routing_key = if translate_to.is_empty() {
        key_with_tags(source::TWITTER, &[])
    } else {
        control.insert(TRANSLATE_FIELDS.into(), json!(["/fields/text"]));
        control.insert(TRANSLATE_TO.into(), json!(translate_to));
        key_with_tags(source::TWITTER, &[tag::TRANSLATE])
    };
    let event = Event {
        id: Event::make_id(kind, &tweet.id, None),
        kind: kind.to_owned(),
        entity,
        time: tweet.created_at.unwrap_or_else(Utc::now),
        fields,
        control,
    };
    (routing_key, event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Attachments, Media, ReferencedTweet, User};

    fn tweet(id: &str, text: &str) -> Tweet {
        Tweet {
            id: id.into(),
            text: text.into(),
            created_at: None,
            author_id: Some("100".into()),
            referenced_tweets: vec![],
            attachments: None,
        }
    }

    #[test]
    fn plain_tweet_with_media_is_ready() {
        let mut t = tweet("5", "hello");
        t.attachments = Some(Attachments {
            media_keys: vec!["3_1".into(), "7_2".into()],
        });
        let includes = Includes {
            media: vec![
                Media {
                    media_key: "3_1".into(),
                    kind: "photo".into(),
                    url: Some("https://pbs.twimg.com/media/a.jpg".into()),
                    preview_image_url: None,
                },
                Media {
                    media_key: "7_2".into(),
                    kind: "video".into(),
                    url: None,
                    preview_image_url: Some("https://pbs.twimg.com/p.jpg".into()),
                },
            ],
            users: vec![User {
                id: "100".into(),
                username: "vt".into(),
                name: "VT".into(),
            }],
            ..Default::default()
        };
        let (key, event) = tweet_event(Uuid::nil(), "100", &t, &includes, &[]);
        assert_eq!(key, "twitter");
        assert_eq!(event.kind, "twitter.tweet");
        assert_eq!(event.id, Event::make_id("twitter.tweet", "5", None));
        assert_eq!(event.fields["link"], "https://x.com/i/web/status/5");
        assert_eq!(
            event.fields["media"],
            json!([
                "https://pbs.twimg.com/media/a.jpg",
                "https://pbs.twimg.com/p.jpg"
            ])
        );
        assert_eq!(event.fields["author_username"], "vt");
        assert!(event.control.is_empty());
    }

    #[test]
    fn retweet_uses_the_original_text_and_translation_tags() {
        let mut t = tweet("6", "RT @other: long text trunc…");
        t.referenced_tweets = vec![ReferencedTweet {
            kind: "retweeted".into(),
            id: "4".into(),
        }];
        let mut original = tweet("4", "long text in full");
        original.author_id = Some("200".into());
        let includes = Includes {
            tweets: vec![original],
            ..Default::default()
        };
        let (key, event) = tweet_event(Uuid::nil(), "100", &t, &includes, &["en".into()]);
        assert_eq!(key, "twitter.translate");
        assert_eq!(event.kind, "twitter.retweet");
        assert_eq!(event.fields["text"], "long text in full");
        assert_eq!(event.fields["retweeted_id"], "4");
        assert_eq!(event.control["x-translate-fields"], json!(["/fields/text"]));
        assert_eq!(event.control["x-translate-to"], json!(["en"]));
    }
}
