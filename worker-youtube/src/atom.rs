//! Parsing of the Atom documents YouTube sends: WebSub notifications (one `entry` per
//! new or edited video, or an `at:deleted-entry` tombstone) and the public channel feed
//! polled as fallback (same entries, more of them).
//!
//! Elements are matched by namespace URI and local name, not by prefix, so a document
//! that binds the same namespaces to other prefixes parses alike.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

const ATOM_NS: &[u8] = b"http://www.w3.org/2005/Atom";
const YT_NS: &[u8] = b"http://www.youtube.com/xml/schemas/2015";
const TOMBSTONE_NS: &[u8] = b"http://purl.org/atompub/tombstones/1.0";

/// Why a document could not be parsed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AtomError {
    /// The body is not UTF-8.
    #[error("feed is not UTF-8: {0}")]
    Encoding(#[from] std::str::Utf8Error),
    /// The body is not well-formed XML.
    #[error("malformed XML at byte {position}: {reason}")]
    Xml {
        /// Byte offset where the reader stopped.
        position: u64,
        /// The reader's message.
        reason: String,
    },
    /// The root element is not an Atom `feed`.
    #[error("not an Atom feed (root element `{0}`)")]
    NotAFeed(String),
    /// An entry lacks a required element.
    #[error("entry {index} has no `{element}`")]
    MissingElement {
        /// Zero-based position of the entry in the document.
        index: usize,
        /// The element that is missing.
        element: &'static str,
    },
    /// A tombstone's `ref` is not a YouTube video reference.
    #[error("tombstone ref `{0}` is not `yt:video:<id>`")]
    BadTombstoneRef(String),
}

/// One video entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeedEntry {
    /// `yt:videoId`.
    pub video_id: String,
    /// `yt:channelId`.
    pub channel_id: String,
    /// `title` (may be empty).
    pub title: String,
    /// The `alternate` link's `href`, if present.
    pub link: Option<String>,
    /// `published`, as sent (RFC 3339).
    pub published: Option<String>,
    /// `updated`, as sent; changes on every edit, so it keys "already processed".
    pub updated: Option<String>,
}

/// One deleted video (`at:deleted-entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tombstone {
    /// The video id from `ref="yt:video:<id>"`.
    pub video_id: String,
    /// `when`, as sent.
    pub when: Option<String>,
    /// The channel from `at:by/uri`, when present.
    pub channel_id: Option<String>,
}

/// Everything one document carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Feed {
    /// Video entries, in document order.
    pub entries: Vec<FeedEntry>,
    /// Tombstones, in document order.
    pub deleted: Vec<Tombstone>,
}

#[derive(Default)]
struct EntryBuilder {
    video_id: Option<String>,
    channel_id: Option<String>,
    title: String,
    link: Option<String>,
    published: Option<String>,
    updated: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    VideoId,
    ChannelId,
    Title,
    Published,
    Updated,
    ByUri,
}

enum Context {
    Entry(EntryBuilder),
    Tombstone(Tombstone),
}

