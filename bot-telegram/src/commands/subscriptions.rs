//! `/subscribe`, `/unsubscribe`, `/list`, and every inline-keyboard press.
//!
//! Search goes through the api's user index (names in every language, account ids), so
//! "Aqua", "湊あくあ" and an entity id all find the same streamer. Keyboards carry all
//! their state in the button data ([`Callback`]), so the bot keeps no dialogue state and
//! a restart in the middle of a selection loses nothing.

use stargazer_core::contract::kind;
use teloxide::prelude::*;
use teloxide::types::{Chat, InlineKeyboardButton, InlineKeyboardMarkup, MessageId, ParseMode};
use uuid::Uuid;

use super::account::{delete_confirmed, ensure_user};
use super::admin::{may_change, REFUSAL};
use super::{api_trouble, reply, reply_html, Callback, Ctx, HandlerError, HandlerResult};
use crate::api::{ApiError, IndexEntry, User};
use crate::delivery::compose::escape;

/// Event kinds a subscription can filter on, with their button labels. The index of a
/// kind is its bit in the selection masks carried by buttons.
/// New kinds go last, so that keyboards already in chats keep their meaning.
pub(crate) const KINDS: [(&str, &str); 12] = [
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
];

/// Every kind selected.
const ALL: u16 = (1 << KINDS.len()) - 1;

/// Most buttons in one keyboard of current subscriptions.
const MAX_LISTED: usize = 50;

/// The selection mask of a subscription's kinds (empty means all).
fn mask_of(kinds: &[String]) -> u16 {
    if kinds.is_empty() {
        return ALL;
    }
    KINDS
        .iter()
        .enumerate()
        .filter(|(_, (kind, _))| kinds.iter().any(|k| k == kind))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// The kinds of a selection mask (all selected means all kinds, also future ones).
fn kinds_of(mask: u16) -> Vec<String> {
    if mask & ALL == ALL {
        return Vec::new();
    }
    KINDS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, (kind, _))| (*kind).to_owned())
        .collect()
}

/// Labels of `kinds` in the keyboard's order (unknown kinds last, as they are).
fn describe_kinds(kinds: &[String]) -> String {
    if kinds.is_empty() {
        return "all events".to_owned();
    }
    let known = KINDS
        .iter()
        .filter(|(kind, _)| kinds.iter().any(|k| k == kind))
        .map(|(_, label)| (*label).to_owned());
    let unknown = kinds
        .iter()
        .filter(|k| !KINDS.iter().any(|(kind, _)| kind == k))
        .cloned();
    known.chain(unknown).collect::<Vec<_>>().join(", ")
}

/// An entry's name in `language` (then its default language, then any).
fn name_of(entry: &IndexEntry, language: &str) -> String {
    entry
        .names
        .get(language)
        .or_else(|| entry.names.get(&entry.default_language))
        .or_else(|| entry.names.values().next())
        .cloned()
        .unwrap_or_else(|| entry.id.to_string())
}

/// Entries matching `query`: by id, else by exact name in any language, else by
/// substring of any name or account id (case-insensitive).
pub(crate) fn search<'a>(entries: &'a [IndexEntry], query: &str) -> Vec<&'a IndexEntry> {
    let query = query.trim();
    if let Ok(id) = query.parse::<Uuid>() {
        return entries.iter().filter(|e| e.id == id).collect();
    }
    let needle = query.to_lowercase();
    if needle.is_empty() {
        return Vec::new();
    }
    let exact: Vec<_> = entries
        .iter()
        .filter(|e| e.names.values().any(|n| n.to_lowercase() == needle))
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    entries
        .iter()
        .filter(|e| {
            e.names.values().any(|n| n.to_lowercase().contains(&needle))
                || e.search.iter().any(|s| s.to_lowercase().contains(&needle))
        })
        .collect()
}

fn kinds_keyboard(entity: Uuid, mask: u16) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = KINDS
        .chunks(2)
        .enumerate()
        .map(|(row, pair)| {
            pair.iter()
                .enumerate()
                .map(|(col, (_, label))| {
                    let bit = 1u16 << (row * 2 + col);
                    let mark = if mask & bit != 0 { "✅" } else { "⬜" };
                    InlineKeyboardButton::callback(
                        format!("{mark} {label}"),
                        Callback::Kinds(entity, mask ^ bit).encode(),
                    )
                })
                .collect()
        })
        .collect();
    rows.push(vec![
        InlineKeyboardButton::callback("Done", Callback::Done(entity, mask).encode()),
        InlineKeyboardButton::callback("Cancel", Callback::Cancel.encode()),
    ]);
    InlineKeyboardMarkup::new(rows)
}

fn kinds_prompt(name: &str) -> String {
    format!(
        "Which events of <b>{}</b> do you want? Tap to toggle, then Done.",
        escape(name)
    )
}

fn pick_keyboard(
    entries: &[&IndexEntry],
    language: &str,
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
        "Cancel",
        Callback::Cancel.encode(),
    )]);
    InlineKeyboardMarkup::new(rows)
}

