//! The contract of the delivery log (`DeliveryStore`).

use super::*;

// ---------------------------------------------------------------- delivery log

/// A delivery is recorded once per (event, im, chat) and can be read back.
pub(crate) async fn delivery_log(s: Arc<dyn Storage>) {
    let event = Uuid::new_v4();
    let im = unique_im();
    let record = DeliveryRecord {
        event,
        im: im.clone(),
        chat_id: "1001".into(),
        status: "sent".into(),
        at: now_truncated_to_ms(),
    };
    assert_eq!(s.get_delivery(event, &im, "1001").await.unwrap(), None);
    assert!(s.record_delivery(&record).await.unwrap());

    let mut again = record.clone();
    again.status = "failed: blocked".into();
    again.at = record.at + TimeDelta::seconds(5);
    assert!(!s.record_delivery(&again).await.unwrap());
    assert_eq!(
        s.get_delivery(event, &im, "1001").await.unwrap().as_ref(),
        Some(&record)
    );

    // Another chat or platform is a separate delivery.
    let mut other_chat = record.clone();
    other_chat.chat_id = "1002".into();
    assert!(s.record_delivery(&other_chat).await.unwrap());
    let mut other_im = record.clone();
    other_im.im = unique_im();
    assert!(s.record_delivery(&other_im).await.unwrap());
    assert_eq!(
        s.get_delivery(event, &im, "1002").await.unwrap().as_ref(),
        Some(&other_chat)
    );
    assert_eq!(
        s.get_delivery(Uuid::new_v4(), &im, "1001").await.unwrap(),
        None
    );
}

/// `delivered_chats` answers, for one event and platform, exactly which of the asked
/// chats are logged: not other chats, events or platforms, and not chats never asked.
pub(crate) async fn delivered_chats_of_an_event(s: Arc<dyn Storage>) {
    let event = Uuid::new_v4();
    let im = unique_im();
    let record = |event: Uuid, im: &str, chat: &str| DeliveryRecord {
        event,
        im: im.to_owned(),
        chat_id: chat.to_owned(),
        status: "sent".into(),
        at: now_truncated_to_ms(),
    };
    let chats = |ids: &[&str]| ids.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let set = |ids: &[&str]| ids.iter().map(|c| c.to_string()).collect::<HashSet<_>>();

    let asked = chats(&["1", "2", "3", "4", "5"]);
    assert_eq!(
        s.delivered_chats(event, &im, &asked).await.unwrap(),
        HashSet::new()
    );
    for chat in ["1", "3"] {
        assert!(s.record_delivery(&record(event, &im, chat)).await.unwrap());
    }
    // Logged, but for another platform, another event, or a chat not asked about.
    assert!(s
        .record_delivery(&record(event, &unique_im(), "2"))
        .await
        .unwrap());
    assert!(s
        .record_delivery(&record(Uuid::new_v4(), &im, "4"))
        .await
        .unwrap());
    assert!(s.record_delivery(&record(event, &im, "9")).await.unwrap());
    // A failure is as much "delivered" as a send: the recipient is done.
    let mut failed = record(event, &im, "5");
    failed.status = "failed: blocked".into();
    assert!(s.record_delivery(&failed).await.unwrap());

    assert_eq!(
        s.delivered_chats(event, &im, &asked).await.unwrap(),
        set(&["1", "3", "5"])
    );
    assert_eq!(
        s.delivered_chats(event, &im, &chats(&["3", "3", "2"]))
            .await
            .unwrap(),
        set(&["3"])
    );
    assert_eq!(
        s.delivered_chats(event, &im, &[]).await.unwrap(),
        HashSet::new()
    );
    assert_eq!(
        s.delivered_chats(Uuid::new_v4(), &im, &asked)
            .await
            .unwrap(),
        HashSet::new()
    );

    // A long candidate list (a big fan-out) answers the same way.
    let many: Vec<String> = (0..25_000).map(|n| format!("c{n}")).collect();
    for chat in ["c0", "c12345", "c24999"] {
        assert!(s.record_delivery(&record(event, &im, chat)).await.unwrap());
    }
    assert_eq!(
        s.delivered_chats(event, &im, &many).await.unwrap(),
        set(&["c0", "c12345", "c24999"])
    );
}

/// `record_deliveries` stores a batch in one call and says, per record, whether it was
/// new: records already logged and repeats within the batch keep the first record.
pub(crate) async fn delivery_batches(s: Arc<dyn Storage>) {
    let event = Uuid::new_v4();
    let im = unique_im();
    let record = |chat: &str, status: &str| DeliveryRecord {
        event,
        im: im.clone(),
        chat_id: chat.to_owned(),
        status: status.to_owned(),
        at: now_truncated_to_ms(),
    };
    assert_eq!(s.record_deliveries(&[]).await.unwrap(), Vec::<bool>::new());
    let earlier = record("2", "sent");
    assert!(s.record_delivery(&earlier).await.unwrap());

    let batch = vec![
        record("1", "sent"),
        record("2", "failed: late"),
        record("3", "sent"),
        record("1", "failed: repeat"),
        record("4", "failed: blocked"),
    ];
    assert_eq!(
        s.record_deliveries(&batch).await.unwrap(),
        vec![true, false, true, false, true]
    );
    for (chat, want) in [
        ("1", &batch[0]),
        ("2", &earlier),
        ("3", &batch[2]),
        ("4", &batch[4]),
    ] {
        assert_eq!(
            s.get_delivery(event, &im, chat).await.unwrap().as_ref(),
            Some(want),
            "chat {chat}"
        );
    }
    // The whole batch again: nothing is new, nothing changes.
    assert_eq!(s.record_deliveries(&batch).await.unwrap(), vec![false; 5]);
    assert_eq!(
        s.delivered_chats(
            event,
            &im,
            &["1".into(), "2".into(), "3".into(), "4".into(), "5".into()]
        )
        .await
        .unwrap(),
        ["1", "2", "3", "4"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>()
    );
}
