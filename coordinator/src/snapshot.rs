//! The assignment snapshot kept in storage (`kv` namespace `coordinator`, key
//! `snapshot`), so a restarted coordinator knows which workers to wait for and what each
//! of them holds.
//!
//! The snapshot is the membership and each worker's held task ids. Targets are not
//! stored: the rings are a pure function of the membership (fixed hash keys), so the same
//! workers coming back map every task to the same place. A worker's announce, not the
//! snapshot, is the final word on what it runs; the snapshot only bridges the seconds
//! until it reconnects, keeping its tasks from being handed to someone else meanwhile.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stargazer_core::model::TaskKind;
use stargazer_core::storage::{StateStore, StorageError};
use uuid::Uuid;

/// Storage namespace of the snapshot.
pub(crate) const NAMESPACE: &str = "coordinator";
/// Storage key of the snapshot.
pub(crate) const KEY: &str = "snapshot";
/// Format version; a snapshot of another version is ignored.
pub(crate) const SNAPSHOT_VERSION: u32 = 1;

/// Membership and holdings at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version ([`SNAPSHOT_VERSION`]).
    pub version: u32,
    /// When it was taken.
    pub saved_at: DateTime<Utc>,
    /// Ring points per worker at the time (informative; the current config wins).
    pub virtual_nodes: u32,
    /// Every worker on a ring, by id.
    pub workers: Vec<SnapshotWorker>,
}

/// One worker in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotWorker {
    /// The announced id.
    pub id: String,
    /// Its kind.
    pub kind: TaskKind,
    /// Tasks it held, sorted.
    pub tasks: Vec<Uuid>,
}

/// Reads the stored snapshot. A missing, unreadable or foreign-version snapshot yields
/// `None` (logged): the coordinator then starts from scratch, which is only slower.
pub(crate) async fn load(storage: &Arc<dyn StateStore>) -> Result<Option<Snapshot>, StorageError> {
    let Some(value) = storage.kv_get(NAMESPACE, KEY).await? else {
        return Ok(None);
    };
    match serde_json::from_value::<Snapshot>(value) {
        Ok(snapshot) if snapshot.version == SNAPSHOT_VERSION => Ok(Some(snapshot)),
        Ok(snapshot) => {
            tracing::warn!(
                version = snapshot.version,
                "ignoring a snapshot of another format version"
            );
            Ok(None)
        }
        Err(err) => {
            tracing::warn!(cause = %err, "ignoring an unreadable snapshot");
            Ok(None)
        }
    }
}

/// Stores `snapshot`, replacing the previous one.
pub(crate) async fn save(
    storage: &Arc<dyn StateStore>,
    snapshot: &Snapshot,
) -> Result<(), StorageError> {
    let value =
        serde_json::to_value(snapshot).map_err(|err| StorageError::Corrupt(err.to_string()))?;
    storage.kv_put(NAMESPACE, KEY, &value).await
}
