//! `maas task ...`: remote tasks on servers (run by `maas-worker`).

use anyhow::Context as _;
use clap::Subcommand;
use maas_model::domain::task::{RunState, ScheduleDraft, TaskDraft, TaskId};
use maas_platform::Platform;
use maas_shared::paging::PageRequest;
use maas_user::contract::Actor;

/// `maas task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Create a task: a command run on servers once, every N seconds or on a cron schedule.
    Create {
        /// Unique name.
        name: String,
        /// The command, run exactly as written as the one argument of `bash -lc`.
        #[arg(long)]
        command: String,
        /// Server id or name; repeat for several.
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// Run every this many seconds.
        #[arg(long, conflicts_with = "cron")]
        every: Option<i64>,
        /// Run on this cron expression (5 fields, or 6 with seconds first; UTC).
        #[arg(long)]
        cron: Option<String>,
        /// Killed after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: i64,
        /// Bytes of stdout and stderr kept.
        #[arg(long, default_value_t = 65_536)]
        output_limit: i64,
    },
    /// List tasks.
    List {
        /// How many (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Run a task now (one run per server; the worker runs them).
    Run {
        /// Task id or name.
        task: String,
    },
    /// A task's runs, newest first.
    Runs {
        /// Task id or name.
        task: String,
        /// How many (1-200).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print each run's output too.
        #[arg(long)]
        output: bool,
    },
}

async fn resolve(tasks: &maas_model::app::tasks::TaskService, key: &str) -> anyhow::Result<TaskId> {
    if let Ok(id) = key.parse() {
        return Ok(id);
    }
    let mut page = PageRequest::parse(Some(200), None)?;
    loop {
        let found = tasks.list(&Actor::System, &page).await?;
        if let Some(t) = found.items.iter().find(|t| t.spec.name == key) {
            return Ok(t.id);
        }
        let Some(next) = found.next else {
            anyhow::bail!("no task `{key}`");
        };
        page = PageRequest::parse(Some(200), Some(&next.encode()))?;
    }
}

pub async fn task(platform: &Platform, command: TaskCommand) -> anyhow::Result<()> {
    let compute = platform.compute()?;
    let tasks = compute.tasks;
    match command {
        TaskCommand::Create {
            name,
            command,
            servers,
            every,
            cron,
            timeout,
            output_limit,
        } => {
            let mut server_ids = Vec::with_capacity(servers.len());
            for s in &servers {
                server_ids.push(crate::compute::resolve(&compute.servers, s).await?);
            }
            let schedule = match (every, cron) {
                (Some(seconds), None) => ScheduleDraft {
                    kind: "every".into(),
                    every_seconds: Some(seconds),
                    ..ScheduleDraft::default()
                },
                (None, Some(cron)) => ScheduleDraft {
                    kind: "cron".into(),
                    cron: Some(cron),
                    ..ScheduleDraft::default()
                },
                _ => ScheduleDraft {
                    kind: "once".into(),
                    ..ScheduleDraft::default()
                },
            };
            let task = tasks
                .create(
                    &Actor::System,
                    &TaskDraft {
                        name,
                        command,
                        server_ids,
                        schedule,
                        timeout_secs: Some(timeout),
                        output_limit_bytes: Some(output_limit),
                        enabled: Some(true),
                    },
                )
                .await?;
            println!(
                "created task `{}` ({}), next run {}",
                task.spec.name,
                task.id,
                task.next_run_at
                    .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339())
            );
        }
        TaskCommand::List { limit } => {
            let page = tasks
                .list(&Actor::System, &PageRequest::parse(Some(limit), None)?)
                .await?;
            println!(
                "{:<36}  {:<20}  {:<6}  {:<25}  command",
                "id", "name", "kind", "next run"
            );
            for t in page.items {
                println!(
                    "{:<36}  {:<20}  {:<6}  {:<25}  {}",
                    t.id,
                    t.spec.name,
                    t.spec.schedule.kind(),
                    maas_model::app::tasks::next_due(&t)
                        .map_or_else(|| "-".to_owned(), |n| n.to_rfc3339()),
                    t.spec.command.lines().next().unwrap_or_default()
                );
            }
        }
        TaskCommand::Run { task } => {
            let id = resolve(&tasks, &task).await?;
            let runs = tasks.run_now(&Actor::System, id).await?;
            for r in runs {
                println!("queued run {} on server {}", r.id, r.server_id);
            }
        }
        TaskCommand::Runs {
            task,
            limit,
            output,
        } => {
            let id = resolve(&tasks, &task).await?;
            let page = tasks
                .runs(&Actor::System, id, &PageRequest::parse(Some(limit), None)?)
                .await
                .context("listing runs")?;
            println!(
                "{:<36}  {:<9}  {:>4}  {:>9}  scheduled for",
                "run", "state", "exit", "duration"
            );
            for r in page.items {
                println!(
                    "{:<36}  {:<9}  {:>4}  {:>9}  {}",
                    r.id,
                    r.state.as_str(),
                    r.exit_code
                        .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    r.duration_ms
                        .map_or_else(|| "-".to_owned(), |d| format!("{d} ms")),
                    r.scheduled_for.to_rfc3339()
                );
                if let Some(error) = &r.error {
                    println!("  error: {error}");
                }
                if output && r.state != RunState::Queued {
                    print!("{}", String::from_utf8_lossy(&r.stdout));
                    if r.stdout_truncated {
                        println!("  [stdout truncated]");
                    }
                    eprint!("{}", String::from_utf8_lossy(&r.stderr));
                }
            }
        }
    }
    Ok(())
}
