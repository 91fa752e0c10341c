//! The bot's words in every language it speaks, as Project Fluent messages.
//!
//! Each language has the bot's `bot-telegram/locales/<language>/commands.ftl` (command
//! replies, keyboards, refusals, errors, the command menu) and the notification words
//! every bot shares (`delivery/locales/<language>/notifications.ftl`, the texts of
//! delivered events), embedded at compile time and parsed once into a catalog
//! ([`stargazer_delivery::i18n::Catalog`]). [`LANGUAGES`] is the one list of languages the bot
//! speaks; `/lang` accepts exactly these.
//!
//! [`text`] never fails: a language the bot does not speak, or a message one language
//! lacks, falls back to English; a message missing everywhere comes out as its id (and is
//! logged), so a slip in a translation shows up as odd text, never as a lost reply.
//! Arguments are inserted as given: callers escape them for Telegram HTML where the
//! message is HTML, as they did before the texts moved here.

use std::sync::LazyLock;

use stargazer_delivery::i18n::{Catalog, NOTIFICATIONS_EN, NOTIFICATIONS_JA, NOTIFICATIONS_ZH};

pub(crate) use stargazer_delivery::i18n::{FluentValue, DEFAULT};

/// The languages the bot speaks, each with its `.ftl` sources: its own command texts
/// and the notification words every bot shares. The first is [`DEFAULT`].
pub(crate) const LANGUAGES: [(&str, &[&str]); 3] = [
    (
        "en",
        &[include_str!("../locales/en/commands.ftl"), NOTIFICATIONS_EN],
    ),
    (
        "ja",
        &[include_str!("../locales/ja/commands.ftl"), NOTIFICATIONS_JA],
    ),
    (
        "zh",
        &[include_str!("../locales/zh/commands.ftl"), NOTIFICATIONS_ZH],
    ),
];

/// The bot's catalog, parsed once.
static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::new(&LANGUAGES));

/// The bot's catalog.
pub(crate) fn catalog() -> &'static Catalog {
    &CATALOG
}

/// The language the bot speaks for `code` (`ja`, `ja-JP`, `ZH_tw` …), if any.
pub(crate) fn spoken_language(code: &str) -> Option<&'static str> {
    CATALOG.spoken_language(code)
}

/// The language to answer a chat reading `code` in: the spoken one, else [`DEFAULT`].
pub(crate) fn language_for(code: &str) -> &'static str {
    CATALOG.language_for(code)
}

