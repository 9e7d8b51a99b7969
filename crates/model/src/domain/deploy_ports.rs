//! What deployments need from outside: their storage (with the GPU ledger), the deploy queue,
//! the change feed between processes, and the agents' log streams.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::{Page, PageRequest};

use super::deployment::{
    Assignment, Candidate, DeployEvent, Deployment, DeploymentId, DeploymentState, Instance,
    InstanceId, InstanceReport, InstanceState,
};
use super::errors::ModelError;
use super::server::ServerId;

/// One instance whose reported state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Its deployment.
    pub deployment_id: DeploymentId,
    /// The instance.
    pub instance_id: InstanceId,
    /// Its replica.
    pub replica: i32,
    /// Before.
    pub from: InstanceState,
    /// After.
    pub to: InstanceState,
}

/// A deployment's state as the deploy job writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    /// New state.
    pub state: DeploymentState,
    /// Why.
    pub reason: Option<String>,
    /// When the deploy fails if not ready.
    pub deadline: Option<DateTime<Utc>>,
}

/// A ready endpoint of a served name, as the directory lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRow {
    /// The name callers use.
    pub served_name: String,
    /// The name the engine was started with.
    pub upstream_model: String,
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// When the deployment was created.
    pub created_at: DateTime<Utc>,
    /// A ready instance (`None`: the name is deployed but nothing is ready).
    pub instance: Option<(InstanceId, String)>,
}

/// Deployments, instances and the GPU ledger. Writes of the admin's wishes carry their audit
/// event in the same transaction; every state change carries its deploy-log line.
#[async_trait]
pub trait DeploymentRepository: Send + Sync {
    /// Stores a new deployment with its served names and first event.
    ///
    /// # Errors
    /// [`ModelError::NameTaken`] (its name or a served name); [`ModelError::NotFound`] for a
    /// model deleted meanwhile; storage failures.
    async fn insert(
        &self,
        deployment: &Deployment,
        event: DeployEvent,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError>;

    /// One deployment.
    ///
    /// # Errors
    /// Storage failures.
    async fn get(&self, id: DeploymentId) -> Result<Option<Deployment>, ModelError>;

    /// Deployments, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    async fn list(&self, page: &PageRequest) -> Result<Page<Deployment>, ModelError>;

    /// Stores the admin's side (description, desired state, generation) with the events.
    ///
    /// # Errors
    /// [`ModelError::NameTaken`] for a served name in use; [`ModelError::NotFound`]; storage.
    async fn update(
        &self,
        deployment: &Deployment,
        events: Vec<DeployEvent>,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError>;

    /// Writes the deploy job's side when it differs; returns whether it did (and logged `event`).
    ///
    /// # Errors
    /// Storage failures.
    async fn set_state(
        &self,
        id: DeploymentId,
        change: &StateChange,
        event: DeployEvent,
    ) -> Result<bool, ModelError>;

    /// Removes a deployment that runs nothing any more.
    ///
    /// # Errors
    /// Storage failures.
    async fn remove(
        &self,
        id: DeploymentId,
        audit: NewAuditEvent,
        at: DateTime<Utc>,
    ) -> Result<bool, ModelError>;

    /// The deploy log, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    async fn events(
        &self,
        id: DeploymentId,
        page: &PageRequest,
    ) -> Result<Page<DeployEvent>, ModelError>;

    /// A deployment's instances, by replica.
    ///
    /// # Errors
    /// Storage failures.
    async fn instances(&self, id: DeploymentId) -> Result<Vec<Instance>, ModelError>;

    /// One instance.
    ///
    /// # Errors
    /// Storage failures.
    async fn instance(&self, id: InstanceId) -> Result<Option<Instance>, ModelError>;

    /// Every server as placement sees it for `deployment`.
    ///
    /// # Errors
    /// Storage failures.
    async fn candidates(&self, deployment: DeploymentId) -> Result<Vec<Candidate>, ModelError>;

    /// Stores a placed instance and takes its GPU slots, in one transaction. `false` when a
    /// slot or the replica was taken meanwhile (the ledger's constraints refused it).
    ///
    /// # Errors
    /// Storage failures.
    async fn place(&self, instance: &Instance, event: DeployEvent) -> Result<bool, ModelError>;

    /// Tells these instances to stop (their agents stop them, then they are removed).
    ///
    /// # Errors
    /// Storage failures.
    async fn stop_instances(
        &self,
        ids: &[InstanceId],
        events: Vec<(DeploymentId, DeployEvent)>,
    ) -> Result<(), ModelError>;

    /// Moves the instances of `deployment` that should run to `generation` (their agents
    /// restart them).
    ///
    /// # Errors
    /// Storage failures.
    async fn set_generation(
        &self,
        deployment: DeploymentId,
        generation: i32,
    ) -> Result<u64, ModelError>;

    /// Removes instances (and frees their GPU slots) with their events.
    ///
    /// # Errors
    /// Storage failures.
    async fn remove_instances(
        &self,
        ids: &[InstanceId],
        events: Vec<(DeploymentId, DeployEvent)>,
    ) -> Result<(), ModelError>;

    /// Deployments the deploy job should look at: every one not at rest.
    ///
    /// # Errors
    /// Storage failures.
    async fn unsettled(&self) -> Result<Vec<DeploymentId>, ModelError>;

    /// Instances on servers that went offline before `before`.
    ///
    /// # Errors
    /// Storage failures.
    async fn stranded(&self, before: DateTime<Utc>) -> Result<Vec<Instance>, ModelError>;

    /// What `server` should run.
    ///
    /// # Errors
    /// Storage failures.
    async fn assignments(&self, server: ServerId) -> Result<Vec<Assignment>, ModelError>;

    /// Applies an agent's report of its instances: updates the rows that changed, removes the
    /// stopped ones that should not run, logs each transition. Another node's instances are
    /// ignored.
    ///
    /// # Errors
    /// Storage failures.
    async fn apply_reports(
        &self,
        server: ServerId,
        reports: &[InstanceReport],
        at: DateTime<Utc>,
    ) -> Result<Vec<Transition>, ModelError>;

    /// Every served name of a deployment that should run, with each ready instance's URL.
    ///
    /// # Errors
    /// Storage failures.
    async fn routes(&self) -> Result<Vec<RouteRow>, ModelError>;

    /// Deployments by state and ready instances, for the platform figures.
    ///
    /// # Errors
    /// Storage failures.
    async fn counts(
        &self,
    ) -> Result<(std::collections::BTreeMap<&'static str, u64>, u64), ModelError>;

    /// The sealed secret with which the platform calls `server`'s agent.
    ///
    /// # Errors
    /// Storage failures.
    async fn agent_secret(&self, server: ServerId) -> Result<Option<Vec<u8>>, ModelError>;

    /// Stores the sealed secret an agent gave.
    ///
    /// # Errors
    /// Storage failures.
    async fn set_agent_secret(&self, server: ServerId, sealed: Vec<u8>) -> Result<(), ModelError>;
}

/// Why a deploy job was enqueued. It is logged with the job; what the job does is decided by
/// the deployment's state when it runs (a job for a stale action does only what is still due).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    /// A deployment was created.
    Create,
    /// Its replicas, runtime or placement changed.
    Update,
    /// Start requested.
    Start,
    /// Stop requested.
    Stop,
    /// Restart requested.
    Restart,
    /// Delete requested.
    Delete,
    /// An agent reported a change of its instances.
    Report,
    /// The job's own next look while the deployment is in motion.
    #[default]
    Follow,
    /// A failed step, tried again.
    Retry,
    /// The status sync found it unsettled.
    Sync,
}

impl DeployAction {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Delete => "delete",
            Self::Report => "report",
            Self::Follow => "follow",
            Self::Retry => "retry",
            Self::Sync => "sync",
        }
    }
}

