//! Remote tasks as admins manage them, the schedule's tick (once per due time however many
//! workers run it) and the run job (over SSH or the agent, killed at its timeout, output kept
//! up to its limit; a run whose worker died is marked lost, never run twice).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::{Actor, Permission};
use serde_json::json;

use super::ssh::SshService;
use crate::domain::errors::{Entity, InvalidValue, ModelError};
use crate::domain::ports::ServerRepository;
use crate::domain::ssh::RemoteCommand;
use crate::domain::task::{
    RemoteTask, RunId, RunQueue, RunResult, RunState, Start, TaskDraft, TaskId, TaskRepository,
    TaskRun, Trigger,
};

/// The ports of [`TaskService`].
#[derive(Clone)]
pub struct TaskPorts {
    /// Tasks and runs.
    pub tasks: Arc<dyn TaskRepository>,
    /// Servers a task names.
    pub servers: Arc<dyn ServerRepository>,
    /// The run queue.
    pub queue: Arc<dyn RunQueue>,
    /// Remote commands.
    pub ssh: SshService,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fired {
    /// Tasks fired.
    pub tasks: usize,
    /// Runs queued.
    pub runs: usize,
    /// Queued runs whose job was pushed again.
    pub requeued: usize,
    /// Runs marked lost (their worker died while they ran).
    pub lost: u64,
}

/// Remote tasks and their runs.
#[derive(Clone)]
pub struct TaskService {
    ports: TaskPorts,
}

/// Tasks due at once per tick at most.
const TICK_BATCH: u32 = 500;
/// A run still queued this long after it was created has its job pushed again.
const REQUEUE_AFTER: Duration = Duration::from_secs(60);
/// A run still running this long past its timeout lost its worker (a live one ends it at the
/// timeout, plus the kill grace of the SSH client).
const LOST_AFTER_SECS: u32 = 15;

impl TaskService {
    /// The service.
    #[must_use]
    pub fn new(ports: TaskPorts) -> Self {
        Self { ports }
    }

    fn admin(actor: &Actor<'_>) -> Result<(), ModelError> {
        Ok(actor.require(Permission::ManageServers)?)
    }

    async fn known_servers(&self, task: &TaskDraft) -> Result<(), ModelError> {
        for id in &task.server_ids {
            if self.ports.servers.get(*id).await?.is_none() {
                return Err(ModelError::Invalid(vec![InvalidValue::new(
                    "server_ids",
                    "names a server that does not exist",
                )]));
            }
        }
        Ok(())
    }

    /// Creates a task.
    ///
    /// # Errors
    /// Forbidden; every bad field; [`ModelError::NameTaken`].
    #[tracing::instrument(name = "tasks.create", skip_all)]
    pub async fn create(
        &self,
        actor: &Actor<'_>,
        draft: &TaskDraft,
    ) -> Result<RemoteTask, ModelError> {
        Self::admin(actor)?;
        let now = self.ports.clock.now();
        let spec = draft.parse(now).map_err(ModelError::Invalid)?;
        self.known_servers(draft).await?;
        let task = RemoteTask::new(spec, actor.user_id().map(|u| u.as_uuid()), now);
        let audit = actor.event(
            "task.create",
            "remote_task",
            Some(task.id.to_string()),
            json!({"name": task.spec.name, "schedule": task.spec.schedule.kind(), "servers": task.spec.server_ids.len()}),
        );
        self.ports.tasks.insert(&task, audit).await?;
        Ok(task)
    }

    /// One task.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn get(&self, actor: &Actor<'_>, id: TaskId) -> Result<RemoteTask, ModelError> {
        Self::admin(actor)?;
        self.load(id).await
    }

