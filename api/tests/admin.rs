//! `stargazer admin …` against both storage backends, and the credentials it creates
//! working over HTTP.

mod common;

use clap::Parser;
use stargazer_api::admin::{run_admin_with_input, AdminCommand};
use stargazer_api::types::ErrorCode;

use common::{Backend, TestServer};

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(subcommand)]
    command: AdminCommand,
}

async fn admin(
    server: &TestServer,
    args: &[&str],
    stdin: &str,
) -> Result<String, stargazer_api::Error> {
    let cli = Cli::try_parse_from(std::iter::once("admin").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    let mut input = stdin.as_bytes();
    run_admin_with_input(cli.command, server.storage.clone(), &mut input, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

async fn admin_commands(backend: Backend) {
    let server = TestServer::start(backend).await;

    // Credentials: a given password, a generated one printed once, list, remove.
    let out = admin(
        &server,
        &[
            "credential",
            "add",
            "bot",
            "--api",
            "rw",
            "--mq",
            "ro",
            "--queue",
            "bot.telegram",
            "--password-stdin",
            "--iterations",
            "1000",
        ],
        "s3cret\n",
    )
    .await
    .unwrap();
    assert!(
        out.contains("created credential bot (api rw, mq ro; queues bot.telegram)"),
        "{out}"
    );
    assert!(!out.contains("s3cret"));
    let out = admin(
        &server,
        &[
            "credential",
            "add",
            "ops",
            "--admin",
            "rw",
            "--iterations",
            "1000",
        ],
        "",
    )
    .await
    .unwrap();
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("generated password printed")
        .to_owned();
    assert!(password.len() >= 24);
    let dup = admin(
        &server,
        &["credential", "add", "bot", "--iterations", "1000"],
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(dup.code(), ErrorCode::Conflict, "{dup}");
    let empty = admin(
        &server,
        &[
            "credential",
            "add",
            "x",
            "--password-stdin",
            "--iterations",
            "1000",
        ],
        "\n",
    )
    .await
    .unwrap_err();
    assert_eq!(empty.code(), ErrorCode::InvalidInput, "{empty}");
    // Queue suffixes are checked, and owning one needs mq access.
    for args in [
        &["credential", "add", "q1", "--mq", "rw", "--queue", "bot.*"][..],
        &["credential", "add", "q2", "--mq", "rw", "--queue", "a..b"][..],
        &[
            "credential",
            "add",
            "q3",
            "--mq",
            "rw",
            "--queue",
            "a",
            "--queue",
            "a",
        ][..],
        &[
            "credential",
            "add",
            "q4",
            "--api",
            "rw",
            "--queue",
            "bot.telegram",
        ][..],
    ] {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--iterations", "1000"])
            .collect();
        let refused = admin(&server, &args, "").await.unwrap_err();
        assert_eq!(
            refused.code(),
            ErrorCode::InvalidInput,
            "{args:?}: {refused}"
        );
    }
    let list = admin(&server, &["credential", "list"], "").await.unwrap();
    assert_eq!(
        list,
        "bot\tapi rw, mq ro; queues bot.telegram\nops\tadmin rw\n"
    );

    // The credentials work over HTTP.
    let bot = server.client().with_basic("bot", "s3cret");
    bot.get_entities().await.unwrap();
    let ops = server.client().with_basic("ops", &password);

    // Groups and entities.
    let out = admin(
        &server,
        &[
            "group",
            "add",
            "--name",
            "en=Hololive",
            "--name",
            "ja=ホロライブ",
        ],
        "",
    )
    .await
    .unwrap();
    let group = out.trim().strip_prefix("saved group ").unwrap().to_owned();
    assert!(admin(&server, &["group", "list"], "")
        .await
        .unwrap()
        .contains("ja=ホロライブ"));
    let out = admin(
        &server,
        &[
            "entity",
            "add",
            "--name",
            "en=Pekora",
            "--name",
            "ja=ぺこら",
            "--group",
            &group,
            "--youtube",
            "UC1DCedRgGHBdm81E1llLhOQ",
            "--twitter",
            "1133215093246664706",
            "--translate-to",
            "en",
        ],
        "",
    )
    .await
    .unwrap();
    assert!(out.starts_with("created entity "), "{out}");
    assert!(out.contains("youtube UC1DCedRgGHBdm81E1llLhOQ"), "{out}");
    let id: uuid::Uuid = out.split_whitespace().nth(2).unwrap().parse().unwrap();
    // getEntities may serve its cached list for `read_cache_ms`; an entity id not asked
    // for before is read from storage.
    let entity = ops.get_entity(id).await.unwrap();
    assert_eq!((entity.id, entity.names["ja"].as_str()), (id, "ぺこら"));
    assert_eq!(entity.tasks.len(), 2);
    assert_eq!(entity.group.map(|g| g.to_string()), Some(group));

    let taken = admin(
        &server,
        &[
            "entity",
            "add",
            "--name",
            "en=Copy",
            "--youtube",
            "UC1DCedRgGHBdm81E1llLhOQ",
        ],
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(taken.code(), ErrorCode::Conflict, "{taken}");
    let bad = admin(
        &server,
        &["entity", "add", "--name", "en=Bad", "--twitter", "@someone"],
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), ErrorCode::InvalidInput, "{bad}");
    let bad = admin(&server, &["entity", "add", "--name", "Pekora"], "")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), ErrorCode::InvalidInput, "{bad}");

    let list = admin(&server, &["entity", "list"], "").await.unwrap();
    assert!(
        list.contains("youtube:UC1DCedRgGHBdm81E1llLhOQ twitter:1133215093246664706"),
        "{list}"
    );
    admin(&server, &["entity", "remove", &id.to_string()], "")
        .await
        .unwrap();
    assert_eq!(
        admin(&server, &["entity", "list"], "").await.unwrap(),
        "no entities\n"
    );
    let missing = admin(&server, &["entity", "remove", &id.to_string()], "")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), ErrorCode::NotFound, "{missing}");

    admin(&server, &["credential", "remove", "ops"], "")
        .await
        .unwrap();
    let missing = admin(&server, &["credential", "remove", "ops"], "")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), ErrorCode::NotFound);
    assert_eq!(
        admin(&server, &["credential", "list"], "").await.unwrap(),
        "bot\tapi rw, mq ro; queues bot.telegram\n"
    );
    server.stop().await;
}

