//! What the admin CLI needs from the services before it touches storage: Twitch logins
//! given to `stargazer admin entity add --twitch` are turned into the numeric user ids
//! tasks are keyed by, through Helix with the `[twitch]` credentials.

use stargazer_api::admin::{AdminCommand, EntityCommand};
use stargazer_worker_twitch::{resolve_logins, ResolveError};

use crate::settings::Settings;

/// `command` with every `--twitch` value of `entity add` resolved to a user id (numeric
/// values pass through without a call); other commands unchanged.
pub async fn resolve_twitch(
    settings: &Settings,
    command: AdminCommand,
) -> Result<AdminCommand, ResolveError> {
    match command {
        AdminCommand::Entity(EntityCommand::Add {
            names,
            default_language,
            group,
            translate_to,
            youtube,
            twitter,
            twitch,
            bilibili,
            id,
        }) => {
            let twitch = resolve_logins(&settings.twitch, &twitch).await?;
            Ok(AdminCommand::Entity(EntityCommand::Add {
                names,
                default_language,
                group,
                translate_to,
                youtube,
                twitter,
                twitch,
                bilibili,
                id,
            }))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stargazer_core::config::ConfigSource;
    use stargazer_testkit::servers::twitch::TwitchServer;

    #[tokio::test]
    async fn entity_add_gets_ids_for_logins() {
        let twitch = TwitchServer::start("cid", "csecret").await.unwrap();
        let id = twitch.add_user("Pekora");
        let mut settings =
            Settings::from_source(ConfigSource::load_with_env(None, Vec::new()).unwrap()).unwrap();
        settings.twitch.client_id = "cid".into();
        settings.twitch.client_secret = "csecret".into();
        settings.twitch.helix_base = twitch.helix_base.clone();
        settings.twitch.id_base = twitch.id_base.clone();
        let command = AdminCommand::Entity(EntityCommand::Add {
            names: vec!["en=Pekora".into()],
            default_language: None,
            group: None,
            translate_to: vec![],
            youtube: vec![],
            twitter: vec![],
            twitch: vec!["pekora".into(), "42".into()],
            bilibili: vec![],
            id: None,
        });
        let AdminCommand::Entity(EntityCommand::Add { twitch: ids, .. }) =
            resolve_twitch(&settings, command).await.unwrap()
        else {
            panic!("the command changed kind");
        };
        assert_eq!(ids, vec![id, "42".to_owned()]);
    }
}
