//! `/openapi.json` of each listener: on the public one every RPC method with its request
//! and response schemas, the common error responses and both authentication schemes; on
//! the internal one the RabbitMQ auth endpoints.

use serde_json::{json, Value};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, ResponseBuilder, Server};
use utoipa::{Modify, OpenApi};

use stargazer_core::contract::REMINDER_LEAD_CHOICES_MINUTES;

use crate::rpc::validate;
use crate::types::ErrorResponse;

/// The errors any method may answer, besides its own 200.
const COMMON_ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "The body is not well-formed JSON, e.g. truncated (`bad_request`)",
    ),
    (
        "401",
        "Missing or wrong credentials, or an unknown or expired session (`unauthorized`)",
    ),
    (
        "403",
        "The caller may not call this method or touch this user (`forbidden`)",
    ),
    (
        "404",
        "A record named in the request does not exist (`not_found`)",
    ),
    ("409", "The record already exists (`conflict`)"),
    ("413", "The body exceeds the limit (`payload_too_large`)"),
    (
        "422",
        "The body is not a JSON object, or a field is missing or invalid; the message names it (`invalid_input`)",
    ),
    (
        "429",
        "Logins arrive faster than passwords can be checked; see `Retry-After` (`rate_limited`)",
    ),
    ("503", "The database is unavailable (`unavailable`)"),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stargazer api",
        description = "RPC over POST: `POST /v1/{method}` with a JSON body. Every response is \
            `{\"success\", \"time\", \"data\"}` or `{\"success\": false, \"time\", \"error\": {\"code\", \"message\"}}`. \
            Service accounts use HTTP Basic; end users use the bearer token of a session issued by `newSession`."
    ),
    components(schemas(ErrorResponse)),
    modifiers(&CommonParts),
    tags(
        (name = "users", description = "Chat users"),
        (name = "sessions", description = "End-user sessions and identity"),
        (name = "settings", description = "User settings"),
        (name = "subscriptions", description = "Subscriptions and the bots' fan-out lookup"),
        (name = "entities", description = "Tracked streamers (writes need admin rw)"),
        (name = "schedule", description = "Upcoming streams and the calendar feed link; the feed itself is \
            `GET /ical/{secret}.ics` (`text/calendar`), authenticated by its secret alone"),
    )
)]
struct ApiDoc;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stargazer api, internal listener",
        description = "The RabbitMQ HTTP auth backend (`rabbitmq_auth_backend_http`, POST, \
            form-encoded, text answers). With `auth_secret` set, requests carry HTTP Basic \
            with it as the password."
    ),
    paths(crate::mq_auth::user, crate::mq_auth::vhost, crate::mq_auth::resource, crate::mq_auth::topic),
    tags((name = "rabbitmq", description = "RabbitMQ HTTP auth backend")),
)]
struct InternalDoc;

/// The internal listener's document: the RabbitMQ auth endpoints, with the fields each
/// requires and their constraints.
pub(crate) fn internal_document() -> Value {
    let mut doc = serde_json::to_value(InternalDoc::openapi()).unwrap_or_else(|_| json!({}));
    rabbitmq_forms(&mut doc);
    doc
}

struct CommonParts;

impl Modify for CommonParts {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            if path.starts_with("/v1/") {
                if let Some(operation) = item.post.as_mut() {
                    add_common(operation);
                }
            }
        }
    }
}

fn add_common(operation: &mut Operation) {
    operation.security = Some(vec![
        SecurityRequirement::new("basic", Vec::<String>::new()),
        SecurityRequirement::new("bearer", Vec::<String>::new()),
    ]);
    for (status, description) in COMMON_ERRORS {
        let response = ResponseBuilder::new()
            .description(*description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorResponse"))),
            )
            .build();
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert(response.into());
    }
}

/// The complete document; `public_url`, when configured, is its server.
pub(crate) fn document(public_url: Option<&str>) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::rpc::MethodsDoc::openapi());
    // Modifiers ran before the merge; apply the per-method parts to the merged paths.
    CommonParts.modify(&mut doc);
    if let Some(url) = public_url {
        doc.servers = Some(vec![Server::new(url)]);
    }
    let mut doc = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    exact(&mut doc);
    doc
}

