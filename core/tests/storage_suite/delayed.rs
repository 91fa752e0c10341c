//! The contract of delayed messages (`DelayStore`).

use super::*;

// ---------------------------------------------------------------- delayed messages

fn delayed(id: String, fire_at_ms: i64) -> DelayedMessage {
    DelayedMessage {
        routing_key: format!("youtube.live.{id}"),
        body: id
            .as_bytes()
            .iter()
            .chain([0u8, 255, 10].iter())
            .copied()
            .collect(),
        id,
        fire_at_ms,
    }
}

/// Delayed messages are put, replaced by id, read and deleted; every write gets a fresh
/// revision and a replacement resets the claim.
pub(crate) async fn delayed_crud(s: Arc<dyn Storage>) {
    let id = format!("delay-{}", Uuid::new_v4());
    let first = delayed(id.clone(), 1_700_000_000_000);
    let first_revision = s.put_delayed(&first, None).await.unwrap();
    let stored = s.get_delayed(&id).await.unwrap().expect("stored");
    assert_eq!(
        (&stored.message, stored.revision, &stored.lease),
        (&first, first_revision, &None)
    );

    let mut second = delayed(id.clone(), 1_800_000_000_000);
    second.routing_key = "twitter.tweet".into();
    second.body = vec![];
    let lease = DelayLease {
        owner: "instance-a".into(),
        until_ms: 1_900_000_000_000,
    };
    let second_revision = s.put_delayed(&second, Some(&lease)).await.unwrap();
    assert_ne!(
        first_revision, second_revision,
        "a replacement is told apart"
    );
    let stored = s.get_delayed(&id).await.unwrap().expect("stored");
    assert_eq!(
        (&stored.message, stored.revision, stored.lease.as_ref()),
        (&second, second_revision, Some(&lease))
    );
    let page = s.list_delayed(Some(&id[..id.len() - 1]), 10).await.unwrap();
    assert_eq!(page.iter().filter(|m| m.id == id).count(), 1);

    // Only the revision that fired is deleted by a conditional delete.
    assert!(!s.delete_delayed_if(&id, first_revision).await.unwrap());
    assert!(s.get_delayed(&id).await.unwrap().is_some());
    assert!(s.delete_delayed_if(&id, second_revision).await.unwrap());
    assert!(!s.delete_delayed_if(&id, second_revision).await.unwrap());

    s.put_delayed(&first, None).await.unwrap();
    assert!(s.delete_delayed(&id).await.unwrap());
    assert!(!s.delete_delayed(&id).await.unwrap());
    assert_eq!(s.get_delayed(&id).await.unwrap(), None);
}

/// A unique owner name, so claims of other tests on a shared database never mix in.
fn owner(name: &str) -> String {
    format!("{name}-{}", Uuid::new_v4().simple())
}

/// Claims give the due, unclaimed (or lapsed) messages to one owner, earliest first, up
/// to the limit; renew extends them, release frees them, and a replacement resets them.
pub(crate) async fn delayed_claims(s: Arc<dyn Storage>) {
    // Fire times far in the past of any real clock but after every other test's, so a
    // shared database's messages due before them are few; the run's ids are ours.
    let base = 1_000_000_000 + (Uuid::new_v4().as_u128() % 1_000_000) as i64 * 1000;
    let prefix = format!("claim-{}-", Uuid::new_v4().simple());
    let (a, b) = (owner("a"), owner("b"));
    let mut revisions = std::collections::HashMap::new();
    for i in 0..10_i64 {
        let id = format!("{prefix}{i:02}");
        let revision = s
            .put_delayed(&delayed(id.clone(), base + i), None)
            .await
            .unwrap();
        revisions.insert(id, revision);
    }
    let now = base + 100;
    let ours = |claimed: &[ClaimedDelayed]| -> Vec<ClaimedDelayed> {
        claimed
            .iter()
            .filter(|c| c.id.starts_with(&prefix))
            .cloned()
            .collect()
    };
    // Due before base + 5: at most five of ours, earliest first, with their revisions.
    let first = s
        .claim_delayed(&a, base + 5, now + 1000, now, 3)
        .await
        .unwrap();
    assert!(first.len() <= 3);
    assert_sorted(&first, |c| c.fire_at_ms);
    let mut held_by_a: Vec<ClaimedDelayed> = ours(&first);
    let rest = s
        .claim_delayed(&a, base + 5, now + 1000, now, 100)
        .await
        .unwrap();
    held_by_a.extend(ours(&rest));
    let ids: Vec<&str> = held_by_a.iter().map(|c| c.id.as_str()).collect();
    let want: Vec<String> = (0..5).map(|i| format!("{prefix}{i:02}")).collect();
    assert_eq!(ids, want, "the five due ones, once each, earliest first");
    for c in &held_by_a {
        assert_eq!(revisions[&c.id], c.revision);
        let stored = s.get_delayed(&c.id).await.unwrap().expect("stored");
        assert_eq!(
            stored.lease,
            Some(DelayLease {
                owner: a.clone(),
                until_ms: now + 1000
            })
        );
    }
    // Held and unexpired: nobody else gets them, not even with a wider window.
    let by_b = ours(
        &s.claim_delayed(&b, base + 7, now + 1000, now, 100)
            .await
            .unwrap(),
    );
    let ids: Vec<String> = by_b.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, [format!("{prefix}05"), format!("{prefix}06")]);

    // Renewing extends only the owner's claims.
    assert_eq!(s.renew_delayed_claims(&a, now + 5000).await.unwrap(), 5);
    let stored = s
        .get_delayed(&format!("{prefix}00"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.lease.map(|l| l.until_ms), Some(now + 5000));
    // Lapsed claims (the clock passed them) go to whoever claims next.
    let later = now + 6000;
    let taken = ours(
        &s.claim_delayed(&b, base + 5, later + 1000, later, 100)
            .await
            .unwrap(),
    );
    assert_eq!(
        taken.len(),
        5,
        "a's lapsed claims are taken over: {taken:?}"
    );
    assert_eq!(s.renew_delayed_claims(&a, later + 9000).await.unwrap(), 0);

    // A replacement resets the claim: to none, or to the writer.
    let replaced = format!("{prefix}00");
    let new_revision = s
        .put_delayed(&delayed(replaced.clone(), base), None)
        .await
        .unwrap();
    let reclaimed = ours(
        &s.claim_delayed(&a, base + 1, later + 1000, later, 100)
            .await
            .unwrap(),
    );
    assert_eq!(
        reclaimed,
        [ClaimedDelayed {
            id: replaced.clone(),
            fire_at_ms: base,
            revision: new_revision
        }]
    );
    let lease = DelayLease {
        owner: b.clone(),
        until_ms: later + 1000,
    };
    s.put_delayed(&delayed(replaced.clone(), base), Some(&lease))
        .await
        .unwrap();
    assert!(ours(
        &s.claim_delayed(&a, base + 1, later + 1000, later, 100)
            .await
            .unwrap()
    )
    .is_empty());

    // Releasing frees every claim of the owner at once.
    assert_eq!(s.release_delayed_claims(&b).await.unwrap(), 7);
    let freed = ours(
        &s.claim_delayed(&a, base + 10, later + 1000, later, 100)
            .await
            .unwrap(),
    );
    assert_eq!(freed.len(), 10, "all ten claimable again: {freed:?}");
    assert_eq!(s.release_delayed_claims(&b).await.unwrap(), 0);
    for i in 0..10 {
        s.delete_delayed(&format!("{prefix}{i:02}")).await.unwrap();
    }
}

