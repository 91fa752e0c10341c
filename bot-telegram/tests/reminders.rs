//! `/reminders` end to end: the picker shows the chat's reminder leads, toggles them in
//! place, and saves them through the api's `updateSetting`.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// The callback data of the button whose label satisfies `pred`.
fn button(buttons: &[(String, String)], pred: impl Fn(&str) -> bool) -> String {
    buttons
        .iter()
        .find(|(label, _)| pred(label))
        .map(|(_, data)| data.clone())
        .unwrap_or_else(|| panic!("no such button in {buttons:?}"))
}

fn labels(buttons: &[(String, String)]) -> Vec<&str> {
    buttons.iter().map(|(label, _)| label.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_picker_toggles_leads_in_place() {
    init_tracing();
    let platform = Platform::start().await;
    let tg = TelegramServer::start("123:reminders").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus.clone(),
    );
    tg.wait_polling(T).await;
    let chat = 5801;
    tg.send_text(chat, chat, "/reminders");
    let picker = tg
        .wait_for(chat, T, |s| s.text.contains("remind this chat"))
        .await;
    assert!(
        picker.text.contains("30 minutes before (the default)"),
        "{}",
        picker.text
    );
    assert_eq!(
        labels(&picker.buttons()),
        [
            "⬜ 5 min",
            "⬜ 15 min",
            "⬜ 30 min",
            "⬜ 60 min",
            "Save",
            "Cancel"
        ]
    );
    // /reminders registered the chat as any command does.
    assert!(platform
        .storage
        .find_user_by_chat("telegram", &chat.to_string())
        .await
        .unwrap()
        .is_some());

    for label in ["5 min", "60 min"] {
        let data = button(&tg.buttons(chat, picker.message_id), |l| l.ends_with(label));
        tg.press(chat, picker.message_id, chat, &data);
        tg.wait_message(chat, picker.message_id, T, |m| {
            m.to_string().contains(&format!("✅ {label}"))
        })
        .await;
    }
    assert_eq!(
        labels(&tg.buttons(chat, picker.message_id)),
        [
            "✅ 5 min",
            "⬜ 15 min",
            "⬜ 30 min",
            "✅ 60 min",
            "Save",
            "Cancel"
        ]
    );
    // Nothing is saved before Save.
    let user = platform
        .storage
        .find_user_by_chat("telegram", &chat.to_string())
        .await
        .unwrap()
        .unwrap();
    assert!(user.settings.reminder_leads.is_empty());
    bot.shutdown().await;
}

/// Leads picked on the keyboard are saved with `updateSetting` and shown from
/// `getSettings` the next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_leads_reach_the_api_and_show_next_time() {
    init_tracing();
    let platform = Platform::start().await;
    let tg = TelegramServer::start("123:reminders-save").await.unwrap();
    let bus = rabbit().await;
    let queue = TestQueue::declare(&bus).await;
    let bot = RunningBot::start(
        platform.bot_config(&tg, &queue.name),
        platform.storage.clone(),
        bus.clone(),
    );
    tg.wait_polling(T).await;
    let chat = 5802;
    tg.send_text(chat, chat, "/reminders");
    let picker = tg
        .wait_for(chat, T, |s| s.text.contains("remind this chat"))
        .await;
    let data = button(&picker.buttons(), |l| l.ends_with("15 min"));
    tg.press(chat, picker.message_id, chat, &data);
    tg.wait_message(chat, picker.message_id, T, |m| {
        m.to_string().contains("✅ 15 min")
    })
    .await;
    let save = button(&tg.buttons(chat, picker.message_id), |l| l == "Save");
    tg.press(chat, picker.message_id, chat, &save);
    tg.wait_message(chat, picker.message_id, T, |m| {
        m["text"].as_str() == Some("Saved: reminders 15 minutes before.")
    })
    .await;
    let user = platform
        .storage
        .find_user_by_chat("telegram", &chat.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.settings.reminder_leads, vec![15]);

    tg.send_text(chat, chat, "/reminders");
    let again = tg
        .wait_for(chat, T, |s| {
            s.message_id != picker.message_id && s.text.contains("remind this chat")
        })
        .await;
    assert!(
        again.text.contains("Now: 15 minutes before."),
        "{}",
        again.text
    );
    assert_eq!(labels(&again.buttons())[1], "✅ 15 min");
    bot.shutdown().await;
}
