//! The memory of a stream's first message in each chat: what later events of the stream
//! reply to and edit ("one message per stream, kept current"). The memory itself is the
//! shared [`stargazer_delivery::streams`] (namespaces `bot.telegram.stream.<video id>`,
//! keyed by the chat id the api gave, and the index `bot.telegram.streams`); what is
//! Telegram's is what a first message is ([`FirstMessage`]) and how long it can be
//! edited ([`EDITABLE_FOR`]).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use stargazer_core::storage::StateStore;

use crate::IM;

/// How long Telegram lets a bot edit a message it sent.
pub(crate) const EDITABLE_FOR: Duration = Duration::hours(48);

/// A stream's first message in one chat, stored as it always was (`chat`,
/// `message_id`, `photo`, `sent_at`).
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

impl stargazer_delivery::streams::FirstMessage for FirstMessage {
    fn sent_at(&self) -> DateTime<Utc> {
        self.sent_at
    }
}

/// One video's memories as read when an event was prepared, by chat id.
pub(crate) type Snapshot = stargazer_delivery::streams::Snapshot<FirstMessage>;

/// The memories of Telegram's first messages.
pub(crate) type StreamMemory = stargazer_delivery::streams::StreamMemory<FirstMessage>;

/// The memories in `store`.
pub(crate) fn memory(store: Arc<dyn StateStore>) -> StreamMemory {
    StreamMemory::new(store, IM, EDITABLE_FOR)
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

    /// Memories stay where earlier versions stored them, in the same shape, so they
    /// survive an upgrade; older than 48 h counts as none.
    #[tokio::test]
    async fn memories_keep_their_layout_and_window() {
        let storage = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let now = Utc::now();
        // A record as an earlier version wrote it.
        storage
            .kv_put(
                "bot.telegram.stream.vid1",
                "-100",
                &serde_json::json!({"chat": -100, "message_id": 7, "photo": true,
                                    "sent_at": now.to_rfc3339()}),
            )
            .await
            .unwrap();
        let memory = memory(storage.clone());
        let snapshot = memory.load("vid1").await.unwrap();
        assert_eq!(
            memory.lookup("vid1", "-100", &snapshot, now),
            Some(FirstMessage {
                chat: -100,
                message_id: 7,
                photo: true,
                sent_at: now
            })
        );
        memory
            .remember("vid2", "1", first(1, 10, now - Duration::hours(49)))
            .await
            .unwrap();
        let stored = storage
            .kv_get("bot.telegram.stream.vid2", "1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored["message_id"], 10);
        assert_eq!(stored["photo"], false);
        assert_eq!(
            storage.kv_list("bot.telegram.streams").await.unwrap().len(),
            1
        );
        let snapshot = memory.load("vid2").await.unwrap();
        assert_eq!(memory.lookup("vid2", "1", &snapshot, now), None);
        assert_eq!(memory.prune(now).await.unwrap(), 1);
        assert!(memory.load("vid2").await.unwrap().is_empty());
    }
}
