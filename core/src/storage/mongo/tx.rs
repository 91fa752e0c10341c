//! MongoDB: operations that run inside a transaction when there is one.

use super::*;

/// An error from inside a multi-document change, with whether the whole change may be
/// run again (the driver labels such errors `TransientTransactionError`).
pub(super) struct TxError {
    pub(super) error: StorageError,
    pub(super) retry: bool,
}

impl From<StorageError> for TxError {
    fn from(error: StorageError) -> Self {
        Self {
            error,
            retry: false,
        }
    }
}

impl TxError {
    pub(super) fn driver(e: DriverError, context: &str) -> Self {
        Self {
            retry: e.contains_label(TRANSIENT_TRANSACTION_ERROR),
            error: db_err(context, e),
        }
    }

    pub(super) fn unique(e: DriverError, context: &str, what: impl FnOnce() -> String) -> Self {
        Self {
            retry: e.contains_label(TRANSIENT_TRANSACTION_ERROR),
            error: unique_err(e, context, what),
        }
    }
}

/// Driver operations that run inside the transaction when there is one.
pub(super) struct Tx<'s> {
    pub(super) session: Option<&'s mut ClientSession>,
}

pub(super) type DriverResult<T> = std::result::Result<T, DriverError>;

impl Tx<'_> {
    /// Whether a transaction backs these operations (so a failure rolls everything back).
    pub(super) fn atomic(&self) -> bool {
        self.session.is_some()
    }

    pub(super) async fn find_one(
        &mut self,
        collection: &Collection<Document>,
        filter: Document,
    ) -> DriverResult<Option<Document>> {
        let action = collection.find_one(filter);
        match self.session.as_deref_mut() {
            Some(session) => action.session(session).await,
            None => action.await,
        }
    }

    pub(super) async fn find(
        &mut self,
        collection: &Collection<Document>,
        filter: Document,
    ) -> DriverResult<Vec<Document>> {
        match self.session.as_deref_mut() {
            Some(session) => {
                let mut cursor = collection.find(filter).session(&mut *session).await?;
                cursor.stream(session).try_collect().await
            }
            None => collection.find(filter).await?.try_collect().await,
        }
    }

    pub(super) async fn insert_one(
        &mut self,
        collection: &Collection<Document>,
        document: Document,
    ) -> DriverResult<()> {
        let action = collection.insert_one(document);
        match self.session.as_deref_mut() {
            Some(session) => action.session(session).await,
            None => action.await,
        }
        .map(drop)
    }

    pub(super) async fn insert_many(
        &mut self,
        collection: &Collection<Document>,
        documents: Vec<Document>,
    ) -> DriverResult<()> {
        let action = collection.insert_many(documents).ordered(true);
        match self.session.as_deref_mut() {
            Some(session) => action.session(session).await,
            None => action.await,
        }
        .map(drop)
    }

    pub(super) async fn replace_one(
        &mut self,
        collection: &Collection<Document>,
        filter: Document,
        replacement: Document,
        upsert: bool,
    ) -> DriverResult<()> {
        let action = collection.replace_one(filter, replacement).upsert(upsert);
        match self.session.as_deref_mut() {
            Some(session) => action.session(session).await,
            None => action.await,
        }
        .map(drop)
    }

    pub(super) async fn delete_one(
        &mut self,
        collection: &Collection<Document>,
        filter: Document,
    ) -> DriverResult<u64> {
        let action = collection.delete_one(filter);
        match self.session.as_deref_mut() {
            Some(session) => action.session(session).await,
            None => action.await,
        }
        .map(|r| r.deleted_count)
    }

    pub(super) async fn delete_many(
        &mut self,
        collection: &Collection<Document>,
        filter: Document,
    ) -> DriverResult<u64> {
        let action = collection.delete_many(filter);
        match self.session.as_deref_mut() {
            Some(session) => action.session(session).await,
            None => action.await,
        }
        .map(|r| r.deleted_count)
    }
}

// -------------------------------------------------------------------- single-document helpers

pub(super) async fn find_all(
    collection: &Collection<Document>,
    filter: Document,
    sort: Document,
    context: &str,
) -> Result<Vec<Document>> {
    let mut action = collection.find(filter);
    if !sort.is_empty() {
        action = action.sort(sort);
    }
    action
        .await
        .map_err(|e| db_err(context, e))?
        .try_collect()
        .await
        .map_err(|e| db_err(context, e))
}

/// Replaces the document matching `filter` or inserts `document`.
pub(super) async fn upsert(
    collection: &Collection<Document>,
    filter: Document,
    document: Document,
    context: &str,
    what: impl Fn() -> String,
) -> Result<()> {
    let attempt = || {
        collection
            .replace_one(filter.clone(), document.clone())
            .upsert(true)
    };
    match attempt().await {
        Ok(_) => Ok(()),
        // Two concurrent upserts of a new key: the loser's insert hits the unique index,
        // and running it again turns it into a replace.
        Err(e) if is_duplicate_key(&e) => attempt()
            .await
            .map(drop)
            .map_err(|e| unique_err(e, context, what)),
        Err(e) => Err(db_err(context, e)),
    }
}

/// Applies `update` to the document matching `filter`, or inserts one made of `filter`'s
/// fields and `update`'s, in one step.
pub(super) async fn upsert_fields(
    collection: &Collection<Document>,
    filter: Document,
    update: Document,
    context: &str,
    what: impl Fn() -> String,
) -> Result<()> {
    let attempt = || {
        collection
            .update_one(filter.clone(), update.clone())
            .upsert(true)
    };
    match attempt().await {
        Ok(_) => Ok(()),
        // As in `upsert`: the loser of two concurrent inserts updates on its second try.
        Err(e) if is_duplicate_key(&e) => attempt()
            .await
            .map(drop)
            .map_err(|e| unique_err(e, context, what)),
        Err(e) => Err(db_err(context, e)),
    }
}

// -------------------------------------------------------------------- task change stream

pub(super) type TaskStream = ChangeStream<ChangeStreamEvent<Document>>;
