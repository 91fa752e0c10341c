//! The contract of users and subscriptions (`UserStore`).

use super::*;

// ---------------------------------------------------------------- users

/// Users round-trip and are found by id and by chat; updates replace their fields.
pub(crate) async fn users_crud(s: Arc<dyn Storage>) {
    let im = unique_im();
    let mut a = user(&im);
    let b = user(&im);
    let other = user(&unique_im());
    for u in [&a, &b, &other] {
        s.insert_user(u).await.unwrap();
    }

    assert_eq!(s.get_user(a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(s.get_user(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        s.find_user_by_chat(&im, &a.im_chat_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );
    assert_eq!(
        s.find_user_by_chat(&im, "no-such-chat").await.unwrap(),
        None
    );
    assert_eq!(
        s.find_user_by_chat(&unique_im(), &a.im_chat_id)
            .await
            .unwrap(),
        None
    );

    let mut want = vec![a.clone(), b.clone()];
    want.sort_by_key(|u| u.id);
    assert_eq!(s.list_users(Some(&im)).await.unwrap(), want);
    let all = s.list_users(None).await.unwrap();
    assert_sorted(&all, |u| u.id);
    for u in [&a, &b, &other] {
        assert!(all.contains(u), "{u:?} not listed");
    }

    let old_chat = a.im_chat_id.clone();
    a.name = "Renamed".into();
    a.language = "ja".into();
    a.settings = UserSettings {
        timezone: Some("Asia/Tokyo".into()),
        paused: true,
        reminder_leads: vec![5, 60],
        calendar_secret_hash: Some(stargazer_core::auth::token_hash("calendar secret")),
    };
    a.im_chat_id = format!("{old_chat}0");
    s.update_user(&a).await.unwrap();
    assert_eq!(s.get_user(a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(s.find_user_by_chat(&im, &old_chat).await.unwrap(), None);
    assert_eq!(
        s.find_user_by_chat(&im, &a.im_chat_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );

    s.delete_user(b.id).await.unwrap();
    assert_eq!(s.get_user(b.id).await.unwrap(), None);
    assert_eq!(s.list_users(Some(&im)).await.unwrap(), vec![a]);
}

/// Duplicate user ids and chats are refused, also when an update would take a chat.
pub(crate) async fn user_conflicts(s: Arc<dyn Storage>) {
    let im = unique_im();
    let a = user(&im);
    let b = user(&im);
    s.insert_user(&a).await.unwrap();
    s.insert_user(&b).await.unwrap();

    let mut same_id = user(&im);
    same_id.id = a.id;
    assert_conflict(s.insert_user(&same_id).await);

    let mut same_chat = user(&im);
    same_chat.im_chat_id = a.im_chat_id.clone();
    assert_conflict(s.insert_user(&same_chat).await);
    assert_eq!(s.get_user(same_chat.id).await.unwrap(), None);

    // The same chat id on another platform is a different chat.
    let mut elsewhere = user(&unique_im());
    elsewhere.im_chat_id = a.im_chat_id.clone();
    s.insert_user(&elsewhere).await.unwrap();

    let mut taker = b.clone();
    taker.im_chat_id = a.im_chat_id.clone();
    assert_conflict(s.update_user(&taker).await);
    assert_eq!(s.get_user(b.id).await.unwrap().as_ref(), Some(&b));
    assert_eq!(
        s.find_user_by_chat(&im, &a.im_chat_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );
}

/// Updating or deleting a missing user is `NotFound`.
pub(crate) async fn user_not_found(s: Arc<dyn Storage>) {
    let ghost = user(&unique_im());
    assert_not_found(s.update_user(&ghost).await);
    assert_not_found(s.delete_user(ghost.id).await);
    assert_eq!(s.get_user(ghost.id).await.unwrap(), None);
}

/// Deleting a user deletes their sessions and subscriptions, and nobody else's.
pub(crate) async fn delete_user_cascades(s: Arc<dyn Storage>) {
    let im = unique_im();
    let gone = user(&im);
    let kept = user(&im);
    let e = entity();
    s.insert_entity(&e).await.unwrap();
    s.insert_user(&gone).await.unwrap();
    s.insert_user(&kept).await.unwrap();
    let later = now_truncated_to_ms() + TimeDelta::hours(1);
    let gone_session = session(gone.id, later);
    let kept_session = session(kept.id, later);
    s.insert_session(&gone_session).await.unwrap();
    s.insert_session(&kept_session).await.unwrap();
    s.put_subscription(&subscription(gone.id, e.id, &[]))
        .await
        .unwrap();
    s.put_subscription(&subscription(kept.id, e.id, &[]))
        .await
        .unwrap();

    s.delete_user(gone.id).await.unwrap();

    assert_eq!(s.get_session(&gone_session.token_hash).await.unwrap(), None);
    assert_eq!(
        s.get_session(&kept_session.token_hash).await.unwrap(),
        Some(kept_session)
    );
    assert!(s.list_subscriptions(gone.id).await.unwrap().is_empty());
    let subs = s.subscribers(e.id, "youtube.live", &im).await.unwrap();
    assert_eq!(
        subs.iter().map(|x| x.user.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    assert_not_found(s.delete_user(gone.id).await);
}

// ---------------------------------------------------------------- subscriptions

/// Subscriptions are put, replaced, listed in entity order and deleted.
pub(crate) async fn subscriptions_crud(s: Arc<dyn Storage>) {
    let u = user(&unique_im());
    s.insert_user(&u).await.unwrap();
    let mut entities = vec![entity(), entity(), entity()];
    for e in &entities {
        s.insert_entity(e).await.unwrap();
    }
    entities.sort_by_key(|e| e.id);

    // Inserted out of order on purpose.
    for e in entities.iter().rev() {
        s.put_subscription(&subscription(u.id, e.id, &["youtube.live"]))
            .await
            .unwrap();
    }
    let want: Vec<Subscription> = entities
        .iter()
        .map(|e| subscription(u.id, e.id, &["youtube.live"]))
        .collect();
    assert_eq!(s.list_subscriptions(u.id).await.unwrap(), want);

    // Replacing keeps one subscription per (user, entity).
    let replaced = subscription(u.id, entities[1].id, &["twitter.tweet", "youtube.video"]);
    s.put_subscription(&replaced).await.unwrap();
    let listed = s.list_subscriptions(u.id).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1], replaced);

    assert!(s.delete_subscription(u.id, entities[0].id).await.unwrap());
    assert!(!s.delete_subscription(u.id, entities[0].id).await.unwrap());
    assert!(!s
        .delete_subscription(Uuid::new_v4(), entities[1].id)
        .await
        .unwrap());
    let listed = s.list_subscriptions(u.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|x| x.entity).collect::<Vec<_>>(),
        vec![entities[1].id, entities[2].id]
    );
    assert!(s
        .list_subscriptions(Uuid::new_v4())
        .await
        .unwrap()
        .is_empty());
}

/// `subscribers` matches the platform and kind, treats empty kinds as all, skips paused
/// users and orders by user id.
pub(crate) async fn subscribers_filtering(s: Arc<dyn Storage>) {
    let im = unique_im();
    let other_im = unique_im();
    let e = entity();
    let unrelated = entity();
    s.insert_entity(&e).await.unwrap();
    s.insert_entity(&unrelated).await.unwrap();

    let all_kinds = user(&im);
    let live_only = user(&im);
    let tweets_only = user(&im);
    let mut paused = user(&im);
    paused.settings.paused = true;
    let elsewhere = user(&other_im);
    let not_subscribed = user(&im);
    let subs = [
        subscription(all_kinds.id, e.id, &[]),
        subscription(live_only.id, e.id, &["youtube.live"]),
        subscription(tweets_only.id, e.id, &["twitter.tweet", "twitter.retweet"]),
        subscription(paused.id, e.id, &[]),
        subscription(elsewhere.id, e.id, &["youtube.live"]),
        subscription(not_subscribed.id, unrelated.id, &[]),
    ];
    for u in [
        &all_kinds,
        &live_only,
        &tweets_only,
        &paused,
        &elsewhere,
        &not_subscribed,
    ] {
        s.insert_user(u).await.unwrap();
    }
    for sub in &subs {
        s.put_subscription(sub).await.unwrap();
    }

    let expect = |pairs: &[(&User, &Subscription)]| {
        let mut v: Vec<Subscriber> = pairs
            .iter()
            .map(|(u, sub)| Subscriber {
                user: (*u).clone(),
                subscription: (*sub).clone(),
            })
            .collect();
        v.sort_by_key(|x| x.user.id);
        v
    };

    assert_eq!(
        s.subscribers(e.id, "youtube.live", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0]), (&live_only, &subs[1])])
    );
    assert_eq!(
        s.subscribers(e.id, "twitter.retweet", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0]), (&tweets_only, &subs[2])])
    );
    assert_eq!(
        s.subscribers(e.id, "youtube.video", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0])])
    );
    // A kind that is a prefix of a wanted one does not match it.
    assert_eq!(
        s.subscribers(e.id, "twitter", &im).await.unwrap(),
        expect(&[(&all_kinds, &subs[0])])
    );
    assert_eq!(
        s.subscribers(e.id, "youtube.live", &other_im)
            .await
            .unwrap(),
        expect(&[(&elsewhere, &subs[4])])
    );
    assert!(s
        .subscribers(e.id, "youtube.live", &unique_im())
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .subscribers(Uuid::new_v4(), "youtube.live", &im)
        .await
        .unwrap()
        .is_empty());

    // Unpausing brings the user back.
    paused.settings.paused = false;
    s.update_user(&paused).await.unwrap();
    let got = s.subscribers(e.id, "youtube.video", &im).await.unwrap();
    assert_eq!(got, expect(&[(&all_kinds, &subs[0]), (&paused, &subs[3])]));
}

