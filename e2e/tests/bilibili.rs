//! `stargazer standalone` end to end with a Bilibili user, every external service played
//! by a local server speaking its protocol:
//!
//! 1. an admin creates an entity with a Bilibili task (RPC `newEntity`,
//!    `{"kind":"bilibili","uid":"…"}`); the coordinator hands it to the Bilibili worker,
//!    which records the user's dynamics without announcing the history;
//! 2. a chat subscribes through the bot;
//! 3. the room goes live → the chat gets a message with the title and the room's link;
//! 4. the room goes off → the bot edits that message;
//! 5. a new dynamic reaches the chat.

use std::time::Duration;

use stargazer_api::types::TaskParams;
use stargazer_e2e::backends::Pair;
use stargazer_e2e::platform::{Platform, STANDALONE_WORKER_ID};
use stargazer_e2e::servers::bilibili::{new_uid, Post};
use stargazer_e2e::wait;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bilibili_room_and_dynamic_reach_a_chat_through_standalone() {
    let platform = Platform::new(Pair::InProcess).await.unwrap();
    platform.start_all().await.unwrap();
    let ext = &platform.ext;
    let uid = new_uid();
    let room = 21_000_000 + uid % 1_000_000;
    ext.bilibili.add_room(uid, room);
    ext.bilibili.post(
        uid,
        Post::Text {
            text: "history, not news".into(),
        },
    );

    // 1. The admin creates the entity with a Bilibili task.
    let entity = platform
        .new_entity(
            None,
            &[("en", "Nanami Bili"), ("zh", "七海")],
            &[],
            vec![TaskParams::Bilibili {
                uid: uid.to_string(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(entity.tasks.len(), 1);

    // 2. A chat subscribes through the bot.
    let chat = 43_4343;
    platform.subscribe_through_bot(chat, "Nanami Bili").await;
    wait::until_some("the Bilibili worker holds the task", T, || async {
        let status = platform.coordinator_status().await.ok()?;
        let id = format!("{STANDALONE_WORKER_ID}-bilibili");
        status["workers"]
            .as_array()?
            .iter()
            .find(|w| w["id"] == id)
            .filter(|w| w["connected"] == true && w["tasks"] == 1)
            .map(|_| ())
    })
    .await;
    // Its first look at the dynamics records them without announcing any.
    wait::until("the worker polled the dynamics twice", T, || {
        ext.bilibili.feed_calls(uid).len() >= 2
    })
    .await;

    // 3. The room goes live.
    let title = "【歌回】Bilibili e2e";
    ext.bilibili.set_live(uid, title);
    let live = ext
        .telegram
        .wait_for(chat, T, |s| s.text.contains(title))
        .await;
    let link = format!("live.bilibili.com/{room}");
    assert!(
        live.raw.contains(&link) || live.buttons().iter().any(|(_, url)| url.contains(&link)),
        "{live:?}"
    );

    // 4. It goes off: after the cooldown the bot edits the live message.
    ext.bilibili.set_off(uid);
    wait::until("the live message is edited", T, || {
        ext.telegram.calls().iter().any(|(method, params)| {
            method.starts_with("editMessage")
                && params["chat_id"].to_string().trim_matches('"') == chat.to_string()
                && params["message_id"].to_string().trim_matches('"') == live.message_id.to_string()
        })
    })
    .await;

    // 5. A new dynamic.
    let text = "今晚八点见！";
    ext.bilibili.post(uid, Post::Text { text: text.into() });
    ext.telegram
        .wait_for(chat, T, |s| s.text.contains(text))
        .await;
    let sent = ext.telegram.sent_to(chat);
    assert!(
        !sent.iter().any(|s| s.text.contains("history, not news")),
        "history was announced"
    );
}
