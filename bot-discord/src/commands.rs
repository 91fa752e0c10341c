//! The bot's slash commands: their definitions as registered with Discord, their
//! registration at start-up, and how a command's [`Reply`] becomes a Discord message.
//!
//! What the commands do is network-neutral and lives in
//! [`stargazer_delivery::commands`]; this module only says how Discord writes them
//! ([`syntax`]), what Discord is told about them ([`definitions`], registered by one bulk
//! overwrite in [`register`]), and how a reply looks on Discord ([`message`]): plain text
//! with, after a subscription, a string select menu of the event kinds whose
//! `custom_id` is [`KINDS_PREFIX`] followed by the entity id.
//!
//! Every command is guild-only (`contexts: [0]`): a channel's subscriptions belong to its
//! server. No `default_member_permissions` is set, because who may change a channel is
//! decided per interaction (Manage Channels, Administrator, or the configured manager
//! role), and a member with that role but neither permission must still see the commands.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use stargazer_delivery::commands::{catalog, text, KindsMenu, Reply, Syntax};
use stargazer_delivery::compose::truncate;
use tokio_util::sync::CancellationToken;
use twilight_model::application::command::{
    CommandOption, CommandOptionChoice, CommandOptionChoiceValue, CommandOptionType, CommandType,
};
use twilight_model::application::interaction::InteractionContextType;
use twilight_model::channel::message::component::{
    ActionRow, SelectMenu, SelectMenuOption, SelectMenuType,
};
use twilight_model::channel::message::Component;
use twilight_model::id::marker::ApplicationMarker;
use twilight_model::id::Id;
use twilight_model::oauth::ApplicationIntegrationType;

use crate::rest::{MessageBody, RestClient, SendError};

/// `/subscribe entity:<name or id>`.
pub const SUBSCRIBE: &str = "subscribe";
/// `/unsubscribe entity:<name or id>`.
pub const UNSUBSCRIBE: &str = "unsubscribe";
/// `/mention entity:<name or id> [role:<role>]`: the role a subscription's posts
/// mention (no role: none).
pub const MENTION: &str = "mention";
/// `/list`.
pub const LIST: &str = "list";
/// `/settings`.
pub const SETTINGS: &str = "settings";
/// `/lang [code:<language>]`.
pub const LANG: &str = "lang";
/// `/delete [confirm:<boolean>]`.
pub const DELETE: &str = "delete";
/// `/help`.
pub const HELP: &str = "help";

/// The commands, in the order `/help` lists them, with the catalog message describing
/// each.
pub const COMMANDS: [(&str, &str); 8] = [
    (SUBSCRIBE, "command-subscribe"),
    (UNSUBSCRIBE, "command-unsubscribe"),
    (MENTION, "command-mention"),
    (LIST, "command-list"),
    (SETTINGS, "command-settings"),
    (LANG, "command-lang"),
    (DELETE, "command-delete"),
    (HELP, "command-help"),
];

/// The option naming a streamer (`/subscribe`, `/unsubscribe`).
pub const ENTITY_OPTION: &str = "entity";
/// The role option of `/mention`.
pub const ROLE_OPTION: &str = "role";
/// The option of `/lang`.
pub const CODE_OPTION: &str = "code";
/// The option of `/delete`.
pub const CONFIRM_OPTION: &str = "confirm";

/// How the custom id of a kinds menu starts; the entity id follows.
pub const KINDS_PREFIX: &str = "kinds:";

/// Longest message content Discord accepts, in characters.
const CONTENT_LIMIT: usize = 2000;
/// Longest select option label, autocomplete choice name and command description.
pub const LABEL_LIMIT: usize = 100;
/// Most options of a select menu, and most autocomplete choices.
pub const MAX_CHOICES: usize = 25;
/// Longest select menu placeholder.
const PLACEHOLDER_LIMIT: usize = 150;

