//! Deployments (admin) and the agents' side of them: bodies and thin handlers.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use maas_shared::http::{ApiError, PageQuery, PageResponse, ValidatedJson};
use maas_user::contract::Caller;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

use super::dto::{EngineDto, SourceDto};
use super::node::Node;
use crate::app::deployments::DeploymentService;
use crate::app::feed::InstanceFeed;
use crate::domain::deployment::{
    Assignment, Assignments, DeployEvent, Deployment, DeploymentDraft, DeploymentId,
    DeploymentPatch, DeploymentState, Instance, InstanceId, InstanceReport, InstanceState,
    Placement,
};
use crate::domain::errors::{InvalidValue, ModelError};
use crate::domain::registry::ModelId;
use crate::domain::server::ServerId;

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    maas_shared::whole::opt_u64(d)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Which servers may hold the replicas.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementDto {
    /// Allowed servers (empty: any); at most 64, distinct.
    #[serde(default)]
    pub servers: Vec<Uuid>,
    /// Labels a server must carry (at most 32).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl From<PlacementDto> for Placement {
    fn from(p: PlacementDto) -> Self {
        Self {
            servers: p.servers.into_iter().map(ServerId::from_uuid).collect(),
            labels: p.labels,
        }
    }
}

impl From<&Placement> for PlacementDto {
    fn from(p: &Placement) -> Self {
        Self {
            servers: p.servers.iter().map(|s| s.as_uuid()).collect(),
            labels: p.labels.clone(),
        }
    }
}

/// A model service to deploy.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// Unique name: 1–128 of letters, digits, `.`, `_`, `-`, `:`, `/`.
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,128}$")]
    pub name: String,
    /// The registered model to serve.
    pub model_id: Uuid,
    /// Engine (default: the model's default engine).
    #[schema(value_type = Option<EngineDto>)]
    pub engine: Option<String>,
    /// Only for `custom`: run as `bash -lc <command>` with `PORT` and `MODEL_PATH` set.
    #[schema(max_length = 4096)]
    pub command: Option<String>,
    /// Extra engine arguments, each passed as one argv item, verbatim (never through a shell):
    /// at most 64 of 1–1024 characters.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment (at most 64; `PORT`, `HOST`, `MODEL_PATH`, `CUDA_VISIBLE_DEVICES`
    /// are the agent's). Values are never returned.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Replicas: 0 to 64 (default 1).
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 64)]
    pub replicas: Option<u64>,
    /// GPUs per replica: 0 (CPU engines) to 16 (default 0).
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 16)]
    pub gpus_per_replica: Option<u64>,
    /// CPU cores per replica, checked against each server's last report.
    #[schema(exclusive_minimum = 0, maximum = 1024)]
    pub cpu_cores: Option<f64>,
    /// Memory per replica in MiB, checked against each server's last report.
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 16777216)]
    pub memory_mib: Option<u64>,
    /// Where replicas may go.
    #[serde(default)]
    pub placement: PlacementDto,
    /// Names callers use as `model` (default: the deployment's name); at most 8, distinct,
    /// each unique across deployments.
    #[serde(default)]
    pub served_names: Vec<String>,
}

/// Changes to a deployment (absent fields stay; `null` clears CPU or memory). New replicas
/// scale; new arguments, environment or served names restart the instances; new resources or
/// placement place them again.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct DeploymentPatchRequest {
    /// Replicas: 0 to 64.
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 64)]
    pub replicas: Option<u64>,
    /// Engine arguments (replaces them all).
    pub args: Option<Vec<String>>,
    /// Environment (replaces it all).
    pub env: Option<BTreeMap<String, String>>,
    /// The custom command.
    #[schema(max_length = 4096)]
    pub command: Option<String>,
    /// GPUs per replica: 0 to 16.
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 16)]
    pub gpus_per_replica: Option<u64>,
    /// CPU cores per replica.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1024)]
    pub cpu_cores: Option<Option<f64>>,
    /// Memory per replica, MiB.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 16777216)]
    pub memory_mib: Option<Option<u64>>,
    /// Placement (replaces it).
    pub placement: Option<PlacementDto>,
    /// Served names (replaces them).
    pub served_names: Option<Vec<String>>,
}

/// A replica count.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ReplicasRequest {
    /// 0 to 64.
    #[serde(deserialize_with = "whole")]
    #[schema(value_type = u64, minimum = 0, maximum = 64)]
    pub replicas: Option<u64>,
}

