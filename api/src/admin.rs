//! `stargazer admin …`: manage service credentials, entities and groups directly in the
//! configured storage (no running api needed).
//!
//! ```text
//! stargazer admin credential add telegram-bot --api rw --mq ro --queue bot.telegram   # password generated, printed once
//! stargazer admin credential add middleware-delay --mq rw --queue middleware.delay
//! stargazer admin credential add topology --admin rw --mq rw   # for `stargazer admin broker setup`
//! stargazer admin credential add admin --admin rw --api ro --password-stdin < pw.txt
//! stargazer admin credential list
//! stargazer admin credential remove telegram-bot
//! stargazer admin group add --name en=Hololive
//! stargazer admin entity add --name en=Pekora --name ja=ぺこら --youtube UC1DCedRgGHBdm81E1llLhOQ --twitter 1133215093246664706
//! stargazer admin entity list
//! stargazer admin entity remove 6f8e1c52-3a7d-4b0e-9c41-5d2a7e3f0b19
//! stargazer admin channel bind --chat -1001234567890 --entity 6f8e1c52-3a7d-4b0e-9c41-5d2a7e3f0b19 --language ja
//! stargazer admin channel show --chat -1001234567890
//! stargazer admin channel unbind --chat -1001234567890
//! ```
//!
//! A running api remembers verified passwords for `credential_cache_secs`, so a removed
//! credential keeps working there for at most that long.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use stargazer_core::auth::{hash_password, new_password, DEFAULT_ITERATIONS};
use stargazer_core::model::{self, Access, Credential, Permissions};
use stargazer_core::storage::Storage;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::rpc::entities::{build_tasks, ensure_group};
use crate::rpc::validate;
use crate::types::TaskParams;

/// `stargazer admin` and its subcommands, for embedding in the binary's CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// What to manage.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What `stargazer admin` manages.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Service credentials (bots, workers, middlewares, admins).
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Tracked entities and their tasks.
    #[command(subcommand)]
    Entity(EntityCommand),
    /// Groups of entities.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Entity channels: chats (a Telegram channel, a Discord announcement channel) that
    /// the bot posts an entity's events to once, for any number of followers.
    #[command(subcommand)]
    Channel(ChannelCommand),
}

/// `stargazer admin channel …`. A channel is an ordinary chat of its IM platform,
/// registered and subscribed by the operator instead of by a chat command; the bot must
/// be allowed to post there (a Telegram channel's administrator with "post messages").
/// A running api shows the change once its cached subscriber lists expire
/// (`read_cache_ms`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ChannelCommand {
    /// Subscribes a channel to entities (registering the channel on first use).
    Bind {
        /// IM platform of the channel.
        #[arg(long, default_value = "telegram")]
        im: String,
        /// The channel's chat id (a Telegram channel's is `-100…`).
        #[arg(long, allow_hyphen_values = true)]
        chat: String,
        /// An entity to post; repeatable.
        #[arg(long = "entity", value_name = "ID", required = true)]
        entities: Vec<Uuid>,
        /// Only these event kinds (`youtube.live`, …); repeatable; default: every kind.
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Language of the channel's messages; default: the first entity's default
        /// language. Only used when the channel is registered.
        #[arg(long)]
        language: Option<String>,
        /// Display name; default `channel <chat>`. Only used when the channel is
        /// registered.
        #[arg(long)]
        name: Option<String>,
    },
    /// Unsubscribes a channel from entities; with no --entity, from all of them, and the
    /// channel is forgotten.
    Unbind {
        /// IM platform of the channel.
        #[arg(long, default_value = "telegram")]
        im: String,
        /// The channel's chat id.
        #[arg(long, allow_hyphen_values = true)]
        chat: String,
        /// An entity to stop posting; repeatable; default: every one.
        #[arg(long = "entity", value_name = "ID")]
        entities: Vec<Uuid>,
    },
    /// Shows a channel and the entities it posts.
    Show {
        /// IM platform of the channel.
        #[arg(long, default_value = "telegram")]
        im: String,
        /// The channel's chat id.
        #[arg(long, allow_hyphen_values = true)]
        chat: String,
    },
}

/// An access level on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessArg {
    /// Read-only.
    Ro,
    /// Read-write.
    Rw,
}

