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