/// What the derived document cannot say by itself, so that it describes exactly what the
/// handlers accept: the field constraints of [`validate`], request bodies that may be
/// empty and `getUser`'s three forms.
fn exact(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let string = |rule: &validate::Rule| rule.schema();
    let language = || string(&validate::LANGUAGE);
    let names = || {
        json!({
            "minProperties": 1,
            "propertyNames": language(),
            "additionalProperties": string(&validate::ENTITY_NAME),
        })
    };
    let languages = || json!({ "items": language() });
    let timezone = |reset: bool| {
        let mut names: Vec<Value> = validate::timezone_names().map(Value::from).collect();
        if reset {
            names.insert(0, json!(""));
        }
        // The field is optional: `null` stays allowed, as absent.
        names.push(Value::Null);
        json!({ "enum": names })
    };
    let tasks = json!({ "uniqueItems": true });
    let fields: Vec<(&str, &str, Value)> = vec![
        ("AddUser", "im", string(&validate::IM)),
        ("AddUser", "chat_id", string(&validate::CHAT_ID)),
        ("AddUser", "name", string(&validate::DISPLAY_NAME)),
        ("AddUser", "language", language()),
        ("UpdateSetting", "language", language()),
        ("UpdateSetting", "timezone", timezone(true)),
        ("UpdateSetting", "name", string(&validate::DISPLAY_NAME)),
        ("UpdateSetting", "chat_id", string(&validate::CHAT_ID)),
        (
            "UpdateSetting",
            "reminder_leads",
            json!({
                "items": { "type": "integer", "enum": REMINDER_LEAD_CHOICES_MINUTES },
                "uniqueItems": true,
                "maxItems": REMINDER_LEAD_CHOICES_MINUTES.len(),
            }),
        ),
        (
            "UpdateSubscription",
            "kinds",
            json!({ "items": string(&validate::KIND), "maxItems": validate::MAX_KINDS }),
        ),
        ("UpdateSubscription", "mention", string(&validate::MENTION)),
        ("GetSubscribers", "kind", string(&validate::KIND)),
        ("GetSubscribers", "im", string(&validate::IM)),
        ("NewEntity", "names", names()),
        ("NewEntity", "default_language", language()),
        ("NewEntity", "translate_to", languages()),
        ("NewEntity", "tasks", tasks.clone()),
        ("UpdateEntity", "names", names()),
        ("UpdateEntity", "default_language", language()),
        ("UpdateEntity", "translate_to", languages()),
        ("UpdateEntity", "tasks", tasks),
    ];
    for (schema, field, constraints) in fields {
        merge(&mut schemas[schema]["properties"][field], constraints);
    }
    for (variant, field, rule) in [
        (0, "channel_id", &validate::CHANNEL_ID),
        (1, "user_id", &validate::X_USER_ID),
        (2, "broadcaster_id", &validate::TWITCH_ID),
        (3, "uid", &validate::BILIBILI_UID),
    ] {
        merge(
            &mut schemas["TaskParams"]["oneOf"][variant]["properties"][field],
            string(rule),
        );
    }
    // getUser: by id, by platform and chat, or (a session) neither; never a mix.
    let description = schemas["GetUser"]["description"].clone();
    schemas["GetUser"] = json!({
        "description": description,
        "oneOf": [
            {
                "title": "by id",
                "type": "object",
                "required": ["user"],
                "properties": { "user": { "type": "string", "format": "uuid" } },
                "additionalProperties": false,
            },
            {
                "title": "by chat",
                "type": "object",
                "required": ["im", "chat_id"],
                "properties": {
                    "im": string(&validate::IM),
                    "chat_id": string(&validate::CHAT_ID),
                },
                "additionalProperties": false,
            },
            {
                "title": "the session's own user",
                "type": "object",
                "additionalProperties": false,
                "maxProperties": 0,
            },
        ],
    });
    optional_bodies(doc);
}

