//! Remote tasks (admin): CRUD, run now, the history of runs.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use maas_shared::http::{ApiError, PageQuery, PageResponse, ValidatedJson};
use maas_user::contract::Caller;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::app::tasks::{TaskService, next_due};
use crate::domain::server::ServerId;
use crate::domain::task::{
    RemoteTask, RunId, RunState, Schedule, ScheduleDraft, TaskDraft, TaskId, TaskRun,
};

/// When a task runs: `{"kind":"once","at":…}` (at once without `at`),
/// `{"kind":"every","every_seconds":60}` or `{"kind":"cron","cron":"*/5 * * * *"}` (5 fields,
/// or 6 with seconds first; UTC).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDto {
    /// `once`, `every` or `cron`.
    #[schema(example = "cron")]
    pub kind: String,
    /// For `once`: when (absent: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// For `every`: the period, 1 to 31536000 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub every_seconds: Option<i64>,
    /// For `cron`: the expression (at most 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub cron: Option<String>,
}

impl From<ScheduleDto> for ScheduleDraft {
    fn from(d: ScheduleDto) -> Self {
        Self {
            kind: d.kind,
            at: d.at,
            every_seconds: d.every_seconds,
            cron: d.cron,
        }
    }
}

impl From<&Schedule> for ScheduleDto {
    fn from(s: &Schedule) -> Self {
        let none = Self {
            kind: s.kind().to_owned(),
            at: None,
            every_seconds: None,
            cron: None,
        };
        match s {
            Schedule::Once { at } => Self {
                at: Some(*at),
                ..none
            },
            Schedule::Every { seconds } => Self {
                every_seconds: Some(i64::from(*seconds)),
                ..none
            },
            Schedule::Cron { expression } => Self {
                cron: Some(expression.clone()),
                ..none
            },
        }
    }
}

/// A new remote task.
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Unique name: 1 to 64 of letters, digits, `-`, `_`, `.`.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The command, run exactly as written as the one argument of `bash -lc` (1 to 65536 bytes).
    #[schema(min_length = 1, max_length = 65536)]
    pub command: String,
    /// The servers it runs on (1 to 100, distinct).
    #[schema(min_items = 1, max_items = 100)]
    pub server_ids: Vec<Uuid>,
    /// When.
    #[validate(nested)]
    pub schedule: ScheduleDto,
    /// Killed (its whole process group) after this many seconds: 1 to 86400, default 300.
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<i64>,
    /// Bytes of stdout and of stderr kept (the rest is cut and the run marked truncated): 1 to
    /// 16777216, default 65536.
    #[schema(minimum = 1, maximum = 16_777_216)]
    pub output_limit_bytes: Option<i64>,
    /// Whether the schedule fires (default true).
    pub enabled: Option<bool>,
}

/// A change to a task (absent fields stay).
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    /// New name.
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// New command.
    #[schema(min_length = 1, max_length = 65536)]
    pub command: Option<String>,
    /// New servers.
    #[schema(min_items = 1, max_items = 100)]
    pub server_ids: Option<Vec<Uuid>>,
    /// New schedule.
    #[validate(nested)]
    pub schedule: Option<ScheduleDto>,
    /// New timeout.
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<i64>,
    /// New output limit.
    #[schema(minimum = 1, maximum = 16_777_216)]
    pub output_limit_bytes: Option<i64>,
    /// Enable or disable the schedule.
    pub enabled: Option<bool>,
}

