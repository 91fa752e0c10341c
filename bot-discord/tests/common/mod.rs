//! What the Discord delivery and command tests share: the platform for the bot (the
//! harness of `stargazer-delivery`), the local Discord of `stargazer-testkit`, and the
//! bot's configuration against both.

use stargazer_bot_discord::DiscordConfig;
use stargazer_delivery::testing::{Harness, BOT_PASSWORD};
use stargazer_testkit::servers::discord::DiscordServer;
use uuid::Uuid;

/// The bot's api user.
const BOT_USER: &str = "bot-discord";

/// The api, storage and broker queue of one test.
pub(crate) async fn harness() -> Harness {
    Harness::start(stargazer_bot_discord::IM, BOT_USER).await
}

/// A local Discord with the bot's token.
pub(crate) async fn discord() -> DiscordServer {
    DiscordServer::start("discord-token").await.unwrap()
}

/// The bot's configuration against `harness` and `discord`, delivering the events of
/// `entities` only.
pub(crate) fn config(
    harness: &Harness,
    discord: &DiscordServer,
    entities: Vec<Uuid>,
) -> DiscordConfig {
    DiscordConfig {
        api_url: discord.url.clone(),
        token: discord.token.clone(),
        stargazer_api_url: harness.api_url.clone(),
        stargazer_api_username: harness.username.clone(),
        stargazer_api_password: BOT_PASSWORD.into(),
        queue: harness.queue.name.clone(),
        claim_lease_seconds: 3,
        only_entities: entities,
        ..DiscordConfig::default()
    }
}
