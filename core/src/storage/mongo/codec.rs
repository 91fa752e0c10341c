//! MongoDB: documents to and from the model, and driver errors to storage errors.

use super::*;

pub(super) fn db_err(context: &str, e: DriverError) -> StorageError {
    StorageError::Backend(format!("{context}: {e}"))
}

pub(super) fn unique_err(
    e: DriverError,
    context: &str,
    what: impl FnOnce() -> String,
) -> StorageError {
    if is_duplicate_key(&e) {
        StorageError::Conflict(what())
    } else {
        db_err(context, e)
    }
}

pub(super) fn user_conflict(e: DriverError, user: &User, context: &str) -> StorageError {
    let on_chat = duplicate_message(&e).is_some_and(|m| m.contains("im_chat"));
    unique_err(e, context, || crate::storage::user_taken(user, on_chat))
}

pub(super) fn is_code(e: &DriverError, code: i32) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => c.code == code,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == code,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == code)),
        _ => false,
    }
}

pub(super) fn is_duplicate_key(e: &DriverError) -> bool {
    is_code(e, DUPLICATE_KEY)
}

/// Whether `e` is a collision on the unique `(kind, account)` index of `tasks`.
pub(super) fn is_account_duplicate(e: &DriverError) -> bool {
    duplicate_message(e).is_some_and(|m| m.contains(TASK_ACCOUNT_INDEX))
}

/// The server's message for a duplicate key (names the index that collided).
pub(super) fn duplicate_message(e: &DriverError) -> Option<&str> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) if c.code == DUPLICATE_KEY => Some(&c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY => {
            Some(&w.message)
        }
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()?
            .iter()
            .find(|w| w.code == DUPLICATE_KEY)
            .map(|w| w.message.as_str()),
        _ => None,
    }
}

/// Which document of an `insert_many` hit a duplicate key.
pub(super) fn duplicate_index(e: &DriverError) -> Option<usize> {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()?
            .iter()
            .find(|w| w.code == DUPLICATE_KEY)
            .map(|w| w.index),
        _ => None,
    }
}

// -------------------------------------------------------------------- encoding

/// The `deliveries` document of a record.
pub(super) fn delivery_doc(record: &DeliveryRecord) -> Document {
    doc! {
        "event": uuid_bson(record.event),
        "im": &record.im,
        "chat_id": &record.chat_id,
        "status": &record.status,
        "at": time_bson(record.at),
    }
}

/// A UUID as BSON binary subtype 4, the standard representation.
pub(super) fn uuid_bson(id: Uuid) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.as_bytes().to_vec(),
    })
}

pub(super) fn time_bson(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_chrono(t))
}

pub(super) fn names_doc(names: &LocalizedNames) -> Document {
    names
        .iter()
        .map(|(language, name)| (language.clone(), Bson::String(name.clone())))
        .collect()
}

pub(super) fn entity_doc(entity: &Entity) -> Document {
    doc! {
        "_id": uuid_bson(entity.id),
        "names": names_doc(&entity.names),
        "default_language": &entity.default_language,
        "group": entity.group.map_or(Bson::Null, uuid_bson),
        "translate_to": &entity.translate_to,
        "tasks": entity.tasks.iter().map(|t| uuid_bson(t.id)).collect::<Vec<_>>(),
    }
}

pub(super) fn task_doc(task: &Task, entity: Uuid) -> Document {
    let mut d = doc! {
        "_id": uuid_bson(task.id),
        "entity": uuid_bson(entity),
        "kind": task.kind().as_str(),
        "account": task.params.source_id(),
    };
    match &task.params {
        TaskParams::Youtube { channel_id } => d.insert("channel_id", channel_id),
        TaskParams::Twitter { user_id } => d.insert("user_id", user_id),
        TaskParams::Twitch { broadcaster_id } => d.insert("broadcaster_id", broadcaster_id),
        TaskParams::Bilibili { uid } => d.insert("uid", uid),
    };
    d
}

