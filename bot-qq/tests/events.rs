//! The event endpoint over real HTTP, reports POSTed by the local OneBot implementation:
//! signatures, body limits, parsing in both post formats, and which commands are passed
//! on (the commands themselves: `tests/commands.rs`).

use stargazer_bot_qq::events::{self, Chat, Command, CommandRequest, EventsState, Role};
use stargazer_testkit::servers::onebot::{
    self as onebot, Dialect, IncomingMessage, OneBotOptions, OneBotServer, Segment, Signing,
    SELF_ID,
};
use stargazer_testkit::servers::{serve, Served};
use tokio::sync::mpsc;

const SECRET: &str = "post-secret";

struct Bot {
    url: String,
    commands: mpsc::Receiver<CommandRequest>,
    _served: Served,
}

async fn bot(secret: Option<&str>) -> Bot {
    let (tx, commands) = mpsc::channel(16);
    let served = serve(events::router(EventsState::new(secret, tx)))
        .await
        .unwrap();
    Bot {
        url: format!("{}{}", served.base_url(), events::EVENTS_PATH),
        commands,
        _served: served,
    }
}

async fn onebot() -> OneBotServer {
    OneBotServer::start(OneBotOptions {
        access_token: Some("token".into()),
        secret: Some(SECRET.into()),
        dialect: Dialect::NapCat,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_signed_command_from_a_group_admin_is_accepted_and_parsed() {
    let server = onebot().await;
    let mut bot = bot(Some(SECRET)).await;
    let message =
        IncomingMessage::group(777, 42, "/subscribe Hoshimachi Suisei").role(onebot::Role::Admin);
    assert_eq!(server.post_message(&bot.url, &message).await.0, 204);
    let request = bot.commands.try_recv().unwrap();
    assert_eq!(
        request.command,
        Command::Subscribe {
            query: "Hoshimachi Suisei".into()
        }
    );
    assert_eq!(request.event.chat, Chat::Group(777));
    assert_eq!(request.event.sender.role, Some(Role::Admin));
    assert_eq!(request.event.self_id, SELF_ID);
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused_and_nothing_is_processed() {
    let server = onebot().await;
    let mut bot = bot(Some(SECRET)).await;
    let message = IncomingMessage::private(42, "/list");
    let (bad, _) = server
        .post_message_signed(&bot.url, &message, Signing::Bad)
        .await;
    let (missing, _) = server
        .post_message_signed(&bot.url, &message, Signing::Missing)
        .await;
    assert_eq!((bad, missing), (401, 401));
    assert!(bot.commands.try_recv().is_err(), "nothing was processed");
    // Tampering with a signed body breaks its signature too.
    let body = server.message_event(&message).to_string();
    let signature = onebot::signature(SECRET.as_bytes(), body.as_bytes());
    let tampered = body.replace("/list", "/delete");
    let response = reqwest::Client::new()
        .post(&bot.url)
        .header("content-type", "application/json")
        .header("x-signature", signature)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(bot.commands.try_recv().is_err());
}

#[tokio::test]
async fn too_large_reports_are_refused() {
    let server = onebot().await;
    let bot = bot(Some(SECRET)).await;
    let long = "x".repeat(events::MAX_BODY_BYTES + 1);
    let (status, _) = server
        .post_message(&bot.url, &IncomingMessage::private(42, &long))
        .await;
    assert_eq!(status, 413);
}

/// Reports in string format are decoded; a member's command in a group is passed on (the
/// command task decides), an unknown one only from a private chat.
#[tokio::test]
async fn string_format_reports_are_decoded_and_unknown_commands_pass_only_privately() {
    let server = onebot().await;
    let mut bot = bot(Some(SECRET)).await;
    // "@bot /lang ja" reported as CQ codes, and a typed code that must stay text.
    let mention = IncomingMessage::group(9, 1, "")
        .segments(vec![
            Segment::new("at", [("qq", SELF_ID.to_string().as_str())]),
            Segment::text(" /lang ja [CQ:at,qq=all]"),
        ])
        .role(onebot::Role::Owner)
        .string_format();
    assert_eq!(server.post_message(&bot.url, &mention).await.0, 204);
    let request = bot.commands.try_recv().unwrap();
    assert_eq!(
        request.command,
        Command::Lang {
            language: Some("ja".into())
        }
    );
    assert!(request.event.mentions_bot());
    assert_eq!(request.event.text(), " /lang ja [CQ:at,qq=all]");

    // An ordinary member's command in a group is passed on: whether they may give it is
    // the command task's decision, after asking the implementation.
    let member = IncomingMessage::group(9, 2, "/delete");
    assert_eq!(server.post_message(&bot.url, &member).await.0, 204);
    assert_eq!(
        bot.commands.try_recv().unwrap().command,
        Command::Delete { confirmed: false }
    );
    // An unknown command in a group is another bot's; privately it is passed on.
    let other_bots = IncomingMessage::group(9, 2, "/roll 2d6").role(onebot::Role::Owner);
    assert_eq!(server.post_message(&bot.url, &other_bots).await.0, 204);
    assert!(bot.commands.try_recv().is_err());
    let private = IncomingMessage::private(2, "/roll 2d6");
    assert_eq!(server.post_message(&bot.url, &private).await.0, 204);
    assert_eq!(
        bot.commands.try_recv().unwrap().command,
        Command::Unknown {
            name: "roll".into()
        }
    );
    // Chatter is not a command.
    let chatter = IncomingMessage::private(2, "hello").role(onebot::Role::Member);
    assert_eq!(server.post_message(&bot.url, &chatter).await.0, 204);
    assert!(bot.commands.try_recv().is_err());
    // Other events are acknowledged.
    let heartbeat = serde_json::json!({"time": 1, "self_id": SELF_ID, "post_type": "meta_event",
        "meta_event_type": "heartbeat", "status": {}, "interval": 5000});
    let (status, _) = server
        .post_raw(&bot.url, heartbeat.to_string().into_bytes(), Signing::Good)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .post_raw(&bot.url, b"not json".to_vec(), Signing::Good)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn without_a_secret_reports_are_taken_unsigned() {
    let server = OneBotServer::start(OneBotOptions::default()).await.unwrap();
    let mut bot = bot(None).await;
    let (status, _) = server
        .post_message(&bot.url, &IncomingMessage::private(3, "/list"))
        .await;
    assert_eq!(status, 204);
    assert_eq!(bot.commands.try_recv().unwrap().command, Command::List);
}
