//! The bot's text commands on QQ: who may give them, what they do (the network-neutral
//! [`stargazer_delivery::commands`] acting through the api) and the reply in the chat.
//!
//! A chat is `group:<number>` or `private:<QQ number>`, the ids delivery sends to. In a
//! private chat the person owns the chat and may give every command. In a group anybody
//! may ask `/list` and `/help`; the commands that change the group's registration or hand
//! out a link to change it (`/subscribe`, `/unsubscribe`, `/lang`, `/settings`,
//! `/delete`) are for its owner and administrators. Their role is asked of the
//! implementation (`get_group_member_info`) for each such command rather than read from
//! the report, whose `sender.role` may be missing or stale; when that call fails the
//! command is refused.
//!
//! `/settings` in a group sends the link to the administrator privately (a link in the
//! group would let every member edit its subscriptions) and tells the group whether that
//! worked. An unknown `/command` reaches this module from private chats only (see
//! [`crate::events`]) and is answered with `/help`.
//!
//! Replies are plain text through the paced client delivery uses, so they count against
//! the same pace. The kinds menu a subscription's reply carries is not shown: QQ has no
//! select menus, so `/subscribe` subscribes to every kind and the settings page narrows
//! them. Commands of different chats are handled side by side; a chat's own
//! commands one after the other, so its replies keep their order (`/delete` before
//! `/delete confirm`).

use std::collections::HashMap;
use std::sync::Arc;

use stargazer_delivery::api::Api;
use stargazer_delivery::commands::{self as shared, ChatCommands, Syntax};
use stargazer_delivery::compose::truncate;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::delivery::{group_chat_id, private_chat_id, TEXT_LIMIT};
use crate::events::{Chat, Command, CommandRequest, MessageEvent};
use crate::message::Message;
use crate::onebot::{ApiError, OneBotClient};

/// How the commands are written on QQ, for the hints in replies.
pub const SYNTAX: Syntax = Syntax {
    subscribe: "/subscribe",
    unsubscribe: "/unsubscribe",
    list: "/list",
    lang: "/lang",
    delete_confirmed: "/delete confirm",
};

/// The language a chat registering through a command starts in. QQ tells nothing of a
/// person's language, and its users are mostly Chinese-speaking, so Chinese rather than
/// the bots' general default, English; `/lang` changes it.
pub const INITIAL_LANGUAGE: &str = "zh";

/// `/help`'s list: each command as written, and the message id of its description.
const HELP: [(&str, &str); 7] = [
    ("/subscribe <name | id>", "command-subscribe"),
    ("/unsubscribe <name>", "command-unsubscribe"),
    ("/list", "command-list"),
    ("/settings", "command-settings"),
    ("/lang [code]", "command-lang"),
    ("/delete", "command-delete"),
    ("/help", "command-help"),
];

/// Commands handled at once; further ones wait in the endpoint's queue.
const MAX_CONCURRENT: usize = 16;

/// Whether `command` changes the chat (or hands out a link that can): in a group, for
/// the owner and administrators only.
fn changes_chat(command: &Command) -> bool {
    match command {
        Command::Subscribe { .. }
        | Command::Unsubscribe { .. }
        | Command::Lang { .. }
        | Command::Settings
        | Command::Delete { .. } => true,
        Command::List | Command::Help | Command::Unknown { .. } => false,
    }
}

/// The chat a command came from, as the shared commands know it.
pub fn chat_of(event: &MessageEvent) -> shared::Chat {
    let (id, name) = match event.chat {
        Chat::Group(group) => (group_chat_id(group), format!("QQ group {group}")),
        Chat::Private(user) => {
            let name = match event.sender.nickname.trim() {
                "" => format!("QQ {user}"),
                nickname => nickname.to_owned(),
            };
            (private_chat_id(user), name)
        }
    };
    shared::Chat {
        id,
        name,
        language: INITIAL_LANGUAGE,
    }
}

