//! `stargazer`: the one binary. It parses arguments, loads configuration, initialises
//! logging, connects the backends and hands them to a service's `run`; nothing else.
//!
//! - `stargazer <role>` runs one service against the production backends configured in
//!   the TOML file / environment (`amqp_url`, `mongo_url`).
//! - `stargazer standalone` runs every service in one process (embedded backends by
//!   default).
//! - `stargazer admin …` manages credentials and entities in the configured storage.
//!
//! Exit codes: 0 after a clean shutdown, 2 for a configuration error (one line naming the
//! key), 1 for anything else.

mod roles;
mod settings;
mod shutdown;
mod standalone;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stargazer_api::admin::AdminCommand;
use stargazer_core::config::ConfigError;

/// Stargazer: tracks VTubers on YouTube and X and notifies chat users.
#[derive(Debug, Parser)]
#[command(name = "stargazer", version, about)]
struct Cli {
    /// TOML configuration file (see stargazer.example.toml); `STARGAZER_…` variables
    /// override it.
    #[arg(long, short, global = true, env = "STARGAZER_CONFIG")]
    config: Option<PathBuf>,

    /// What to run.
    #[command(subcommand)]
    role: Role,
}

/// The roles one image can play.
#[derive(Debug, Subcommand)]
enum Role {
    /// RPC API, sessions, RabbitMQ HTTP auth backend, OpenAPI, frontend.
    Api,
    /// Assigns tasks to workers over WebSocket by consistent hashing.
    Coordinator,
    /// Watches YouTube channels (WebSub + Data API) and publishes events.
    WorkerYoutube,
    /// Watches X accounts (API v2) and publishes events.
    WorkerTwitter,
    /// Holds messages tagged `delay` until their time.
    MiddlewareDelay,
    /// Translates texts of messages tagged `translate` (DeepL).
    MiddlewareTranslate,
    /// Holds `youtube.live` until the stream has really started.
    MiddlewareLiveCheck,
    /// Telegram bot: chat commands and delivery of ready events.
    BotTelegram,
    /// Every service in one process; embedded backends unless told otherwise.
    Standalone(standalone::StandaloneArgs),
    /// Manage credentials and entities in the configured storage.
    Admin {
        /// The admin action.
        #[command(subcommand)]
        command: AdminCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match settings::Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => return config_failure(&err),
    };
    stargazer_core::telemetry::init_tracing(settings.common.log_format, &settings.common.log_level);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("stargazer: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.role {
            Role::Admin { command } => roles::admin(&settings, command).await,
            Role::Standalone(args) => standalone::run(settings, args, shutdown::on_signal()).await,
            role => roles::run_role(&settings, role, shutdown::on_signal()).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<ConfigError>() {
            Some(config_err) => config_failure(config_err),
            None => {
                tracing::error!("{err:#}");
                eprintln!("stargazer: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("stargazer: {err}");
    ExitCode::from(2)
}
