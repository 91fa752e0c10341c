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
