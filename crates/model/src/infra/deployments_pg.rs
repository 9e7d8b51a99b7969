//! Deployments, instances, the deploy log and the GPU ledger in PostgreSQL. The ledger's
//! constraints (`gpu_slots` primary key, one running instance per replica) refuse double
//! booking; a refused placement rolls back whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::{Page, PageRequest};
use sea_orm::{
    ConnectionTrait as _, DatabaseConnection, DatabaseTransaction, DbErr, FromQueryResult, SqlErr,
    TransactionTrait as _,
};
use uuid::Uuid;

use super::pg::{commit, corrupt, page_values, stmt};
use crate::domain::deploy_ports::{DeploymentRepository, RouteRow, StateChange, Transition};
use crate::domain::deployment::{
    Assignment, Candidate, DeployEvent, Deployment, DeploymentId, DeploymentSpec, DeploymentState,
    Desired, Instance, InstanceId, InstanceReport, InstanceState, Placement, serves_embeddings,
};
use crate::domain::errors::{Entity, ModelError};
use crate::domain::registry::{Capability, Engine, ModelId, ModelSource};
use crate::domain::server::{NodeReport, ServerId};

/// Deployments in PostgreSQL.
#[derive(Clone)]
pub struct PgDeployments {
    db: DatabaseConnection,
}

impl PgDeployments {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

fn storage(what: &'static str) -> impl FnOnce(DbErr) -> ModelError {
    move |e| ModelError::Unexpected(anyhow::Error::new(e).context(what))
}

/// What a failed deployment write means.
fn deployment_write_error(err: DbErr) -> ModelError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => {
            if message.contains("deployment_names") {
                ModelError::NameTaken(Entity::ServedName)
            } else {
                ModelError::NameTaken(Entity::Deployment)
            }
        }
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => ModelError::NotFound(Entity::Model),
        _ => ModelError::Unexpected(anyhow::Error::new(err).context("writing a deployment")),
    }
}

const DEPLOYMENT_COLUMNS: &str = "d.id, d.name, d.model_id, d.engine, d.command, d.args, d.env, d.replicas, d.gpus_per_replica, \
    d.cpu_cores, d.memory_mib, d.placement, d.desired, d.state, d.reason, d.generation, d.deadline, d.created_by, \
    d.created_at, d.updated_at, \
    (SELECT coalesce(jsonb_agg(n.name ORDER BY n.position), '[]'::jsonb) FROM deployment_names n WHERE n.deployment_id = d.id) AS served_names";

#[derive(Debug, FromQueryResult)]
struct DeploymentRow {
    id: Uuid,
    name: String,
    model_id: Uuid,
    engine: String,
    command: Option<String>,
    args: serde_json::Value,
    env: serde_json::Value,
    replicas: i32,
    gpus_per_replica: i32,
    cpu_cores: Option<f64>,
    memory_mib: Option<i64>,
    placement: serde_json::Value,
    desired: String,
    state: String,
    reason: Option<String>,
    generation: i32,
    deadline: Option<DateTime<Utc>>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    served_names: serde_json::Value,
}

impl TryFrom<DeploymentRow> for Deployment {
    type Error = ModelError;