/// Discord's locales the catalog's languages are registered under (Discord has no bare
/// `zh`: its Chinese locales are `zh-CN` and `zh-TW`, and the catalog's is simplified).
const LOCALES: [(&str, &str); 2] = [("ja", "ja"), ("zh", "zh-CN")];

/// How replies show a role mention: `<@&id>`, which Discord clients show as the role's
/// name (answers set no `allowed_mentions`, so it never pings).
pub fn role_label(role: &str) -> String {
    format!("<@&{role}>")
}

/// How replies hint at the commands on Discord.
pub fn syntax() -> Syntax {
    Syntax {
        subscribe: "/subscribe entity:",
        unsubscribe: "/unsubscribe entity:",
        list: "/list",
        lang: "/lang code:",
        delete_confirmed: "/delete confirm:True",
    }
}

/// One command of the bulk overwrite: the fields Discord reads when it creates a command
/// (twilight's [`twilight_model::application::command::Command`] is the stored shape,
/// with the id and version Discord assigns, so it serves as the answer's type instead).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewCommand {
    /// The name, as typed after the slash.
    pub name: String,
    /// A chat-input (slash) command.
    #[serde(rename = "type")]
    pub kind: CommandType,
    /// What it does (1–100 characters), in English.
    pub description: String,
    /// The description in other Discord locales.
    pub description_localizations: HashMap<String, String>,
    /// Its options.
    pub options: Vec<CommandOption>,
    /// Where it may be used: servers only.
    pub contexts: Vec<InteractionContextType>,
    /// How the application is installed for it: to a server.
    pub integration_types: Vec<ApplicationIntegrationType>,
}

/// Descriptions of the options, `(English, Japanese, Chinese)`: the catalog words only
/// replies, so these few words are kept here.
const OPTION_WORDS: [(&str, [&str; 3]); 5] = [
    (
        "entity-subscribe",
        [
            "A streamer's name, in any language, or id",
            "配信者の名前（どの言語でも）または ID",
            "主播的名字（任何语言）或 ID",
        ],
    ),
    (
        "entity-unsubscribe",
        [
            "A streamer this channel is subscribed to",
            "このチャンネルが購読している配信者",
            "本频道已订阅的主播",
        ],
    ),
    (
        "role",
        [
            "The role to mention; leave it out to mention nobody",
            "メンションするロール（省略でメンションなし）",
            "要提及的身份组；省略则不提及",
        ],
    ),
    (
        "code",
        [
            "The language of replies and notifications",
            "返信と通知の言語",
            "回复和通知的语言",
        ],
    ),
    (
        "confirm",
        [
            "True deletes at once; without it the bot asks first",
            "True ですぐに削除します。省略すると確認します",
            "True 立即删除；省略时先确认",
        ],
    ),
];

/// The words of option `id`: English, and the localizations.
fn option_words(id: &str) -> (String, HashMap<String, String>) {
    let words = OPTION_WORDS
        .iter()
        .find(|(key, _)| *key == id)
        .map(|(_, words)| *words)
        .unwrap_or([id, id, id]);
    let localized = HashMap::from([
        ("ja".to_owned(), words[1].to_owned()),
        ("zh-CN".to_owned(), words[2].to_owned()),
    ]);
    (words[0].to_owned(), localized)
}

fn option(kind: CommandOptionType, name: &str, words: &str, required: bool) -> CommandOption {
    let (description, localized) = option_words(words);
    CommandOption {
        autocomplete: None,
        channel_types: None,
        choices: None,
        description,
        description_localizations: Some(localized),
        kind,
        max_length: None,
        max_value: None,
        min_length: None,
        min_value: None,
        name: name.to_owned(),
        name_localizations: None,
        options: None,
        file_types: None,
        required: Some(required),
    }
}