pub(super) fn settings_doc(settings: &UserSettings) -> Document {
    doc! {
        "timezone": settings.timezone.as_deref().map_or(Bson::Null, |tz| Bson::String(tz.to_owned())),
        "paused": settings.paused,
        "reminder_leads": settings.reminder_leads.iter().map(|&m| Bson::Int64(i64::from(m))).collect::<Vec<_>>(),
        "calendar_secret_hash": settings.calendar_secret_hash.as_deref().map_or(Bson::Null, |hash| Bson::String(hash.to_owned())),
    }
}

pub(super) fn user_doc(user: &User) -> Document {
    doc! {
        "_id": uuid_bson(user.id),
        "im": &user.im,
        "im_chat_id": &user.im_chat_id,
        "name": &user.name,
        "language": &user.language,
        "settings": settings_doc(&user.settings),
        "created_at": time_bson(user.created_at),
    }
}

pub(super) fn access_str(access: Access) -> &'static str {
    match access {
        Access::Ro => "ro",
        Access::Rw => "rw",
    }
}

pub(super) fn permissions_doc(p: &Permissions) -> Document {
    let mut d = Document::new();
    for (name, access) in [
        ("api", p.api),
        ("admin", p.admin),
        ("mq", p.mq),
        ("coordinator", p.coordinator),
    ] {
        if let Some(access) = access {
            d.insert(name, access_str(access));
        }
    }
    d
}

// -------------------------------------------------------------------- decoding

/// A document's `_id` as text (a UUID when it is one), to name it in messages.
pub(super) fn doc_id(d: &Document) -> String {
    match d.get("_id") {
        Some(Bson::Binary(b)) => Uuid::from_slice(&b.bytes)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| format!("{b}")),
        Some(other) => other.to_string(),
        None => "without _id".to_owned(),
    }
}

pub(super) fn corrupt(what: &str, d: &Document, key: &str, problem: &str) -> StorageError {
    StorageError::Corrupt(format!("{what} {}: field `{key}` {problem}", doc_id(d)))
}

pub(super) fn get_uuid(d: &Document, key: &str, what: &str) -> Result<Uuid> {
    match d.get(key) {
        Some(Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes,
        })) => Uuid::from_slice(bytes).map_err(|_| corrupt(what, d, key, "is not 16 bytes long")),
        Some(_) => Err(corrupt(what, d, key, "is not a UUID (binary subtype 4)")),
        None => Err(corrupt(what, d, key, "is missing")),
    }
}

pub(super) fn get_opt_uuid(d: &Document, key: &str, what: &str) -> Result<Option<Uuid>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => get_uuid(d, key, what).map(Some),
    }
}

pub(super) fn get_string(d: &Document, key: &str, what: &str) -> Result<String> {
    match d.get(key) {
        Some(Bson::String(s)) => Ok(s.clone()),
        Some(_) => Err(corrupt(what, d, key, "is not a string")),
        None => Err(corrupt(what, d, key, "is missing")),
    }
}

pub(super) fn get_opt_string(d: &Document, key: &str, what: &str) -> Result<Option<String>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => get_string(d, key, what).map(Some),
    }
}

pub(super) fn get_strings(d: &Document, key: &str, what: &str) -> Result<Vec<String>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(Vec::new()),
        Some(Bson::Array(items)) => items
            .iter()
            .map(|item| match item {
                Bson::String(s) => Ok(s.clone()),
                _ => Err(corrupt(what, d, key, "holds a non-string")),
            })
            .collect(),
        Some(_) => Err(corrupt(what, d, key, "is not an array")),
    }
}

/// `reminder_leads` of a settings document: absent means none.
fn get_minutes(settings: &Document) -> std::result::Result<Vec<u32>, ()> {
    match settings.get("reminder_leads") {
        None | Some(Bson::Null) => Ok(Vec::new()),
        Some(Bson::Array(items)) => items
            .iter()
            .map(|item| match item {
                Bson::Int32(m) => u32::try_from(*m).map_err(|_| ()),
                Bson::Int64(m) => u32::try_from(*m).map_err(|_| ()),
                _ => Err(()),
            })
            .collect(),
        Some(_) => Err(()),
    }
}