/// A remote task.
#[derive(Serialize, ToSchema)]
pub struct TaskResponse {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Command.
    pub command: String,
    /// Servers.
    pub server_ids: Vec<Uuid>,
    /// Schedule.
    pub schedule: ScheduleDto,
    /// Timeout, seconds.
    pub timeout_secs: u32,
    /// Output limit, bytes.
    pub output_limit_bytes: u32,
    /// Whether the schedule fires.
    pub enabled: bool,
    /// When it runs next (absent: not again, or disabled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&RemoteTask> for TaskResponse {
    fn from(t: &RemoteTask) -> Self {
        Self {
            id: t.id.as_uuid(),
            name: t.spec.name.clone(),
            command: t.spec.command.clone(),
            server_ids: t.spec.server_ids.iter().map(ServerId::as_uuid).collect(),
            schedule: ScheduleDto::from(&t.spec.schedule),
            timeout_secs: t.spec.timeout_secs,
            output_limit_bytes: t.spec.output_limit_bytes,
            enabled: t.spec.enabled,
            next_run_at: next_due(t),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Where a run is.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStateDto {
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or could not run (`error`).
    Failed,
    /// Killed at its timeout.
    TimedOut,
    /// Its worker stopped while it ran; not run again, so it never runs twice.
    Lost,
}

impl From<RunState> for RunStateDto {
    fn from(s: RunState) -> Self {
        match s {
            RunState::Queued => Self::Queued,
            RunState::Running => Self::Running,
            RunState::Succeeded => Self::Succeeded,
            RunState::Failed => Self::Failed,
            RunState::TimedOut => Self::TimedOut,
            RunState::Lost => Self::Lost,
        }
    }
}

/// One run of a task on one server.
#[derive(Serialize, ToSchema)]
pub struct RunResponse {
    /// Id.
    pub id: Uuid,
    /// The task.
    pub task_id: Uuid,
    /// The server.
    pub server_id: Uuid,
    /// `schedule` or `manual`.
    pub trigger: String,
    /// The due time it ran for.
    pub scheduled_for: DateTime<Utc>,
    /// Where it is.
    pub state: RunStateDto,
    /// `ssh` or `agent`.
    pub via: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Output up to the limit (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Error output up to the limit.
    pub stderr: String,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the limit.
    pub stderr_truncated: bool,
    /// Why it failed to run, with a stable code first (`ssh_auth_failed: …`).
    pub error: Option<String>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it ran, ms.
    pub duration_ms: Option<u64>,
    /// Queued.
    pub created_at: DateTime<Utc>,
}

impl From<&TaskRun> for RunResponse {
    fn from(r: &TaskRun) -> Self {
        Self {
            id: r.id.as_uuid(),
            task_id: r.task_id.as_uuid(),
            server_id: r.server_id.as_uuid(),
            trigger: r.trigger.as_str().to_owned(),
            scheduled_for: r.scheduled_for,
            state: r.state.into(),
            via: r.via.map(|v| v.as_str().to_owned()),
            exit_code: r.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            error: r.error.clone(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            created_at: r.created_at,
        }
    }
}

/// Runs queued now.
#[derive(Serialize, ToSchema)]
pub struct RunsQueuedResponse {
    /// One per server.
    pub runs: Vec<RunResponse>,
}

fn servers(ids: Vec<Uuid>) -> Vec<ServerId> {
    ids.into_iter().map(ServerId::from_uuid).collect()
}

/// Create a remote task (admin)
#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = TaskRequest,
    responses((status = 201, body = TaskResponse), (status = 409, description = "`task_name_taken`"), (status = 422, description = "`validation_failed` (every bad field)")),
    security(("bearer" = [])))]
pub async fn create_task(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    body: ValidatedJson<TaskRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let b = body.into_inner();
    let draft = TaskDraft {
        name: b.name,
        command: b.command,
        server_ids: servers(b.server_ids),
        schedule: b.schedule.into(),
        timeout_secs: b.timeout_secs,
        output_limit_bytes: b.output_limit_bytes,
        enabled: b.enabled,
    };
    let task = tasks.create(&actor, &draft).await?;
    Ok(HttpResponse::Created().json(TaskResponse::from(&task)))
}

/// List remote tasks (admin)
#[utoipa::path(get, path = "/tasks", tag = "tasks", params(PageQuery), responses((status = 200, body = PageResponse<TaskResponse>)), security(("bearer" = [])))]
pub async fn list_tasks(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let list = tasks.list(&actor, &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |t| TaskResponse::from(&t))))
}

/// Get a remote task (admin)
#[utoipa::path(get, path = "/tasks/{task_id}", tag = "tasks", params(("task_id" = Uuid, Path)),
    responses((status = 200, body = TaskResponse), (status = 404, description = "`task_not_found`")), security(("bearer" = [])))]
pub async fn get_task(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let task = tasks
        .get(&actor, TaskId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(&task)))
}

/// Change a remote task (admin)
///
/// A new schedule, or enabling a disabled task, makes it due next by its schedule.
#[utoipa::path(patch, path = "/tasks/{task_id}", tag = "tasks", params(("task_id" = Uuid, Path)), request_body = TaskPatch,
    responses((status = 200, body = TaskResponse), (status = 404, description = "`task_not_found`"), (status = 409, description = "`task_name_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn update_task(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<TaskPatch>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let p = body.into_inner();
    let task = tasks
        .update(&actor, TaskId::from_uuid(path.into_inner()), move |d| {
            if let Some(v) = p.name {
                d.name = v;
            }
            if let Some(v) = p.command {
                d.command = v;
            }
            if let Some(v) = p.server_ids {
                d.server_ids = servers(v);
            }
            if let Some(v) = p.schedule {
                d.schedule = v.into();
            }
            if p.timeout_secs.is_some() {
                d.timeout_secs = p.timeout_secs;
            }
            if p.output_limit_bytes.is_some() {
                d.output_limit_bytes = p.output_limit_bytes;
            }
            if p.enabled.is_some() {
                d.enabled = p.enabled;
            }
        })
        .await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(&task)))
}

/// Delete a remote task and its runs (admin)
#[utoipa::path(delete, path = "/tasks/{task_id}", tag = "tasks", params(("task_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "`task_not_found`")), security(("bearer" = [])))]
pub async fn delete_task(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    tasks
        .delete(&actor, TaskId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Run a task now (admin)
///
/// Queues one run per server; `GET …/runs` shows them as they end.
#[utoipa::path(post, path = "/tasks/{task_id}/run", tag = "tasks", params(("task_id" = Uuid, Path)),
    responses((status = 202, body = RunsQueuedResponse), (status = 404, description = "`task_not_found`")), security(("bearer" = [])))]
pub async fn run_task(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let runs = tasks
        .run_now(&actor, TaskId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Accepted().json(RunsQueuedResponse {
        runs: runs.iter().map(RunResponse::from).collect(),
    }))
}

/// A task's runs, newest first (admin)
#[utoipa::path(get, path = "/tasks/{task_id}/runs", tag = "tasks", params(("task_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = PageResponse<RunResponse>), (status = 404, description = "`task_not_found`")), security(("bearer" = [])))]
pub async fn task_runs(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    path: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let list = tasks
        .runs(&actor, TaskId::from_uuid(path.into_inner()), &page)
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |r| RunResponse::from(&r))))
}

/// One run of a task (admin)
#[utoipa::path(get, path = "/tasks/{task_id}/runs/{run_id}", tag = "tasks", params(("task_id" = Uuid, Path), ("run_id" = Uuid, Path)),
    responses((status = 200, body = RunResponse), (status = 404, description = "`task_not_found`, `run_not_found`")), security(("bearer" = [])))]
pub async fn task_run(
    req: HttpRequest,
    caller: Caller,
    tasks: web::Data<TaskService>,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (task, run) = path.into_inner();
    let run = tasks
        .run(&actor, TaskId::from_uuid(task), RunId::from_uuid(run))
        .await?;
    Ok(HttpResponse::Ok().json(RunResponse::from(&run)))
}