/// The commands as registered with Discord.
pub fn definitions() -> Vec<NewCommand> {
    COMMANDS
        .iter()
        .map(|(name, description)| {
            let options = match *name {
                SUBSCRIBE | UNSUBSCRIBE | MENTION => {
                    let words = if *name == SUBSCRIBE {
                        "entity-subscribe"
                    } else {
                        "entity-unsubscribe"
                    };
                    let mut entity = option(CommandOptionType::String, ENTITY_OPTION, words, true);
                    entity.autocomplete = Some(true);
                    // Room for a long name typed in full; ids are 36 characters.
                    entity.max_length = Some(100);
                    let mut options = vec![entity];
                    if *name == MENTION {
                        options.push(option(CommandOptionType::Role, ROLE_OPTION, "role", false));
                    }
                    options
                }
                LANG => {
                    let mut code = option(CommandOptionType::String, CODE_OPTION, "code", false);
                    code.choices = Some(
                        catalog()
                            .languages()
                            .iter()
                            .map(|language| CommandOptionChoice {
                                name: text(language, "language-name", &[]),
                                name_localizations: None,
                                value: CommandOptionChoiceValue::String((*language).to_owned()),
                            })
                            .collect(),
                    );
                    vec![code]
                }
                DELETE => vec![option(
                    CommandOptionType::Boolean,
                    CONFIRM_OPTION,
                    "confirm",
                    false,
                )],
                _ => Vec::new(),
            };
            NewCommand {
                name: (*name).to_owned(),
                kind: CommandType::ChatInput,
                description: truncate(&text("en", description, &[]), LABEL_LIMIT),
                description_localizations: LOCALES
                    .iter()
                    .map(|(language, locale)| {
                        (
                            (*locale).to_owned(),
                            truncate(&text(language, description, &[]), LABEL_LIMIT),
                        )
                    })
                    .collect(),
                options,
                contexts: vec![InteractionContextType::Guild],
                integration_types: vec![ApplicationIntegrationType::GuildInstall],
            }
        })
        .collect()
}

