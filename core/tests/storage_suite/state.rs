//! The contract of key/value entries and seen windows (`StateStore`).

use super::*;

// ---------------------------------------------------------------- key/value

/// Values are stored per namespace, replaced, listed in key order and deleted.
pub(crate) async fn kv_namespaces(s: Arc<dyn Storage>) {
    let ns = format!("kv-{}", Uuid::new_v4());
    let other = format!("kv-{}", Uuid::new_v4());
    assert_eq!(s.kv_get(&ns, "cursor").await.unwrap(), None);

    s.kv_put(&ns, "cursor", &json!({"since_id": "123"}))
        .await
        .unwrap();
    s.kv_put(&ns, "a-lease", &json!(42)).await.unwrap();
    s.kv_put(&ns, "z", &json!(["x", null, 1.5, true]))
        .await
        .unwrap();
    s.kv_put(&other, "cursor", &json!("elsewhere"))
        .await
        .unwrap();
    assert_eq!(
        s.kv_get(&ns, "cursor").await.unwrap(),
        Some(json!({"since_id": "123"}))
    );

    s.kv_put(&ns, "cursor", &json!({"since_id": "456", "n": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(
        s.kv_get(&ns, "cursor").await.unwrap(),
        Some(json!({"since_id": "456", "n": [1, 2]}))
    );
    assert_eq!(
        s.kv_list(&ns).await.unwrap(),
        vec![
            ("a-lease".to_owned(), json!(42)),
            ("cursor".to_owned(), json!({"since_id": "456", "n": [1, 2]})),
            ("z".to_owned(), json!(["x", null, 1.5, true])),
        ]
    );
    assert_eq!(
        s.kv_list(&other).await.unwrap(),
        vec![("cursor".to_owned(), json!("elsewhere"))]
    );

    assert!(s.kv_delete(&ns, "cursor").await.unwrap());
    assert!(!s.kv_delete(&ns, "cursor").await.unwrap());
    assert_eq!(s.kv_get(&ns, "cursor").await.unwrap(), None);
    assert_eq!(
        s.kv_get(&other, "cursor").await.unwrap(),
        Some(json!("elsewhere"))
    );
    assert!(s
        .kv_list(&format!("kv-{}", Uuid::new_v4()))
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- seen windows

/// An id is new once per namespace; purging forgets ids seen before the cut.
pub(crate) async fn seen_window(s: Arc<dyn Storage>) {
    let ns = format!("seen-{}", Uuid::new_v4());
    let other = format!("seen-{}", Uuid::new_v4());
    let now = now_truncated_to_ms();
    let old = now - TimeDelta::hours(2);

    assert!(s.mark_seen(&ns, "v1", old).await.unwrap());
    assert!(!s.mark_seen(&ns, "v1", old).await.unwrap());
    assert!(s.mark_seen(&ns, "v2", old).await.unwrap());
    assert!(s.mark_seen(&ns, "v3", now).await.unwrap());
    assert!(s.mark_seen(&other, "v1", old).await.unwrap());

    assert_eq!(
        s.purge_seen(&ns, now - TimeDelta::hours(1)).await.unwrap(),
        2
    );
    assert_eq!(
        s.purge_seen(&ns, now - TimeDelta::hours(1)).await.unwrap(),
        0
    );
    // Forgotten ids are new again; kept ones are not; other namespaces are untouched.
    assert!(s.mark_seen(&ns, "v1", now).await.unwrap());
    assert!(!s.mark_seen(&ns, "v3", now).await.unwrap());
    assert!(!s.mark_seen(&other, "v1", now).await.unwrap());
}

// ---------------------------------------------------------------- leases

/// A lease has one holder at a time: renewals keep the epoch, a run-out term is taken
/// over with a new epoch, a release hands it on at once, and namespaces are apart.
pub(crate) async fn leases_one_holder_at_a_time(s: Arc<dyn Storage>) {
    let ns = format!("leases-{}", Uuid::new_v4());
    let other = format!("leases-{}", Uuid::new_v4());
    let t0 = now_truncated_to_ms();
    let secs = chrono::Duration::seconds;

    let a = s
        .lease_acquire(&ns, "leader", "a", t0, t0 + secs(10))
        .await
        .unwrap()
        .expect("a free lease is granted");
    assert_eq!(
        (a.owner.as_str(), a.epoch, a.until),
        ("a", 1, t0 + secs(10))
    );
    // Another owner is refused while the term runs, even at its last instant.
    assert_eq!(
        s.lease_acquire(&ns, "leader", "b", t0 + secs(10), t0 + secs(20))
            .await
            .unwrap(),
        None
    );
    // The same name in another namespace is another lease.
    assert!(s
        .lease_acquire(&other, "leader", "b", t0, t0 + secs(10))
        .await
        .unwrap()
        .is_some());
    // A renewal moves the term and keeps the epoch.
    let renewed = s
        .lease_acquire(&ns, "leader", "a", t0 + secs(5), t0 + secs(15))
        .await
        .unwrap()
        .expect("the holder renews");
    assert_eq!((renewed.epoch, renewed.until), (1, t0 + secs(15)));
    // Once the term has run out, another owner takes it over with a new epoch, and the
    // old holder's renewal is refused.
    let b = s
        .lease_acquire(&ns, "leader", "b", t0 + secs(16), t0 + secs(26))
        .await
        .unwrap()
        .expect("a run-out lease is taken over");
    assert_eq!((b.owner.as_str(), b.epoch), ("b", 2));
    assert_eq!(
        s.lease_acquire(&ns, "leader", "a", t0 + secs(17), t0 + secs(27))
            .await
            .unwrap(),
        None
    );
    // Only the holder can release; a release lets the next owner in before the term ends.
    assert!(!s.lease_release(&ns, "leader", "a").await.unwrap());
    assert!(s.lease_release(&ns, "leader", "b").await.unwrap());
    let a = s
        .lease_acquire(&ns, "leader", "a", t0 + secs(18), t0 + secs(28))
        .await
        .unwrap()
        .expect("a released lease is free");
    assert_eq!(a.epoch, 3);
    s.lease_acquire(&ns, "shard-7", "c", t0, t0 + secs(5))
        .await
        .unwrap()
        .expect("another name is another lease");

    let listed = s.lease_list(&ns).await.unwrap();
    let summary: Vec<(&str, &str, u64)> = listed
        .iter()
        .map(|l| (l.name.as_str(), l.owner.as_str(), l.epoch))
        .collect();
    assert_eq!(summary, [("leader", "a", 3), ("shard-7", "c", 1)]);
    assert!(listed[0].is_held_at(t0 + secs(28)));
    assert!(!listed[1].is_held_at(t0 + secs(6)));
    assert!(s
        .lease_list(&format!("leases-{}", Uuid::new_v4()))
        .await
        .unwrap()
        .is_empty());
}

/// Many owners asking for one free (or run-out) lease at once: exactly one gets it.
pub(crate) async fn leases_under_contention(s: Arc<dyn Storage>) {
    let ns = format!("leases-{}", Uuid::new_v4());
    let t0 = now_truncated_to_ms();
    let mut previous: Option<Lease> = None;
    for round in 0..3i64 {
        // Each round starts after the previous holder's term ended.
        let now = t0 + chrono::Duration::seconds(100 * round);
        let until = now + chrono::Duration::seconds(50);
        let asks = (0..8).map(|i| {
            let s = s.clone();
            let ns = ns.clone();
            tokio::spawn(async move {
                s.lease_acquire(&ns, "leader", &format!("owner-{i}"), now, until)
                    .await
                    .unwrap()
            })
        });
        let granted: Vec<_> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|joined| joined.unwrap())
            .collect();
        assert_eq!(granted.len(), 1, "round {round}: {granted:?}");
        // A new holder gets a new epoch; the last holder taking its own lease back
        // (nobody held it between) keeps its epoch.
        let expected = match &previous {
            None => 1,
            Some(p) if p.owner == granted[0].owner => p.epoch,
            Some(p) => p.epoch + 1,
        };
        assert_eq!(granted[0].epoch, expected, "round {round}");
        let stored = s.lease_list(&ns).await.unwrap();
        assert_eq!(stored, granted);
        previous = Some(granted[0].clone());
    }
}

/// Counters add atomically within their window, restart after it, never go below 0, and
/// are purged by age; namespaces and keys are separate.
pub(crate) async fn windowed_counters(s: Arc<dyn Storage>) {
    let ns = format!("counters-{}", Uuid::new_v4().simple());
    let t0 = now_truncated_to_ms();
    let window = |at: DateTime<Utc>| at - TimeDelta::seconds(60);
    assert_eq!(
        s.add_to_counter(&ns, "a", 1, t0, window(t0)).await.unwrap(),
        1
    );
    assert_eq!(
        s.add_to_counter(&ns, "a", 1, t0, window(t0)).await.unwrap(),
        2
    );
    assert_eq!(
        s.add_to_counter(&ns, "b", 1, t0, window(t0)).await.unwrap(),
        1
    );
    assert_eq!(
        s.add_to_counter(&ns, "a", -1, t0, window(t0))
            .await
            .unwrap(),
        1
    );
    // Never below zero.
    assert_eq!(
        s.add_to_counter(&ns, "b", -5, t0, window(t0))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.add_to_counter(&ns, "b", 1, t0, window(t0)).await.unwrap(),
        1
    );
    // Past the window it starts again.
    let later = t0 + TimeDelta::seconds(120);
    assert_eq!(
        s.add_to_counter(&ns, "a", 1, later, window(later))
            .await
            .unwrap(),
        1
    );
    // Concurrent adds all count.
    let adds = (0..20).map(|_| s.add_to_counter(&ns, "c", 1, t0, window(t0)));
    let mut seen: Vec<i64> = futures::future::join_all(adds)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<i64>>());
    // Purged by age: "b" and "c" were last changed at t0, "a" later.
    assert_eq!(
        s.purge_counters(&ns, t0 + TimeDelta::seconds(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.add_to_counter(&ns, "b", 0, later, window(later))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.add_to_counter(&ns, "a", 0, later, window(later))
            .await
            .unwrap(),
        1
    );
}
