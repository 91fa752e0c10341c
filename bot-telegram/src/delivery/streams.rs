//! The memory of a stream's first message in each chat: what later events of the stream
//! reply to and edit ("one message per stream, kept current").
//!
//! # Layout in the state store
//!
//! - namespace `bot.telegram.stream.<video id>`, key = the chat id the api gave, value =
//!   a [`FirstMessage`] (where the message lives, its id, whether it is a photo, when it
//!   was sent);
//! - namespace `bot.telegram.streams`, key = the video id, value = `{"last": <time>}`:
//!   the index of videos with memories, for pruning.
//!
//! One namespace per video makes the work per event bounded and independent of how many
//! streams are remembered: an event reads its video's memories with one `kv_list` (an
//! indexed prefix of the `(namespace, key)` key) when it is prepared, and each chat's job
//! writes only its own record, so concurrent jobs of one event never overwrite each
//! other (one record per video holding every chat would need a read-modify-write per
//! chat). Jobs of an event prepared before an earlier event's jobs were done see the
//! earlier jobs' writes through an in-process overlay ([`StreamMemory::lookup`]).
//!
//! Telegram lets a bot edit its messages for [`EDITABLE_FOR`]; an older memory is useless
//! and is treated as absent. A video's memories are forgotten once its `ended` or
//! `cancelled` event is delivered; the index lets a periodic prune drop those of videos
//! that never got such an event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use stargazer_core::storage::StateStore;
use stargazer_core::sync::lock;

/// How long Telegram lets a bot edit a message it sent.
pub(crate) const EDITABLE_FOR: Duration = Duration::hours(48);

/// How often the index entry of a video is rewritten while chats keep getting first
/// messages; pruning waits this much longer than [`EDITABLE_FOR`] to make up for it.
const INDEX_REFRESH: Duration = Duration::hours(1);

/// The index of videos with memories.
const INDEX: &str = "bot.telegram.streams";

/// The namespace of one video's memories.
fn namespace(video: &str) -> String {
    format!("bot.telegram.stream.{video}")
}

/// A stream's first message in one chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FirstMessage {
    /// The chat the message is in.
    pub chat: i64,
    /// Its id.
    pub message_id: i32,
    /// Whether it is a photo (its text is a caption, edited with `editMessageCaption`).
    pub photo: bool,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

impl FirstMessage {
    /// Whether Telegram still lets the bot edit it at `now`.
    pub(crate) fn editable(&self, now: DateTime<Utc>) -> bool {
        now - self.sent_at < EDITABLE_FOR
    }
}

/// One video's memories as read when an event was prepared, by chat id.
pub(crate) type Snapshot = HashMap<String, FirstMessage>;

#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry {
    last: DateTime<Utc>,
}

/// A change this process made after some snapshot may have been read.
#[derive(Debug, Clone, Copy)]
struct Overlaid {
    first: Option<FirstMessage>,
    at: DateTime<Utc>,
}

