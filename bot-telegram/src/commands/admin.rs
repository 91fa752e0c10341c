//! Who may change a chat's subscriptions and settings: anyone in a private chat; in a
//! group, its administrators (and anonymous admins, who post as the group itself).
//! Checks ask Telegram (`getChatMember`) and are remembered for a while, so a busy group
//! does not cost one Bot API call per command.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use stargazer_core::sync::lock;
use teloxide::prelude::*;
use teloxide::types::{Chat, User};
use tokio::time::Instant;

/// The message (`i18n` id) a non-admin in a group is told.
pub(crate) const REFUSAL: &str = "admin-only";

/// Remembered admin checks, keyed by (chat, user).
pub(crate) struct AdminCache {
    ttl: Duration,
    // A std Mutex: lookups and inserts only, never held across an await.
    entries: Mutex<HashMap<(i64, u64), (bool, Instant)>>,
}

/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl AdminCache {
    /// A cache whose answers expire after `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, chat: i64, user: u64) -> Option<bool> {
        let entries = lock(&self.entries);
        entries
            .get(&(chat, user))
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(admin, _)| *admin)
    }

    fn put(&self, chat: i64, user: u64, admin: bool) {
        let mut entries = lock(&self.entries);
        if entries.len() >= SWEEP_ABOVE {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        entries.insert((chat, user), (admin, Instant::now()));
    }
}

/// Whether `user` (or `sender_chat`) may change settings of `chat`.
pub(crate) async fn may_change(
    bot: &Bot,
    cache: &AdminCache,
    chat: &Chat,
    user: Option<&User>,
    sender_chat: Option<&Chat>,
) -> Result<bool, teloxide::RequestError> {
    if chat.is_private() {
        return Ok(true);
    }
    // Anonymous admins write as the group itself.
    if sender_chat.is_some_and(|s| s.id == chat.id) {
        return Ok(true);
    }
    let Some(user) = user else {
        return Ok(false);
    };
    is_admin(bot, cache, chat.id, user).await
}

/// Whether `user` administers group `chat` (asked of Telegram, remembered a while).
pub(crate) async fn is_admin(
    bot: &Bot,
    cache: &AdminCache,
    chat: ChatId,
    user: &User,
) -> Result<bool, teloxide::RequestError> {
    if let Some(admin) = cache.get(chat.0, user.id.0) {
        return Ok(admin);
    }
    let member = bot.get_chat_member(chat, user.id).await?;
    let admin = member.is_privileged();
    cache.put(chat.0, user.id.0, admin);
    Ok(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_expire() {
        let cache = AdminCache::new(Duration::from_secs(10));
        assert_eq!(cache.get(-1, 5), None);
        cache.put(-1, 5, true);
        assert_eq!(cache.get(-1, 5), Some(true));
        assert_eq!(cache.get(-1, 6), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(cache.get(-1, 5), None);
    }
}
