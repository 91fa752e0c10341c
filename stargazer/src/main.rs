//! `stargazer`: the one binary. It parses arguments, loads configuration, initialises
//! logging and hands over to `stargazer-platform`, which wires the services; nothing else.
//!
//! - `stargazer <role>` runs one service against the production backends configured in
//!   the TOML file / environment (`amqp_url`, `mongo_url`).
//! - `stargazer standalone` runs every service in one process (embedded backends by
//!   default).
//! - `stargazer admin …` manages credentials and entities in the configured storage;
//!   `stargazer admin broker setup` declares the broker topology.
//!
//! Exit codes: 0 after a clean shutdown, 2 for a configuration error (one line naming the
//! key), 1 for anything else.

mod shutdown;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stargazer_api::admin::AdminCommand;
use stargazer_core::config::ConfigError;
use stargazer_platform::roles::{run_role, Role};
use stargazer_platform::settings::Settings;
use stargazer_platform::standalone::Standalone;

/// mimalloc instead of glibc malloc: the services allocate on every runtime thread, and
/// glibc's arena locking and consolidation took about a quarter of the in-process
/// pipeline's CPU time (mimalloc more than doubles its throughput). Built with `no_thp`,
/// so mimalloc does not ask for transparent huge pages, which would add ~17 MB of
/// resident memory to an idle service.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    command: Command,
}

/// The roles one image can play, plus standalone and the admin CLI.
#[derive(Debug, Subcommand)]
enum Command {
    /// One service.
    #[command(flatten)]
    Role(Role),
    /// Every service in one process; embedded backends unless told otherwise.
    Standalone(StandaloneArgs),
    /// Manage credentials and entities in the configured storage, or the broker.
    Admin {
        /// The admin action.
        #[command(subcommand)]
        command: Admin,
    },
}

/// `stargazer admin …`: the storage actions, plus the broker.
#[derive(Debug, Subcommand)]
enum Admin {
    /// Manage the RabbitMQ topology.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Storage actions.
    #[command(flatten)]
    Storage(AdminCommand),
}

/// `stargazer admin broker …`.
#[derive(Debug, Subcommand)]
enum BrokerCommand {
    /// Declare the exchanges, the dead-letter queue and every configured consumer queue
    /// (docs/ARCHITECTURE.md §4); run it once with a topology credential before the
    /// services start. Idempotent.
    Setup {
        /// The broker, with a credential allowed to configure it (default: `amqp_url`).
        #[arg(long, value_name = "URL")]
        amqp_url: Option<String>,
    },
}

/// Options of `stargazer standalone`.
#[derive(Debug, Clone, clap::Args)]
struct StandaloneArgs {
    /// Use this RabbitMQ instead of the in-process bus (overrides `amqp_url`).
    #[arg(long, value_name = "URL")]
    amqp: Option<String>,
    /// Use this MongoDB instead of SQLite (overrides `mongo_url`).
    #[arg(long, value_name = "URL")]
    mongo: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
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
        match cli.command {
            Command::Role(role) => Ok(run_role(&settings, role, shutdown::on_signal()).await?),
            Command::Admin {
                command: Admin::Storage(command),
            } => admin(&settings, command).await,
            Command::Admin {
                command: Admin::Broker(BrokerCommand::Setup { amqp_url }),
            } => broker_setup(&settings, amqp_url.as_deref()).await,
            Command::Standalone(args) => standalone(settings, args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match config_error(&err) {
            Some(config_err) => config_failure(config_err),
            None => {
                tracing::error!("{err:#}");
                eprintln!("stargazer: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `stargazer standalone`: every service in one process until SIGINT/SIGTERM.
async fn standalone(mut settings: Settings, args: StandaloneArgs) -> anyhow::Result<()> {
    if let Some(url) = args.amqp {
        settings.common.amqp_url = Some(url);
    }
    if let Some(url) = args.mongo {
        settings.common.mongo_url = Some(url);
    }
    // The flags bypass the loader's checks: a malformed URL given here is a configuration
    // error as well (exit 2, password masked), not a backend to wait for.
    settings.common.validate()?;
    let shutdown = shutdown::on_signal();
    let running = Standalone::start(settings, &shutdown).await?;
    println!("{}", running.summary_text());
    Ok(running.run(&shutdown).await?)
}

/// `stargazer admin …` against the configured storage.
async fn admin(settings: &Settings, command: AdminCommand) -> anyhow::Result<()> {
    let storage = stargazer_core::storage::connect(&settings.common.storage_url())
        .await
        .context("cannot open storage")?;
    // Logins typed for --twitch become the user ids tasks are keyed by.
    let command = stargazer_platform::admin::resolve_twitch(settings, command)
        .await
        .context("cannot resolve the Twitch logins")?;
    let mut out = std::io::stdout();
    stargazer_api::admin::run_admin(command, storage, &mut out).await?;
    Ok(())
}

/// `stargazer admin broker setup`: one line per part of the topology; fails if any part
/// was refused.
async fn broker_setup(settings: &Settings, url: Option<&str>) -> anyhow::Result<()> {
    let steps = stargazer_platform::broker::setup(settings, url).await?;
    let mut refused = 0;
    for step in &steps {
        match &step.outcome {
            Ok(()) => println!("ok      {}", step.entity),
            Err(problem) => {
                refused += 1;
                println!("FAILED  {}: {problem}", step.entity);
            }
        }
    }
    if refused > 0 {
        anyhow::bail!("{refused} part(s) of the broker topology could not be declared");
    }
    Ok(())
}

/// The configuration error behind `err`, whether raised by loading or by the platform.
fn config_error(err: &anyhow::Error) -> Option<&ConfigError> {
    err.downcast_ref::<ConfigError>().or_else(|| {
        err.downcast_ref::<stargazer_platform::Error>()
            .and_then(stargazer_platform::Error::as_config)
    })
}

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("stargazer: {err}");
    ExitCode::from(2)
}
