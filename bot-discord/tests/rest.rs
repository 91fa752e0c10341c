//! The REST sender against the local Discord of `stargazer-testkit` over real HTTP:
//! messages and edits with embeds, 429s waited out, buckets and the global limit kept,
//! failures classified.

use std::time::{Duration, Instant};

use futures::future::join_all;
use stargazer_bot_discord::rest::embed;
use stargazer_bot_discord::{DiscordConfig, MessageBody, RestClient, SendError};
use stargazer_testkit::servers::discord::{DiscordServer, Failure, Limits, Outage};
use twilight_model::id::Id;

const TOKEN: &str = "bot-token-for-tests";

fn config(url: &str) -> DiscordConfig {
    DiscordConfig {
        api_url: url.to_owned(),
        token: TOKEN.to_owned(),
        ..DiscordConfig::default()
    }
}

async fn setup() -> (DiscordServer, RestClient) {
    let server = DiscordServer::start(TOKEN).await.expect("discord server");
    let client = RestClient::new(&config(&server.url)).expect("client");
    (server, client)
}

fn stream_message(title: &str) -> MessageBody {
    MessageBody::text("Tokino Sora is live!")
        .with_embed(embed(
            title,
            Some("https://www.youtube.com/watch?v=abc".to_owned()),
            "Come and watch",
            Some("https://i.ytimg.com/vi/abc/hqdefault.jpg".to_owned()),
        ))
        .with_link_button("Watch", "https://www.youtube.com/watch?v=abc")
}

#[tokio::test]
async fn a_message_and_its_edit_go_through_with_embed() {
    let (server, client) = setup().await;
    let channel = Id::new(1_200_000_000_000_000_001);

    let sent = client
        .send_message(channel, &stream_message("Morning stream"))
        .await
        .expect("sent");
    assert_eq!(sent.channel_id, channel);
    let on_server = server.sent();
    assert_eq!(on_server.len(), 1);
    let message = &on_server[0];
    assert_eq!(message.id, sent.id.get());
    assert_eq!(message.channel_id, channel.get());
    assert_eq!(message.content, "Tokino Sora is live!");
    assert_eq!(message.embeds[0]["title"], "Morning stream");
    assert_eq!(
        message.embeds[0]["url"],
        "https://www.youtube.com/watch?v=abc"
    );
    assert_eq!(
        message.embeds[0]["thumbnail"]["url"],
        "https://i.ytimg.com/vi/abc/hqdefault.jpg"
    );
    assert_eq!(
        message.link_buttons(),
        vec![(
            "Watch".to_owned(),
            "https://www.youtube.com/watch?v=abc".to_owned()
        )]
    );
    // Nobody is pinged unless asked: a title with @everyone stays text.
    assert_eq!(
        message.allowed_mentions.as_ref().expect("allowed_mentions")["parse"],
        serde_json::json!([])
    );

    let edited = client
        .edit_message(channel, sent.id, &stream_message("Morning stream (ended)"))
        .await
        .expect("edited");
    assert_eq!(edited.id, sent.id);
    assert_eq!(server.edited_count(), 1);
    let stored = server.message(sent.id.get()).expect("stored");
    assert_eq!(stored["embeds"][0]["title"], "Morning stream (ended)");
    assert!(stored["edited_timestamp"].is_string());
    assert_eq!(server.too_many(), 0);
}

#[tokio::test]
async fn a_429_is_waited_out_and_the_message_then_delivered() {
    let (server, client) = setup().await;
    let channel = Id::new(42);
    server.fail_next(
        42,
        Failure::RateLimited {
            retry_after: 0.6,
            global: false,
        },
    );
    let started = Instant::now();
    client
        .send_message(channel, &MessageBody::text("after the wait"))
        .await
        .expect("delivered despite the 429");
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(server.too_many(), 1);
    assert_eq!(server.sent_to(42).len(), 1);

    // A global 429 holds back every channel, not only the one that met it.
    server.fail_next(
        43,
        Failure::RateLimited {
            retry_after: 0.5,
            global: true,
        },
    );
    let started = Instant::now();
    let first = client
        .try_send_message(Id::new(43), &MessageBody::text("x"))
        .await;
    assert_eq!(
        first,
        Err(SendError::RateLimited(Duration::from_millis(500)))
    );
    client
        .send_message(Id::new(44), &MessageBody::text("other channel"))
        .await
        .expect("delivered");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(server.too_many(), 2);
}

