//! Words in every language the bots speak, as Project Fluent messages.
//!
//! A [`Catalog`] holds one thread-safe bundle per language, parsed once from `.ftl`
//! sources embedded at compile time. The words of notifications, which every bot shows,
//! live here (`delivery/locales/<language>/notifications.ftl`, [`NOTIFICATIONS`]); a
//! bot adds its own (command replies, keyboards) to a catalog of its own.
//!
//! Looking up never fails: a language the catalog does not speak, or a message one
//! language lacks, falls back to [`DEFAULT`]; a message missing everywhere comes out as
//! its id (and is logged), so a slip in a translation shows up as odd text, never as a
//! lost message. Arguments are inserted as given, without Unicode isolation marks (chat
//! clients show them as stray characters): callers escape them for their markup.

use std::borrow::Cow;
use std::sync::LazyLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentError, FluentResource};
use unic_langid::LanguageIdentifier;

pub use fluent_bundle::FluentValue;

/// The language used when a chat's language is unknown or a message is missing in it.
pub const DEFAULT: &str = "en";

/// English words of notifications.
pub const NOTIFICATIONS_EN: &str = include_str!("../locales/en/notifications.ftl");
/// Japanese words of notifications.
pub const NOTIFICATIONS_JA: &str = include_str!("../locales/ja/notifications.ftl");
/// Chinese words of notifications.
pub const NOTIFICATIONS_ZH: &str = include_str!("../locales/zh/notifications.ftl");

/// The words of notifications per language; the first is [`DEFAULT`].
pub const NOTIFICATIONS: [(&str, &[&str]); 3] = [
    ("en", &[NOTIFICATIONS_EN]),
    ("ja", &[NOTIFICATIONS_JA]),
    ("zh", &[NOTIFICATIONS_ZH]),
];

/// The catalog of notification words.
pub fn notifications() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::new(&NOTIFICATIONS));
    &CATALOG
}

/// Messages in several languages, each language from its `.ftl` sources.
pub struct Catalog {
    /// The languages, in the order given; the first is the fallback.
    codes: Vec<&'static str>,
    /// One bundle per entry of `codes`.
    bundles: Vec<FluentBundle<FluentResource>>,
}

impl Catalog {
    /// A catalog of `languages` (code and sources), the first being [`DEFAULT`]. A source
    /// that does not parse keeps the messages that do (the bots' tests refuse such files;
    /// at run time a broken message must not stop a bot).
    pub fn new(languages: &[(&'static str, &[&str])]) -> Self {
        Self {
            codes: languages.iter().map(|(code, _)| *code).collect(),
            bundles: languages
                .iter()
                .map(|(code, sources)| bundle(code, sources))
                .collect(),
        }
    }

    /// The language this catalog speaks for `code` (`ja`, `ja-JP`, `ZH_tw` …), if any.
    pub fn spoken_language(&self, code: &str) -> Option<&'static str> {
        let primary = code.split(['-', '_']).next().unwrap_or(code);
        self.codes
            .iter()
            .copied()
            .find(|spoken| primary.eq_ignore_ascii_case(spoken))
    }

    /// The language to answer a chat reading `code` in: the spoken one, else [`DEFAULT`].
    pub fn language_for(&self, code: &str) -> &'static str {
        self.spoken_language(code).unwrap_or(DEFAULT)
    }

    /// The languages spoken, in order.
    pub fn languages(&self) -> &[&'static str] {
        &self.codes
    }

