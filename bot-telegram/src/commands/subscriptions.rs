//! `/subscribe`, `/unsubscribe`, `/list`, and every inline-keyboard press.
//!
//! Search goes through the api's user index (names in every language, account ids), so
//! "Aqua", "湊あくあ" and an entity id all find the same streamer. Keyboards carry all
//! their state in the button data ([`Callback`]), so the bot keeps no dialogue state and
//! a restart in the middle of a selection loses nothing.

use stargazer_core::contract::{kind, source};
use teloxide::prelude::*;
use teloxide::types::{Chat, InlineKeyboardButton, InlineKeyboardMarkup, MessageId, ParseMode};
use uuid::Uuid;

use super::account::{delete_confirmed, ensure_user};
use super::admin::{may_change, REFUSAL};
use super::{
    api_trouble, look_up, reply, reply_html, trouble_text, Callback, Ctx, HandlerError,
    HandlerResult, Lookup,
};
use crate::delivery::compose::escape;
use crate::i18n::{self, text};
use stargazer_delivery::api::{ApiError, IndexEntry};
use stargazer_delivery::commands::{name_of, search};

/// Event kinds a subscription can filter on, with their English button labels (each
/// language words them in its `kind-<kind>` message, see [`kind_label`]). The index of a
/// kind is its bit in the selection masks carried by buttons.
/// New kinds go last, so that keyboards already in chats keep their meaning.
pub(crate) const KINDS: [(&str, &str); 19] = [
    (kind::YOUTUBE_LIVE, "🔴 Live"),
    (kind::YOUTUBE_SCHEDULED, "📅 Scheduled"),
    (kind::YOUTUBE_REMINDER, "⏰ Reminder"),
    (kind::YOUTUBE_VIDEO, "🎬 Video"),
    (kind::TWITTER_TWEET, "🐦 Post"),
    (kind::TWITTER_RETWEET, "🔁 Repost"),
    (kind::YOUTUBE_RESCHEDULED, "🕒 Rescheduled"),
    (kind::YOUTUBE_ENDED, "⏹ Ended"),
    (kind::YOUTUBE_CANCELLED, "❌ Cancelled"),
    (kind::YOUTUBE_PREMIERE, "🎞 Premieres"),
    (kind::YOUTUBE_SHORT, "📱 Shorts"),
    (kind::YOUTUBE_MEMBERS, "🔒 Members-only"),
    (kind::TWITCH_LIVE, "🟣 Twitch live"),
    (kind::TWITCH_ENDED, "⏹ Twitch ended"),
    (kind::TWITCH_RERUN, "📼 Twitch rerun"),
    (kind::BILIBILI_LIVE, "📺 Bilibili live"),
    (kind::BILIBILI_ENDED, "⏹ Bilibili ended"),
    (kind::BILIBILI_DYNAMIC, "💬 Bilibili post"),
    (kind::BILIBILI_VIDEO, "🎬 Bilibili video"),
];

/// Every kind selected.
const ALL: u32 = (1 << KINDS.len()) - 1;

/// Every platform (bit `i` is `contract::source::ALL[i]`).
pub(crate) const ALL_PLATFORMS: u8 = (1 << source::ALL.len()) - 1;

/// The platforms value of a keyboard sent before keyboards carried platforms: it offered
/// the first [`EARLIER_KINDS`] kinds of [`KINDS`], and "all of them" still means every
/// kind.
pub(crate) const EARLIER_KEYBOARD: u8 = 0;

/// How many kinds keyboards offered before they carried platforms.
const EARLIER_KINDS: usize = 12;

/// The platforms bit mask of an entity watched on `platforms` (every platform when it
/// names none this bot knows, so a keyboard is never empty).
fn platforms_mask(platforms: &[String]) -> u8 {
    let mask = source::ALL
        .iter()
        .enumerate()
        .filter(|(_, word)| platforms.iter().any(|p| p == *word))
        .fold(0, |mask, (i, _)| mask | (1 << i));
    if mask == 0 {
        ALL_PLATFORMS
    } else {
        mask
    }
}

