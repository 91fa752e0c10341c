//! `/start`, `/settings`, `/lang`, `/delete` and the delete confirmation: the chat's
//! registration with the Stargazer api, and the session links to the frontend (sent
//! only ever to a private chat).

use teloxide::prelude::*;
use teloxide::types::{
    Chat, InlineKeyboardButton, InlineKeyboardMarkup, Me, ParseMode, User as TgUser,
};

use super::admin::{is_admin, REFUSAL};
use super::{api_trouble, chat_name, reply, Callback, Ctx, HandlerResult, Lookup};
use crate::delivery::compose::escape;
use crate::i18n::{self, text};
use crate::telegram::{classify, Failure};
use stargazer_delivery::api::{ApiError, User};
pub(crate) use stargazer_delivery::commands::session_link;

/// The chat's user as `looked_up` found it, registering the chat first if it was not
/// (any command implies consent to being registered, as `/start` does).
pub(crate) async fn ensure_user(
    ctx: &Ctx,
    chat: &Chat,
    from: Option<&TgUser>,
    looked_up: Result<Option<User>, ApiError>,
) -> Result<User, ApiError> {
    if let Some(user) = looked_up? {
        return Ok(user);
    }
    ctx.api
        .register(chat.id.0, &chat_name(chat), initial_language(chat, from))
        .await
}

/// A new private chat starts in its user's Telegram language when the bot speaks it;
/// groups and everyone else start in English.
pub(crate) fn initial_language(chat: &Chat, from: Option<&TgUser>) -> &'static str {
    from.filter(|_| chat.is_private())
        .and_then(|u| u.language_code.as_deref())
        .and_then(i18n::spoken_language)
        .unwrap_or(i18n::DEFAULT)
}

