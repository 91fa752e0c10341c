//! SQLite: sessions and credentials ([`AccessStore`]).

use super::*;
use crate::storage::AccessStore;

#[async_trait]
impl AccessStore for SqliteStorage {
    async fn insert_session(&self, session: &Session) -> Result<()> {
        let session = session.clone();
        self.call(move |conn| {
            conn.execute(
                &format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![
                    session.token_hash,
                    uuid_text(session.user),
                    time_text(session.created_at),
                    time_text(session.expires_at),
                    time_text(session.max_expires_at),
                ],
            )
            // The hash identifies a bearer token: never echo it in errors.
            .unique(|| "session with this token hash".to_owned())?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = ?1"),
                [token_hash],
                session_from_row,
            )
            .optional()
            .db()
        })
        .await
    }

    async fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute(
                    "UPDATE sessions SET expires_at = ?2 WHERE token_hash = ?1",
                    [token_hash, time_text(expires_at)],
                )
                .db()?;
            if n == 0 {
                return Err(StorageError::NotFound("session".into()));
            }
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        self.call(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM sessions WHERE expires_at <= ?1",
                    [time_text(now)],
                )
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn insert_credential(&self, credential: &Credential) -> Result<()> {
        let credential = credential.clone();
        let permissions = json_text(&credential.permissions)?;
        let queues = json_text(&credential.queues)?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO credentials (username, hash, permissions, queues) VALUES (?1, ?2, ?3, ?4)",
                params![credential.username, credential.hash, permissions, queues],
            )
            .unique(|| format!("credential {}", credential.username))?;
            Ok(())
        })
        .await
    }

    async fn get_credential(&self, username: &str) -> Result<Option<Credential>> {
        let username = username.to_owned();
        self.call(move |conn| {
            conn.query_row(
                "SELECT username, hash, permissions, queues FROM credentials WHERE username = ?1",
                [username],
                credential_from_row,
            )
            .optional()
            .db()
        })
        .await
    }

    async fn delete_credential(&self, username: &str) -> Result<bool> {
        let username = username.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute("DELETE FROM credentials WHERE username = ?1", [username])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_credentials(&self) -> Result<Vec<Credential>> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT username, hash, permissions, queues FROM credentials ORDER BY username",
                )
                .db()?;
            let rows = stmt.query_map([], credential_from_row).db()?;
            rows.collect::<rusqlite::Result<Vec<_>>>().db()
        })
        .await
    }
}