impl From<AccessArg> for Access {
    fn from(value: AccessArg) -> Self {
        match value {
            AccessArg::Ro => Access::Ro,
            AccessArg::Rw => Access::Rw,
        }
    }
}

/// `stargazer admin credential …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CredentialCommand {
    /// Creates a credential. Without --password-stdin a random password is generated and
    /// printed once.
    Add {
        /// Login name.
        username: String,
        /// Access to the RPC api (bots: rw).
        #[arg(long, value_enum)]
        api: Option<AccessArg>,
        /// Access to entity administration (admins: rw).
        #[arg(long, value_enum)]
        admin: Option<AccessArg>,
        /// Access to RabbitMQ (bots: ro; workers and middlewares: rw).
        #[arg(long, value_enum)]
        mq: Option<AccessArg>,
        /// Access to the coordinator (workers: ro).
        #[arg(long, value_enum)]
        coordinator: Option<AccessArg>,
        /// A broker queue the credential owns, as the suffix after `stargazer.`
        /// (`bot.telegram`, `middleware.delay`); repeat for more. Needs --mq.
        #[arg(long = "queue", value_name = "SUFFIX")]
        queues: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// PBKDF2 rounds for the hash.
        #[arg(long, env = "STARGAZER_API__PBKDF2_ITERATIONS", default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Removes a credential.
    Remove {
        /// Login name.
        username: String,
    },
    /// Lists credentials and their permissions.
    List,
}

/// `stargazer admin entity …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EntityCommand {
    /// Creates an entity with the accounts to watch.
    Add {
        /// A name as LANG=NAME (`en=Pekora`); repeat for more languages.
        #[arg(long = "name", value_name = "LANG=NAME", required = true)]
        names: Vec<String>,
        /// Language of the default name; default: the first --name's.
        #[arg(long)]
        default_language: Option<String>,
        /// Group id (see `group list`).
        #[arg(long)]
        group: Option<Uuid>,
        /// A language to translate its tweets into; repeatable.
        #[arg(long = "translate-to", value_name = "LANG")]
        translate_to: Vec<String>,
        /// A YouTube channel id (UC…); repeatable.
        #[arg(long, value_name = "CHANNEL_ID")]
        youtube: Vec<String>,
        /// A numeric X (Twitter) user id; repeatable.
        #[arg(long, value_name = "USER_ID")]
        twitter: Vec<String>,
        /// A Twitch broadcaster: its login (looked up through Helix with the `[twitch]`
        /// credentials) or its numeric user id; repeatable.
        #[arg(long, value_name = "LOGIN")]
        twitch: Vec<String>,
        /// A numeric Bilibili uid; repeatable.
        #[arg(long, value_name = "UID")]
        bilibili: Vec<String>,
        /// Use this id instead of a random one.
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Lists entities with their tasks.
    List,
    /// Removes an entity, its tasks and every subscription to it.
    Remove {
        /// Entity id.
        id: Uuid,
    },
}

/// `stargazer admin group …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum GroupCommand {
    /// Creates (or with --id replaces) a group.
    Add {
        /// A name as LANG=NAME; repeatable.
        #[arg(long = "name", value_name = "LANG=NAME", required = true)]
        names: Vec<String>,
        /// Use (or replace) this id.
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Lists groups.
    List,
}

/// Runs an admin command against `storage`, reading a password from standard input when
/// asked to and writing results to `out`.
pub async fn run_admin(
    cmd: AdminCommand,
    storage: Arc<dyn Storage>,
    out: &mut impl Write,
) -> Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    run_admin_with_input(cmd, storage, &mut input, out).await
}

