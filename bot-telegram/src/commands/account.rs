//! `/start`, `/settings`, `/lang`, `/delete` and the delete confirmation: the chat's
//! registration with the Stargazer api, and the session links to the frontend (sent
//! only ever to a private chat).

use teloxide::prelude::*;
use teloxide::types::{
    Chat, InlineKeyboardButton, InlineKeyboardMarkup, Me, ParseMode, User as TgUser,
};

use super::admin::{is_admin, REFUSAL};
use super::{api_trouble, chat_name, reply, Callback, Ctx, HandlerResult};
use crate::api::{ApiError, User};
use crate::delivery::compose::{escape, spoken_language, spoken_languages};
use crate::telegram::{classify, Failure};

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

/// A new private chat starts in its user's Telegram language when the bot speaks it;
/// groups and everyone else start in English.
fn initial_language(chat: &Chat, from: Option<&TgUser>) -> String {
    from.filter(|_| chat.is_private())
        .and_then(|u| u.language_code.as_deref())
        .and_then(spoken_language)
        .unwrap_or("en")
        .to_owned()
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

/// The `/start` payload of the deep link that asks for a group's settings link in a
/// private chat (`t.me/<bot>?start=settings_<group id>`).
const SETTINGS_PAYLOAD: &str = "settings_";

/// The group a `/start` payload asks the settings link for, if it is such a payload.
pub(crate) fn settings_payload(payload: &str) -> Option<ChatId> {
    let group: i64 = payload
        .trim()
        .strip_prefix(SETTINGS_PAYLOAD)?
        .parse()
        .ok()?;
    (group < 0).then_some(ChatId(group))
}

/// The deep link that opens a private chat with the bot and asks it for `group`'s
/// settings link.
fn settings_deep_link(me: &Me, group: ChatId) -> String {
    format!(
        "https://t.me/{}?start={SETTINGS_PAYLOAD}{}",
        me.username(),
        group.0
    )
}

/// The frontend link carrying a session token. The token travels in the fragment,
/// which browsers never send to a server (no access logs, no `Referer`); the page reads
/// it from `location.hash`.
pub(crate) fn session_link(frontend_url: &str, token: &str) -> String {
    format!("{}/#token={token}", frontend_url.trim_end_matches('/'))
}

/// Why a settings link could not be sent.
enum LinkError {
    /// The api refused or is unreachable.
    Api(ApiError),
    /// Telegram refused the message.
    Telegram(teloxide::RequestError),
}

/// Sends a fresh session link for `user` to chat `to`; `group` names the group the
/// link is for when it goes to an admin's private chat.
async fn send_session_link(
    bot: &Bot,
    ctx: &Ctx,
    to: ChatId,
    user: &User,
    group: Option<&str>,
) -> Result<(), LinkError> {
    let session = ctx.api.new_session(user.id).await.map_err(LinkError::Api)?;
    let link = session_link(&ctx.config.frontend_url, &session.token);
    let minutes = (session.expires_at - chrono::Utc::now())
        .num_minutes()
        .max(1);
    let what = match group {
        Some(name) if !name.is_empty() => {
            format!("the subscriptions and settings of {}", escape(name))
        }
        Some(_) => "the group's subscriptions and settings".to_owned(),
        None => "your subscriptions and settings".to_owned(),
    };
    let html = format!(
        "Edit {what} here:\n<a href=\"{href}\">{text}</a>\n\n\
         The link works for {minutes} minutes; send /settings again for a new one. Do not share it.",
        href = escape(&link),
        text = escape(&link),
    );
    let mut request = bot.send_message(to, html).parse_mode(ParseMode::Html);
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
    request.await.map_err(LinkError::Telegram)?;
    Ok(())
}

/// `/settings`: a fresh session link to the frontend.
///
/// In a private chat it is the answer. In a group anyone holding the link could change
/// or delete the group's registration, so it never goes into the group: it is sent
/// privately to the admin who asked; if the bot cannot write to them (they never
/// started a private chat with it), the group is told how to start one, with a deep link
/// that then delivers the link there.
pub(crate) async fn settings(bot: &Bot, msg: &Message, ctx: &Ctx, me: &Me) -> HandlerResult {
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref()).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    if msg.chat.is_private() {
        return match send_session_link(bot, ctx, msg.chat.id, &user, None).await {
            Ok(()) => Ok(()),
            Err(LinkError::Api(err)) => api_trouble(bot, msg.chat.id, &err).await,
            Err(LinkError::Telegram(err)) => Err(err.into()),
        };
    }
    let deep_link = settings_deep_link(me, msg.chat.id);
    // An anonymous admin writes as the group: there is nobody to write to privately.
    let admin = msg
        .from
        .as_ref()
        .filter(|_| msg.sender_chat.as_ref().is_none_or(|s| s.id != msg.chat.id));
    let Some(admin) = admin else {
        let text = format!(
            "The settings link is only sent in a private chat. As an admin of this group, \
             open {deep_link} from your own account and press Start: I will send it there."
        );
        return reply(bot, msg, &text).await;
    };
    let to = ChatId(admin.id.0 as i64);
    match send_session_link(bot, ctx, to, &user, Some(&chat_name(&msg.chat))).await {
        Ok(()) => {
            let text = format!(
                "{}, I sent you the settings link in a private message.",
                admin.first_name
            );
            reply(bot, msg, &text).await
        }
        Err(LinkError::Api(err)) => api_trouble(bot, msg.chat.id, &err).await,
        Err(LinkError::Telegram(err)) => match classify(&err) {
            Failure::Forbidden(reason) => {
                tracing::info!(chat_id = msg.chat.id.0, user_id = admin.id.0, %reason, "cannot write to the admin privately");
                let text = format!(
                    "{}, I can only send the settings link in a private chat, and you have not \
                     started one with me yet. Open {deep_link} and press Start: I will send it there.",
                    admin.first_name
                );
                reply(bot, msg, &text).await
            }
            _ => Err(err.into()),
        },
    }
}

