//! Discord's HTTP interactions endpoint (`POST /interactions`): Discord POSTs every slash
//! command, autocomplete request and select menu choice here instead of over the gateway.
//!
//! Discord signs each request: `X-Signature-Ed25519` is the hex signature, by the
//! application's key, of the `X-Signature-Timestamp` bytes followed by the body bytes.
//! [`Verified`] checks it against the configured public key before anything reads the
//! body; a missing or bad signature, or a timestamp more than [`MAX_SKEW`] away from now
//! (a replayed request), answers 401, which is also what Discord's own endpoint check
//! expects for a tampered request. Bodies are bounded ([`MAX_BODY_BYTES`]).
//!
//! Answers:
//! - PING (type 1) → PONG `{"type": 1}`.
//! - A slash command (2) runs through [`ChatCommands`] for the channel it was given in
//!   (the chat id is the channel id in decimal, what delivery sends to). Commands that
//!   change something need Manage Channels or Administrator in the channel, or the
//!   configured manager role; others get the refusal. A command that finishes within
//!   [`ANSWER_WITHIN`] is answered in the HTTP response (type 4; ephemeral, flags 64,
//!   when it failed, and always for `/settings`, whose link is a credential); a slower
//!   one is answered "thinking" (type 5) and its answer replaces that message through
//!   the interaction's webhook when it is done. Discord allows 3 s for the first answer.
//!   Whether a late answer is ephemeral is decided when deferring, so a slow command that
//!   then fails shows its failure in the channel (`/settings` stays ephemeral).
//! - A choice in a kinds menu (3, custom id `kinds:<entity>`) narrows the subscription
//!   and updates the message (type 7; type 6 and an edit when slow); a refusal or a
//!   failure is an ephemeral message instead, leaving the menu as it was (a late
//!   failure is only logged: no follow-up message is sent).
//! - Autocomplete (4) answers up to 25 streamers matching what was typed (type 8):
//!   every streamer for `/subscribe`, the channel's subscriptions for `/unsubscribe`
//!   (every streamer while it has none). It cannot be deferred, so after
//!   [`ANSWER_WITHIN`] it answers no choices.
//! - In a direct message every command is answered that subscriptions belong to a
//!   server channel (ephemeral).
//!
//! The interaction is read leniently: only the fields used, with
//! twilight-model's types for the command and component data. Twilight's whole
//! `Interaction` would also parse the full message a component belongs to, so a message
//! field Discord adds or changes could turn every menu choice into a 400.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use stargazer_core::config::ConfigError;
use stargazer_delivery::api::{Api, IndexEntry};
use stargazer_delivery::commands::{
    catalog, name_of, refusal, search, text, Chat, ChatCommands, Reply,
};
use stargazer_delivery::compose::truncate;
use stargazer_delivery::i18n::DEFAULT;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use twilight_model::application::command::{CommandOptionChoice, CommandOptionChoiceValue};
use twilight_model::application::interaction::application_command::{
    CommandData, CommandDataOption, CommandOptionValue,
};
use twilight_model::application::interaction::message_component::MessageComponentInteractionData;
use twilight_model::application::interaction::InteractionType;
use twilight_model::channel::message::{AllowedMentions, MessageFlags};
use twilight_model::guild::Permissions;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::marker::{ApplicationMarker, ChannelMarker, GuildMarker};
use twilight_model::id::Id;
use uuid::Uuid;

use crate::commands::{
    self, CODE_OPTION, COMMANDS, CONFIRM_OPTION, ENTITY_OPTION, HELP, KINDS_PREFIX, LABEL_LIMIT,
    LIST, MAX_CHOICES, MENTION, ROLE_OPTION, SETTINGS, SUBSCRIBE, UNSUBSCRIBE,
};
use crate::config::DiscordConfig;
use crate::rest::RestClient;
use crate::IM;