/// [`run_admin`] with an explicit input for `--password-stdin` (for tests).
pub async fn run_admin_with_input(
    cmd: AdminCommand,
    storage: Arc<dyn Storage>,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<()> {
    match cmd {
        AdminCommand::Credential(cmd) => credential(cmd, storage.as_ref(), input, out).await,
        AdminCommand::Entity(cmd) => entity(cmd, storage.as_ref(), out).await,
        AdminCommand::Group(cmd) => group(cmd, storage.as_ref(), out).await,
        AdminCommand::Channel(cmd) => channel(cmd, storage.as_ref(), out).await,
    }
}

/// Permissions and owned queues, as `created` and `list` print them.
fn describe(p: &Permissions, queues: &[String]) -> String {
    let permissions = describe_permissions(p);
    if queues.is_empty() {
        permissions
    } else {
        format!("{permissions}; queues {}", queues.join(", "))
    }
}

fn describe_permissions(p: &Permissions) -> String {
    let parts: Vec<String> = [
        ("api", p.api),
        ("admin", p.admin),
        ("mq", p.mq),
        ("coordinator", p.coordinator),
    ]
    .into_iter()
    .filter_map(|(name, access)| {
        access.map(|a| {
            let level = match a {
                Access::Ro => "ro",
                Access::Rw => "rw",
            };
            format!("{name} {level}")
        })
    })
    .collect();
    if parts.is_empty() {
        "no permissions".to_owned()
    } else {
        parts.join(", ")
    }
}

async fn credential(
    cmd: CredentialCommand,
    storage: &dyn Storage,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<()> {
    match cmd {
        CredentialCommand::Add {
            username,
            api,
            admin,
            mq,
            coordinator,
            queues,
            password_stdin,
            iterations,
        } => {
            if username.is_empty()
                || username.len() > 128
                || username.contains([':', ' '])
                || username.chars().any(char::is_control)
            {
                return Err(Error::invalid(
                    "username",
                    "must be 1 to 128 characters without `:`, spaces or control characters",
                ));
            }
            if iterations < 1000 {
                return Err(Error::invalid("iterations", "must be at least 1000"));
            }
            let permissions = Permissions {
                api: api.map(Into::into),
                admin: admin.map(Into::into),
                mq: mq.map(Into::into),
                coordinator: coordinator.map(Into::into),
            };
            for (i, queue) in queues.iter().enumerate() {
                model::check_queue_suffix(queue)
                    .map_err(|reason| Error::invalid("queue", reason))?;
                if queues[..i].contains(queue) {
                    return Err(Error::invalid("queue", format!("`{queue}` given twice")));
                }
            }
            if !queues.is_empty() && permissions.mq.is_none() {
                return Err(Error::invalid("queue", "owning a queue needs --mq"));
            }
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                input.read_line(&mut line)?;
                let password = line.trim_end_matches(['\r', '\n']).to_owned();
                if password.is_empty() {
                    return Err(Error::invalid(
                        "password",
                        "standard input held no password",
                    ));
                }
                (password, false)
            } else {
                (new_password(), true)
            };
            let hash = tokio::task::spawn_blocking(move || {
                hash_password(&password, iterations).map(|h| (h, password))
            })
            .await
            .map_err(|err| Error::Internal(format!("hashing task failed: {err}")))?
            .map_err(|err| Error::Internal(err.to_string()))?;
            let (hash, password) = hash;
            storage
                .insert_credential(&Credential {
                    username: username.clone(),
                    hash,
                    permissions,
                    queues: queues.clone(),
                })
                .await?;
            writeln!(
                out,
                "created credential {username} ({})",
                describe(&permissions, &queues)
            )?;
            if generated {
                writeln!(out, "password: {password}")?;
                writeln!(out, "(shown once; store it now)")?;
            }
            Ok(())
        }
        CredentialCommand::Remove { username } => {
            if storage.delete_credential(&username).await? {
                writeln!(out, "removed credential {username}")?;
                Ok(())
            } else {
                Err(Error::NotFound(format!("no credential {username}")))
            }
        }
        CredentialCommand::List => {
            let credentials = storage.list_credentials().await?;
            if credentials.is_empty() {
                writeln!(out, "no credentials")?;
            }
            for credential in credentials {
                writeln!(
                    out,
                    "{}\t{}",
                    credential.username,
                    describe(&credential.permissions, &credential.queues)
                )?;
            }
            Ok(())
        }
    }
}

/// Parses `LANG=NAME` arguments.
fn parse_names(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut names = BTreeMap::new();
    for arg in args {
        let (lang, name) = arg
            .split_once('=')
            .ok_or_else(|| Error::invalid("name", format!("`{arg}` is not LANG=NAME")))?;
        validate::language("name", lang)?;
        if names.insert(lang.to_owned(), name.to_owned()).is_some() {
            return Err(Error::invalid(
                "name",
                format!("language `{lang}` given twice"),
            ));
        }
    }
    Ok(names)
}

async fn entity(cmd: EntityCommand, storage: &dyn Storage, out: &mut impl Write) -> Result<()> {
    match cmd {
        EntityCommand::Add {
            names,
            default_language,
            group,
            translate_to,
            youtube,
            twitter,
            twitch,
            bilibili,
            id,
        } => {
            let default_language = match default_language {
                Some(lang) => lang,
                None => names
                    .first()
                    .and_then(|n| n.split_once('='))
                    .map(|(lang, _)| lang.to_owned())
                    .ok_or_else(|| Error::invalid("name", "at least one LANG=NAME is required"))?,
            };
            let names = parse_names(&names)?;
            validate::names(&names, &default_language)?;
            validate::languages("translate-to", &translate_to)?;
            let params: Vec<TaskParams> = youtube
                .into_iter()
                .map(|channel_id| TaskParams::Youtube { channel_id })
                .chain(
                    twitter
                        .into_iter()
                        .map(|user_id| TaskParams::Twitter { user_id }),
                )
                .chain(
                    twitch
                        .into_iter()
                        .map(|broadcaster_id| TaskParams::Twitch { broadcaster_id }),
                )
                .chain(bilibili.into_iter().map(|uid| TaskParams::Bilibili { uid }))
                .collect();
            ensure_group(storage, group).await?;
            let id = id.unwrap_or_else(Uuid::new_v4);
            let tasks = build_tasks(storage, id, params, &[]).await?;
            let entity = model::Entity {
                id,
                names,
                default_language,
                group,
                translate_to,
                tasks,
            };
            storage.insert_entity(&entity).await?;
            writeln!(
                out,
                "created entity {id} ({})",
                entity.name_in(&entity.default_language)
            )?;
            for task in &entity.tasks {
                writeln!(
                    out,
                    "  task {} {} {}",
                    task.id,
                    task.kind(),
                    task.params.source_id()
                )?;
            }
            Ok(())
        }
        EntityCommand::List => {
            let entities = storage.list_entities().await?;
            if entities.is_empty() {
                writeln!(out, "no entities")?;
            }
            for entity in entities {
                let names: Vec<String> = entity
                    .names
                    .iter()
                    .map(|(l, n)| format!("{l}={n}"))
                    .collect();
                let tasks: Vec<String> = entity
                    .tasks
                    .iter()
                    .map(|t| format!("{}:{}", t.kind(), t.params.source_id()))
                    .collect();
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    entity.id,
                    names.join(" "),
                    tasks.join(" ")
                )?;
            }
            Ok(())
        }
        EntityCommand::Remove { id } => {
            storage.delete_entity(id).await?;
            writeln!(out, "removed entity {id}")?;
            Ok(())
        }
    }
}

