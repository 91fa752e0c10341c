//! The interactions endpoint over real HTTP, called by the signing client of
//! `stargazer-testkit` the way Discord calls it.

use std::time::Duration;

use serde_json::{json, Value};
use stargazer_bot_discord::interactions::{self, InteractionsState};
use stargazer_bot_discord::DiscordConfig;
use stargazer_testkit::servers::discord::{
    application_command, autocomplete, message_component, ping, string_select, InteractionSigner,
    Invoker, Signing, BOT_USER_ID,
};
use stargazer_testkit::servers::{serve, Served};

struct Endpoint {
    url: String,
    signer: InteractionSigner,
    _served: Served,
}

async fn endpoint() -> Endpoint {
    let signer = InteractionSigner::new();
    // The bot is configured as in production: with the public key in hex. Nothing here
    // reaches the api or Discord: signatures are checked before anything else.
    let config = DiscordConfig {
        public_key: signer.public_key_hex(),
        application_id: BOT_USER_ID.to_string(),
        ..DiscordConfig::default()
    };
    let state = InteractionsState::new(&config).expect("valid configuration");
    let served = serve(interactions::router(state)).await.expect("serve");
    Endpoint {
        url: format!("{}/interactions", served.base_url()),
        signer,
        _served: served,
    }
}

/// Discord's endpoint check: a signed PING gets PONG.
#[tokio::test]
async fn a_signed_ping_is_answered_pong() {
    let endpoint = endpoint().await;
    let response = endpoint.signer.post(&endpoint.url, &ping()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"type": 1}));
}

/// A signature by another key, or over another body, is 401.
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

/// No signature headers at all is 401.
#[tokio::test]
async fn missing_signature_headers_are_refused() {
    let endpoint = endpoint().await;
    let response = endpoint
        .signer
        .post_with(&endpoint.url, &ping(), Signing::Missing)
        .await;
    assert_eq!(response.status(), 401);
}

/// A correctly signed request older than five minutes is 401 (a replay); a recent one passes.
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

/// A body over the limit is 413 before any signature work.
#[tokio::test]
async fn an_oversized_body_is_refused() {
    let endpoint = endpoint().await;
    let huge = json!({"type": 1, "padding": "x".repeat(300 * 1024)});
    let response = endpoint.signer.post(&endpoint.url, &huge).await;
    assert_eq!(response.status(), 413);
}

/// A command in a direct message is answered that commands belong to a server channel,
/// in the person's language, without asking the api.
#[tokio::test]
async fn a_direct_message_is_told_to_use_a_server_channel() {
    let endpoint = endpoint().await;
    let japanese = Invoker {
        locale: "ja".into(),
        ..Invoker::direct(1_000_004, 1_000_005)
    };
    let response = endpoint
        .signer
        .post(
            &endpoint.url,
            &application_command(&japanese, "list", json!([])),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], 4, "{body}");
    assert_eq!(body["data"]["flags"], 64, "{body}");
    assert!(body["data"]["content"]
        .as_str()
        .unwrap()
        .starts_with("購読はサーバーのチャンネルに属します"));
    let response = endpoint
        .signer
        .post(
            &endpoint.url,
            &autocomplete(
                &japanese,
                "subscribe",
                json!([{"name": "entity", "type": 3, "value": "So", "focused": true}]),
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
        string_select(
            &invoker.clone().with_role(1_000_007),
            "kinds:x",
            &["twitch.live"],
            1_000_006,
        ),
    ] {
        let parsed = serde_json::from_value::<Interaction>(payload.clone());
        assert!(parsed.is_ok(), "{payload}: {:?}", parsed.err());
    }
}
