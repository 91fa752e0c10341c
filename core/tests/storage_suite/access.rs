//! The contract of sessions and credentials (`AccessStore`).

use super::*;

// ---------------------------------------------------------------- sessions

/// Sessions are stored once, read, slid, deleted and purged when expired.
pub(crate) async fn sessions_lifecycle(s: Arc<dyn Storage>) {
    let u = user(&unique_im());
    s.insert_user(&u).await.unwrap();
    let now = now_truncated_to_ms();
    let mut live = session(u.id, now + TimeDelta::minutes(30));
    s.insert_session(&live).await.unwrap();
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );
    assert_eq!(s.get_session("no-such-token").await.unwrap(), None);

    let mut dup = session(u.id, now + TimeDelta::minutes(5));
    dup.token_hash = live.token_hash.clone();
    assert_conflict(s.insert_session(&dup).await);
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );

    live.expires_at = now + TimeDelta::hours(2);
    s.touch_session(&live.token_hash, live.expires_at)
        .await
        .unwrap();
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );
    assert_not_found(s.touch_session("no-such-token", live.expires_at).await);

    // Purging at a moment long past touches only sessions expired by then.
    let epoch = Utc
        .with_ymd_and_hms(2001, 2, 3, 4, 5, 6)
        .single()
        .expect("valid date");
    let old_a = session(u.id, epoch - TimeDelta::hours(1));
    let old_b = session(u.id, epoch - TimeDelta::days(3));
    let young = session(u.id, epoch + TimeDelta::hours(1));
    for x in [&old_a, &old_b, &young] {
        s.insert_session(x).await.unwrap();
    }
    // Expired ones stay readable until purged; callers check the time.
    assert_eq!(
        s.get_session(&old_a.token_hash).await.unwrap().as_ref(),
        Some(&old_a)
    );
    assert_eq!(s.purge_sessions(epoch).await.unwrap(), 2);
    assert_eq!(s.get_session(&old_a.token_hash).await.unwrap(), None);
    assert_eq!(s.get_session(&old_b.token_hash).await.unwrap(), None);
    assert_eq!(
        s.get_session(&young.token_hash).await.unwrap().as_ref(),
        Some(&young)
    );
    assert_eq!(
        s.get_session(&live.token_hash).await.unwrap().as_ref(),
        Some(&live)
    );
    assert_eq!(s.purge_sessions(epoch).await.unwrap(), 0);

    assert!(s.delete_session(&live.token_hash).await.unwrap());
    assert!(!s.delete_session(&live.token_hash).await.unwrap());
    assert_eq!(s.get_session(&live.token_hash).await.unwrap(), None);
}

// ---------------------------------------------------------------- credentials

/// Credentials are unique by username, listed in username order and deletable.
pub(crate) async fn credentials_crud(s: Arc<dyn Storage>) {
    let suffix = Uuid::new_v4().simple().to_string();
    let bot = Credential {
        username: format!("bot-{suffix}"),
        hash: "$pbkdf2-sha256$i=1000,l=32$c2FsdA$aGFzaA".into(),
        permissions: Permissions {
            api: Some(Access::Rw),
            mq: Some(Access::Ro),
            ..Default::default()
        },
        queues: vec!["bot.telegram".into(), "bot.telegram-eu".into()],
    };
    let admin = Credential {
        username: format!("admin-{suffix}"),
        hash: "$pbkdf2-sha256$i=1000,l=32$c2FsdDI$aGFzaDI".into(),
        permissions: Permissions {
            admin: Some(Access::Rw),
            coordinator: Some(Access::Ro),
            ..Default::default()
        },
        queues: Vec::new(),
    };
    s.insert_credential(&bot).await.unwrap();
    s.insert_credential(&admin).await.unwrap();
    assert_eq!(
        s.get_credential(&bot.username).await.unwrap().as_ref(),
        Some(&bot)
    );
    assert_eq!(
        s.get_credential(&format!("nobody-{suffix}")).await.unwrap(),
        None
    );

    let mut dup = admin.clone();
    dup.username = bot.username.clone();
    assert_conflict(s.insert_credential(&dup).await);
    assert_eq!(
        s.get_credential(&bot.username).await.unwrap().as_ref(),
        Some(&bot)
    );

    let all = s.list_credentials().await.unwrap();
    assert_sorted(&all, |c| c.username.clone());
    assert!(all.contains(&bot) && all.contains(&admin));

    assert!(s.delete_credential(&bot.username).await.unwrap());
    assert!(!s.delete_credential(&bot.username).await.unwrap());
    assert_eq!(s.get_credential(&bot.username).await.unwrap(), None);
    let all = s.list_credentials().await.unwrap();
    assert!(!all.iter().any(|c| c.username == bot.username));
    assert!(all.contains(&admin));
}
