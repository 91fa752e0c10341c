//! The interactions endpoint over real HTTP, called by the signing client of
//! `stargazer-testkit` the way Discord calls it.

use std::time::Duration;

use serde_json::{json, Value};
use stargazer_bot_discord::interactions::{self, InteractionsState, NOT_AVAILABLE};
use stargazer_bot_discord::DiscordConfig;
use stargazer_testkit::servers::discord::{
    application_command, autocomplete, message_component, ping, InteractionSigner, Invoker, Signing,
};
use stargazer_testkit::servers::{serve, Served};

struct Endpoint {
    url: String,
    signer: InteractionSigner,
    _served: Served,
}

async fn endpoint() -> Endpoint {
    let signer = InteractionSigner::new();
    // The bot is configured as in production: with the public key in hex.
    let config = DiscordConfig {
        public_key: signer.public_key_hex(),
        ..DiscordConfig::default()
    };
    let key = config.verifying_key().expect("valid public key");
    let served = serve(interactions::router(InteractionsState::new(key)))
        .await
        .expect("serve");
    Endpoint {
        url: format!("{}/interactions", served.base_url()),
        signer,
        _served: served,
    }
}

#[tokio::test]
async fn a_signed_ping_is_answered_pong() {
    let endpoint = endpoint().await;
    let response = endpoint.signer.post(&endpoint.url, &ping()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"type": 1}));
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let endpoint = endpoint().await;
    for signing in [Signing::BadSignature, Signing::TamperedBody] {
        let response = endpoint
            .signer
            .post_with(&endpoint.url, &ping(), signing)
            .await;
        assert_eq!(response.status(), 401, "{signing:?}");
    }
}

#[tokio::test]
async fn missing_signature_headers_are_refused() {
    let endpoint = endpoint().await;
    let response = endpoint
        .signer
        .post_with(&endpoint.url, &ping(), Signing::Missing)
        .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_stale_timestamp_is_refused() {
    let endpoint = endpoint().await;
    let stale = endpoint
        .signer
        .post_with(
            &endpoint.url,
            &ping(),
            Signing::StaleBy(Duration::from_secs(5 * 60 + 10)),
        )
        .await;
    assert_eq!(stale.status(), 401);
    let recent = endpoint
        .signer
        .post_with(
            &endpoint.url,
            &ping(),
            Signing::StaleBy(Duration::from_secs(20)),
        )
        .await;
    assert_eq!(recent.status(), 200);
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let endpoint = endpoint().await;
    let huge = json!({"type": 1, "padding": "x".repeat(300 * 1024)});
    let response = endpoint.signer.post(&endpoint.url, &huge).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn commands_are_answered_as_not_available_yet() {
    let endpoint = endpoint().await;
    let invoker = Invoker::admin(1_000_001, 1_000_002, 1_000_003);
    for interaction in [
        application_command(
            &invoker,
            "subscribe",
            json!([{"name": "name", "type": 3, "value": "Sora"}]),
        ),
        message_component(
            &Invoker::direct(1_000_004, 1_000_005),
            "unsubscribe:1",
            1_000_006,
        ),
    ] {
        let response = endpoint.signer.post(&endpoint.url, &interaction).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], 4, "{body}");
        assert_eq!(body["data"]["flags"], 64, "{body}");
        assert_eq!(body["data"]["content"], NOT_AVAILABLE);
    }
    let response = endpoint
        .signer
        .post(
            &endpoint.url,
            &autocomplete(
                &invoker,
                "subscribe",
                json!([{"name": "name", "type": 3, "value": "So", "focused": true}]),
            ),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"type": 8, "data": {"choices": []}}));
}

/// The test client's payloads parse as Discord's own models do, so the shapes the
/// endpoint is tested with are the shapes Discord sends.
#[test]
fn the_test_payloads_are_discord_interactions() {
    use twilight_model::application::interaction::Interaction;
    let invoker = Invoker::member(1_000_001, 1_000_002, 1_000_003);
    for payload in [
        ping(),
        application_command(&invoker, "list", json!([])),
        autocomplete(
            &invoker,
            "subscribe",
            json!([{"name": "name", "type": 3, "value": "So", "focused": true}]),
        ),
        message_component(&Invoker::direct(1_000_004, 1_000_005), "more", 1_000_006),
    ] {
        let parsed = serde_json::from_value::<Interaction>(payload.clone());
        assert!(parsed.is_ok(), "{payload}: {:?}", parsed.err());
    }
}