/// Largest interaction body accepted. Interactions are small; the largest, a button press,
/// carries the whole message it belongs to (at most 2,000 characters of content and
/// 6,000 of embeds, plus ids and components).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How far the signed timestamp may be from now; older requests are refused as replays.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// How long a command may take before its answer is deferred (type 5) and sent as an
/// edit later; Discord drops an interaction not answered within 3 s.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(2500);

/// How long a stopping endpoint waits for deferred answers still being worked on.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// What the interactions endpoint needs: the key interactions must be signed with, and
/// the commands with the means to answer late.
#[derive(Clone)]
pub struct InteractionsState {
    key: Arc<VerifyingKey>,
    bot: Arc<Bot>,
}

/// The commands and what answering them takes.
struct Bot {
    commands: ChatCommands,
    rest: RestClient,
    application: Id<ApplicationMarker>,
    manager_role: Option<String>,
    /// Commands running and deferred answers being sent, waited for at shutdown.
    tasks: TaskTracker,
}

impl InteractionsState {
    /// The endpoint of the application `config` describes: its public key and id, its
    /// REST access (for late answers), the Stargazer api and the manager role.
    pub fn new(config: &DiscordConfig) -> crate::Result<Self> {
        let key = config.verifying_key()?;
        let application = config
            .application_id
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(Id::new_checked)
            .ok_or_else(|| {
                ConfigError::invalid("discord.application_id", "missing or not a snowflake")
            })?;
        let api = Api::new(
            IM,
            &config.stargazer_api_url,
            "discord.stargazer_api_url",
            &config.stargazer_api_username,
            &config.stargazer_api_password,
        )?;
        let bot = Bot {
            commands: ChatCommands::new(api, config.frontend_url.clone(), commands::syntax())
                .with_mention_label(commands::role_label),
            rest: RestClient::new(config)?,
            application,
            manager_role: config.manager_role().map(str::to_owned),
            tasks: TaskTracker::new(),
        };
        Ok(Self {
            key: Arc::new(key),
            bot: Arc::new(bot),
        })
    }

    /// The REST client late answers go through (also the one to register commands with).
    pub fn rest(&self) -> &RestClient {
        &self.bot.rest
    }

    /// The application's id.
    pub fn application(&self) -> Id<ApplicationMarker> {
        self.bot.application
    }

    /// Waits up to `within` for the commands still running and their deferred answers;
    /// whether all finished.
    pub async fn drain(&self, within: Duration) -> bool {
        self.bot.tasks.close();
        tokio::time::timeout(within, self.bot.tasks.wait())
            .await
            .is_ok()
    }
}

/// The endpoint's router: `POST /interactions`.
pub fn router(state: InteractionsState) -> Router {
    Router::new()
        .route("/interactions", post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the endpoint on `listener` until `shutdown`, then waits (up to
/// [`DRAIN_WITHIN`]) for answers still owed.
pub async fn serve(
    listener: TcpListener,
    state: InteractionsState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if !state.drain(DRAIN_WITHIN).await {
        tracing::warn!("stopped with interaction answers still owed");
    }
    served
}

/// Why a request to the endpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum InteractionError {
    /// No `X-Signature-Ed25519` or `X-Signature-Timestamp` header.
    #[error("missing signature headers")]
    MissingSignature,
    /// The signature is malformed or does not verify.
    #[error("invalid request signature")]
    BadSignature,
    /// The signed timestamp is unreadable or too far from now.
    #[error("stale or invalid signature timestamp")]
    Stale,
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body too large")]
    TooLarge,
    /// The signed body is not an interaction.
    #[error("not an interaction: {0}")]
    BadBody(String),
}

impl InteractionError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingSignature | Self::BadSignature | Self::Stale => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for InteractionError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        tracing::debug!(cause = %self, status = status.as_u16(), "interaction refused");
        (status, self.to_string()).into_response()
    }
}

/// A request body whose Discord signature verified; the extractor refuses everything else.
#[derive(Debug)]
pub struct Verified(pub Bytes);

impl FromRequest<InteractionsState> for Verified {
    type Rejection = InteractionError;

