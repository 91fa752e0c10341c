//! `stargazer standalone`: every service in one process.
//!
//! By default on embedded backends (SQLite file + in-process bus), so a newcomer needs no
//! servers; `--amqp`/`--mongo` run the same set on the production backends. Services whose
//! external account is not configured (Data API key, X bearer token, Telegram token) are
//! reported as disabled in the start-up summary instead of failing the whole process;
//! without a DeepL key the translate stage passes events on untranslated (with
//! `x-translate-error`) so they still reach the chats. Internal service accounts (workers → coordinator, bot → api) are created fresh
//! at every start with random passwords that never leave the process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stargazer_core::auth;
use stargazer_core::model::{Access, Credential, Permissions, TaskKind};
use stargazer_core::storage::Storage;
use stargazer_core::CancellationToken;
use tokio::task::JoinSet;

use crate::roles::{bind, live_check_config, open_bus, open_storage, parse_addr, worker_runtime};
use crate::settings::{Settings, WorkerSection};

/// Options of `stargazer standalone`.
#[derive(Debug, Clone, clap::Args)]
pub struct StandaloneArgs {
    /// Use this RabbitMQ instead of the in-process bus (overrides `amqp_url`).
    #[arg(long, value_name = "URL")]
    pub amqp: Option<String>,
    /// Use this MongoDB instead of SQLite (overrides `mongo_url`).
    #[arg(long, value_name = "URL")]
    pub mongo: Option<String>,
}

/// How long services get to finish in-flight work after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// PBKDF2 rounds for the internal accounts' random passwords.
const INTERNAL_ACCOUNT_ITERATIONS: u32 = 1_000;

/// One line of the start-up summary.
struct Line {
    service: &'static str,
    status: String,
}