/// The entity id `entity add` printed.
fn created_entity(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("created entity "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("created entity line")
        .to_owned()
}

/// Who the bot is told wants `kind` about `entity` on Telegram (the call delivery makes).
async fn telegram_subscribers(
    bot: &stargazer_api::client::ApiClient,
    entity: &str,
    kind: &str,
) -> Vec<String> {
    let request = stargazer_api::types::GetSubscribers {
        entity: entity.parse().unwrap(),
        kind: kind.to_owned(),
        im: "telegram".to_owned(),
    };
    let subscribers: Vec<stargazer_api::types::Subscriber> =
        bot.call("getSubscribers", &request).await.unwrap();
    subscribers.into_iter().map(|s| s.chat_id).collect()
}

async fn entity_channels(backend: Backend) {
    // Without the read cache: the command writes storage directly, which a running api
    // otherwise shows only once its cached subscriber lists expire (`read_cache_ms`).
    let mut config = common::test_config();
    config.read_cache_ms = 0;
    let server = TestServer::with_config(backend.connect().await, config).await;
    let bot = server.bot().await;
    let pekora = created_entity(
        &admin(
            &server,
            &[
                "entity",
                "add",
                "--name",
                "en=Pekora",
                "--name",
                "ja=ぺこら",
            ],
            "",
        )
        .await
        .unwrap(),
    );
    let suisei = created_entity(
        &admin(&server, &["entity", "add", "--name", "en=Suisei"], "")
            .await
            .unwrap(),
    );
    let channel = "-1001234567890";

    // One channel posting two entities: registered once, in the first entity's language.
    let out = admin(
        &server,
        &[
            "channel",
            "bind",
            "--chat",
            channel,
            "--entity",
            &pekora,
            "--entity",
            &suisei,
            "--language",
            "ja",
        ],
        "",
    )
    .await
    .unwrap();
    assert!(
        out.contains("registered telegram channel -1001234567890"),
        "{out}"
    );
    assert!(out.contains(&format!("bound {pekora} (ぺこら)")), "{out}");
    assert_eq!(
        telegram_subscribers(&bot, &pekora, "youtube.live").await,
        [channel]
    );
    assert_eq!(
        telegram_subscribers(&bot, &suisei, "twitter.tweet").await,
        [channel]
    );

    // Binding again narrows the kinds without registering the channel twice.
    let out = admin(
        &server,
        &[
            "channel",
            "bind",
            "--chat",
            channel,
            "--entity",
            &suisei,
            "--kind",
            "youtube.live",
        ],
        "",
    )
    .await
    .unwrap();
    assert!(!out.contains("registered"), "{out}");
    assert!(telegram_subscribers(&bot, &suisei, "twitter.tweet")
        .await
        .is_empty());
    let shown = admin(&server, &["channel", "show", "--chat", channel], "")
        .await
        .unwrap();
    assert!(shown.contains("language ja"), "{shown}");
    assert!(
        shown.contains(&format!("{pekora}\tぺこら\tevery kind")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{suisei}\tSuisei\tyoutube.live")),
        "{shown}"
    );

    // Precise refusals, nothing written.
    let unknown = uuid::Uuid::new_v4().to_string();
    let err = admin(
        &server,
        &["channel", "bind", "--chat", "-1009", "--entity", &unknown],
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    let err = admin(&server, &["channel", "show", "--chat", "-1009"], "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    let err = admin(
        &server,
        &[
            "channel",
            "bind",
            "--im",
            "Tele gram",
            "--chat",
            channel,
            "--entity",
            &pekora,
        ],
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");

    // Unbinding one entity, then the channel itself.
    let out = admin(
        &server,
        &["channel", "unbind", "--chat", channel, "--entity", &pekora],
        "",
    )
    .await
    .unwrap();
    assert!(out.contains(&format!("unbound {pekora}")), "{out}");
    assert!(telegram_subscribers(&bot, &pekora, "youtube.live")
        .await
        .is_empty());
    admin(&server, &["channel", "unbind", "--chat", channel], "")
        .await
        .unwrap();
    assert!(telegram_subscribers(&bot, &suisei, "youtube.live")
        .await
        .is_empty());
    let err = admin(&server, &["channel", "show", "--chat", channel], "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    server.stop().await;
}

both_backends!(admin_commands, entity_channels);