/// The memories, in the state store, with this process's recent writes on top.
pub(crate) struct StreamMemory {
    store: Arc<dyn StateStore>,
    /// Writes and forgets of this process by (video, chat), newer than any snapshot an
    /// event still queued may hold.
    overlay: Mutex<HashMap<(String, String), Overlaid>>,
    /// When each video's index entry was last written by this process.
    indexed: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl StreamMemory {
    /// The memories in `store`.
    pub(crate) fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            overlay: Mutex::new(HashMap::new()),
            indexed: Mutex::new(HashMap::new()),
        }
    }

    /// Every chat's memory of `video` (one storage read). Records that do not decode
    /// are left out with a warning: they cost a chat an edit, never the event.
    pub(crate) async fn load(&self, video: &str) -> Result<Snapshot, String> {
        let entries = self
            .store
            .kv_list(&namespace(video))
            .await
            .map_err(|e| e.to_string())?;
        Ok(entries
            .into_iter()
            .filter_map(
                |(chat, value)| match serde_json::from_value::<FirstMessage>(value) {
                    Ok(first) => Some((chat, first)),
                    Err(err) => {
                        tracing::warn!(video_id = video, chat_id = %chat, cause = %err, "unreadable first-message record skipped");
                        None
                    }
                },
            )
            .collect())
    }

    /// The first message of `video` in `chat` that can still be edited at `now`: this
    /// process's latest write if any, else what `snapshot` read.
    pub(crate) fn lookup(
        &self,
        video: &str,
        chat: &str,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Option<FirstMessage> {
        let overlaid = lock(&self.overlay)
            .get(&(video.to_owned(), chat.to_owned()))
            .copied();
        let first = match overlaid {
            Some(overlaid) => overlaid.first,
            None => snapshot.get(chat).copied(),
        };
        first.filter(|f| f.editable(now))
    }

    /// Remembers `first` as the first message of `video` in `chat`.
    pub(crate) async fn remember(
        &self,
        video: &str,
        chat: &str,
        first: FirstMessage,
    ) -> Result<(), String> {
        let value = serde_json::to_value(first).map_err(|e| e.to_string())?;
        self.store
            .kv_put(&namespace(video), chat, &value)
            .await
            .map_err(|e| e.to_string())?;
        lock(&self.overlay).insert(
            (video.to_owned(), chat.to_owned()),
            Overlaid {
                first: Some(first),
                at: first.sent_at,
            },
        );
        let due = lock(&self.indexed)
            .get(video)
            .is_none_or(|at| first.sent_at - *at >= INDEX_REFRESH);
        if due {
            let entry = serde_json::to_value(IndexEntry {
                last: first.sent_at,
            })
            .map_err(|e| e.to_string())?;
            self.store
                .kv_put(INDEX, video, &entry)
                .await
                .map_err(|e| e.to_string())?;
            lock(&self.indexed).insert(video.to_owned(), first.sent_at);
        }
        Ok(())
    }

    /// Forgets every chat's memory of `video` (its life is over).
    pub(crate) async fn forget(&self, video: &str, now: DateTime<Utc>) -> Result<usize, String> {
        let ns = namespace(video);
        let chats = self.store.kv_list(&ns).await.map_err(|e| e.to_string())?;
        for (chat, _) in &chats {
            self.store
                .kv_delete(&ns, chat)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.store
            .kv_delete(INDEX, video)
            .await
            .map_err(|e| e.to_string())?;
        lock(&self.indexed).remove(video);
        let mut overlay = lock(&self.overlay);
        let known: HashSet<String> = chats.into_iter().map(|(chat, _)| chat).collect();
        overlay.retain(|(v, chat), _| v != video || known.contains(chat));
        for chat in known.iter() {
            overlay.insert(
                (video.to_owned(), chat.clone()),
                Overlaid {
                    first: None,
                    at: now,
                },
            );
        }
        Ok(known.len())
    }

    /// Drops the memories of videos whose last first message can no longer be edited
    /// at `now`, and overlay entries as old; returns how many videos were dropped.
    pub(crate) async fn prune(&self, now: DateTime<Utc>) -> Result<usize, String> {
        lock(&self.overlay).retain(|_, overlaid| now - overlaid.at < EDITABLE_FOR);
        lock(&self.indexed).retain(|_, at| now - *at < EDITABLE_FOR);
        let index = self.store.kv_list(INDEX).await.map_err(|e| e.to_string())?;
        let mut pruned = 0;
        for (video, value) in index {
            let stale = match serde_json::from_value::<IndexEntry>(value) {
                Ok(entry) => now - entry.last >= EDITABLE_FOR + INDEX_REFRESH,
                // Unreadable: nothing can tell when it was useful; drop it.
                Err(_) => true,
            };
            if stale {
                self.forget(&video, now).await?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(chat: i64, id: i32, sent_at: DateTime<Utc>) -> FirstMessage {
        FirstMessage {
            chat,
            message_id: id,
            photo: false,
            sent_at,
        }
    }

    #[tokio::test]
    async fn memories_round_trip_expire_and_are_forgotten() {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let memory = StreamMemory::new(storage.clone());
        let now = Utc::now();
        let empty = memory.load("vid1").await.unwrap();
        assert!(empty.is_empty());
        memory
            .remember("vid1", "1", first(1, 10, now))
            .await
            .unwrap();
        memory
            .remember("vid1", "2", first(2, 20, now - Duration::hours(49)))
            .await
            .unwrap();
        memory
            .remember("vid2", "1", first(1, 30, now))
            .await
            .unwrap();
        // The write is seen through the overlay by a snapshot read before it…
        assert_eq!(
            memory
                .lookup("vid1", "1", &empty, now)
                .map(|f| f.message_id),
            Some(10)
        );
        // …and by a fresh read, from storage; a message older than 48 h counts as none.
        let fresh = StreamMemory::new(storage.clone());
        let snapshot = fresh.load("vid1").await.unwrap();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(
            fresh
                .lookup("vid1", "1", &snapshot, now)
                .map(|f| f.message_id),
            Some(10)
        );
        assert_eq!(fresh.lookup("vid1", "2", &snapshot, now), None);

        assert_eq!(memory.forget("vid1", now).await.unwrap(), 2);
        assert!(memory.load("vid1").await.unwrap().is_empty());
        // A snapshot read before the forget no longer shows it in this process.
        assert_eq!(memory.lookup("vid1", "1", &snapshot, now), None);
        assert_eq!(memory.load("vid2").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn pruning_drops_videos_past_the_edit_window() {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let memory = StreamMemory::new(storage.clone());
        let now = Utc::now();
        let old = now - Duration::hours(50);
        memory.remember("old", "1", first(1, 1, old)).await.unwrap();
        memory.remember("new", "1", first(1, 2, now)).await.unwrap();
        assert_eq!(memory.prune(now).await.unwrap(), 1);
        assert!(memory.load("old").await.unwrap().is_empty());
        assert_eq!(memory.load("new").await.unwrap().len(), 1);
        assert_eq!(storage.kv_list(INDEX).await.unwrap().len(), 1);
    }
}
