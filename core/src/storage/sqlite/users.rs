//! SQLite: users and subscriptions ([`UserStore`]).

use super::*;
use crate::storage::UserStore;

#[async_trait]
impl UserStore for SqliteStorage {
    async fn insert_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        let settings = json_text(&user.settings)?;
        self.call(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}, paused) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    uuid_text(user.id),
                    user.im,
                    user.im_chat_id,
                    user.name,
                    user.language,
                    settings,
                    time_text(user.created_at),
                    user.settings.paused,
                ],
            )
            .map_err(|e| user_conflict(e, &user))?;
            Ok(())
        })
        .await
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [uuid_text(id)],
                user_from_row,
            )
            .optional()
            .db()
            .map_err(|e| in_record(e, "user", id))
        })
        .await
    }

    async fn find_user_by_chat(&self, im: &str, chat_id: &str) -> Result<Option<User>> {
        let (im, chat_id) = (im.to_owned(), chat_id.to_owned());
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE im = ?1 AND im_chat_id = ?2"),
                [im, chat_id],
                user_from_row,
            )
            .optional()
            .db()
        })
        .await
    }

    async fn update_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        let settings = json_text(&user.settings)?;
        self.call(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE users SET im = ?2, im_chat_id = ?3, name = ?4, language = ?5,
                     settings = ?6, paused = ?7 WHERE id = ?1",
                    params![
                        uuid_text(user.id),
                        user.im,
                        user.im_chat_id,
                        user.name,
                        user.language,
                        settings,
                        user.settings.paused,
                    ],
                )
                .map_err(|e| user_conflict(e, &user))?;
            if changed == 0 {
                return Err(StorageError::NotFound(format!("user {}", user.id)));
            }
            Ok(())
        })
        .await
    }

    async fn delete_user(&self, id: Uuid) -> Result<()> {
        self.call(move |conn| {
            let tx = conn.transaction().db()?;
            let key = uuid_text(id);
            if tx.execute("DELETE FROM users WHERE id = ?1", [&key]).db()? == 0 {
                return Err(StorageError::NotFound(format!("user {id}")));
            }
            tx.execute("DELETE FROM sessions WHERE user = ?1", [&key])
                .db()?;
            tx.execute("DELETE FROM subscriptions WHERE user = ?1", [&key])
                .db()?;
            tx.commit().db()
        })
        .await
    }

    async fn list_users(&self, im: Option<&str>) -> Result<Vec<User>> {
        let im = im.map(str::to_owned);
        let malformed = self.malformed();
        self.call(move |conn| {
            let decode = |row: &Row<'_>| lenient(row, &[0], user_from_row);
            match im {
                Some(im) => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {USER_COLUMNS} FROM users WHERE im = ?1 ORDER BY id"
                        ))
                        .db()?;
                    let rows = stmt.query_map([im], decode).db()?;
                    keep_decoded(rows, &malformed, "users")
                }
                None => {
                    let mut stmt = conn
                        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
                        .db()?;
                    let rows = stmt.query_map([], decode).db()?;
                    keep_decoded(rows, &malformed, "users")
                }
            }
        })
        .await
    }

    async fn put_subscription(&self, subscription: &Subscription) -> Result<()> {
        let user = uuid_text(subscription.user);
        let entity = uuid_text(subscription.entity);
        let kinds = json_text(&subscription.kinds)?;
        let mention = subscription.mention.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO subscriptions (user, entity, kinds, mention) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user, entity) DO UPDATE
                 SET kinds = excluded.kinds, mention = excluded.mention",
                params![user, entity, kinds, mention],
            )
            .db()?;
            Ok(())
        })
        .await
    }

    async fn put_subscription_kinds(
        &self,
        user: Uuid,
        entity: Uuid,
        kinds: &[String],
    ) -> Result<()> {
        let (user, entity) = (uuid_text(user), uuid_text(entity));
        let kinds = json_text(kinds)?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO subscriptions (user, entity, kinds) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, entity) DO UPDATE SET kinds = excluded.kinds",
                params![user, entity, kinds],
            )
            .db()?;
            Ok(())
        })
        .await
    }

    async fn delete_subscription(&self, user: Uuid, entity: Uuid) -> Result<bool> {
        self.call(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM subscriptions WHERE user = ?1 AND entity = ?2",
                    [uuid_text(user), uuid_text(entity)],
                )
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_subscriptions(&self, user: Uuid) -> Result<Vec<Subscription>> {
        let malformed = self.malformed();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT user, entity, kinds, mention FROM subscriptions WHERE user = ?1 \
                     ORDER BY entity",
                )
                .db()?;
            let rows = stmt
                .query_map([uuid_text(user)], |row| {
                    lenient(row, &[0, 1], |row| {
                        Ok(Subscription {
                            user: col_uuid(row, 0)?,
                            entity: col_uuid(row, 1)?,
                            kinds: col_json(row, 2)?,
                            mention: row.get(3)?,
                        })
                    })
                })
                .db()?;
            keep_decoded(rows, &malformed, "subscriptions")
        })
        .await
    }

    async fn subscribers(&self, entity: Uuid, kind: &str, im: &str) -> Result<Vec<Subscriber>> {
        let (kind, im) = (kind.to_owned(), im.to_owned());
        let malformed = self.malformed();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(SUBSCRIBERS_SQL).db()?;
            let rows = stmt
                .query_map(params![uuid_text(entity), kind, im], |row| {
                    // One undecodable user must not stop the fan-out to the others.
                    lenient(row, &[0], |row| {
                        let user = user_from_row(row)?;
                        let subscription = Subscription {
                            user: user.id,
                            entity: col_uuid(row, 7)?,
                            kinds: col_json(row, 8)?,
                            mention: row.get(9)?,
                        };
                        Ok(Subscriber { user, subscription })
                    })
                })
                .db()?;
            keep_decoded(rows, &malformed, "users")
        })
        .await
    }
}