/// Where a deployment stands.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStateDto {
    /// Waiting for servers that fit (`reason` names each server's answer).
    Pending,
    /// Being placed.
    Scheduling,
    /// Placed, waiting for ready instances.
    Deploying,
    /// Every instance ready.
    Running,
    /// Could not start (`reason`).
    Failed,
    /// Stopping its instances.
    Stopping,
    /// Runs nothing.
    Stopped,
    /// Restarting its instances.
    Restarting,
}

impl From<DeploymentState> for DeploymentStateDto {
    fn from(s: DeploymentState) -> Self {
        match s {
            DeploymentState::Pending => Self::Pending,
            DeploymentState::Scheduling => Self::Scheduling,
            DeploymentState::Deploying => Self::Deploying,
            DeploymentState::Running => Self::Running,
            DeploymentState::Failed => Self::Failed,
            DeploymentState::Stopping => Self::Stopping,
            DeploymentState::Stopped => Self::Stopped,
            DeploymentState::Restarting => Self::Restarting,
        }
    }
}

/// A deployment.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentResponse {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// The model served.
    pub model_id: Uuid,
    /// Engine.
    pub engine: EngineDto,
    /// The custom command.
    pub command: Option<String>,
    /// Extra engine arguments.
    pub args: Vec<String>,
    /// Names of the extra environment variables (values are never returned).
    pub env_names: Vec<String>,
    /// Replicas wanted.
    pub replicas: i32,
    /// GPUs per replica.
    pub gpus_per_replica: i32,
    /// CPU cores per replica.
    pub cpu_cores: Option<f64>,
    /// Memory per replica, MiB.
    pub memory_mib: Option<i64>,
    /// Placement.
    pub placement: PlacementDto,
    /// Names callers use as `model`.
    pub served_names: Vec<String>,
    /// What the admin asked: `running`, `stopped` or `deleted`.
    pub desired: String,
    /// Where it stands.
    pub state: DeploymentStateDto,
    /// The seeds' status word: `deploying`, `running`, `failed` or `stopped`.
    pub status: String,
    /// Why it is in this state.
    pub reason: Option<String>,
    /// Bumped by every restart or runtime change.
    pub generation: i32,
    /// When the current deploy fails if not ready.
    pub deadline: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Deployment> for DeploymentResponse {
    fn from(d: &Deployment) -> Self {
        let s = d.spec();
        Self {
            id: d.id().as_uuid(),
            name: s.name().to_owned(),
            model_id: s.model_id().as_uuid(),
            engine: s.engine().into(),
            command: s.command().map(str::to_owned),
            args: s.args().to_vec(),
            env_names: s.env().keys().cloned().collect(),
            replicas: s.replicas(),
            gpus_per_replica: s.gpus_per_replica(),
            cpu_cores: s.cpu_cores(),
            memory_mib: s.memory_mib(),
            placement: s.placement().into(),
            served_names: s.served_names().to_vec(),
            desired: d.desired().as_str().to_owned(),
            state: d.state().into(),
            status: d.state().legacy().to_owned(),
            reason: d.reason().map(str::to_owned),
            generation: d.generation(),
            deadline: d.deadline(),
            created_by: d.created_by(),
            created_at: d.created_at(),
            updated_at: d.updated_at(),
        }
    }
}

/// What an instance does.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStateDto {
    /// Placed; its agent has not picked it up yet.
    Assigned,
    /// Fetching the model file.
    Downloading,
    /// Running, not answering yet.
    Starting,
    /// Answering: routed to.
    Ready,
    /// Was ready, stopped answering.
    Unhealthy,
    /// Exited; restarted after a backoff.
    Exited,
    /// Cannot start (see `message`).
    Failed,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// Its node went away.
    Lost,
}

impl From<InstanceState> for InstanceStateDto {
    fn from(s: InstanceState) -> Self {
        match s {
            InstanceState::Assigned => Self::Assigned,
            InstanceState::Downloading => Self::Downloading,
            InstanceState::Starting => Self::Starting,
            InstanceState::Ready => Self::Ready,
            InstanceState::Unhealthy => Self::Unhealthy,
            InstanceState::Exited => Self::Exited,
            InstanceState::Failed => Self::Failed,
            InstanceState::Stopping => Self::Stopping,
            InstanceState::Stopped => Self::Stopped,
            InstanceState::Lost => Self::Lost,
        }
    }
}

