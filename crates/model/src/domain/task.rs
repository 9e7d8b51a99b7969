//! Remote tasks: a command run on servers once, every N seconds or on a cron schedule, each run
//! kept with its exit code, output (capped) and duration.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::{Page, PageRequest};
use serde::{Deserialize, Serialize};

use super::errors::{InvalidValue, ModelError};
use super::server::ServerId;
use super::values::{collect, token};

maas_shared::define_id!(
    /// Identifies a remote task.
    TaskId
);

maas_shared::define_id!(
    /// Identifies one run of a remote task on one server.
    RunId
);

/// The longest command accepted.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// At most this many servers per task.
pub const MAX_TASK_SERVERS: usize = 100;
/// The longest timeout, in seconds (a day).
pub const MAX_TIMEOUT_SECS: i64 = 86_400;
/// The largest output limit, in bytes (16 MiB per stream).
pub const MAX_OUTPUT_LIMIT: i64 = 16 * 1024 * 1024;

/// When a task runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Once, at `at` (or at once).
    Once {
        /// When.
        at: DateTime<Utc>,
    },
    /// Every `seconds`, the first time one period after creation.
    Every {
        /// The period.
        seconds: u32,
    },
    /// On a cron expression (5 fields, or 6 with seconds first).
    Cron {
        /// The expression.
        expression: String,
    },
}

fn cron(expression: &str) -> Option<croner::Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expression)
        .ok()
}

impl Schedule {
    /// The stored kind.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Once { .. } => "once",
            Self::Every { .. } => "every",
            Self::Cron { .. } => "cron",
        }
    }

    /// The first due time of a task created (or re-enabled) at `now`.
    #[must_use]
    pub fn first(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Once { at } => Some(*at),
            Self::Every { seconds } => Some(now + chrono::Duration::seconds(i64::from(*seconds))),
            Self::Cron { expression } => cron(expression)?.find_next_occurrence(&now, false).ok(),
        }
    }

    /// The due time after `due` fired at `now`: one run for a missed stretch, never a burst.
    #[must_use]
    pub fn after(&self, due: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Once { .. } => None,
            Self::Every { seconds } => {
                let period = i64::from((*seconds).max(1));
                let behind = (now - due).num_seconds().max(0);
                let periods = behind / period + 1;
                Some(due + chrono::Duration::seconds(periods * period))
            }
            Self::Cron { expression } => {
                let from = if now > due { now } else { due };
                cron(expression)?.find_next_occurrence(&from, false).ok()
            }
        }
    }
}

/// What an admin gives for a schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleDraft {
    /// `once`, `every` or `cron`.
    pub kind: String,
    /// For `once`: when (absent: at once).
    pub at: Option<DateTime<Utc>>,
    /// For `every`: the period in seconds.
    pub every_seconds: Option<i64>,
    /// For `cron`: the expression.
    pub cron: Option<String>,
}

impl ScheduleDraft {
    fn parse(&self, now: DateTime<Utc>) -> Result<Schedule, InvalidValue> {
        match self.kind.as_str() {
            "once" => Ok(Schedule::Once {
                at: self.at.unwrap_or(now),
            }),
            "every" => self
                .every_seconds
                .and_then(|s| u32::try_from(s).ok())
                .filter(|s| (1..=31_536_000).contains(s))
                .map(|seconds| Schedule::Every { seconds })
                .ok_or(InvalidValue::new(
                    "schedule.every_seconds",
                    "a whole number of seconds from 1 to 31536000",
                )),
            "cron" => {
                let expression = self.cron.as_deref().unwrap_or("").trim();
                if expression.len() <= 200
                    && let Some(parsed) = cron(expression)
                    && parsed.find_next_occurrence(&now, false).is_ok()
                {
                    Ok(Schedule::Cron {
                        expression: expression.to_owned(),
                    })
                } else {
                    Err(InvalidValue::new(
                        "schedule.cron",
                        "a cron expression of 5 fields (or 6, seconds first) that fires again",
                    ))
                }
            }
            _ => Err(InvalidValue::new(
                "schedule.kind",
                "one of once, every, cron",
            )),
        }
    }
}

/// What an admin gives for a task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskDraft {
    /// Unique name.
    pub name: String,
    /// The command, run as one `bash -lc` argument.
    pub command: String,
    /// The servers it runs on.
    pub server_ids: Vec<ServerId>,
    /// When.
    pub schedule: ScheduleDraft,
    /// Killed after this many seconds (default 300).
    pub timeout_secs: Option<i64>,
    /// Bytes of stdout and of stderr kept (default 65536).
    pub output_limit_bytes: Option<i64>,
    /// Whether the schedule fires (default true).
    pub enabled: Option<bool>,
}

/// A validated task description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// Name.
    pub name: String,
    /// Command.
    pub command: String,
    /// Servers.
    pub server_ids: Vec<ServerId>,
    /// Schedule.
    pub schedule: Schedule,
    /// Timeout, seconds.
    pub timeout_secs: u32,
    /// Output limit, bytes.
    pub output_limit_bytes: u32,
    /// Enabled.
    pub enabled: bool,
}

