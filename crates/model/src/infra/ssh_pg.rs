//! SSH access, server checks, remote tasks and their runs in PostgreSQL.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use sea_orm::{
    ConnectionTrait as _, DatabaseConnection, FromQueryResult, TransactionTrait as _, Value,
};
use uuid::Uuid;

use super::pg::{commit, corrupt, exec, page_values, stmt};
use crate::domain::errors::{Entity, ModelError};
use crate::domain::server::ServerId;
use crate::domain::ssh::{
    AuthKind, CheckDetail, CheckStatus, HostKey, ServerCheck, SshAccess, SshRepository,
};
use crate::domain::task::{
    RemoteTask, RunId, RunResult, RunState, Schedule, Start, TaskId, TaskRepository, TaskRun,
    TaskSpec, Trigger, Via,
};

/// SSH access and checks in PostgreSQL.
#[derive(Clone)]
pub struct PgSsh {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl PgSsh {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

#[derive(Debug, FromQueryResult)]
struct AccessRow {
    server_id: Uuid,
    port: i32,
    username: String,
    auth: String,
    credential_sealed: Vec<u8>,
    host_key_algorithm: Option<String>,
    host_key_fingerprint: Option<String>,
    host_key_pinned_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

const ACCESS_COLUMNS: &str = "server_id, port, username, auth, credential_sealed, host_key_algorithm, host_key_fingerprint, host_key_pinned_at, updated_at";

impl TryFrom<AccessRow> for SshAccess {
    type Error = ModelError;