impl From<InstanceStateDto> for InstanceState {
    fn from(s: InstanceStateDto) -> Self {
        match s {
            InstanceStateDto::Assigned => Self::Assigned,
            InstanceStateDto::Downloading => Self::Downloading,
            InstanceStateDto::Starting => Self::Starting,
            InstanceStateDto::Ready => Self::Ready,
            InstanceStateDto::Unhealthy => Self::Unhealthy,
            InstanceStateDto::Exited => Self::Exited,
            InstanceStateDto::Failed => Self::Failed,
            InstanceStateDto::Stopping => Self::Stopping,
            InstanceStateDto::Stopped => Self::Stopped,
            InstanceStateDto::Lost => Self::Lost,
        }
    }
}

/// An instance (one replica on a server).
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceResponse {
    /// Id.
    pub id: Uuid,
    /// Replica (0-based).
    pub replica: i32,
    /// Where it is placed.
    pub server_id: Uuid,
    /// `running` or `stopped` (stopped ones are removed once their agent stopped them).
    pub desired: String,
    /// The generation it should run.
    pub generation: i32,
    /// What its agent reports.
    pub state: InstanceStateDto,
    /// Its port on the server.
    pub port: Option<i32>,
    /// Its engine's process id.
    pub pid: Option<i32>,
    /// The last exit code.
    pub exit_code: Option<i32>,
    /// Restarts after crashes.
    pub restarts: i32,
    /// The agent's last word on it.
    pub message: Option<String>,
    /// GPU indices it holds.
    pub gpus: Vec<u32>,
    /// Placed.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Instance> for InstanceResponse {
    fn from(i: &Instance) -> Self {
        Self {
            id: i.id.as_uuid(),
            replica: i.replica,
            server_id: i.server_id.as_uuid(),
            desired: if i.desired_running {
                "running"
            } else {
                "stopped"
            }
            .into(),
            generation: i.generation,
            state: i.state.into(),
            port: i.port,
            pid: i.pid,
            exit_code: i.exit_code,
            restarts: i.restarts,
            message: i.message.clone(),
            gpus: i.gpus.clone(),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

/// One line of the deploy log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployEventResponse {
    /// Id (time-ordered).
    pub id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (absent: the platform).
    pub actor: Option<Uuid>,
    /// Machine word: `created`, `scheduled`, `state`, `instance_ready`, `instance_exited`, …
    pub kind: String,
    /// What happened.
    pub message: String,
}

impl From<DeployEvent> for DeployEventResponse {
    fn from(e: DeployEvent) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            kind: e.kind,
            message: e.message,
        }
    }
}

/// The instances of a deployment.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstancesResponse {
    /// By replica.
    pub data: Vec<InstanceResponse>,
}

/// How much of a log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The last lines to send first: 0 to 10000 (default 200).
    #[param(minimum = 0, maximum = 10000)]
    pub tail: Option<u32>,
    /// Keep the response open and send new lines as they come.
    pub follow: Option<bool>,
}

fn draft(b: DeploymentRequest) -> DeploymentDraft {
    DeploymentDraft {
        name: b.name,
        model_id: ModelId::from_uuid(b.model_id),
        engine: b.engine,
        command: b.command,
        args: b.args,
        env: b.env,
        replicas: b.replicas.map_or(1, to_i64),
        gpus_per_replica: b.gpus_per_replica.map_or(0, to_i64),
        cpu_cores: b.cpu_cores,
        memory_mib: b.memory_mib.map(to_i64),
        placement: b.placement.into(),
        served_names: b.served_names,
    }
}

fn patch(b: DeploymentPatchRequest) -> DeploymentPatch {
    DeploymentPatch {
        replicas: b.replicas.map(to_i64),
        args: b.args,
        env: b.env,
        command: b.command,
        gpus_per_replica: b.gpus_per_replica.map(to_i64),
        cpu_cores: b.cpu_cores,
        memory_mib: b.memory_mib.map(|m| m.map(to_i64)),
        placement: b.placement.map(Into::into),
        served_names: b.served_names,
    }
}

fn id(path: web::Path<Uuid>) -> DeploymentId {
    DeploymentId::from_uuid(path.into_inner())
}

/// Deploy a model (admin)
///
/// Stores the deployment (`pending`) and enqueues its deploy job, which places the replicas on
/// servers with free GPUs and follows them until their agents report them ready.
#[utoipa::path(post, path = "/deployments", tag = "deployments", request_body = DeploymentRequest,
    responses((status = 201, body = DeploymentResponse), (status = 409, description = "`deployment_name_taken`, `served_name_taken`"), (status = 422, description = "`validation_failed` (every bad field; an unknown model is `model_id`)")),
    security(("bearer" = [])))]
