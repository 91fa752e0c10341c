//! `/openapi.json` of each listener: on the public one every RPC method with its request
//! and response schemas, the common error responses and both authentication schemes; on
//! the internal one the RabbitMQ auth endpoints.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, ResponseBuilder, Server};
use utoipa::{Modify, OpenApi};

use crate::types::ErrorResponse;

/// The errors any method may answer, besides its own 200.
const COMMON_ERRORS: &[(&str, &str)] = &[
    ("400", "The body is not JSON (`bad_request`)"),
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
        "A field is missing or invalid; the message names it (`invalid_input`)",
    ),
    (
        "429",
        "Too many failed logins; see `Retry-After` (`rate_limited`)",
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

/// The internal listener's document: the RabbitMQ auth endpoints.
pub(crate) fn internal_document() -> Document {
    InternalDoc::openapi()
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
pub(crate) fn document(public_url: Option<&str>) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::rpc::MethodsDoc::openapi());
    // Modifiers ran before the merge; apply the per-method parts to the merged paths.
    CommonParts.modify(&mut doc);
    if let Some(url) = public_url {
        doc.servers = Some(vec![Server::new(url)]);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_described_with_schemas() {
        let doc = document(Some("https://api.example"));
        let json = serde_json::to_value(&doc).unwrap();
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
        let internal = serde_json::to_value(internal_document()).unwrap();
        for check in ["user", "vhost", "resource", "topic"] {
            let op = &internal["paths"][format!("/auth/{check}")]["post"];
            assert!(op["responses"]["400"].is_object(), "{check}: {op}");
        }
    }
}