    async fn from_request(
        request: Request,
        state: &InteractionsState,
    ) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let (Some(signature), Some(timestamp)) = (
            header(headers, "x-signature-ed25519"),
            header(headers, "x-signature-timestamp"),
        ) else {
            return Err(InteractionError::MissingSignature);
        };
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    InteractionError::TooLarge
                } else {
                    InteractionError::BadBody(rejection.body_text())
                }
            })?;
        verify(&state.key, &signature, &timestamp, &body, SystemTime::now())?;
        Ok(Verified(body))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Checks a request's signature and timestamp as of `now`.
pub fn verify(
    key: &VerifyingKey,
    signature_hex: &str,
    timestamp: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<(), InteractionError> {
    let mut signature = [0u8; 64];
    hex::decode_to_slice(signature_hex.trim(), &mut signature)
        .map_err(|_| InteractionError::BadSignature)?;
    let signature = Signature::from_bytes(&signature);
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &signature)
        .map_err(|_| InteractionError::BadSignature)?;
    // The timestamp is part of what was signed: it is only read once the signature holds.
    let signed_at = timestamp
        .trim()
        .parse::<u64>()
        .map_err(|_| InteractionError::Stale)?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| InteractionError::Stale)?
        .as_secs();
    if now.abs_diff(signed_at) > MAX_SKEW.as_secs() {
        return Err(InteractionError::Stale);
    }
    Ok(())
}

/// The parts of an interaction the endpoint reads.
#[derive(Debug, Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: u8,
    /// The interaction's token, for its webhook (answers after the first).
    #[serde(default)]
    token: String,
    #[serde(default)]
    guild_id: Option<Id<GuildMarker>>,
    /// The server's language, when it is a community server.
    #[serde(default)]
    guild_locale: Option<String>,
    /// The client language of the person.
    #[serde(default)]
    locale: Option<String>,
    /// Deprecated by Discord in favour of `channel.id`, read when that is missing.
    #[serde(default)]
    channel_id: Option<Id<ChannelMarker>>,
    #[serde(default)]
    channel: Option<IncomingChannel>,
    /// Present in a server (a direct message has `user` instead).
    #[serde(default)]
    member: Option<IncomingMember>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// The channel an interaction came from.
#[derive(Debug, Deserialize)]
struct IncomingChannel {
    id: Id<ChannelMarker>,
    #[serde(default)]
    name: Option<String>,
}

/// The member who gave a command.
#[derive(Debug, Deserialize)]
struct IncomingMember {
    /// The member's permissions in the channel, overwrites applied (a decimal string).
    #[serde(default)]
    permissions: Option<String>,
    /// Role ids.
    #[serde(default)]
    roles: Vec<String>,
}

impl Incoming {
    /// The `data` object as `T`.
    fn data_as<T: DeserializeOwned>(&self) -> Result<T, InteractionError> {
        let data = self
            .data
            .clone()
            .ok_or_else(|| InteractionError::BadBody("no data".into()))?;
        serde_json::from_value(data).map_err(|err| InteractionError::BadBody(err.to_string()))
    }

