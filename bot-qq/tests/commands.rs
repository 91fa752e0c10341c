//! QQ commands through the running bot role (`QqService`: event endpoint, command task and
//! delivery), against a real api over SQLite, the real RabbitMQ and the local OneBot v11
//! implementation of `stargazer-testkit`, which POSTs signed message reports to the bot
//! and answers its `get_group_member_info` from a member table the test controls.

mod common;

use std::time::Duration;

use serde_json::json;
use stargazer_bot_qq::{events, QqConfig, QqService};
use stargazer_core::service::Service;
use stargazer_delivery::api::Api;
use stargazer_delivery::commands::{self as shared, describe_kinds};
use stargazer_delivery::testing::{event, eventually, Harness, Instance};
use stargazer_testkit::servers::onebot::{IncomingMessage, OneBotServer, Role, Signing, Target};
use uuid::Uuid;

const FRONTEND: &str = "http://frontend.test";
/// The group every test talks in, and its people.
const GROUP: i64 = 810_001;
const ADMIN: i64 = 20_001;
const MEMBER: i64 = 20_002;

/// The bot role running against its own api, broker queue and OneBot server.
struct Bot {
    harness: Harness,
    onebot: OneBotServer,
    api: Api,
    aqua: Uuid,
    suisei: Uuid,
    events_url: String,
    role: Instance<Result<(), String>>,
}

async fn start() -> Bot {
    let harness = common::harness().await;
    let aqua = harness
        .entity(
            &[
                ("en", "Minato Aqua"),
                ("ja", "湊あくあ"),
                ("zh", "湊阿库娅"),
            ],
            vec![],
        )
        .await;
    let suisei = harness
        .entity(
            &[("en", "Hoshimachi Suisei"), ("ja", "星街すいせい")],
            vec![],
        )
        .await;
    let onebot = common::onebot(true).await;
    onebot.set_member(GROUP, ADMIN, "admin", "", Role::Admin);
    onebot.set_member(GROUP, MEMBER, "member", "", Role::Member);
    let config = QqConfig {
        frontend_url: FRONTEND.into(),
        global_per_second: 50.0,
        group_interval_ms: 20,
        ..common::config(&harness, &onebot, vec![aqua, suisei])
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let events_url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        events::EVENTS_PATH
    );
    let service = Box::new(QqService::new(config));
    assert_eq!(service.needs().listeners[0].key, "qq.listen");
    let role = harness.run_service(service, vec![listener]);
    Bot {
        api: harness.api(),
        harness,
        onebot,
        aqua,
        suisei,
        events_url,
        role,
    }
}

impl Bot {
    /// Reports `message` (signed) and waits for the bot's next message to `target`.
    async fn ask(&self, message: IncomingMessage, target: Target) -> String {
        let before = self.onebot.sent_to(target).len();
        let (status, _) = self.onebot.post_message(&self.events_url, &message).await;
        assert_eq!(status, 204);
        eventually("the bot replied", Duration::from_secs(10), || {
            self.onebot.sent_to(target).len() > before
        })
        .await;
        self.onebot.sent_to(target)[before].text.clone()
    }

    /// `user` writes `text` in the group, as the member table has them.
    async fn in_group(&self, user: i64, text: &str) -> String {
        let role = if user == ADMIN {
            Role::Admin
        } else {
            Role::Member
        };
        let message = IncomingMessage::group(GROUP, user, text).role(role);
        self.ask(message, Target::Group(GROUP)).await
    }

    /// Chat ids subscribed to `entity` for live streams, as delivery asks the api.
    async fn subscribers(&self, entity: Uuid) -> Vec<String> {
        let mut chats: Vec<String> = self
            .api
            .subscribers(entity, "youtube.live")
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.chat_id)
            .collect();
        chats.sort();
        chats
    }

    /// The language `chat` is registered in; `None`: not registered.
    async fn language(&self, chat: &str) -> Option<String> {
        self.api
            .user_by_chat(chat)
            .await
            .unwrap()
            .map(|u| u.language)
    }

    /// Stops the role and checks it ended cleanly.
    async fn stop(self) {
        assert_eq!(self.role.stop(Duration::from_secs(15)).await, Ok(()));
    }
}

fn group_chat() -> String {
    format!("group:{GROUP}")
}

fn zh_refusal() -> String {
    shared::refusal("zh").text
}

