//! Chat commands in network-neutral form: what `/subscribe`, `/unsubscribe`, `/list`,
//! `/lang`, `/settings`, `/delete` and the kinds menu do with the api, and what the chat
//! is told, in plain text in the chat's language.
//!
//! A bot whose network has no richer command surface of its own (Discord's slash
//! commands, QQ's text commands) reads the command from its network, decides whether the
//! person may give it (an adapter's rule: Manage Channels on Discord, group owner or
//! admin on QQ), and hands it to [`ChatCommands`]; the [`Reply`] comes back as text plus,
//! after a subscription, the menu of event kinds the network may show as a select menu.
//!
//! Any command registers the chat first when it is not (a command implies consent, as
//! `/start` does on Telegram), in the language the adapter guessed. Search goes through
//! the api's user index, so every name in every language and every account id finds the
//! same streamer. An api failure becomes a precise reply, never silence.

use std::collections::HashMap;
use std::sync::LazyLock;

use stargazer_core::contract::{kind, source};
use uuid::Uuid;

use crate::api::{Api, ApiError, IndexEntry, User, UserIndex};
use crate::i18n::{Catalog, FluentValue};

/// English replies to commands.
pub const COMMANDS_EN: &str = include_str!("../locales/en/commands.ftl");
/// Japanese replies to commands.
pub const COMMANDS_JA: &str = include_str!("../locales/ja/commands.ftl");
/// Chinese replies to commands.
pub const COMMANDS_ZH: &str = include_str!("../locales/zh/commands.ftl");

/// The replies to commands per language; the first is the default.
pub const COMMANDS: [(&str, &[&str]); 3] = [
    ("en", &[COMMANDS_EN]),
    ("ja", &[COMMANDS_JA]),
    ("zh", &[COMMANDS_ZH]),
];

/// The catalog of command replies.
pub fn catalog() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::new(&COMMANDS));
    &CATALOG
}

/// Message `id` of the command replies in `language`.
pub fn text(language: &str, id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
    catalog().text(language, id, args)
}

/// Event kinds a subscription can narrow to, in the order menus show them.
pub const KINDS: [&str; 19] = [
    kind::YOUTUBE_LIVE,
    kind::YOUTUBE_SCHEDULED,
    kind::YOUTUBE_REMINDER,
    kind::YOUTUBE_VIDEO,
    kind::TWITTER_TWEET,
    kind::TWITTER_RETWEET,
    kind::YOUTUBE_RESCHEDULED,
    kind::YOUTUBE_ENDED,
    kind::YOUTUBE_CANCELLED,
    kind::YOUTUBE_PREMIERE,
    kind::YOUTUBE_SHORT,
    kind::YOUTUBE_MEMBERS,
    kind::TWITCH_LIVE,
    kind::TWITCH_ENDED,
    kind::TWITCH_RERUN,
    kind::BILIBILI_LIVE,
    kind::BILIBILI_ENDED,
    kind::BILIBILI_DYNAMIC,
    kind::BILIBILI_VIDEO,
];

/// The kinds an entity watched on `platforms` can produce (every kind when it names no
/// platform this bot knows, so a menu is never empty).
pub fn offered_kinds(platforms: &[String]) -> Vec<&'static str> {
    let known = |word: &str| source::ALL.contains(&word) && platforms.iter().any(|p| p == word);
    let offered: Vec<_> = KINDS
        .iter()
        .copied()
        .filter(|k| known(k.split('.').next().unwrap_or_default()))
        .collect();
    if offered.is_empty() {
        KINDS.to_vec()
    } else {
        offered
    }
}

/// The label of `kind` in `language` (its `kind-<kind with dashes>` message; the kind
/// itself when no language words it).
pub fn kind_label(kind: &str, language: &str) -> String {
    let id = format!("kind-{}", kind.replace('.', "-"));
    catalog()
        .try_text(language, &id, &[])
        .unwrap_or_else(|| kind.to_owned())
}

/// `kinds` in words (empty: all events).
pub fn describe_kinds(kinds: &[String], language: &str) -> String {
    if kinds.is_empty() {
        return text(language, "kinds-all", &[]);
    }
    kinds
        .iter()
        .map(|k| kind_label(k, language))
        .collect::<Vec<_>>()
        .join(&text(language, "kinds-separator", &[]))
}

