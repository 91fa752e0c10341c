//! MongoDB implementation of [`Storage`](super::Storage) (placeholder until implemented).

use super::{Result, StorageError};

/// MongoDB-backed storage.
pub struct MongoStorage;

impl MongoStorage {
    /// Connects to `url`.
    pub async fn connect(_url: &str) -> Result<Self> {
        Err(StorageError::Backend("mongo storage not built yet".into()))
    }
}

/// Connects to `url` as a shared [`super::Storage`].
pub async fn connect_shared(_url: &str) -> Result<std::sync::Arc<dyn super::Storage>> {
    Err(StorageError::Backend("mongo storage not built yet".into()))
}