/// Two owners claiming the same due messages at once never both get one.
pub(crate) async fn delayed_claims_race(s: Arc<dyn Storage>) {
    const COUNT: usize = 400;
    let base = 2_000_000_000 + (Uuid::new_v4().as_u128() % 1_000_000) as i64 * 1000;
    let prefix = format!("race-{}-", Uuid::new_v4().simple());
    futures::stream::iter(0..COUNT)
        .map(|i| {
            let s = s.clone();
            let id = format!("{prefix}{i:04}");
            async move { s.put_delayed(&delayed(id, base), None).await }
        })
        .buffer_unordered(16)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
    let now = base + 10;
    let claimers: Vec<_> = (0..4)
        .map(|n| {
            let s = s.clone();
            let me = owner(&format!("racer{n}"));
            let prefix = prefix.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s
                        .claim_delayed(&me, base + 1, now + 60_000, now, 37)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(
                        got.into_iter()
                            .filter(|c| c.id.starts_with(&prefix))
                            .map(|c| c.id),
                    );
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), COUNT, "every message claimed");
    assert_eq!(all.len(), COUNT, "no message claimed twice");
    for i in 0..COUNT {
        s.delete_delayed(&format!("{prefix}{i:04}")).await.unwrap();
    }
}

/// `list_delayed` pages through thousands of messages in id order without gaps or repeats.
pub(crate) async fn delayed_pagination(s: Arc<dyn Storage>) {
    const COUNT: usize = 2_500;
    const PAGE: u32 = 700;
    let prefix = format!("page-{}-", Uuid::new_v4().simple());
    let mut ids: Vec<String> = (0..COUNT).map(|i| format!("{prefix}{i:05}")).collect();
    // Insert in a scrambled order so id order is the store's doing.
    let mut scrambled = ids.clone();
    scrambled.sort_by_key(|id| Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes()));
    futures::stream::iter(scrambled)
        .map(|id| {
            let s = s.clone();
            async move {
                let fire_at = 1_700_000_000_000 + id.len() as i64;
                s.put_delayed(&delayed(id, fire_at), None).await
            }
        })
        .buffer_unordered(16)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
    ids.sort();

    let mut seen = Vec::with_capacity(COUNT);
    // The prefix itself sorts before every id that extends it.
    let mut cursor = prefix.clone();
    loop {
        let page = s.list_delayed(Some(&cursor), PAGE).await.unwrap();
        assert!(page.len() <= PAGE as usize);
        assert_sorted(&page, |m| m.id.clone());
        let mine: Vec<&DelayedMessage> = page
            .iter()
            .take_while(|m| m.id.starts_with(&prefix))
            .collect();
        for m in &mine {
            assert!(m.id > cursor);
            assert_eq!(**m, delayed(m.id.clone(), m.fire_at_ms));
        }
        seen.extend(mine.iter().map(|m| m.id.clone()));
        if mine.len() < PAGE as usize {
            break;
        }
        cursor = mine.last().expect("page not empty").id.clone();
    }
    assert_eq!(seen, ids);

    // Unbounded start: the whole set is there, still in order.
    let first = s.list_delayed(None, 3).await.unwrap();
    assert!(!first.is_empty() && first.len() <= 3);
    assert_sorted(&first, |m| m.id.clone());
}