impl TaskDraft {
    /// Validates every field.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(&self, now: DateTime<Utc>) -> Result<TaskSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let name = collect(
            token(
                &self.name,
                64,
                b"-_.",
                "name",
                "1 to 64 characters of letters, digits, '-', '_' or '.'",
            ),
            &mut errors,
        );
        if self.command.trim().is_empty()
            || self.command.len() > MAX_COMMAND_BYTES
            || self.command.contains('\0')
        {
            errors.push(InvalidValue::new(
                "command",
                "1 to 65536 bytes, without NUL",
            ));
        }
        let mut servers = self.server_ids.clone();
        servers.sort_unstable_by_key(|s| s.as_uuid());
        servers.dedup();
        if servers.is_empty()
            || servers.len() > MAX_TASK_SERVERS
            || servers.len() != self.server_ids.len()
        {
            errors.push(InvalidValue::new(
                "server_ids",
                "1 to 100 distinct server ids",
            ));
        }
        let schedule = collect(self.schedule.parse(now), &mut errors);
        let timeout = self.timeout_secs.unwrap_or(300);
        if !(1..=MAX_TIMEOUT_SECS).contains(&timeout) {
            errors.push(InvalidValue::new("timeout_secs", "from 1 to 86400 seconds"));
        }
        let limit = self.output_limit_bytes.unwrap_or(65_536);
        if !(1..=MAX_OUTPUT_LIMIT).contains(&limit) {
            errors.push(InvalidValue::new(
                "output_limit_bytes",
                "from 1 to 16777216 bytes",
            ));
        }
        match (name, schedule, u32::try_from(timeout), u32::try_from(limit)) {
            (Some(name), Some(schedule), Ok(timeout_secs), Ok(output_limit_bytes))
                if errors.is_empty() =>
            {
                Ok(TaskSpec {
                    name,
                    command: self.command.clone(),
                    server_ids: self.server_ids.clone(),
                    schedule,
                    timeout_secs,
                    output_limit_bytes,
                    enabled: self.enabled.unwrap_or(true),
                })
            }
            _ => Err(errors),
        }
    }
}

/// A remote task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteTask {
    /// Id.
    pub id: TaskId,
    /// What it does.
    pub spec: TaskSpec,
    /// When the schedule fires next (`None`: not again).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: Option<uuid::Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl RemoteTask {
    /// A new task; its schedule's first due time is computed now.
    #[must_use]
    pub fn new(spec: TaskSpec, created_by: Option<uuid::Uuid>, now: DateTime<Utc>) -> Self {
        let next_run_at = spec.schedule.first(now);
        Self {
            id: TaskId::new(),
            spec,
            next_run_at,
            created_by,
            created_at: now,
            updated_at: now,
        }
    }
}

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The schedule.
    Schedule,
    /// `POST /api/v1/tasks/{id}/run`.
    Manual,
}

impl Trigger {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
        }
    }

    /// The trigger of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Schedule, Self::Manual]
            .into_iter()
            .find(|t| t.as_str() == name)
    }
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or could not run (see `error`).
    Failed,
    /// Killed at its timeout.
    TimedOut,
    /// Its worker stopped while it ran; it is not run again, so it never runs twice.
    Lost,
}

impl RunState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Lost,
    ];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Lost => "lost",
        }
    }

    /// The state of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How a run reached its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Over SSH.
    Ssh,
    /// Through the server's agent.
    Agent,
}

impl Via {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Agent => "agent",
        }
    }

    /// The value of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Ssh, Self::Agent]
            .into_iter()
            .find(|v| v.as_str() == name)
    }
}

/// One run of a task on one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRun {
    /// Id.
    pub id: RunId,
    /// The task.
    pub task_id: TaskId,
    /// The server.
    pub server_id: ServerId,
    /// What started it.
    pub trigger: Trigger,
    /// The due time it ran for (its creation for a manual run).
    pub scheduled_for: DateTime<Utc>,
    /// Where it is.
    pub state: RunState,
    /// How it reached the server.
    pub via: Option<Via>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Output (up to the limit).
    pub stdout: Vec<u8>,
    /// Error output (up to the limit).
    pub stderr: Vec<u8>,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// Why it failed to run.
    pub error: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it ran, milliseconds.
    pub duration_ms: Option<u64>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

impl TaskRun {
    /// A queued run.
    #[must_use]
    pub fn queued(
        task_id: TaskId,
        server_id: ServerId,
        trigger: Trigger,
        scheduled_for: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: RunId::new(),
            task_id,
            server_id,
            trigger,
            scheduled_for,
            state: RunState::Queued,
            via: None,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            created_at: now,
        }
    }
}

/// What a run ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The final state.
    pub state: RunState,
    /// How it reached the server.
    pub via: Option<Via>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Output.
    pub stdout: Vec<u8>,
    /// Error output.
    pub stderr: Vec<u8>,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// Why it could not run.
    pub error: Option<String>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How long it ran.
    pub duration_ms: u64,
}

