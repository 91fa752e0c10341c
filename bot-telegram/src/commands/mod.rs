//! Chat commands and inline-keyboard presses, on a teloxide dispatcher.
//!
//! The single [`Command`] enum is the dispatch table (its `///` docs are `/help`);
//! handlers live per group: [`account`] (`/start`, `/help`, `/settings`, `/lang`,
//! `/delete`) and [`subscriptions`] (`/subscribe`, `/unsubscribe`, `/list` and their
//! keyboards). [`admin`] decides who may change a group's settings (`/start` included).
//! A group's `/settings` link never appears in the group: it goes privately to the admin
//! who asked (see [`account::settings`]).
//!
//! Every message that looks like a command gets an answer: a result, a usage hint for bad
//! arguments, the command list for unknown commands, or a refusal for group members who
//! are not admins. When the api is unreachable the chat is told to try again later.
//!
//! Answers are in the chat's language (its user's `language`, see [`Lookup`]), worded in
//! the `.ftl` files of [`crate::i18n`]; so are `/help` and the command menu published
//! to Telegram per language.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod poll_lease;
pub(crate) mod reminders;
pub(crate) mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use stargazer_core::backoff::Backoff;
use stargazer_core::wait::sleep_unless_cancelled;
use teloxide::dispatching::{Dispatcher, UpdateFilterExt, UpdateHandler};
use teloxide::error_handlers::ErrorHandler;
use teloxide::prelude::*;
use teloxide::types::{BotCommand, Me, ParseMode, User as TgUser};
use teloxide::update_listeners::Polling;
use teloxide::utils::command::{BotCommands, ParseError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::BotConfig;
use crate::i18n::{self, text};
use crate::Result;
use admin::AdminCache;
use stargazer_delivery::api::{Api, ApiError, User};

/// The bot's commands. The `///` docs are the English fallback of the descriptions, which
/// come from the `command-<name>` messages of the chat's language (see [`help`]).
#[derive(BotCommands, Clone, Debug, PartialEq, Eq)]
#[command(
    rename_rule = "lowercase",
    description = "Stargazer tells you when your favourite streamers go live, post or upload. Commands:"
)]
pub(crate) enum Command {
    /// Register this chat (safe to repeat).
    Start(String),
    /// Show this help.
    Help,
    /// Subscribe to a streamer: /subscribe <name or id>
    Subscribe(String),
    /// Unsubscribe: /unsubscribe [name]
    Unsubscribe(String),
    /// List your subscriptions.
    List,
    /// Get a link to edit your settings on the web.
    Settings,
    /// Set the language of notifications: /lang <code>, e.g. /lang ja
    Lang(String),
    /// Choose how long before a stream you are reminded.
    Reminders,
    /// Delete this chat's registration and subscriptions.
    Delete,
}

/// What every handler shares (injected with `dptree::deps!`).
pub(crate) struct Ctx {
    /// The Stargazer api.
    pub api: Api,
    /// The bot's configuration.
    pub config: Arc<BotConfig>,
    /// Remembered group-admin checks.
    pub admins: AdminCache,
}

/// The chat's registration, looked up once per update, and the language to answer in.
pub(crate) struct Lookup {
    /// The chat's user (`None`: not registered), or why the api could not tell.
    pub user: std::result::Result<Option<User>, ApiError>,
    /// The user's language when the bot speaks it; for an unregistered chat (or when the
    /// api is down) the language it would be registered in.
    pub lang: &'static str,
}

/// Looks up `chat`'s registration and language (`from`: who wrote, for the language a
/// private chat would start in).
pub(crate) async fn look_up(
    ctx: &Ctx,
    chat: &teloxide::types::Chat,
    from: Option<&TgUser>,
) -> Lookup {
    let user = ctx.api.user_by_chat(chat.id.0).await;
    let lang = match &user {
        Ok(Some(user)) => i18n::language_for(&user.language),
        Ok(None) => account::initial_language(chat, from),
        Err(err) => {
            tracing::debug!(chat_id = chat.id.0, cause = %err, "chat language unknown; api unavailable");
            account::initial_language(chat, from)
        }
    };
    Lookup { user, lang }
}