/// An entry's name in `language` (then its default language, then any, then its id).
pub fn name_of(entry: &IndexEntry, language: &str) -> String {
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
pub fn search<'a>(entries: &'a [IndexEntry], query: &str) -> Vec<&'a IndexEntry> {
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

/// Most matches a reply lists.
pub const MAX_LISTED: usize = 10;

/// The chat a command came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// The chat id as the bot delivers to it (a Discord channel id, `group:<n>`).
    pub id: String,
    /// A display name, stored when the chat registers.
    pub name: String,
    /// The language a chat that registers now starts in (the person's client language
    /// when the network tells it and the bots speak it, else the default).
    pub language: &'static str,
}

/// How the network writes each command, for the hints in replies ("/subscribe" on QQ,
/// "/subscribe entity:" on Discord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    /// Subscribing.
    pub subscribe: &'static str,
    /// Unsubscribing.
    pub unsubscribe: &'static str,
    /// Listing.
    pub list: &'static str,
    /// Changing the language.
    pub lang: &'static str,
    /// Deleting, confirmed.
    pub delete_confirmed: &'static str,
}

/// One kind in a [`KindsMenu`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindOption {
    /// The kind (`youtube.live`).
    pub kind: &'static str,
    /// Its label in the chat's language.
    pub label: String,
    /// Whether the subscription delivers it now.
    pub selected: bool,
}

/// The event kinds a subscription may narrow to, for a select menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindsMenu {
    /// The entity subscribed to.
    pub entity: Uuid,
    /// The prompt, in the chat's language.
    pub prompt: String,
    /// The kinds its platforms produce.
    pub options: Vec<KindOption>,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The text, in the chat's language.
    pub text: String,
    /// After a subscription: the kinds it may narrow to.
    pub menu: Option<KindsMenu>,
    /// Whether the command failed (refused, not found, api trouble): networks that can
    /// show a reply only to its asker do so.
    pub failed: bool,
    /// The language the reply is in.
    pub language: &'static str,
}

impl Reply {
    fn ok(language: &'static str, text: String) -> Self {
        Self {
            text,
            menu: None,
            failed: false,
            language,
        }
    }

    fn failed(language: &'static str, text: String) -> Self {
        Self {
            failed: true,
            ..Self::ok(language, text)
        }
    }

    fn trouble(language: &'static str, chat: &Chat, err: &ApiError) -> Self {
        if err.is_transient() {
            tracing::warn!(chat = %chat.id, cause = %err, "api unavailable for a command");
        } else {
            tracing::info!(chat = %chat.id, cause = %err, "api refused a command");
        }
        Self::failed(language, trouble_text(language, err))
    }
}

/// What a chat reading `language` is told when the api failed with `err`.
pub fn trouble_text(language: &str, err: &ApiError) -> String {
    trouble_text_in(catalog(), language, err)
}

/// [`trouble_text`] worded by `catalog` (a bot's own, holding the messages
/// `error-unavailable`, `error-not-found`, `error-conflict` and `error-refused`).
pub fn trouble_text_in(catalog: &Catalog, language: &str, err: &ApiError) -> String {
    if err.is_transient() {
        return catalog.text(language, "error-unavailable", &[]);
    }
    match err {
        ApiError::NotFound(_) => catalog.text(language, "error-not-found", &[]),
        ApiError::Conflict(_) => catalog.text(language, "error-conflict", &[]),
        // The api's own explanation, in English.
        _ => catalog.text(
            language,
            "error-refused",
            &[("reason", err.user_message().into())],
        ),
    }
}

/// The refusal a group member who may not change the chat gets, in `language`.
pub fn refusal(language: &'static str) -> Reply {
    Reply::failed(language, text(language, "admin-only", &[]))
}

