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

// ---------------------------------------------------------------- claims

fn claim(event: Uuid, im: &str, owner: &str, now: DateTime<Utc>, lease: i64) -> DeliveryClaim {
    DeliveryClaim {
        event,
        im: im.to_owned(),
        owner: owner.to_owned(),
        now,
        lease_until: now + TimeDelta::seconds(lease),
    }
}

fn chat_ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|c| c.to_string()).collect()
}

/// A claim is won once: another owner sees it held until it is settled (then settled)
/// or its lease ends (then it is taken over); the owner itself wins it again; a claim is
/// not a delivery for `delivered_chats`; records written without a claim count as
/// settled.
pub(crate) async fn delivery_claims(s: Arc<dyn Storage>) {
    let (event, im) = (Uuid::new_v4(), unique_im());
    let t0 = now_truncated_to_ms();
    let chats = chat_ids(&["1", "2", "3"]);
    // An old-style record, written before claims existed.
    let old = DeliveryRecord {
        event,
        im: im.clone(),
        chat_id: "3".into(),
        status: "sent".into(),
        at: t0,
    };
    assert!(s.record_delivery(&old).await.unwrap());

    let a = claim(event, &im, "a", t0, 60);
    assert_eq!(
        s.claim_deliveries(&a, &chats).await.unwrap(),
        [
            ClaimState::Won,
            ClaimState::Won,
            ClaimState::Settled("sent".into())
        ]
    );
    assert_eq!(
        s.get_delivery(event, &im, "1")
            .await
            .unwrap()
            .map(|r| r.status),
        Some(DELIVERY_CLAIMED.to_owned())
    );
    // A claim is not a delivery.
    assert_eq!(
        s.delivered_chats(event, &im, &chats).await.unwrap(),
        HashSet::from(["3".to_owned()])
    );
    // Another owner, while the lease lasts: held, naming the holder.
    let b = claim(event, &im, "b", t0 + TimeDelta::seconds(1), 60);
    let held = ClaimState::Held {
        owner: "a".into(),
        lease_until: a.lease_until,
    };
    assert_eq!(
        s.claim_deliveries(&b, &chats[..2]).await.unwrap(),
        [held.clone(), held.clone()]
    );
    // The owner asking again wins again (repeats answer alike).
    assert_eq!(
        s.claim_deliveries(&a, &chat_ids(&["1", "1"]))
            .await
            .unwrap(),
        [ClaimState::Won, ClaimState::Won]
    );
    // Settling a claim (whoever claimed it) counts as new, once.
    let sent = DeliveryRecord {
        event,
        im: im.clone(),
        chat_id: "1".into(),
        status: "sent".into(),
        at: t0 + TimeDelta::seconds(2),
    };
    assert_eq!(
        s.record_deliveries(&[sent.clone(), sent.clone()])
            .await
            .unwrap(),
        [true, false]
    );
    assert_eq!(
        s.get_delivery(event, &im, "1").await.unwrap().as_ref(),
        Some(&sent)
    );
    assert_eq!(
        s.claim_deliveries(&b, &chats[..1]).await.unwrap(),
        [ClaimState::Settled("sent".into())]
    );
    // Past the lease the claim is taken over, and then the old owner is the one kept off.
    let late = claim(event, &im, "b", a.lease_until, 60);
    assert_eq!(
        s.claim_deliveries(&late, &chats[1..2]).await.unwrap(),
        [ClaimState::Won]
    );
    let a_again = claim(event, &im, "a", a.lease_until, 60);
    assert_eq!(
        s.claim_deliveries(&a_again, &chats[1..2]).await.unwrap(),
        [ClaimState::Held {
            owner: "b".into(),
            lease_until: late.lease_until,
        }]
    );
    assert_eq!(
        s.delivered_chats(event, &im, &chats).await.unwrap(),
        HashSet::from(["1".to_owned(), "3".to_owned()])
    );
    assert!(s.claim_deliveries(&a, &[]).await.unwrap().is_empty());
}

/// Renewing moves every unsettled claim of one owner at once; releasing deletes them (of
/// one event, or all), never a settled record or another owner's claim.
pub(crate) async fn delivery_claims_renew_and_release(s: Arc<dyn Storage>) {
    let (first, second, im) = (Uuid::new_v4(), Uuid::new_v4(), unique_im());
    let t0 = now_truncated_to_ms();
    let chats = chat_ids(&["1", "2"]);
    s.claim_deliveries(&claim(first, &im, "a", t0, 1), &chats)
        .await
        .unwrap();
    s.claim_deliveries(&claim(second, &im, "a", t0, 1), &chats)
        .await
        .unwrap();
    s.claim_deliveries(&claim(second, &im, "b", t0, 1), &chat_ids(&["9"]))
        .await
        .unwrap();
    let settled = DeliveryRecord {
        event: first,
        im: im.clone(),
        chat_id: "2".into(),
        status: "sent".into(),
        at: t0,
    };
    assert!(s.record_delivery(&settled).await.unwrap());
    let renewed = t0 + TimeDelta::seconds(600);
    assert_eq!(s.renew_claims(&im, "a", renewed).await.unwrap(), 3);
    // Renewed: still held after the first lease would have ended.
    let c = claim(first, &im, "c", t0 + TimeDelta::seconds(5), 60);
    assert_eq!(
        s.claim_deliveries(&c, &chats).await.unwrap(),
        [
            ClaimState::Held {
                owner: "a".into(),
                lease_until: renewed
            },
            ClaimState::Settled("sent".into())
        ]
    );
    // Released for one event: free for anyone at once; the settled record stays.
    assert_eq!(s.release_claims(&im, "a", Some(first)).await.unwrap(), 1);
    assert_eq!(
        s.claim_deliveries(&c, &chats).await.unwrap(),
        [ClaimState::Won, ClaimState::Settled("sent".into())]
    );
    // Released for every event: only "a"'s claims go.
    assert_eq!(s.release_claims(&im, "a", None).await.unwrap(), 2);
    assert_eq!(s.get_delivery(second, &im, "1").await.unwrap(), None);
    assert!(s.get_delivery(second, &im, "9").await.unwrap().is_some());
    assert_eq!(s.renew_claims(&im, "a", renewed).await.unwrap(), 0);
}

/// Two owners taking over the same lapsed claims at once: each chat is won by exactly
/// one of them.
pub(crate) async fn delivery_claim_takeover_race(s: Arc<dyn Storage>) {
    let (event, im) = (Uuid::new_v4(), unique_im());
    let t0 = now_truncated_to_ms();
    let chats: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    s.claim_deliveries(&claim(event, &im, "dead", t0, 1), &chats)
        .await
        .unwrap();
    let later = t0 + TimeDelta::seconds(2);
    let (x, y) = (
        claim(event, &im, "x", later, 60),
        claim(event, &im, "y", later, 60),
    );
    let (sx, sy) = tokio::join!(
        s.claim_deliveries(&x, &chats),
        s.claim_deliveries(&y, &chats)
    );
    let (sx, sy) = (sx.unwrap(), sy.unwrap());
    for (n, (a, b)) in sx.iter().zip(&sy).enumerate() {
        let won = [a, b].iter().filter(|s| ***s == ClaimState::Won).count();
        assert_eq!(won, 1, "chat {n}: {a:?} / {b:?}");
    }
}