/// The `/help` text in `lang`: what the bot does, then every command.
pub(crate) fn help(lang: &str) -> String {
    let mut out = text(lang, "help-intro", &[]);
    out.push('\n');
    for command in bot_commands(lang) {
        out.push_str(&format!("\n{} — {}", command.command, command.description));
    }
    out
}

/// The command menu in `lang` (descriptions missing from the locale files keep the
/// English of the [`Command`] docs).
pub(crate) fn bot_commands(lang: &str) -> Vec<BotCommand> {
    Command::bot_commands()
        .into_iter()
        .map(|command| {
            let id = format!("command-{}", command.command.trim_start_matches('/'));
            match i18n::try_text(lang, &id, &[]) {
                Some(description) => BotCommand::new(command.command, description),
                None => command,
            }
        })
        .collect()
}

/// Publishes the command menu: English for everyone, and each other language for the
/// Telegram clients set to it.
async fn publish_commands(bot: &Bot) {
    for (code, _) in i18n::LANGUAGES {
        let mut request = bot.set_my_commands(bot_commands(code));
        if code != i18n::DEFAULT {
            request = request.language_code(code);
        }
        if let Err(err) = request.await {
            // Only the command menu in clients depends on it.
            tracing::warn!(language = code, cause = %err, "could not publish the command list");
        }
    }
}

/// A handler failure worth logging (user-facing problems are answered in the chat).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    /// Telegram refused or could not be reached.
    #[error("telegram: {0}")]
    Telegram(#[from] teloxide::RequestError),
}

/// Handler result.
pub(crate) type HandlerResult = std::result::Result<(), HandlerError>;

/// Logs handler errors with their cause (the dispatcher's error handler).
struct LogErrors;

impl ErrorHandler<HandlerError> for LogErrors {
    fn handle_error(
        self: Arc<Self>,
        error: HandlerError,
    ) -> futures::future::BoxFuture<'static, ()> {
        tracing::warn!(cause = %error, "command handler failed");
        Box::pin(async {})
    }
}

/// The update routing: messages and callback queries.
pub(crate) fn schema() -> UpdateHandler<HandlerError> {
    dptree::entry()
        .branch(Update::filter_message().endpoint(on_message))
        .branch(
            Update::filter_callback_query()
                .filter(reminders::is_ours)
                .endpoint(reminders::on_callback),
        )
        .branch(Update::filter_callback_query().endpoint(subscriptions::on_callback))
}

