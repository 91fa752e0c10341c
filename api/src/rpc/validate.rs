//! Field checks shared by the methods; each failure is a 422 naming the field.
//!
//! Each kind of field has one [`Rule`]: the limits its check enforces and the JSON Schema
//! pattern that says the same thing. `/openapi.json` takes its constraints from these
//! rules (`crate::openapi`), so the document and the checks cannot drift apart; the
//! Schemathesis run (`scripts/schemathesis.sh`) tests that they agree.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::types::TaskParams;

/// The constraints of one kind of string field.
pub(crate) struct Rule {
    /// A JSON Schema (ECMA-262) pattern, anchored, matching exactly the accepted values.
    pub(crate) pattern: &'static str,
    /// Fewest characters.
    pub(crate) min_length: usize,
    /// Most characters.
    pub(crate) max_length: usize,
}

impl Rule {
    /// The JSON Schema keywords of this rule.
    pub(crate) fn schema(&self) -> Value {
        let mut schema = json!({
            "type": "string",
            "pattern": self.pattern,
            "maxLength": self.max_length,
        });
        if self.min_length > 0 {
            schema["minLength"] = json!(self.min_length);
        }
        schema
    }
}

/// Longest IM platform name.
pub(crate) const IM_MAX: usize = 32;
/// Longest chat id.
pub(crate) const CHAT_ID_MAX: usize = 64;
/// Longest display or entity name, in characters.
pub(crate) const NAME_MAX: usize = 256;
/// Longest event kind.
pub(crate) const KIND_MAX: usize = 64;
/// Most kinds one subscription may filter on.
pub(crate) const MAX_KINDS: usize = 32;
/// Length of a YouTube channel id (`UC` + 22).
pub(crate) const CHANNEL_ID_LEN: usize = 24;
/// Longest numeric X user id.
pub(crate) const X_USER_ID_MAX: usize = 20;
/// Longest numeric Twitch or Bilibili id (both fit in 64 bits).
pub(crate) const NUMERIC_ID_MAX: usize = 20;
/// Longest subscription mention.
pub(crate) const MENTION_MAX: usize = 64;

/// `telegram`: lowercase letters, digits, `_`.
pub(crate) const IM: Rule = Rule {
    pattern: "^[a-z0-9_]+$",
    min_length: 1,
    max_length: IM_MAX,
};
/// Printable ASCII without spaces.
pub(crate) const CHAT_ID: Rule = Rule {
    pattern: "^[!-~]+$",
    min_length: 1,
    max_length: CHAT_ID_MAX,
};
/// Anything without control characters (Unicode category Cc), possibly empty.
pub(crate) const DISPLAY_NAME: Rule = Rule {
    pattern: "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
    min_length: 0,
    max_length: NAME_MAX,
};
/// A display name with at least one character that is not white space.
pub(crate) const ENTITY_NAME: Rule = Rule {
    pattern: "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$",
    min_length: 1,
    max_length: NAME_MAX,
};
/// `en`, `zh-Hant`: 2–3 lowercase letters, optionally `-` and 2–8 letters or digits.
pub(crate) const LANGUAGE: Rule = Rule {
    pattern: "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$",
    min_length: 2,
    max_length: 12,
};
/// `youtube.live`: two words of lowercase letters and `_`.
pub(crate) const KIND: Rule = Rule {
    pattern: "^[a-z_]+\\.[a-z_]+$",
    min_length: 3,
    max_length: KIND_MAX,
};
/// `UC` and 22 letters, digits, `_` or `-`.
pub(crate) const CHANNEL_ID: Rule = Rule {
    pattern: "^UC[A-Za-z0-9_-]{22}$",
    min_length: CHANNEL_ID_LEN,
    max_length: CHANNEL_ID_LEN,
};
/// Decimal digits.
pub(crate) const X_USER_ID: Rule = Rule {
    pattern: "^[0-9]+$",
    min_length: 1,
    max_length: X_USER_ID_MAX,
};
/// Decimal digits, not starting with 0 (Helix user ids).
pub(crate) const TWITCH_ID: Rule = Rule {
    pattern: "^[1-9][0-9]*$",
    min_length: 1,
    max_length: NUMERIC_ID_MAX,
};
/// Decimal digits, not starting with 0 (Bilibili `mid`).
pub(crate) const BILIBILI_UID: Rule = Rule {
    pattern: "^[1-9][0-9]*$",
    min_length: 1,
    max_length: NUMERIC_ID_MAX,
};