    fn try_from(r: AccessRow) -> Result<Self, ModelError> {
        Ok(Self {
            server_id: ServerId::from_uuid(r.server_id),
            port: u16::try_from(r.port).map_err(|_| corrupt("server_ssh", r.server_id, "port"))?,
            username: r.username,
            auth: AuthKind::from_name(&r.auth)
                .ok_or_else(|| corrupt("server_ssh", r.server_id, "auth"))?,
            sealed: r.credential_sealed,
            host_key: match (r.host_key_algorithm, r.host_key_fingerprint) {
                (Some(algorithm), Some(fingerprint)) => Some(HostKey {
                    algorithm,
                    fingerprint,
                }),
                _ => None,
            },
            pinned_at: r.host_key_pinned_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(Debug, FromQueryResult)]
struct CheckRow {
    server_id: Uuid,
    status: String,
    checked_at: DateTime<Utc>,
    latency_ms: Option<i32>,
    detail: serde_json::Value,
}

fn uuids(ids: &[ServerId]) -> Value {
    Value::Array(
        sea_orm::sea_query::ArrayType::Uuid,
        Some(Box::new(
            ids.iter()
                .map(|i| Value::Uuid(Some(Box::new(i.as_uuid()))))
                .collect(),
        )),
    )
}

#[async_trait]
impl SshRepository for PgSsh {
    async fn get(&self, server: ServerId) -> Result<Option<SshAccess>, ModelError> {
        AccessRow::find_by_statement(stmt(
            &format!("SELECT {ACCESS_COLUMNS} FROM server_ssh WHERE server_id = $1"),
            [server.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading SSH access")?
        .map(SshAccess::try_from)
        .transpose()
    }

    async fn many(&self, servers: &[ServerId]) -> Result<Vec<SshAccess>, ModelError> {
        AccessRow::find_by_statement(stmt(
            &format!("SELECT {ACCESS_COLUMNS} FROM server_ssh WHERE server_id = ANY($1)"),
            [uuids(servers)],
        ))
        .all(&self.db)
        .await
        .context("reading SSH access")?
        .into_iter()
        .map(SshAccess::try_from)
        .collect()
    }

    async fn put(&self, access: &SshAccess, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        // The pin belongs to the host's sshd: it survives a new user or credential, not a new
        // port.
        exec(
            &txn,
            stmt(
                "INSERT INTO server_ssh (server_id, port, username, auth, credential_sealed, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (server_id) DO UPDATE SET \
                   host_key_algorithm = CASE WHEN server_ssh.port = EXCLUDED.port THEN server_ssh.host_key_algorithm END, \
                   host_key_fingerprint = CASE WHEN server_ssh.port = EXCLUDED.port THEN server_ssh.host_key_fingerprint END, \
                   host_key_pinned_at = CASE WHEN server_ssh.port = EXCLUDED.port THEN server_ssh.host_key_pinned_at END, \
                   port = EXCLUDED.port, username = EXCLUDED.username, auth = EXCLUDED.auth, \
                   credential_sealed = EXCLUDED.credential_sealed, updated_at = EXCLUDED.updated_at",
                [
                    access.server_id.as_uuid().into(),
                    i32::from(access.port).into(),
                    access.username.clone().into(),
                    access.auth.as_str().into(),
                    access.sealed.clone().into(),
                    access.updated_at.into(),
                ],
            ),
            Entity::Server,
            Entity::Server,
            "",
        )
        .await?;
        commit(txn, audit, access.updated_at).await
    }

    async fn delete(&self, server: ServerId, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "DELETE FROM server_ssh WHERE server_id = $1",
                [server.as_uuid().into()],
            ))
            .await
            .context("deleting SSH access")?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NoRemoteAccess);
        }
        commit(txn, audit, self.clock.now()).await
    }

    async fn pin_first(
        &self,
        server: ServerId,
        key: &HostKey,
        at: DateTime<Utc>,
    ) -> Result<Option<HostKey>, ModelError> {
        #[derive(FromQueryResult)]
        struct Pinned {
            host_key_algorithm: Option<String>,
            host_key_fingerprint: Option<String>,
        }
        let row = Pinned::find_by_statement(stmt(
            "UPDATE server_ssh SET \
               host_key_algorithm = COALESCE(host_key_algorithm, $2), \
               host_key_fingerprint = COALESCE(host_key_fingerprint, $3), \
               host_key_pinned_at = COALESCE(host_key_pinned_at, $4) \
             WHERE server_id = $1 RETURNING host_key_algorithm, host_key_fingerprint",
            [
                server.as_uuid().into(),
                key.algorithm.clone().into(),
                key.fingerprint.clone().into(),
                at.into(),
            ],
        ))
        .one(&self.db)
        .await
        .context("pinning a host key")?;
        Ok(
            row.and_then(|r| match (r.host_key_algorithm, r.host_key_fingerprint) {
                (Some(algorithm), Some(fingerprint)) => Some(HostKey {
                    algorithm,
                    fingerprint,
                }),
                _ => None,
            }),
        )
    }

    async fn repin(
        &self,
        server: ServerId,
        key: &HostKey,
        at: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "UPDATE server_ssh SET host_key_algorithm = $2, host_key_fingerprint = $3, host_key_pinned_at = $4 \
                 WHERE server_id = $1",
                [
                    server.as_uuid().into(),
                    key.algorithm.clone().into(),
                    key.fingerprint.clone().into(),
                    at.into(),
                ],
            ))
            .await
            .context("re-pinning a host key")?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NoRemoteAccess);
        }
        commit(txn, audit, at).await
    }

    async fn save_check(&self, check: &ServerCheck) -> Result<(), ModelError> {
        let detail = serde_json::to_value(&check.detail).context("encoding a check")?;
        self.db
            .execute(stmt(
                "INSERT INTO server_checks (server_id, status, checked_at, latency_ms, detail) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (server_id) DO UPDATE SET status = EXCLUDED.status, checked_at = EXCLUDED.checked_at, \
                 latency_ms = EXCLUDED.latency_ms, detail = EXCLUDED.detail",
                [
                    check.server_id.as_uuid().into(),
                    check.status.as_str().into(),
                    check.checked_at.into(),
                    check
                        .latency_ms
                        .map(|l| i32::try_from(l).unwrap_or(i32::MAX))
                        .into(),
                    detail.into(),
                ],
            ))
            .await
            .map_err(|e| match e.sql_err() {
                // The server was deleted while it was checked.
                Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                    ModelError::NotFound(Entity::Server)
                }
                _ => ModelError::Unexpected(anyhow::Error::new(e).context("storing a check")),
            })?;
        Ok(())
    }