pub(super) fn get_time(d: &Document, key: &str, what: &str) -> Result<DateTime<Utc>> {
    match d.get(key) {
        Some(Bson::DateTime(t)) => Ok(t.to_chrono()),
        Some(_) => Err(corrupt(what, d, key, "is not a date")),
        None => Err(corrupt(what, d, key, "is missing")),
    }
}

pub(super) fn get_names(d: &Document, key: &str, what: &str) -> Result<LocalizedNames> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(LocalizedNames::new()),
        Some(Bson::Document(names)) => names
            .iter()
            .map(|(language, name)| match name {
                Bson::String(name) => Ok((language.clone(), name.clone())),
                _ => Err(corrupt(what, d, key, "holds a non-string name")),
            })
            .collect(),
        Some(_) => Err(corrupt(what, d, key, "is not a document")),
    }
}

pub(super) fn decode_task(d: &Document) -> Result<Task> {
    const WHAT: &str = "task";
    let kind: TaskKind = get_string(d, "kind", WHAT)?
        .parse()
        .map_err(|e: String| corrupt(WHAT, d, "kind", &e))?;
    let params = match kind {
        TaskKind::Youtube => TaskParams::Youtube {
            channel_id: get_string(d, "channel_id", WHAT)?,
        },
        TaskKind::Twitter => TaskParams::Twitter {
            user_id: get_string(d, "user_id", WHAT)?,
        },
        TaskKind::Twitch => TaskParams::Twitch {
            broadcaster_id: get_string(d, "broadcaster_id", WHAT)?,
        },
        TaskKind::Bilibili => TaskParams::Bilibili {
            uid: get_string(d, "uid", WHAT)?,
        },
    };
    Ok(Task {
        id: get_uuid(d, "_id", WHAT)?,
        entity: get_uuid(d, "entity", WHAT)?,
        params,
    })
}

/// An entity from its document and its tasks (any order): listed ids first, in the stored
/// order, then any task the list does not name (written by other means), by id.
pub(super) fn decode_entity(d: &Document, mut tasks: Vec<Task>) -> Result<Entity> {
    const WHAT: &str = "entity";
    let order: HashMap<Uuid, usize> = match d.get("tasks") {
        None | Some(Bson::Null) => HashMap::new(),
        Some(Bson::Array(ids)) => ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| match id {
                Bson::Binary(b) => Uuid::from_slice(&b.bytes).ok().map(|u| (u, i)),
                _ => None,
            })
            .collect(),
        Some(_) => return Err(corrupt(WHAT, d, "tasks", "is not an array")),
    };
    tasks.sort_by_key(|t| (order.get(&t.id).copied().unwrap_or(usize::MAX), t.id));
    Ok(Entity {
        id: get_uuid(d, "_id", WHAT)?,
        names: get_names(d, "names", WHAT)?,
        default_language: get_string(d, "default_language", WHAT)?,
        group: get_opt_uuid(d, "group", WHAT)?,
        translate_to: get_strings(d, "translate_to", WHAT)?,
        tasks,
    })
}

pub(super) fn decode_user(d: &Document) -> Result<User> {
    const WHAT: &str = "user";
    let settings = match d.get("settings") {
        None | Some(Bson::Null) => UserSettings::default(),
        Some(Bson::Document(s)) => UserSettings {
            timezone: get_opt_string(s, "timezone", "user settings")?,
            paused: match s.get("paused") {
                None | Some(Bson::Null) => false,
                Some(Bson::Boolean(b)) => *b,
                Some(_) => return Err(corrupt(WHAT, d, "settings.paused", "is not a boolean")),
            },
            reminder_leads: get_minutes(s).map_err(|()| {
                corrupt(
                    WHAT,
                    d,
                    "settings.reminder_leads",
                    "is not a list of minutes",
                )
            })?,
            calendar_secret_hash: get_opt_string(s, "calendar_secret_hash", "user settings")?,
        },
        Some(_) => return Err(corrupt(WHAT, d, "settings", "is not a document")),
    };
    Ok(User {
        id: get_uuid(d, "_id", WHAT)?,
        im: get_string(d, "im", WHAT)?,
        im_chat_id: get_string(d, "im_chat_id", WHAT)?,
        name: get_string(d, "name", WHAT)?,
        language: get_string(d, "language", WHAT)?,
        settings,
        created_at: get_time(d, "created_at", WHAT)?,
    })
}

