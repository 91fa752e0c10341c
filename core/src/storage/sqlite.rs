//! SQLite implementation of [`Storage`](super::Storage) (placeholder until implemented).

use super::{Result, StorageError};

/// SQLite-backed storage.
pub struct SqliteStorage;

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(_path: &str) -> Result<Self> {
        Err(StorageError::Backend("sqlite storage not built yet".into()))
    }
    /// Opens a private in-memory database.
    pub async fn open_in_memory() -> Result<Self> {
        Err(StorageError::Backend("sqlite storage not built yet".into()))
    }
}

/// Opens the file at `path` (in memory when `None`) as a shared [`super::Storage`].
pub async fn open_shared(_path: Option<&str>) -> Result<std::sync::Arc<dyn super::Storage>> {
    Err(StorageError::Backend("sqlite storage not built yet".into()))
}