pub async fn create_deployment(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    body: ValidatedJson<DeploymentRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let deployment = deployments.create(&actor, draft(body.into_inner())).await?;
    Ok(HttpResponse::Created().json(DeploymentResponse::from(&deployment)))
}

/// List deployments (admin)
#[utoipa::path(get, path = "/deployments", tag = "deployments", params(PageQuery),
    responses((status = 200, body = PageResponse<DeploymentResponse>)), security(("bearer" = [])))]
pub async fn list_deployments(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let list = deployments.list(&actor, &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |d| {
        DeploymentResponse::from(&d)
    })))
}

/// Get a deployment (admin)
#[utoipa::path(get, path = "/deployments/{deployment_id}", tag = "deployments", params(("deployment_id" = Uuid, Path)),
    responses((status = 200, body = DeploymentResponse), (status = 404, description = "`deployment_not_found`")), security(("bearer" = [])))]
pub async fn get_deployment(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let deployment = deployments.get(&actor, id(path)).await?;
    Ok(HttpResponse::Ok().json(DeploymentResponse::from(&deployment)))
}

/// Change a deployment (admin)
#[utoipa::path(patch, path = "/deployments/{deployment_id}", tag = "deployments", params(("deployment_id" = Uuid, Path)), request_body = DeploymentPatchRequest,
    responses((status = 200, body = DeploymentResponse), (status = 404, description = "`deployment_not_found`"), (status = 409, description = "`served_name_taken`, `invalid_state` (being deleted)"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn update_deployment(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<DeploymentPatchRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let deployment = deployments
        .update(&actor, id(path), patch(body.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(DeploymentResponse::from(&deployment)))
}

/// Scale a deployment (admin)
#[utoipa::path(patch, path = "/deployments/{deployment_id}/replicas", tag = "deployments", params(("deployment_id" = Uuid, Path)), request_body = ReplicasRequest,
    responses((status = 200, body = DeploymentResponse), (status = 404, description = "`deployment_not_found`"), (status = 409, description = "`invalid_state`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn scale_deployment(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<ReplicasRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let replicas = body
        .into_inner()
        .replicas
        .ok_or_else(|| ModelError::Invalid(vec![InvalidValue::new("replicas", "0 to 64")]))?;
    let deployment = deployments
        .scale(&actor, id(path), to_i64(replicas))
        .await?;
    Ok(HttpResponse::Ok().json(DeploymentResponse::from(&deployment)))
}

/// Delete a deployment (admin)
///
/// Stops every instance, then removes the deployment (answered at once: `GET` shows it
/// `stopping` until it is gone).
#[utoipa::path(delete, path = "/deployments/{deployment_id}", tag = "deployments", params(("deployment_id" = Uuid, Path)),
    responses((status = 202, body = DeploymentResponse), (status = 404, description = "`deployment_not_found`")), security(("bearer" = [])))]
pub async fn delete_deployment(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let id = id(path);
    deployments.delete(&actor, id).await?;
    let deployment = deployments.get(&actor, id).await;
    match deployment {
        Ok(d) => Ok(HttpResponse::Accepted().json(DeploymentResponse::from(&d))),
        Err(ModelError::NotFound(_)) => Ok(HttpResponse::NoContent().finish()),
        Err(e) => Err(e.into()),
    }
}

macro_rules! action {
    ($name:ident, $method:ident, $path:literal, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(post, path = $path, tag = "deployments", params(("deployment_id" = Uuid, Path)),
            responses((status = 202, body = DeploymentResponse), (status = 404, description = "`deployment_not_found`"), (status = 409, description = "`invalid_state` (being deleted)")),
            security(("bearer" = [])))]
        pub async fn $name(
            req: HttpRequest,
            caller: Caller,
            deployments: web::Data<DeploymentService>,
            path: web::Path<Uuid>,
        ) -> Result<HttpResponse, ApiError> {
            actor!(req, caller, ctx, actor);
            let deployment = deployments.$method(&actor, id(path)).await?;
            Ok(HttpResponse::Accepted().json(DeploymentResponse::from(&deployment)))
        }
    };
}

action!(
    start_deployment,
    start,
    "/deployments/{deployment_id}/start",
    "Start a deployment (admin)\n\nStarts a stopped deployment; a failed one starts again under a new generation."
);
action!(
    stop_deployment,
    stop,
    "/deployments/{deployment_id}/stop",
    "Stop a deployment (admin)\n\nIts agents stop every instance (SIGTERM to the engine's process group, SIGKILL after a grace)."
);
action!(
    restart_deployment,
    restart,
    "/deployments/{deployment_id}/restart",
    "Restart a deployment (admin)\n\nEvery instance restarts under a new generation (starting the deployment if it was stopped)."
);

/// A deployment's events (admin)
///
/// The deploy log, oldest first: what was asked, where replicas were placed, what each
/// instance did (ready, exited with its code and the backoff before its restart, lost).
#[utoipa::path(get, path = "/deployments/{deployment_id}/events", tag = "deployments", params(("deployment_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = PageResponse<DeployEventResponse>), (status = 404, description = "`deployment_not_found`")), security(("bearer" = [])))]
pub async fn deployment_events(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    path: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let events = deployments.events(&actor, id(path), &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(events, DeployEventResponse::from)))
}