async fn channel(cmd: ChannelCommand, storage: &dyn Storage, out: &mut impl Write) -> Result<()> {
    match cmd {
        ChannelCommand::Bind {
            im,
            chat,
            entities,
            kinds,
            language,
            name,
        } => {
            validate::im("im", &im)?;
            validate::chat_id("chat", &chat)?;
            for kind in &kinds {
                validate::kind("kind", kind)?;
            }
            // Every entity must exist before anything is written.
            let mut found = Vec::with_capacity(entities.len());
            for id in &entities {
                let entity = storage
                    .get_entity(*id)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("no entity {id}")))?;
                found.push(entity);
            }
            let user = match storage.find_user_by_chat(&im, &chat).await? {
                Some(user) => user,
                None => {
                    let language = match language {
                        Some(language) => language,
                        None => found
                            .first()
                            .map(|e| e.default_language.clone())
                            .unwrap_or_else(|| "en".to_owned()),
                    };
                    validate::language("language", &language)?;
                    let name = name.unwrap_or_else(|| format!("channel {chat}"));
                    validate::display_name("name", &name)?;
                    let user = model::User {
                        id: Uuid::new_v4(),
                        im: im.clone(),
                        im_chat_id: chat.clone(),
                        name,
                        language,
                        settings: model::UserSettings::default(),
                        created_at: chrono::Utc::now(),
                    };
                    storage.insert_user(&user).await?;
                    writeln!(out, "registered {im} channel {chat} as user {}", user.id)?;
                    user
                }
            };
            for entity in &found {
                // Binding again changes the kinds and keeps a mention set through the api.
                storage
                    .put_subscription_kinds(user.id, entity.id, &kinds)
                    .await?;
                writeln!(
                    out,
                    "bound {} ({}) to {im} channel {chat}",
                    entity.id,
                    entity.name_in(&user.language)
                )?;
            }
            Ok(())
        }
        ChannelCommand::Unbind { im, chat, entities } => {
            validate::im("im", &im)?;
            validate::chat_id("chat", &chat)?;
            let user = storage
                .find_user_by_chat(&im, &chat)
                .await?
                .ok_or_else(|| Error::NotFound(format!("no {im} chat {chat}")))?;
            if entities.is_empty() {
                storage.delete_user(user.id).await?;
                writeln!(out, "unbound every entity; {im} channel {chat} forgotten")?;
                return Ok(());
            }
            for id in entities {
                if storage.delete_subscription(user.id, id).await? {
                    writeln!(out, "unbound {id} from {im} channel {chat}")?;
                } else {
                    writeln!(out, "{id} was not bound to {im} channel {chat}")?;
                }
            }
            Ok(())
        }
        ChannelCommand::Show { im, chat } => {
            validate::im("im", &im)?;
            validate::chat_id("chat", &chat)?;
            let user = storage
                .find_user_by_chat(&im, &chat)
                .await?
                .ok_or_else(|| Error::NotFound(format!("no {im} chat {chat}")))?;
            let paused = if user.settings.paused { ", paused" } else { "" };
            writeln!(
                out,
                "{im} channel {chat}: user {}, {}, language {}{paused}",
                user.id, user.name, user.language
            )?;
            for subscription in storage.list_subscriptions(user.id).await? {
                let name = match storage.get_entity(subscription.entity).await? {
                    Some(entity) => entity.name_in(&user.language).to_owned(),
                    None => "(entity gone)".to_owned(),
                };
                let kinds = if subscription.kinds.is_empty() {
                    "every kind".to_owned()
                } else {
                    subscription.kinds.join(" ")
                };
                writeln!(out, "  {}	{name}	{kinds}", subscription.entity)?;
            }
            Ok(())
        }
    }
}

