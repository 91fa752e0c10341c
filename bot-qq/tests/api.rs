//! The OneBot client against the local OneBot implementation over real HTTP: message
//! shapes as the implementation reads them, pacing, and the classes of failure in both
//! failure dialects (NapCat's and go-cqhttp's).

use std::time::Duration;

use stargazer_bot_qq::{ApiError, Message, OneBotClient, QqConfig};
use stargazer_core::config::Section;
use stargazer_testkit::servers::onebot::{
    parse_cq, Dialect, Failure, OneBotOptions, OneBotServer, RateLimits, Role, Segment, Target,
};

const TOKEN: &str = "onebot-token";

async fn server(dialect: Dialect) -> OneBotServer {
    OneBotServer::start(OneBotOptions {
        access_token: Some(TOKEN.into()),
        secret: Some("secret".into()),
        dialect,
    })
    .await
    .unwrap()
}

/// A client that paces so loosely that only the server's limits apply.
fn fast_client(server: &OneBotServer) -> OneBotClient {
    client_with(server, |config| {
        config.global_per_second = 1000.0;
        config.group_interval_ms = 1;
    })
}

fn client_with(server: &OneBotServer, change: impl FnOnce(&mut QqConfig)) -> OneBotClient {
    let mut config = QqConfig {
        api_url: server.url.clone(),
        access_token: TOKEN.into(),
        secret: "secret".into(),
        ..QqConfig::default()
    };
    change(&mut config);
    // `check`, not `validate`: some tests need a client without a token.
    config.check().unwrap();
    OneBotClient::new(&config).unwrap()
}

#[tokio::test]
async fn sends_to_a_group_and_privately_as_array_segments() {
    let server = server(Dialect::NapCat).await;
    let client = fast_client(&server);
    // Text that looks like codes and escapes must reach readers exactly as written.
    let tricky = "[CQ:at,qq=all] &amp; A, B & [C] &#91;";
    let message = Message::new()
        .text(tricky)
        .at_all()
        .text(" live now")
        .image("https://i.ytimg.com/vi/x/maxresdefault.jpg?a=1,2");
    let id = client.send_group_msg(123_456, &message).await.unwrap();
    let private_id = client
        .send_private_msg(10_001, &Message::plain("hi & [bye]"))
        .await
        .unwrap();
    assert_ne!(id, private_id);

    let group = server.sent_to(Target::Group(123_456));
    assert_eq!(group.len(), 1);
    let sent = &group[0];
    assert_eq!(sent.message_id, id);
    assert!(
        sent.raw.is_array(),
        "sent in the array format: {}",
        sent.raw
    );
    assert_eq!(sent.text, format!("{tricky}@全体成员 live now"));
    assert_eq!(
        sent.mentions(),
        vec!["all"],
        "only the real mention mentions"
    );
    assert_eq!(
        sent.images(),
        vec!["https://i.ytimg.com/vi/x/maxresdefault.jpg?a=1,2"]
    );
    let private = server.sent_to(Target::Private(10_001));
    assert_eq!(private[0].text, "hi & [bye]");
    assert_eq!(private[0].segments, vec![Segment::text("hi & [bye]")]);

    // The string format the client encodes reads back the same on the server's parser.
    assert_eq!(parse_cq(&message.to_cq()), sent.segments);

    server.set_member(123_456, 42, "nick", "", Role::Owner);
    let member = client.get_group_member_info(123_456, 42).await.unwrap();
    assert!(member.is_admin());
    assert_eq!(member.role, "owner");
    client.delete_msg(id).await.unwrap();
    assert_eq!(server.deleted(), vec![id]);
    assert!(matches!(
        client.delete_msg(id).await,
        Err(ApiError::Invalid(_))
    ));
}

#[tokio::test]
async fn risk_control_is_classified_as_rate_limited() {
    for dialect in [Dialect::NapCat, Dialect::GoCqhttp] {
        let server = server(dialect).await;
        server.enforce(RateLimits {
            global_per_second: 100,
            per_group: Duration::from_secs(60),
        });
        let client = fast_client(&server);
        let message = Message::plain("x");
        client.send_group_msg(1, &message).await.unwrap();
        let refused = client.send_group_msg(1, &message).await;
        assert!(
            matches!(refused, Err(ApiError::RateLimited { .. })),
            "{dialect:?}: {refused:?}"
        );
        assert_eq!(server.rate_limited(), 1);
        client.send_group_msg(2, &message).await.unwrap();
    }
}