    fn try_from(r: DeploymentRow) -> Result<Self, ModelError> {
        let bad = |what| corrupt("deployments", r.id, what);
        let engine = Engine::from_name(&r.engine).ok_or_else(|| bad("engine"))?;
        let args: Vec<String> = serde_json::from_value(r.args).map_err(|_| bad("args"))?;
        let env: BTreeMap<String, String> =
            serde_json::from_value(r.env).map_err(|_| bad("env"))?;
        let placement: Placement =
            serde_json::from_value(r.placement).map_err(|_| bad("placement"))?;
        let served_names: Vec<String> =
            serde_json::from_value(r.served_names).map_err(|_| bad("served names"))?;
        Ok(Self {
            id: DeploymentId::from_uuid(r.id),
            spec: DeploymentSpec {
                name: r.name,
                model_id: ModelId::from_uuid(r.model_id),
                engine,
                command: r.command,
                args,
                env,
                replicas: r.replicas,
                gpus_per_replica: r.gpus_per_replica,
                cpu_cores: r.cpu_cores,
                memory_mib: r.memory_mib,
                placement,
                served_names,
            },
            desired: Desired::from_name(&r.desired).ok_or_else(|| bad("desired state"))?,
            state: DeploymentState::from_name(&r.state).ok_or_else(|| bad("state"))?,
            reason: r.reason,
            generation: r.generation,
            deadline: r.deadline,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const INSTANCE_COLUMNS: &str = "i.id, i.deployment_id, i.replica, i.server_id, i.desired, i.generation, i.state, i.port, i.pid, \
    i.exit_code, i.restarts, i.message, i.cpu_cores, i.memory_mib, i.created_at, i.updated_at, \
    (SELECT coalesce(jsonb_agg(g.gpu_index ORDER BY g.gpu_index), '[]'::jsonb) FROM gpu_slots g WHERE g.instance_id = i.id) AS gpus";

#[derive(Debug, FromQueryResult)]
struct InstanceRow {
    id: Uuid,
    deployment_id: Uuid,
    replica: i32,
    server_id: Uuid,
    desired: String,
    generation: i32,
    state: String,
    port: Option<i32>,
    pid: Option<i32>,
    exit_code: Option<i32>,
    restarts: i32,
    message: Option<String>,
    cpu_cores: Option<f64>,
    memory_mib: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    gpus: serde_json::Value,
}

impl TryFrom<InstanceRow> for Instance {
    type Error = ModelError;

    fn try_from(r: InstanceRow) -> Result<Self, ModelError> {
        Ok(Self {
            id: InstanceId::from_uuid(r.id),
            deployment_id: DeploymentId::from_uuid(r.deployment_id),
            replica: r.replica,
            server_id: ServerId::from_uuid(r.server_id),
            desired_running: r.desired == "running",
            generation: r.generation,
            state: InstanceState::from_name(&r.state)
                .ok_or_else(|| corrupt("instances", r.id, "state"))?,
            port: r.port,
            pid: r.pid,
            exit_code: r.exit_code,
            restarts: r.restarts,
            message: r.message,
            gpus: serde_json::from_value(r.gpus).map_err(|_| corrupt("instances", r.id, "gpus"))?,
            cpu_cores: r.cpu_cores,
            memory_mib: r.memory_mib,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

async fn insert_event(
    txn: &DatabaseTransaction,
    deployment: DeploymentId,
    event: &DeployEvent,
) -> Result<(), ModelError> {
    txn.execute(stmt(
        "INSERT INTO deployment_events (id, deployment_id, at, actor, kind, message) VALUES ($1, $2, $3, $4, $5, $6)",
        [
            event.id.into(),
            deployment.as_uuid().into(),
            event.at.into(),
            event.actor.into(),
            event.kind.clone().into(),
            event.message.clone().into(),
        ],
    ))
    .await
    .map_err(storage("logging a deploy event"))?;
    Ok(())
}

async fn insert_names(
    txn: &DatabaseTransaction,
    deployment: &Deployment,
) -> Result<(), ModelError> {
    for (position, name) in deployment.spec.served_names.iter().enumerate() {
        txn.execute(stmt(
            "INSERT INTO deployment_names (name, deployment_id, position) VALUES ($1, $2, $3)",
            [
                name.clone().into(),
                deployment.id.as_uuid().into(),
                i32::try_from(position).unwrap_or(0).into(),
            ],
        ))
        .await
        .map_err(deployment_write_error)?;
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, ModelError> {
    Ok(db.begin().await.context("starting a transaction")?)
}

async fn finish(txn: DatabaseTransaction) -> Result<(), ModelError> {
    txn.commit().await.context("committing")?;
    Ok(())
}

#[derive(Debug, FromQueryResult)]
struct CandidateRow {
    id: Uuid,
    name: String,
    status: String,
    labels: serde_json::Value,
    expected_gpus: i32,
    last_report: Option<serde_json::Value>,
    taken: serde_json::Value,
    cpu_requested: f64,
    memory_requested: i64,
    same: i64,
}

#[derive(Debug, FromQueryResult)]
struct AssignmentRow {
    id: Uuid,
    deployment_id: Uuid,
    deployment: String,
    generation: i32,
    engine: String,
    model: String,
    source: serde_json::Value,
    capabilities: serde_json::Value,
    command: Option<String>,
    args: serde_json::Value,
    env: serde_json::Value,
    gpus: serde_json::Value,
    served_names: serde_json::Value,
}

#[derive(Debug, FromQueryResult)]
struct ReportedRow {
    id: Uuid,
    deployment_id: Uuid,
    replica: i32,
    desired: String,
    generation: i32,
    state: String,
    port: Option<i32>,
    pid: Option<i32>,
    exit_code: Option<i32>,
    restarts: i32,
    message: Option<String>,
}

#[derive(Debug, FromQueryResult)]
struct RouteSqlRow {
    served_name: String,
    upstream: String,
    deployment_id: Uuid,
    created_at: DateTime<Utc>,
    instance_id: Option<Uuid>,
    address: Option<String>,
    port: Option<i32>,
}

#[derive(Debug, FromQueryResult)]
struct StateRow {
    state: String,
    reason: Option<String>,
    deadline: Option<DateTime<Utc>>,
}

/// The base URL of an engine on `address:port` (IPv6 literals bracketed).
fn engine_url(address: &str, port: i32) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("http://[{address}]:{port}/v1")
    } else {
        format!("http://{address}:{port}/v1")
    }
}

fn report_message(replica: i32, r: &InstanceReport, state: InstanceState) -> String {
    let mut line = format!("replica {replica} {}", state.as_str());
    if let (InstanceState::Ready | InstanceState::Starting, Some(port)) = (state, r.port) {
        line.push_str(&format!(" on port {port}"));
    }
    if let Some(code) = r.exit_code.filter(|_| state == InstanceState::Exited) {
        line.push_str(&format!(" with code {code}"));
    }
    if let Some(message) = &r.message {
        line.push_str(&format!(": {message}"));
    }
    line
}

#[async_trait]
impl DeploymentRepository for PgDeployments {
    async fn insert(
        &self,
        deployment: &Deployment,
        event: DeployEvent,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError> {
        let s = &deployment.spec;
        let txn = begin(&self.db).await?;
        txn.execute(stmt(
            "INSERT INTO deployments (id, name, model_id, engine, command, args, env, replicas, gpus_per_replica, cpu_cores, \
             memory_mib, placement, desired, state, reason, generation, deadline, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, $15, NULL, $16, $17, $17)",
            [
                deployment.id.as_uuid().into(),
                s.name.clone().into(),
                s.model_id.as_uuid().into(),
                s.engine.as_str().into(),
                s.command.clone().into(),
                json(&s.args).into(),
                json(&s.env).into(),
                s.replicas.into(),
                s.gpus_per_replica.into(),
                s.cpu_cores.into(),
                s.memory_mib.into(),
                json(&s.placement).into(),
                deployment.desired.as_str().into(),
                deployment.state.as_str().into(),
                deployment.generation.into(),
                deployment.created_by.into(),
                deployment.created_at.into(),
            ],
        ))
        .await
        .map_err(deployment_write_error)?;
        insert_names(&txn, deployment).await?;
        insert_event(&txn, deployment.id, &event).await?;
        commit(txn, audit, deployment.created_at).await
    }

    async fn get(&self, id: DeploymentId) -> Result<Option<Deployment>, ModelError> {
        DeploymentRow::find_by_statement(stmt(
            &format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE d.id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a deployment")?
        .map(Deployment::try_from)
        .transpose()
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<Deployment>, ModelError> {
        let [after, limit] = page_values(page);
        let rows = DeploymentRow::find_by_statement(stmt(
            &format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE ($1::uuid IS NULL OR d.id > $1) ORDER BY d.id LIMIT $2"
            ),
            [after, limit],
        ))
        .all(&self.db)
        .await
        .context("listing deployments")?;
        let deployments = rows
            .into_iter()
            .map(Deployment::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(deployments, page, |d| d.id.as_uuid()))
    }

    async fn update(
        &self,
        deployment: &Deployment,
        events: Vec<DeployEvent>,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError> {
        let s = &deployment.spec;
        let txn = begin(&self.db).await?;
        let done = txn
            .execute(stmt(
                "UPDATE deployments SET command = $2, args = $3, env = $4, replicas = $5, gpus_per_replica = $6, cpu_cores = $7, \
                 memory_mib = $8, placement = $9, desired = $10, generation = $11, updated_at = $12, state = $13, reason = $14, \
                 deadline = CASE WHEN generation = $11 THEN deadline ELSE NULL END WHERE id = $1",
                [
                    deployment.id.as_uuid().into(),
                    s.command.clone().into(),
                    json(&s.args).into(),
                    json(&s.env).into(),
                    s.replicas.into(),
                    s.gpus_per_replica.into(),
                    s.cpu_cores.into(),
                    s.memory_mib.into(),
                    json(&s.placement).into(),
                    deployment.desired.as_str().into(),
                    deployment.generation.into(),
                    deployment.updated_at.into(),
                    deployment.state.as_str().into(),
                    deployment.reason.clone().into(),
                ],
            ))
            .await
            .map_err(deployment_write_error)?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NotFound(Entity::Deployment));
        }
        txn.execute(stmt(
            "DELETE FROM deployment_names WHERE deployment_id = $1",
            [deployment.id.as_uuid().into()],
        ))
        .await
        .map_err(storage("replacing served names"))?;
        insert_names(&txn, deployment).await?;
        for event in &events {
            insert_event(&txn, deployment.id, event).await?;
        }
        commit(txn, audit, deployment.updated_at).await
    }

    async fn set_state(
        &self,
        id: DeploymentId,
        change: &StateChange,
        event: DeployEvent,
    ) -> Result<bool, ModelError> {
        let txn = begin(&self.db).await?;
        let Some(current) = StateRow::find_by_statement(stmt(
            "SELECT state, reason, deadline FROM deployments WHERE id = $1 FOR UPDATE",
            [id.as_uuid().into()],
        ))
        .one(&txn)
        .await
        .context("reading a deployment's state")?
        else {
            return Ok(false);
        };
        let same_state = current.state == change.state.as_str() && current.reason == change.reason;
        if same_state && current.deadline == change.deadline {
            return Ok(false);
        }
        txn.execute(stmt(
            "UPDATE deployments SET state = $2, reason = $3, deadline = $4, updated_at = $5 WHERE id = $1",
            [
                id.as_uuid().into(),
                change.state.as_str().into(),
                change.reason.clone().into(),
                change.deadline.into(),
                event.at.into(),
            ],
        ))
        .await
        .map_err(storage("writing a deployment's state"))?;
        if !same_state {
            insert_event(&txn, id, &event).await?;
        }
        finish(txn).await?;
        Ok(!same_state)
    }

    async fn remove(
        &self,
        id: DeploymentId,
        audit: NewAuditEvent,
        at: DateTime<Utc>,
    ) -> Result<bool, ModelError> {
        let txn = begin(&self.db).await?;
        let done = txn
            .execute(stmt(
                "DELETE FROM deployments d WHERE d.id = $1 AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.deployment_id = d.id)",
                [id.as_uuid().into()],
            ))
            .await
            .map_err(storage("removing a deployment"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        commit(txn, audit, at).await?;
        Ok(true)
    }

    async fn events(
        &self,
        id: DeploymentId,
        page: &PageRequest,
    ) -> Result<Page<DeployEvent>, ModelError> {
        #[derive(FromQueryResult)]
        struct Row {
            id: Uuid,
            at: DateTime<Utc>,
            actor: Option<Uuid>,
            kind: String,
            message: String,
        }
        let [after, limit] = page_values(page);
        let rows = Row::find_by_statement(stmt(
            "SELECT id, at, actor, kind, message FROM deployment_events WHERE deployment_id = $1 AND ($2::uuid IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
            [id.as_uuid().into(), after, limit],
        ))
        .all(&self.db)
        .await
        .context("reading the deploy log")?;
        let events = rows
            .into_iter()
            .map(|r| DeployEvent {
                id: r.id,
                at: r.at,
                actor: r.actor,
                kind: r.kind,
                message: r.message,
            })
            .collect();
        Ok(Page::from_overfetch(events, page, |e| e.id))
    }

    async fn instances(&self, id: DeploymentId) -> Result<Vec<Instance>, ModelError> {
        InstanceRow::find_by_statement(stmt(
            &format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances i WHERE i.deployment_id = $1 ORDER BY i.replica, i.created_at"
            ),
            [id.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("reading instances")?
        .into_iter()
        .map(Instance::try_from)
        .collect()
    }

    async fn instance(&self, id: InstanceId) -> Result<Option<Instance>, ModelError> {
        InstanceRow::find_by_statement(stmt(
            &format!("SELECT {INSTANCE_COLUMNS} FROM instances i WHERE i.id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading an instance")?
        .map(Instance::try_from)
        .transpose()
    }

    async fn candidates(&self, deployment: DeploymentId) -> Result<Vec<Candidate>, ModelError> {
        let rows = CandidateRow::find_by_statement(stmt(
            "SELECT s.id, s.name, s.status, s.labels, s.expected_gpus, s.last_report, \
             (SELECT coalesce(jsonb_agg(g.gpu_index), '[]'::jsonb) FROM gpu_slots g WHERE g.server_id = s.id) AS taken, \
             (SELECT coalesce(sum(i.cpu_cores), 0)::float8 FROM instances i WHERE i.server_id = s.id) AS cpu_requested, \
             (SELECT coalesce(sum(i.memory_mib), 0)::int8 FROM instances i WHERE i.server_id = s.id) AS memory_requested, \
             (SELECT count(*) FROM instances i WHERE i.server_id = s.id AND i.deployment_id = $1 AND i.desired = 'running') AS same \
             FROM servers s ORDER BY s.name",
            [deployment.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("reading placement candidates")?;
        rows.into_iter()
            .map(|r| {
                let labels: BTreeMap<String, String> = serde_json::from_value(r.labels)
                    .map_err(|_| corrupt("servers", r.id, "labels"))?;
                let report: Option<NodeReport> = match r.last_report {
                    Some(v) => Some(
                        serde_json::from_value(v)
                            .map_err(|_| corrupt("servers", r.id, "report"))?,
                    ),
                    None => None,
                };
                let gpus: Vec<u32> = match &report {
                    Some(report) => report.gpus.iter().map(|g| g.index).collect(),
                    None => (0..u32::try_from(r.expected_gpus).unwrap_or(0)).collect(),
                };
                let taken: BTreeSet<u32> = serde_json::from_value(r.taken)
                    .map_err(|_| corrupt("gpu_slots", r.id, "index"))?;
                Ok(Candidate {
                    server_id: ServerId::from_uuid(r.id),
                    name: r.name,
                    ready: r.status == "ready",
                    labels,
                    gpus,
                    gpus_taken: taken,
                    cpu_cores: report.as_ref().map(|r| f64::from(r.cpu_cores)),
                    cpu_requested: r.cpu_requested,
                    memory_mib: report.as_ref().map(|r| {
                        i64::try_from(r.memory_total_bytes / (1024 * 1024)).unwrap_or(i64::MAX)
                    }),
                    memory_requested: r.memory_requested,
                    same_deployment: usize::try_from(r.same).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn place(&self, instance: &Instance, event: DeployEvent) -> Result<bool, ModelError> {
        let txn = begin(&self.db).await?;
        let refused = |e: &DbErr| {
            matches!(
                e.sql_err(),
                Some(
                    SqlErr::UniqueConstraintViolation(_) | SqlErr::ForeignKeyConstraintViolation(_)
                )
            )
        };
        let inserted = txn
            .execute(stmt(
                "INSERT INTO instances (id, deployment_id, replica, server_id, desired, generation, state, restarts, cpu_cores, \
                 memory_mib, created_at, updated_at) VALUES ($1, $2, $3, $4, 'running', $5, 'assigned', 0, $6, $7, $8, $8)",
                [
                    instance.id.as_uuid().into(),
                    instance.deployment_id.as_uuid().into(),
                    instance.replica.into(),
                    instance.server_id.as_uuid().into(),
                    instance.generation.into(),
                    instance.cpu_cores.into(),
                    instance.memory_mib.into(),
                    instance.created_at.into(),
                ],
            ))
            .await;
        match inserted {
            Err(e) if refused(&e) => return Ok(false),
            Err(e) => return Err(storage("placing an instance")(e)),
            Ok(_) => {}
        }
        for gpu in &instance.gpus {
            match txn
                .execute(stmt(
                    "INSERT INTO gpu_slots (server_id, gpu_index, instance_id) VALUES ($1, $2, $3)",
                    [
                        instance.server_id.as_uuid().into(),
                        i32::try_from(*gpu).unwrap_or(i32::MAX).into(),
                        instance.id.as_uuid().into(),
                    ],
                ))
                .await
            {
                Err(e) if refused(&e) => return Ok(false),
                Err(e) => return Err(storage("taking a GPU slot")(e)),
                Ok(_) => {}
            }
        }
        insert_event(&txn, instance.deployment_id, &event).await?;
        finish(txn).await?;
        Ok(true)
    }

    async fn stop_instances(
        &self,
        ids: &[InstanceId],
        events: Vec<(DeploymentId, DeployEvent)>,
    ) -> Result<(), ModelError> {
        let txn = begin(&self.db).await?;
        for id in ids {
            txn.execute(stmt(
                "UPDATE instances SET desired = 'stopped', updated_at = now() WHERE id = $1",
                [id.as_uuid().into()],
            ))
            .await
            .map_err(storage("stopping an instance"))?;
        }
        for (deployment, event) in &events {
            insert_event(&txn, *deployment, event).await?;
        }
        finish(txn).await
    }

    async fn set_generation(
        &self,
        deployment: DeploymentId,
        generation: i32,
    ) -> Result<u64, ModelError> {
        let done = self
            .db
            .execute(stmt(
                "UPDATE instances SET generation = $2, state = 'assigned', message = 'restarting for generation ' || $2, \
                 updated_at = now() WHERE deployment_id = $1 AND desired = 'running' AND generation < $2",
                [deployment.as_uuid().into(), generation.into()],
            ))
            .await
            .map_err(storage("moving instances to a new generation"))?;
        Ok(done.rows_affected())
    }

    async fn remove_instances(
        &self,
        ids: &[InstanceId],
        events: Vec<(DeploymentId, DeployEvent)>,
    ) -> Result<(), ModelError> {
        let txn = begin(&self.db).await?;
        for id in ids {
            txn.execute(stmt(
                "DELETE FROM instances WHERE id = $1",
                [id.as_uuid().into()],
            ))
            .await
            .map_err(storage("removing an instance"))?;
        }
        for (deployment, event) in &events {
            insert_event(&txn, *deployment, event).await?;
        }
        finish(txn).await
    }

    async fn unsettled(&self) -> Result<Vec<DeploymentId>, ModelError> {
        #[derive(FromQueryResult)]
        struct Row {
            id: Uuid,
        }
        let rows = Row::find_by_statement(stmt(
            "SELECT d.id FROM deployments d WHERE d.desired = 'deleted' \
             OR (d.desired = 'stopped' AND d.state <> 'stopped') \
             OR (d.desired = 'running' AND d.state NOT IN ('running', 'failed')) \
             OR (d.desired = 'running' AND d.state = 'running' AND EXISTS (SELECT 1 FROM instances i \
                 WHERE i.deployment_id = d.id AND i.desired = 'running' AND i.generation <> d.generation)) \
             OR (d.desired = 'running' AND d.state = 'running' AND (d.reason IS NOT NULL AND d.replicas > 0 \
                 OR (SELECT count(*) FROM instances i WHERE i.deployment_id = d.id AND i.desired = 'running') <> d.replicas \
                 OR EXISTS (SELECT 1 FROM instances i WHERE i.deployment_id = d.id AND i.desired = 'running' AND i.state <> 'ready'))) \
             ORDER BY d.id",
            [],
        ))
        .all(&self.db)
        .await
        .context("finding unsettled deployments")?;
        Ok(rows
            .into_iter()
            .map(|r| DeploymentId::from_uuid(r.id))
            .collect())
    }

    async fn stranded(&self, before: DateTime<Utc>) -> Result<Vec<Instance>, ModelError> {
        InstanceRow::find_by_statement(stmt(
            &format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances i JOIN servers s ON s.id = i.server_id \
                 WHERE s.status = 'offline' AND s.status_changed_at < $1 ORDER BY i.id"
            ),
            [before.into()],
        ))
        .all(&self.db)
        .await
        .context("finding stranded instances")?
        .into_iter()
        .map(Instance::try_from)
        .collect()
    }

    async fn assignments(&self, server: ServerId) -> Result<Vec<Assignment>, ModelError> {
        let rows = AssignmentRow::find_by_statement(stmt(
            "SELECT i.id, i.deployment_id, d.name AS deployment, i.generation, d.engine, m.name AS model, m.source, \
             m.capabilities, d.command, d.args, d.env, \
             (SELECT coalesce(jsonb_agg(g.gpu_index ORDER BY g.gpu_index), '[]'::jsonb) FROM gpu_slots g WHERE g.instance_id = i.id) AS gpus, \
             (SELECT coalesce(jsonb_agg(n.name ORDER BY n.position), '[]'::jsonb) FROM deployment_names n WHERE n.deployment_id = d.id) AS served_names \
             FROM instances i JOIN deployments d ON d.id = i.deployment_id JOIN models m ON m.id = d.model_id \
             WHERE i.server_id = $1 AND i.desired = 'running' ORDER BY i.id",
            [server.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("reading a node's assignments")?;
        rows.into_iter()
            .map(|r| {
                let bad = |what| corrupt("instances", r.id, what);
                let capabilities: Vec<String> =
                    serde_json::from_value(r.capabilities).map_err(|_| bad("capabilities"))?;
                let capabilities: BTreeSet<Capability> = capabilities
                    .iter()
                    .filter_map(|c| Capability::from_name(c))
                    .collect();
                Ok(Assignment {
                    instance_id: r.id,
                    deployment_id: r.deployment_id,
                    deployment: r.deployment,
                    generation: r.generation,
                    engine: Engine::from_name(&r.engine).ok_or_else(|| bad("engine"))?,
                    model: r.model,
                    source: serde_json::from_value::<ModelSource>(r.source)
                        .map_err(|_| bad("model source"))?,
                    embeddings: serves_embeddings(&capabilities),
                    command: r.command,
                    args: serde_json::from_value(r.args).map_err(|_| bad("args"))?,
                    env: serde_json::from_value(r.env).map_err(|_| bad("env"))?,
                    gpus: serde_json::from_value(r.gpus).map_err(|_| bad("gpus"))?,
                    served_names: serde_json::from_value(r.served_names)
                        .map_err(|_| bad("served names"))?,
                })
            })
            .collect()
    }

    async fn apply_reports(
        &self,
        server: ServerId,
        reports: &[InstanceReport],
        at: DateTime<Utc>,
    ) -> Result<Vec<Transition>, ModelError> {
        let by_id: HashMap<Uuid, &InstanceReport> =
            reports.iter().map(|r| (r.instance_id, r)).collect();
        let txn = begin(&self.db).await?;
        let rows = ReportedRow::find_by_statement(stmt(
            "SELECT id, deployment_id, replica, desired, generation, state, port, pid, exit_code, restarts, message \
             FROM instances WHERE server_id = $1 ORDER BY id FOR UPDATE",
            [server.as_uuid().into()],
        ))
        .all(&txn)
        .await
        .context("reading a node's instances")?;
        let mut transitions = Vec::new();
        for row in rows {
            let from = InstanceState::from_name(&row.state)
                .ok_or_else(|| corrupt("instances", row.id, "state"))?;
            let report = by_id.get(&row.id).copied();
            let deployment = DeploymentId::from_uuid(row.deployment_id);
            let transition = |to| Transition {
                deployment_id: deployment,
                instance_id: InstanceId::from_uuid(row.id),
                replica: row.replica,
                from,
                to,
            };
            if row.desired != "running" {
                let gone = report.is_none_or(|r| {
                    matches!(
                        r.state,
                        InstanceState::Stopped | InstanceState::Exited | InstanceState::Failed
                    )
                });
                if gone {
                    txn.execute(stmt("DELETE FROM instances WHERE id = $1", [row.id.into()]))
                        .await
                        .map_err(storage("removing a stopped instance"))?;
                    let event = DeployEvent::new(
                        at,
                        None,
                        "instance_stopped",
                        format!("replica {} stopped; its GPU slots are free", row.replica),
                    );
                    insert_event(&txn, deployment, &event).await?;
                    transitions.push(transition(InstanceState::Stopped));
                }
                continue;
            }
            let Some(report) = report else { continue };
            let (state, message) = if report.generation < row.generation {
                (
                    InstanceState::Starting,
                    Some(format!("restarting for generation {}", row.generation)),
                )
            } else {
                (report.state, report.message.clone())
            };
            let port = report.port.map(i32::from);
            let pid = report.pid.and_then(|p| i32::try_from(p).ok());
            let restarts = i32::try_from(report.restarts).unwrap_or(i32::MAX);
            if from == state
                && row.port == port
                && row.pid == pid
                && row.exit_code == report.exit_code
                && row.restarts == restarts
                && row.message == message
            {
                continue;
            }
            txn.execute(stmt(
                "UPDATE instances SET state = $2, port = $3, pid = $4, exit_code = $5, restarts = $6, message = $7, updated_at = $8 \
                 WHERE id = $1",
                [
                    row.id.into(),
                    state.as_str().into(),
                    port.into(),
                    pid.into(),
                    report.exit_code.into(),
                    restarts.into(),
                    message.clone().into(),
                    at.into(),
                ],
            ))
            .await
            .map_err(storage("recording an instance's state"))?;
            if from != state || row.restarts != restarts {
                let shown = InstanceReport {
                    message,
                    ..report.clone()
                };
                let kind = format!("instance_{}", state.as_str());
                let event =
                    DeployEvent::new(at, None, &kind, report_message(row.replica, &shown, state));
                insert_event(&txn, deployment, &event).await?;
                transitions.push(transition(state));
            }
        }
        finish(txn).await?;
        Ok(transitions)
    }

    async fn routes(&self) -> Result<Vec<RouteRow>, ModelError> {
        let rows = RouteSqlRow::find_by_statement(stmt(
            "SELECT n.name AS served_name, \
             (SELECT f.name FROM deployment_names f WHERE f.deployment_id = d.id ORDER BY f.position LIMIT 1) AS upstream, \
             d.id AS deployment_id, d.created_at, i.id AS instance_id, s.address, i.port \
             FROM deployment_names n JOIN deployments d ON d.id = n.deployment_id \
             LEFT JOIN instances i ON i.deployment_id = d.id AND i.desired = 'running' AND i.state = 'ready' AND i.port IS NOT NULL \
             LEFT JOIN servers s ON s.id = i.server_id AND s.status = 'ready' \
             WHERE d.desired <> 'deleted' ORDER BY n.name, i.id",
            [],
        ))
        .all(&self.db)
        .await
        .context("reading the routes to deployments")?;
        Ok(rows
            .into_iter()
            .map(|r| RouteRow {
                served_name: r.served_name,
                upstream_model: r.upstream,
                deployment_id: DeploymentId::from_uuid(r.deployment_id),
                created_at: r.created_at,
                instance: match (r.instance_id, r.address, r.port) {
                    (Some(id), Some(address), Some(port)) => {
                        Some((InstanceId::from_uuid(id), engine_url(&address, port)))
                    }
                    _ => None,
                },
            })
            .collect())
    }

    async fn counts(&self) -> Result<(BTreeMap<&'static str, u64>, u64), ModelError> {
        #[derive(FromQueryResult)]
        struct Row {
            state: String,
            n: i64,
        }
        #[derive(FromQueryResult)]
        struct Ready {
            n: i64,
        }
        let rows = Row::find_by_statement(stmt(
            "SELECT state, count(*) AS n FROM deployments GROUP BY state",
            [],
        ))
        .all(&self.db)
        .await
        .context("counting deployments")?;
        let mut by_state = BTreeMap::new();
        for row in rows {
            if let Some(state) = DeploymentState::from_name(&row.state) {
                by_state.insert(state.as_str(), u64::try_from(row.n).unwrap_or(0));
            }
        }
        let ready = Ready::find_by_statement(stmt(
            "SELECT count(*) AS n FROM instances WHERE desired = 'running' AND state = 'ready'",
            [],
        ))
        .one(&self.db)
        .await
        .context("counting ready instances")?
        .map_or(0, |r| u64::try_from(r.n).unwrap_or(0));
        Ok((by_state, ready))
    }

    async fn agent_secret(&self, server: ServerId) -> Result<Option<Vec<u8>>, ModelError> {
        #[derive(FromQueryResult)]
        struct Row {
            agent_secret_sealed: Option<Vec<u8>>,
        }
        Ok(Row::find_by_statement(stmt(
            "SELECT agent_secret_sealed FROM servers WHERE id = $1",
            [server.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading an agent's secret")?
        .and_then(|r| r.agent_secret_sealed))
    }

    async fn set_agent_secret(&self, server: ServerId, sealed: Vec<u8>) -> Result<(), ModelError> {
        self.db
            .execute(stmt(
                "UPDATE servers SET agent_secret_sealed = $2 WHERE id = $1",
                [server.as_uuid().into(), sealed.into()],
            ))
            .await
            .map_err(storage("storing an agent's secret"))?;
        Ok(())
    }
}
