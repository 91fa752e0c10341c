//! Chat commands end to end: a local Bot API server injects updates, the bot answers
//! through a real api, and a live event published on the real RabbitMQ reaches the chat
//! that subscribed by command.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use stargazer_api::types::ErrorCode;
use stargazer_core::service::Service;

const T: Duration = Duration::from_secs(20);

fn text_of(message: &Value) -> String {
    message["text"].as_str().unwrap_or_default().to_owned()
}

/// The session token of the first frontend link in `text`.
fn token_in(text: &str) -> String {
    text.split("#token=")
        .nth(1)
        .and_then(|rest| rest.split(['"', '<', '\n', ' ']).next())
        .filter(|token| !token.is_empty())
        .unwrap_or_else(|| panic!("no session link in {text:?}"))
        .to_owned()
}

/// The callback data of the button whose label satisfies `pred`.
fn button(buttons: &[(String, String)], pred: impl Fn(&str) -> bool) -> String {
    buttons
        .iter()
        .find(|(label, _)| pred(label))
        .map(|(_, data)| data.clone())
        .unwrap_or_else(|| panic!("no such button in {buttons:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_subscribes_by_command_and_receives_a_live_event() {
    init_tracing();
    let platform = Platform::start().await;
    let aqua = platform
        .entity(&[("en", "Minato Aqua"), ("ja", "湊あくあ")])
        .await;
    platform.entity(&[("en", "Aquamarine Project")]).await;
    platform.entity(&[("en", "Houshou Marine")]).await;
    let tg = TelegramServer::start("123:commands").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus.clone(),
    );
    tg.wait_polling(T).await;
    let chat = 5001;

    // /start registers once; a second /start is harmless.
    tg.send_text(chat, chat, "/start");
    tg.wait_for(chat, T, |s| s.text.contains("Welcome to Stargazer"))
        .await;
    tg.send_text(chat, chat, "/start");
    tg.wait_for(chat, T, |s| s.text.contains("Welcome back"))
        .await;
    let user = platform
        .service
        .find_user("telegram", &chat.to_string())
        .await
        .unwrap();

    // Two entities match "aqua": pick one from the keyboard, then choose kinds.
    tg.send_text(chat, chat, "/subscribe aqua");
    let pick = tg
        .wait_for(chat, T, |s| s.text.contains("Several streamers match"))
        .await;
    let buttons = pick.buttons();
    assert_eq!(buttons.len(), 3, "{buttons:?}");
    tg.press(
        chat,
        pick.message_id,
        chat,
        &button(&buttons, |l| l == "Minato Aqua"),
    );
    tg.wait_message(chat, pick.message_id, T, |m| {
        text_of(m).contains("Which events of Minato Aqua")
    })
    .await;
    // Everything starts selected; turn videos off.
    let video = button(&tg.buttons(chat, pick.message_id), |l| l.ends_with("Video"));
    tg.press(chat, pick.message_id, chat, &video);
    tg.wait_message(chat, pick.message_id, T, |m| {
        m.to_string().contains("⬜ 🎬 Video")
    })
    .await;
    let done = button(&tg.buttons(chat, pick.message_id), |l| l == "Done");
    tg.press(chat, pick.message_id, chat, &done);
    let confirmed = tg
        .wait_message(chat, pick.message_id, T, |m| {
            text_of(m).contains("Subscribed to Minato Aqua")
        })
        .await;
    assert!(!text_of(&confirmed).contains("Video"), "{confirmed}");
    eventually("every press is answered", T, || {
        tg.callback_answers().len() >= 3
    })
    .await;
    let subscriptions = platform
        .service
        .get_subscription(Some(user.id))
        .await
        .unwrap();
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].entity, aqua);
    assert!(subscriptions[0].kinds.contains(&"youtube.live".to_owned()));
    assert!(!subscriptions[0].kinds.contains(&"youtube.video".to_owned()));

    tg.send_text(chat, chat, "/list");
    tg.wait_for(chat, T, |s| s.text.contains("Minato Aqua — 🔴 Live"))
        .await;
    // From here on the chat reads Japanese: notifications and replies alike.
    tg.send_text(chat, chat, "/lang ja");
    tg.wait_for(chat, T, |s| {
        s.text.contains("設定しました") && s.text.contains("`ja`")
    })
    .await;

    // An unwanted kind, then a live event with a thumbnail: only the latter arrives, in
    // Japanese, as a photo with a link button.
    publish(
        &bus,
        &event("youtube.video", aqua, json!({"title": "Unwanted upload"})),
    )
    .await;
    let live = event(
        "youtube.live",
        aqua,
        json!({
            "title": "Minecraft <live>",
            "link": "https://www.youtube.com/watch?v=abc",
            "thumbnail": "https://i.ytimg.com/vi/abc/hqdefault.jpg",
        }),
    );
    publish(&bus, &live).await;
    let notice = tg.wait_for(chat, T, |s| s.text.contains("湊あくあ")).await;
    assert_eq!(notice.method, "sendPhoto");
    assert_eq!(
        notice.photo.as_deref(),
        Some("https://i.ytimg.com/vi/abc/hqdefault.jpg")
    );
    assert!(
        notice.text.contains("配信が始まりました"),
        "{}",
        notice.text
    );
    assert!(notice.text.contains("Minecraft <live>"), "{}", notice.text);
    assert!(
        notice.raw.contains("Minecraft &lt;live&gt;"),
        "{}",
        notice.raw
    );
    assert_eq!(
        notice.buttons(),
        vec![(
            "YouTube で開く".to_owned(),
            "https://www.youtube.com/watch?v=abc".to_owned()
        )]
    );
    assert!(tg
        .sent_to(chat)
        .iter()
        .all(|s| !s.text.contains("Unwanted")));
    assert_eq!(
        logged_status(&platform.storage, live.id, chat, T).await,
        "sent"
    );

    // /settings: a working session link to the frontend, the token in the fragment.
    tg.send_text(chat, chat, "/settings");
    let link = tg
        .wait_for(chat, T, |s| {
            s.text.contains("https://stargazer.example/#token=")
        })
        .await;
    let token = token_in(&link.text);
    let status = platform.service.check_session(Some(&token)).await.unwrap();
    assert!(status.valid);
    assert_eq!(status.user, Some(user.id));
    assert_eq!(link.buttons()[0].0, "設定を開く");
    assert!(link.text.contains("こちらで編集できます"), "{}", link.text);

    // /unsubscribe without a name offers the current subscriptions.
    tg.send_text(chat, chat, "/unsubscribe");
    let offer = tg
        .wait_for(chat, T, |s| {
            s.text.contains("どの配信者のフォローを解除しますか")
        })
        .await;
    tg.press(
        chat,
        offer.message_id,
        chat,
        &button(&offer.buttons(), |l| l.contains("湊あくあ")),
    );
    tg.wait_message(chat, offer.message_id, T, |m| {
        text_of(m).contains("湊あくあ のフォローを解除しました")
    })
    .await;
    assert!(platform
        .service
        .get_subscription(Some(user.id))
        .await
        .unwrap()
        .is_empty());

    // /delete asks first, then removes the registration.
    tg.send_text(chat, chat, "/delete");
    let ask = tg
        .wait_for(chat, T, |s| s.text.contains("元に戻すことはできません"))
        .await;
    tg.press(
        chat,
        ask.message_id,
        chat,
        &button(&ask.buttons(), |l| l.starts_with("はい")),
    );
    tg.wait_message(chat, ask.message_id, T, |m| {
        text_of(m).contains("削除しました")
    })
    .await;
    let gone = platform
        .service
        .find_user("telegram", &chat.to_string())
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::NotFound));

    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_answered_in_the_language_it_chose() {
    init_tracing();
    let platform = Platform::start().await;
    let aqua = platform
        .entity(&[("en", "Minato Aqua"), ("ja", "湊あくあ")])
        .await;
    platform.entity(&[("en", "Houshou Marine")]).await;
    let tg = TelegramServer::start("123:languages").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus,
    );
    tg.wait_polling(T).await;
    let chat = 5101;

    // The command menu is published in every language the bot speaks.
    eventually("the menu is published per language", T, || {
        tg.calls_of("setMyCommands").len() >= 3
    })
    .await;
    let menus = tg.calls_of("setMyCommands");
    let menu_in = |code: Option<&str>| {
        menus
            .iter()
            .find(|call| call["language_code"].as_str() == code)
            .unwrap_or_else(|| panic!("no menu for {code:?} in {menus:#?}"))
            .to_string()
    };
    assert!(menu_in(None).contains("Register this chat"));
    assert!(menu_in(Some("ja")).contains("このチャットを登録します"));
    assert!(menu_in(Some("zh")).contains("注册此聊天"));

    tg.send_text(chat, chat, "/start");
    tg.wait_for(chat, T, |s| s.text.contains("Welcome to Stargazer"))
        .await;
    tg.send_text(chat, chat, "/lang");
    tg.wait_for(chat, T, |s| {
        s.text.contains("This chat is in `en`")
            && s.text.contains("en (English), ja (日本語), zh (中文)")
    })
    .await;

    // Japanese: help, an empty list, a subscription chosen on a Japanese keyboard.
    tg.send_text(chat, chat, "/lang ja");
    tg.wait_for(chat, T, |s| s.text.contains("設定しました"))
        .await;
    let user = platform
        .service
        .find_user("telegram", &chat.to_string())
        .await
        .unwrap();
    assert_eq!(user.language, "ja");
    tg.send_text(chat, chat, "/help");
    let help = tg
        .wait_for(chat, T, |s| s.text.contains("コマンド一覧"))
        .await;
    assert!(
        help.text.contains("/subscribe — 配信者をフォローします"),
        "{}",
        help.text
    );
    tg.send_text(chat, chat, "/list");
    tg.wait_for(chat, T, |s| s.text.contains("まだ誰もフォローしていません"))
        .await;
    tg.send_text(chat, chat, "/subscribe aqua");
    let keyboard = tg
        .wait_for(chat, T, |s| {
            s.text.contains("湊あくあ のどのイベントを受け取りますか")
        })
        .await;
    let video = button(&keyboard.buttons(), |l| l == "✅ 🎬 動画");
    tg.press(chat, keyboard.message_id, chat, &video);
    tg.wait_message(chat, keyboard.message_id, T, |m| {
        m.to_string().contains("⬜ 🎬 動画")
    })
    .await;
    let done = button(&tg.buttons(chat, keyboard.message_id), |l| l == "完了");
    tg.press(chat, keyboard.message_id, chat, &done);
    let confirmed = tg
        .wait_message(chat, keyboard.message_id, T, |m| {
            text_of(m).contains("✅ 湊あくあ をフォローしました: 🔴 配信、📅 配信予定")
        })
        .await;
    assert!(!text_of(&confirmed).contains("🎬 動画"), "{confirmed}");
    let subscriptions = platform
        .service
        .get_subscription(Some(user.id))
        .await
        .unwrap();
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].entity, aqua);
    tg.send_text(chat, chat, "/list");
    let list = tg
        .wait_for(chat, T, |s| s.text.contains("フォロー中（1）"))
        .await;
    assert!(list.text.contains("湊あくあ — 🔴 配信、"), "{}", list.text);
    tg.send_text(chat, chat, "/subscribe nobody-at-all");
    tg.wait_for(chat, T, |s| {
        s.text
            .contains("「nobody-at-all」に一致する配信者はいません")
    })
    .await;
    tg.send_text(chat, chat, "/frobnicate");
    tg.wait_for(chat, T, |s| {
        s.text.contains("/frobnicate というコマンドはありません") && s.text.contains("コマンド一覧")
    })
    .await;
    tg.send_text(chat, chat, "hello");
    tg.wait_for(chat, T, |s| s.text.contains("コマンドにだけお答えします"))
        .await;
    // An unknown language stays refused, in the chat's language, naming the languages.
    tg.send_text(chat, chat, "/lang xx");
    tg.wait_for(chat, T, |s| {
        s.text.contains("「xx」には対応していません")
            && s.text.contains("en (English), ja (日本語), zh (中文)")
    })
    .await;

    // Chinese.
    tg.send_text(chat, chat, "/lang zh");
    tg.wait_for(chat, T, |s| {
        s.text.contains("完成") && s.text.contains("`zh`")
    })
    .await;
    tg.send_text(chat, chat, "/help");
    tg.wait_for(chat, T, |s| {
        s.text.contains("命令：") && s.text.contains("/list — 列出已关注的主播")
    })
    .await;
    tg.send_text(chat, chat, "/list");
    tg.wait_for(chat, T, |s| {
        s.text.contains("关注列表（1）") && s.text.contains("🔴 直播、")
    })
    .await;
    tg.send_text(chat, chat, "/lang pt-BR");
    tg.wait_for(chat, T, |s| {
        s.text.contains("我不会说“pt-BR”") && s.text.contains("ja (日本語)")
    })
    .await;
    assert_eq!(
        platform
            .service
            .find_user("telegram", &chat.to_string())
            .await
            .unwrap()
            .language,
        "zh"
    );

    // A group that reads Japanese refuses its members in Japanese.
    let (group, admin, member) = (-7201, 8201, 8202);
    tg.add_admin(group, admin);
    tg.send_text(group, admin, "/start");
    tg.wait_for(group, T, |s| s.text.contains("Welcome to Stargazer"))
        .await;
    tg.send_text(group, admin, "/lang ja");
    tg.wait_for(group, T, |s| s.text.contains("設定しました"))
        .await;
    tg.send_text(group, member, "/subscribe aqua");
    tg.wait_for(group, T, |s| s.text.contains("グループの管理者だけです"))
        .await;

    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_who_are_not_admins_are_refused() {
    init_tracing();
    let platform = Platform::start().await;
    let aqua = platform.entity(&[("en", "Minato Aqua")]).await;
    let tg = TelegramServer::start("123:groups").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus,
    );
    tg.wait_polling(T).await;
    let (group, admin, member) = (-7001, 8002, 8001);
    tg.add_admin(group, admin);

    tg.send_text(group, member, "/subscribe Minato Aqua");
    tg.wait_for(group, T, |s| {
        s.text.contains("Only this group's administrators")
    })
    .await;

    tg.send_text(group, admin, "/subscribe minato aqua");
    let keyboard = tg
        .wait_for(group, T, |s| s.text.contains("Which events of Minato Aqua"))
        .await;
    let done = button(&keyboard.buttons(), |l| l == "Done");

    // A member pressing the admin's keyboard is refused too, and nothing changes.
    tg.press(group, keyboard.message_id, member, &done);
    eventually("the member is refused", T, || {
        tg.callback_answers().iter().any(|a| {
            a["text"]
                .as_str()
                .is_some_and(|t| t.contains("Only this group's administrators"))
                && a["show_alert"] == json!(true)
        })
    })
    .await;
    let user = platform
        .service
        .find_user("telegram", &group.to_string())
        .await
        .unwrap();
    assert!(platform
        .service
        .get_subscription(Some(user.id))
        .await
        .unwrap()
        .is_empty());

    tg.press(group, keyboard.message_id, admin, &done);
    tg.wait_message(group, keyboard.message_id, T, |m| {
        text_of(m).contains("Subscribed to Minato Aqua: all events")
    })
    .await;
    let subscriptions = platform
        .service
        .get_subscription(Some(user.id))
        .await
        .unwrap();
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].entity, aqua);

    // Reading is open to everyone.
    tg.send_text(group, member, "/list");
    tg.wait_for(group, T, |s| s.text.contains("Minato Aqua — all events"))
        .await;

    // A bare unknown command in a group may be another bot's: no answer. Addressed to
    // us, it gets the help.
    tg.send_text(group, member, "/frobnicate");
    tg.send_text(group, member, "/frobnicate@stargazer_test_bot");
    tg.wait_for(group, T, |s| s.text.contains("Unknown command /frobnicate"))
        .await;
    tg.send_text(group, member, "/help");
    tg.wait_for(group, T, |s| {
        s.text.contains("/subscribe") && !s.text.contains("Unknown")
    })
    .await;
    assert_eq!(
        tg.sent_to(group)
            .iter()
            .filter(|s| s.text.contains("Unknown command"))
            .count(),
        1
    );

    // In a private chat, everything gets an answer.
    let chat = 5002;
    tg.send_text(chat, chat, "/frobnicate");
    tg.wait_for(chat, T, |s| {
        s.text.contains("Unknown command /frobnicate") && s.text.contains("/subscribe")
    })
    .await;
    tg.send_text(chat, chat, "/subscribe");
    tg.wait_for(chat, T, |s| s.text.contains("Tell me whom to follow"))
        .await;
    tg.send_text(chat, chat, "/subscribe nobody-at-all");
    tg.wait_for(chat, T, |s| s.text.contains("No streamer matches"))
        .await;
    tg.send_text(chat, chat, "/lang xx");
    tg.wait_for(chat, T, |s| {
        s.text.contains("I do not speak “xx”") && s.text.contains("ja (日本語)")
    })
    .await;
    tg.send_text(chat, chat, "hello");
    tg.wait_for(chat, T, |s| s.text.contains("I answer commands only"))
        .await;
    tg.send_text(chat, chat, "/list");
    tg.wait_for(chat, T, |s| s.text.contains("No subscriptions yet"))
        .await;

    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_settings_link_goes_privately_to_the_admin_who_asked() {
    init_tracing();
    let platform = Platform::start().await;
    let tg = TelegramServer::start("123:group-settings").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus,
    );
    tg.wait_polling(T).await;
    let (group, admin, member) = (-7101, 8101, 8102);
    tg.add_admin(group, admin);
    tg.never_started(admin);
    let deep_link = format!("https://t.me/stargazer_test_bot?start=settings_{group}");

    // /start registers a group, so it is for admins only.
    tg.send_text(group, member, "/start");
    tg.wait_for(group, T, |s| {
        s.text.contains("Only this group's administrators")
    })
    .await;
    let unregistered = platform
        .service
        .find_user("telegram", &group.to_string())
        .await
        .unwrap_err();
    assert_eq!(unregistered.code(), Some(ErrorCode::NotFound));
    tg.send_text(group, admin, "/start");
    tg.wait_for(group, T, |s| s.text.contains("Welcome to Stargazer"))
        .await;
    let group_user = platform
        .service
        .find_user("telegram", &group.to_string())
        .await
        .unwrap();

    // The admin never wrote to the bot: the group learns how to start a private chat.
    tg.send_text(group, admin, "/settings");
    let hint = tg
        .wait_for(group, T, |s| s.text.contains("not started one with me"))
        .await;
    assert!(hint.text.contains(&deep_link), "{}", hint.text);
    assert!(tg.sent_to(admin).is_empty());

    // The deep link's /start in the private chat brings the group's link there.
    tg.send_text(admin, admin, &format!("/start settings_{group}"));
    let private = tg.wait_for(admin, T, |s| s.text.contains("#token=")).await;
    assert!(
        private.text.contains(&format!("Group {group}")),
        "{}",
        private.text
    );
    let status = platform
        .service
        .check_session(Some(&token_in(&private.text)))
        .await
        .unwrap();
    assert!(status.valid);
    assert_eq!(status.user, Some(group_user.id));

    // Now that the private chat exists, /settings in the group goes straight there.
    tg.send_text(group, admin, "/settings");
    tg.wait_for(group, T, |s| {
        s.text
            .contains("sent you the settings link in a private message")
    })
    .await;
    eventually("a second link reached the admin", T, || {
        tg.sent_to(admin)
            .iter()
            .filter(|s| s.text.contains("#token="))
            .count()
            == 2
    })
    .await;
    let second = tg.sent_to(admin).last().unwrap().text.clone();
    let status = platform
        .service
        .check_session(Some(&token_in(&second)))
        .await
        .unwrap();
    assert_eq!(status.user, Some(group_user.id));

    // A member cannot use the deep link, nor /settings in the group.
    tg.send_text(member, member, &format!("/start settings_{group}"));
    tg.wait_for(member, T, |s| {
        s.text.contains("Only this group's administrators")
    })
    .await;
    tg.send_text(group, member, "/settings");
    eventually("the member is refused /settings", T, || {
        tg.sent_to(group)
            .iter()
            .filter(|s| s.text.contains("Only this group's administrators"))
            .count()
            == 2
    })
    .await;
    assert!(tg
        .sent_to(member)
        .iter()
        .all(|s| !s.text.contains("token=")));
    // No session link ever appeared in the group.
    for sent in tg.sent_to(group) {
        assert!(!sent.text.contains("token="), "{}", sent.text);
        assert!(!sent.text.contains("stargazer.example"), "{}", sent.text);
    }
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_stops_the_bot_with_a_clear_error() {
    init_tracing();
    let platform = Platform::start().await;
    let tg = TelegramServer::start("123:right").await.unwrap();
    let mut config = platform.bot_config(&tg, "stargazer.test.bot-telegram.unused");
    config.token = "123:wrong".into();
    let bus = stargazer_core::bus::connect("memory://").await.unwrap();
    let stop = stargazer_core::CancellationToken::new();
    let service = Box::new(stargazer_bot_telegram::TelegramService::new(config));
    let storage = Some(platform.storage.clone());
    let cx = service_context(&*service, storage, Some(bus), vec![], stop);
    let result = tokio::time::timeout(T, service.run(cx))
        .await
        .expect("the bot gave up on a rejected token");
    let err = result.unwrap_err().to_string();
    assert!(err.contains("telegram.token"), "{err}");
}
