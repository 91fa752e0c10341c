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

/// Delayed messages are put, replaced by id, read and deleted.
pub(crate) async fn delayed_crud(s: Arc<dyn Storage>) {
    let id = format!("delay-{}", Uuid::new_v4());
    let first = delayed(id.clone(), 1_700_000_000_000);
    s.put_delayed(&first).await.unwrap();
    assert_eq!(s.get_delayed(&id).await.unwrap().as_ref(), Some(&first));

    let mut second = delayed(id.clone(), 1_800_000_000_000);
    second.routing_key = "twitter.tweet".into();
    second.body = vec![];
    s.put_delayed(&second).await.unwrap();
    assert_eq!(s.get_delayed(&id).await.unwrap().as_ref(), Some(&second));
    let page = s.list_delayed(Some(&id[..id.len() - 1]), 10).await.unwrap();
    assert_eq!(page.iter().filter(|m| m.id == id).count(), 1);

    assert!(s.delete_delayed(&id).await.unwrap());
    assert!(!s.delete_delayed(&id).await.unwrap());
    assert_eq!(s.get_delayed(&id).await.unwrap(), None);
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
                s.put_delayed(&delayed(id, fire_at)).await
            }
        })
        .buffer_unordered(16)
        .for_each(|r| async move { r.unwrap() })
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