/// How starting a run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// It was queued and is running now: go on.
    Started,
    /// It had started before (its worker stopped): it was marked lost.
    Lost,
    /// It already ended (a duplicate delivery), or is gone.
    Done,
}

/// Tasks and runs in storage.
#[async_trait]
pub trait TaskRepository: Send + Sync {
    /// Stores a new task.
    async fn insert(&self, task: &RemoteTask, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// One task.
    async fn get(&self, id: TaskId) -> Result<Option<RemoteTask>, ModelError>;
    /// A page of tasks.
    async fn list(&self, page: &PageRequest) -> Result<Page<RemoteTask>, ModelError>;
    /// Stores a changed task.
    async fn update(&self, task: &RemoteTask, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Deletes a task and its runs.
    async fn delete(&self, id: TaskId, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Enabled tasks due at `now`.
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<RemoteTask>, ModelError>;
    /// Fires `task` for its due time `due`: moves `next_run_at` from `due` to `next` and stores
    /// `runs`, in one transaction, only if `next_run_at` is still `due` (so a tick seen by two
    /// workers fires once). Returns the runs stored.
    async fn fire(
        &self,
        task: TaskId,
        due: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        runs: &[TaskRun],
    ) -> Result<Vec<RunId>, ModelError>;
    /// Stores manual runs.
    async fn insert_runs(&self, runs: &[TaskRun], audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Runs still queued that were created before `before` (their job may be lost).
    async fn stale_queued(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RunId>, ModelError>;
    /// Marks lost the runs still running well past their task's timeout (their worker died:
    /// a live worker kills a command at its timeout). Answers how many.
    async fn expire_running(&self, now: DateTime<Utc>, grace_secs: u32) -> Result<u64, ModelError>;
    /// One run.
    async fn run(&self, id: RunId) -> Result<Option<TaskRun>, ModelError>;
    /// Marks a queued run running (see [`Start`]).
    async fn start(&self, id: RunId, at: DateTime<Utc>) -> Result<Start, ModelError>;
    /// Stores a run's result.
    async fn finish(&self, id: RunId, result: &RunResult) -> Result<(), ModelError>;
    /// A page of a task's runs, newest first.
    async fn runs(&self, task: TaskId, page: &PageRequest) -> Result<Page<TaskRun>, ModelError>;
}

/// Queues runs for the worker.
#[async_trait]
pub trait RunQueue: Send + Sync {
    /// Queues `run` (a run queued twice runs once).
    async fn enqueue(&self, run: RunId) -> Result<(), ModelError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn schedules_move_forward_one_run_per_stretch() {
        let now = at("2026-12-03T10:00:00Z");
        let every = Schedule::Every { seconds: 10 };
        assert_eq!(every.first(now), Some(at("2026-12-03T10:00:10Z")));
        // On time: the next period. Late by 35 s: the next period after now, not four runs.
        assert_eq!(
            every.after(at("2026-12-03T10:00:10Z"), at("2026-12-03T10:00:10Z")),
            Some(at("2026-12-03T10:00:20Z"))
        );
        assert_eq!(
            every.after(at("2026-12-03T10:00:10Z"), at("2026-12-03T10:00:45Z")),
            Some(at("2026-12-03T10:00:50Z"))
        );
        let cron = Schedule::Cron {
            expression: "*/2 * * * * *".into(),
        };
        assert_eq!(cron.first(now), Some(at("2026-12-03T10:00:02Z")));
        assert_eq!(
            cron.after(at("2026-12-03T10:00:02Z"), at("2026-12-03T10:00:02.5Z")),
            Some(at("2026-12-03T10:00:04Z"))
        );
        let minutely = Schedule::Cron {
            expression: "* * * * *".into(),
        };
        assert_eq!(minutely.first(now), Some(at("2026-12-03T10:01:00Z")));
        assert_eq!(Schedule::Once { at: now }.after(now, now), None);
    }

    #[test]
    fn a_draft_names_every_bad_field() {
        let now = at("2026-12-03T10:00:00Z");
        let server = ServerId::new();
        let draft = TaskDraft {
            name: "bad name".into(),
            command: String::new(),
            server_ids: vec![server, server],
            schedule: ScheduleDraft {
                kind: "cron".into(),
                cron: Some("61 * * * *".into()),
                ..ScheduleDraft::default()
            },
            timeout_secs: Some(0),
            output_limit_bytes: Some(0),
            enabled: None,
        };
        let fields: Vec<&str> = draft
            .parse(now)
            .expect_err("bad")
            .iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "name",
                "command",
                "server_ids",
                "schedule.cron",
                "timeout_secs",
                "output_limit_bytes"
            ]
        );
        let ok = TaskDraft {
            name: "df".into(),
            command: "df -h /".into(),
            server_ids: vec![server],
            schedule: ScheduleDraft {
                kind: "every".into(),
                every_seconds: Some(60),
                ..ScheduleDraft::default()
            },
            ..TaskDraft::default()
        }
        .parse(now)
        .expect("valid");
        assert_eq!(
            (ok.timeout_secs, ok.output_limit_bytes, ok.enabled),
            (300, 65_536, true)
        );
    }
}
