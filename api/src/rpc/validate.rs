//! Field checks shared by the methods; each failure is a 422 naming the field.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::types::TaskParams;

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
        && value.len() <= 32
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
    if !value.is_empty() && value.len() <= 64 && value.chars().all(|c| c.is_ascii_graphic()) {
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
    if value.chars().count() <= 256 && !value.chars().any(char::is_control) {
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
        Some((source, what)) if value.len() <= 64 && word(source) && word(what) => Ok(()),
        _ => Err(Error::invalid(
            field,
            format!("`{value}` is not an event kind like `youtube.live`"),
        )),
    }
}

/// Entity names: non-empty, keyed by language codes, including `default_language`.
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
    if !names.contains_key(default_language) {
        return Err(Error::invalid(
            "default_language",
            format!("`{default_language}` has no entry in `names`"),
        ));
    }
    Ok(())
}

/// A task's account id in its platform's format.
pub(crate) fn task(index: usize, params: &TaskParams) -> Result<()> {
    match params {
        TaskParams::Youtube { channel_id } => {
            let ok = channel_id.len() == 24
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
                || user_id.len() > 20
                || !user_id.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(Error::invalid(
                    &format!("tasks[{index}].user_id"),
                    format!("`{user_id}` is not a numeric X user id"),
                ));
            }
        }
    }
    Ok(())
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
    }

    #[test]
    fn names_need_the_default_language() {
        let mut names = BTreeMap::new();
        names.insert("ja".to_owned(), "名前".to_owned());
        assert!(names_ok(&names, "ja"));
        assert!(!names_ok(&names, "en"));
        assert!(!names_ok(&BTreeMap::new(), "en"));
    }

    fn names_ok(n: &BTreeMap<String, String>, d: &str) -> bool {
        names(n, d).is_ok()
    }
}