/// The kinds (bit mask over [`KINDS`]) an entity watched on `platforms` can produce.
fn offered(platforms: u8) -> u32 {
    if platforms == EARLIER_KEYBOARD {
        return (1 << EARLIER_KINDS) - 1;
    }
    KINDS
        .iter()
        .enumerate()
        .filter(|(_, (kind, _))| {
            let word = kind.split('.').next().unwrap_or_default();
            source::ALL
                .iter()
                .position(|s| *s == word)
                .is_some_and(|i| platforms & (1 << i) != 0)
        })
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// Most buttons in one keyboard of current subscriptions.
const MAX_LISTED: usize = 50;

/// The selection mask of a subscription's kinds (empty means all).
fn mask_of(kinds: &[String]) -> u32 {
    if kinds.is_empty() {
        return ALL;
    }
    KINDS
        .iter()
        .enumerate()
        .filter(|(_, (kind, _))| kinds.iter().any(|k| k == kind))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// The kinds of a selection mask among the `offered` ones (all offered selected means
/// all kinds, also future ones).
fn kinds_of(mask: u32, offered: u32) -> Vec<String> {
    if mask & offered == offered {
        return Vec::new();
    }
    KINDS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, (kind, _))| (*kind).to_owned())
        .collect()
}

/// The label of `kind` in `lang`: its `kind-<kind with dashes>` message
/// (`kind-youtube-live`), else `fallback` (a kind no locale file words yet).
fn kind_label(kind: &str, fallback: &str, lang: &str) -> String {
    let id = format!("kind-{}", kind.replace('.', "-"));
    i18n::try_text(lang, &id, &[]).unwrap_or_else(|| fallback.to_owned())
}

/// Labels of `kinds` in `lang`, in the keyboard's order (unknown kinds last, as they are).
fn describe_kinds(kinds: &[String], lang: &str) -> String {
    if kinds.is_empty() {
        return text(lang, "kinds-all", &[]);
    }
    let known = KINDS
        .iter()
        .filter(|(kind, _)| kinds.iter().any(|k| k == kind))
        .map(|(kind, label)| kind_label(kind, label, lang));
    let unknown = kinds
        .iter()
        .filter(|k| !KINDS.iter().any(|(kind, _)| kind == k))
        .cloned();
    known
        .chain(unknown)
        .collect::<Vec<_>>()
        .join(&text(lang, "kinds-separator", &[]))
}

/// The kind buttons of the entity's platforms (`platforms`), two a row, then Done and
/// Cancel.
fn kinds_keyboard(entity: Uuid, mask: u32, platforms: u8, lang: &str) -> InlineKeyboardMarkup {
    let offered = offered(platforms);
    let buttons: Vec<InlineKeyboardButton> = KINDS
        .iter()
        .enumerate()
        .filter(|(i, _)| offered & (1 << i) != 0)
        .map(|(i, (kind, label))| {
            let bit = 1u32 << i;
            let mark = if mask & bit != 0 { "✅" } else { "⬜" };
            InlineKeyboardButton::callback(
                format!("{mark} {}", kind_label(kind, label, lang)),
                Callback::Kinds(entity, mask ^ bit, platforms).encode(),
            )
        })
        .collect();
    let mut rows: Vec<Vec<InlineKeyboardButton>> = buttons
        .chunks(2)
        .map(<[InlineKeyboardButton]>::to_vec)
        .collect();
    rows.push(vec![
        InlineKeyboardButton::callback(
            text(lang, "button-done", &[]),
            Callback::Done(entity, mask, platforms).encode(),
        ),
        InlineKeyboardButton::callback(text(lang, "button-cancel", &[]), Callback::Cancel.encode()),
    ]);
    InlineKeyboardMarkup::new(rows)
}

fn kinds_prompt(name: &str, lang: &str) -> String {
    text(lang, "subscribe-kinds", &[("name", escape(name).into())])
}