/// The spoken languages with their own names: `en (English), ja (日本語), zh (中文)`.
pub(crate) fn spoken_languages() -> String {
    LANGUAGES
        .iter()
        .map(|(code, _)| format!("{code} ({})", text(code, "language-name", &[])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Message `id` in `language` with `args`, falling back to English; `None` when no
/// language has it (for texts that have a fallback of their own).
pub(crate) fn try_text(
    language: &str,
    id: &str,
    args: &[(&str, FluentValue<'_>)],
) -> Option<String> {
    CATALOG.try_text(language, id, args)
}

/// Message `id` in `language` with `args` (`&[("name", name.into())]`), falling back to
/// English; a message no language has comes out as its id.
pub(crate) fn text(language: &str, id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
    CATALOG.text(language, id, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluent_syntax::ast;

    /// Ids of the messages of `code`, and every parse error of its files.
    fn messages(code: &str) -> (Vec<String>, Vec<String>) {
        let (_, sources) = LANGUAGES.iter().find(|(c, _)| *c == code).unwrap();
        let mut ids = Vec::new();
        let mut errors = Vec::new();
        for source in *sources {
            let resource = match fluent_syntax::parser::parse(*source) {
                Ok(resource) => resource,
                Err((resource, errs)) => {
                    errors.extend(errs.iter().map(|e| format!("{code}: {e:?}")));
                    resource
                }
            };
            for entry in resource.body {
                match entry {
                    ast::Entry::Message(message) => ids.push(message.id.name.to_owned()),
                    ast::Entry::Junk { content } => errors.push(format!("{code}: junk {content}")),
                    _ => {}
                }
            }
        }
        (ids, errors)
    }

    /// Every message with the arguments the code passes it (sample values; counts are
    /// tried as one and as many).
    const CALLS: &[(&str, &[&str])] = &[
        ("language-name", &[]),
        ("help-intro", &[]),
        ("command-start", &[]),
        ("command-help", &[]),
        ("command-subscribe", &[]),
        ("command-unsubscribe", &[]),
        ("command-list", &[]),
        ("command-settings", &[]),
        ("command-lang", &[]),
        ("command-delete", &[]),
        ("command-reminders", &[]),
        ("only-commands", &[]),
        ("unknown-command", &["command"]),
        ("unreadable-command", &["reason"]),
        ("admin-only", &[]),
        ("error-unavailable", &[]),
        ("error-not-found", &[]),
        ("error-conflict", &[]),
        ("error-refused", &["reason"]),
        ("start-resumed", &[]),
        ("start-again", &["language"]),
        ("start-new", &["language"]),
        ("settings-target-own", &[]),
        ("settings-target-group", &["name"]),
        ("settings-target-group-unnamed", &[]),
        ("settings-link", &["target", "href", "#minutes"]),
        ("settings-button", &[]),
        ("settings-private-only", &["link"]),
        ("settings-sent-privately", &["admin"]),
        ("settings-start-private", &["admin", "link"]),
        ("settings-group-unregistered", &[]),
        ("lang-current", &["language", "languages"]),
        ("lang-unknown", &["code", "languages"]),
        ("lang-set", &["language"]),
        ("delete-nothing", &[]),
        ("delete-ask", &[]),
        ("delete-yes", &[]),
        ("delete-done", &[]),
        ("delete-gone", &[]),
        ("button-cancel", &[]),
        ("button-done", &[]),
        ("button-expired", &[]),
        ("cancelled", &[]),
        ("kinds-all", &[]),
        ("kinds-separator", &[]),
        ("kind-youtube-live", &[]),
        ("kind-youtube-scheduled", &[]),
        ("kind-youtube-reminder", &[]),
        ("kind-youtube-video", &[]),
        ("kind-twitter-tweet", &[]),
        ("kind-twitter-retweet", &[]),
        ("kind-youtube-rescheduled", &[]),
        ("kind-youtube-ended", &[]),
        ("kind-youtube-cancelled", &[]),
        ("kind-youtube-premiere", &[]),
        ("kind-youtube-short", &[]),
        ("kind-youtube-members", &[]),
        ("reminders-prompt", &["now"]),
        ("reminders-default", &["minutes"]),
        ("reminders-leads", &["list"]),
        ("reminders-button", &["minutes"]),
        ("reminders-save", &[]),
        ("reminders-saved", &["leads"]),
        ("subscribe-usage", &[]),
        ("subscribe-no-match", &["query"]),
        ("subscribe-pick", &["query"]),
        ("subscribe-more", &["#count"]),
        ("subscribe-kinds", &["name"]),
        ("subscribe-gone", &[]),
        ("subscribe-none-chosen", &[]),
        ("subscribe-done", &["name", "kinds"]),
        ("unsubscribe-none", &[]),
        ("unsubscribe-no-match", &["query"]),
        ("unsubscribe-pick", &[]),
        ("unsubscribe-done", &["name"]),
        ("list-unregistered", &[]),
        ("list-empty", &[]),
        ("list-title", &["#count"]),
        ("notify-live", &["name"]),
        ("notify-scheduled", &["name"]),
        ("notify-reminder", &["name"]),
        ("notify-video", &["name"]),
        ("notify-tweet", &["name"]),
        ("notify-retweet", &["name"]),
        ("notify-other", &["name"]),
        ("notify-open-youtube", &[]),
        ("notify-open-x", &[]),
        ("notify-open", &[]),
        ("notify-starts", &[]),
        ("notify-started", &[]),
        ("notify-original", &[]),
        ("notify-premiere", &["name"]),
        ("notify-premiere-live", &["name"]),
        ("notify-premiere-reminder", &["name"]),
        ("notify-rescheduled", &["name"]),
        ("notify-premiere-rescheduled", &["name"]),
        ("notify-short", &["name"]),
        ("notify-live-now", &["name"]),
        ("notify-premiere-live-now", &["name"]),
        ("notify-ended", &["name", "duration"]),
        ("notify-ended-plain", &["name"]),
        ("notify-cancelled", &["name"]),
        ("notify-moved-from", &["time"]),
        ("notify-moved-earlier", &["name", "time"]),
        ("notify-members-only", &[]),
        ("notify-archive", &[]),
        ("notify-hours-minutes", &["h", "m"]),
        ("notify-minutes", &["m"]),
        ("notify-twitch-live", &["name"]),
        ("notify-twitch-rerun", &["name"]),
        ("notify-bilibili-live", &["name"]),
        ("notify-bilibili-dynamic", &["name"]),
        ("notify-bilibili-repost", &["name"]),
        ("notify-bilibili-video", &["name"]),
        ("notify-open-twitch", &[]),
        ("notify-open-bilibili", &[]),
        ("kind-twitch-live", &[]),
        ("kind-twitch-ended", &[]),
        ("kind-twitch-rerun", &[]),
        ("kind-bilibili-live", &[]),
        ("kind-bilibili-ended", &[]),
        ("kind-bilibili-dynamic", &[]),
        ("kind-bilibili-video", &[]),
    ];

    /// Sample arguments for `names` (`#name` is a number) with counts set to `count`.
    fn sample<'a>(names: &[&'a str], count: i64) -> Vec<(&'a str, FluentValue<'static>)> {
        names
            .iter()
            .map(|name| match name.strip_prefix('#') {
                Some(number) => (number, FluentValue::from(count)),
                None => (*name, FluentValue::from(format!("<{name}>"))),
            })
            .collect()
    }

    #[test]
    fn every_locale_parses_and_has_every_english_message() {
        let (english, errors) = messages("en");
        assert!(errors.is_empty(), "{errors:#?}");
        assert!(english.len() > 50, "{english:?}");
        for (code, _) in &LANGUAGES[1..] {
            let (ids, errors) = messages(code);
            assert!(errors.is_empty(), "{errors:#?}");
            let missing: Vec<_> = english.iter().filter(|id| !ids.contains(id)).collect();
            assert!(missing.is_empty(), "{code} lacks {missing:?}");
            let extra: Vec<_> = ids.iter().filter(|id| !english.contains(id)).collect();
            assert!(
                extra.is_empty(),
                "{code} has messages English lacks: {extra:?}"
            );
        }
    }

    #[test]
    fn every_message_formats_cleanly_with_the_arguments_the_code_passes() {
        let (english, _) = messages("en");
        let listed: Vec<&str> = CALLS.iter().map(|(id, _)| *id).collect();
        let unlisted: Vec<_> = english
            .iter()
            .filter(|id| !listed.contains(&id.as_str()))
            .collect();
        assert!(unlisted.is_empty(), "add these to CALLS: {unlisted:?}");
        for (code, _) in &LANGUAGES {
            for (id, names) in CALLS {
                for count in [1, 7] {
                    let args = sample(names, count);
                    let (formatted, errors) = CATALOG
                        .format_exact(code, id, &args)
                        .unwrap_or_else(|| panic!("{code} lacks {id}"));
                    assert!(errors.is_empty(), "{code} {id}: {errors:?}");
                    assert!(!formatted.trim().is_empty(), "{code} {id} is empty");
                    // No isolation marks around arguments.
                    assert!(
                        !formatted.contains('\u{2068}'),
                        "{code} {id}: {formatted:?}"
                    );
                    for (name, _) in args
                        .iter()
                        .filter(|(n, _)| !names.contains(&format!("#{n}").as_str()))
                    {
                        assert!(
                            formatted.contains(&format!("<{name}>")),
                            "{code} {id} drops ${name}: {formatted}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_message_id_the_commands_name_exists() {
        let sources = [
            include_str!("commands/mod.rs"),
            include_str!("commands/account.rs"),
            include_str!("commands/admin.rs"),
            include_str!("commands/subscriptions.rs"),
        ];
        let (english, _) = messages("en");
        let mut named = 0;
        for source in sources {
            // Every stretch between two quotes shaped like an id (`delete-ask`).
            for quoted in source.split('"').skip(1) {
                let id_like = quoted.split('-').count() > 1
                    && quoted.split('-').all(|part| {
                        !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase())
                    });
                if id_like {
                    named += 1;
                    assert!(english.iter().any(|id| id == quoted), "no message {quoted}");
                }
            }
        }
        assert!(named > 40, "{named}");
    }

    #[test]
    fn unknown_languages_and_missing_messages_fall_back_to_english() {
        assert_eq!(text("fr", "cancelled", &[]), "Cancelled.");
        assert_eq!(text("", "cancelled", &[]), "Cancelled.");
        assert_eq!(text("ja-JP", "cancelled", &[]), "キャンセルしました。");
        assert_eq!(text("ZH_tw", "cancelled", &[]), "已取消。");
        // A message only English has (none does in the shipped files; the fallback is
        // the same lookup): ids are looked up per language, then in English.
        assert_eq!(try_text("ja", "no-such-message", &[]), None);
        assert_eq!(text("ja", "no-such-message", &[]), "no-such-message");
        assert_eq!(
            text("ja", "notify-live", &[("name", "湊あくあ".into())]),
            "🔴 湊あくあ の配信が始まりました"
        );
    }

    #[test]
    fn counts_choose_plural_forms() {
        let one = text("en", "list-title", &[("count", 1.into())]);
        let many = text("en", "list-title", &[("count", 3.into())]);
        assert_eq!(one, "<b>One subscription</b>");
        assert_eq!(many, "<b>3 subscriptions</b>");
        let more = text("en", "subscribe-more", &[("count", 1.into())]);
        assert!(more.starts_with("(One more matches"), "{more}");
        let link = |minutes: i64| {
            text(
                "en",
                "settings-link",
                &[
                    ("target", "your settings".into()),
                    ("href", "https://x".into()),
                    ("minutes", minutes.into()),
                ],
            )
        };
        assert!(link(1).contains("works for one minute;"), "{}", link(1));
        assert!(link(30).contains("works for 30 minutes;"), "{}", link(30));
        assert!(link(30).contains("</a>\n\nThe link"), "{}", link(30));
        assert_eq!(
            text("ja", "list-title", &[("count", 3.into())]),
            "<b>フォロー中（3）</b>"
        );
    }

    #[test]
    fn arguments_are_not_isolated() {
        assert_eq!(
            text("en", "unknown-command", &[("command", "/x".into())]),
            "Unknown command /x."
        );
    }

    #[test]
    fn spoken_languages_come_from_the_locales() {
        for (code, spoken) in [("en", "en"), ("JA", "ja"), ("ja-JP", "ja"), ("zh_TW", "zh")] {
            assert_eq!(spoken_language(code), Some(spoken), "{code}");
        }
        for unspoken in ["", "xx", "pt-BR", "english", "e", "../", "jaa"] {
            assert_eq!(spoken_language(unspoken), None, "{unspoken}");
        }
        assert_eq!(language_for("xx"), DEFAULT);
        assert_eq!(spoken_languages(), "en (English), ja (日本語), zh (中文)");
    }
}