/// First wait between registration attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Registers [`definitions`] for `application`, trying again with backoff while Discord
/// cannot be reached or fails, until it succeeds, Discord refuses them for good, or
/// `shutdown`. Run beside delivery: notifications never wait for it.
pub async fn register(
    rest: RestClient,
    application: Id<ApplicationMarker>,
    shutdown: CancellationToken,
) {
    let commands = definitions();
    let mut wait = FIRST_BACKOFF;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            attempt = rest.overwrite_commands(application, &commands) => attempt,
        };
        match attempt {
            Ok(registered) => {
                tracing::info!(count = registered.len(), "slash commands registered");
                return;
            }
            Err(SendError::BadAnswer(cause)) => {
                // Accepted (2xx): the commands are there even if the answer is odd.
                tracing::warn!(%cause, "slash commands registered; Discord's answer was unreadable");
                return;
            }
            Err(err @ (SendError::Invalid { .. } | SendError::Gone { .. })) => {
                // The same request would be refused again: an operator must look.
                tracing::error!(cause = %err, "Discord refused the slash commands; they are not registered");
                return;
            }
            Err(err) => {
                tracing::warn!(cause = %err, ?wait, "could not register the slash commands; trying again");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// The content of `reply`: its text, and the menu's prompt under it when it has one.
pub fn content(reply: &Reply) -> String {
    let text = match &reply.menu {
        Some(menu) => format!("{}\n{}", reply.text, menu.prompt),
        None => reply.text.clone(),
    };
    truncate(&text, CONTENT_LIMIT)
}

/// The action rows of `reply`: the kinds menu, when it has one (none otherwise, which
/// also clears a menu when a message is edited).
pub fn components(reply: &Reply) -> Vec<Component> {
    reply.menu.iter().map(kinds_row).collect()
}

/// `reply` as a message body.
pub fn message(reply: &Reply) -> MessageBody {
    MessageBody {
        content: Some(content(reply)),
        components: Some(components(reply)),
        ..MessageBody::default()
    }
}

/// The action row holding the string select menu of `menu`.
pub fn kinds_row(menu: &KindsMenu) -> Component {
    let options: Vec<SelectMenuOption> = menu
        .options
        .iter()
        .take(MAX_CHOICES)
        .map(|option| SelectMenuOption {
            default: option.selected,
            description: None,
            emoji: None,
            label: truncate(&option.label, LABEL_LIMIT),
            value: option.kind.to_owned(),
        })
        .collect();
    let count = u8::try_from(options.len()).unwrap_or(MAX_CHOICES as u8);
    Component::ActionRow(ActionRow {
        id: None,
        components: vec![Component::SelectMenu(SelectMenu {
            channel_types: None,
            custom_id: format!("{KINDS_PREFIX}{}", menu.entity),
            default_values: None,
            disabled: false,
            id: None,
            kind: SelectMenuType::Text,
            max_values: Some(count.max(1)),
            min_values: Some(1),
            options: Some(options),
            placeholder: Some(truncate(&menu.prompt, PLACEHOLDER_LIMIT)),
            required: None,
        })],
    })
}

#[cfg(test)]
mod tests {
    use stargazer_delivery::commands::KindOption;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn definitions_are_discords_shape() {
        let json = serde_json::to_value(definitions()).unwrap();
        let commands = json.as_array().unwrap();
        let names: Vec<_> = commands
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "subscribe",
                "unsubscribe",
                "mention",
                "list",
                "settings",
                "lang",
                "delete",
                "help"
            ]
        );
        for command in commands {
            assert_eq!(command["type"], 1);
            assert_eq!(command["contexts"], serde_json::json!([0]));
            let description = command["description"].as_str().unwrap();
            assert!((1..=100).contains(&description.chars().count()));
            for locale in ["ja", "zh-CN"] {
                assert!(command["description_localizations"][locale].is_string());
            }
        }
        let subscribe = &commands[0]["options"][0];
        assert_eq!(subscribe["name"], "entity");
        assert_eq!(subscribe["type"], 3);
        assert_eq!(subscribe["required"], true);
        assert_eq!(subscribe["autocomplete"], true);
        let mention = &commands[2]["options"];
        assert_eq!(mention[1]["name"], "role");
        assert_eq!(mention[1]["type"], 8);
        assert_eq!(mention[1]["required"], false);
        let lang = &commands[5]["options"][0];
        assert_eq!(lang["required"], false);
        let values: Vec<_> = lang["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["value"].as_str().unwrap())
            .collect();
        assert_eq!(values, ["en", "ja", "zh"]);
        assert_eq!(commands[6]["options"][0]["type"], 5);
    }

    #[test]
    fn a_menu_is_a_string_select_with_its_selection() {
        let entity = Uuid::from_u128(7);
        let reply = Reply {
            text: "Subscribed.".into(),
            menu: Some(KindsMenu {
                entity,
                prompt: "Choose:".into(),
                options: vec![
                    KindOption {
                        kind: "twitch.live",
                        label: "L".repeat(120),
                        selected: true,
                    },
                    KindOption {
                        kind: "twitch.ended",
                        label: "Ended".into(),
                        selected: false,
                    },
                ],
            }),
            failed: false,
            language: "en",
        };
        assert_eq!(content(&reply), "Subscribed.\nChoose:");
        let json = serde_json::to_value(components(&reply)).unwrap();
        let menu = &json[0]["components"][0];
        assert_eq!(json[0]["type"], 1);
        assert_eq!(menu["type"], 3);
        assert_eq!(menu["custom_id"], format!("kinds:{entity}"));
        assert_eq!(menu["min_values"], 1);
        assert_eq!(menu["max_values"], 2);
        assert_eq!(menu["options"][0]["default"], true);
        assert_eq!(menu["options"][1]["default"], false);
        assert_eq!(
            menu["options"][0]["label"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            100
        );
        assert_eq!(menu["options"][1]["value"], "twitch.ended");
    }
}