#[tokio::test]
async fn a_channels_sixth_message_waits_for_its_bucket() {
    let (server, client) = setup().await;
    server.set_limits(Limits::discord());
    let channel = Id::new(7);
    let body = MessageBody::text("one of six");
    let sends = (0..6).map(|_| client.send_message(channel, &body));
    for result in join_all(sends).await {
        result.expect("delivered");
    }
    let sent = server.sent_to(7);
    assert_eq!(sent.len(), 6);
    assert_eq!(server.too_many(), 0, "the bucket was waited for, not hit");
    let gap = sent[5].at.duration_since(sent[0].at);
    assert!(gap >= Duration::from_millis(4900), "sixth after {gap:?}");
    assert!(gap < Duration::from_secs(7), "sixth after {gap:?}");
}

#[tokio::test]
async fn a_fan_out_keeps_under_the_global_limit_without_429s() {
    let (server, client) = setup().await;
    server.set_limits(Limits::discord());
    let body = MessageBody::text("fan-out");
    let started = Instant::now();
    let sends = (1..=120u64).map(|channel| {
        let client = client.clone();
        let body = body.clone();
        async move { client.send_message(Id::new(channel), &body).await }
    });
    for result in join_all(sends).await {
        result.expect("delivered");
    }
    assert_eq!(server.sent_count(), 120);
    assert_eq!(server.too_many(), 0);
    // 120 requests at under 50 per second take more than 2.3 s.
    assert!(started.elapsed() >= Duration::from_millis(2300));
}

#[tokio::test]
async fn failures_are_classified() {
    let (server, client) = setup().await;
    server.set_limits(Limits::lenient());
    let text = MessageBody::text("x");

    for (channel, failure, code) in [
        (1, Failure::MissingAccess, 50001),
        (2, Failure::MissingPermissions, 50013),
        (3, Failure::UnknownChannel, 10003),
    ] {
        server.set_channel_failure(channel, Some(failure));
        match client.send_message(Id::new(channel), &text).await {
            Err(SendError::Gone { code: got, .. }) => assert_eq!(got, code),
            other => panic!("channel {channel}: {other:?}"),
        }
    }

    let too_long = MessageBody::text("x".repeat(2001));
    match client.send_message(Id::new(4), &too_long).await {
        Err(SendError::Invalid {
            status: 400,
            code: 50035,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match client.edit_message(Id::new(4), Id::new(999), &text).await {
        Err(SendError::Invalid {
            status: 404,
            code: 10008,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    server.set_outage(Some(Outage::BadGateway));
    assert!(matches!(
        client.send_message(Id::new(5), &text).await,
        Err(SendError::Transient(_))
    ));
    server.set_outage(Some(Outage::ServerError));
    assert!(matches!(
        client.send_message(Id::new(5), &text).await,
        Err(SendError::Transient(_))
    ));
    server.set_outage(None);
    client
        .send_message(Id::new(5), &text)
        .await
        .expect("after the outage");

    let wrong_token = RestClient::new(&DiscordConfig {
        token: "wrong".into(),
        ..config(&server.url)
    })
    .expect("client");
    assert_eq!(
        wrong_token.send_message(Id::new(5), &text).await,
        Err(SendError::Unauthorized)
    );

    // Nothing listens there: a network failure is transient.
    let unreachable_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let unreachable = RestClient::new(&config(&unreachable_url)).expect("client");
    assert!(matches!(
        unreachable.send_message(Id::new(5), &text).await,
        Err(SendError::Transient(_))
    ));
}
