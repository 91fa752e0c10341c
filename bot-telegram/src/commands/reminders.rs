//! `/reminders`: which reminder leads a chat wants before a stream, picked on an inline
//! keyboard among `contract::REMINDER_LEAD_CHOICES_MINUTES` and saved through the api's
//! `updateSetting` (`reminder_leads`). No lead chosen means the default one.
//!
//! Its buttons carry their own data (`r:t:<mask>` toggles, `r:s:<mask>` saves; the mask
//! is a bit per choice), routed here before the other keyboards' presses
//! ([`is_ours`]); Cancel is the shared [`Callback::Cancel`].

use stargazer_core::contract::REMINDER_LEAD_CHOICES_MINUTES;
use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use super::account::ensure_user;
use super::admin::{may_change, REFUSAL};
use super::{api_trouble, look_up, trouble_text, Callback, Ctx, HandlerResult, Lookup};
use crate::delivery::send::DEFAULT_LEAD_MINUTES;
use crate::i18n::text;

/// The prefix of this keyboard's button data.
const PREFIX: &str = "r:";

/// A press on the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Press {
    /// Show this selection.
    Toggle(u8),
    /// Save this selection.
    Save(u8),
}

impl Press {
    fn encode(self) -> String {
        match self {
            Press::Toggle(mask) => format!("{PREFIX}t:{mask}"),
            Press::Save(mask) => format!("{PREFIX}s:{mask}"),
        }
    }

    fn parse(data: &str) -> Option<Self> {
        let (what, mask) = data.strip_prefix(PREFIX)?.split_once(':')?;
        let mask: u8 = mask.parse().ok()?;
        if mask & !ALL != 0 {
            return None;
        }
        match what {
            "t" => Some(Press::Toggle(mask)),
            "s" => Some(Press::Save(mask)),
            _ => None,
        }
    }
}

/// Every choice selected.
const ALL: u8 = (1 << REMINDER_LEAD_CHOICES_MINUTES.len()) - 1;

/// The selection mask of `leads` (values that are not choices are left out).
fn mask_of(leads: &[u32]) -> u8 {
    REMINDER_LEAD_CHOICES_MINUTES
        .iter()
        .enumerate()
        .filter(|(_, minutes)| leads.contains(minutes))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// The leads of a selection mask, in ascending order.
fn leads_of(mask: u8) -> Vec<u32> {
    REMINDER_LEAD_CHOICES_MINUTES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, minutes)| *minutes)
        .collect()
}

/// `5, 60 minutes before`, or the default, in `lang`.
fn describe(leads: &[u32], lang: &str) -> String {
    if leads.is_empty() {
        return text(
            lang,
            "reminders-default",
            &[("minutes", DEFAULT_LEAD_MINUTES.into())],
        );
    }
    let list: Vec<String> = leads.iter().map(u32::to_string).collect();
    text(lang, "reminders-leads", &[("list", list.join(", ").into())])
}

fn keyboard(mask: u8, lang: &str) -> InlineKeyboardMarkup {
    let choices = REMINDER_LEAD_CHOICES_MINUTES
        .iter()
        .enumerate()
        .map(|(i, minutes)| {
            let bit = 1u8 << i;
            let mark = if mask & bit != 0 { "✅" } else { "⬜" };
            InlineKeyboardButton::callback(
                format!(
                    "{mark} {}",
                    text(lang, "reminders-button", &[("minutes", (*minutes).into())])
                ),
                Press::Toggle(mask ^ bit).encode(),
            )
        })
        .collect();
    InlineKeyboardMarkup::new(vec![
        choices,
        vec![
            InlineKeyboardButton::callback(
                text(lang, "reminders-save", &[]),
                Press::Save(mask).encode(),
            ),
            InlineKeyboardButton::callback(
                text(lang, "button-cancel", &[]),
                Callback::Cancel.encode(),
            ),
        ],
    ])
}

fn prompt(current: &[u32], lang: &str) -> String {
    text(
        lang,
        "reminders-prompt",
        &[("now", describe(current, lang).into())],
    )
}

/// Whether a button press belongs to this keyboard.
pub(crate) fn is_ours(query: CallbackQuery) -> bool {
    query.data.as_deref().is_some_and(|d| d.starts_with(PREFIX))
}