async fn group(cmd: GroupCommand, storage: &dyn Storage, out: &mut impl Write) -> Result<()> {
    match cmd {
        GroupCommand::Add { names, id } => {
            let names = parse_names(&names)?;
            let id = id.unwrap_or_else(Uuid::new_v4);
            storage.upsert_group(&model::Group { id, names }).await?;
            writeln!(out, "saved group {id}")?;
            Ok(())
        }
        GroupCommand::List => {
            let groups = storage.list_groups().await?;
            if groups.is_empty() {
                writeln!(out, "no groups")?;
            }
            for group in groups {
                let names: Vec<String> = group
                    .names
                    .iter()
                    .map(|(l, n)| format!("{l}={n}"))
                    .collect();
                writeln!(out, "{}\t{}", group.id, names.join(" "))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AdminCommand,
    }

    #[test]
    fn command_lines_parse() {
        let cli = Cli::try_parse_from([
            "admin",
            "credential",
            "add",
            "bot",
            "--api",
            "rw",
            "--mq",
            "ro",
            "--queue",
            "bot.telegram",
            "--queue",
            "bot.telegram-eu",
        ])
        .unwrap();
        let AdminCommand::Credential(CredentialCommand::Add {
            username,
            api,
            mq,
            admin,
            queues,
            ..
        }) = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!(
            (username.as_str(), api, mq, admin),
            ("bot", Some(AccessArg::Rw), Some(AccessArg::Ro), None)
        );
        assert_eq!(queues, ["bot.telegram", "bot.telegram-eu"]);
        let cli = Cli::try_parse_from([
            "admin",
            "entity",
            "add",
            "--name",
            "en=Pekora",
            "--youtube",
            "UC1DCedRgGHBdm81E1llLhOQ",
            "--twitter",
            "1",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            AdminCommand::Entity(EntityCommand::Add { .. })
        ));
        assert!(
            Cli::try_parse_from(["admin", "credential", "add", "bot", "--api", "all"]).is_err()
        );
    }

    #[test]
    fn names_parse() {
        let names = parse_names(&["en=Pekora".into(), "ja=ぺこら".into()]).unwrap();
        assert_eq!(names["ja"], "ぺこら");
        assert!(parse_names(&["Pekora".into()]).is_err());
        assert!(parse_names(&["en=a".into(), "en=b".into()]).is_err());
    }
}
