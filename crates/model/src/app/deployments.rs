//! Deployments as admins (`ManageServers`) run them: create, change, start, stop, restart,
//! scale, delete; read the deploy log, the instances and an instance's logs. Every action
//! writes the wish to PostgreSQL and enqueues the deploy job, which does the work.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::{Actor, Permission};
use serde_json::json;

use crate::domain::deploy_ports::{
    AgentLogs, ComputeEvents, DeployAction, DeployQueue, DeploymentRepository, SecretSealer,
};
use crate::domain::deployment::{
    DeployEvent, Deployment, DeploymentDraft, DeploymentId, DeploymentPatch, DeploymentState,
    Desired, Instance, InstanceId,
};
use crate::domain::errors::{Entity, InvalidValue, ModelError};
use crate::domain::ports::{RegistryRepository, ServerRepository};

/// The ports [`DeploymentService`] uses.
#[derive(Clone)]
pub struct DeploymentPorts {
    /// Deployments and instances.
    pub deployments: Arc<dyn DeploymentRepository>,
    /// The models deployed.
    pub registry: Arc<dyn RegistryRepository>,
    /// Servers (for the agents' addresses).
    pub servers: Arc<dyn ServerRepository>,
    /// The deploy queue.
    pub queue: Arc<dyn DeployQueue>,
    /// Log streams from agents.
    pub logs: Arc<dyn AgentLogs>,
    /// Opens the agents' secrets.
    pub sealer: Arc<dyn SecretSealer>,
    /// Tells agents and gateways.
    pub events: Arc<dyn ComputeEvents>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Deployment administration.
#[derive(Clone)]
pub struct DeploymentService {
    ports: DeploymentPorts,
}

/// The largest `tail` of a log request.
pub const MAX_LOG_TAIL: u32 = 10_000;

impl DeploymentService {
    /// The service over its ports.
    #[must_use]
    pub fn new(ports: DeploymentPorts) -> Self {
        Self { ports }
    }

    fn admin(actor: &Actor<'_>) -> Result<(), ModelError> {
        Ok(actor.require(Permission::ManageServers)?)
    }

    fn actor_id(actor: &Actor<'_>) -> Option<uuid::Uuid> {
        actor.user_id().map(|u| u.as_uuid())
    }

    async fn kick(&self, id: DeploymentId, action: DeployAction) {
        if let Err(err) = self.ports.queue.enqueue(id, action, Duration::ZERO).await {
            // The status sync enqueues every unsettled deployment on its next tick.
            tracing::warn!(deployment.id = %id, error = %err, "could not enqueue a deploy job; the status sync will");
        }
    }

    /// Creates a deployment; its deploy job places and starts it.
    ///
    /// # Errors
    /// Forbidden; every bad field (an unknown model is `model_id`); a taken name.
    #[tracing::instrument(name = "deployments.create", skip_all)]
    pub async fn create(
        &self,
        actor: &Actor<'_>,
        draft: DeploymentDraft,
    ) -> Result<Deployment, ModelError> {
        Self::admin(actor)?;
        let model = self.ports.registry.model(draft.model_id).await?;
        let spec = draft.parse(
            model
                .as_ref()
                .map_or(crate::domain::registry::Engine::Builtin, |m| {
                    m.spec().default_engine()
                }),
        );
        let spec = match (model, spec) {
            (None, Err(mut errors)) => {
                errors.insert(0, InvalidValue::new("model_id", "no such model"));
                return Err(ModelError::Invalid(errors));
            }
            (None, Ok(_)) => {
                return Err(ModelError::Invalid(vec![InvalidValue::new(
                    "model_id",
                    "no such model",
                )]));
            }
            (Some(_), spec) => spec.map_err(ModelError::Invalid)?,
        };
        let now = self.ports.clock.now();
        let deployment = Deployment::create(spec, Self::actor_id(actor), now);
        let s = deployment.spec();
        let event = DeployEvent::new(
            now,
            Self::actor_id(actor),
            "created",
            format!(
                "created: {} replica(s) of {} on {}, {} GPU(s) each, served as {}",
                s.replicas(),
                s.name(),
                s.engine().as_str(),
                s.gpus_per_replica(),
                s.served_names().join(", ")
            ),
        );
        let audit = actor.event(
            "deployment.create",
            "deployment",
            Some(deployment.id().to_string()),
            json!({"name": s.name(), "engine": s.engine().as_str(), "replicas": s.replicas()}),
        );
        self.ports
            .deployments
            .insert(&deployment, event, audit)
            .await?;
        self.kick(deployment.id(), DeployAction::Create).await;
        Ok(deployment)
    }

    /// One deployment.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn get(&self, actor: &Actor<'_>, id: DeploymentId) -> Result<Deployment, ModelError> {
        Self::admin(actor)?;
        self.load(id).await
    }