/// Parses a notification body or a channel feed.
pub(crate) fn parse_feed(body: &[u8]) -> Result<Feed, AtomError> {
    let text = std::str::from_utf8(body)?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(true);

    let mut feed = Feed::default();
    let mut depth = 0usize;
    let mut root_seen = false;
    let mut context: Option<Context> = None;
    // Depth at which the current entry/tombstone started, so nested elements with the same
    // names (`author/name`, `media:group/media:title`) do not overwrite entry fields.
    let mut context_depth = 0usize;
    let mut field: Option<Field> = None;
    let mut entry_index = 0usize;

    loop {
        // The namespace borrows the reader; copy it so the reader can report positions.
        let step = match reader.read_resolved_event() {
            Ok((ns, event)) => Ok((namespace(&ns).to_vec(), event)),
            Err(err) => Err(err.to_string()),
        };
        let (ns, event) = step.map_err(|reason| AtomError::Xml {
            position: reader.buffer_position(),
            reason,
        })?;
        let ns = ns.as_slice();
        match event {
            Event::Start(start) => {
                depth += 1;
                if !root_seen {
                    root_seen = true;
                    check_root(ns, &start)?;
                    continue;
                }
                open(
                    ns,
                    &start,
                    depth,
                    &mut context,
                    &mut context_depth,
                    &mut field,
                    &reader,
                )?;
            }
            Event::Empty(start) => {
                if !root_seen {
                    // `<feed/>`: a valid, empty document.
                    check_root(ns, &start)?;
                    return Ok(feed);
                }
                // An empty element opens and closes at once: handle links and empty
                // tombstones, never leave a field selected.
                open(
                    ns,
                    &start,
                    depth + 1,
                    &mut context,
                    &mut context_depth,
                    &mut field,
                    &reader,
                )?;
                field = None;
                if context_depth == depth + 1 {
                    close(&mut context, &mut feed, &mut entry_index)?;
                }
            }
            Event::Text(text) => {
                if let (Some(f), Some(ctx)) = (field, context.as_mut()) {
                    let value = text.unescape().map_err(|err| AtomError::Xml {
                        position: reader.buffer_position(),
                        reason: err.to_string(),
                    })?;
                    store(ctx, f, &value);
                }
            }
            Event::CData(data) => {
                if let (Some(f), Some(ctx)) = (field, context.as_mut()) {
                    let value = String::from_utf8_lossy(&data.into_inner()).into_owned();
                    store(ctx, f, &value);
                }
            }
            Event::End(_) => {
                field = None;
                if context.is_some() && depth == context_depth {
                    close(&mut context, &mut feed, &mut entry_index)?;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => {
                if depth > 0 {
                    return Err(AtomError::Xml {
                        position: reader.buffer_position(),
                        reason: format!("document ends with {depth} element(s) still open"),
                    });
                }
                break;
            }
            _ => {}
        }
    }
    if !root_seen {
        return Err(AtomError::NotAFeed(String::new()));
    }
    Ok(feed)
}

fn namespace<'a>(ns: &'a ResolveResult<'_>) -> &'a [u8] {
    match ns {
        ResolveResult::Bound(ns) => ns.as_ref(),
        _ => b"",
    }
}

fn check_root(ns: &[u8], start: &BytesStart<'_>) -> Result<(), AtomError> {
    let local = start.local_name();
    if ns == ATOM_NS && local.as_ref() == b"feed" {
        Ok(())
    } else {
        Err(AtomError::NotAFeed(
            String::from_utf8_lossy(start.name().as_ref()).into_owned(),
        ))
    }
}

fn attribute(
    start: &BytesStart<'_>,
    name: &[u8],
    reader: &NsReader<&[u8]>,
) -> Result<Option<String>, AtomError> {
    let attr = start
        .try_get_attribute(name)
        .map_err(|err| AtomError::Xml {
            position: reader.buffer_position(),
            reason: err.to_string(),
        })?;
    match attr {
        Some(attr) => attr
            .unescape_value()
            .map(|v| Some(v.into_owned()))
            .map_err(|err| AtomError::Xml {
                position: reader.buffer_position(),
                reason: err.to_string(),
            }),
        None => Ok(None),
    }
}

fn open(
    ns: &[u8],
    start: &BytesStart<'_>,
    depth: usize,
    context: &mut Option<Context>,
    context_depth: &mut usize,
    field: &mut Option<Field>,
    reader: &NsReader<&[u8]>,
) -> Result<(), AtomError> {
    let local = start.local_name();
    let local = local.as_ref();
    match context {
        None => {
            if ns == ATOM_NS && local == b"entry" {
                *context = Some(Context::Entry(EntryBuilder::default()));
                *context_depth = depth;
            } else if ns == TOMBSTONE_NS && local == b"deleted-entry" {
                let reference = attribute(start, b"ref", reader)?.unwrap_or_default();
                let video_id = reference
                    .strip_prefix("yt:video:")
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| AtomError::BadTombstoneRef(reference.clone()))?
                    .to_owned();
                *context = Some(Context::Tombstone(Tombstone {
                    video_id,
                    when: attribute(start, b"when", reader)?,
                    channel_id: None,
                }));
                *context_depth = depth;
            }
        }
        Some(Context::Entry(entry)) => {
            // Only direct children of the entry carry its fields.
            if depth != *context_depth + 1 {
                return Ok(());
            }
            *field = match (ns, local) {
                (YT_NS, b"videoId") => Some(Field::VideoId),
                (YT_NS, b"channelId") => Some(Field::ChannelId),
                (ATOM_NS, b"title") => Some(Field::Title),
                (ATOM_NS, b"published") => Some(Field::Published),
                (ATOM_NS, b"updated") => Some(Field::Updated),
                (ATOM_NS, b"link") => {
                    let rel = attribute(start, b"rel", reader)?;
                    if rel.as_deref().is_none_or(|rel| rel == "alternate") {
                        entry.link = attribute(start, b"href", reader)?;
                    }
                    None
                }
                _ => None,
            };
        }
        Some(Context::Tombstone(_)) => {
            // `at:by/uri` names the channel; it sits two levels below the tombstone.
            *field = (ns == ATOM_NS && local == b"uri" && depth == *context_depth + 2)
                .then_some(Field::ByUri);
        }
    }
    Ok(())
}

fn store(context: &mut Context, field: Field, value: &str) {
    match context {
        Context::Entry(entry) => {
            let value = value.trim().to_owned();
            match field {
                Field::VideoId => entry.video_id = Some(value),
                Field::ChannelId => entry.channel_id = Some(value),
                Field::Title => entry.title.push_str(&value),
                Field::Published => entry.published = Some(value),
                Field::Updated => entry.updated = Some(value),
                Field::ByUri => {}
            }
        }
        Context::Tombstone(tombstone) => {
            if field == Field::ByUri {
                tombstone.channel_id = value
                    .trim()
                    .rsplit_once("/channel/")
                    .map(|(_, id)| id.to_owned())
                    .filter(|id| !id.is_empty());
            }
        }
    }
}

fn close(
    context: &mut Option<Context>,
    feed: &mut Feed,
    entry_index: &mut usize,
) -> Result<(), AtomError> {
    match context.take() {
        Some(Context::Entry(entry)) => {
            let index = *entry_index;
            *entry_index += 1;
            let video_id =
                entry
                    .video_id
                    .filter(|id| !id.is_empty())
                    .ok_or(AtomError::MissingElement {
                        index,
                        element: "yt:videoId",
                    })?;
            let channel_id =
                entry
                    .channel_id
                    .filter(|id| !id.is_empty())
                    .ok_or(AtomError::MissingElement {
                        index,
                        element: "yt:channelId",
                    })?;
            feed.entries.push(FeedEntry {
                video_id,
                channel_id,
                title: entry.title,
                link: entry.link,
                published: entry.published,
                updated: entry.updated,
            });
        }
        Some(Context::Tombstone(tombstone)) => feed.deleted.push(tombstone),
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015" xmlns="http://www.w3.org/2005/Atom">
  <link rel="hub" href="https://pubsubhubbub.appspot.com"/>
  <link rel="self" href="https://www.youtube.com/xml/feeds/videos.xml?channel_id=UCabc"/>
  <title>YouTube video feed</title>
  <updated>2015-04-01T19:05:24.552394234+00:00</updated>
  <entry>
    <id>yt:video:VID123</id>
    <yt:videoId>VID123</yt:videoId>
    <yt:channelId>UCabc</yt:channelId>
    <title>Stream &amp; chat</title>
    <link rel="alternate" href="http://www.youtube.com/watch?v=VID123"/>
    <author>
     <name>Channel title</name>
     <uri>http://www.youtube.com/channel/UCabc</uri>
    </author>
    <published>2015-03-06T21:40:57+00:00</published>
    <updated>2015-03-09T19:05:24.552394234+00:00</updated>
  </entry>
</feed>"#;

    const TOMBSTONE: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:at="http://purl.org/atompub/tombstones/1.0" xmlns="http://www.w3.org/2005/Atom">
  <at:deleted-entry ref="yt:video:VID123" when="2015-03-09T19:05:24.552394234+00:00">
    <link href="https://www.youtube.com/watch?v=VID123"/>
    <at:by>
     <name>Channel title</name>
     <uri>https://www.youtube.com/channel/UCabc</uri>
    </at:by>
  </at:deleted-entry>
</feed>"#;

    #[test]
    fn parses_a_push_entry() {
        let feed = parse_feed(PUSH.as_bytes()).unwrap();
        assert!(feed.deleted.is_empty());
        assert_eq!(
            feed.entries,
            vec![FeedEntry {
                video_id: "VID123".into(),
                channel_id: "UCabc".into(),
                title: "Stream & chat".into(),
                link: Some("http://www.youtube.com/watch?v=VID123".into()),
                published: Some("2015-03-06T21:40:57+00:00".into()),
                updated: Some("2015-03-09T19:05:24.552394234+00:00".into()),
            }]
        );
    }

    #[test]
    fn parses_a_tombstone() {
        let feed = parse_feed(TOMBSTONE.as_bytes()).unwrap();
        assert!(feed.entries.is_empty());
        assert_eq!(
            feed.deleted,
            vec![Tombstone {
                video_id: "VID123".into(),
                when: Some("2015-03-09T19:05:24.552394234+00:00".into()),
                channel_id: Some("UCabc".into()),
            }]
        );
    }

    #[test]
    fn other_prefixes_for_the_same_namespaces_parse_alike() {
        let doc = r#"<a:feed xmlns:a="http://www.w3.org/2005/Atom" xmlns:y="http://www.youtube.com/xml/schemas/2015">
          <a:entry><y:videoId>V</y:videoId><y:channelId>C</y:channelId><a:title>t</a:title></a:entry>
        </a:feed>"#;
        let feed = parse_feed(doc.as_bytes()).unwrap();
        assert_eq!(feed.entries[0].video_id, "V");
        assert_eq!(feed.entries[0].channel_id, "C");
        assert_eq!(feed.entries[0].updated, None);
    }

    #[test]
    fn nested_titles_do_not_overwrite_the_entry_title() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:yt="http://www.youtube.com/xml/schemas/2015" xmlns:media="http://search.yahoo.com/mrss/">
          <entry><yt:videoId>V</yt:videoId><yt:channelId>C</yt:channelId><title>real</title>
            <media:group><media:title>media title</media:title><title>nested</title></media:group>
          </entry></feed>"#;
        let feed = parse_feed(doc.as_bytes()).unwrap();
        assert_eq!(feed.entries[0].title, "real");
    }

    #[test]
    fn rejects_bad_documents_precisely() {
        assert!(matches!(
            parse_feed(b"<rss></rss>"),
            Err(AtomError::NotAFeed(name)) if name == "rss"
        ));
        assert!(matches!(
            parse_feed(b"<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry>"),
            Err(AtomError::Xml { .. })
        ));
        assert!(matches!(
            parse_feed(b"\xff\xfe"),
            Err(AtomError::Encoding(_))
        ));
        let missing =
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>x</title></entry></feed>"#;
        assert!(matches!(
            parse_feed(missing.as_bytes()),
            Err(AtomError::MissingElement {
                index: 0,
                element: "yt:videoId"
            })
        ));
        let bad_ref = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:at="http://purl.org/atompub/tombstones/1.0"><at:deleted-entry ref="tag:other"/></feed>"#;
        assert!(matches!(
            parse_feed(bad_ref.as_bytes()),
            Err(AtomError::BadTombstoneRef(_))
        ));
        assert!(parse_feed(b"").is_err());
        assert_eq!(
            parse_feed(br#"<feed xmlns="http://www.w3.org/2005/Atom"/>"#).unwrap(),
            Feed::default()
        );
    }
}
