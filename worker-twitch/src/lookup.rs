//! Batched Helix lookups for streams that just started: notifications arriving within
//! `batch_window_ms` share one `GET /streams` (≤ 100 ids), and the ids Helix does not list
//! yet one `GET /channels` for title and category. A lookup that fails or takes longer
//! than `lookup_timeout_ms` yields nothing: the event goes out with what the notification
//! carried, never later and never dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stargazer_core::wait::sleep_until_unless_cancelled;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::events::{sized_thumbnail, Details};
use crate::helix::{Helix, MAX_IDS};

/// Lookups queued at most; past it a notification is published without details rather
/// than queueing unboundedly.
const QUEUE: usize = 10_000;

struct Request {
    broadcaster: String,
    reply: oneshot::Sender<Details>,
}

/// The handle notifications ask through. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Lookup {
    tx: mpsc::Sender<Request>,
    timeout: Duration,
}

impl Lookup {
    /// The lookup and the batching loop to spawn.
    pub(crate) fn new(
        helix: Arc<Helix>,
        window: Duration,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx, timeout }, run(rx, helix, window, shutdown))
    }

    /// What Helix says of `broadcaster`'s stream; empty when it could not say in time.
    pub(crate) async fn details(&self, broadcaster: &str) -> Details {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            broadcaster: broadcaster.to_owned(),
            reply,
        };
        if self.tx.try_send(request).is_err() {
            tracing::warn!(
                broadcaster,
                "lookup queue full; publishing without Helix details"
            );
            return Details::default();
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(details)) => details,
            Ok(Err(_)) => Details::default(),
            Err(_) => {
                tracing::warn!(
                    broadcaster,
                    "Helix lookup too slow; publishing without its details"
                );
                Details::default()
            }
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    helix: Arc<Helix>,
    window: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            first = rx.recv() => match first { Some(first) => first, None => return },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < MAX_IDS {
            tokio::select! {
                waited = sleep_until_unless_cancelled(deadline, &shutdown) => {
                    if waited.is_cancelled() {
                        return;
                    }
                    break;
                }
                next = rx.recv() => match next { Some(next) => batch.push(next), None => break },
            }
        }
        let mut ids: Vec<String> = batch.iter().map(|r| r.broadcaster.clone()).collect();
        ids.sort();
        ids.dedup();
        let found = resolve(&helix, &ids).await;
        for request in batch {
            let details = found.get(&request.broadcaster).cloned().unwrap_or_default();
            // The notification may have given up waiting; nothing to do then.
            let _ = request.reply.send(details);
        }
    }
}

/// Streams first (title, game and the preview), channels for those not listed yet.
async fn resolve(helix: &Helix, ids: &[String]) -> HashMap<String, Details> {
    let mut found = HashMap::new();
    match helix.streams(ids).await {
        Ok(streams) => {
            for stream in streams {
                found.insert(
                    stream.user_id.clone(),
                    Details {
                        title: Some(stream.title),
                        category: Some(stream.game_name),
                        thumbnail: (!stream.thumbnail_url.is_empty())
                            .then(|| sized_thumbnail(&stream.thumbnail_url)),
                    },
                );
                tracing::trace!(stream_id = %stream.id, login = %stream.user_login, "stream listed");
            }
        }
        Err(err) => tracing::warn!(cause = %err, ids = ids.len(), "Helix streams lookup failed"),
    }
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains_key(*id))
        .cloned()
        .collect();
    if missing.is_empty() {
        return found;
    }
    match helix.channels(&missing).await {
        Ok(channels) => {
            for channel in channels {
                found.insert(
                    channel.broadcaster_id,
                    Details {
                        title: Some(channel.title),
                        category: Some(channel.game_name),
                        thumbnail: None,
                    },
                );
            }
        }
        Err(err) => {
            tracing::warn!(cause = %err, ids = missing.len(), "Helix channels lookup failed")
        }
    }
    found
}
