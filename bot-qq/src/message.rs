//! OneBot v11 messages: a [`Message`] is a list of [`Segment`]s (text, image, mention,
//! and whatever else an implementation reports), written in either of the protocol's two
//! formats (`message/array.md`, `message/string.md` of the spec):
//!
//! - the array format, `[{"type": "text", "data": {"text": "…"}}, …]`, which is what the
//!   bot sends: no escaping, so no way for text to turn into a code;
//! - the string format with CQ codes, `text[CQ:at,qq=all]text`, which implementations may
//!   report events in. Text escapes `&` `[` `]` as `&amp;` `&#91;` `&#93;`; parameter
//!   values escape `,` as `&#44;` too. Decoding is one pass, so `&amp;#91;` stays the
//!   literal `&#91;` a person typed, and a `[CQ:at,qq=all]` typed by a person (escaped
//!   by the implementation) stays text.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Whom a mention addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtTarget {
    /// Everybody in the group (`qq=all`, 全体成员).
    All,
    /// One QQ account.
    User(i64),
}

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Plain text.
    Text(String),
    /// An image; `file` is a URL (`https://…`), a `file://` path or `base64://` data.
    Image {
        /// Where the implementation fetches it from.
        file: String,
    },
    /// A mention.
    At(AtTarget),
    /// Any other segment (`face`, `reply`, `record`, …), its data values as strings.
    Other {
        /// The segment's `type`.
        kind: String,
        /// Its `data`.
        data: BTreeMap<String, String>,
    },
}

/// Why a message in array format could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A segment is not an object with a string `type` (and an object `data`).
    #[error("malformed message segment: {0}")]
    Malformed(String),
    /// `message` is neither a string, an array nor a segment object.
    #[error("message must be a string, an array of segments or a segment")]
    WrongType,
}

impl Segment {
    /// The segment from its `type` and string-valued `data`, typed where known.
    fn from_parts(kind: &str, mut data: BTreeMap<String, String>) -> Segment {
        match kind {
            "text" => {
                if let Some(text) = data.remove("text") {
                    return Segment::Text(text);
                }
            }
            "image" => {
                // Implementations report received images with `file` (a name) and `url`;
                // the URL is the useful one to a reader.
                if let Some(file) = data.get("url").or_else(|| data.get("file")) {
                    return Segment::Image { file: file.clone() };
                }
            }
            "at" => match data.get("qq").map(String::as_str) {
                Some("all") => return Segment::At(AtTarget::All),
                Some(qq) => {
                    if let Ok(user) = qq.trim().parse() {
                        return Segment::At(AtTarget::User(user));
                    }
                }
                None => {}
            },
            _ => {}
        }
        Segment::Other {
            kind: kind.to_owned(),
            data,
        }
    }

    /// Reads one array-format segment; data values that are numbers or booleans (some
    /// implementations send `"qq": 123`) become their text.
    pub fn from_json(value: &Value) -> Result<Segment, MessageError> {
        let malformed = || MessageError::Malformed(truncate(&value.to_string()));
        let object = value.as_object().ok_or_else(malformed)?;
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(malformed)?;
        let data = match object.get("data") {
            Some(Value::Object(data)) => data
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            None | Some(Value::Null) => BTreeMap::new(),
            Some(_) => return Err(malformed()),
        };
        Ok(Segment::from_parts(kind, data))
    }

    /// The array-format JSON of the segment.
    pub fn to_json(&self) -> Value {
        match self {
            Segment::Text(text) => json!({"type": "text", "data": {"text": text}}),
            Segment::Image { file } => json!({"type": "image", "data": {"file": file}}),
            Segment::At(AtTarget::All) => json!({"type": "at", "data": {"qq": "all"}}),
            Segment::At(AtTarget::User(user)) => {
                json!({"type": "at", "data": {"qq": user.to_string()}})
            }
            Segment::Other { kind, data } => {
                let data: Map<String, Value> = data
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                json!({"type": kind, "data": data})
            }
        }
    }