/// One button per entry, named in `language` (the user's), and Cancel in `lang`.
fn pick_keyboard(
    entries: &[&IndexEntry],
    language: &str,
    lang: &str,
    make: impl Fn(Uuid) -> Callback,
) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = entries
        .iter()
        .map(|e| {
            vec![InlineKeyboardButton::callback(
                name_of(e, language),
                make(e.id).encode(),
            )]
        })
        .collect();
    rows.push(vec![InlineKeyboardButton::callback(
        text(lang, "button-cancel", &[]),
        Callback::Cancel.encode(),
    )]);
    InlineKeyboardMarkup::new(rows)
}

/// `/subscribe <name or id>`.
pub(crate) async fn subscribe(
    bot: &Bot,
    msg: &Message,
    ctx: &Ctx,
    lookup: Lookup,
    query: &str,
) -> HandlerResult {
    let lang = lookup.lang;
    if query.is_empty() {
        return reply(bot, msg, &text(lang, "subscribe-usage", &[])).await;
    }
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref(), lookup.user).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let index = match ctx.api.index(user.id).await {
        Ok(index) => index,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let found = search(&index.entities, query);
    match found.as_slice() {
        [] => {
            let none = text(lang, "subscribe-no-match", &[("query", query.into())]);
            reply(bot, msg, &none).await
        }
        [entry] => {
            let mask = entry.subscribed.as_deref().map_or(ALL, mask_of);
            let platforms = platforms_mask(&entry.platforms);
            bot.send_message(
                msg.chat.id,
                kinds_prompt(&name_of(entry, &user.language), lang),
            )
            .parse_mode(ParseMode::Html)
            .reply_markup(kinds_keyboard(entry.id, mask, platforms, lang))
            .await?;
            Ok(())
        }
        many => {
            let limit = ctx.config.search_limit.max(1);
            let mut html = text(lang, "subscribe-pick", &[("query", escape(query).into())]);
            if many.len() > limit {
                html.push('\n');
                html.push_str(&text(
                    lang,
                    "subscribe-more",
                    &[("count", (many.len() - limit).into())],
                ));
            }
            let shown: Vec<&IndexEntry> = many.iter().take(limit).copied().collect();
            bot.send_message(msg.chat.id, html)
                .parse_mode(ParseMode::Html)
                .reply_markup(pick_keyboard(&shown, &user.language, lang, Callback::Pick))
                .await?;
            Ok(())
        }
    }
}