/// A deployment's instances (admin)
#[utoipa::path(get, path = "/deployments/{deployment_id}/instances", tag = "deployments", params(("deployment_id" = Uuid, Path)),
    responses((status = 200, body = InstancesResponse), (status = 404, description = "`deployment_not_found`")), security(("bearer" = [])))]
pub async fn deployment_instances(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let instances = deployments.instances(&actor, id(path)).await?;
    Ok(HttpResponse::Ok().json(InstancesResponse {
        data: instances.iter().map(InstanceResponse::from).collect(),
    }))
}

/// An instance's engine log (admin)
///
/// Streamed from the instance's agent (at its approved address): the last `tail` lines, then,
/// with `follow=true`, new lines as the engine writes them (`text/plain`).
#[utoipa::path(get, path = "/deployments/{deployment_id}/instances/{instance_id}/logs", tag = "deployments",
    params(("deployment_id" = Uuid, Path), ("instance_id" = Uuid, Path), LogsQuery),
    responses((status = 200, description = "The log", content_type = "text/plain", body = String),
        (status = 404, description = "`deployment_not_found`, `instance_not_found`"),
        (status = 409, description = "`agent_address_not_approved`"),
        (status = 503, description = "`agent_unreachable`")),
    security(("bearer" = [])))]
pub async fn instance_logs(
    req: HttpRequest,
    caller: Caller,
    deployments: web::Data<DeploymentService>,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (deployment, instance) = path.into_inner();
    let q = query.into_inner();
    if q.tail
        .is_some_and(|t| t > crate::app::deployments::MAX_LOG_TAIL)
    {
        return Err(
            ModelError::Invalid(vec![InvalidValue::new("tail", "0 to 10000 lines")]).into(),
        );
    }
    let stream = deployments
        .logs(
            &actor,
            DeploymentId::from_uuid(deployment),
            InstanceId::from_uuid(instance),
            q.tail.unwrap_or(200),
            q.follow.unwrap_or(false),
        )
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("x-content-type-options", "nosniff"))
        .streaming(stream.map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway))))
}

/// What an agent is told to run.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentDto {
    /// The instance.
    pub instance_id: Uuid,
    /// Its deployment.
    pub deployment_id: Uuid,
    /// The deployment's name.
    pub deployment: String,
    /// A new generation (or any other change) means: restart with this description.
    pub generation: i32,
    /// Engine.
    pub engine: EngineDto,
    /// The model's registry name.
    pub model: String,
    /// Where the weights come from.
    pub source: SourceDto,
    /// Served as an embedding model.
    pub embeddings: bool,
    /// The custom engine's command.
    pub command: Option<String>,
    /// Extra arguments, each one argv item.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// GPU indices (`CUDA_VISIBLE_DEVICES`).
    pub gpus: Vec<u32>,
    /// Served names (the engine is started with the first).
    pub served_names: Vec<String>,
}

impl From<Assignment> for AssignmentDto {
    fn from(a: Assignment) -> Self {
        Self {
            instance_id: a.instance_id,
            deployment_id: a.deployment_id,
            deployment: a.deployment,
            generation: a.generation,
            engine: a.engine.into(),
            model: a.model,
            source: (&a.source).into(),
            embeddings: a.embeddings,
            command: a.command,
            args: a.args,
            env: a.env,
            gpus: a.gpus,
            served_names: a.served_names,
        }
    }
}

/// A node's assignments.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentsResponse {
    /// Pass it back as `version` to wait for the next change.
    pub version: String,
    /// What should run on this node.
    pub instances: Vec<AssignmentDto>,
}