#[tokio::test]
async fn the_client_paces_under_the_servers_limits() {
    let server = server(Dialect::NapCat).await;
    server.enforce(RateLimits {
        global_per_second: 6,
        per_group: Duration::from_millis(250),
    });
    let client = client_with(&server, |config| {
        config.global_per_second = 5.0;
        config.group_interval_ms = 300;
    });
    let message = Message::plain("paced");
    let sends = (0..6).map(|i| client.send_group_msg(1 + i % 2, &message));
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    assert_eq!(server.rate_limited(), 0);
    assert_eq!(server.sent().len(), 6);
}

#[tokio::test]
async fn a_group_the_bot_left_or_is_muted_in_is_gone() {
    for dialect in [Dialect::NapCat, Dialect::GoCqhttp] {
        let server = server(dialect).await;
        let client = fast_client(&server);
        let message = Message::plain("x");
        server.remove_from_group(5);
        let removed = client.send_group_msg(5, &message).await;
        assert!(
            matches!(removed, Err(ApiError::Gone { .. })),
            "{dialect:?}: {removed:?}"
        );
        assert!(matches!(
            client.get_group_member_info(5, 1).await,
            Err(ApiError::Gone { .. })
        ));
        server.fail_next(6, [Failure::NotInGroup]);
        assert!(matches!(
            client.send_group_msg(6, &message).await,
            Err(ApiError::Gone { .. })
        ));
        client.send_group_msg(6, &message).await.unwrap();
    }
    // NapCat says it is muted; go-cqhttp's answer to a muted bot is its risk-control one.
    let napcat = server(Dialect::NapCat).await;
    napcat.set_muted(7, true);
    assert!(matches!(
        fast_client(&napcat)
            .send_group_msg(7, &Message::plain("x"))
            .await,
        Err(ApiError::Gone { .. })
    ));
    let gocq = server(Dialect::GoCqhttp).await;
    gocq.set_muted(7, true);
    assert!(matches!(
        fast_client(&gocq)
            .send_group_msg(7, &Message::plain("x"))
            .await,
        Err(ApiError::RateLimited { .. })
    ));
}

#[tokio::test]
async fn credentials_outages_and_bad_requests_are_classified() {
    let server = server(Dialect::NapCat).await;
    let no_token = client_with(&server, |config| config.access_token = String::new());
    assert_eq!(
        no_token.send_private_msg(1, &Message::plain("x")).await,
        Err(ApiError::Unauthorized { status: 401 })
    );
    let wrong = client_with(&server, |config| config.access_token = "wrong".into());
    assert_eq!(
        wrong.send_private_msg(1, &Message::plain("x")).await,
        Err(ApiError::Unauthorized { status: 403 })
    );
    assert_eq!(server.refused_tokens(), 2);

    let client = fast_client(&server);
    assert!(matches!(
        client.send_private_msg(1, &Message::plain("  ")).await,
        Err(ApiError::Invalid(_))
    ));
    assert!(matches!(
        client.get_group_member_info(1, 404).await,
        Err(ApiError::Invalid(_))
    ));
    server.fail_next(9, [Failure::Outage]);
    assert!(matches!(
        client.send_group_msg(9, &Message::plain("x")).await,
        Err(ApiError::Transient(_))
    ));
    server.set_outage(true);
    assert!(matches!(
        client.delete_msg(1).await,
        Err(ApiError::Transient(_))
    ));

    // A port nobody listens on any more: connections are refused.
    let gone_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let unreachable = OneBotClient::new(&QqConfig {
        api_url: gone_url,
        access_token: TOKEN.into(),
        secret: "s".into(),
        request_timeout_secs: 2,
        ..QqConfig::default()
    })
    .unwrap();
    assert!(matches!(
        unreachable.send_private_msg(1, &Message::plain("x")).await,
        Err(ApiError::Transient(_))
    ));
}