    /// The language to tell the person something before any chat is known.
    fn person_language(&self) -> &'static str {
        catalog().language_for(self.locale.as_deref().unwrap_or(DEFAULT))
    }

    /// The chat: the server channel the interaction came from (`None` outside a server).
    fn chat(&self) -> Option<Chat> {
        self.guild_id?;
        self.member.as_ref()?;
        let channel = self.channel.as_ref().map(|c| c.id).or(self.channel_id)?;
        let name = self
            .channel
            .as_ref()
            .and_then(|c| c.name.as_deref())
            .filter(|name| !name.trim().is_empty())
            .map_or_else(|| format!("channel {channel}"), |name| format!("#{name}"));
        let language = self
            .guild_locale
            .as_deref()
            .and_then(|locale| catalog().spoken_language(locale))
            .unwrap_or(DEFAULT);
        Some(Chat {
            id: channel.to_string(),
            name,
            language,
        })
    }

    /// Whether the member may change the channel's subscriptions: Manage Channels or
    /// Administrator in the channel, or the manager role.
    fn may_manage(&self, manager_role: Option<&str>) -> bool {
        let Some(member) = &self.member else {
            return false;
        };
        let permissions = member
            .permissions
            .as_deref()
            .and_then(|bits| bits.trim().parse::<u64>().ok())
            .map_or_else(Permissions::empty, Permissions::from_bits_truncate);
        permissions.intersects(Permissions::MANAGE_CHANNELS | Permissions::ADMINISTRATOR)
            || manager_role.is_some_and(|role| member.roles.iter().any(|r| r.trim() == role))
    }

    /// The ephemeral answer outside a server.
    fn guild_only(&self) -> InteractionResponse {
        ephemeral(text(self.person_language(), "guild-only", &[]))
    }
}

/// The options of a slash command this bot reads.
#[derive(Debug, Default)]
struct Options {
    entity: String,
    role: Option<String>,
    code: Option<String>,
    confirm: bool,
}

impl Options {
    fn of(options: &[CommandDataOption]) -> Self {
        let mut read = Self::default();
        for option in options {
            match (option.name.as_str(), &option.value) {
                (ENTITY_OPTION, CommandOptionValue::String(value)) => read.entity = value.clone(),
                (CODE_OPTION, CommandOptionValue::String(value)) => {
                    read.code = Some(value.clone());
                }
                (CONFIRM_OPTION, CommandOptionValue::Boolean(value)) => read.confirm = *value,
                (ROLE_OPTION, CommandOptionValue::Role(role)) => {
                    read.role = Some(role.get().to_string());
                }
                _ => {}
            }
        }
        read
    }
}