    async fn checks(&self, servers: &[ServerId]) -> Result<Vec<ServerCheck>, ModelError> {
        CheckRow::find_by_statement(stmt(
            "SELECT server_id, status, checked_at, latency_ms, detail FROM server_checks WHERE server_id = ANY($1)",
            [uuids(servers)],
        ))
        .all(&self.db)
        .await
        .context("reading checks")?
        .into_iter()
        .map(|r| {
            Ok(ServerCheck {
                server_id: ServerId::from_uuid(r.server_id),
                status: CheckStatus::from_name(&r.status)
                    .ok_or_else(|| corrupt("server_checks", r.server_id, "status"))?,
                checked_at: r.checked_at,
                latency_ms: r.latency_ms.and_then(|l| u64::try_from(l).ok()),
                detail: serde_json::from_value::<CheckDetail>(r.detail)
                    .map_err(|_| corrupt("server_checks", r.server_id, "detail"))?,
            })
        })
        .collect()
    }

    async fn record(&self, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        commit(txn, audit, self.clock.now()).await
    }
}

/// Remote tasks and runs in PostgreSQL.
#[derive(Clone)]
pub struct PgTasks {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl PgTasks {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

const TASK_COLUMNS: &str = "id, name, command, server_ids, schedule_kind, schedule_at, every_secs, cron, timeout_secs, output_limit_bytes, enabled, next_run_at, created_by, created_at, updated_at";

#[derive(Debug, FromQueryResult)]
struct TaskRow {
    id: Uuid,
    name: String,
    command: String,
    server_ids: serde_json::Value,
    schedule_kind: String,
    schedule_at: Option<DateTime<Utc>>,
    every_secs: Option<i32>,
    cron: Option<String>,
    timeout_secs: i32,
    output_limit_bytes: i32,
    enabled: bool,
    next_run_at: Option<DateTime<Utc>>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TaskRow> for RemoteTask {
    type Error = ModelError;

    fn try_from(r: TaskRow) -> Result<Self, ModelError> {
        let bad = |what| corrupt("remote_tasks", r.id, what);
        let servers: Vec<Uuid> =
            serde_json::from_value(r.server_ids.clone()).map_err(|_| bad("server list"))?;
        let schedule = match (
            r.schedule_kind.as_str(),
            r.schedule_at,
            r.every_secs,
            &r.cron,
        ) {
            ("once", Some(at), _, _) => Schedule::Once { at },
            ("every", _, Some(secs), _) => Schedule::Every {
                seconds: u32::try_from(secs).map_err(|_| bad("period"))?,
            },
            ("cron", _, _, Some(expression)) => Schedule::Cron {
                expression: expression.clone(),
            },
            _ => return Err(bad("schedule")),
        };
        Ok(Self {
            id: TaskId::from_uuid(r.id),
            spec: TaskSpec {
                name: r.name,
                command: r.command,
                server_ids: servers.into_iter().map(ServerId::from_uuid).collect(),
                schedule,
                timeout_secs: u32::try_from(r.timeout_secs).map_err(|_| bad("timeout"))?,
                output_limit_bytes: u32::try_from(r.output_limit_bytes)
                    .map_err(|_| bad("output limit"))?,
                enabled: r.enabled,
            },
            next_run_at: r.next_run_at,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn schedule_values(s: &Schedule) -> [Value; 4] {
    match s {
        Schedule::Once { at } => [
            "once".into(),
            Some(*at).into(),
            Option::<i32>::None.into(),
            Option::<String>::None.into(),
        ],
        Schedule::Every { seconds } => [
            "every".into(),
            Option::<DateTime<Utc>>::None.into(),
            Some(i32::try_from(*seconds).unwrap_or(i32::MAX)).into(),
            Option::<String>::None.into(),
        ],
        Schedule::Cron { expression } => [
            "cron".into(),
            Option::<DateTime<Utc>>::None.into(),
            Option::<i32>::None.into(),
            Some(expression.clone()).into(),
        ],
    }
}

/// `$1`–`$12` of a task's insert and update (id to `next_run_at`), then `extra`.
fn task_params<const N: usize>(task: &RemoteTask, extra: [Value; N]) -> Vec<Value> {
    let s = &task.spec;
    let [kind, at, every, cron] = schedule_values(&s.schedule);
    let mut values: Vec<Value> = vec![
        task.id.as_uuid().into(),
        s.name.clone().into(),
        s.command.clone().into(),
        server_list(&s.server_ids).into(),
        kind,
        at,
        every,
        cron,
        i32::try_from(s.timeout_secs).unwrap_or(i32::MAX).into(),
        i32::try_from(s.output_limit_bytes)
            .unwrap_or(i32::MAX)
            .into(),
        s.enabled.into(),
        task.next_run_at.into(),
    ];
    values.extend(extra);
    values
}

fn server_list(ids: &[ServerId]) -> serde_json::Value {
    serde_json::json!(ids.iter().map(ServerId::as_uuid).collect::<Vec<_>>())
}

const RUN_COLUMNS: &str = "id, task_id, server_id, trigger, scheduled_for, state, via, exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, started_at, finished_at, duration_ms, created_at";

#[derive(Debug, FromQueryResult)]
struct RunRow {
    id: Uuid,
    task_id: Uuid,
    server_id: Uuid,
    trigger: String,
    scheduled_for: DateTime<Utc>,
    state: String,
    via: Option<String>,
    exit_code: Option<i32>,
    stdout: Option<Vec<u8>>,
    stderr: Option<Vec<u8>>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    error: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    created_at: DateTime<Utc>,
}

impl TryFrom<RunRow> for TaskRun {
    type Error = ModelError;

    fn try_from(r: RunRow) -> Result<Self, ModelError> {
        let bad = |what| corrupt("remote_task_runs", r.id, what);
        Ok(Self {
            id: RunId::from_uuid(r.id),
            task_id: TaskId::from_uuid(r.task_id),
            server_id: ServerId::from_uuid(r.server_id),
            trigger: Trigger::from_name(&r.trigger).ok_or_else(|| bad("trigger"))?,
            scheduled_for: r.scheduled_for,
            state: RunState::from_name(&r.state).ok_or_else(|| bad("state"))?,
            via: r
                .via
                .as_deref()
                .map(|v| Via::from_name(v).ok_or_else(|| bad("via")))
                .transpose()?,
            exit_code: r.exit_code,
            stdout: r.stdout.unwrap_or_default(),
            stderr: r.stderr.unwrap_or_default(),
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            error: r.error,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms.and_then(|d| u64::try_from(d).ok()),
            created_at: r.created_at,
        })
    }
}

fn insert_run(run: &TaskRun, on_conflict: &str) -> sea_orm::Statement {
    stmt(
        &format!(
            "INSERT INTO remote_task_runs (id, task_id, server_id, trigger, scheduled_for, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) {on_conflict}"
        ),
        [
            run.id.as_uuid().into(),
            run.task_id.as_uuid().into(),
            run.server_id.as_uuid().into(),
            run.trigger.as_str().into(),
            run.scheduled_for.into(),
            run.state.as_str().into(),
            run.created_at.into(),
        ],
    )
}

#[async_trait]
impl TaskRepository for PgTasks {
    async fn insert(&self, task: &RemoteTask, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        exec(
            &txn,
            stmt(
                &format!(
                    "INSERT INTO remote_tasks ({TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)"
                ),
                task_params(task, [task.created_by.into(), task.created_at.into()]),
            ),
            Entity::Task,
            Entity::Server,
            "",
        )
        .await?;
        commit(txn, audit, task.created_at).await
    }

    async fn get(&self, id: TaskId) -> Result<Option<RemoteTask>, ModelError> {
        TaskRow::find_by_statement(stmt(
            &format!("SELECT {TASK_COLUMNS} FROM remote_tasks WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a task")?
        .map(RemoteTask::try_from)
        .transpose()
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<RemoteTask>, ModelError> {
        let [after, limit] = page_values(page);
        let rows = TaskRow::find_by_statement(stmt(
            &format!("SELECT {TASK_COLUMNS} FROM remote_tasks WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"),
            [after, limit],
        ))
        .all(&self.db)
        .await
        .context("listing tasks")?;
        let tasks = rows
            .into_iter()
            .map(RemoteTask::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(tasks, page, |t| t.id.as_uuid()))
    }

    async fn update(&self, task: &RemoteTask, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = exec(
            &txn,
            stmt(
                "UPDATE remote_tasks SET name = $2, command = $3, server_ids = $4, schedule_kind = $5, schedule_at = $6, \
                 every_secs = $7, cron = $8, timeout_secs = $9, output_limit_bytes = $10, enabled = $11, next_run_at = $12, \
                 updated_at = $13 WHERE id = $1",
                task_params(task, [task.updated_at.into()]),
            ),
            Entity::Task,
            Entity::Server,
            "",
        )
        .await?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NotFound(Entity::Task));
        }
        commit(txn, audit, task.updated_at).await
    }

    async fn delete(&self, id: TaskId, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "DELETE FROM remote_tasks WHERE id = $1",
                [id.as_uuid().into()],
            ))
            .await
            .context("deleting a task")?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NotFound(Entity::Task));
        }
        commit(txn, audit, self.clock.now()).await
    }

    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<RemoteTask>, ModelError> {
        TaskRow::find_by_statement(stmt(
            &format!(
                "SELECT {TASK_COLUMNS} FROM remote_tasks WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= $1 \
                 ORDER BY next_run_at LIMIT $2"
            ),
            [now.into(), i64::from(limit).into()],
        ))
        .all(&self.db)
        .await
        .context("reading due tasks")?
        .into_iter()
        .map(RemoteTask::try_from)
        .collect()
    }

    async fn fire(
        &self,
        task: TaskId,
        due: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        runs: &[TaskRun],
    ) -> Result<Vec<RunId>, ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let moved = txn
            .execute(stmt(
                "UPDATE remote_tasks SET next_run_at = $3 WHERE id = $1 AND enabled AND next_run_at = $2",
                [task.as_uuid().into(), due.into(), next.into()],
            ))
            .await
            .context("moving a task's schedule")?;
        if moved.rows_affected() == 0 {
            // Another worker fired this due time (or the task changed): nothing to do.
            txn.rollback().await.context("rolling back")?;
            return Ok(Vec::new());
        }
        let mut stored = Vec::with_capacity(runs.len());
        for run in runs {
            let done = txn
                .execute(insert_run(
                    run,
                    "ON CONFLICT (task_id, server_id, scheduled_for) WHERE trigger = 'schedule' DO NOTHING",
                ))
                .await
                .context("queueing a run")?;
            if done.rows_affected() == 1 {
                stored.push(run.id);
            }
        }
        txn.commit().await.context("committing")?;
        Ok(stored)
    }

    async fn insert_runs(&self, runs: &[TaskRun], audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        for run in runs {
            exec(&txn, insert_run(run, ""), Entity::Run, Entity::Task, "").await?;
        }
        commit(txn, audit, self.clock.now()).await
    }

    async fn stale_queued(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RunId>, ModelError> {
        #[derive(FromQueryResult)]
        struct Id {
            id: Uuid,
        }
        Ok(Id::find_by_statement(stmt(
            "SELECT id FROM remote_task_runs WHERE state = 'queued' AND created_at < $1 ORDER BY created_at LIMIT $2",
            [before.into(), i64::from(limit).into()],
        ))
        .all(&self.db)
        .await
        .context("reading queued runs")?
        .into_iter()
        .map(|r| RunId::from_uuid(r.id))
        .collect())
    }

    async fn expire_running(&self, now: DateTime<Utc>, grace_secs: u32) -> Result<u64, ModelError> {
        let done = self
            .db
            .execute(stmt(
                "UPDATE remote_task_runs r SET state = 'lost', finished_at = $1, \
                 error = 'the worker running it stopped before it ended; it is not run again, so it never runs twice' \
                 FROM remote_tasks t WHERE r.task_id = t.id AND r.state = 'running' \
                 AND r.started_at + make_interval(secs => t.timeout_secs + $2) < $1",
                [now.into(), i32::try_from(grace_secs).unwrap_or(i32::MAX).into()],
            ))
            .await
            .context("expiring lost runs")?;
        Ok(done.rows_affected())
    }

    async fn run(&self, id: RunId) -> Result<Option<TaskRun>, ModelError> {
        RunRow::find_by_statement(stmt(
            &format!("SELECT {RUN_COLUMNS} FROM remote_task_runs WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a run")?
        .map(TaskRun::try_from)
        .transpose()
    }

    async fn start(&self, id: RunId, at: DateTime<Utc>) -> Result<Start, ModelError> {
        let started = self
            .db
            .execute(stmt(
                "UPDATE remote_task_runs SET state = 'running', started_at = $2 WHERE id = $1 AND state = 'queued'",
                [id.as_uuid().into(), at.into()],
            ))
            .await
            .context("starting a run")?;
        if started.rows_affected() == 1 {
            return Ok(Start::Started);
        }
        let lost = self
            .db
            .execute(stmt(
                "UPDATE remote_task_runs SET state = 'lost', finished_at = $2, \
                 error = 'the worker running it stopped before it ended; it is not run again, so it never runs twice' \
                 WHERE id = $1 AND state = 'running'",
                [id.as_uuid().into(), at.into()],
            ))
            .await
            .context("marking a run lost")?;
        Ok(if lost.rows_affected() == 1 {
            Start::Lost
        } else {
            Start::Done
        })
    }

    async fn finish(&self, id: RunId, r: &RunResult) -> Result<(), ModelError> {
        self.db
            .execute(stmt(
                "UPDATE remote_task_runs SET state = $2, via = $3, exit_code = $4, stdout = $5, stderr = $6, \
                 stdout_truncated = $7, stderr_truncated = $8, error = $9, finished_at = $10, duration_ms = $11 \
                 WHERE id = $1 AND state = 'running'",
                [
                    id.as_uuid().into(),
                    r.state.as_str().into(),
                    r.via.map(Via::as_str).into(),
                    r.exit_code.into(),
                    r.stdout.clone().into(),
                    r.stderr.clone().into(),
                    r.stdout_truncated.into(),
                    r.stderr_truncated.into(),
                    r.error.clone().into(),
                    r.finished_at.into(),
                    i64::try_from(r.duration_ms).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await
            .context("storing a run's result")?;
        Ok(())
    }

    async fn runs(&self, task: TaskId, page: &PageRequest) -> Result<Page<TaskRun>, ModelError> {
        let [after, limit] = page_values(page);
        let rows = RunRow::find_by_statement(stmt(
            &format!(
                "SELECT {RUN_COLUMNS} FROM remote_task_runs WHERE task_id = $3 AND ($1::uuid IS NULL OR id < $1) \
                 ORDER BY id DESC LIMIT $2"
            ),
            [after, limit, task.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("listing runs")?;
        let runs = rows
            .into_iter()
            .map(TaskRun::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(runs, page, |r| r.id.as_uuid()))
    }
}
