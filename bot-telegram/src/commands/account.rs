//! `/start`, `/settings`, `/lang`, `/delete` and the delete confirmation: the chat's
//! registration with the Stargazer api.

use teloxide::prelude::*;
use teloxide::types::{
    Chat, InlineKeyboardButton, InlineKeyboardMarkup, ParseMode, User as TgUser,
};

use super::{api_trouble, chat_name, reply, Callback, Ctx, HandlerResult};
use crate::api::{ApiError, User};
use crate::delivery::compose::escape;

/// The chat's user, registering it first if needed (any command implies consent to
/// being registered, as `/start` does).
pub(crate) async fn ensure_user(
    ctx: &Ctx,
    chat: &Chat,
    from: Option<&TgUser>,
) -> Result<User, ApiError> {
    if let Some(user) = ctx.api.user_by_chat(chat.id.0).await? {
        return Ok(user);
    }
    ctx.api
        .register(chat.id.0, &chat_name(chat), &initial_language(chat, from))
        .await
}

/// A new private chat starts in its user's Telegram language (when it looks like a
/// language code); groups start in English.
fn initial_language(chat: &Chat, from: Option<&TgUser>) -> String {
    from.filter(|_| chat.is_private())
        .and_then(|u| u.language_code.as_deref())
        .and_then(|code| code.split('-').next())
        .filter(|code| is_language_code(code))
        .unwrap_or("en")
        .to_ascii_lowercase()
}

/// Whether `code` looks like an ISO-639 code (two or three letters), optionally with a
/// region (`pt-BR`).
pub(crate) fn is_language_code(code: &str) -> bool {
    let mut parts = code.splitn(2, ['-', '_']);
    let lang = parts.next().unwrap_or("");
    let region_ok = parts
        .next()
        .is_none_or(|r| (2..=3).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric()));
    (2..=3).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_alphabetic()) && region_ok
}

/// `/start`: registers the chat (idempotent), and resumes deliveries a block paused.
pub(crate) async fn start(bot: &Bot, msg: &Message, ctx: &Ctx) -> HandlerResult {
    let existing = match ctx.api.user_by_chat(msg.chat.id.0).await {
        Ok(existing) => existing,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let text = match existing {
        // Deliveries were paused because the chat had blocked the bot; writing to it again
        // means it wants them back.
        Some(user) if user.settings.paused => match ctx.api.set_paused(user.id, false).await {
            Ok(()) => "Welcome back! Notifications to this chat are on again. /list shows your subscriptions.".to_owned(),
            Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
        },
        Some(user) => format!(
            "Welcome back! This chat is already registered (language: {}).\n\
             Use /subscribe <name> to follow a streamer, /list to see your subscriptions, /help for more.",
            user.language
        ),
        None => match ctx
            .api
            .register(msg.chat.id.0, &chat_name(&msg.chat), &initial_language(&msg.chat, msg.from.as_ref()))
            .await
        {
            Ok(user) => format!(
                "Welcome to Stargazer! This chat is registered (language: {}).\n\
                 Use /subscribe <name> to follow a streamer, /lang <code> to change the language, /help for more.",
                user.language
            ),
            Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
        },
    };
    reply(bot, msg, &text).await
}

/// `/settings`: a fresh session link to the frontend.
pub(crate) async fn settings(bot: &Bot, msg: &Message, ctx: &Ctx) -> HandlerResult {
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref()).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let session = match ctx.api.new_session(user.id).await {
        Ok(session) => session,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    let link = format!(
        "{}/?session={}",
        ctx.config.frontend_url.trim_end_matches('/'),
        session.token
    );
    let minutes = (session.expires_at - chrono::Utc::now())
        .num_minutes()
        .max(1);
    let html = format!(
        "Edit your subscriptions and settings here:\n<a href=\"{href}\">{text}</a>\n\n\
         The link works for {minutes} minutes; send /settings again for a new one. Do not share it.",
        href = escape(&link),
        text = escape(&link),
    );
    let mut request = bot
        .send_message(msg.chat.id, html)
        .parse_mode(ParseMode::Html);
    // Telegram refuses buttons pointing at local addresses; the text link still works.
    if let Ok(url) = reqwest::Url::parse(&link) {
        let local = matches!(
            url.host_str(),
            Some("localhost" | "127.0.0.1" | "::1" | "[::1]")
        );
        if !local {
            request = request.reply_markup(InlineKeyboardMarkup::new(vec![vec![
                InlineKeyboardButton::url("Open settings", url),
            ]]));
        }
    }
    request.await?;
    Ok(())
}

/// `/lang <code>`: the language of notifications.
pub(crate) async fn lang(bot: &Bot, msg: &Message, ctx: &Ctx, code: &str) -> HandlerResult {
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref()).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    if code.is_empty() {
        let text = format!(
            "Notifications here are in `{}`. To change: /lang <code>, e.g. /lang en, /lang ja, /lang zh.",
            user.language
        );
        return reply(bot, msg, &text).await;
    }
    if !is_language_code(code) {
        let text = format!("“{code}” is not a language code. Use two letters, e.g. /lang en, /lang ja or /lang zh.");
        return reply(bot, msg, &text).await;
    }
    let code = code.to_ascii_lowercase();
    match ctx.api.set_language(user.id, &code).await {
        Ok(()) => {
            reply(
                bot,
                msg,
                &format!("Done: notifications here are now in `{code}`."),
            )
            .await
        }
        Err(err) => api_trouble(bot, msg.chat.id, &err).await,
    }
}

/// `/delete`: asks for confirmation.
pub(crate) async fn delete(bot: &Bot, msg: &Message, ctx: &Ctx) -> HandlerResult {
    match ctx.api.user_by_chat(msg.chat.id.0).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return reply(
                bot,
                msg,
                "This chat is not registered, so there is nothing to delete.",
            )
            .await
        }
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    }
    let keyboard = InlineKeyboardMarkup::new(vec![vec![
        InlineKeyboardButton::callback("Yes, delete everything", Callback::DeleteYes.encode()),
        InlineKeyboardButton::callback("Cancel", Callback::Cancel.encode()),
    ]]);
    bot.send_message(
        msg.chat.id,
        "Delete this chat's registration and all its subscriptions? This cannot be undone.",
    )
    .reply_markup(keyboard)
    .await?;
    Ok(())
}

/// The confirmed `/delete`: what to show in place of the question.
pub(crate) async fn delete_confirmed(ctx: &Ctx, chat: &Chat) -> Result<String, ApiError> {
    match ctx.api.user_by_chat(chat.id.0).await? {
        Some(user) => {
            ctx.api.delete_user(user.id).await?;
            Ok("Deleted: this chat's registration and subscriptions are gone. Send /start to register again.".to_owned())
        }
        None => Ok("This chat is not registered any more; nothing to delete.".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes() {
        for ok in ["en", "ja", "zh", "pt-BR", "fil", "zh_TW"] {
            assert!(is_language_code(ok), "{ok}");
        }
        for bad in ["", "e", "english", "e1", "en-", "../", "ja-JP-x"] {
            assert!(!is_language_code(bad), "{bad}");
        }
    }
}