/// A subscription's mention is stored, listed, returned by `subscribers`, kept when only
/// the kinds change (`put_subscription_kinds`), replaced or cleared by `put_subscription`,
/// and gone with the subscription.
pub(crate) async fn subscription_mentions(s: Arc<dyn Storage>) {
    let im = unique_im();
    let e = entity();
    s.insert_entity(&e).await.unwrap();
    let (with, without) = (user(&im), user(&im));
    for u in [&with, &without] {
        s.insert_user(u).await.unwrap();
    }
    let mut mentioned = subscription(with.id, e.id, &["youtube.live"]);
    mentioned.mention = Some("123456789012345678".into());
    s.put_subscription(&mentioned).await.unwrap();
    s.put_subscription(&subscription(without.id, e.id, &[]))
        .await
        .unwrap();

    assert_eq!(
        s.list_subscriptions(with.id).await.unwrap(),
        [mentioned.clone()]
    );
    let mention_of = |subscribers: &[Subscriber], user: Uuid| {
        subscribers
            .iter()
            .find(|x| x.user.id == user)
            .map(|x| x.subscription.mention.clone())
    };
    let found = s.subscribers(e.id, "youtube.live", &im).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(
        mention_of(&found, with.id),
        Some(Some("123456789012345678".into()))
    );
    assert_eq!(mention_of(&found, without.id), Some(None));

    // Changing the kinds alone keeps the mention.
    let kinds = vec!["youtube.live".to_owned(), "youtube.video".to_owned()];
    s.put_subscription_kinds(with.id, e.id, &kinds)
        .await
        .unwrap();
    let listed = s.list_subscriptions(with.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kinds, kinds);
    assert_eq!(listed[0].mention.as_deref(), Some("123456789012345678"));
    let found = s.subscribers(e.id, "youtube.video", &im).await.unwrap();
    assert_eq!(
        mention_of(&found, with.id),
        Some(Some("123456789012345678".into()))
    );

    // Without a subscription, it inserts one without mention.
    let other = entity();
    s.insert_entity(&other).await.unwrap();
    s.put_subscription_kinds(with.id, other.id, &[])
        .await
        .unwrap();
    let listed = s.list_subscriptions(with.id).await.unwrap();
    let inserted = listed.iter().find(|x| x.entity == other.id).unwrap();
    assert_eq!(inserted, &subscription(with.id, other.id, &[]));

    // `put_subscription` replaces the mention, and `None` clears it.
    let mut replaced = subscription(with.id, e.id, &[]);
    replaced.mention = Some("role:2".into());
    s.put_subscription(&replaced).await.unwrap();
    let found = s.subscribers(e.id, "twitter.tweet", &im).await.unwrap();
    assert_eq!(mention_of(&found, with.id), Some(Some("role:2".into())));
    s.put_subscription(&subscription(with.id, e.id, &[]))
        .await
        .unwrap();
    let found = s.subscribers(e.id, "youtube.live", &im).await.unwrap();
    assert_eq!(mention_of(&found, with.id), Some(None));
    let listed = s.list_subscriptions(with.id).await.unwrap();
    assert!(listed.iter().all(|x| x.mention.is_none()), "{listed:?}");

    // Unsubscribing drops it: subscribing again starts without one.
    s.put_subscription(&replaced).await.unwrap();
    assert!(s.delete_subscription(with.id, e.id).await.unwrap());
    s.put_subscription_kinds(with.id, e.id, &[]).await.unwrap();
    let found = s.subscribers(e.id, "youtube.live", &im).await.unwrap();
    assert_eq!(mention_of(&found, with.id), Some(None));
}
