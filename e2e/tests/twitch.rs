//! A Twitch stream through `stargazer standalone` (SQLite and the in-process bus), with
//! Twitch and Telegram played by local servers speaking their protocols:
//!
//! 1. an admin creates an entity with a Twitch task (RPC `newEntity`); the coordinator
//!    hands it to the Twitch worker, which subscribes to the broadcaster's EventSub types
//!    and answers each verification challenge;
//! 2. a chat subscribes through the bot;
//! 3. Twitch sends `stream.online` → the chat gets a message naming the entity, the
//!    stream's title and its twitch.tv link;
//! 4. Twitch sends `stream.offline` → the bot edits that message; a duplicate
//!    notification sends nothing more.

use std::time::Duration;

use stargazer_api::types::TaskParams;
use stargazer_e2e::backends::Pair;
use stargazer_e2e::platform::{Platform, STANDALONE_WORKER_ID};
use stargazer_e2e::wait;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_twitch_stream_reaches_the_chat_and_its_end_edits_the_message() {
    let platform = Platform::new(Pair::InProcess).await.unwrap();
    platform.start_all().await.unwrap();
    let ext = &platform.ext;
    let broadcaster = ext.twitch.add_user("Pekora");

    // 1. The admin creates the entity with its Twitch task.
    let entity = platform
        .new_entity(
            None,
            &[("en", "Usada Pekora")],
            &["en"],
            vec![TaskParams::Twitch {
                broadcaster_id: broadcaster.clone(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(entity.tasks.len(), 1);
    wait::until("three verified subscriptions", T, || {
        ext.twitch
            .subscriptions()
            .iter()
            .filter(|s| s.broadcaster == broadcaster && s.status == "enabled")
            .count()
            == 3
    })
    .await;
    let twitch_worker = format!("{STANDALONE_WORKER_ID}-twitch");
    wait::until_some("the Twitch worker holds its task", T, || async {
        let status = platform.coordinator_status().await.ok()?;
        status["workers"]
            .as_array()?
            .iter()
            .any(|w| w["id"] == twitch_worker.as_str() && w["tasks"] == 1)
            .then_some(())
    })
    .await;

    // 2. A chat subscribes through the bot.
    let chat = 43_4343;
    platform.subscribe_through_bot(chat, "Usada Pekora").await;

    // 3. The stream starts.
    let title = "Pekora's Minecraft castle";
    ext.twitch
        .go_live(&broadcaster, "81001", title, "Minecraft");
    let online = ext.twitch.online(&broadcaster, "81001", "live").await;
    assert_eq!(online.status, 204, "{}", online.body);
    let live = ext
        .telegram
        .wait_for(chat, T, |s| s.text.contains(title) || s.raw.contains(title))
        .await;
    assert!(live.text.contains("Usada Pekora"), "{}", live.text);
    let mentions_link = |s: &str| s.contains("twitch.tv/pekora");
    assert!(
        mentions_link(&live.raw)
            || mentions_link(&live.text)
            || live.buttons().iter().any(|(_, url)| mentions_link(url)),
        "{live:#?}"
    );

    // 4. The stream ends: the live message is edited, and a redelivery changes nothing.
    let offline = ext.twitch.offline(&broadcaster).await;
    assert_eq!(offline.status, 204);
    let edits_of_live = || {
        ["editMessageText", "editMessageCaption"]
            .iter()
            .flat_map(|method| ext.telegram.calls_of(method))
            .filter(|params| {
                params["message_id"].as_i64() == Some(live.message_id)
                    && params["chat_id"].to_string().contains(&chat.to_string())
            })
            .count()
    };
    wait::until("the live message is edited", T, || edits_of_live() >= 1).await;
    let (sent, edits) = (ext.telegram.sent_len(), edits_of_live());
    assert_eq!(ext.twitch.resend(&online.message_id).await.status, 204);
    assert_eq!(
        ext.twitch.resend_as_new(&online.message_id).await.status,
        204
    );
    assert_eq!(ext.twitch.resend(&offline.message_id).await.status, 204);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ext.telegram.sent_len(), sent, "{:#?}", ext.telegram.sent());
    assert_eq!(edits_of_live(), edits);

    platform.shutdown().await.unwrap();
}