    /// Message `id` of exactly `language` with `args` and the errors formatting met;
    /// `None` when that language lacks it (no fallback: for checking the sources).
    pub fn format_exact(
        &self,
        language: &str,
        id: &str,
        args: &[(&str, FluentValue<'_>)],
    ) -> Option<(String, Vec<FluentError>)> {
        let index = self.codes.iter().position(|code| *code == language)?;
        format(self.bundles.get(index)?, id, args)
    }

    /// Message `id` in `language` with `args`, falling back to [`DEFAULT`]; `None` when
    /// no language has it (for texts that have a fallback of their own).
    pub fn try_text(
        &self,
        language: &str,
        id: &str,
        args: &[(&str, FluentValue<'_>)],
    ) -> Option<String> {
        let spoken = self.spoken_language(language);
        let found = spoken
            .and_then(|code| self.format_exact(code, id, args))
            .or_else(|| self.format_exact(DEFAULT, id, args));
        let (formatted, errors) = found?;
        if !errors.is_empty() {
            // Fluent still produced text (a missing argument shows as its name).
            tracing::warn!(language, id, ?errors, "a message formatted with errors");
        }
        Some(formatted)
    }

    /// Message `id` in `language` with `args` (`&[("name", name.into())]`), falling back
    /// to [`DEFAULT`]; a message no language has comes out as its id.
    pub fn text(&self, language: &str, id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        self.try_text(language, id, args).unwrap_or_else(|| {
            tracing::warn!(language, id, "no language has this message");
            id.to_owned()
        })
    }
}

/// Builds the bundle of `code` from `sources`.
fn bundle(code: &str, sources: &[&str]) -> FluentBundle<FluentResource> {
    let langid: LanguageIdentifier = code.parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![langid]);
    // Chat clients show Unicode isolation marks around arguments as stray characters.
    bundle.set_use_isolating(false);
    for source in sources {
        let resource = match FluentResource::try_new((*source).to_owned()) {
            Ok(resource) => resource,
            Err((resource, errors)) => {
                tracing::error!(language = code, ?errors, "a locale file does not parse");
                resource
            }
        };
        if let Err(errors) = bundle.add_resource(resource) {
            tracing::error!(language = code, ?errors, "a locale file repeats messages");
        }
    }
    bundle
}

/// Formats message `id` of `bundle`, with the errors formatting met; `None` when the
/// bundle lacks it.
fn format(
    bundle: &FluentBundle<FluentResource>,
    id: &str,
    args: &[(&str, FluentValue<'_>)],
) -> Option<(String, Vec<FluentError>)> {
    let pattern = bundle.get_message(id)?.value()?;
    let mut fluent_args = FluentArgs::with_capacity(args.len());
    for (name, value) in args {
        fluent_args.set(*name, value.clone());
    }
    let mut errors = Vec::new();
    let formatted = bundle.format_pattern(pattern, Some(&fluent_args), &mut errors);
    Some((Cow::into_owned(formatted), errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_missing_in_a_language_comes_from_the_default() {
        let catalog = Catalog::new(&[
            ("en", &["cancelled = Cancelled.\ndelete-yes = Yes"]),
            ("ja", &["cancelled = キャンセル"]),
            ("zh", &["this is not fluent"]),
        ]);
        assert_eq!(catalog.text("ja", "cancelled", &[]), "キャンセル");
        assert_eq!(catalog.text("ja-JP", "delete-yes", &[]), "Yes");
        // A file that does not parse leaves an empty bundle, not a panic.
        assert_eq!(catalog.text("zh", "cancelled", &[]), "Cancelled.");
        assert_eq!(catalog.text("fr", "cancelled", &[]), "Cancelled.");
        assert_eq!(catalog.try_text("ja", "nothing", &[]), None);
        assert_eq!(catalog.text("ja", "nothing", &[]), "nothing");
        assert_eq!(catalog.format_exact("ja", "delete-yes", &[]), None);
        assert_eq!(catalog.language_for("xx"), DEFAULT);
        assert_eq!(catalog.spoken_language("ZH_tw"), Some("zh"));
    }

    #[test]
    fn arguments_are_not_isolated() {
        assert_eq!(
            notifications().text("ja", "notify-live", &[("name", "湊あくあ".into())]),
            "🔴 湊あくあ の配信が始まりました"
        );
    }
}