/// "en (English), ja (日本語), …": the languages the bots speak.
pub fn spoken_languages() -> String {
    catalog()
        .languages()
        .iter()
        .map(|code| format!("{code} ({})", text(code, "language-name", &[])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The frontend link carrying a session token (in the fragment, which browsers never
/// send to a server).
pub fn session_link(frontend_url: &str, token: &str) -> String {
    format!("{}/#token={token}", frontend_url.trim_end_matches('/'))
}

/// The commands of one bot: its api client, its frontend and its syntax.
#[derive(Clone)]
pub struct ChatCommands {
    api: Api,
    frontend_url: String,
    syntax: Syntax,
    mention_label: fn(&str) -> String,
}

impl ChatCommands {
    /// Commands acting through `api`, linking to `frontend_url`, hinting in `syntax`.
    pub fn new(api: Api, frontend_url: impl Into<String>, syntax: Syntax) -> Self {
        Self {
            api,
            frontend_url: frontend_url.into(),
            syntax,
            mention_label: str::to_owned,
        }
    }

    /// How replies show a subscription's mention (Discord writes a role id as `<@&id>`,
    /// which its clients show as the role's name); by default as stored.
    pub fn with_mention_label(mut self, label: fn(&str) -> String) -> Self {
        self.mention_label = label;
        self
    }

    /// The api client.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The chat's registration (`None`: not registered) and the language to answer in.
    pub async fn look_up(&self, chat: &Chat) -> (Result<Option<User>, ApiError>, &'static str) {
        let user = self.api.user_by_chat(&chat.id).await;
        let language = match &user {
            Ok(Some(user)) => catalog().language_for(&user.language),
            _ => chat.language,
        };
        (user, language)
    }

    /// The language to answer `chat` in.
    pub async fn language(&self, chat: &Chat) -> &'static str {
        self.look_up(chat).await.1
    }

    /// The chat's user and language, registering the chat when it is not; the reply to
    /// give when the api fails.
    async fn ensure_user(&self, chat: &Chat) -> Result<(User, &'static str), Reply> {
        let (user, language) = self.look_up(chat).await;
        match user {
            Ok(Some(user)) => Ok((user, language)),
            Ok(None) => match self.api.register(&chat.id, &chat.name, chat.language).await {
                Ok(user) => Ok((user, chat.language)),
                Err(err) => Err(Reply::trouble(language, chat, &err)),
            },
            Err(err) => Err(Reply::trouble(language, chat, &err)),
        }
    }

    /// The index marked with `user`'s subscriptions; the reply to give when the api fails.
    async fn index(
        &self,
        chat: &Chat,
        user: &User,
        language: &'static str,
    ) -> Result<UserIndex, Reply> {
        self.api
            .index(user.id)
            .await
            .map_err(|err| Reply::trouble(language, chat, &err))
    }

    /// A registered chat's user, language and index; the reply to give when it is not
    /// registered (it has no subscriptions) or the api fails.
    async fn registered_index(
        &self,
        chat: &Chat,
    ) -> Result<(User, &'static str, UserIndex), Reply> {
        let (user, language) = self.look_up(chat).await;
        let user = match user {
            Ok(Some(user)) => user,
            Ok(None) => return Err(self.list_empty(language)),
            Err(err) => return Err(Reply::trouble(language, chat, &err)),
        };
        let index = self.index(chat, &user, language).await?;
        Ok((user, language, index))
    }

    /// `/help`: what the bot does and its commands, `(name, description)` as the network
    /// writes them.
    pub fn help(&self, language: &str, commands: &[(&str, &str)]) -> String {
        let mut out = text(language, "help-intro", &[]);
        for (name, id) in commands {
            out.push_str(&format!("\n{name} — {}", text(language, id, &[])));
        }
        out
    }

    /// `/subscribe <query>`: one match is subscribed to every kind (the reply carries its
    /// kinds menu); several are listed to choose from.
    pub async fn subscribe(&self, chat: &Chat, query: &str) -> Reply {
        let (user, language) = match self.ensure_user(chat).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let command = self.syntax.subscribe;
        if query.trim().is_empty() {
            return Reply::failed(
                language,
                text(language, "subscribe-usage", &[("command", command.into())]),
            );
        }
        let index = match self.index(chat, &user, language).await {
            Ok(index) => index,
            Err(reply) => return reply,
        };
        let found = search(&index.entities, query);
        let shown = shown_query(query);
        match found.as_slice() {
            [] => Reply::failed(
                language,
                text(language, "subscribe-no-match", &[("query", shown.into())]),
            ),
            [entry] => {
                // Subscribing again keeps the kinds chosen before.
                let kinds = entry.subscribed.clone().unwrap_or_default();
                self.subscribe_with(chat, &user, entry, kinds, language, "subscribed")
                    .await
            }
            many => {
                let mut names: Vec<String> = many
                    .iter()
                    .take(MAX_LISTED)
                    .map(|e| format!("• {} ({})", name_of(e, language), e.id))
                    .collect();
                if many.len() > MAX_LISTED {
                    let more = many.len() - MAX_LISTED;
                    names.push(text(language, "subscribe-more", &[("count", more.into())]));
                }
                Reply::failed(
                    language,
                    text(
                        language,
                        "subscribe-pick",
                        &[
                            ("query", shown.into()),
                            ("names", names.join("\n").into()),
                            ("command", command.into()),
                        ],
                    ),
                )
            }
        }
    }

    /// Narrows the chat's subscription to `entity` to `kinds` (every offered kind, or
    /// none, means all kinds, also future ones).
    pub async fn set_kinds(&self, chat: &Chat, entity: Uuid, kinds: &[String]) -> Reply {
        let (user, language) = match self.ensure_user(chat).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let index = match self.index(chat, &user, language).await {
            Ok(index) => index,
            Err(reply) => return reply,
        };
        let Some(entry) = index.entities.iter().find(|e| e.id == entity) else {
            return Reply::failed(language, text(language, "error-not-found", &[]));
        };
        let offered = offered_kinds(&entry.platforms);
        let mut chosen: Vec<String> = offered
            .iter()
            .filter(|k| kinds.iter().any(|c| c == *k))
            .map(|k| (*k).to_owned())
            .collect();
        if chosen.len() == offered.len() {
            chosen.clear();
        }
        self.subscribe_with(chat, &user, entry, chosen, language, "kinds-set")
            .await
    }

    /// Subscribes `user` to `entry` with `kinds`; the reply is message `said` (naming the
    /// streamer and the kinds) with the kinds menu.
    async fn subscribe_with(
        &self,
        chat: &Chat,
        user: &User,
        entry: &IndexEntry,
        kinds: Vec<String>,
        language: &'static str,
        said: &str,
    ) -> Reply {
        if let Err(err) = self
            .api
            .update_subscription(user.id, entry.id, true, kinds.clone())
            .await
        {
            return Reply::trouble(language, chat, &err);
        }
        let name = name_of(entry, language);
        let mut reply = Reply::ok(
            language,
            text(
                language,
                said,
                &[
                    ("name", name.clone().into()),
                    ("kinds", describe_kinds(&kinds, language).into()),
                ],
            ),
        );
        reply.menu = Some(kinds_menu(entry, &name, &kinds, language));
        reply
    }

    /// `/unsubscribe <query>`, among the chat's subscriptions.
    pub async fn unsubscribe(&self, chat: &Chat, query: &str) -> Reply {
        let (user, language, index) = match self.registered_index(chat).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        if query.trim().is_empty() {
            let command = self.syntax.unsubscribe;
            return Reply::failed(
                language,
                text(
                    language,
                    "unsubscribe-usage",
                    &[("command", command.into())],
                ),
            );
        }
        let subscribed: Vec<IndexEntry> = index
            .entities
            .into_iter()
            .filter(|e| e.subscribed.is_some())
            .collect();
        let found = search(&subscribed, query);
        let [entry] = found.as_slice() else {
            return Reply::failed(
                language,
                text(
                    language,
                    "unsubscribe-no-match",
                    &[
                        ("query", shown_query(query).into()),
                        ("list", self.syntax.list.into()),
                    ],
                ),
            );
        };
        if let Err(err) = self
            .api
            .update_subscription(user.id, entry.id, false, Vec::new())
            .await
        {
            return Reply::trouble(language, chat, &err);
        }
        let name = name_of(entry, language);
        Reply::ok(
            language,
            text(language, "unsubscribed", &[("name", name.into())]),
        )
    }

    /// Sets (`Some`) or removes (`None`) what the bot mentions when it posts an event of
    /// the chat's subscription matching `query` (a Discord role id).
    pub async fn set_mention(&self, chat: &Chat, query: &str, mention: Option<&str>) -> Reply {
        let (user, language, index) = match self.registered_index(chat).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let subscribed: Vec<IndexEntry> = index
            .entities
            .into_iter()
            .filter(|e| e.subscribed.is_some())
            .collect();
        let found = search(&subscribed, query);
        let [entry] = found.as_slice() else {
            return Reply::failed(
                language,
                text(
                    language,
                    "unsubscribe-no-match",
                    &[
                        ("query", shown_query(query).into()),
                        ("list", self.syntax.list.into()),
                    ],
                ),
            );
        };
        if let Err(err) = self.api.set_mention(user.id, entry.id, mention).await {
            return Reply::trouble(language, chat, &err);
        }
        let name = name_of(entry, language);
        let said = match mention {
            Some(mention) => text(
                language,
                "mention-set",
                &[
                    ("name", name.into()),
                    ("mention", (self.mention_label)(mention).into()),
                ],
            ),
            None => text(language, "mention-cleared", &[("name", name.into())]),
        };
        Reply::ok(language, said)
    }

    /// `/list`: the chat's subscriptions with their kinds.
    pub async fn list(&self, chat: &Chat) -> Reply {
        let (user, language, index) = match self.registered_index(chat).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let mentions: HashMap<Uuid, String> = match self.api.subscriptions(user.id).await {
            Ok(subscriptions) => subscriptions
                .into_iter()
                .filter_map(|s| Some((s.entity, s.mention?)))
                .collect(),
            Err(err) => return Reply::trouble(language, chat, &err),
        };
        let entries: Vec<String> = index
            .entities
            .iter()
            .filter_map(|e| {
                let kinds = e.subscribed.as_ref()?;
                let name = name_of(e, language);
                let kinds = describe_kinds(kinds, language);
                Some(match mentions.get(&e.id) {
                    Some(mention) => text(
                        language,
                        "list-entry-mention",
                        &[
                            ("name", name.into()),
                            ("kinds", kinds.into()),
                            ("mention", (self.mention_label)(mention).into()),
                        ],
                    ),
                    None => text(
                        language,
                        "list-entry",
                        &[("name", name.into()), ("kinds", kinds.into())],
                    ),
                })
            })
            .collect();
        if entries.is_empty() {
            return self.list_empty(language);
        }
        Reply::ok(
            language,
            text(language, "list", &[("entries", entries.join("\n").into())]),
        )
    }

    fn list_empty(&self, language: &'static str) -> Reply {
        let command = self.syntax.subscribe;
        Reply::ok(
            language,
            text(language, "list-empty", &[("command", command.into())]),
        )
    }

    /// `/lang [code]`: shows the chat's language, or sets it (answered in the new one).
    pub async fn lang(&self, chat: &Chat, code: Option<&str>) -> Reply {
        let (user, language) = match self.ensure_user(chat).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let code = code.map(str::trim).filter(|c| !c.is_empty());
        let Some(code) = code else {
            return Reply::ok(
                language,
                text(
                    language,
                    "lang-current",
                    &[
                        ("language", user.language.into()),
                        ("languages", spoken_languages().into()),
                        ("command", self.syntax.lang.into()),
                    ],
                ),
            );
        };
        let Some(spoken) = catalog().spoken_language(code) else {
            return Reply::failed(
                language,
                text(
                    language,
                    "lang-unknown",
                    &[
                        ("code", shown_query(code).into()),
                        ("languages", spoken_languages().into()),
                    ],
                ),
            );
        };
        match self.api.set_language(user.id, spoken).await {
            Ok(()) => Reply::ok(
                spoken,
                text(spoken, "lang-set", &[("language", spoken.into())]),
            ),
            Err(err) => Reply::trouble(language, chat, &err),
        }
    }

    /// `/settings`: a fresh frontend link for the chat (the adapter shows it only to the
    /// person who asked).
    pub async fn settings(&self, chat: &Chat) -> Reply {
        let (user, language) = match self.ensure_user(chat).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        match self.api.new_session(user.id).await {
            Ok(session) => {
                let minutes = (session.expires_at - chrono::Utc::now())
                    .num_minutes()
                    .max(1);
                let href = session_link(&self.frontend_url, &session.token);
                Reply::ok(
                    language,
                    text(
                        language,
                        "settings-link",
                        &[("href", href.into()), ("minutes", minutes.into())],
                    ),
                )
            }
            Err(err) => Reply::trouble(language, chat, &err),
        }
    }

    /// `/delete`: asks to confirm unless `confirmed`, then deletes the chat's user with
    /// its subscriptions.
    pub async fn delete(&self, chat: &Chat, confirmed: bool) -> Reply {
        let (user, language) = self.look_up(chat).await;
        let user = match user {
            Ok(Some(user)) => user,
            Ok(None) => return Reply::ok(language, text(language, "delete-nothing", &[])),
            Err(err) => return Reply::trouble(language, chat, &err),
        };
        if !confirmed {
            let command = self.syntax.delete_confirmed;
            return Reply::ok(
                language,
                text(language, "delete-ask", &[("command", command.into())]),
            );
        }
        match self.api.delete_user(user.id).await {
            Ok(()) => Reply::ok(language, text(language, "delete-done", &[])),
            Err(ApiError::NotFound(_)) => {
                Reply::ok(language, text(language, "delete-nothing", &[]))
            }
            Err(err) => Reply::trouble(language, chat, &err),
        }
    }

    /// Entities matching what was typed so far, `(id, name)` in the chat's language, at
    /// most `limit` (for autocomplete). Nothing when the api cannot answer.
    pub async fn suggest(&self, chat: &Chat, typed: &str, limit: usize) -> Vec<(Uuid, String)> {
        let (user, language) = self.look_up(chat).await;
        let user = user.ok().flatten().map(|u| u.id);
        let index = match user {
            Some(user) => self.api.index(user).await,
            None => self.api.entity_index().await,
        };
        let Ok(index) = index else {
            return Vec::new();
        };
        let found: Vec<&IndexEntry> = if typed.trim().is_empty() {
            index.entities.iter().collect()
        } else {
            search(&index.entities, typed)
        };
        found
            .into_iter()
            .take(limit)
            .map(|e| (e.id, name_of(e, language)))
            .collect()
    }
}

/// The menu of `entry`'s kinds, `kinds` selected (empty: all).
fn kinds_menu(entry: &IndexEntry, name: &str, kinds: &[String], language: &str) -> KindsMenu {
    KindsMenu {
        entity: entry.id,
        prompt: text(language, "kinds-choose", &[("name", name.into())]),
        options: offered_kinds(&entry.platforms)
            .into_iter()
            .map(|kind| KindOption {
                kind,
                label: kind_label(kind, language),
                selected: kinds.is_empty() || kinds.iter().any(|k| k == kind),
            })
            .collect(),
    }
}

/// A query as a reply quotes it: at most 64 characters.
fn shown_query(query: &str) -> String {
    query.trim().chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(id: u128, names: &[(&str, &str)], search: &[&str], platforms: &[&str]) -> IndexEntry {
        IndexEntry {
            id: Uuid::from_u128(id),
            names: names
                .iter()
                .map(|(l, n)| ((*l).to_owned(), (*n).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            default_language: "en".into(),
            group: None,
            platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
            search: search.iter().map(|s| (*s).to_owned()).collect(),
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
                &[],
            ),
            entry(2, &[("en", "Aquamarine")], &["aquamarine"], &[]),
            entry(3, &[("en", "Marine")], &["marine", "ucmarine"], &[]),
        ];
        let ids = |v: Vec<&IndexEntry>| v.iter().map(|e| e.id.as_u128()).collect::<Vec<_>>();
        assert_eq!(ids(search(&entries, "aqua")), vec![1]);
        assert_eq!(ids(search(&entries, "AQU")), vec![1, 2]);
        assert_eq!(ids(search(&entries, "あくあ")), vec![1]);
        assert_eq!(ids(search(&entries, "ucmar")), vec![3]);
        assert_eq!(
            ids(search(&entries, &Uuid::from_u128(2).to_string())),
            vec![2]
        );
        assert!(search(&entries, "nobody").is_empty());
        assert!(search(&entries, "  ").is_empty());
    }

    #[test]
    fn an_entity_offers_the_kinds_of_its_platforms() {
        let twitch = entry(1, &[], &[], &["twitch"]);
        let offered = offered_kinds(&twitch.platforms);
        assert_eq!(
            offered,
            vec![kind::TWITCH_LIVE, kind::TWITCH_ENDED, kind::TWITCH_RERUN]
        );
        let unknown = entry(2, &[], &[], &["myspace"]);
        assert_eq!(offered_kinds(&unknown.platforms).len(), KINDS.len());
        let menu = kinds_menu(&twitch, "T", &[kind::TWITCH_LIVE.to_owned()], "en");
        let selected: Vec<_> = menu.options.iter().filter(|o| o.selected).collect();
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].kind, kind::TWITCH_LIVE);
    }

    #[test]
    fn every_language_has_every_reply() {
        let catalog = catalog();
        for line in COMMANDS_EN.lines() {
            let Some((id, _)) = line.split_once(" = ") else {
                continue;
            };
            if id.starts_with('#') || id.starts_with(' ') {
                continue;
            }
            for language in catalog.languages() {
                assert!(
                    catalog.format_exact(language, id, &[]).is_some(),
                    "{language} lacks {id}"
                );
            }
        }
        assert_eq!(describe_kinds(&[], "ja"), "すべてのイベント");
        assert!(spoken_languages().contains("ja (日本語)"));
    }
}
