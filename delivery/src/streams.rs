//! The memory of a stream's first message in each chat of one bot: what later events of
//! the stream reply to and edit ("one message per stream, kept current"). The bots keep
//! different things about a message ([`FirstMessage`]) and can edit it for different
//! lengths of time ([`StreamMemory::new`]); the rest is shared.
//!
//! # Layout in the state store
//!
//! - namespace `bot.<im>.stream.<video id>`, key = the chat id the api gave, value = the
//!   bot's [`FirstMessage`] (where the message lives, its id, when it was sent…);
//! - namespace `bot.<im>.streams`, key = the video id, value = `{"last": <time>}`: the
//!   index of videos with memories, for pruning.
//!
//! One namespace per video makes the work per event bounded and independent of how many
//! streams are remembered: an event reads its video's memories with one `kv_list` (an
//! indexed prefix of the `(namespace, key)` key) when it is prepared, and each chat's job
//! writes only its own record, so concurrent jobs of one event never overwrite each
//! other (one record per video holding every chat would need a read-modify-write per
//! chat). Jobs of an event prepared before an earlier event's jobs were done see the
//! earlier jobs' writes through an in-process overlay ([`StreamMemory::lookup`]).
//!
//! A memory older than the network's edit window is useless and is treated as absent. A
//! video's memories are forgotten once its `ended` or `cancelled` event is delivered; the
//! index lets a periodic prune drop those of videos that never got such an event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stargazer_core::backoff::Backoff;
use stargazer_core::storage::{StateStore, StorageError};
use stargazer_core::sync::lock;
use stargazer_core::wait::sleep_unless_cancelled;
use tokio_util::sync::CancellationToken;

use crate::claims::retry_backoff;

/// How often the index entry of a video is rewritten while chats keep getting first
/// messages; pruning waits this much longer than the edit window to make up for it.
const INDEX_REFRESH: Duration = Duration::hours(1);

/// Tries at storing a memory before it is given up.
const REMEMBER_TRIES: u32 = 3;

/// What a bot keeps about a stream's first message in one chat. Stored as JSON, so its
/// serialized shape is the stored one: changing it loses the memories of a running bot.
pub trait FirstMessage:
    Clone + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static
{
    /// When the message was sent (the edit window counts from it).
    fn sent_at(&self) -> DateTime<Utc>;
}

/// Why the memory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The state store failed.
    #[error("state store: {0}")]
    Storage(#[from] StorageError),
    /// A memory or index entry could not be turned into JSON.
    #[error("encoding a stream memory: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One video's memories as read when an event was prepared, by chat id.
pub type Snapshot<M> = HashMap<String, M>;

#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry {
    last: DateTime<Utc>,
}

/// A change this process made after some snapshot may have been read.
#[derive(Debug, Clone)]
struct Overlaid<M> {
    first: Option<M>,
    at: DateTime<Utc>,
}

/// One bot's memories, in the state store, with this process's recent writes on top.
pub struct StreamMemory<M> {
    store: Arc<dyn StateStore>,
    /// `bot.<im>.stream.` (a video's namespace is this and its id).
    prefix: String,
    /// `bot.<im>.streams`.
    index: String,
    /// How long the network lets the bot edit a message it sent.
    editable_for: Duration,
    /// Writes and forgets of this process by (video, chat), newer than any snapshot an
    /// event still queued may hold.
    overlay: Mutex<HashMap<(String, String), Overlaid<M>>>,
    /// When each video's index entry was last written by this process.
    indexed: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl<M: FirstMessage> StreamMemory<M> {
    /// The memories of the bot for `im` (`contract::im`) in `store`, for messages the
    /// network lets it edit for `editable_for`.
    pub fn new(store: Arc<dyn StateStore>, im: &str, editable_for: Duration) -> Self {
        Self {
            store,
            prefix: format!("bot.{im}.stream."),
            index: format!("bot.{im}.streams"),
            editable_for,
            overlay: Mutex::new(HashMap::new()),
            indexed: Mutex::new(HashMap::new()),
        }
    }

    /// The namespace of one video's memories.
    pub fn namespace(&self, video: &str) -> String {
        format!("{}{video}", self.prefix)
    }

    /// The namespace of the index of videos with memories.
    pub fn index_namespace(&self) -> &str {
        &self.index
    }

    /// Whether `first` can still be edited at `now`.
    pub fn editable(&self, first: &M, now: DateTime<Utc>) -> bool {
        now - first.sent_at() < self.editable_for
    }

    /// Every chat's memory of `video` (one storage read). Records that do not decode
    /// are left out with a warning: they cost a chat an edit, never the event.
    pub async fn load(&self, video: &str) -> Result<Snapshot<M>, MemoryError> {
        let entries = self.store.kv_list(&self.namespace(video)).await?;
        Ok(entries
            .into_iter()
            .filter_map(|(chat, value)| match serde_json::from_value::<M>(value) {
                Ok(first) => Some((chat, first)),
                Err(err) => {
                    tracing::warn!(video_id = video, chat_id = %chat, cause = %err, "unreadable first-message record skipped");
                    None
                }
            })
            .collect())
    }

    /// [`StreamMemory::load`], retried with backoff while storage fails; `None` once
    /// `shutdown` is cancelled.
    pub async fn load_until(
        &self,
        video: &str,
        shutdown: &CancellationToken,
    ) -> Option<Snapshot<M>> {
        let mut backoff = Backoff::default();
        loop {
            let loaded = tokio::select! {
                _ = shutdown.cancelled() => return None,
                loaded = self.load(video) => loaded,
            };
            match loaded {
                Ok(snapshot) => return Some(snapshot),
                Err(cause) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(video_id = video, %cause, retry_in_ms = wait.as_millis() as u64, "stream memory unavailable");
                    if sleep_unless_cancelled(wait, shutdown).await.is_cancelled() {
                        return None;
                    }
                }
            }
        }
    }