    async fn load(&self, id: DeploymentId) -> Result<Deployment, ModelError> {
        self.ports
            .deployments
            .get(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Deployment))
    }

    /// Deployments, oldest first.
    ///
    /// # Errors
    /// Forbidden; storage.
    pub async fn list(
        &self,
        actor: &Actor<'_>,
        page: &PageRequest,
    ) -> Result<Page<Deployment>, ModelError> {
        Self::admin(actor)?;
        self.ports.deployments.list(page).await
    }

    /// Loads a deployment that is not being deleted.
    async fn live(&self, id: DeploymentId) -> Result<Deployment, ModelError> {
        let deployment = self.load(id).await?;
        if deployment.desired == Desired::Deleted {
            return Err(ModelError::InvalidState("the deployment is being deleted"));
        }
        Ok(deployment)
    }

    async fn store(
        &self,
        actor: &Actor<'_>,
        deployment: Deployment,
        (action, kind): (DeployAction, &str),
        message: String,
        details: serde_json::Value,
    ) -> Result<Deployment, ModelError> {
        let now = self.ports.clock.now();
        let event = DeployEvent::new(now, Self::actor_id(actor), kind, message);
        let audit = actor.event(
            &format!("deployment.{kind}"),
            "deployment",
            Some(deployment.id().to_string()),
            details,
        );
        let mut deployment = deployment;
        deployment.updated_at = now;
        self.ports
            .deployments
            .update(&deployment, vec![event], audit)
            .await?;
        self.kick(deployment.id(), action).await;
        Ok(deployment)
    }

    /// Changes a deployment: a new replica count scales; new arguments, environment or served
    /// names restart its instances; new resources or placement place them again.
    ///
    /// # Errors
    /// Forbidden; not found; every bad field; being deleted.
    #[tracing::instrument(name = "deployments.update", skip_all, fields(deployment.id = %id))]
    pub async fn update(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
        patch: DeploymentPatch,
    ) -> Result<Deployment, ModelError> {
        Self::admin(actor)?;
        let mut deployment = self.live(id).await?;
        let (spec, changed) = deployment
            .spec
            .revise(&patch)
            .map_err(ModelError::Invalid)?;
        if changed == crate::domain::deployment::Changed::default() {
            return Ok(deployment);
        }
        let mut what = Vec::new();
        if changed.replicas {
            what.push(format!(
                "replicas {} → {}",
                deployment.spec.replicas(),
                spec.replicas()
            ));
        }
        if changed.runtime {
            what.push("engine arguments, environment or served names changed: restarting".into());
        }
        if changed.placement {
            what.push("resources or placement changed: placing again".into());
        }
        deployment.spec = spec;
        if changed.runtime || changed.placement {
            deployment.generation += 1;
        }
        if deployment.desired == Desired::Running {
            deployment.state = if changed.runtime && !changed.placement && !changed.replicas {
                DeploymentState::Restarting
            } else {
                DeploymentState::Scheduling
            };
            deployment.reason = Some(format!("updated: {}", what.join("; ")));
        }
        if changed.placement {
            // Every replica is placed again under the new resources or placement.
            let now = self.ports.clock.now();
            let instances = self.ports.deployments.instances(id).await?;
            let running: Vec<&Instance> = instances.iter().filter(|i| i.desired_running).collect();
            let ids: Vec<InstanceId> = running.iter().map(|i| i.id).collect();
            let events = running
                .iter()
                .map(|i| {
                    (
                        id,
                        DeployEvent::new(
                            now,
                            Self::actor_id(actor),
                            "instance_stopping",
                            format!("replica {} stopping: placing it again", i.replica),
                        ),
                    )
                })
                .collect();
            self.ports.deployments.stop_instances(&ids, events).await?;
            for server in running
                .iter()
                .map(|i| i.server_id)
                .collect::<std::collections::BTreeSet<_>>()
            {
                self.ports.events.node_changed(server).await;
            }
            self.ports.events.routes_changed().await;
        }
        self.store(
            actor,
            deployment,
            (DeployAction::Update, "updated"),
            format!("updated: {}", what.join("; ")),
            json!({"replicas": changed.replicas, "runtime": changed.runtime, "placement": changed.placement}),
        )
        .await
    }

    /// Sets the replica count.
    ///
    /// # Errors
    /// As [`DeploymentService::update`].
    pub async fn scale(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
        replicas: i64,
    ) -> Result<Deployment, ModelError> {
        self.update(
            actor,
            id,
            DeploymentPatch {
                replicas: Some(replicas),
                ..DeploymentPatch::default()
            },
        )
        .await
    }

    /// Starts a stopped (or failed) deployment.
    ///
    /// # Errors
    /// Forbidden; not found; being deleted.
    pub async fn start(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
    ) -> Result<Deployment, ModelError> {
        Self::admin(actor)?;
        let mut deployment = self.live(id).await?;
        let failed = deployment.state == DeploymentState::Failed;
        if deployment.desired == Desired::Running && !failed {
            return Ok(deployment);
        }
        deployment.desired = Desired::Running;
        if failed {
            // A failed instance is started again only under a new generation.
            deployment.generation += 1;
        }
        deployment.state = DeploymentState::Scheduling;
        deployment.reason = Some("start requested".into());
        self.store(
            actor,
            deployment,
            (DeployAction::Start, "start"),
            "start requested".into(),
            json!({}),
        )
        .await
    }

    /// Stops every instance; the deployment stays.
    ///
    /// # Errors
    /// Forbidden; not found; being deleted.
    pub async fn stop(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
    ) -> Result<Deployment, ModelError> {
        Self::admin(actor)?;
        let mut deployment = self.live(id).await?;
        if deployment.desired == Desired::Stopped {
            return Ok(deployment);
        }
        deployment.desired = Desired::Stopped;
        deployment.state = DeploymentState::Stopping;
        deployment.reason = Some("stop requested".into());
        self.store(
            actor,
            deployment,
            (DeployAction::Stop, "stop"),
            "stop requested".into(),
            json!({}),
        )
        .await
    }

    /// Restarts every instance (a new generation), starting the deployment if it was stopped.
    ///
    /// # Errors
    /// Forbidden; not found; being deleted.
    pub async fn restart(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
    ) -> Result<Deployment, ModelError> {
        Self::admin(actor)?;
        let mut deployment = self.live(id).await?;
        deployment.desired = Desired::Running;
        deployment.generation += 1;
        let generation = deployment.generation;
        deployment.state = DeploymentState::Restarting;
        deployment.reason = Some(format!("restart requested (generation {generation})"));
        self.store(
            actor,
            deployment,
            (DeployAction::Restart, "restart"),
            format!("restart requested (generation {generation})"),
            json!({"generation": generation}),
        )
        .await
    }

    /// Stops every instance, then removes the deployment (its deploy job does both).
    ///
    /// # Errors
    /// Forbidden; not found.
    pub async fn delete(&self, actor: &Actor<'_>, id: DeploymentId) -> Result<(), ModelError> {
        Self::admin(actor)?;
        let mut deployment = self.load(id).await?;
        if deployment.desired == Desired::Deleted {
            return Ok(());
        }
        deployment.desired = Desired::Deleted;
        deployment.state = DeploymentState::Stopping;
        deployment.reason = Some("delete requested".into());
        self.store(
            actor,
            deployment,
            (DeployAction::Delete, "delete"),
            "delete requested: stopping every instance".into(),
            json!({}),
        )
        .await?;
        Ok(())
    }

    /// Adds the deployment figures to `stats`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn add_figures(
        &self,
        mut stats: crate::app::servers::Stats,
    ) -> Result<crate::app::servers::Stats, ModelError> {
        let (by_state, ready) = self.ports.deployments.counts().await?;
        stats.deployments_by_state = by_state;
        stats.ready_instances = ready;
        Ok(stats)
    }

    /// The deploy log.
    ///
    /// # Errors
    /// Forbidden; not found.
    pub async fn events(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
        page: &PageRequest,
    ) -> Result<Page<DeployEvent>, ModelError> {
        Self::admin(actor)?;
        self.load(id).await?;
        self.ports.deployments.events(id, page).await
    }

    /// The instances, by replica.
    ///
    /// # Errors
    /// Forbidden; not found.
    pub async fn instances(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
    ) -> Result<Vec<Instance>, ModelError> {
        Self::admin(actor)?;
        self.load(id).await?;
        self.ports.deployments.instances(id).await
    }

    /// An instance's engine log from its agent: the last `tail` lines, then (with `follow`) new
    /// lines as they are written.
    ///
    /// # Errors
    /// Forbidden; not found (deployment, or an instance of another deployment); the agent not
    /// approved or unreachable.
    pub async fn logs(
        &self,
        actor: &Actor<'_>,
        id: DeploymentId,
        instance: InstanceId,
        tail: u32,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ModelError> {
        Self::admin(actor)?;
        self.load(id).await?;
        let instance = self
            .ports
            .deployments
            .instance(instance)
            .await?
            .filter(|i| i.deployment_id == id)
            .ok_or(ModelError::NotFound(Entity::Instance))?;
        let server = self
            .ports
            .servers
            .get(instance.server_id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Instance))?;
        let url = server
            .agent()
            .and_then(|a| a.approved_url.clone())
            .ok_or(ModelError::AgentNotApproved(
                "the platform calls an agent only at an address an admin approved (POST /servers/{id}/agent/approve)",
            ))?;
        let sealed = self
            .ports
            .deployments
            .agent_secret(instance.server_id)
            .await?
            .ok_or_else(|| {
                ModelError::AgentUnreachable("the agent has not sent its secret yet".into())
            })?;
        let secret = self.ports.sealer.open(&sealed)?;
        self.ports
            .logs
            .logs(&url, &secret, instance.id, tail.min(MAX_LOG_TAIL), follow)
            .await
    }
}