    fn write_cq(&self, out: &mut String) {
        let (kind, params): (&str, Vec<(&str, String)>) = match self {
            Segment::Text(text) => {
                escape_into(out, text, false);
                return;
            }
            Segment::Image { file } => ("image", vec![("file", file.clone())]),
            Segment::At(AtTarget::All) => ("at", vec![("qq", "all".to_owned())]),
            Segment::At(AtTarget::User(user)) => ("at", vec![("qq", user.to_string())]),
            Segment::Other { kind, data } => (
                kind,
                data.iter().map(|(k, v)| (k.as_str(), v.clone())).collect(),
            ),
        };
        out.push_str("[CQ:");
        out.push_str(kind);
        for (key, value) in params {
            out.push(',');
            out.push_str(key);
            out.push('=');
            escape_into(out, &value, true);
        }
        out.push(']');
    }
}

/// A message: segments in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The segments.
    pub segments: Vec<Segment>,
}

impl Message {
    /// An empty message, to build on.
    pub fn new() -> Self {
        Self::default()
    }

    /// A message of one text.
    pub fn plain(text: impl Into<String>) -> Self {
        Self::new().text(text)
    }

    /// Appends text (merged into a text segment right before it).
    pub fn text(mut self, text: impl Into<String>) -> Self {
        let text = text.into();
        if text.is_empty() {
            return self;
        }
        match self.segments.last_mut() {
            Some(Segment::Text(last)) => last.push_str(&text),
            _ => self.segments.push(Segment::Text(text)),
        }
        self
    }

    /// Appends an image fetched from `file` (a URL).
    pub fn image(mut self, file: impl Into<String>) -> Self {
        self.segments.push(Segment::Image { file: file.into() });
        self
    }

    /// Appends a mention of `user`.
    pub fn at(mut self, user: i64) -> Self {
        self.segments.push(Segment::At(AtTarget::User(user)));
        self
    }

    /// Appends a mention of everybody in the group.
    pub fn at_all(mut self) -> Self {
        self.segments.push(Segment::At(AtTarget::All));
        self
    }

    /// Whether the message has nothing a reader would see.
    pub fn is_empty(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Text(t) if t.trim().is_empty()))
    }

    /// The array format (what the bot sends).
    pub fn to_json(&self) -> Value {
        Value::Array(self.segments.iter().map(Segment::to_json).collect())
    }

    /// The string format: CQ codes, text and parameters escaped.
    pub fn to_cq(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            segment.write_cq(&mut out);
        }
        out
    }

    /// Parses the string format. An unterminated `[CQ:` and brackets that open no code are
    /// text, as implementations treat them.
    pub fn from_cq(message: &str) -> Message {
        let mut parsed = Message::new();
        let mut rest = message;
        while let Some(start) = rest.find("[CQ:") {
            let Some(len) = rest[start..].find(']') else {
                break;
            };
            parsed = parsed.text(unescape(&rest[..start]));
            let code = &rest[start + "[CQ:".len()..start + len];
            rest = &rest[start + len + 1..];
            let mut parts = code.split(',');
            let kind = parts.next().unwrap_or_default();
            let data = parts
                .map(|part| match part.split_once('=') {
                    Some((key, value)) => (key.to_owned(), unescape(value)),
                    None => (part.to_owned(), String::new()),
                })
                .collect();
            parsed.segments.push(Segment::from_parts(kind, data));
        }
        parsed.text(unescape(rest))
    }

    /// Reads a `message` field in any of the forms the protocol allows: a CQ string, an
    /// array of segments or a single segment object.
    pub fn from_json(value: &Value) -> Result<Message, MessageError> {
        match value {
            Value::String(text) => Ok(Message::from_cq(text)),
            Value::Array(items) => Ok(Message {
                segments: items
                    .iter()
                    .map(Segment::from_json)
                    .collect::<Result<_, _>>()?,
            }),
            Value::Object(_) => Ok(Message {
                segments: vec![Segment::from_json(value)?],
            }),
            _ => Err(MessageError::WrongType),
        }
    }

    /// The text segments, concatenated: what the bot reads commands from (mentions,
    /// images and the like are left out).
    pub fn plain_text(&self) -> String {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn escape_into(out: &mut String, text: &str, in_param: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '[' => out.push_str("&#91;"),
            ']' => out.push_str("&#93;"),
            ',' if in_param => out.push_str("&#44;"),
            c => out.push(c),
        }
    }
}