/// Runs the command dispatcher until `shutdown`.
pub(crate) async fn run(
    bot: Bot,
    api: Api,
    config: Arc<BotConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    // Wait until Telegram answers (the dispatcher would otherwise fail at start-up).
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            me = bot.get_me() => match me {
                Ok(me) => {
                    tracing::info!(username = %me.username(), "connected to Telegram");
                    break;
                }
                Err(teloxide::RequestError::Api(teloxide::ApiError::InvalidToken)) => {
                    return Err(crate::Error::Telegram(
                        "the bot token was rejected (check telegram.token)".to_owned(),
                    ));
                }
                Err(err) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(cause = %err, retry_in_ms = wait.as_millis() as u64, "Telegram not reachable");
                    if sleep_unless_cancelled(wait, &shutdown).await.is_cancelled() {
                        return Ok(());
                    }
                }
            }
        }
    }
    publish_commands(&bot).await;

    let ctx = Arc::new(Ctx {
        api,
        admins: AdminCache::new(config.admin_cache_ttl()),
        config: config.clone(),
    });
    let mut dispatcher = Dispatcher::builder(bot.clone(), schema())
        .dependencies(dptree::deps![ctx])
        .default_handler(|update| async move {
            tracing::debug!(update_id = update.id.0, "update ignored");
        })
        .error_handler(Arc::new(LogErrors))
        .build();
    let token = dispatcher.shutdown_token();
    let dispatched = CancellationToken::new();
    let stopper = {
        let dispatched = dispatched.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = dispatched.cancelled() => return,
                _ = shutdown.cancelled() => {}
            }
            // The dispatcher refuses to stop before it has started; try until it has.
            loop {
                match token.shutdown() {
                    Ok(stopped) => {
                        stopped.await;
                        return;
                    }
                    Err(_) if dispatched.is_cancelled() => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let result = loop {
        let listener = Polling::builder(bot.clone())
            .timeout(Duration::from_secs(u64::from(config.poll_timeout_secs)))
            .delete_webhook()
            .await
            .build();
        let outcome = dispatcher
            .try_dispatch_with_listener(
                listener,
                teloxide::error_handlers::LoggingErrorHandler::with_custom_text(
                    "error polling Telegram",
                ),
            )
            .await;
        match outcome {
            Ok(()) => break Ok(()),
            Err(_) if shutdown.is_cancelled() => break Ok(()),
            // Start-up (`getMe`) failed: Telegram blinked since it last answered.
            Err(err) => {
                let wait = backoff.next_delay();
                tracing::warn!(cause = %err, retry_in_ms = wait.as_millis() as u64, "could not start polling");
                if sleep_unless_cancelled(wait, &shutdown).await.is_cancelled() {
                    break Ok(());
                }
            }
        }
    };
    dispatched.cancel();
    if let Err(err) = stopper.await {
        tracing::error!(cause = %err, "dispatcher stopper panicked");
    }
    result
}

/// Routes a message: commands to their handler, everything else to a hint.
async fn on_message(bot: Bot, msg: Message, me: Me, ctx: Arc<Ctx>) -> HandlerResult {
    let Some(message) = msg.text() else {
        return Ok(());
    };
    let private = msg.chat.is_private();
    // Group chatter gets no answer, so it costs no api call either.
    if !message.starts_with('/') {
        if private {
            let lookup = look_up(&ctx, &msg.chat, msg.from.as_ref()).await;
            reply(&bot, &msg, &text(lookup.lang, "only-commands", &[])).await?;
        }
        return Ok(());
    }
    let command = match Command::parse(message, me.username()) {
        Ok(command) => command,
        // Addressed to another bot in the same group.
        Err(ParseError::WrongBotName(_)) => return Ok(()),
        Err(ParseError::UnknownCommand(name)) => {
            // In a group an unknown bare command is likely another bot's; answer only
            // when it was addressed to us.
            if private
                || message
                    .split_whitespace()
                    .next()
                    .is_some_and(|c| c.contains(&format!("@{}", me.username())))
            {
                let lang = look_up(&ctx, &msg.chat, msg.from.as_ref()).await.lang;
                let name = name.split('@').next().unwrap_or(&name).to_owned();
                let unknown = text(lang, "unknown-command", &[("command", name.into())]);
                reply(&bot, &msg, &format!("{unknown}\n\n{}", help(lang))).await?;
            }
            return Ok(());
        }
        Err(err) => {
            let lang = look_up(&ctx, &msg.chat, msg.from.as_ref()).await.lang;
            let unreadable = text(
                lang,
                "unreadable-command",
                &[("reason", err.to_string().into())],
            );
            reply(&bot, &msg, &format!("{unreadable}\n\n{}", help(lang))).await?;
            return Ok(());
        }
    };
    tracing::debug!(chat_id = msg.chat.id.0, ?command, "command");
    let lookup = look_up(&ctx, &msg.chat, msg.from.as_ref()).await;
    // `/start` registers a group, so in groups it is for admins too (in a private chat
    // everything is allowed).
    let needs_admin = matches!(
        command,
        Command::Start(_)
            | Command::Subscribe(_)
            | Command::Unsubscribe(_)
            | Command::Settings
            | Command::Lang(_)
            | Command::Reminders
            | Command::Delete
    );
    if needs_admin
        && !admin::may_change(
            &bot,
            &ctx.admins,
            &msg.chat,
            msg.from.as_ref(),
            msg.sender_chat.as_ref(),
        )
        .await?
    {
        reply(&bot, &msg, &text(lookup.lang, admin::REFUSAL, &[])).await?;
        return Ok(());
    }
    match command {
        Command::Start(payload) => match account::settings_payload(&payload) {
            Some(group) if private => {
                account::group_settings_link(&bot, &msg, &ctx, lookup.lang, group).await
            }
            _ => account::start(&bot, &msg, &ctx, lookup).await,
        },
        Command::Help => reply(&bot, &msg, &help(lookup.lang)).await,
        Command::Subscribe(query) => {
            subscriptions::subscribe(&bot, &msg, &ctx, lookup, query.trim()).await
        }
        Command::Unsubscribe(query) => {
            subscriptions::unsubscribe(&bot, &msg, &ctx, lookup, query.trim()).await
        }
        Command::List => subscriptions::list(&bot, &msg, &ctx, lookup).await,
        Command::Settings => account::settings(&bot, &msg, &ctx, lookup, &me).await,
        Command::Lang(code) => account::lang(&bot, &msg, &ctx, lookup, code.trim()).await,
        Command::Reminders => reminders::show(&bot, &msg, &ctx, lookup).await,
        Command::Delete => account::delete(&bot, &msg, lookup).await,
    }
}

/// Replies in the message's chat (plain text).
pub(crate) async fn reply(bot: &Bot, msg: &Message, text: &str) -> HandlerResult {
    bot.send_message(msg.chat.id, text).await?;
    Ok(())
}

/// Replies with Telegram HTML.
pub(crate) async fn reply_html(bot: &Bot, msg: &Message, html: &str) -> HandlerResult {
    bot.send_message(msg.chat.id, html)
        .parse_mode(ParseMode::Html)
        .await?;
    Ok(())
}

/// Tells the chat, in `lang`, that the api is unreachable (or refused), and logs why.
pub(crate) async fn api_trouble(
    bot: &Bot,
    chat: ChatId,
    lang: &str,
    err: &ApiError,
) -> HandlerResult {
    if err.is_transient() {
        tracing::warn!(chat_id = chat.0, cause = %err, "api unavailable for a command");
    } else {
        tracing::warn!(chat_id = chat.0, cause = %err, "api refused a command");
    }
    bot.send_message(chat, trouble_text(lang, err)).await?;
    Ok(())
}

/// What a chat reading `lang` is told when the api failed with `err`.
pub(crate) fn trouble_text(lang: &str, err: &ApiError) -> String {
    stargazer_delivery::commands::trouble_text_in(i18n::catalog(), lang, err)
}

/// A display name for a chat: its title, or its user's name.
pub(crate) fn chat_name(chat: &teloxide::types::Chat) -> String {
    chat.title()
        .or_else(|| chat.username())
        .or_else(|| chat.first_name())
        .unwrap_or("")
        .chars()
        .take(64)
        .collect()
}

/// Data carried by inline buttons (Telegram allows 64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callback {
    /// Picked an entity among search results: choose its kinds next.
    Pick(Uuid),
    /// Kind selection (bit mask over [`subscriptions::KINDS`]) being edited, among the
    /// kinds of the entity's platforms (bit mask over `contract::source::ALL`).
    Kinds(Uuid, u32, u8),
    /// Kind selection confirmed: subscribe.
    Done(Uuid, u32, u8),
    /// Unsubscribe from an entity.
    Unsubscribe(Uuid),
    /// Confirmed `/delete`.
    DeleteYes,
    /// Cancelled the keyboard.
    Cancel,
}