/// Adds `extra`'s keywords to `schema`, keeping its `type` (which says whether `null`
/// is allowed).
fn merge(schema: &mut Value, extra: Value) {
    if let (Some(schema), Value::Object(extra)) = (schema.as_object_mut(), extra) {
        for (key, value) in extra {
            if key != "type" || !schema.contains_key("type") {
                schema.insert(key, value);
            }
        }
    }
}

/// An empty body reads as `{}` (`crate::http::RpcBody`): where `{}` is a valid request the
/// body is optional.
fn optional_bodies(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].clone();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let body = &mut item["post"]["requestBody"];
        let reference = body["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or("");
        let name = reference.rsplit('/').next().unwrap_or("");
        let schema = &schemas[name];
        let needs_nothing = |s: &Value| s["required"].as_array().is_none_or(Vec::is_empty);
        let empty_ok = match schema["oneOf"].as_array() {
            Some(variants) => variants.iter().any(needs_nothing),
            None => needs_nothing(schema),
        };
        if empty_ok {
            body["required"] = json!(false);
        }
    }
}

/// The RabbitMQ HTTP auth backend's forms: which fields each endpoint requires, their
/// values, and the 400 a malformed request gets (RabbitMQ then denies).
fn rabbitmq_forms(doc: &mut Value) {
    let non_empty = json!({ "type": "string", "minLength": 1 });
    let username =
        json!({ "type": "string", "minLength": 1, "maxLength": crate::mq_auth::MAX_USERNAME_LEN });
    let resource = |kinds: &[&str]| json!({ "type": "string", "enum": kinds });
    let permission = json!({ "type": "string", "enum": ["configure", "write", "read"] });
    let resource_fields = |kinds: &[&str]| {
        json!({
            "username": username,
            "vhost": non_empty,
            "resource": resource(kinds),
            "name": { "type": "string" },
            "permission": permission,
        })
    };
    let forms = [
        (
            "/auth/user",
            json!({ "username": username, "password": non_empty }),
        ),
        (
            "/auth/vhost",
            json!({ "username": username, "vhost": non_empty }),
        ),
        ("/auth/resource", resource_fields(&["exchange", "queue"])),
        ("/auth/topic", resource_fields(&["topic"])),
    ];
    let schemas = doc["components"]["schemas"].clone();
    for (path, required) in forms {
        let operation = &mut doc["paths"][path]["post"];
        if !operation.is_object() {
            continue;
        }
        let content = &mut operation["requestBody"]["content"]["application/x-www-form-urlencoded"];
        let reference = content["schema"]["$ref"].as_str().unwrap_or("");
        let mut schema = schemas[reference.rsplit('/').next().unwrap_or("")].clone();
        let Some(fields) = required.as_object() else {
            continue;
        };
        for (field, constraints) in fields {
            schema["properties"][field] = constraints.clone();
        }
        schema["required"] = json!(fields.keys().collect::<Vec<_>>());
        content["schema"] = schema;
        operation["responses"]["400"] = json!({
            "description": "A required field is missing, empty, unknown or too long (the text says which); RabbitMQ denies",
            "content": { "text/plain": { "schema": { "type": "string" } } },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_described_with_schemas() {
        let json = document(Some("https://api.example"));
        for method in crate::rpc::METHODS {
            let op = &json["paths"][format!("/v1/{method}")]["post"];
            assert!(op.is_object(), "{method} missing");
            assert!(
                op["requestBody"].is_object(),
                "{method} has no request body"
            );
            assert!(op["responses"]["200"].is_object(), "{method} has no 200");
            assert!(op["responses"]["401"].is_object(), "{method} has no 401");
        }
        for schema in [
            "User",
            "Entity",
            "GetSubscribers",
            "Subscriber",
            "ErrorResponse",
            "UpdateEntity",
            "Me",
        ] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "schema {schema} missing"
            );
        }
        assert!(
            json["paths"]["/auth/topic"].is_null(),
            "served internally only"
        );
        assert_eq!(json["servers"][0]["url"], "https://api.example");
        let internal = internal_document();
        for check in ["user", "vhost", "resource", "topic"] {
            let op = &internal["paths"][format!("/auth/{check}")]["post"];
            assert!(op["responses"]["400"].is_object(), "{check}: {op}");
        }
    }

    #[test]
    fn constraints_come_from_the_validators() {
        let json = document(None);
        let schemas = &json["components"]["schemas"];
        let im = &schemas["AddUser"]["properties"]["im"];
        assert_eq!(im["pattern"], validate::IM.pattern);
        assert_eq!(im["maxLength"], validate::IM_MAX);
        assert_eq!(im["minLength"], 1);
        assert_eq!(schemas["AddUser"]["required"], json!(["im", "chat_id"]));
        // Optional fields stay nullable (`null` reads as absent).
        assert_eq!(
            schemas["UpdateSetting"]["properties"]["chat_id"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(
            schemas["UpdateSetting"]["properties"]["chat_id"]["maxLength"],
            validate::CHAT_ID_MAX
        );
        let zones = schemas["UpdateSetting"]["properties"]["timezone"]["enum"]
            .as_array()
            .unwrap();
        assert!(zones.contains(&json!("Asia/Tokyo")) && zones.contains(&json!("")));
        let kinds = &schemas["UpdateSubscription"]["properties"]["kinds"];
        assert_eq!(kinds["maxItems"], validate::MAX_KINDS);
        assert_eq!(kinds["items"]["pattern"], validate::KIND.pattern);
        let mention = &schemas["UpdateSubscription"]["properties"]["mention"];
        assert_eq!(mention["pattern"], validate::MENTION.pattern);
        assert_eq!(mention["maxLength"], validate::MENTION_MAX);
        assert_eq!(mention["type"], json!(["string", "null"]));
        let leads = &schemas["UpdateSetting"]["properties"]["reminder_leads"];
        assert_eq!(leads["items"]["enum"], json!([5, 15, 30, 60]));
        assert_eq!(leads["uniqueItems"], true);
        assert_eq!(leads["type"], json!(["array", "null"]));
        let names = &schemas["NewEntity"]["properties"]["names"];
        assert_eq!(
            names["propertyNames"]["pattern"],
            validate::LANGUAGE.pattern
        );
        assert_eq!(names["minProperties"], 1);
        assert_eq!(
            schemas["TaskParams"]["oneOf"][0]["properties"]["channel_id"]["pattern"],
            validate::CHANNEL_ID.pattern
        );
        assert_eq!(
            schemas["TaskParams"]["oneOf"][2]["properties"]["broadcaster_id"]["pattern"],
            validate::TWITCH_ID.pattern
        );
        assert_eq!(
            schemas["TaskParams"]["oneOf"][3]["properties"]["uid"]["pattern"],
            validate::BILIBILI_UID.pattern
        );
        assert_eq!(schemas["GetUser"]["oneOf"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn bodies_that_may_be_empty_are_optional() {
        let json = document(None);
        let required = |method: &str| {
            json["paths"][format!("/v1/{method}")]["post"]["requestBody"]["required"].clone()
        };
        for method in [
            "getEntities",
            "authMe",
            "getUserIndex",
            "getUser",
            "updateSetting",
        ] {
            assert_eq!(required(method), json!(false), "{method}");
        }
        for method in [
            "newSession",
            "addUser",
            "getEntity",
            "newEntity",
            "getSubscribers",
        ] {
            assert_eq!(required(method), json!(true), "{method}");
        }
    }

    #[test]
    fn rabbitmq_endpoints_document_their_fields_and_400s() {
        let json = internal_document();
        for (path, fields) in [
            ("/auth/user", vec!["password", "username"]),
            ("/auth/vhost", vec!["username", "vhost"]),
            (
                "/auth/resource",
                vec!["name", "permission", "resource", "username", "vhost"],
            ),
        ] {
            let operation = &json["paths"][path]["post"];
            assert!(operation["responses"]["400"].is_object(), "{path}");
            let schema =
                &operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
            let mut required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            required.sort();
            assert_eq!(required, fields, "{path}");
        }
    }
}