pub(super) fn decode_subscription(d: &Document) -> Result<Subscription> {
    const WHAT: &str = "subscription";
    Ok(Subscription {
        user: get_uuid(d, "user", WHAT)?,
        entity: get_uuid(d, "entity", WHAT)?,
        kinds: get_strings(d, "kinds", WHAT)?,
        mention: get_opt_string(d, "mention", WHAT)?,
    })
}

pub(super) fn decode_credential(d: &Document) -> Result<Credential> {
    const WHAT: &str = "credential";
    let mut permissions = Permissions::default();
    match d.get("permissions") {
        None | Some(Bson::Null) => {}
        Some(Bson::Document(p)) => {
            for (name, access) in p {
                let access: Access = match access {
                    Bson::String(s) => s
                        .parse()
                        .map_err(|e: String| corrupt(WHAT, d, "permissions", &e))?,
                    _ => return Err(corrupt(WHAT, d, "permissions", "holds a non-string")),
                };
                let slot = match name.as_str() {
                    "api" => &mut permissions.api,
                    "admin" => &mut permissions.admin,
                    "mq" => &mut permissions.mq,
                    "coordinator" => &mut permissions.coordinator,
                    other => {
                        return Err(corrupt(
                            WHAT,
                            d,
                            "permissions",
                            &format!("names unknown component `{other}`"),
                        ))
                    }
                };
                *slot = Some(access);
            }
        }
        Some(_) => return Err(corrupt(WHAT, d, "permissions", "is not a document")),
    }
    Ok(Credential {
        username: get_string(d, "username", WHAT)?,
        hash: get_string(d, "hash", WHAT)?,
        permissions,
        // Credentials stored before queues existed own none.
        queues: get_strings(d, "queues", WHAT)?,
    })
}

pub(super) fn decode_delayed(d: &Document) -> Result<DelayedMessage> {
    const WHAT: &str = "delayed message";
    let body = match d.get("body") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(_) => return Err(corrupt(WHAT, d, "body", "is not binary")),
        None => return Err(corrupt(WHAT, d, "body", "is missing")),
    };
    let fire_at_ms = match d.get("fire_at_ms") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(_) => return Err(corrupt(WHAT, d, "fire_at_ms", "is not an integer")),
        None => return Err(corrupt(WHAT, d, "fire_at_ms", "is missing")),
    };
    Ok(DelayedMessage {
        id: get_string(d, "_id", WHAT)?,
        routing_key: get_string(d, "routing_key", WHAT)?,
        body,
        fire_at_ms,
    })
}

/// A delayed message with its revision and claim. Documents written before claims
/// existed have neither: revision 0, unclaimed.
pub(super) fn decode_stored_delayed(d: &Document) -> Result<StoredDelayed> {
    const WHAT: &str = "delayed message";
    let int = |field: &str| match d.get(field) {
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        None | Some(Bson::Null) => Ok(0),
        Some(_) => Err(corrupt(WHAT, d, field, "is not an integer")),
    };
    let lease = match d.get("owner") {
        Some(Bson::String(owner)) => Some(DelayLease {
            owner: owner.clone(),
            until_ms: int("lease_until_ms")?,
        }),
        None | Some(Bson::Null) => None,
        Some(_) => return Err(corrupt(WHAT, d, "owner", "is not a string")),
    };
    Ok(StoredDelayed {
        message: decode_delayed(d)?,
        revision: int("revision")?,
        lease,
    })
}

pub(super) fn decode_kv_value(
    d: &Document,
    namespace: &str,
    key: &str,
) -> Result<serde_json::Value> {
    let text = get_string(d, "value", "value")?;
    serde_json::from_str(&text)
        .map_err(|e| StorageError::Corrupt(format!("value {namespace}/{key}: not JSON: {e}")))
}