/// Decodes the four escapes in one pass; any other `&` is kept as it is.
fn unescape(text: &str) -> String {
    const ENTITIES: [(&str, char); 4] = [
        ("&amp;", '&'),
        ("&#91;", '['),
        ("&#93;", ']'),
        ("&#44;", ','),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match ENTITIES.iter().find(|(entity, _)| tail.starts_with(entity)) {
            Some((entity, c)) => {
                out.push(*c);
                rest = &tail[entity.len()..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// At most 200 characters of `text`, for error messages.
fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKY: &[&str] = &[
        "[CQ:at,qq=all]",
        "&#91;CQ:at,qq=all&#93;",
        "a & b, [c] &amp; &#44; &",
        "[CQ:image,file=x",
        "]]][[[,,,&&&",
        "全角［CQ:at］ and emoji 🎉",
        "",
    ];

    #[test]
    fn text_survives_a_round_trip_through_cq_codes() {
        for text in TRICKY {
            let message = Message::plain(*text);
            let encoded = message.to_cq();
            assert!(
                !encoded.contains("[CQ:"),
                "{encoded} must not contain a code"
            );
            assert_eq!(Message::from_cq(&encoded), message, "{text}");
        }
    }

    #[test]
    fn user_typed_codes_stay_text() {
        let encoded = Message::plain("[CQ:at,qq=all] hi").to_cq();
        assert_eq!(encoded, "&#91;CQ:at,qq=all&#93; hi");
        let decoded = Message::from_cq(&encoded);
        assert_eq!(
            decoded.segments,
            vec![Segment::Text("[CQ:at,qq=all] hi".into())]
        );
    }

    #[test]
    fn codes_and_parameters_are_decoded() {
        let decoded = Message::from_cq(
            "&amp;#91; x[CQ:at,qq=10001] y[CQ:image,file=https://i/a?b=1&amp;c=2&#44;3,summary=&#91;图片&#93;][CQ:at,qq=all][CQ:face,id=178]",
        );
        assert_eq!(
            decoded.segments,
            vec![
                Segment::Text("&#91; x".into()),
                Segment::At(AtTarget::User(10001)),
                Segment::Text(" y".into()),
                Segment::Image {
                    file: "https://i/a?b=1&c=2,3".into()
                },
                Segment::At(AtTarget::All),
                Segment::Other {
                    kind: "face".into(),
                    data: [("id".to_owned(), "178".to_owned())].into()
                },
            ]
        );
        assert_eq!(decoded.plain_text(), "&#91; x y");
    }

    #[test]
    fn built_messages_encode_both_ways() {
        let message = Message::new()
            .text("Live: ")
            .text("A, B & [C]")
            .at_all()
            .image("https://img/x.png?a=1,2");
        assert_eq!(
            message.to_cq(),
            "Live: A, B &amp; &#91;C&#93;[CQ:at,qq=all][CQ:image,file=https://img/x.png?a=1&#44;2]"
        );
        assert_eq!(Message::from_cq(&message.to_cq()), message);
        assert_eq!(
            message.to_json(),
            json!([
                {"type": "text", "data": {"text": "Live: A, B & [C]"}},
                {"type": "at", "data": {"qq": "all"}},
                {"type": "image", "data": {"file": "https://img/x.png?a=1,2"}},
            ])
        );
        assert_eq!(Message::from_json(&message.to_json()).unwrap(), message);
    }

    #[test]
    fn array_segments_accept_numbers_and_refuse_junk() {
        let parsed = Message::from_json(&json!([
            {"type": "at", "data": {"qq": 42}},
            {"type": "image", "data": {"file": "abc.image", "url": "https://q/abc"}},
            {"type": "text", "data": {"text": "[CQ:at,qq=all]"}},
        ]))
        .unwrap();
        assert_eq!(
            parsed.segments,
            vec![
                Segment::At(AtTarget::User(42)),
                Segment::Image {
                    file: "https://q/abc".into()
                },
                Segment::Text("[CQ:at,qq=all]".into()),
            ]
        );
        assert!(Message::from_json(&json!([{"data": {}}])).is_err());
        assert!(Message::from_json(&json!(5)).is_err());
        assert!(Message::plain("  ").is_empty());
        assert!(!Message::new().at_all().is_empty());
    }
}
