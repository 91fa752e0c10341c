//! A stream's life in a chat, from the real RabbitMQ through a real api to the local Bot
//! API server: one message per stream, kept current. Replies point at the first
//! message, edits change it, an end never reaches a chat that did not see the start,
//! and the delivery log keeps a redelivered edit from happening twice.
//!
//! Each step waits for its event to be in the delivery log for the chat (every call of
//! the event is made by then), so the Bot API calls can be compared in order.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{json, Value};
use stargazer_api::types::UpdateSubscription;
use stargazer_core::model::Event;
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

/// The calls that send or change messages.
const MESSAGE_CALLS: [&str; 5] = [
    "sendMessage",
    "sendPhoto",
    "editMessageText",
    "editMessageCaption",
    "editMessageReplyMarkup",
];

fn chat_of(params: &Value) -> Option<i64> {
    match &params["chat_id"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The message calls made for `chat`, in order.
fn calls_to(tg: &TelegramServer, chat: i64) -> Vec<(String, Value)> {
    tg.calls()
        .into_iter()
        .filter(|(method, params)| {
            MESSAGE_CALLS.contains(&method.as_str()) && chat_of(params) == Some(chat)
        })
        .collect()
}

fn methods(calls: &[(String, Value)]) -> Vec<&str> {
    calls.iter().map(|(m, _)| m.as_str()).collect()
}

/// The message a send replies to (`reply_parameters.message_id`).
fn replied_to(params: &Value) -> Option<i64> {
    let reply = match &params["reply_parameters"] {
        Value::String(s) => serde_json::from_str(s).ok()?,
        other => other.clone(),
    };
    reply["message_id"].as_i64()
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339()
}

/// An event of `video`'s life with the fields every such event carries, plus `extra`.
fn stream_event(kind: &str, entity: Uuid, video: &str, extra: Value) -> Event {
    let mut fields = json!({
        "video_id": video,
        "title": format!("Stream {video}"),
        "link": format!("https://www.youtube.com/watch?v={video}"),
        "channel_id": "UCtest",
        "format": "stream",
        "members_only": false,
    });
    if let (Some(fields), Some(extra)) = (fields.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            fields.insert(k.clone(), v.clone());
        }
    }
    event(kind, entity, fields)
}

fn text_of(message: &Value) -> String {
    message["text"]
        .as_str()
        .or_else(|| message["caption"].as_str())
        .unwrap_or_default()
        .to_owned()
}

struct Setup {
    platform: Platform,
    tg: TelegramServer,
    bus: std::sync::Arc<dyn stargazer_core::bus::Bus>,
    queue: TestQueue,
    entity: Uuid,
}

async fn setup(name: &str) -> Setup {
    init_tracing();
    let platform = Platform::start().await;
    let entity = platform.entity(&[("en", name)]).await;
    let tg = TelegramServer::start(&format!("123:{}", name.replace(' ', "")))
        .await
        .unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    Setup {
        platform,
        tg,
        bus,
        queue,
        entity,
    }
}

impl Setup {
    fn bot(&self) -> RunningBot {
        let mut config = self.platform.bot_config(&self.tg, &self.queue.name);
        // Keeps the steps of a stream quick; pacing itself is covered elsewhere.
        config.chat_interval_ms = 50;
        RunningBot::start(config, self.platform.storage.clone(), self.bus.clone())
    }

    /// Publishes `event` and waits until it is settled for every chat of `chats`.
    async fn deliver(&self, event: &Event, chats: &[i64]) -> Vec<String> {
        publish(&self.bus, event).await;
        let mut statuses = Vec::new();
        for chat in chats {
            statuses.push(logged_status(&self.platform.storage, event.id, *chat, T).await);
        }
        statuses
    }

    async fn subscribe(&self, chat: i64, kinds: &[&str]) {
        let user = self.platform.subscribed_chat(chat, "en", self.entity).await;
        if !kinds.is_empty() {
            self.platform
                .service
                .update_subscription(&UpdateSubscription {
                    user: Some(user.id),
                    entity: self.entity,
                    subscribed: true,
                    kinds: kinds.iter().map(|k| k.to_string()).collect(),
                    mention: None,
                })
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_one_message_kept_current() {
    let s = setup("Usada Pekora").await;
    let chat = 7101;
    s.subscribe(chat, &[]).await;
    let bot = s.bot();
    let video = "lifeVideo01";
    let start = Utc::now() + chrono::Duration::hours(3);

    // Scheduled: the first message.
    let scheduled = stream_event(
        "youtube.scheduled",
        s.entity,
        video,
        json!({"scheduled_start": rfc3339(start)}),
    );
    assert_eq!(s.deliver(&scheduled, &[chat]).await, ["sent"]);
    let first = s.tg.sent_to(chat)[0].clone();
    assert!(first.text.contains("scheduled a stream"), "{}", first.text);

    // Moved later: the first message is edited, nothing is sent.
    let later = start + chrono::Duration::hours(1);
    let moved_later = stream_event(
        "youtube.rescheduled",
        s.entity,
        video,
        json!({"scheduled_start": rfc3339(later), "previous_start": rfc3339(start)}),
    );
    assert_eq!(s.deliver(&moved_later, &[chat]).await, ["sent"]);
    let text = text_of(&s.tg.message(chat, first.message_id).unwrap());
    assert!(text.contains("moved from"), "{text}");
    assert_eq!(s.tg.sent_to(chat).len(), 1);

    // Moved earlier, inside the default 30-minute lead: edited, and a short reply.
    let soon = Utc::now() + chrono::Duration::minutes(10);
    let moved_earlier = stream_event(
        "youtube.rescheduled",
        s.entity,
        video,
        json!({"scheduled_start": rfc3339(soon), "previous_start": rfc3339(later)}),
    );
    assert_eq!(s.deliver(&moved_earlier, &[chat]).await, ["sent"]);
    let notice = s.tg.sent_to(chat)[1].clone();
    assert!(notice.text.contains("Moved earlier"), "{}", notice.text);
    assert_eq!(notice.reply_to, Some(first.message_id));

    // The reminder: a new message replying to the first.
    let reminder = stream_event(
        "youtube.reminder",
        s.entity,
        video,
        json!({"scheduled_start": rfc3339(soon), "lead_seconds": 1800, "lead_default": true}),
    );
    assert_eq!(s.deliver(&reminder, &[chat]).await, ["sent"]);
    let reminded = s.tg.sent_to(chat)[2].clone();
    assert!(
        reminded.text.contains("goes live soon"),
        "{}",
        reminded.text
    );
    assert_eq!(reminded.reply_to, Some(first.message_id));

    // Live: a new message replying to the first, and the first says "live now".
    let started = Utc::now();
    let live = stream_event(
        "youtube.live",
        s.entity,
        video,
        json!({"scheduled_start": rfc3339(soon), "actual_start": rfc3339(started)}),
    );
    assert_eq!(s.deliver(&live, &[chat]).await, ["sent"]);
    let live_message = s.tg.sent_to(chat)[3].clone();
    assert!(
        live_message.text.contains("is live"),
        "{}",
        live_message.text
    );
    assert_eq!(live_message.reply_to, Some(first.message_id));
    let text = text_of(&s.tg.message(chat, first.message_id).unwrap());
    assert!(text.starts_with("🔴 Live now: Usada Pekora"), "{text}");

    // Ended: the first message shows the duration and links the archive; nothing sent.
    let ended = stream_event(
        "youtube.ended",
        s.entity,
        video,
        json!({
            "actual_start": rfc3339(started),
            "actual_end": rfc3339(started + chrono::Duration::seconds(7980)),
            "duration_seconds": 7980,
            "link": format!("https://www.youtube.com/watch?v={video}&archive=1"),
        }),
    );
    assert_eq!(s.deliver(&ended, &[chat]).await, ["sent"]);
    let text = text_of(&s.tg.message(chat, first.message_id).unwrap());
    assert!(text.contains("Ended, lasted 2h13m"), "{text}");
    assert_eq!(
        s.tg.buttons(chat, first.message_id),
        vec![(
            "Watch the archive".to_owned(),
            format!("https://www.youtube.com/watch?v={video}&archive=1")
        )]
    );

    let calls = calls_to(&s.tg, chat);
    assert_eq!(
        methods(&calls),
        [
            "sendMessage",     // scheduled
            "editMessageText", // moved later
            "editMessageText", // moved earlier…
            "sendMessage",     // …and the short notice
            "sendMessage",     // reminder
            "sendMessage",     // live
            "editMessageText", // first message: live now
            "editMessageText", // first message: ended
        ]
    );
    // Every edit is of the first message; edits never notify.
    for (method, params) in &calls {
        if method.starts_with("edit") {
            assert_eq!(params["message_id"].as_i64(), Some(first.message_id));
        }
    }
    assert_eq!(replied_to(&calls[3].1), Some(first.message_id));
    // The stream's life is over: its memories are gone.
    let deadline = tokio::time::Instant::now() + T;
    while !s
        .platform
        .storage
        .kv_list(&format!("bot.telegram.stream.{video}"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's memories were never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_edits_its_photo_and_an_unseen_end_sends_nothing() {
    let s = setup("Sakura Miko").await;
    let (early, late) = (7201, 7202);
    s.subscribe(early, &[]).await;
    let bot = s.bot();
    let video = "cancelVid01";
    let start = Utc::now() + chrono::Duration::hours(2);
    let photo = json!({"scheduled_start": rfc3339(start), "thumbnail": "https://i.ytimg.com/vi/cancelVid01/hq.jpg"});
    let scheduled = stream_event("youtube.scheduled", s.entity, video, photo.clone());
    s.deliver(&scheduled, &[early]).await;
    let first = s.tg.sent_to(early)[0].clone();
    assert_eq!(first.method, "sendPhoto");

    // A chat subscribing after the announcement never saw it.
    s.subscribe(late, &[]).await;
    let cancelled = stream_event("youtube.cancelled", s.entity, video, photo);
    let statuses = s.deliver(&cancelled, &[early, late]).await;
    assert_eq!(statuses[0], "sent");
    assert!(statuses[1].starts_with("skipped"), "{}", statuses[1]);
    let message = s.tg.message(early, first.message_id).unwrap();
    let caption = text_of(&message);
    assert!(
        caption.starts_with("❌ Cancelled: Sakura Miko"),
        "{caption}"
    );
    assert!(
        caption.contains("Stream cancelVid01"),
        "the title stays: {caption}"
    );
    assert!(s.tg.buttons(early, first.message_id).is_empty());
    assert_eq!(
        methods(&calls_to(&s.tg, early)),
        ["sendPhoto", "editMessageCaption"]
    );
    assert!(calls_to(&s.tg, late).is_empty());

    // The end of a stream neither chat was told about: nothing at all.
    let ended = stream_event(
        "youtube.ended",
        s.entity,
        "neverSeen01",
        json!({"duration_seconds": 600}),
    );
    let statuses = s.deliver(&ended, &[early, late]).await;
    assert!(
        statuses.iter().all(|s| s.starts_with("skipped")),
        "{statuses:?}"
    );
    assert_eq!(calls_to(&s.tg, early).len(), 2);
    assert!(calls_to(&s.tg, late).is_empty());
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premieres_and_members_only_streams_pass_their_gates() {
    let s = setup("Hoshimachi Suisei").await;
    let (live_only, premieres, members, everything) = (7301, 7302, 7303, 7304);
    s.subscribe(live_only, &["youtube.live"]).await;
    s.subscribe(premieres, &["youtube.live", "youtube.premiere"])
        .await;
    s.subscribe(members, &["youtube.live", "youtube.members"])
        .await;
    s.subscribe(everything, &[]).await;
    let bot = s.bot();
    let all = [live_only, premieres, members, everything];

    let premiere = stream_event(
        "youtube.live",
        s.entity,
        "premiere001",
        json!({"format": "premiere", "actual_start": rfc3339(Utc::now())}),
    );
    let members_only = stream_event(
        "youtube.live",
        s.entity,
        "members0001",
        json!({"members_only": true, "actual_start": rfc3339(Utc::now())}),
    );
    let plain = stream_event(
        "youtube.live",
        s.entity,
        "plain000001",
        json!({"actual_start": rfc3339(Utc::now())}),
    );
    publish(&s.bus, &premiere).await;
    publish(&s.bus, &members_only).await;
    // Every chat wants the plain one, and gets it after the others (per-chat order).
    s.deliver(&plain, &all).await;

    let got =
        |chat: i64| -> Vec<String> { s.tg.sent_to(chat).into_iter().map(|m| m.text).collect() };
    assert_eq!(got(live_only).len(), 1, "{:?}", got(live_only));
    let texts = got(premieres);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].contains("premiere has started"), "{texts:?}");
    let texts = got(members);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].contains("🔒 Members only"), "{texts:?}");
    assert_eq!(got(everything).len(), 3);
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_past_the_edit_window_is_left_alone() {
    let s = setup("Inugami Korone").await;
    let chat = 7401;
    s.subscribe(chat, &[]).await;
    let video = "oldVideo001";
    let bot = s.bot();
    let scheduled = stream_event(
        "youtube.scheduled",
        s.entity,
        video,
        json!({"scheduled_start": rfc3339(Utc::now() + chrono::Duration::hours(1))}),
    );
    s.deliver(&scheduled, &[chat]).await;
    bot.shutdown().await;
    let first = s.tg.sent_to(chat)[0].clone();
    let before = s.tg.message(chat, first.message_id).unwrap();

    // Two days pass (the bot restarts meanwhile): the memory says it was sent 49 h ago.
    let namespace = format!("bot.telegram.stream.{video}");
    let mut record = s
        .platform
        .storage
        .kv_get(&namespace, &chat.to_string())
        .await
        .unwrap()
        .expect("the first message is remembered");
    record["sent_at"] = json!(rfc3339(Utc::now() - chrono::Duration::hours(49)));
    s.platform
        .storage
        .kv_put(&namespace, &chat.to_string(), &record)
        .await
        .unwrap();

    let bot = s.bot();
    let live = stream_event(
        "youtube.live",
        s.entity,
        video,
        json!({"actual_start": rfc3339(Utc::now())}),
    );
    s.deliver(&live, &[chat]).await;
    let calls = calls_to(&s.tg, chat);
    assert_eq!(methods(&calls), ["sendMessage", "sendMessage"]);
    assert_eq!(
        replied_to(&calls[1].1),
        None,
        "no reply to a message that old"
    );
    assert_eq!(s.tg.message(chat, first.message_id).unwrap(), before);

    // The live message became the stream's first message: the end edits it.
    let live_message = s.tg.sent_to(chat)[1].clone();
    let ended = stream_event(
        "youtube.ended",
        s.entity,
        video,
        json!({"duration_seconds": 3000}),
    );
    s.deliver(&ended, &[chat]).await;
    let text = text_of(&s.tg.message(chat, live_message.message_id).unwrap());
    assert!(text.contains("Ended, lasted 50m"), "{text}");
    assert_eq!(s.tg.message(chat, first.message_id).unwrap(), before);
    bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_edit_is_not_made_twice() {
    let s = setup("Nekomata Okayu").await;
    let chats = [7501, 7502];
    for chat in chats {
        s.subscribe(chat, &[]).await;
    }
    let bot = s.bot();
    let video = "redeliver01";
    let scheduled = stream_event(
        "youtube.scheduled",
        s.entity,
        video,
        json!({"scheduled_start": rfc3339(Utc::now() + chrono::Duration::hours(1))}),
    );
    s.deliver(&scheduled, &chats).await;
    let live = stream_event(
        "youtube.live",
        s.entity,
        video,
        json!({"actual_start": rfc3339(Utc::now())}),
    );
    s.deliver(&live, &chats).await;
    // The same event again, then a sentinel upload that every chat gets after it.
    publish(&s.bus, &live).await;
    let sentinel = event(
        "youtube.video",
        s.entity,
        json!({"title": "sentinel upload", "link": "https://www.youtube.com/watch?v=sentinel"}),
    );
    s.deliver(&sentinel, &chats).await;
    for chat in chats {
        assert_eq!(
            methods(&calls_to(&s.tg, chat)),
            [
                "sendMessage",
                "sendMessage",
                "editMessageText",
                "sendMessage"
            ],
            "chat {chat}"
        );
    }
    bot.shutdown().await;
}

/// Per-chat reminder leads through the api: `getSubscribers` carries each chat's
/// `reminder_leads`, and each chat gets only the reminders at its leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_chat_gets_only_the_reminders_at_its_leads() {
    let s = setup("Shirogane Noel").await;
    let (five_and_sixty, fifteen, default) = (7601, 7602, 7603);
    for (chat, leads) in [
        (five_and_sixty, vec![5, 60]),
        (fifteen, vec![15]),
        (default, vec![]),
    ] {
        s.subscribe(chat, &[]).await;
        let mut user = s
            .platform
            .storage
            .find_user_by_chat("telegram", &chat.to_string())
            .await
            .unwrap()
            .unwrap();
        user.settings.reminder_leads = leads;
        s.platform.storage.update_user(&user).await.unwrap();
    }
    let bot = s.bot();
    let chats = [five_and_sixty, fifteen, default];
    let start = Utc::now() + chrono::Duration::hours(2);
    let mut reminders = Vec::new();
    for minutes in [60u64, 30, 15, 5] {
        let reminder = stream_event(
            "youtube.reminder",
            s.entity,
            "leadsVideo1",
            json!({"scheduled_start": rfc3339(start), "lead_seconds": minutes * 60, "lead_default": minutes == 30}),
        );
        publish(&s.bus, &reminder).await;
        reminders.push((minutes, reminder));
    }
    let sentinel = event("youtube.video", s.entity, json!({"title": "sentinel"}));
    s.deliver(&sentinel, &chats).await;
    for (chat, expected) in [
        (five_and_sixty, vec![60u64, 5]),
        (fifteen, vec![15]),
        (default, vec![30]),
    ] {
        let mut got = Vec::new();
        for (minutes, reminder) in &reminders {
            let logged = s
                .platform
                .storage
                .get_delivery(reminder.id, "telegram", &chat.to_string())
                .await
                .unwrap();
            if logged.is_some() {
                got.push(*minutes);
            }
        }
        assert_eq!(got, expected, "chat {chat}");
        // The reminders plus the sentinel.
        assert_eq!(s.tg.sent_to(chat).len(), expected.len() + 1, "chat {chat}");
    }
    bot.shutdown().await;
}

/// A Twitch or Bilibili stream is not announced ahead: its live message is the first
/// message, and the end (same `stream_id`) edits it; a second stream of the same channel
/// is a life of its own, and an end whose stream the chat never saw sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twitch_or_bilibili_live_message_is_edited_when_the_stream_ends() {
    let s = setup("Shirakami Fubuki").await;
    let chat = 7701;
    s.subscribe(chat, &[]).await;
    let bot = s.bot();
    let started = Utc::now();
    let twitch = |kind: &str, stream: &str, extra: Value| {
        let mut fields = json!({
            "stream_id": stream,
            "title": format!("Twitch {stream}"),
            "link": "https://www.twitch.tv/fubuki",
            "category": "Just Chatting",
            "actual_start": rfc3339(started),
        });
        if let (Some(fields), Some(extra)) = (fields.as_object_mut(), extra.as_object()) {
            fields.extend(extra.clone());
        }
        event(kind, s.entity, fields)
    };
    let live = twitch("twitch.live", "40001", json!({}));
    assert_eq!(s.deliver(&live, &[chat]).await, ["sent"]);
    let first = s.tg.sent_to(chat)[0].clone();
    assert!(first.text.contains("is live on Twitch"), "{}", first.text);
    assert!(first.text.contains("Just Chatting"), "{}", first.text);

    let ended = twitch(
        "twitch.ended",
        "40001",
        json!({"actual_end": rfc3339(started + chrono::Duration::seconds(5400)),
               "duration_seconds": 5400}),
    );
    assert_eq!(s.deliver(&ended, &[chat]).await, ["sent"]);
    let text = text_of(&s.tg.message(chat, first.message_id).unwrap());
    assert!(
        text.starts_with("⏹ Ended, lasted 1h30m: Shirakami Fubuki"),
        "{text}"
    );
    assert_eq!(
        s.tg.buttons(chat, first.message_id),
        vec![(
            "Open on Twitch".to_owned(),
            "https://www.twitch.tv/fubuki".to_owned()
        )]
    );

    // The end of a stream this chat never saw: settled, nothing sent or edited.
    let unseen = twitch("twitch.ended", "40999", json!({"duration_seconds": 60}));
    s.deliver(&unseen, &[chat]).await;

    // A Bilibili room: the same life under its own key, even with a colliding id.
    let room_live = event(
        "bilibili.live",
        s.entity,
        json!({"stream_id": "40001", "title": "杂谈", "link": "https://live.bilibili.com/1",
               "actual_start": rfc3339(started)}),
    );
    assert_eq!(s.deliver(&room_live, &[chat]).await, ["sent"]);
    let room_first = s.tg.sent_to(chat)[1].clone();
    assert!(
        room_first.text.contains("is live on Bilibili"),
        "{}",
        room_first.text
    );
    assert_eq!(room_first.reply_to, None);
    let room_ended = event(
        "bilibili.ended",
        s.entity,
        json!({"stream_id": "40001", "title": "杂谈", "link": "https://live.bilibili.com/1",
               "actual_start": rfc3339(started), "duration_seconds": 120}),
    );
    assert_eq!(s.deliver(&room_ended, &[chat]).await, ["sent"]);
    let text = text_of(&s.tg.message(chat, room_first.message_id).unwrap());
    assert!(text.starts_with("⏹ Ended, lasted 2m"), "{text}");
    // The Twitch message kept its own end.
    let text = text_of(&s.tg.message(chat, first.message_id).unwrap());
    assert!(text.contains("1h30m"), "{text}");

    assert_eq!(
        methods(&calls_to(&s.tg, chat)),
        [
            "sendMessage",
            "editMessageText",
            "sendMessage",
            "editMessageText"
        ]
    );
    bot.shutdown().await;
}