/// `/start settings_<group>` in a private chat (the deep link [`settings`] offers): the
/// group's settings link, if the person is one of its admins.
pub(crate) async fn group_settings_link(
    bot: &Bot,
    msg: &Message,
    ctx: &Ctx,
    group: ChatId,
) -> HandlerResult {
    let Some(person) = msg.from.as_ref() else {
        return Ok(());
    };
    let admin = match is_admin(bot, &ctx.admins, group, person).await {
        Ok(admin) => admin,
        Err(err) => {
            // Telegram does not know the group, or the bot is not in it any more.
            tracing::info!(chat_id = group.0, cause = %err, "group admin check failed");
            false
        }
    };
    if !admin {
        return reply(bot, msg, REFUSAL).await;
    }
    let user = match ctx.api.user_by_chat(group.0).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return reply(
                bot,
                msg,
                "That group is not registered. Send /start in the group first.",
            )
            .await
        }
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    match send_session_link(bot, ctx, msg.chat.id, &user, Some(&user.name)).await {
        Ok(()) => Ok(()),
        Err(LinkError::Api(err)) => api_trouble(bot, msg.chat.id, &err).await,
        Err(LinkError::Telegram(err)) => Err(err.into()),
    }
}

/// `/lang <code>`: the language of notifications.
pub(crate) async fn lang(bot: &Bot, msg: &Message, ctx: &Ctx, code: &str) -> HandlerResult {
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref()).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, &err).await,
    };
    if code.is_empty() {
        let text = format!(
            "Notifications here are in `{}`. I speak {}: /lang en, /lang ja or /lang zh.",
            user.language,
            spoken_languages()
        );
        return reply(bot, msg, &text).await;
    }
    let Some(code) = spoken_language(code) else {
        let shown: String = code.chars().take(32).collect();
        let text = format!(
            "I do not speak “{shown}”. I speak {}: /lang en, /lang ja or /lang zh.",
            spoken_languages()
        );
        return reply(bot, msg, &text).await;
    };
    match ctx.api.set_language(user.id, code).await {
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
    fn settings_payloads_name_a_group() {
        assert_eq!(
            settings_payload("settings_-1001234"),
            Some(ChatId(-1001234))
        );
        assert_eq!(settings_payload("settings_42"), None, "not a group");
        assert_eq!(settings_payload("settings_x"), None);
        assert_eq!(settings_payload(""), None);
        assert_eq!(settings_payload("-1001234"), None);
    }

    #[test]
    fn the_token_travels_in_the_fragment() {
        assert_eq!(
            session_link("https://s.example/app/", "abc"),
            "https://s.example/app/#token=abc"
        );
    }

    #[test]
    fn only_spoken_languages_are_accepted() {
        for (code, spoken) in [("en", "en"), ("JA", "ja"), ("ja-JP", "ja"), ("zh_TW", "zh")] {
            assert_eq!(spoken_language(code), Some(spoken), "{code}");
        }
        for unspoken in ["", "xx", "pt-BR", "english", "e", "../", "jaa"] {
            assert_eq!(spoken_language(unspoken), None, "{unspoken}");
        }
        assert_eq!(spoken_languages(), "en (English), ja (日本語), zh (中文)");
    }
}