/// A group admin's `/subscribe` subscribes the group; a member's is refused with the
/// admin-only text and changes nothing, also when the report claims a role the
/// implementation does not confirm, or names a sender it does not know; members may
/// still `/list` and `/help`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_admin_subscribes_and_members_are_refused() {
    let bot = start().await;

    assert_eq!(bot.in_group(MEMBER, "/subscribe Aqua").await, zh_refusal());
    // The report says admin; get_group_member_info says member.
    let claimed = IncomingMessage::group(GROUP, MEMBER, "/subscribe Aqua").claims_role(Role::Admin);
    assert_eq!(bot.ask(claimed, Target::Group(GROUP)).await, zh_refusal());
    // The report says owner of someone the implementation cannot find: refused.
    let stranger =
        IncomingMessage::group(GROUP, 20_099, "/subscribe Aqua").claims_role(Role::Owner);
    assert_eq!(bot.ask(stranger, Target::Group(GROUP)).await, zh_refusal());
    assert!(bot.subscribers(bot.aqua).await.is_empty());
    assert_eq!(
        bot.language(&group_chat()).await,
        None,
        "nothing registered"
    );

    // An admin whose report leaves the role out is confirmed by the implementation.
    let admin = IncomingMessage::group(GROUP, ADMIN, "/subscribe aqua")
        .role(Role::Admin)
        .omits_role();
    let reply = bot.ask(admin, Target::Group(GROUP)).await;
    let kinds = describe_kinds(&[], "zh");
    assert_eq!(
        reply,
        shared::text(
            "zh",
            "subscribed",
            &[
                ("name", "湊阿库娅".into()),
                ("kinds", kinds.as_str().into())
            ]
        )
    );
    assert_eq!(bot.subscribers(bot.aqua).await, vec![group_chat()]);
    assert_eq!(bot.language(&group_chat()).await.as_deref(), Some("zh"));

    let listed = bot.in_group(MEMBER, "/list").await;
    assert!(listed.contains("湊阿库娅"), "{listed}");
    let help = bot.in_group(MEMBER, "/help").await;
    assert!(
        help.contains("/subscribe") && help.contains("/delete"),
        "{help}"
    );
    assert_eq!(
        bot.in_group(MEMBER, "/unsubscribe aqua").await,
        zh_refusal()
    );
    assert_eq!(bot.subscribers(bot.aqua).await, vec![group_chat()]);

    // Every changing command asked the implementation, fresh.
    let asked = bot.onebot.calls_of("get_group_member_info");
    assert_eq!(asked.len(), 5, "{asked:?}");
    assert!(asked.iter().all(|call| call["no_cache"] == json!(true)));
    bot.stop().await;
}

/// `/lang ja` answers in Japanese, stores the language, and the next event reaches the
/// group in Japanese; an unknown code is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lang_switches_replies_and_notifications() {
    let bot = start().await;
    bot.in_group(ADMIN, "/subscribe Minato Aqua").await;
    assert_eq!(
        bot.in_group(ADMIN, "/lang ja").await,
        shared::text("ja", "lang-set", &[("language", "ja".into())])
    );
    assert_eq!(bot.language(&group_chat()).await.as_deref(), Some("ja"));
    let unknown = bot.in_group(ADMIN, "/lang xx").await;
    assert!(unknown.contains("xx"), "{unknown}");
    assert_eq!(bot.language(&group_chat()).await.as_deref(), Some("ja"));
    assert_eq!(
        bot.in_group(MEMBER, "/lang en").await,
        shared::refusal("ja").text
    );

    let before = bot.onebot.sent_to(Target::Group(GROUP)).len();
    let live = event(
        "youtube.live",
        bot.aqua,
        json!({"title": "歌枠", "link": "https://www.youtube.com/watch?v=abc"}),
    );
    bot.harness.publish(&live).await;
    eventually(
        "the event reached the group",
        Duration::from_secs(15),
        || bot.onebot.sent_to(Target::Group(GROUP)).len() > before,
    )
    .await;
    let notification = bot.onebot.sent_to(Target::Group(GROUP))[before]
        .text
        .clone();
    assert!(
        notification.starts_with("🔴 湊あくあ の配信が始まりました"),
        "{notification}"
    );
    assert_eq!(
        bot.harness
            .delivery_status(live.id, &group_chat())
            .await
            .as_deref(),
        Some("sent")
    );
    bot.stop().await;
}