/// `/start`: registers the chat (idempotent), and resumes deliveries a block paused.
pub(crate) async fn start(bot: &Bot, msg: &Message, ctx: &Ctx, lookup: Lookup) -> HandlerResult {
    let lang = lookup.lang;
    let existing = match lookup.user {
        Ok(existing) => existing,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let answer = match existing {
        // Deliveries were paused because the chat had blocked the bot; writing to it again
        // means it wants them back.
        Some(user) if user.settings.paused => match ctx.api.set_paused(user.id, false).await {
            Ok(()) => text(lang, "start-resumed", &[]),
            Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
        },
        Some(user) => text(lang, "start-again", &[("language", user.language.into())]),
        None => match ctx
            .api
            .register(msg.chat.id.0, &chat_name(&msg.chat), lang)
            .await
        {
            Ok(user) => {
                let lang = i18n::language_for(&user.language);
                text(lang, "start-new", &[("language", user.language.into())])
            }
            Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
        },
    };
    reply(bot, msg, &answer).await
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

/// Why a settings link could not be sent.
enum LinkError {
    /// The api refused or is unreachable.
    Api(ApiError),
    /// Telegram refused the message.
    Telegram(teloxide::RequestError),
}

/// Sends a fresh session link for `user` to chat `to`, worded in `lang`; `group` names
/// the group the link is for when it goes to an admin's private chat.
async fn send_session_link(
    bot: &Bot,
    ctx: &Ctx,
    to: ChatId,
    lang: &str,
    user: &User,
    group: Option<&str>,
) -> Result<(), LinkError> {
    let session = ctx.api.new_session(user.id).await.map_err(LinkError::Api)?;
    let link = session_link(&ctx.config.frontend_url, &session.token);
    let minutes = (session.expires_at - chrono::Utc::now())
        .num_minutes()
        .max(1);
    let target = match group {
        Some(name) if !name.is_empty() => text(
            lang,
            "settings-target-group",
            &[("name", escape(name).into())],
        ),
        Some(_) => text(lang, "settings-target-group-unnamed", &[]),
        None => text(lang, "settings-target-own", &[]),
    };
    let html = text(
        lang,
        "settings-link",
        &[
            ("target", target.into()),
            ("href", escape(&link).into()),
            ("minutes", minutes.into()),
        ],
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
                InlineKeyboardButton::url(text(lang, "settings-button", &[]), url),
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
pub(crate) async fn settings(
    bot: &Bot,
    msg: &Message,
    ctx: &Ctx,
    lookup: Lookup,
    me: &Me,
) -> HandlerResult {
    let lang = lookup.lang;
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref(), lookup.user).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    if msg.chat.is_private() {
        return match send_session_link(bot, ctx, msg.chat.id, lang, &user, None).await {
            Ok(()) => Ok(()),
            Err(LinkError::Api(err)) => api_trouble(bot, msg.chat.id, lang, &err).await,
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
        let hint = text(lang, "settings-private-only", &[("link", deep_link.into())]);
        return reply(bot, msg, &hint).await;
    };
    let to = ChatId(admin.id.0 as i64);
    match send_session_link(bot, ctx, to, lang, &user, Some(&chat_name(&msg.chat))).await {
        Ok(()) => {
            let sent = text(
                lang,
                "settings-sent-privately",
                &[("admin", admin.first_name.as_str().into())],
            );
            reply(bot, msg, &sent).await
        }
        Err(LinkError::Api(err)) => api_trouble(bot, msg.chat.id, lang, &err).await,
        Err(LinkError::Telegram(err)) => match classify(&err) {
            Failure::Forbidden(reason) => {
                tracing::info!(chat_id = msg.chat.id.0, user_id = admin.id.0, %reason, "cannot write to the admin privately");
                let hint = text(
                    lang,
                    "settings-start-private",
                    &[
                        ("admin", admin.first_name.as_str().into()),
                        ("link", deep_link.into()),
                    ],
                );
                reply(bot, msg, &hint).await
            }
            _ => Err(err.into()),
        },
    }
}

/// `/start settings_<group>` in a private chat (the deep link [`settings`] offers): the
/// group's settings link, if the person is one of its admins. `lang` is the private
/// chat's.
pub(crate) async fn group_settings_link(
    bot: &Bot,
    msg: &Message,
    ctx: &Ctx,
    lang: &str,
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
        return reply(bot, msg, &text(lang, REFUSAL, &[])).await;
    }
    let user = match ctx.api.user_by_chat(group.0).await {
        Ok(Some(user)) => user,
        Ok(None) => return reply(bot, msg, &text(lang, "settings-group-unregistered", &[])).await,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    match send_session_link(bot, ctx, msg.chat.id, lang, &user, Some(&user.name)).await {
        Ok(()) => Ok(()),
        Err(LinkError::Api(err)) => api_trouble(bot, msg.chat.id, lang, &err).await,
        Err(LinkError::Telegram(err)) => Err(err.into()),
    }
}

/// `/lang <code>`: the language of replies and notifications.
pub(crate) async fn lang(
    bot: &Bot,
    msg: &Message,
    ctx: &Ctx,
    lookup: Lookup,
    code: &str,
) -> HandlerResult {
    let lang = lookup.lang;
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref(), lookup.user).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let languages = i18n::spoken_languages();
    if code.is_empty() {
        let current = text(
            lang,
            "lang-current",
            &[
                ("language", user.language.into()),
                ("languages", languages.into()),
            ],
        );
        return reply(bot, msg, &current).await;
    }
    let Some(code) = i18n::spoken_language(code) else {
        let shown: String = code.chars().take(32).collect();
        let unknown = text(
            lang,
            "lang-unknown",
            &[("code", shown.into()), ("languages", languages.into())],
        );
        return reply(bot, msg, &unknown).await;
    };
    match ctx.api.set_language(user.id, code).await {
        // Said in the new language: the chat hears right away what it chose.
        Ok(()) => {
            reply(
                bot,
                msg,
                &text(code, "lang-set", &[("language", code.into())]),
            )
            .await
        }
        Err(err) => api_trouble(bot, msg.chat.id, lang, &err).await,
    }
}

/// `/delete`: asks for confirmation.
pub(crate) async fn delete(bot: &Bot, msg: &Message, lookup: Lookup) -> HandlerResult {
    let lang = lookup.lang;
    match lookup.user {
        Ok(Some(_)) => {}
        Ok(None) => return reply(bot, msg, &text(lang, "delete-nothing", &[])).await,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    }
    let keyboard = InlineKeyboardMarkup::new(vec![vec![
        InlineKeyboardButton::callback(text(lang, "delete-yes", &[]), Callback::DeleteYes.encode()),
        InlineKeyboardButton::callback(text(lang, "button-cancel", &[]), Callback::Cancel.encode()),
    ]]);
    bot.send_message(msg.chat.id, text(lang, "delete-ask", &[]))
        .reply_markup(keyboard)
        .await?;
    Ok(())
}

/// The confirmed `/delete` of the chat's registration `looked_up`: what to show, in
/// `lang`, in place of the question.
pub(crate) async fn delete_confirmed(
    ctx: &Ctx,
    lang: &str,
    looked_up: Result<Option<User>, ApiError>,
) -> Result<String, ApiError> {
    match looked_up? {
        Some(user) => {
            ctx.api.delete_user(user.id).await?;
            Ok(text(lang, "delete-done", &[]))
        }
        None => Ok(text(lang, "delete-gone", &[])),
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
}