/// A subscription's mention (a Discord role id): ASCII letters, digits, `_`, `-`, `:`;
/// empty removes it.
pub(crate) const MENTION: Rule = Rule {
    pattern: "^[A-Za-z0-9_:-]*$",
    min_length: 0,
    max_length: MENTION_MAX,
};

/// Every time zone name [`timezone`] accepts, for the schema's `enum`.
pub(crate) fn timezone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

/// An ISO-639 language code, optionally with a region or script (`en`, `zh-Hant`).
pub(crate) fn language(field: &str, value: &str) -> Result<()> {
    let (code, rest) = value.split_once('-').unwrap_or((value, ""));
    let code_ok = (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase());
    let rest_ok = rest.is_empty()
        || ((2..=8).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if code_ok && rest_ok && !value.ends_with('-') {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{value}` is not a language code like `en` or `zh-Hant`"),
        ))
    }
}

/// An IM platform name: lowercase letters, digits, `_`; at most 32.
pub(crate) fn im(field: &str, value: &str) -> Result<()> {
    if !value.is_empty()
        && value.len() <= IM_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{value}` is not a platform name like `telegram`"),
        ))
    }
}

/// A chat id: 1 to 64 printable characters without spaces.
pub(crate) fn chat_id(field: &str, value: &str) -> Result<()> {
    if !value.is_empty()
        && value.len() <= CHAT_ID_MAX
        && value.chars().all(|c| c.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1 to 64 printable characters without spaces",
        ))
    }
}

/// A display name: at most 256 characters, no control characters.
pub(crate) fn display_name(field: &str, value: &str) -> Result<()> {
    if value.chars().count() <= NAME_MAX && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be at most 256 characters without control characters",
        ))
    }
}

/// An IANA time zone name known to the tz database (`Asia/Tokyo`, `UTC`).
pub(crate) fn timezone(field: &str, value: &str) -> Result<()> {
    match value.parse::<chrono_tz::Tz>() {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::invalid(
            field,
            format!("`{value}` is not an IANA time zone name like `Asia/Tokyo`"),
        )),
    }
}

/// An event kind, `<source>.<what>` in lowercase (`youtube.live`).
pub(crate) fn kind(field: &str, value: &str) -> Result<()> {
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    match value.split_once('.') {
        Some((source, what)) if value.len() <= KIND_MAX && word(source) && word(what) => Ok(()),
        _ => Err(Error::invalid(
            field,
            format!("`{value}` is not an event kind like `youtube.live`"),
        )),
    }
}

/// A subscription's mention as `updateSubscription` takes it: 1 to 64 ASCII letters,
/// digits, `_`, `-` or `:`, or `""` (remove it).
pub(crate) fn mention(field: &str, value: &str) -> Result<()> {
    if value.len() <= MENTION_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "must be 1 to {MENTION_MAX} ASCII letters, digits, `_`, `-` or `:` \
                 (a role id like `123456789012345678`), or `\"\"` to remove it"
            ),
        ))
    }
}