    /// The first message of `video` in `chat` that can still be edited at `now`: this
    /// process's latest write if any, else what `snapshot` read.
    pub fn lookup(
        &self,
        video: &str,
        chat: &str,
        snapshot: &Snapshot<M>,
        now: DateTime<Utc>,
    ) -> Option<M> {
        let overlaid = lock(&self.overlay)
            .get(&(video.to_owned(), chat.to_owned()))
            .map(|o| o.first.clone());
        let first = match overlaid {
            Some(first) => first,
            None => snapshot.get(chat).cloned(),
        };
        first.filter(|f| self.editable(f, now))
    }

    /// Remembers `first` as the first message of `video` in `chat`.
    pub async fn remember(&self, video: &str, chat: &str, first: M) -> Result<(), MemoryError> {
        let sent_at = first.sent_at();
        let value = serde_json::to_value(&first)?;
        self.store
            .kv_put(&self.namespace(video), chat, &value)
            .await?;
        lock(&self.overlay).insert(
            (video.to_owned(), chat.to_owned()),
            Overlaid {
                first: Some(first),
                at: sent_at,
            },
        );
        let due = lock(&self.indexed)
            .get(video)
            .is_none_or(|at| sent_at - *at >= INDEX_REFRESH);
        if due {
            let entry = serde_json::to_value(IndexEntry { last: sent_at })?;
            self.store.kv_put(&self.index, video, &entry).await?;
            lock(&self.indexed).insert(video.to_owned(), sent_at);
        }
        Ok(())
    }

    /// [`StreamMemory::remember`], tried a few times. A memory that cannot be stored
    /// costs later edits, not the delivery that sent the message: it is given up with
    /// a warning.
    pub async fn remember_patiently(&self, video: &str, chat: &str, first: M) {
        for attempt in 0..REMEMBER_TRIES {
            match self.remember(video, chat, first.clone()).await {
                Ok(()) => return,
                Err(cause) if attempt + 1 < REMEMBER_TRIES => {
                    tracing::debug!(video_id = video, chat_id = chat, %cause, "could not remember the first message; retrying");
                    tokio::time::sleep(retry_backoff(attempt)).await;
                }
                Err(cause) => {
                    tracing::warn!(video_id = video, chat_id = chat, %cause, "could not remember the stream's first message; later events will not edit it");
                }
            }
        }
    }

    /// Forgets the memory of `video` in `chat` alone (its first message is gone).
    pub async fn forget_chat(
        &self,
        video: &str,
        chat: &str,
        now: DateTime<Utc>,
    ) -> Result<(), MemoryError> {
        self.store.kv_delete(&self.namespace(video), chat).await?;
        lock(&self.overlay).insert(
            (video.to_owned(), chat.to_owned()),
            Overlaid {
                first: None,
                at: now,
            },
        );
        Ok(())
    }