/// `/subscribe <name or id>`.
pub(crate) async fn subscribe(bot: &Bot, msg: &Message, ctx: &Ctx, query: &str) -> HandlerResult {
    if query.is_empty() {
        return reply(
            bot,
            msg,
            "Tell me whom to follow: /subscribe <name or id>, e.g. /subscribe Aqua. Names work in any language.",
        )
        .await;
    }
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref()).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let index = match ctx.api.index(user.id).await {
        Ok(index) => index,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let found = search(&index.entities, query);
    match found.as_slice() {
        [] => {
            reply(
                bot,
                msg,
                &format!(
                    "No streamer matches “{query}”. Try part of a name, in any language, or an id."
                ),
            )
            .await
        }
        [entry] => {
            let mask = entry.subscribed.as_deref().map_or(ALL, mask_of);
            bot.send_message(msg.chat.id, kinds_prompt(&name_of(entry, &user.language)))
                .parse_mode(ParseMode::Html)
                .reply_markup(kinds_keyboard(entry.id, mask))
                .await?;
            Ok(())
        }
        many => {
            let limit = ctx.config.search_limit.max(1);
            let mut text = format!("Several streamers match “{}”. Which one?", escape(query));
            if many.len() > limit {
                text.push_str(&format!(
                    "\n({} more match; type more of the name to narrow it down.)",
                    many.len() - limit
                ));
            }
            let shown: Vec<&IndexEntry> = many.iter().take(limit).copied().collect();
            bot.send_message(msg.chat.id, text)
                .parse_mode(ParseMode::Html)
                .reply_markup(pick_keyboard(&shown, &user.language, Callback::Pick))
                .await?;
            Ok(())
        }
    }
}

/// `/unsubscribe [name]`.
pub(crate) async fn unsubscribe(bot: &Bot, msg: &Message, ctx: &Ctx, query: &str) -> HandlerResult {
    let user = match ctx.api.user_by_chat(msg.chat.id.0).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return reply(
                bot,
                msg,
                "This chat has no subscriptions. Use /subscribe <name> to add one.",
            )
            .await
        }
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let index = match ctx.api.index(user.id).await {
        Ok(index) => index,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let subscribed: Vec<IndexEntry> = index
        .entities
        .into_iter()
        .filter(|e| e.subscribed.is_some())
        .collect();
    if subscribed.is_empty() {
        return reply(
            bot,
            msg,
            "This chat has no subscriptions. Use /subscribe <name> to add one.",
        )
        .await;
    }
    let candidates: Vec<&IndexEntry> = if query.is_empty() {
        subscribed.iter().collect()
    } else {
        search(&subscribed, query)
    };
    match candidates.as_slice() {
        [] => {
            reply(
                bot,
                msg,
                &format!("None of this chat's subscriptions matches “{query}”. /list shows them."),
            )
            .await
        }
        [entry] if !query.is_empty() => {
            match ctx
                .api
                .update_subscription(user.id, entry.id, false, Vec::new())
                .await
            {
                Ok(()) => {
                    let text = format!(
                        "Unsubscribed from <b>{}</b>.",
                        escape(&name_of(entry, &user.language))
                    );
                    reply_html(bot, msg, &text).await
                }
                Err(err) => api_trouble(bot, msg.chat.id, &err).await,
            }
        }
        many => {
            let shown: Vec<&IndexEntry> = many.iter().take(MAX_LISTED).copied().collect();
            bot.send_message(msg.chat.id, "Unsubscribe from which one?")
                .reply_markup(pick_keyboard(&shown, &user.language, Callback::Unsubscribe))
                .await?;
            Ok(())
        }
    }
}