/// Reminder leads, minutes before a stream: each one of
/// [`REMINDER_LEAD_CHOICES_MINUTES`](stargazer_core::contract::REMINDER_LEAD_CHOICES_MINUTES),
/// none twice. Returns them sorted (the stored form); an empty list means the default lead.
pub(crate) fn reminder_leads(field: &str, leads: &[u32]) -> Result<Vec<u32>> {
    let choices = stargazer_core::contract::REMINDER_LEAD_CHOICES_MINUTES;
    for (index, lead) in leads.iter().enumerate() {
        if !choices.contains(lead) {
            let offered: Vec<String> = choices.iter().map(u32::to_string).collect();
            return Err(Error::invalid(
                &format!("{field}[{index}]"),
                format!(
                    "{lead} is not a reminder lead on offer; pick minutes among {}",
                    offered.join(", ")
                ),
            ));
        }
        if leads[..index].contains(lead) {
            return Err(Error::invalid(
                &format!("{field}[{index}]"),
                format!("{lead} is listed twice"),
            ));
        }
    }
    let mut sorted = leads.to_vec();
    sorted.sort_unstable();
    Ok(sorted)
}

/// Entity names: at least one, keyed by language codes, none blank. `default_language`
/// need not have one: readers fall back to any name (`Entity::name_in`), and a rule
/// linking two fields could not be stated in the schema.
pub(crate) fn names(names: &BTreeMap<String, String>, default_language: &str) -> Result<()> {
    language("default_language", default_language)?;
    if names.is_empty() {
        return Err(Error::invalid(
            "names",
            "must name the entity in at least one language",
        ));
    }
    for (lang, name) in names {
        language(&format!("names.{lang}"), lang)?;
        if name.trim().is_empty() {
            return Err(Error::invalid(
                &format!("names.{lang}"),
                "must not be empty",
            ));
        }
        display_name(&format!("names.{lang}"), name)?;
    }
    Ok(())
}

/// A task's account id in its platform's format.
pub(crate) fn task(index: usize, params: &TaskParams) -> Result<()> {
    match params {
        TaskParams::Youtube { channel_id } => {
            let ok = channel_id.len() == CHANNEL_ID_LEN
                && channel_id.starts_with("UC")
                && channel_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(Error::invalid(
                    &format!("tasks[{index}].channel_id"),
                    format!("`{channel_id}` is not a YouTube channel id (UC + 22 characters)"),
                ));
            }
        }
        TaskParams::Twitter { user_id } => {
            if user_id.is_empty()
                || user_id.len() > X_USER_ID_MAX
                || !user_id.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(Error::invalid(
                    &format!("tasks[{index}].user_id"),
                    format!("`{user_id}` is not a numeric X user id"),
                ));
            }
        }
        TaskParams::Twitch { broadcaster_id } => {
            if !positive_number(broadcaster_id) {
                return Err(Error::invalid(
                    &format!("tasks[{index}].broadcaster_id"),
                    format!(
                        "`{broadcaster_id}` is not a numeric Twitch user id \
                         (`stargazer admin entity add --twitch LOGIN` looks it up)"
                    ),
                ));
            }
        }
        TaskParams::Bilibili { uid } => {
            if !positive_number(uid) {
                return Err(Error::invalid(
                    &format!("tasks[{index}].uid"),
                    format!("`{uid}` is not a numeric Bilibili uid"),
                ));
            }
        }
    }
    Ok(())
}

/// Decimal digits without a leading zero, at most [`NUMERIC_ID_MAX`] of them.
fn positive_number(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= NUMERIC_ID_MAX
        && !id.starts_with('0')
        && id.bytes().all(|b| b.is_ascii_digit())
}

/// Every task valid and no account listed twice.
pub(crate) fn tasks(tasks: &[TaskParams]) -> Result<()> {
    for (index, params) in tasks.iter().enumerate() {
        task(index, params)?;
        if tasks[..index].contains(params) {
            return Err(Error::invalid(
                &format!("tasks[{index}]"),
                "lists the same account twice",
            ));
        }
    }
    Ok(())
}