impl Callback {
    /// The button data.
    pub(crate) fn encode(&self) -> String {
        match self {
            Callback::Pick(id) => format!("p:{id}"),
            Callback::Kinds(id, mask, platforms) => format!("k:{id}:{mask}:{platforms}"),
            Callback::Done(id, mask, platforms) => format!("d:{id}:{mask}:{platforms}"),
            Callback::Unsubscribe(id) => format!("u:{id}"),
            Callback::DeleteYes => "x:yes".to_owned(),
            Callback::Cancel => "c".to_owned(),
        }
    }

    /// Reads button data; `None` for anything this bot did not make.
    pub(crate) fn parse(data: &str) -> Option<Self> {
        let mut parts = data.split(':');
        let tag = parts.next()?;
        let mut id = || parts.next().and_then(|s| s.parse::<Uuid>().ok());
        let parsed = match tag {
            "p" => Callback::Pick(id()?),
            "u" => Callback::Unsubscribe(id()?),
            "k" | "d" => {
                let entity = id()?;
                let mask = parts.next()?.parse::<u32>().ok()?;
                // A keyboard sent before platforms were carried offered the kinds of
                // that time; its masks keep their meaning over those.
                let platforms = match parts.next() {
                    Some(p) => p.parse::<u8>().ok()?,
                    None => subscriptions::EARLIER_KEYBOARD,
                };
                if tag == "k" {
                    Callback::Kinds(entity, mask, platforms)
                } else {
                    Callback::Done(entity, mask, platforms)
                }
            }
            "x" if parts.next() == Some("yes") => Callback::DeleteYes,
            "c" => Callback::Cancel,
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_data_round_trips_within_telegram_limit() {
        let id = Uuid::new_v4();
        for cb in [
            Callback::Pick(id),
            Callback::Kinds(id, 63, 0b0011),
            Callback::Done(id, (1 << 19) - 1, 0b1111),
            Callback::Unsubscribe(id),
            Callback::DeleteYes,
            Callback::Cancel,
        ] {
            let data = cb.encode();
            assert!(data.len() <= 64, "{data}");
            assert_eq!(Callback::parse(&data), Some(cb));
        }
        assert_eq!(Callback::parse("k:nope:1"), None);
        // A keyboard from before platforms were carried keeps its kinds.
        assert_eq!(
            Callback::parse(&format!("d:{id}:4095")),
            Some(Callback::Done(id, 4095, subscriptions::EARLIER_KEYBOARD))
        );
        assert_eq!(Callback::parse(&format!("u:{id}:extra")), None);
        assert_eq!(Callback::parse(""), None);
    }

    #[test]
    fn commands_parse_with_and_without_arguments() {
        assert_eq!(
            Command::parse("/start", "bot").unwrap(),
            Command::Start(String::new())
        );
        assert_eq!(
            Command::parse("/start settings_-100", "bot").unwrap(),
            Command::Start("settings_-100".into())
        );
        assert_eq!(
            Command::parse("/subscribe Minato Aqua", "bot").unwrap(),
            Command::Subscribe("Minato Aqua".into())
        );
        assert_eq!(
            Command::parse("/subscribe@bot", "bot").unwrap(),
            Command::Subscribe(String::new())
        );
        assert!(matches!(
            Command::parse("/subscribe@other x", "bot"),
            Err(ParseError::WrongBotName(_))
        ));
        assert!(matches!(
            Command::parse("/nope", "bot"),
            Err(ParseError::UnknownCommand(_))
        ));
    }

    #[test]
    fn help_and_the_command_menu_speak_every_language() {
        for (lang, intro, start) in [
            ("en", "Stargazer tells you", "Register this chat"),
            ("ja", "お知らせします", "このチャットを登録します"),
            ("zh", "通知你", "注册此聊天"),
        ] {
            let help = help(lang);
            assert!(help.lines().next().unwrap().contains(intro), "{help}");
            assert!(help.contains(&format!("/start — {start}")), "{help}");
            let menu = bot_commands(lang);
            assert_eq!(menu.len(), Command::bot_commands().len());
            assert!(menu[0].description.contains(start), "{menu:?}");
        }
        // An unknown language gets English.
        assert_eq!(help("xx"), help("en"));
        let help = help("ja");
        for name in [
            "/start",
            "/help",
            "/subscribe",
            "/unsubscribe",
            "/list",
            "/settings",
            "/lang",
            "/reminders",
            "/delete",
        ] {
            assert!(help.contains(name), "{help}");
        }
    }
}