/// Answers commands: checks who gives them, acts through the api, replies in the chat.
/// Cheap to clone.
#[derive(Clone)]
pub struct Commands {
    client: Arc<OneBotClient>,
    shared: ChatCommands,
}

impl Commands {
    /// Commands replying through `client`, acting through `api`, with `/settings` links
    /// to `frontend_url`.
    pub fn new(client: Arc<OneBotClient>, api: Api, frontend_url: &str) -> Self {
        Self {
            client,
            shared: ChatCommands::new(api, frontend_url, SYNTAX),
        }
    }

    /// Handles one command and sends its reply to the chat it came from. A reply that
    /// cannot be sent is logged, not retried: the person can ask again.
    pub async fn handle(&self, request: &CommandRequest) {
        let Some(text) = self.answer(request).await else {
            return;
        };
        let chat = request.event.chat;
        if let Err(err) = self.send(chat, &text).await {
            tracing::warn!(?chat, cause = %err, "reply to a command failed");
        }
    }

    /// The reply to `request` (`None`: none is due), after doing what it asks.
    pub async fn answer(&self, request: &CommandRequest) -> Option<String> {
        let event = &request.event;
        let chat = chat_of(event);
        if changes_chat(&request.command) && !self.may_change(event).await {
            let language = self.shared.language(&chat).await;
            return Some(shared::refusal(language).text);
        }
        let text = match &request.command {
            Command::Subscribe { query } => self.shared.subscribe(&chat, query).await.text,
            Command::Unsubscribe { query } => self.shared.unsubscribe(&chat, query).await.text,
            Command::List => self.shared.list(&chat).await.text,
            Command::Lang { language } => self.shared.lang(&chat, language.as_deref()).await.text,
            Command::Settings => self.settings(event, &chat).await,
            Command::Delete { confirmed } => self.shared.delete(&chat, *confirmed).await.text,
            Command::Help => self.help(&chat).await,
            // Only private chats pass unknown commands on; a group's are another bot's.
            Command::Unknown { .. } => match event.chat {
                Chat::Private(_) => self.help(&chat).await,
                Chat::Group(_) => return None,
            },
        };
        Some(text)
    }

    /// Whether the sender may change the chat: always in a private chat; in a group when
    /// the implementation confirms they are its owner or an administrator. Refuses when
    /// it cannot tell.
    async fn may_change(&self, event: &MessageEvent) -> bool {
        let Chat::Group(group) = event.chat else {
            return true;
        };
        let user = event.sender.user_id;
        match self.client.get_group_member_info(group, user).await {
            Ok(member) if member.user_id == user && member.is_admin() => true,
            Ok(member) => {
                if event.may_command() {
                    tracing::info!(
                        group,
                        user,
                        reported = ?event.sender.role,
                        role = %member.role,
                        "the report's role was not confirmed; command refused"
                    );
                }
                false
            }
            Err(err) => {
                tracing::warn!(group, user, cause = %err, "could not confirm the sender's role; command refused");
                false
            }
        }
    }

    /// `/help` in the chat's language.
    async fn help(&self, chat: &shared::Chat) -> String {
        let language = self.shared.language(chat).await;
        self.shared.help(language, &HELP)
    }

    /// `/settings`: the link in place in a private chat; in a group, the link to the
    /// administrator privately and a word to the group.
    async fn settings(&self, event: &MessageEvent, chat: &shared::Chat) -> String {
        let reply = self.shared.settings(chat).await;
        if reply.failed || matches!(event.chat, Chat::Private(_)) {
            return reply.text;
        }
        let user = event.sender.user_id;
        match self.send(Chat::Private(user), &reply.text).await {
            Ok(()) => shared::text(reply.language, "settings-sent-privately", &[]),
            Err(err) => {
                tracing::info!(user, cause = %err, "settings link not delivered privately");
                shared::text(reply.language, "settings-private-failed", &[])
            }
        }
    }