    async fn load(&self, id: TaskId) -> Result<RemoteTask, ModelError> {
        self.ports
            .tasks
            .get(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Task))
    }

    /// A page of tasks.
    ///
    /// # Errors
    /// Forbidden.
    pub async fn list(
        &self,
        actor: &Actor<'_>,
        page: &PageRequest,
    ) -> Result<Page<RemoteTask>, ModelError> {
        Self::admin(actor)?;
        self.ports.tasks.list(page).await
    }

    /// Changes a task through `change` on its draft; a changed schedule (or a task enabled
    /// again) is due next by its new schedule.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; every bad field; [`ModelError::NameTaken`].
    pub async fn update(
        &self,
        actor: &Actor<'_>,
        id: TaskId,
        change: impl FnOnce(&mut TaskDraft) + Send,
    ) -> Result<RemoteTask, ModelError> {
        Self::admin(actor)?;
        let mut task = self.load(id).await?;
        let mut draft = draft_of(&task);
        change(&mut draft);
        let now = self.ports.clock.now();
        let spec = draft.parse(now).map_err(ModelError::Invalid)?;
        self.known_servers(&draft).await?;
        let rescheduled =
            spec.schedule != task.spec.schedule || (spec.enabled && !task.spec.enabled);
        if rescheduled {
            task.next_run_at = spec.schedule.first(now);
        }
        task.spec = spec;
        task.updated_at = now;
        let audit = actor.event(
            "task.update",
            "remote_task",
            Some(id.to_string()),
            json!({"name": task.spec.name, "enabled": task.spec.enabled}),
        );
        self.ports.tasks.update(&task, audit).await?;
        Ok(task)
    }

    /// Deletes a task and its history.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn delete(&self, actor: &Actor<'_>, id: TaskId) -> Result<(), ModelError> {
        Self::admin(actor)?;
        let audit = actor.event(
            "task.delete",
            "remote_task",
            Some(id.to_string()),
            json!({}),
        );
        self.ports.tasks.delete(id, audit).await
    }

    /// Queues one run per server of the task now.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn run_now(&self, actor: &Actor<'_>, id: TaskId) -> Result<Vec<TaskRun>, ModelError> {
        Self::admin(actor)?;
        let task = self.load(id).await?;
        let now = self.ports.clock.now();
        let runs: Vec<TaskRun> = task
            .spec
            .server_ids
            .iter()
            .map(|s| TaskRun::queued(task.id, *s, Trigger::Manual, now, now))
            .collect();
        let audit = actor.event(
            "task.run",
            "remote_task",
            Some(id.to_string()),
            json!({"runs": runs.iter().map(|r| r.id.to_string()).collect::<Vec<_>>()}),
        );
        self.ports.tasks.insert_runs(&runs, audit).await?;
        for run in &runs {
            // A push that fails leaves the run queued: the next tick pushes it again.
            if let Err(e) = self.ports.queue.enqueue(run.id).await {
                tracing::warn!(run.id = %run.id, error = %e, "run queued in PostgreSQL, its job not pushed yet");
            }
        }
        Ok(runs)
    }

    /// A page of a task's runs, newest first.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn runs(
        &self,
        actor: &Actor<'_>,
        id: TaskId,
        page: &PageRequest,
    ) -> Result<Page<TaskRun>, ModelError> {
        Self::admin(actor)?;
        self.load(id).await?;
        self.ports.tasks.runs(id, page).await
    }

    /// One run of a task.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn run(
        &self,
        actor: &Actor<'_>,
        task: TaskId,
        id: RunId,
    ) -> Result<TaskRun, ModelError> {
        Self::admin(actor)?;
        self.ports
            .tasks
            .run(id)
            .await?
            .filter(|r| r.task_id == task)
            .ok_or(ModelError::NotFound(Entity::Run))
    }

    /// The schedule's tick: fires every task due (each due time once, however many workers
    /// tick), and pushes again the jobs of runs left queued.
    ///
    /// # Errors
    /// Storage or queue failures.
    pub async fn tick(&self) -> Result<Fired, ModelError> {
        let now = self.ports.clock.now();
        let mut fired = Fired::default();
        for task in self.ports.tasks.due(now, TICK_BATCH).await? {
            let Some(due) = task.next_run_at else {
                continue;
            };
            let next = task.spec.schedule.after(due, now);
            let runs: Vec<TaskRun> = task
                .spec
                .server_ids
                .iter()
                .map(|s| TaskRun::queued(task.id, *s, Trigger::Schedule, due, now))
                .collect();
            let stored = self.ports.tasks.fire(task.id, due, next, &runs).await?;
            if stored.is_empty() {
                continue;
            }
            fired.tasks += 1;
            for run in stored {
                fired.runs += 1;
                if let Err(e) = self.ports.queue.enqueue(run).await {
                    tracing::warn!(run.id = %run, error = %e, "run queued in PostgreSQL, its job not pushed yet");
                }
            }
        }
        let stale_before = now - chrono::Duration::from_std(REQUEUE_AFTER).unwrap_or_default();
        fired.lost = self
            .ports
            .tasks
            .expire_running(now, LOST_AFTER_SECS)
            .await?;
        for run in self
            .ports
            .tasks
            .stale_queued(stale_before, TICK_BATCH)
            .await?
        {
            self.ports.queue.enqueue(run).await?;
            fired.requeued += 1;
        }
        Ok(fired)
    }

    /// The run job: runs one queued run to its end. Idempotent: a finished run is left as it
    /// is; a run that had started (its worker died) is marked lost instead of run twice.
    ///
    /// # Errors
    /// Storage failures (the job is retried; the run stays as it was).
    #[tracing::instrument(name = "tasks.execute", skip_all, fields(run.id = %id))]
    pub async fn execute(&self, id: RunId) -> Result<Option<RunState>, ModelError> {
        let Some(run) = self.ports.tasks.run(id).await? else {
            return Ok(None);
        };
        let Some(task) = self.ports.tasks.get(run.task_id).await? else {
            return Ok(None);
        };
        match self.ports.tasks.start(id, self.ports.clock.now()).await? {
            Start::Done => return Ok(None),
            Start::Lost => {
                tracing::warn!(run.id = %id, "a run whose worker stopped was marked lost");
                return Ok(Some(RunState::Lost));
            }
            Start::Started => {}
        }
        let command = RemoteCommand {
            script: task.spec.command.clone(),
            timeout: Duration::from_secs(u64::from(task.spec.timeout_secs)),
            output_limit: task.spec.output_limit_bytes as usize,
        };
        let started = std::time::Instant::now();
        let result = match self.ports.ssh.exec(run.server_id, &command).await {
            Ok((via, out)) => RunResult {
                state: if out.timed_out {
                    RunState::TimedOut
                } else if out.exit_code == Some(0) {
                    RunState::Succeeded
                } else {
                    RunState::Failed
                },
                via: Some(via),
                exit_code: out.exit_code,
                stdout: out.stdout,
                stderr: out.stderr,
                stdout_truncated: out.stdout_truncated,
                stderr_truncated: out.stderr_truncated,
                error: out
                    .timed_out
                    .then(|| format!("killed at its timeout of {} s", task.spec.timeout_secs)),
                finished_at: self.ports.clock.now(),
                duration_ms: millis(out.duration),
            },
            Err(ModelError::Unexpected(e)) => return Err(ModelError::Unexpected(e)),
            Err(e) => RunResult {
                state: RunState::Failed,
                via: None,
                exit_code: None,
                stdout: Vec::new(),
                stderr: Vec::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                error: Some(format!("{}: {e}", maas_shared::error::Classify::code(&e))),
                finished_at: self.ports.clock.now(),
                duration_ms: millis(started.elapsed()),
            },
        };
        let state = result.state;
        self.ports.tasks.finish(id, &result).await?;
        Ok(Some(state))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The draft a stored task came from.
#[must_use]
pub fn draft_of(task: &RemoteTask) -> TaskDraft {
    use crate::domain::task::{Schedule, ScheduleDraft};
    let s = &task.spec;
    let schedule = match &s.schedule {
        Schedule::Once { at } => ScheduleDraft {
            kind: "once".into(),
            at: Some(*at),
            ..ScheduleDraft::default()
        },
        Schedule::Every { seconds } => ScheduleDraft {
            kind: "every".into(),
            every_seconds: Some(i64::from(*seconds)),
            ..ScheduleDraft::default()
        },
        Schedule::Cron { expression } => ScheduleDraft {
            kind: "cron".into(),
            cron: Some(expression.clone()),
            ..ScheduleDraft::default()
        },
    };
    TaskDraft {
        name: s.name.clone(),
        command: s.command.clone(),
        server_ids: s.server_ids.clone(),
        schedule,
        timeout_secs: Some(i64::from(s.timeout_secs)),
        output_limit_bytes: Some(i64::from(s.output_limit_bytes)),
        enabled: Some(s.enabled),
    }
}

/// When the next run is due, for display.
#[must_use]
pub fn next_due(task: &RemoteTask) -> Option<DateTime<Utc>> {
    task.spec.enabled.then_some(task.next_run_at).flatten()
}