    /// Forgets every chat's memory of `video` (its life is over); answers how many
    /// chats had one.
    pub async fn forget(&self, video: &str, now: DateTime<Utc>) -> Result<usize, MemoryError> {
        let ns = self.namespace(video);
        let chats = self.store.kv_list(&ns).await?;
        for (chat, _) in &chats {
            self.store.kv_delete(&ns, chat).await?;
        }
        self.store.kv_delete(&self.index, video).await?;
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

    /// [`StreamMemory::forget`] once a stream's end is delivered, logged. A failure
    /// leaves the memories to the periodic prune.
    pub async fn forget_ended(&self, video: &str) {
        match self.forget(video, Utc::now()).await {
            Ok(chats) => tracing::debug!(video_id = %video, chats, "stream memories forgotten"),
            Err(cause) => {
                tracing::warn!(video_id = %video, %cause, "could not forget stream memories")
            }
        }
    }

    /// Drops the memories of videos whose last first message can no longer be edited
    /// at `now`, and overlay entries as old; returns how many videos were dropped.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<usize, MemoryError> {
        let window = self.editable_for;
        lock(&self.overlay).retain(|_, overlaid| now - overlaid.at < window);
        lock(&self.indexed).retain(|_, at| now - *at < window);
        let index = self.store.kv_list(&self.index).await?;
        let mut pruned = 0;
        for (video, value) in index {
            let stale = match serde_json::from_value::<IndexEntry>(value) {
                Ok(entry) => now - entry.last >= window + INDEX_REFRESH,
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

    /// Prunes at once and then every `every`, until `shutdown`.
    pub async fn prune_until(
        self: Arc<Self>,
        every: std::time::Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            match self.prune(Utc::now()).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(
                    videos = pruned,
                    "pruned first-message memories past the edit window"
                ),
                Err(cause) => tracing::warn!(%cause, "could not prune first-message memories"),
            }
            if sleep_unless_cancelled(every, &shutdown)
                .await
                .is_cancelled()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first message as a bot might keep it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct First {
        id: u64,
        sent_at: DateTime<Utc>,
    }

    impl FirstMessage for First {
        fn sent_at(&self) -> DateTime<Utc> {
            self.sent_at
        }
    }

    fn first(id: u64, sent_at: DateTime<Utc>) -> First {
        First { id, sent_at }
    }

    async fn memory() -> (
        Arc<dyn stargazer_core::storage::Storage>,
        StreamMemory<First>,
    ) {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let memory = StreamMemory::new(storage.clone(), "test", Duration::hours(48));
        (storage, memory)
    }

    /// Writes are seen through the overlay and from storage, old ones count as none,
    /// and forgetting a video leaves the others.
    #[tokio::test]
    async fn memories_round_trip_expire_and_are_forgotten() {
        let (storage, memory) = memory().await;
        let now = Utc::now();
        let empty = memory.load("vid1").await.unwrap();
        assert!(empty.is_empty());
        memory.remember("vid1", "1", first(10, now)).await.unwrap();
        memory
            .remember("vid1", "2", first(20, now - Duration::hours(49)))
            .await
            .unwrap();
        memory.remember("vid2", "1", first(30, now)).await.unwrap();
        assert_eq!(
            storage.kv_list("bot.test.stream.vid1").await.unwrap().len(),
            2,
            "one namespace per video, named after the im"
        );
        // The write is seen through the overlay by a snapshot read before it…
        assert_eq!(
            memory.lookup("vid1", "1", &empty, now).map(|f| f.id),
            Some(10)
        );
        // …and by a fresh read, from storage; a message past the window counts as none.
        let fresh = StreamMemory::<First>::new(storage.clone(), "test", Duration::hours(48));
        let snapshot = fresh.load("vid1").await.unwrap();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(
            fresh.lookup("vid1", "1", &snapshot, now).map(|f| f.id),
            Some(10)
        );
        assert_eq!(fresh.lookup("vid1", "2", &snapshot, now), None);

        assert_eq!(memory.forget("vid1", now).await.unwrap(), 2);
        assert!(memory.load("vid1").await.unwrap().is_empty());
        // A snapshot read before the forget no longer shows it in this process.
        assert_eq!(memory.lookup("vid1", "1", &snapshot, now), None);
        assert_eq!(memory.load("vid2").await.unwrap().len(), 1);
    }

    /// Forgetting one chat's memory leaves the other chats' of the same video.
    #[tokio::test]
    async fn one_chat_can_be_forgotten() {
        let (_, memory) = memory().await;
        let now = Utc::now();
        memory.remember("vid", "1", first(1, now)).await.unwrap();
        memory.remember("vid", "2", first(2, now)).await.unwrap();
        let snapshot = memory.load("vid").await.unwrap();
        memory.forget_chat("vid", "1", now).await.unwrap();
        assert_eq!(memory.lookup("vid", "1", &snapshot, now), None);
        assert_eq!(
            memory.lookup("vid", "2", &snapshot, now).map(|f| f.id),
            Some(2)
        );
        assert_eq!(memory.load("vid").await.unwrap().len(), 1);
    }

    /// The prune drops videos whose last first message is past the edit window.
    #[tokio::test]
    async fn pruning_drops_videos_past_the_edit_window() {
        let (storage, memory) = memory().await;
        let now = Utc::now();
        let old = now - Duration::hours(50);
        memory.remember("old", "1", first(1, old)).await.unwrap();
        memory.remember("new", "1", first(2, now)).await.unwrap();
        assert_eq!(memory.prune(now).await.unwrap(), 1);
        assert!(memory.load("old").await.unwrap().is_empty());
        assert_eq!(memory.load("new").await.unwrap().len(), 1);
        assert_eq!(storage.kv_list("bot.test.streams").await.unwrap().len(), 1);
    }

    /// A longer window keeps what a shorter one prunes.
    #[tokio::test]
    async fn the_window_is_the_bots() {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let memory = StreamMemory::<First>::new(storage, "long", Duration::days(14));
        let now = Utc::now();
        let old = now - Duration::hours(50);
        memory.remember("old", "1", first(1, old)).await.unwrap();
        assert_eq!(memory.prune(now).await.unwrap(), 0);
        let snapshot = memory.load("old").await.unwrap();
        assert_eq!(
            memory.lookup("old", "1", &snapshot, now).map(|f| f.id),
            Some(1)
        );
    }
}