/// `/list`.
pub(crate) async fn list(bot: &Bot, msg: &Message, ctx: &Ctx) -> HandlerResult {
    let user = match ctx.api.user_by_chat(msg.chat.id.0).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return reply(
                bot,
                msg,
                "This chat is not registered yet. Send /start, then /subscribe <name>.",
            )
            .await
        }
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let index = match ctx.api.index(user.id).await {
        Ok(index) => index,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let mut lines: Vec<(String, String)> = index
        .entities
        .iter()
        .filter_map(|e| {
            e.subscribed
                .as_ref()
                .map(|kinds| (name_of(e, &user.language), describe_kinds(kinds)))
        })
        .collect();
    if lines.is_empty() {
        return reply(
            bot,
            msg,
            "No subscriptions yet. Use /subscribe <name> to follow a streamer.",
        )
        .await;
    }
    lines.sort();
    let mut html = String::from("<b>Subscriptions</b>\n");
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
    let (Some(data), Some(message)) = (data, query.message.as_ref()) else {
        bot.answer_callback_query(query.id.clone())
            .text("This button is no longer valid.")
            .await?;
        return Ok(());
    };
    let chat = message.chat().clone();
    let message_id = message.id();
    if !may_change(&bot, &ctx.admins, &chat, Some(&query.from), None).await? {
        bot.answer_callback_query(query.id.clone())
            .text(REFUSAL)
            .show_alert(true)
            .await?;
        return Ok(());
    }
    let pressed = match handle_press(&ctx, &chat, data).await {
        Ok(pressed) => pressed,
        Err(err) => {
            tracing::warn!(chat_id = chat.id.0, cause = %err, "button press failed at the api");
            let text = if err.is_transient() {
                "Stargazer is temporarily unavailable. Please try again in a minute.".to_owned()
            } else {
                format!("That did not work: {}", err.user_message())
            };
            Pressed::Notice(text)
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

async fn registered(ctx: &Ctx, chat: &Chat) -> Result<User, ApiError> {
    ensure_user(ctx, chat, None).await
}

async fn handle_press(ctx: &Ctx, chat: &Chat, data: Callback) -> Result<Pressed, ApiError> {
    Ok(match data {
        Callback::Pick(entity) => {
            let user = registered(ctx, chat).await?;
            let index = ctx.api.index(user.id).await?;
            match index.entities.iter().find(|e| e.id == entity) {
                Some(entry) => {
                    let mask = entry.subscribed.as_deref().map_or(ALL, mask_of);
                    Pressed::Edit(
                        kinds_prompt(&name_of(entry, &user.language)),
                        Some(kinds_keyboard(entity, mask)),
                    )
                }
                None => Pressed::Edit("That streamer is no longer tracked.".to_owned(), None),
            }
        }
        Callback::Kinds(entity, mask) => Pressed::Keyboard(kinds_keyboard(entity, mask & ALL)),
        Callback::Done(_, mask) if mask & ALL == 0 => {
            Pressed::Notice("Choose at least one kind of event, or Cancel.".to_owned())
        }
        Callback::Done(entity, mask) => {
            let user = registered(ctx, chat).await?;
            let kinds = kinds_of(mask);
            match ctx
                .api
                .update_subscription(user.id, entity, true, kinds.clone())
                .await
            {
                Ok(()) => {}
                Err(ApiError::NotFound(_)) => {
                    return Ok(Pressed::Edit(
                        "That streamer is no longer tracked.".to_owned(),
                        None,
                    ))
                }
                Err(err) => return Err(err),
            }
            let name = entity_name(ctx, entity, &user.language).await;
            Pressed::Edit(
                format!(
                    "✅ Subscribed to <b>{}</b>: {}.",
                    escape(&name),
                    escape(&describe_kinds(&kinds))
                ),
                None,
            )
        }
        Callback::Unsubscribe(entity) => {
            let user = registered(ctx, chat).await?;
            ctx.api
                .update_subscription(user.id, entity, false, Vec::new())
                .await?;
            let name = entity_name(ctx, entity, &user.language).await;
            Pressed::Edit(format!("Unsubscribed from <b>{}</b>.", escape(&name)), None)
        }
        Callback::DeleteYes => Pressed::Edit(escape(&delete_confirmed(ctx, chat).await?), None),
        Callback::Cancel => Pressed::Edit("Cancelled.".to_owned(), None),
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

    fn entry(id: u128, names: &[(&str, &str)], search: &[&str]) -> IndexEntry {
        IndexEntry {
            id: Uuid::from_u128(id),
            names: names
                .iter()
                .map(|(l, n)| (l.to_string(), n.to_string()))
                .collect(),
            default_language: names[0].0.to_owned(),
            group: None,
            platforms: vec!["youtube".into()],
            search: search.iter().map(|s| s.to_string()).collect(),
            subscribed: None,
        }
    }

    #[test]
    fn search_by_id_exact_name_then_substring() {
        let entries = vec![
            entry(
                1,
                &[("en", "Aqua"), ("ja", "湊あくあ")],
                &["aqua", "湊あくあ", "ucaqua"],
            ),
            entry(2, &[("en", "Aquamarine")], &["aquamarine"]),
            entry(3, &[("en", "Marine")], &["marine", "ucmarine"]),
        ];
        let ids = |v: Vec<&IndexEntry>| v.iter().map(|e| e.id.as_u128()).collect::<Vec<_>>();
        assert_eq!(ids(search(&entries, "aqua")), vec![1]);
        assert_eq!(ids(search(&entries, "AQU")), vec![1, 2]);
        assert_eq!(ids(search(&entries, "あくあ")), vec![1]);
        assert_eq!(ids(search(&entries, "marine")), vec![3]);
        assert_eq!(ids(search(&entries, "ucmar")), vec![3]);
        assert_eq!(
            ids(search(&entries, &Uuid::from_u128(2).to_string())),
            vec![2]
        );
        assert!(search(&entries, "nobody").is_empty());
        assert!(search(&entries, "  ").is_empty());
    }

    #[test]
    fn masks_and_kinds_convert_both_ways() {
        assert_eq!(mask_of(&[]), ALL);
        assert_eq!(kinds_of(ALL), Vec::<String>::new());
        let some = vec!["youtube.live".to_owned(), "twitter.tweet".to_owned()];
        assert_eq!(kinds_of(mask_of(&some)), some);
        assert_eq!(describe_kinds(&some), "🔴 Live, 🐦 Post");
        let keyboard = kinds_keyboard(Uuid::nil(), 0b000001);
        let first = &keyboard.inline_keyboard[0][0];
        assert!(first.text.starts_with("✅"));
    }
}