/// In a private chat (the person owns it) `/list` shows the subscriptions and
/// `/unsubscribe` removes one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_unsubscribe_in_a_private_chat() {
    let bot = start().await;
    let me = Target::Private(30_001);
    let say = |text: &str| bot.ask(IncomingMessage::private(30_001, text), me);
    let chat = "private:30001".to_owned();

    assert_eq!(
        say("/list").await,
        shared::text("zh", "list-empty", &[("command", "/subscribe".into())])
    );
    assert!(say("/subscribe 湊").await.contains("湊阿库娅"));
    let reply = say(&format!("/subscribe {}", bot.suisei)).await;
    assert!(reply.contains("Hoshimachi Suisei"), "{reply}");
    assert_eq!(bot.subscribers(bot.aqua).await, vec![chat.clone()]);
    assert_eq!(bot.subscribers(bot.suisei).await, vec![chat.clone()]);

    let listed = say("/list").await;
    assert!(
        listed.contains("湊阿库娅") && listed.contains("Hoshimachi Suisei"),
        "{listed}"
    );
    let nobody = say("/unsubscribe nobody").await;
    assert!(
        nobody.contains("nobody") && nobody.contains("/list"),
        "{nobody}"
    );
    assert_eq!(
        say("/unsubscribe suisei").await,
        shared::text(
            "zh",
            "unsubscribed",
            &[("name", "Hoshimachi Suisei".into())]
        )
    );
    assert!(bot.subscribers(bot.suisei).await.is_empty());
    assert_eq!(bot.subscribers(bot.aqua).await, vec![chat.clone()]);
    let listed = say("/list").await;
    assert!(
        listed.contains("湊阿库娅") && !listed.contains("Suisei"),
        "{listed}"
    );
    bot.stop().await;
}

/// `/delete` asks first and changes nothing; `/delete confirm` deletes the group's
/// registration and subscriptions; a member's confirmation is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_asks_then_deletes() {
    let bot = start().await;
    bot.in_group(ADMIN, "/subscribe aqua").await;
    assert_eq!(bot.in_group(MEMBER, "/delete confirm").await, zh_refusal());
    assert_eq!(
        bot.in_group(ADMIN, "/delete").await,
        shared::text("zh", "delete-ask", &[("command", "/delete confirm".into())])
    );
    assert_eq!(bot.subscribers(bot.aqua).await, vec![group_chat()]);
    assert_eq!(
        bot.in_group(ADMIN, "/delete confirm").await,
        shared::text("zh", "delete-done", &[])
    );
    assert_eq!(bot.language(&group_chat()).await, None);
    assert!(bot.subscribers(bot.aqua).await.is_empty());
    assert_eq!(
        bot.in_group(ADMIN, "/delete confirm").await,
        shared::text("zh", "delete-nothing", &[])
    );
    bot.stop().await;
}

/// `/settings` in a group sends the link to the admin privately and tells the group;
/// privately it answers in place. An unknown command is answered with `/help` privately
/// and ignored in a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_go_privately_and_unknown_commands_get_help_privately() {
    let bot = start().await;
    let told = bot.in_group(ADMIN, "/settings").await;
    assert_eq!(told, shared::text("zh", "settings-sent-privately", &[]));
    let private = bot.onebot.sent_to(Target::Private(ADMIN));
    assert_eq!(private.len(), 1);
    assert!(
        private[0].text.contains(&format!("{FRONTEND}/#token=")),
        "{}",
        private[0].text
    );
    assert_eq!(bot.in_group(MEMBER, "/settings").await, zh_refusal());
    assert!(bot.onebot.sent_to(Target::Private(MEMBER)).is_empty());

    let me = Target::Private(30_002);
    let link = bot
        .ask(IncomingMessage::private(30_002, "/settings"), me)
        .await;
    assert!(link.contains(&format!("{FRONTEND}/#token=")), "{link}");
    let help = bot.ask(IncomingMessage::private(30_002, "/roll"), me).await;
    assert!(help.contains("/subscribe"), "{help}");

    // Another bot's command in the group: no answer (the next reply is /list's).
    let other = IncomingMessage::group(GROUP, ADMIN, "/roll 2d6").role(Role::Admin);
    assert_eq!(
        bot.onebot.post_message(&bot.events_url, &other).await.0,
        204
    );
    assert_eq!(
        bot.in_group(ADMIN, "/list").await,
        shared::text("zh", "list-empty", &[("command", "/subscribe".into())])
    );
    assert_eq!(bot.onebot.sent_to(Target::Group(GROUP)).len(), 3);
    bot.stop().await;
}

/// Reports without the secret's signature are refused with 401 and do nothing: no
/// reply, no registration, no member lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_badly_signed_reports_do_nothing() {
    let bot = start().await;
    let command = IncomingMessage::group(GROUP, ADMIN, "/subscribe aqua").role(Role::Admin);
    for signing in [Signing::Bad, Signing::Missing] {
        let (status, _) = bot
            .onebot
            .post_message_signed(&bot.events_url, &command, signing)
            .await;
        assert_eq!(status, 401, "{signing:?}");
    }
    // A signed command afterwards is answered, so the endpoint and the command task
    // work; the refused reports left no trace.
    let private = Target::Private(30_003);
    bot.ask(IncomingMessage::private(30_003, "/help"), private)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(bot.onebot.sent_to(Target::Group(GROUP)).is_empty());
    assert!(bot.onebot.calls_of("get_group_member_info").is_empty());
    assert!(bot.subscribers(bot.aqua).await.is_empty());
    assert_eq!(bot.language(&group_chat()).await, None);
    bot.stop().await;
}