impl From<Assignments> for AssignmentsResponse {
    fn from(a: Assignments) -> Self {
        Self {
            version: a.version,
            instances: a.instances.into_iter().map(Into::into).collect(),
        }
    }
}

/// How long to wait for a change.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AssignmentsQuery {
    /// The version the agent has: the answer waits for a different one.
    #[param(max_length = 64)]
    pub version: Option<String>,
    /// Longest wait in seconds: 0 to 60 (default 25).
    #[param(minimum = 0, maximum = 60)]
    pub wait_secs: Option<u64>,
}

/// An agent's word on one instance.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct InstanceReportDto {
    /// The instance.
    pub instance_id: Uuid,
    /// The generation it runs.
    #[schema(minimum = 1)]
    pub generation: i32,
    /// Its state.
    pub state: InstanceStateDto,
    /// Its port.
    pub port: Option<u16>,
    /// Its engine's pid.
    pub pid: Option<u32>,
    /// Its last exit code.
    pub exit_code: Option<i32>,
    /// Restarts after crashes.
    #[serde(default)]
    pub restarts: u32,
    /// An error, or the backoff before the next start (at most 2000 characters).
    #[schema(max_length = 2000)]
    pub message: Option<String>,
}

/// What an agent's instances do.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct InstancesReportRequest {
    /// Every instance it supervises (at most 256).
    #[schema(max_items = 256)]
    pub instances: Vec<InstanceReportDto>,
    /// The secret with which the platform calls this agent (for logs): 32–128 of letters,
    /// digits and `_`. Stored sealed.
    #[schema(min_length = 32, max_length = 128, pattern = "^[A-Za-z0-9_]{32,128}$")]
    pub agent_secret: Option<String>,
}

/// How many instances changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstancesReportResponse {
    /// Instances whose state changed.
    pub changed: usize,
}

/// What to run (agents)
///
/// The instances this node should run. With `version` (the one it has), the answer waits up
/// to `wait_secs` for a change (long-poll). Another node's id is `server_not_found`.
#[utoipa::path(get, path = "/nodes/{server_id}/assignments", tag = "agents", params(("server_id" = Uuid, Path), AssignmentsQuery),
    responses((status = 200, body = AssignmentsResponse), (status = 401, description = "`invalid_node_credential`"), (status = 404, description = "`server_not_found`")),
    security(("node_credential" = [])))]
pub async fn assignments(
    node: Node,
    feed: web::Data<InstanceFeed>,
    path: web::Path<Uuid>,
    query: web::Query<AssignmentsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    if q.version.as_ref().is_some_and(|v| v.len() > 64) || q.wait_secs.is_some_and(|w| w > 60) {
        return Err(ModelError::Invalid(vec![InvalidValue::new(
            "wait_secs",
            "version at most 64 characters, wait_secs 0 to 60",
        )])
        .into());
    }
    let answer = feed
        .assignments(
            node.0,
            ServerId::from_uuid(path.into_inner()),
            q.version.as_deref(),
            Duration::from_secs(q.wait_secs.unwrap_or(25)),
        )
        .await?;
    Ok(HttpResponse::Ok().json(AssignmentsResponse::from(answer)))
}

/// Report instances (agents)
///
/// What each instance this node supervises does. Changes are logged on their deployments,
/// wake their deploy jobs and, when readiness changed, reach every gateway within a second.
#[utoipa::path(put, path = "/nodes/{server_id}/instances", tag = "agents", params(("server_id" = Uuid, Path)), request_body = InstancesReportRequest,
    responses((status = 200, body = InstancesReportResponse), (status = 401, description = "`invalid_node_credential`"), (status = 404, description = "`server_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("node_credential" = [])))]
pub async fn report_instances(
    node: Node,
    feed: web::Data<InstanceFeed>,
    path: web::Path<Uuid>,
    body: ValidatedJson<InstancesReportRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let reports: Vec<InstanceReport> = b
        .instances
        .into_iter()
        .map(|r| InstanceReport {
            instance_id: r.instance_id,
            generation: r.generation,
            state: r.state.into(),
            port: r.port,
            pid: r.pid,
            exit_code: r.exit_code,
            restarts: r.restarts,
            message: r.message,
        })
        .collect();
    let changed = feed
        .report(
            node.0,
            ServerId::from_uuid(path.into_inner()),
            &reports,
            b.agent_secret.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(InstancesReportResponse { changed }))
}
