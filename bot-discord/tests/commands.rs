//! Slash commands end to end: the whole `bot-discord` role (delivery and the interactions
//! endpoint) on a real api over SQLite and the real RabbitMQ, the local Discord of
//! `stargazer-testkit` for registration and late answers, and its signing client playing
//! Discord towards the endpoint. What a command changed is read back through the api.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use stargazer_bot_discord::{DiscordConfig, DiscordService};
use stargazer_core::model::TaskParams;
use stargazer_core::service::Service;
use stargazer_delivery::api::Api;
use stargazer_delivery::testing::{eventually, live, Harness, Instance};
use stargazer_testkit::servers::discord::{
    application_command, autocomplete, message_errors, ping, string_select, DiscordServer,
    InteractionSigner, Invoker, Limits, Outage, Signing, BOT_USER_ID,
};
use stargazer_testkit::servers::{serve, Served};
use uuid::Uuid;

/// The server every test's channels are in.
const GUILD: u64 = 1_200_000_000_000_000_001;
/// The manager role configured for the bot.
const MANAGER_ROLE: u64 = 1_200_000_000_000_000_077;
/// Where `/settings` links point.
const FRONTEND: &str = "https://stargazer.example";

/// A proxy in front of the api that holds every request for `delay` milliseconds first:
/// the api made slow on demand, the bot unchanged.
struct SlowApi {
    url: String,
    delay: Arc<AtomicU64>,
    _served: Served,
}

impl SlowApi {
    async fn start(target: String) -> Self {
        let delay = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::new();
        let held = delay.clone();
        let router = Router::new().fallback(move |request: Request| {
            let (target, delay, http) = (target.clone(), held.clone(), http.clone());
            async move { forward(&target, &delay, &http, request).await }
        });
        let served = serve(router).await.expect("serve the proxy");
        Self {
            url: served.base_url(),
            delay,
            _served: served,
        }
    }