/// Runs every service until `shutdown`, or until one of them fails.
pub async fn run(
    mut settings: Settings,
    args: StandaloneArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(url) = args.amqp {
        settings.common.amqp_url = Some(url);
    }
    if let Some(url) = args.mongo {
        settings.common.mongo_url = Some(url);
    }
    settings.common.validate()?;
    let storage_url = settings.common.storage_url();
    let bus_url = settings.common.bus_url();
    let storage = open_storage(&storage_url, &shutdown).await?;
    let bus = open_bus(&bus_url, &shutdown).await?;

    let api_listener = bind(settings.api.listen, "api.listen").await?;
    let api_addr = api_listener.local_addr()?;
    let coordinator_addr = parse_addr(&settings.coordinator.listen, "coordinator.listen")?;
    let coordinator_listener = bind(coordinator_addr, "coordinator.listen").await?;
    let coordinator_addr = coordinator_listener.local_addr()?;

    // These passwords are 192 random bits that never leave the process: key stretching
    // adds nothing against guessing them, so a low round count keeps start-up quick.
    let iterations = INTERNAL_ACCOUNT_ITERATIONS;
    let worker_password = internal_account(
        &storage,
        "standalone-worker",
        Permissions {
            coordinator: Some(Access::Ro),
            mq: Some(Access::Rw),
            ..Permissions::default()
        },
        iterations,
    )
    .await?;
    let bot_password = internal_account(
        &storage,
        "standalone-bot",
        Permissions {
            api: Some(Access::Rw),
            mq: Some(Access::Ro),
            ..Permissions::default()
        },
        iterations,
    )
    .await?;
    let worker = WorkerSection {
        coordinator_url: format!("ws://{}/v1/worker", connect_addr(coordinator_addr)),
        username: "standalone-worker".to_owned(),
        password: worker_password,
        id: format!("standalone-{}", std::process::id()),
    };

    let services = shutdown.child_token();
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let mut summary = vec![
        Line {
            service: "storage",
            status: redact(&storage_url),
        },
        Line {
            service: "bus",
            status: redact(&bus_url),
        },
    ];

    {
        let (config, storage, token) = (settings.api.clone(), storage.clone(), services.clone());
        tasks.spawn(async move {
            let result = stargazer_api::run(config, api_listener, storage, token).await;
            ("api", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "api",
            status: format!("http://{api_addr} (RPC /v1/…, /openapi.json, /healthz, /metrics)"),
        });
    }
    {
        let (config, storage, token) = (
            settings.coordinator.clone(),
            storage.clone(),
            services.clone(),
        );
        tasks.spawn(async move {
            let result =
                stargazer_coordinator::run(config, coordinator_listener, storage, token).await;
            ("coordinator", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "coordinator",
            status: format!("ws://{coordinator_addr}/v1/worker"),
        });
    }
    {
        let (config, storage, bus, token) = (
            settings.delay.clone(),
            storage.clone(),
            bus.clone(),
            services.clone(),
        );
        tasks.spawn(async move {
            let result = stargazer_middleware_delay::run(config, storage, bus, token).await;
            ("middleware-delay", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "middleware-delay",
            status: "running".to_owned(),
        });
    }
    {
        let (config, storage, bus, token) = (
            settings.translate.clone(),
            storage.clone(),
            bus.clone(),
            services.clone(),
        );
        let status = match config.validate() {
            Ok(()) => format!("DeepL at {}", config.deepl_base_url),
            Err(why) => format!("pass-through, events go on untranslated: {why}"),
        };
        tasks.spawn(async move {
            let registry = prometheus::Registry::new();
            let result = match config.validate() {
                Ok(()) => stargazer_middleware_translate::run(config, storage, bus, token).await,
                Err(why) => {
                    let reason = format!("translation disabled: {why}");
                    stargazer_middleware_translate::run_untranslated(
                        config, bus, &registry, &reason, token,
                    )
                    .await
                }
            };
            ("middleware-translate", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "middleware-translate",
            status,
        });
    }
    let live_check = live_check_config(&settings);
    if let Err(why) = live_check.validate() {
        summary.push(disabled("middleware-live-check", why));
    } else {
        let (storage, bus, token) = (storage.clone(), bus.clone(), services.clone());
        tasks.spawn(async move {
            let result =
                stargazer_middleware_live_check::run(live_check, storage, bus, token).await;
            ("middleware-live-check", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "middleware-live-check",
            status: "running".to_owned(),
        });
    }
    if settings.youtube.api_key.trim().is_empty() {
        summary.push(disabled(
            "worker-youtube",
            "youtube.api_key is not set (STARGAZER_YOUTUBE_API_KEY)",
        ));
    } else {
        let listener = bind(settings.youtube.listen, "youtube.listen").await?;
        let callback_addr = listener.local_addr()?;
        let runtime = standalone_worker(&worker, TaskKind::Youtube);
        let (config, storage, bus, token) = (
            settings.youtube.clone(),
            storage.clone(),
            bus.clone(),
            services.clone(),
        );
        let websub = if config.websub_enabled() {
            format!(
                "WebSub callbacks on {callback_addr} as {}",
                config.public_url
            )
        } else {
            format!("feed polling only (youtube.public_url unset); callbacks on {callback_addr}")
        };
        tasks.spawn(async move {
            let result =
                stargazer_worker_youtube::run(config, runtime, listener, storage, bus, token).await;
            ("worker-youtube", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "worker-youtube",
            status: websub,
        });
    }
    if settings.twitter.bearer_token.trim().is_empty() {
        summary.push(disabled(
            "worker-twitter",
            "twitter.bearer_token is not set (STARGAZER_TWITTER_BEARER_TOKEN)",
        ));
    } else {
        let runtime = standalone_worker(&worker, TaskKind::Twitter);
        let (config, storage, bus, token) = (
            settings.twitter.clone(),
            storage.clone(),
            bus.clone(),
            services.clone(),
        );
        tasks.spawn(async move {
            let result = stargazer_worker_twitter::run(config, runtime, storage, bus, token).await;
            ("worker-twitter", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "worker-twitter",
            status: format!("X API at {}", settings.twitter.api_base),
        });
    }
    let mut telegram = settings.telegram.clone();
    telegram.stargazer_api_url = format!("http://{}", connect_addr(api_addr));
    telegram.stargazer_api_username = "standalone-bot".to_owned();
    telegram.stargazer_api_password = bot_password;
    if let Err(why) = telegram.validate() {
        summary.push(disabled("bot-telegram", why));
    } else {
        let (storage, bus, token) = (storage.clone(), bus.clone(), services.clone());
        tasks.spawn(async move {
            let result = stargazer_bot_telegram::run(telegram, storage, bus, token).await;
            ("bot-telegram", result.map_err(Into::into))
        });
        summary.push(Line {
            service: "bot-telegram",
            status: format!("Bot API at {}", settings.telegram.api_url),
        });
    }

    print_summary(&summary);

    // Run until asked to stop or until a service fails; then stop the others.
    let mut failure = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        Some(joined) = tasks.join_next() => {
            failure = Some(describe_exit(joined));
        }
    }
    services.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = describe_exit(joined) {
                tracing::error!("{err:#}");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "some services did not stop in time");
        tasks.abort_all();
    }
    bus.close().await;
    match failure {
        Some(result) => result,
        None => {
            tracing::info!("standalone stopped cleanly");
            Ok(())
        }
    }
}

fn describe_exit(
    joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match joined {
        Ok((service, Ok(()))) => {
            tracing::info!(service, "service stopped");
            Ok(())
        }
        Ok((service, Err(err))) => Err(err.context(format!("{service} failed"))),
        Err(err) => Err(anyhow::anyhow!("a service panicked: {err}")),
    }
}

/// Replaces an internal account with a fresh random password and returns the password.
async fn internal_account(
    storage: &Arc<dyn Storage>,
    username: &str,
    permissions: Permissions,
    iterations: u32,
) -> anyhow::Result<String> {
    let password = auth::new_password();
    let to_hash = password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&to_hash, iterations))
        .await
        .context("hashing task failed")??;
    storage.delete_credential(username).await?;
    storage
        .insert_credential(&Credential {
            username: username.to_owned(),
            hash,
            permissions,
        })
        .await
        .with_context(|| format!("cannot create internal account {username}"))?;
    Ok(password)
}

/// The runtime settings of the in-process worker of `kind`. Each kind gets its own id: the
/// coordinator treats one id announcing two kinds as a worker that changed kind.
fn standalone_worker(
    worker: &WorkerSection,
    kind: TaskKind,
) -> stargazer_core::worker_runtime::WorkerRuntimeConfig {
    let mut runtime = worker_runtime(worker, kind);
    runtime.worker_id = format!("{}-{kind}", worker.id);
    runtime
}

fn disabled(service: &'static str, why: impl std::fmt::Display) -> Line {
    Line {
        service,
        status: format!("disabled: {why}"),
    }
}

/// The address to dial for a listener bound to `addr` (a wildcard bind is dialled on
/// loopback).
fn connect_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}

/// Hides the password of a URL for the summary.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn print_summary(lines: &[Line]) {
    let width = lines
        .iter()
        .map(|line| line.service.len())
        .max()
        .unwrap_or(0);
    println!("stargazer standalone (Ctrl-C to stop):");
    for line in lines {
        println!("  {:width$}  {}", line.service, line.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("amqp://u:secret@host:5672/%2f"),
            "amqp://u:***@host:5672/%2f"
        );
        assert_eq!(redact("mongodb://host/db"), "mongodb://host/db");
        assert_eq!(redact("sqlite://stargazer.db"), "sqlite://stargazer.db");
    }

    #[test]
    fn wildcard_binds_are_dialled_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(connect_addr(addr).to_string(), "127.0.0.1:8080");
        let addr: SocketAddr = "10.0.0.2:1".parse().unwrap();
        assert_eq!(connect_addr(addr), addr);
    }
}