/// `/unsubscribe [name]`.
pub(crate) async fn unsubscribe(
    bot: &Bot,
    msg: &Message,
    ctx: &Ctx,
    lookup: Lookup,
    query: &str,
) -> HandlerResult {
    let lang = lookup.lang;
    let user = match lookup.user {
        Ok(Some(user)) => user,
        Ok(None) => return reply(bot, msg, &text(lang, "unsubscribe-none", &[])).await,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let index = match ctx.api.index(user.id).await {
        Ok(index) => index,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let subscribed: Vec<IndexEntry> = index
        .entities
        .into_iter()
        .filter(|e| e.subscribed.is_some())
        .collect();
    if subscribed.is_empty() {
        return reply(bot, msg, &text(lang, "unsubscribe-none", &[])).await;
    }
    let candidates: Vec<&IndexEntry> = if query.is_empty() {
        subscribed.iter().collect()
    } else {
        search(&subscribed, query)
    };
    match candidates.as_slice() {
        [] => {
            let none = text(lang, "unsubscribe-no-match", &[("query", query.into())]);
            reply(bot, msg, &none).await
        }
        [entry] if !query.is_empty() => {
            match ctx
                .api
                .update_subscription(user.id, entry.id, false, Vec::new())
                .await
            {
                Ok(()) => {
                    let name = escape(&name_of(entry, &user.language));
                    reply_html(
                        bot,
                        msg,
                        &text(lang, "unsubscribe-done", &[("name", name.into())]),
                    )
                    .await
                }
                Err(err) => api_trouble(bot, msg.chat.id, lang, &err).await,
            }
        }
        many => {
            let shown: Vec<&IndexEntry> = many.iter().take(MAX_LISTED).copied().collect();
            bot.send_message(msg.chat.id, text(lang, "unsubscribe-pick", &[]))
                .reply_markup(pick_keyboard(
                    &shown,
                    &user.language,
                    lang,
                    Callback::Unsubscribe,
                ))
                .await?;
            Ok(())
        }
    }
}

/// `/list`.
pub(crate) async fn list(bot: &Bot, msg: &Message, ctx: &Ctx, lookup: Lookup) -> HandlerResult {
    let lang = lookup.lang;
    let user = match lookup.user {
        Ok(Some(user)) => user,
        Ok(None) => return reply(bot, msg, &text(lang, "list-unregistered", &[])).await,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let index = match ctx.api.index(user.id).await {
        Ok(index) => index,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let mut lines: Vec<(String, String)> = index
        .entities
        .iter()
        .filter_map(|e| {
            e.subscribed
                .as_ref()
                .map(|kinds| (name_of(e, &user.language), describe_kinds(kinds, lang)))
        })
        .collect();
    if lines.is_empty() {
        return reply(bot, msg, &text(lang, "list-empty", &[])).await;
    }
    lines.sort();
    let mut html = text(lang, "list-title", &[("count", lines.len().into())]);
    html.push('\n');
    for (name, kinds) in lines {
        html.push_str(&format!("• {} — {}\n", escape(&name), escape(&kinds)));
    }
    // Long lists are cut at Telegram's message limit, on a line boundary.
    if html.chars().count() > 4000 {
        let mut cut = String::new();
        for line in html.lines() {
            if cut.chars().count() + line.chars().count() > 3980 {
                cut.push('…');
                break;
            }
            cut.push_str(line);
            cut.push('\n');
        }
        html = cut;
    }
    reply_html(bot, msg, &html).await
}

/// What a button press leads to.
enum Pressed {
    /// Replace the message's text (and keyboard; `None` removes it).
    Edit(String, Option<InlineKeyboardMarkup>),
    /// Replace only the keyboard.
    Keyboard(InlineKeyboardMarkup),
    /// Leave the message; show this notice.
    Notice(String),
}

/// Every inline-keyboard press.
pub(crate) async fn on_callback(
    bot: Bot,
    query: CallbackQuery,
    ctx: std::sync::Arc<Ctx>,
) -> HandlerResult {
    let data = query.data.as_deref().and_then(Callback::parse);
    let Some(message) = query.message.as_ref() else {
        // Too old for Telegram to say where it was: answer in the presser's language.
        let lang = i18n::language_for(query.from.language_code.as_deref().unwrap_or_default());
        bot.answer_callback_query(query.id.clone())
            .text(text(lang, "button-expired", &[]))
            .await?;
        return Ok(());
    };
    let chat = message.chat().clone();
    let message_id = message.id();
    let lookup = look_up(&ctx, &chat, Some(&query.from)).await;
    let lang = lookup.lang;
    let Some(data) = data else {
        bot.answer_callback_query(query.id.clone())
            .text(text(lang, "button-expired", &[]))
            .await?;
        return Ok(());
    };
    if !may_change(&bot, &ctx.admins, &chat, Some(&query.from), None).await? {
        bot.answer_callback_query(query.id.clone())
            .text(text(lang, REFUSAL, &[]))
            .show_alert(true)
            .await?;
        return Ok(());
    }
    let pressed = match handle_press(&ctx, &chat, &query.from, lookup, data).await {
        Ok(pressed) => pressed,
        Err(err) => {
            tracing::warn!(chat_id = chat.id.0, cause = %err, "button press failed at the api");
            Pressed::Notice(trouble_text(lang, &err))
        }
    };
    let notice = match pressed {
        Pressed::Edit(text, keyboard) => {
            edit(&bot, &chat, message_id, text, keyboard).await?;
            None
        }
        Pressed::Keyboard(keyboard) => {
            ignore_unmodified(
                bot.edit_message_reply_markup(chat.id, message_id)
                    .reply_markup(keyboard)
                    .await
                    .map(|_| ()),
            )?;
            None
        }
        Pressed::Notice(text) => Some(text),
    };
    let mut answer = bot.answer_callback_query(query.id.clone());
    if let Some(text) = notice {
        answer = answer.text(text).show_alert(true);
    }
    answer.await?;
    Ok(())
}

async fn edit(
    bot: &Bot,
    chat: &Chat,
    message_id: MessageId,
    text: String,
    keyboard: Option<InlineKeyboardMarkup>,
) -> HandlerResult {
    let mut request = bot
        .edit_message_text(chat.id, message_id, text)
        .parse_mode(ParseMode::Html);
    if let Some(keyboard) = keyboard {
        request = request.reply_markup(keyboard);
    }
    ignore_unmodified(request.await.map(|_| ()))
}

/// A second press on the same button edits to the same content, which Telegram
/// refuses with "message is not modified": nothing went wrong.
fn ignore_unmodified(result: Result<(), teloxide::RequestError>) -> HandlerResult {
    match result {
        Err(teloxide::RequestError::Api(teloxide::ApiError::MessageNotModified)) => Ok(()),
        other => other.map_err(HandlerError::from),
    }
}

/// What a press of `data` by `from` in `chat` leads to; `lookup` is the chat's
/// registration and language.
async fn handle_press(
    ctx: &Ctx,
    chat: &Chat,
    from: &teloxide::types::User,
    lookup: Lookup,
    data: Callback,
) -> Result<Pressed, ApiError> {
    let lang = lookup.lang;
    let gone = || Pressed::Edit(text(lang, "subscribe-gone", &[]), None);
    Ok(match data {
        Callback::Pick(entity) => {
            let user = ensure_user(ctx, chat, Some(from), lookup.user).await?;
            let index = ctx.api.index(user.id).await?;
            match index.entities.iter().find(|e| e.id == entity) {
                Some(entry) => {
                    let mask = entry.subscribed.as_deref().map_or(ALL, mask_of);
                    let platforms = platforms_mask(&entry.platforms);
                    Pressed::Edit(
                        kinds_prompt(&name_of(entry, &user.language), lang),
                        Some(kinds_keyboard(entity, mask, platforms, lang)),
                    )
                }
                None => gone(),
            }
        }
        Callback::Kinds(entity, mask, platforms) => {
            Pressed::Keyboard(kinds_keyboard(entity, mask & ALL, platforms, lang))
        }
        Callback::Done(_, mask, platforms) if mask & offered(platforms) == 0 => {
            Pressed::Notice(text(lang, "subscribe-none-chosen", &[]))
        }
        Callback::Done(entity, mask, platforms) => {
            let user = ensure_user(ctx, chat, Some(from), lookup.user).await?;
            let kinds = kinds_of(mask & ALL, offered(platforms));
            match ctx
                .api
                .update_subscription(user.id, entity, true, kinds.clone())
                .await
            {
                Ok(()) => {}
                Err(ApiError::NotFound(_)) => return Ok(gone()),
                Err(err) => return Err(err),
            }
            let name = entity_name(ctx, entity, &user.language).await;
            let done = text(
                lang,
                "subscribe-done",
                &[
                    ("name", escape(&name).into()),
                    ("kinds", escape(&describe_kinds(&kinds, lang)).into()),
                ],
            );
            Pressed::Edit(done, None)
        }
        Callback::Unsubscribe(entity) => {
            let user = ensure_user(ctx, chat, Some(from), lookup.user).await?;
            ctx.api
                .update_subscription(user.id, entity, false, Vec::new())
                .await?;
            let name = entity_name(ctx, entity, &user.language).await;
            Pressed::Edit(
                text(lang, "unsubscribe-done", &[("name", escape(&name).into())]),
                None,
            )
        }
        Callback::DeleteYes => Pressed::Edit(
            escape(&delete_confirmed(ctx, lang, lookup.user).await?),
            None,
        ),
        Callback::Cancel => Pressed::Edit(text(lang, "cancelled", &[]), None),
    })
}

/// The entity's name for a confirmation (its id if it cannot be looked up).
async fn entity_name(ctx: &Ctx, entity: Uuid, language: &str) -> String {
    match ctx.api.entity(entity).await {
        Ok(e) => e.name_in(language).to_owned(),
        Err(_) => entity.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_kinds_convert_both_ways() {
        assert_eq!(mask_of(&[]), ALL);
        assert_eq!(kinds_of(ALL, ALL), Vec::<String>::new());
        let some = vec!["youtube.live".to_owned(), "twitter.tweet".to_owned()];
        assert_eq!(kinds_of(mask_of(&some), ALL), some);
        assert_eq!(describe_kinds(&some, "en"), "🔴 Live, 🐦 Post");
        let keyboard = kinds_keyboard(Uuid::nil(), 0b000001, ALL_PLATFORMS, "en");
        let first = &keyboard.inline_keyboard[0][0];
        assert!(first.text.starts_with("✅"));
    }

    #[test]
    fn the_keyboard_offers_the_kinds_of_the_entity_s_platforms() {
        let twitch_only = platforms_mask(&["twitch".to_owned()]);
        let keyboard = kinds_keyboard(Uuid::nil(), ALL, twitch_only, "en");
        let labels: Vec<&str> = keyboard.inline_keyboard[..keyboard.inline_keyboard.len() - 1]
            .iter()
            .flatten()
            .map(|b| b.text.as_str())
            .collect();
        assert_eq!(
            labels,
            [
                "✅ 🟣 Twitch live",
                "✅ ⏹ Twitch ended",
                "✅ 📼 Twitch rerun"
            ]
        );
        // Every offered kind chosen is "everything", so kinds added later come too.
        let offered_twitch = offered(twitch_only);
        assert_eq!(
            kinds_of(offered_twitch, offered_twitch),
            Vec::<String>::new()
        );
        // One of them chosen is that one alone.
        let live = mask_of(&["twitch.live".to_owned()]);
        assert_eq!(
            kinds_of(live, offered_twitch),
            vec!["twitch.live".to_owned()]
        );
        // Pressing a button keeps the platforms in the button's data.
        let Some(Callback::Kinds(_, _, platforms)) =
            Callback::parse(match &keyboard.inline_keyboard[0][0].kind {
                teloxide::types::InlineKeyboardButtonKind::CallbackData(data) => data,
                other => panic!("{other:?}"),
            })
        else {
            panic!("not a kinds button")
        };
        assert_eq!(platforms, twitch_only);
        // An entity on no known platform is offered everything.
        assert_eq!(platforms_mask(&[]), ALL_PLATFORMS);
        let yt_x = platforms_mask(&["youtube".to_owned(), "twitter".to_owned()]);
        assert_eq!(offered(yt_x).count_ones(), 12);
        // A keyboard from before: all of its twelve kinds is still everything.
        assert_eq!(
            kinds_of(4095, offered(EARLIER_KEYBOARD)),
            Vec::<String>::new()
        );
        assert_eq!(
            kinds_of(1, offered(EARLIER_KEYBOARD)),
            vec!["youtube.live".to_owned()]
        );
    }

    #[test]
    fn kinds_are_worded_in_the_chat_language() {
        let some = vec!["youtube.live".to_owned(), "twitter.tweet".to_owned()];
        assert_eq!(describe_kinds(&some, "ja"), "🔴 配信、🐦 ポスト");
        assert_eq!(describe_kinds(&[], "zh"), "全部事件");
        // A kind no locale file words yet keeps the table's label; unknown kinds stay
        // as they are.
        assert_eq!(kind_label("youtube.brand_new", "🆕 New", "ja"), "🆕 New");
        let odd = vec!["youtube.live".to_owned(), "other.kind".to_owned()];
        assert_eq!(describe_kinds(&odd, "zh"), "🔴 直播、other.kind");
        // Every kind of the table has its words in every language.
        for (kind, label) in KINDS {
            let id = format!("kind-{}", kind.replace('.', "-"));
            assert_eq!(i18n::try_text("en", &id, &[]).as_deref(), Some(label));
            for (lang, _) in i18n::LANGUAGES {
                assert_ne!(kind_label(kind, "", lang), "", "{lang} {kind}");
            }
        }
        let keyboard = kinds_keyboard(Uuid::nil(), ALL, ALL_PLATFORMS, "ja");
        assert_eq!(keyboard.inline_keyboard[0][0].text, "✅ 🔴 配信");
        let last = keyboard.inline_keyboard.last().unwrap();
        assert_eq!(last[0].text, "完了");
        assert_eq!(last[1].text, "キャンセル");
    }
}