    fn set_delay(&self, delay: Duration) {
        self.delay.store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn forward(
    target: &str,
    delay: &AtomicU64,
    http: &reqwest::Client,
    request: Request,
) -> Response {
    let wait = delay.load(Ordering::SeqCst);
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("request body");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = http
        .request(parts.method, format!("{target}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await.expect("the api answers the proxy");
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.expect("api answer body");
    response.body(Body::from(bytes)).expect("a response")
}

/// The role running against everything it talks to.
struct Bot {
    discord: DiscordServer,
    signer: InteractionSigner,
    /// The interactions endpoint.
    url: String,
    /// The api as the bot's credential sees it, for checks.
    api: Api,
    slow: SlowApi,
    aqua: Uuid,
    marine: Uuid,
    pekora: Uuid,
    role: Instance<Result<(), String>>,
    _harness: Harness,
}

/// Starts the role, with [`MANAGER_ROLE`] as its manager role.
async fn start() -> Bot {
    start_during(None).await
}

/// Starts the role while Discord's API suffers `outage`, if any.
async fn start_during(outage: Option<Outage>) -> Bot {
    let harness = common::harness().await;
    let aqua = harness
        .entity(
            &[("en", "Minato Aqua"), ("ja", "湊あくあ")],
            vec![TaskParams::Twitch {
                broadcaster_id: "100000001".into(),
            }],
        )
        .await;
    let marine = harness
        .entity(&[("en", "Houshou Marine"), ("ja", "宝鐘マリン")], vec![])
        .await;
    let pekora = harness
        .entity(&[("en", "Usada Pekora"), ("ja", "兎田ぺこら")], vec![])
        .await;
    let discord = common::discord().await;
    discord.set_limits(Limits::lenient());
    discord.set_outage(outage);
    let signer = InteractionSigner::new();
    let slow = SlowApi::start(harness.api_url.clone()).await;
    let config = DiscordConfig {
        application_id: BOT_USER_ID.to_string(),
        public_key: signer.public_key_hex(),
        stargazer_api_url: slow.url.clone(),
        frontend_url: FRONTEND.into(),
        manager_role: MANAGER_ROLE.to_string(),
        ..common::config(&harness, &discord, vec![aqua])
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/interactions", listener.local_addr().unwrap());
    let service = Box::new(DiscordService::new(config));
    assert_eq!(service.needs().listeners[0].key, "discord.listen");
    let role = harness.run_service(service, vec![listener]);
    Bot {
        discord,
        signer,
        url,
        api: harness.api(),
        slow,
        aqua,
        marine,
        pekora,
        role,
        _harness: harness,
    }
}

impl Bot {
    /// POSTs `interaction` signed; the answer, checked to be 200 and a message Discord
    /// would accept.
    async fn send(&self, interaction: &Value) -> Value {
        let response = self.signer.post(&self.url, interaction).await;
        assert_eq!(response.status(), 200, "{interaction}");
        let answer: Value = response.json().await.unwrap();
        if matches!(answer["type"].as_u64(), Some(4 | 7)) {
            assert_eq!(message_errors(&answer["data"]), None, "{answer}");
        }
        answer
    }

    /// `/name` with `options` given by `invoker`.
    async fn command(&self, invoker: &Invoker, name: &str, options: Value) -> Value {
        self.send(&application_command(invoker, name, options))
            .await
    }

    /// The channel's subscriptions, entity → kinds, through the api.
    async fn subscriptions(&self, channel: u64) -> BTreeMap<Uuid, Vec<String>> {
        let Some(user) = self.api.user_by_chat(channel).await.unwrap() else {
            return BTreeMap::new();
        };
        self.api
            .index(user.id)
            .await
            .unwrap()
            .entities
            .into_iter()
            .filter_map(|e| Some((e.id, e.subscribed?)))
            .collect()
    }

    /// Waits until the Discord server has seen at least `count` requests.
    async fn eventually_requests(&self, count: u64) {
        eventually(
            "Discord saw the registration attempts",
            Duration::from_secs(10),
            || self.discord.requests() >= count,
        )
        .await;
    }

    /// Stops the role and checks it returned cleanly.
    async fn stop(self) {
        assert_eq!(self.role.stop(Duration::from_secs(20)).await, Ok(()));
    }
}

fn entity_option(value: &str) -> Value {
    json!([{"name": "entity", "type": 3, "value": value}])
}

/// The select menu of an answer's data, if any.
fn menu(answer: &Value) -> &Value {
    &answer["data"]["components"][0]["components"][0]
}

fn is_ephemeral(answer: &Value) -> bool {
    answer["data"]["flags"]
        .as_u64()
        .is_some_and(|f| f & 64 != 0)
}

/// Registration at start names the eight guild-only commands; a PING is answered and a
/// direct message is told commands belong to a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_are_registered_at_start() {
    let bot = start().await;
    let overwrites = bot
        .discord
        .wait_command_overwrites(1, Duration::from_secs(10))
        .await;
    assert_eq!(overwrites[0].application_id, BOT_USER_ID);
    assert_eq!(
        overwrites[0].names(),
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
    let stored = bot.discord.commands(BOT_USER_ID);
    assert_eq!(stored.len(), 8);
    for command in &stored {
        assert_eq!(command["contexts"], json!([0]), "{command}");
        assert!(command["description_localizations"]["ja"].is_string());
    }
    assert_eq!(stored[0]["options"][0]["autocomplete"], true);

    assert_eq!(bot.send(&ping()).await, json!({"type": 1}));
    let direct = bot
        .command(
            &Invoker::direct(1_200_000_000_000_000_900, 7),
            "list",
            json!([]),
        )
        .await;
    assert_eq!(direct["type"], 4);
    assert!(is_ephemeral(&direct));
    assert!(direct["data"]["content"]
        .as_str()
        .unwrap()
        .contains("server channel"));
    bot.stop().await;
}

/// While Discord fails, registration is tried again with backoff and commands are
/// answered meanwhile; once Discord is back the commands are registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_retried_until_discord_answers() {
    let bot = start_during(Some(Outage::BadGateway)).await;
    let list = bot
        .command(
            &Invoker::admin(GUILD, 1_200_000_000_000_000_601, 61),
            "list",
            json!([]),
        )
        .await;
    assert_eq!(list["type"], 4, "commands do not wait for the registration");
    bot.eventually_requests(2).await;
    assert!(bot.discord.command_overwrites().is_empty());
    bot.discord.set_outage(None);
    let overwrites = bot
        .discord
        .wait_command_overwrites(1, Duration::from_secs(10))
        .await;
    assert_eq!(overwrites.len(), 1);
    assert_eq!(overwrites[0].names().len(), 8);
    bot.stop().await;
}

/// An admin subscribes the channel by name and by an autocompleted id, narrows one
/// subscription with the kinds menu, and unsubscribes among the channel's subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_subscribes_and_narrows_with_the_menu() {
    let bot = start().await;
    let channel = 1_200_000_000_000_000_101;
    let admin = Invoker::admin(GUILD, channel, 11);

    let answer = bot
        .command(&admin, "subscribe", entity_option("Minato Aqua"))
        .await;
    assert_eq!(answer["type"], 4, "{answer}");
    assert!(!is_ephemeral(&answer));
    let content = answer["data"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("Subscribed to Minato Aqua (all events)."),
        "{content}"
    );
    let select = menu(&answer);
    assert_eq!(select["type"], 3);
    assert_eq!(select["custom_id"], format!("kinds:{}", bot.aqua));
    let options = select["options"].as_array().unwrap();
    let values: Vec<_> = options
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["twitch.live", "twitch.ended", "twitch.rerun"]);
    assert!(options.iter().all(|o| o["default"] == true));
    assert_eq!(
        (select["min_values"].as_u64(), select["max_values"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        bot.subscriptions(channel).await,
        BTreeMap::from([(bot.aqua, vec![])])
    );

    // Autocomplete finds by part of any name; the choice's value is the id.
    let found = bot
        .send(&autocomplete(
            &admin,
            "subscribe",
            json!([{"name": "entity", "type": 3, "value": "マリ", "focused": true}]),
        ))
        .await;
    assert_eq!(found["type"], 8);
    assert_eq!(
        found["data"]["choices"],
        json!([{"name": "Houshou Marine", "value": bot.marine.to_string()}])
    );
    let by_id = bot
        .command(&admin, "subscribe", entity_option(&bot.marine.to_string()))
        .await;
    assert!(by_id["data"]["content"]
        .as_str()
        .unwrap()
        .starts_with("Subscribed to Houshou Marine"));

    // One kind chosen in the menu narrows the subscription and updates the message.
    let narrowed = bot
        .send(&string_select(
            &admin,
            &format!("kinds:{}", bot.aqua),
            &["twitch.live"],
            1_200_000_000_000_000_555,
        ))
        .await;
    assert_eq!(narrowed["type"], 7, "{narrowed}");
    assert!(narrowed["data"]["content"]
        .as_str()
        .unwrap()
        .starts_with("Minato Aqua: now 🟣 Twitch live."));
    let defaults: Vec<_> = menu(&narrowed)["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["default"] == true)
        .collect();
    assert_eq!(defaults, [true, false, false]);
    let subscriptions = bot.subscriptions(channel).await;
    assert_eq!(subscriptions[&bot.aqua], ["twitch.live"]);
    assert_eq!(subscriptions[&bot.marine], Vec::<String>::new());

    // Unsubscribing completes among the channel's subscriptions only.
    let choices = bot
        .send(&autocomplete(
            &admin,
            "unsubscribe",
            json!([{"name": "entity", "type": 3, "value": "", "focused": true}]),
        ))
        .await;
    let mut offered: Vec<_> = choices["data"]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].as_str().unwrap().to_owned())
        .collect();
    offered.sort();
    let mut expected = vec![bot.aqua.to_string(), bot.marine.to_string()];
    expected.sort();
    assert_eq!(offered, expected);
    assert!(!offered.contains(&bot.pekora.to_string()));
    let gone = bot
        .command(
            &admin,
            "unsubscribe",
            entity_option(&bot.marine.to_string()),
        )
        .await;
    assert_eq!(gone["data"]["content"], "Unsubscribed from Houshou Marine.");
    assert!(!bot.subscriptions(channel).await.contains_key(&bot.marine));
    bot.stop().await;
}

/// A plain member is refused (ephemeral, nothing changes); Manage Channels or the
/// manager role is enough; `/list` is open to everyone; `/settings` is always ephemeral.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_managers_change_a_channel() {
    let bot = start().await;
    let channel = 1_200_000_000_000_000_201;
    let member = Invoker::member(GUILD, channel, 21);

    for answer in [
        bot.command(&member, "subscribe", entity_option("Minato Aqua"))
            .await,
        bot.command(&member, "settings", json!([])).await,
        bot.send(&string_select(
            &member,
            &format!("kinds:{}", bot.aqua),
            &["twitch.live"],
            1_200_000_000_000_000_556,
        ))
        .await,
    ] {
        assert_eq!(answer["type"], 4, "{answer}");
        assert!(is_ephemeral(&answer), "{answer}");
        assert!(answer["data"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Only this group's administrators"));
    }
    assert_eq!(bot.api.user_by_chat(channel).await.unwrap(), None);
    let list = bot.command(&member, "list", json!([])).await;
    assert!(!is_ephemeral(&list));
    assert!(list["data"]["content"]
        .as_str()
        .unwrap()
        .starts_with("This chat has no subscriptions yet. /subscribe entity:"));

    let manager = Invoker::member(GUILD, channel, 22).with_role(MANAGER_ROLE);
    let answer = bot
        .command(&manager, "subscribe", entity_option("Minato Aqua"))
        .await;
    assert!(!is_ephemeral(&answer), "{answer}");
    assert_eq!(
        bot.subscriptions(channel).await,
        BTreeMap::from([(bot.aqua, vec![])])
    );
    let channels_manager = Invoker {
        permissions: Invoker::MANAGE_CHANNELS | Invoker::SEND_MESSAGES,
        ..Invoker::member(GUILD, channel, 23)
    };
    let settings = bot.command(&channels_manager, "settings", json!([])).await;
    assert!(is_ephemeral(&settings), "the link is a credential");
    assert!(settings["data"]["content"]
        .as_str()
        .unwrap()
        .contains(&format!("{FRONTEND}/#token=")));
    bot.stop().await;
}

/// `/lang ja` answers and lists in Japanese after; a server whose language is Japanese
/// starts in it; `/delete` asks first and `confirm:true` deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_and_deletion_follow_the_channel() {
    let bot = start().await;
    let channel = 1_200_000_000_000_000_301;
    let admin = Invoker::admin(GUILD, channel, 31);
    bot.command(&admin, "subscribe", entity_option("Minato Aqua"))
        .await;
    let set = bot
        .command(
            &admin,
            "lang",
            json!([{"name": "code", "type": 3, "value": "ja"}]),
        )
        .await;
    assert_eq!(
        set["data"]["content"],
        "設定しました：ここでの返信と通知は ja になります。"
    );
    let list = bot.command(&admin, "list", json!([])).await;
    assert_eq!(
        list["data"]["content"],
        "このチャットの購読：\n• 湊あくあ — すべてのイベント"
    );

    let japanese_server = Invoker {
        guild_locale: "ja".into(),
        ..Invoker::member(GUILD + 1, channel + 1, 32)
    };
    let help = bot.command(&japanese_server, "list", json!([])).await;
    assert!(help["data"]["content"]
        .as_str()
        .unwrap()
        .starts_with("このチャットにはまだ購読がありません。"));

    let ask = bot.command(&admin, "delete", json!([])).await;
    assert!(ask["data"]["content"]
        .as_str()
        .unwrap()
        .ends_with("/delete confirm:True"));
    assert!(bot.api.user_by_chat(channel).await.unwrap().is_some());
    let done = bot
        .command(
            &admin,
            "delete",
            json!([{"name": "confirm", "type": 5, "value": true}]),
        )
        .await;
    assert_eq!(
        done["data"]["content"],
        "削除しました：このチャットの登録と購読はなくなりました。"
    );
    assert_eq!(bot.api.user_by_chat(channel).await.unwrap(), None);
    bot.stop().await;
}

/// A command whose api calls outlast the answer window is answered deferred (type 5)
/// at once, and its reply arrives as an edit of the original answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_command_is_deferred_then_edited() {
    let bot = start().await;
    let channel = 1_200_000_000_000_000_401;
    let admin = Invoker::admin(GUILD, channel, 41);
    bot.command(&admin, "subscribe", entity_option("Minato Aqua"))
        .await;

    // `/list` makes two api calls: 4 s in all, over the 2.5 s window.
    bot.slow.set_delay(Duration::from_secs(2));
    let interaction = application_command(&admin, "list", json!([]));
    bot.discord.open_interaction(&interaction);
    let token = interaction["token"].as_str().unwrap().to_owned();
    let asked = tokio::time::Instant::now();
    let answer = bot.send(&interaction).await;
    let waited = asked.elapsed();
    assert_eq!(answer, json!({"type": 5}));
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
    let edit = bot
        .discord
        .wait_original_edit(&token, Duration::from_secs(10))
        .await;
    bot.slow.set_delay(Duration::ZERO);
    assert_eq!(
        edit.body["content"],
        "This chat's subscriptions:\n• Minato Aqua — all events"
    );
    assert_eq!(edit.body["allowed_mentions"], json!({"parse": []}));
    assert_eq!(edit.channel_id, channel);
    assert_eq!(bot.discord.unauthorized(), 0);
    bot.stop().await;
}

/// A command with a bad signature is refused 401 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_refused_and_changes_nothing() {
    let bot = start().await;
    let channel = 1_200_000_000_000_000_501;
    let admin = Invoker::admin(GUILD, channel, 51);
    let interaction = application_command(&admin, "subscribe", entity_option("Minato Aqua"));
    for signing in [
        Signing::BadSignature,
        Signing::TamperedBody,
        Signing::Missing,
    ] {
        let response = bot.signer.post_with(&bot.url, &interaction, signing).await;
        assert_eq!(response.status(), 401, "{signing:?}");
    }
    assert_eq!(bot.api.user_by_chat(channel).await.unwrap(), None);
    assert!(bot.discord.original_edits().is_empty());
    bot.stop().await;
}

/// `/mention` sets the role a subscription's posts ping (managers only), `/list` shows
/// it, a post of that streamer's event pings exactly that role, and `/mention` without
/// a role stops it.
#[tokio::test]
async fn a_subscription_mentions_its_role_until_told_not_to() {
    let bot = start().await;
    let channel = 1_200_000_000_000_000_131;
    let admin = Invoker::admin(GUILD, channel, 31);
    let role = 1_200_000_000_000_000_888_u64;
    let with_role = |entity: &str| {
        json!([{"name": "entity", "type": 3, "value": entity},
               {"name": "role", "type": 8, "value": role.to_string()}])
    };
    bot.command(&admin, "subscribe", entity_option("Minato Aqua"))
        .await;

    // A member who may not manage the channel changes nothing.
    let member = Invoker::member(GUILD, channel, 32);
    let refused = bot
        .command(&member, "mention", with_role("Minato Aqua"))
        .await;
    assert!(is_ephemeral(&refused), "{refused}");
    let stored = bot
        .api
        .subscriptions(user_of(&bot, channel).await)
        .await
        .unwrap();
    assert_eq!(stored[0].mention, None);

    let set = bot
        .command(&admin, "mention", with_role("Minato Aqua"))
        .await;
    assert_eq!(
        set["data"]["content"],
        format!("Minato Aqua: posts now mention <@&{role}>.")
    );
    let stored = bot
        .api
        .subscriptions(user_of(&bot, channel).await)
        .await
        .unwrap();
    assert_eq!(
        stored[0].mention.as_deref(),
        Some(role.to_string().as_str())
    );
    let listed = bot.command(&admin, "list", json!([])).await;
    assert!(
        listed["data"]["content"]
            .as_str()
            .unwrap()
            .contains(&format!("Minato Aqua — all events — mentions <@&{role}>")),
        "{listed}"
    );
    // The answer shows the role without pinging it.
    assert_eq!(set["data"]["allowed_mentions"]["parse"], json!([]));

    bot._harness
        .publish(&live(bot.aqua, "mention stream"))
        .await;
    let sent = bot.discord.wait_sent(1, Duration::from_secs(10)).await;
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].content.starts_with(&format!("<@&{role}>")),
        "{:?}",
        sent[0].content
    );
    let allowed = sent[0].allowed_mentions.clone().expect("allowed_mentions");
    assert_eq!(allowed["roles"], json!([role.to_string()]));
    assert_eq!(allowed["parse"], json!([]));

    // Without a role, posts mention nobody again.
    let cleared = bot
        .command(&admin, "mention", entity_option("Minato Aqua"))
        .await;
    assert_eq!(
        cleared["data"]["content"],
        "Minato Aqua: posts mention nobody now."
    );
    bot._harness.publish(&live(bot.aqua, "quiet stream")).await;
    let sent = bot.discord.wait_sent(2, Duration::from_secs(10)).await;
    assert!(!sent[1].content.contains("<@&"), "{:?}", sent[1].content);
    assert_eq!(
        sent[1].allowed_mentions.clone().expect("allowed_mentions")["roles"],
        Value::Null
    );
    bot.stop().await;
}

/// The Stargazer user of `channel`.
async fn user_of(bot: &Bot, channel: u64) -> Uuid {
    bot.api
        .user_by_chat(channel)
        .await
        .unwrap()
        .expect("the channel is registered")
        .id
}
