//! MongoDB: sessions and credentials ([`AccessStore`]).

use super::*;
use crate::storage::AccessStore;

#[async_trait]
impl AccessStore for MongoStorage {
    async fn insert_session(&self, session: &Session) -> Result<()> {
        self.sessions
            .insert_one(doc! {
                "token_hash": &session.token_hash,
                "user": uuid_bson(session.user),
                "created_at": time_bson(session.created_at),
                "expires_at": time_bson(session.expires_at),
                "max_expires_at": time_bson(session.max_expires_at),
            })
            .await
            .map_err(|e| {
                unique_err(e, "inserting a session", || {
                    "session with this token hash".to_owned()
                })
            })?;
        Ok(())
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>> {
        let Some(d) = self
            .sessions
            .find_one(doc! { "token_hash": token_hash })
            .await
            .map_err(|e| db_err("reading a session", e))?
        else {
            return Ok(None);
        };
        const WHAT: &str = "session";
        Ok(Some(Session {
            token_hash: get_string(&d, "token_hash", WHAT)?,
            user: get_uuid(&d, "user", WHAT)?,
            created_at: get_time(&d, "created_at", WHAT)?,
            expires_at: get_time(&d, "expires_at", WHAT)?,
            max_expires_at: get_time(&d, "max_expires_at", WHAT)?,
        }))
    }

    async fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let result = self
            .sessions
            .update_one(
                doc! { "token_hash": token_hash },
                doc! { "$set": { "expires_at": time_bson(expires_at) } },
            )
            .await
            .map_err(|e| db_err("updating a session", e))?;
        if result.matched_count == 0 {
            return Err(StorageError::NotFound("session".to_owned()));
        }
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let result = self
            .sessions
            .delete_one(doc! { "token_hash": token_hash })
            .await
            .map_err(|e| db_err("deleting a session", e))?;
        Ok(result.deleted_count > 0)
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let result = self
            .sessions
            .delete_many(doc! { "expires_at": { "$lte": time_bson(now) } })
            .await
            .map_err(|e| db_err("purging sessions", e))?;
        Ok(result.deleted_count)
    }

    async fn insert_credential(&self, credential: &Credential) -> Result<()> {
        self.auth
            .insert_one(doc! {
                "username": &credential.username,
                "hash": &credential.hash,
                "permissions": permissions_doc(&credential.permissions),
                "queues": &credential.queues,
            })
            .await
            .map_err(|e| {
                unique_err(e, "inserting a credential", || {
                    format!("credential {}", credential.username)
                })
            })?;
        Ok(())
    }

    async fn get_credential(&self, username: &str) -> Result<Option<Credential>> {
        self.auth
            .find_one(doc! { "username": username })
            .await
            .map_err(|e| db_err("reading a credential", e))?
            .as_ref()
            .map(decode_credential)
            .transpose()
    }

    async fn delete_credential(&self, username: &str) -> Result<bool> {
        let result = self
            .auth
            .delete_one(doc! { "username": username })
            .await
            .map_err(|e| db_err("deleting a credential", e))?;
        Ok(result.deleted_count > 0)
    }

    async fn list_credentials(&self) -> Result<Vec<Credential>> {
        let docs = find_all(
            &self.auth,
            doc! {},
            doc! { "username": 1 },
            "reading credentials",
        )
        .await?;
        docs.iter().map(decode_credential).collect()
    }
}
