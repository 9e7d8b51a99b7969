//! `maas`: the platform's admin command line. It loads the same settings as the servers and
//! calls the same application services as the HTTP API; it holds no SQL of its own.

mod apps;
mod compute;
mod identity;
mod knowledge;
mod tasks;
mod tls;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use maas_migrations::{Migrator, MigratorTrait};
use maas_platform::{AppEnvironment, Platform, Role, Settings};
use maas_shared::jobs::{DiagnosticPing, JobProducer};
use sea_orm_migration::MigrationStatus;

/// Admin command line of the MaaS platform.
///
/// Settings come from `config/` and `MAAS__SECTION__KEY` environment variables (`DATABASE_URL` and
/// `REDIS_URL` are accepted too), exactly as for `maas-api` and `maas-worker`.
#[derive(Debug, Parser)]
#[command(name = "maas", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, roll back or inspect database migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check the running platform.
    #[command(subcommand)]
    Diagnostics(DiagnosticsCommand),
    /// Create the bootstrap admin if it does not exist (idempotent). Username from
    /// `MAAS_ADMIN_USERNAME` (default `admin`), password from `MAAS_ADMIN_PASSWORD`; without one a
    /// password is generated and printed once.
    Seed {
        /// Admin login name.
        #[arg(long, env = "MAAS_ADMIN_USERNAME", default_value = "admin")]
        username: String,
        /// Admin password (prefer the environment variable over the flag).
        #[arg(long, env = "MAAS_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Manage users.
    #[command(subcommand)]
    User(identity::UserCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(identity::KeyCommand),
    /// Manage limits and quotas.
    #[command(subcommand)]
    Quota(identity::QuotaCommand),
    /// Accelerator brands.
    #[command(subcommand)]
    Brand(compute::BrandCommand),
    /// The model registry.
    #[command(subcommand)]
    Model(compute::ModelCommand),
    /// GPU servers: registration, join tokens, SSH access and checks.
    #[command(subcommand)]
    Server(compute::ServerCommand),
    /// Model deployments on the servers.
    #[command(subcommand)]
    Deploy(compute::DeployCommand),
    /// Remote tasks on the servers.
    #[command(subcommand)]
    Task(tasks::TaskCommand),
    /// Knowledge bases.
    #[command(subcommand)]
    Kb(knowledge::KbCommand),
    /// Apps: a model, a prompt and knowledge published as an endpoint.
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Certificates for `maas-api`'s HTTPS.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Apply pending migrations (all, or the next N).
    Up {
        /// Apply at most this many.
        #[arg(long)]
        steps: Option<u32>,
    },
    /// Roll back the last N applied migrations (default 1).
    Down {
        /// How many to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List every migration and whether it is applied.
    Status,
    /// Drop every table and apply all migrations again. Destroys all data.
    Fresh {
        /// Required in production.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective settings as JSON, with every secret redacted.
    Show,
}

#[derive(Debug, Subcommand)]
enum DiagnosticsCommand {
    /// Enqueue a ping job and wait until a maas-worker answers it.
    PingWorker {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Needs no settings and no database.
    if let Command::Tls(command) = cli.command {
        return tls::run(command);
    }
    let settings = Settings::load()?;
    if let Command::Config(ConfigCommand::Show) = cli.command {
        println!("{}", settings.redacted()?);
        return Ok(());
    }
    let platform = Platform::connect(settings, Role::Command).await?;
    let result = match cli.command {
        Command::Config(ConfigCommand::Show) | Command::Tls(_) => Ok(()),
        Command::Migrate(command) => migrate(&platform, command).await,
        Command::Diagnostics(DiagnosticsCommand::PingWorker { timeout }) => {
            ping_worker(&platform, Duration::from_secs(timeout)).await
        }
        Command::Seed { username, password } => {
            identity::seed(&platform, &username, password).await
        }
        Command::User(command) => identity::user(&platform, command).await,
        Command::Key(command) => identity::key(&platform, command).await,
        Command::Quota(command) => identity::quota(&platform, command).await,
        Command::Brand(command) => compute::brand(&platform, command).await,
        Command::Model(command) => compute::model(&platform, command).await,
        Command::Server(command) => compute::server(&platform, command).await,
        Command::Deploy(command) => compute::deploy(&platform, command).await,
        Command::Task(command) => tasks::task(&platform, command).await,
        Command::Kb(command) => knowledge::kb(&platform, command).await,
        Command::App(command) => apps::app(&platform, command).await,
    };
    // What the command wrote in the background (key use times, ledger entries) is flushed.
    let report = platform.shutdown(Duration::from_secs(10)).await;
    if !report.clean {
        eprintln!("warning: background writes still running at exit: {report:?}");
    }
    result
}

async fn migrate(platform: &Platform, command: MigrateCommand) -> anyhow::Result<()> {
    let db = platform.db();
    let settings = platform.settings();
    match command {
        MigrateCommand::Up { steps } => {
            let pending = Migrator::get_pending_migrations(db).await?.len();
            Migrator::up(db, steps)
                .await
                .context("applying migrations")?;
            let applied = steps.map_or(pending, |s| pending.min(s as usize));
            println!("applied {applied} migration(s)");
        }
        MigrateCommand::Down { steps } => {
            Migrator::down(db, Some(steps))
                .await
                .context("rolling back migrations")?;
            println!("rolled back up to {steps} migration(s)");
        }
        MigrateCommand::Status => {
            for migration in Migrator::get_migration_with_status(db).await? {
                let state = match migration.status() {
                    MigrationStatus::Applied => "applied",
                    MigrationStatus::Pending => "pending",
                };
                println!("{state:8} {}", migration.name());
            }
        }
        MigrateCommand::Fresh { force } => {
            if settings.environment == AppEnvironment::Production && !force {
                anyhow::bail!(
                    "`migrate fresh` destroys all data; pass --force to run it in production"
                );
            }
            Migrator::fresh(db)
                .await
                .context("re-creating the schema")?;
            println!("schema dropped and re-created");
        }
    }
    Ok(())
}

async fn ping_worker(platform: &Platform, timeout: Duration) -> anyhow::Result<()> {
    let keyspace = platform.keyspace();
    let conn = platform.multiplexed().get().await?;
    let redis = platform.redis();
    let ping = DiagnosticPing {
        id: uuid::Uuid::now_v7(),
        delay_ms: 0,
    };
    let started = Instant::now();
    JobProducer::<DiagnosticPing>::new(conn, keyspace)
        .push(ping.clone())
        .await?;
    let key = ping.pong_key(keyspace);
    while started.elapsed() < timeout {
        let mut conn = redis.get().await.context("Redis connection")?;
        let answer: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        if let Some(worker) = answer {
            println!("pong from {worker} in {} ms", started.elapsed().as_millis());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "no worker answered within {} s: is maas-worker running against this Redis?",
        timeout.as_secs()
    )
}