/// Translation target languages.
pub(crate) fn languages(field: &str, values: &[String]) -> Result<()> {
    for (index, value) in values.iter().enumerate() {
        language(&format!("{field}[{index}]"), value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_zones() {
        assert!(language("l", "en").is_ok());
        assert!(language("l", "zh-Hant").is_ok());
        assert!(language("l", "EN").is_err());
        assert!(language("l", "e").is_err());
        assert!(language("l", "en-").is_err());
        assert!(timezone("t", "Asia/Tokyo").is_ok());
        assert!(timezone("t", "UTC").is_ok());
        assert!(timezone("t", "America/Argentina/Buenos_Aires").is_ok());
        assert!(timezone("t", "Etc/GMT+9").is_ok());
        assert!(timezone("t", "asia tokyo").is_err());
        assert!(timezone("t", "Mars/Olympus_Mons").is_err());
        assert!(timezone("t", "Asia//Tokyo").is_err());
    }

    #[test]
    fn kinds_and_tasks() {
        assert!(kind("k", "youtube.live").is_ok());
        assert!(kind("k", "youtube").is_err());
        assert!(kind("k", "YouTube.live").is_err());
        let yt = TaskParams::Youtube {
            channel_id: "UCabcdefghijklmnopqrstuv".into(),
        };
        assert!(task(0, &yt).is_ok());
        let bad = TaskParams::Youtube {
            channel_id: "UC1".into(),
        };
        let err = task(3, &bad).unwrap_err().to_string();
        assert!(err.contains("tasks[3].channel_id"), "{err}");
        assert!(tasks(&[yt.clone(), yt]).is_err());
        assert!(task(
            0,
            &TaskParams::Twitter {
                user_id: "12a".into()
            }
        )
        .is_err());
        let twitch = |id: &str| TaskParams::Twitch {
            broadcaster_id: id.into(),
        };
        assert!(task(0, &twitch("141981764")).is_ok());
        for bad in ["", "0", "012", "pekora", &"9".repeat(21)] {
            let err = task(1, &twitch(bad)).unwrap_err().to_string();
            assert!(err.contains("tasks[1].broadcaster_id"), "{bad}: {err}");
        }
        let bilibili = |uid: &str| TaskParams::Bilibili { uid: uid.into() };
        assert!(task(0, &bilibili("1950658")).is_ok());
        let err = task(2, &bilibili("-1")).unwrap_err().to_string();
        assert!(err.contains("tasks[2].uid"), "{err}");
    }

    #[test]
    fn mentions() {
        for ok in [
            "",
            "123456789012345678",
            "role:everyone",
            "a-b_c",
            &"9".repeat(64),
        ] {
            assert!(mention("m", ok).is_ok(), "{ok}");
        }
        for bad in ["<@&1>", "@here", "a b", "ロール", &"9".repeat(65)] {
            let err = mention("mention", bad).unwrap_err().to_string();
            assert!(err.contains("field `mention`"), "{bad}: {err}");
        }
    }

    #[test]
    fn reminder_leads_are_offered_unique_and_sorted() {
        assert_eq!(reminder_leads("r", &[60, 5]).unwrap(), vec![5, 60]);
        assert_eq!(reminder_leads("r", &[]).unwrap(), Vec::<u32>::new());
        let err = reminder_leads("r", &[5, 10]).unwrap_err().to_string();
        assert!(
            err.contains("r[1]") && err.contains("5, 15, 30, 60"),
            "{err}"
        );
        let err = reminder_leads("r", &[15, 30, 15]).unwrap_err().to_string();
        assert!(err.contains("r[2]") && err.contains("twice"), "{err}");
    }

    #[test]
    fn names_need_one_non_blank_name() {
        let mut names = BTreeMap::new();
        names.insert("ja".to_owned(), "名前".to_owned());
        assert!(names_ok(&names, "ja"));
        assert!(names_ok(&names, "en"));
        assert!(!names_ok(&names, "EN"));
        assert!(!names_ok(&BTreeMap::new(), "en"));
        names.insert("en".to_owned(), " \u{3000}".to_owned());
        assert!(!names_ok(&names, "ja"));
    }

    fn names_ok(n: &BTreeMap<String, String>, d: &str) -> bool {
        names(n, d).is_ok()
    }
}
