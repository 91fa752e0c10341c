//! What the QQ delivery and command tests share: the platform for the bot (the harness of
//! `stargazer-delivery`), the local OneBot v11 implementation of `stargazer-testkit`, and
//! the bot's configuration against both.

use stargazer_bot_qq::QqConfig;
use stargazer_delivery::testing::{Harness, BOT_PASSWORD};
use stargazer_testkit::servers::onebot::{OneBotOptions, OneBotServer};
use uuid::Uuid;

/// The bot's api user.
const BOT_USER: &str = "bot-qq";
/// The token the bot presents to the OneBot implementation.
const ACCESS_TOKEN: &str = "onebot-token";
/// The secret the OneBot implementation signs its reports to the bot with.
pub(crate) const SECRET: &str = "event-secret";

/// The api, storage and broker queue of one test.
pub(crate) async fn harness() -> Harness {
    Harness::start(stargazer_bot_qq::IM, BOT_USER).await
}

/// A local OneBot implementation expecting the bot's token; with `signs` it signs its
/// reports with [`SECRET`].
pub(crate) async fn onebot(signs: bool) -> OneBotServer {
    OneBotServer::start(OneBotOptions {
        access_token: Some(ACCESS_TOKEN.into()),
        secret: signs.then(|| SECRET.into()),
        ..OneBotOptions::default()
    })
    .await
    .unwrap()
}

/// The bot's configuration against `harness` and `onebot`, delivering the events of
/// `entities` only.
pub(crate) fn config(harness: &Harness, onebot: &OneBotServer, entities: Vec<Uuid>) -> QqConfig {
    QqConfig {
        api_url: onebot.url.clone(),
        access_token: ACCESS_TOKEN.into(),
        secret: SECRET.into(),
        stargazer_api_url: harness.api_url.clone(),
        stargazer_api_username: harness.username.clone(),
        stargazer_api_password: BOT_PASSWORD.into(),
        queue: harness.queue.name.clone(),
        claim_lease_seconds: 3,
        only_entities: entities,
        ..QqConfig::default()
    }
}