    /// Sends `text` to `chat` as plain text (typed CQ codes stay text).
    async fn send(&self, chat: Chat, text: &str) -> Result<(), ApiError> {
        let message = Message::plain(truncate(text, TEXT_LIMIT));
        match chat {
            Chat::Group(group) => self.client.send_group_msg(group, &message).await?,
            Chat::Private(user) => self.client.send_private_msg(user, &message).await?,
        };
        Ok(())
    }
}

/// Answers the commands arriving on `requests` until `shutdown` is cancelled or the
/// channel closes (then the commands under way finish). Up to [`MAX_CONCURRENT`]
/// commands are handled at once, each chat's in the order they came.
pub async fn answer_commands(
    commands: Commands,
    mut requests: mpsc::Receiver<CommandRequest>,
    shutdown: CancellationToken,
) {
    let mut running = JoinSet::new();
    // Per chat, the end of its latest command still under way: the chat's next command
    // waits for it. The sender is never used; its drop (the task ended) is the signal.
    let mut latest: HashMap<Chat, oneshot::Receiver<()>> = HashMap::new();
    loop {
        let request = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(joined) = running.join_next(), if !running.is_empty() => {
                if let Err(err) = joined {
                    if err.is_panic() {
                        tracing::error!(cause = %err, "a command panicked");
                    }
                }
                continue;
            }
            request = requests.recv(), if running.len() < MAX_CONCURRENT => match request {
                Some(request) => request,
                None => break,
            },
        };
        // Forget chats whose commands are all done, so the map holds only busy chats.
        latest
            .retain(|_, done| matches!(done.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        let (done, next) = oneshot::channel::<()>();
        let previous = latest.insert(request.event.chat, next);
        let commands = commands.clone();
        running.spawn(async move {
            let _done = done;
            if let Some(previous) = previous {
                // Err only says the previous task ended without a word, as they all do.
                let _ = previous.await;
            }
            tracing::debug!(chat = ?request.event.chat, command = ?request.command, "answering a command");
            commands.handle(&request).await;
        });
    }
    // A closed channel means the endpoint is gone: the commands taken still get their
    // replies, unless the role is stopping.
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = async { while running.join_next().await.is_some() {} } => {}
    }
    running.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Role, Sender};

    fn event(chat: Chat, nickname: &str) -> MessageEvent {
        MessageEvent {
            self_id: 1,
            time: 0,
            chat,
            sub_type: String::new(),
            message_id: 1,
            sender: Sender {
                user_id: 7,
                nickname: nickname.into(),
                card: String::new(),
                role: Some(Role::Member),
            },
            message: Message::plain("/list"),
        }
    }

    #[test]
    fn chats_are_the_ids_delivery_sends_to() {
        let group = chat_of(&event(Chat::Group(123), "n"));
        assert_eq!(group.id, "group:123");
        assert_eq!(group.language, "zh");
        let private = chat_of(&event(Chat::Private(7), " Aqua "));
        assert_eq!(
            (private.id.as_str(), private.name.as_str()),
            ("private:7", "Aqua")
        );
        assert_eq!(chat_of(&event(Chat::Private(7), "")).name, "QQ 7");
    }

    #[test]
    fn only_reading_commands_are_open_to_every_member() {
        let open = [
            Command::List,
            Command::Help,
            Command::Unknown { name: "x".into() },
        ];
        assert!(open.iter().all(|c| !changes_chat(c)));
        let guarded = [
            Command::Subscribe { query: "a".into() },
            Command::Unsubscribe { query: "a".into() },
            Command::Lang { language: None },
            Command::Settings,
            Command::Delete { confirmed: true },
        ];
        assert!(guarded.iter().all(changes_chat));
    }

    #[test]
    fn help_lists_every_command_in_every_language() {
        for language in shared::catalog().languages() {
            for (_, id) in HELP {
                assert!(
                    shared::catalog().format_exact(language, id, &[]).is_some(),
                    "{language} lacks {id}"
                );
            }
        }
    }
}