/// The deploy queue.
#[async_trait]
pub trait DeployQueue: Send + Sync {
    /// Enqueues the deploy job of `deployment`, for `action`, to run after `delay`.
    ///
    /// # Errors
    /// When the queue refuses it.
    async fn enqueue(
        &self,
        deployment: DeploymentId,
        action: DeployAction,
        delay: Duration,
    ) -> Result<(), ModelError>;

    /// Enqueues the deploy job of `deployment` again after a failure: its `attempt`-th retry.
    ///
    /// # Errors
    /// When the queue refuses it.
    async fn retry(
        &self,
        deployment: DeploymentId,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), ModelError>;
}

/// Tells every process that something changed (failures are logged, never surfaced: every
/// reader also refreshes on its own schedule).
#[async_trait]
pub trait ComputeEvents: Send + Sync {
    /// What `server` should run changed.
    async fn node_changed(&self, server: ServerId);
    /// Which instances are ready changed.
    async fn routes_changed(&self);
}

/// A wait for the next change of what nodes should run.
#[async_trait]
pub trait NodeWatch: Send {
    /// Resolves when a change was announced since this watch was made (or last resolved), or
    /// after `timeout`.
    async fn changed(&mut self, timeout: Duration);
}

/// Makes [`NodeWatch`]es.
pub trait NodeWatches: Send + Sync {
    /// A watch that sees every change from now on.
    fn watch(&self) -> Box<dyn NodeWatch>;
}

/// Logs of an instance, from its agent.
#[async_trait]
pub trait AgentLogs: Send + Sync {
    /// `GET {url}/instances/{id}/logs?tail=&follow=` with the agent's secret.
    ///
    /// # Errors
    /// [`ModelError::AgentUnreachable`]; [`ModelError::NotFound`] when the agent has none.
    async fn logs(
        &self,
        url: &str,
        secret: &str,
        instance: InstanceId,
        tail: u32,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ModelError>;
}

/// Seals the agents' secrets at rest.
pub trait SecretSealer: Send + Sync {
    /// Seals.
    fn seal(&self, plaintext: &str) -> Vec<u8>;
    /// Opens.
    ///
    /// # Errors
    /// [`ModelError::Unexpected`] for data sealed under another key.
    fn open(&self, sealed: &[u8]) -> Result<String, ModelError>;
}