/// What is typed in the focused option of an autocomplete request.
fn focused(options: &[CommandDataOption]) -> String {
    options
        .iter()
        .find_map(|option| match &option.value {
            CommandOptionValue::Focused(typed, _) => Some(typed.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// How a finished command is shown.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// As a new message; `private` ones only to the person.
    Message { private: bool },
    /// By updating the message of the component used.
    Update,
}

async fn handle(
    State(state): State<InteractionsState>,
    Verified(body): Verified,
) -> Result<Json<InteractionResponse>, InteractionError> {
    let incoming: Incoming =
        serde_json::from_slice(&body).map_err(|err| InteractionError::BadBody(err.to_string()))?;
    let kind = InteractionType::try_from(incoming.kind)
        .map_err(|_| InteractionError::BadBody(format!("unknown type {}", incoming.kind)))?;
    tracing::debug!(?kind, "interaction");
    let bot = &state.bot;
    let response = match kind {
        InteractionType::Ping => InteractionResponse {
            kind: InteractionResponseType::Pong,
            data: None,
        },
        InteractionType::ApplicationCommand => bot.command(incoming).await?,
        InteractionType::ApplicationCommandAutocomplete => bot.autocomplete(&incoming).await?,
        InteractionType::MessageComponent => bot.component(incoming).await?,
        // Modals: the bot shows none.
        _ => ephemeral(text(incoming.person_language(), "error-not-found", &[])),
    };
    Ok(Json(response))
}

impl Bot {
    /// A slash command.
    async fn command(
        self: &Arc<Self>,
        incoming: Incoming,
    ) -> Result<InteractionResponse, InteractionError> {
        let data: CommandData = incoming.data_as()?;
        let Some(chat) = incoming.chat() else {
            return Ok(incoming.guild_only());
        };
        let manager = incoming.may_manage(self.manager_role.as_deref());
        let options = Options::of(&data.options);
        let private = data.name == SETTINGS;
        let language = chat.language;
        let bot = self.clone();
        let work = async move { bot.run(&chat, &data.name, &options, manager).await };
        Ok(self
            .answer(incoming.token, work, Answer::Message { private }, language)
            .await)
    }

    /// Runs command `name` for `chat`; `manager`: whether the person may change it.
    async fn run(&self, chat: &Chat, name: &str, options: &Options, manager: bool) -> Reply {
        let commands = &self.commands;
        let open = matches!(name, LIST | HELP);
        if !open && !manager {
            return refusal(commands.language(chat).await);
        }
        match name {
            HELP => {
                let language = commands.language(chat).await;
                let names: Vec<(String, &str)> = COMMANDS
                    .iter()
                    .map(|(name, description)| (format!("/{name}"), *description))
                    .collect();
                let lines: Vec<(&str, &str)> = names
                    .iter()
                    .map(|(name, description)| (name.as_str(), *description))
                    .collect();
                Reply {
                    text: commands.help(language, &lines),
                    menu: None,
                    failed: false,
                    language,
                }
            }
            LIST => commands.list(chat).await,
            SUBSCRIBE => commands.subscribe(chat, &options.entity).await,
            UNSUBSCRIBE => commands.unsubscribe(chat, &options.entity).await,
            MENTION => {
                commands
                    .set_mention(chat, &options.entity, options.role.as_deref())
                    .await
            }
            commands::LANG => commands.lang(chat, options.code.as_deref()).await,
            SETTINGS => commands.settings(chat).await,
            commands::DELETE => commands.delete(chat, options.confirm).await,
            _ => {
                // A command registered by an older version, still in a client's list.
                let language = commands.language(chat).await;
                Reply {
                    text: text(language, "error-not-found", &[]),
                    menu: None,
                    failed: true,
                    language,
                }
            }
        }
    }

    /// A choice in a kinds menu.
    async fn component(
        self: &Arc<Self>,
        incoming: Incoming,
    ) -> Result<InteractionResponse, InteractionError> {
        let data: MessageComponentInteractionData = incoming.data_as()?;
        let entity = data
            .custom_id
            .strip_prefix(KINDS_PREFIX)
            .and_then(|id| Uuid::parse_str(id).ok());
        let Some(entity) = entity else {
            return Ok(ephemeral(text(
                incoming.person_language(),
                "error-not-found",
                &[],
            )));
        };
        let Some(chat) = incoming.chat() else {
            return Ok(incoming.guild_only());
        };
        let manager = incoming.may_manage(self.manager_role.as_deref());
        let language = chat.language;
        let bot = self.clone();
        let work = async move {
            if !manager {
                return refusal(bot.commands.language(&chat).await);
            }
            bot.commands.set_kinds(&chat, entity, &data.values).await
        };
        Ok(self
            .answer(incoming.token, work, Answer::Update, language)
            .await)
    }

    /// Autocomplete of a streamer.
    async fn autocomplete(
        &self,
        incoming: &Incoming,
    ) -> Result<InteractionResponse, InteractionError> {
        let data: CommandData = incoming.data_as()?;
        let found = match incoming.chat() {
            None => Vec::new(),
            Some(chat) => {
                let typed = focused(&data.options);
                let lookup = async {
                    match data.name.as_str() {
                        SUBSCRIBE => self.commands.suggest(&chat, &typed, MAX_CHOICES).await,
                        UNSUBSCRIBE | MENTION => self.subscribed(&chat, &typed).await,
                        _ => Vec::new(),
                    }
                };
                tokio::time::timeout(ANSWER_WITHIN, lookup)
                    .await
                    .unwrap_or_else(|_| {
                        tracing::debug!("autocomplete ran out of time; answering no choices");
                        Vec::new()
                    })
            }
        };
        let choices = found
            .into_iter()
            .take(MAX_CHOICES)
            .map(|(id, name)| CommandOptionChoice {
                name: truncate(&name, LABEL_LIMIT),
                name_localizations: None,
                value: CommandOptionChoiceValue::String(id.to_string()),
            })
            .collect();
        Ok(InteractionResponse {
            kind: InteractionResponseType::ApplicationCommandAutocompleteResult,
            data: Some(InteractionResponseData {
                choices: Some(choices),
                ..InteractionResponseData::default()
            }),
        })
    }

    /// The chat's subscriptions matching `typed`, or every streamer matching it while the
    /// chat has none (for `/unsubscribe`).
    async fn subscribed(&self, chat: &Chat, typed: &str) -> Vec<(Uuid, String)> {
        let (user, language) = self.commands.look_up(chat).await;
        if let Ok(Some(user)) = user {
            if let Ok(index) = self.commands.api().index(user.id).await {
                let subscribed: Vec<IndexEntry> = index
                    .entities
                    .into_iter()
                    .filter(|e| e.subscribed.is_some())
                    .collect();
                if !subscribed.is_empty() {
                    let found: Vec<&IndexEntry> = if typed.trim().is_empty() {
                        subscribed.iter().collect()
                    } else {
                        search(&subscribed, typed)
                    };
                    return found
                        .into_iter()
                        .take(MAX_CHOICES)
                        .map(|e| (e.id, name_of(e, language)))
                        .collect();
                }
            }
        }
        self.commands.suggest(chat, typed, MAX_CHOICES).await
    }

    /// Runs `work`, answering with its reply when it is done within [`ANSWER_WITHIN`];
    /// otherwise answers deferred and edits the answer once it is done. `language`: the
    /// chat's guess, for a failure of the work itself.
    async fn answer(
        self: &Arc<Self>,
        token: String,
        work: impl Future<Output = Reply> + Send + 'static,
        answer: Answer,
        language: &'static str,
    ) -> InteractionResponse {
        let mut task = self.tasks.spawn(work);
        match tokio::time::timeout(ANSWER_WITHIN, &mut task).await {
            Ok(Ok(reply)) => respond(&reply, answer),
            Ok(Err(err)) => {
                tracing::error!(cause = %err, "a command failed");
                ephemeral(text(language, "error-unavailable", &[]))
            }
            Err(_) => {
                let bot = self.clone();
                self.tasks.spawn(async move {
                    let reply = match task.await {
                        Ok(reply) => reply,
                        Err(err) => {
                            tracing::error!(cause = %err, "a deferred command failed");
                            Reply {
                                text: text(language, "error-unavailable", &[]),
                                menu: None,
                                failed: true,
                                language,
                            }
                        }
                    };
                    bot.finish(&token, &reply, answer).await;
                });
                deferred(answer)
            }
        }
    }

    /// Sends the reply of a deferred answer by editing the interaction's original
    /// message.
    async fn finish(&self, token: &str, reply: &Reply, answer: Answer) {
        if matches!(answer, Answer::Update) && reply.failed {
            // Editing would put the failure in place of the menu; the message stays.
            tracing::info!(reply = %reply.text, "a late menu choice failed; its message is left as it was");
            return;
        }
        match self
            .rest
            .edit_original_response(self.application, token, &commands::message(reply))
            .await
        {
            Ok(_) => tracing::debug!("deferred answer sent"),
            Err(err) => tracing::warn!(cause = %err, "could not send a deferred answer"),
        }
    }
}

/// The answer showing `reply` at once.
fn respond(reply: &Reply, answer: Answer) -> InteractionResponse {
    let (kind, private) = match answer {
        Answer::Update if !reply.failed => (InteractionResponseType::UpdateMessage, false),
        Answer::Update => (InteractionResponseType::ChannelMessageWithSource, true),
        Answer::Message { private } => (
            InteractionResponseType::ChannelMessageWithSource,
            private || reply.failed,
        ),
    };
    let components = commands::components(reply);
    // An update without a menu must clear the old one; a new message needs none.
    let components = match kind {
        InteractionResponseType::UpdateMessage => Some(components),
        _ => Some(components).filter(|c| !c.is_empty()),
    };
    InteractionResponse {
        kind,
        data: Some(InteractionResponseData {
            content: Some(commands::content(reply)),
            components,
            flags: private.then_some(MessageFlags::EPHEMERAL),
            allowed_mentions: Some(AllowedMentions::default()),
            ..InteractionResponseData::default()
        }),
    }
}

/// The answer promising a later one.
fn deferred(answer: Answer) -> InteractionResponse {
    match answer {
        Answer::Update => InteractionResponse {
            kind: InteractionResponseType::DeferredUpdateMessage,
            data: None,
        },
        Answer::Message { private } => InteractionResponse {
            kind: InteractionResponseType::DeferredChannelMessageWithSource,
            data: private.then(|| InteractionResponseData {
                flags: Some(MessageFlags::EPHEMERAL),
                ..InteractionResponseData::default()
            }),
        },
    }
}

/// A message only the person sees.
fn ephemeral(content: String) -> InteractionResponse {
    InteractionResponse {
        kind: InteractionResponseType::ChannelMessageWithSource,
        data: Some(InteractionResponseData {
            content: Some(content),
            flags: Some(MessageFlags::EPHEMERAL),
            allowed_mentions: Some(AllowedMentions::default()),
            ..InteractionResponseData::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn incoming(value: serde_json::Value) -> Incoming {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn managing_needs_a_permission_or_the_role() {
        let member = |permissions: &str, roles: &[&str]| {
            incoming(serde_json::json!({
                "type": 2, "guild_id": "1", "channel_id": "2",
                "member": {"permissions": permissions, "roles": roles},
            }))
        };
        // SEND_MESSAGES only; MANAGE_CHANNELS; ADMINISTRATOR; MANAGE_GUILD alone.
        assert!(!member("2048", &[]).may_manage(None));
        assert!(member("16", &[]).may_manage(None));
        assert!(member("8", &[]).may_manage(None));
        assert!(!member("32", &[]).may_manage(None));
        assert!(!member("not a number", &["5"]).may_manage(None));
        assert!(member("2048", &["4", "5"]).may_manage(Some("5")));
        assert!(!member("2048", &["4"]).may_manage(Some("5")));
        let direct = incoming(serde_json::json!({"type": 2, "channel_id": "2", "user": {}}));
        assert!(!direct.may_manage(Some("5")));
        assert!(direct.chat().is_none());
    }

    #[test]
    fn the_chat_is_the_channel_in_the_servers_language() {
        let chat = incoming(serde_json::json!({
            "type": 2, "guild_id": "1", "guild_locale": "zh-CN",
            "channel_id": "3", "channel": {"id": "4", "name": "streams"},
            "member": {"permissions": "0"},
        }))
        .chat()
        .unwrap();
        assert_eq!(
            chat,
            Chat {
                id: "4".into(),
                name: "#streams".into(),
                language: "zh",
            }
        );
        let unknown = incoming(serde_json::json!({
            "type": 2, "guild_id": "1", "guild_locale": "fr", "channel_id": "3",
            "member": {},
        }))
        .chat()
        .unwrap();
        assert_eq!((unknown.id.as_str(), unknown.language), ("3", "en"));
        assert_eq!(unknown.name, "channel 3");
    }

    fn signed(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        hex::encode(key.sign(&message).to_bytes())
    }

    #[test]
    fn verification_covers_signature_and_clock() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let body = br#"{"type":1}"#;
        let signature = signed(&key, "1800000000", body);
        assert!(verify(&public, &signature, "1800000000", body, now).is_ok());
        assert!(matches!(
            verify(&public, &signature, "1800000000", b"{}", now),
            Err(InteractionError::BadSignature)
        ));
        assert!(matches!(
            verify(&public, "zz", "1800000000", body, now),
            Err(InteractionError::BadSignature)
        ));
        let old = signed(&key, "1799999699", body);
        assert!(matches!(
            verify(&public, &old, "1799999699", body, now),
            Err(InteractionError::Stale)
        ));
        let edge = signed(&key, "1799999700", body);
        assert!(verify(&public, &edge, "1799999700", body, now).is_ok());
    }
}