/// `/reminders`: the picker, showing the chat's current leads.
pub(crate) async fn show(bot: &Bot, msg: &Message, ctx: &Ctx, lookup: Lookup) -> HandlerResult {
    let lang = lookup.lang;
    let user = match ensure_user(ctx, &msg.chat, msg.from.as_ref(), lookup.user).await {
        Ok(user) => user,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    let current = match ctx.api.reminder_leads(user.id).await {
        Ok(leads) => leads,
        Err(err) => return api_trouble(bot, msg.chat.id, lang, &err).await,
    };
    bot.send_message(msg.chat.id, prompt(&current, lang))
        .reply_markup(keyboard(mask_of(&current), lang))
        .await?;
    Ok(())
}

/// A press on the picker: toggles a lead, or saves the selection.
pub(crate) async fn on_callback(
    bot: Bot,
    query: CallbackQuery,
    ctx: std::sync::Arc<Ctx>,
) -> HandlerResult {
    let press = query.data.as_deref().and_then(Press::parse);
    let (Some(press), Some(message)) = (press, query.message.as_ref()) else {
        bot.answer_callback_query(query.id.clone())
            .text(text("en", "button-expired", &[]))
            .await?;
        return Ok(());
    };
    let chat = message.chat().clone();
    let message_id = message.id();
    let lookup = look_up(&ctx, &chat, Some(&query.from)).await;
    let lang = lookup.lang;
    if !may_change(&bot, &ctx.admins, &chat, Some(&query.from), None).await? {
        bot.answer_callback_query(query.id.clone())
            .text(text(lang, REFUSAL, &[]))
            .show_alert(true)
            .await?;
        return Ok(());
    }
    let notice = match press {
        Press::Toggle(mask) => {
            match bot
                .edit_message_reply_markup(chat.id, message_id)
                .reply_markup(keyboard(mask, lang))
                .await
            {
                // A second press on the same button: nothing changed.
                Err(teloxide::RequestError::Api(teloxide::ApiError::MessageNotModified)) => {}
                other => {
                    other?;
                }
            }
            None
        }
        Press::Save(mask) => {
            let saved = match ensure_user(&ctx, &chat, None, lookup.user).await {
                Ok(user) => ctx.api.set_reminder_leads(user.id, &leads_of(mask)).await,
                Err(err) => Err(err),
            };
            match saved {
                Ok(leads) => {
                    let done = text(
                        lang,
                        "reminders-saved",
                        &[("leads", describe(&leads, lang).into())],
                    );
                    bot.edit_message_text(chat.id, message_id, done).await?;
                    None
                }
                Err(err) => {
                    tracing::warn!(chat_id = chat.id.0, cause = %err, "saving reminder leads failed at the api");
                    Some(trouble_text(lang, &err))
                }
            }
        }
    };
    let mut answer = bot.answer_callback_query(query.id.clone());
    if let Some(text) = notice {
        answer = answer.text(text).show_alert(true);
    }
    answer.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presses_round_trip_and_masks_follow_the_choices() {
        for press in [Press::Toggle(0), Press::Toggle(ALL), Press::Save(5)] {
            let data = press.encode();
            assert!(data.len() <= 64);
            assert_eq!(Press::parse(&data), Some(press));
        }
        assert_eq!(Press::parse("r:t:16"), None, "not a choice");
        assert_eq!(Press::parse("r:x:1"), None);
        assert_eq!(Press::parse("k:1"), None);
        assert_eq!(leads_of(mask_of(&[60, 5])), vec![5, 60]);
        assert_eq!(mask_of(&[7, 30]), 0b0100);
        assert_eq!(leads_of(0), Vec::<u32>::new());
        assert_eq!(describe(&[], "en"), "30 minutes before (the default)");
        assert_eq!(describe(&[5, 60], "en"), "5, 60 minutes before");
        assert_eq!(describe(&[5, 60], "ja"), "5, 60 分前");
    }

    #[test]
    fn the_kind_picker_offers_every_kind() {
        use super::super::subscriptions::KINDS;
        for kind in stargazer_core::contract::kind::ALL {
            assert!(KINDS.iter().any(|(k, _)| *k == kind), "{kind} missing");
        }
    }
}
