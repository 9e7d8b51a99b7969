//! The deploy job's logic and the status sync. A step reloads the deployment, looks at what
//! its instances report, and does only what is still due: stop what should not run, move
//! instances to the current generation, place missing replicas in the GPU ledger, and grade
//! the deployment. It never waits: it answers when it wants to look again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use maas_shared::clock::Clock;
use serde_json::json;

use crate::domain::deploy_ports::{
    ComputeEvents, DeployAction, DeployQueue, DeploymentRepository, StateChange,
};
use crate::domain::deployment::{
    DeployEvent, Deployment, DeploymentId, DeploymentState, Desired, Instance, InstanceId,
    InstanceState, place,
};
use crate::domain::errors::ModelError;
use crate::domain::server::ServerId;

/// Tunables of the deploy job.
#[derive(Clone, Copy, Debug)]
pub struct DeployConfig {
    /// How long instances may take to turn ready before the deployment fails.
    pub deploy_timeout: chrono::Duration,
    /// How soon a deployment in motion is looked at again.
    pub follow_every: Duration,
    /// How soon a pending deployment tries to place again.
    pub pending_retry: Duration,
    /// How long a node stays offline before its replicas are placed elsewhere.
    pub lost_grace: chrono::Duration,
}

/// The ports of [`Deployer`].
#[derive(Clone)]
pub struct DeployerPorts {
    /// Deployments, instances and the GPU ledger.
    pub deployments: Arc<dyn DeploymentRepository>,
    /// The deploy queue (the status sync enqueues).
    pub queue: Arc<dyn DeployQueue>,
    /// Tells agents and gateways.
    pub events: Arc<dyn ComputeEvents>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// What a step wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// At rest: nothing to follow.
    Done,
    /// Look again after this long.
    After(Duration),
}

/// What one status sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Deployments enqueued.
    pub enqueued: usize,
    /// Instances on lost nodes removed (their replicas are placed again).
    pub lost: usize,
}

/// Runs deployments toward what their admins asked.
#[derive(Clone)]
pub struct Deployer {
    ports: DeployerPorts,
    config: DeployConfig,
}

/// How many times a replica is placed again when the ledger refused a slot taken meanwhile.
const PLACE_ATTEMPTS: usize = 5;

impl Deployer {
    /// The deployer.
    #[must_use]
    pub fn new(ports: DeployerPorts, config: DeployConfig) -> Self {
        Self { ports, config }
    }

    fn event(&self, kind: &str, message: impl Into<String>) -> DeployEvent {
        DeployEvent::new(self.ports.clock.now(), None, kind, message)
    }

    async fn tell_nodes(&self, servers: impl IntoIterator<Item = ServerId>) {
        let servers: BTreeSet<ServerId> = servers.into_iter().collect();
        for server in servers {
            self.ports.events.node_changed(server).await;
        }
    }

    async fn set(
        &self,
        deployment: &Deployment,
        state: DeploymentState,
        reason: Option<String>,
        deadline: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), ModelError> {
        let message = match &reason {
            Some(reason) => format!("{}: {reason}", state.as_str()),
            None => state.as_str().to_owned(),
        };
        let change = StateChange {
            state,
            reason,
            deadline,
        };
        if self
            .ports
            .deployments
            .set_state(deployment.id(), &change, self.event("state", message))
            .await?
        {
            tracing::info!(deployment.id = %deployment.id(), state = state.as_str(), "deployment state changed");
        }
        Ok(())
    }

    /// Runs the deploy job of `id`: one step, then enqueues the next look while the deployment
    /// is in motion. A failed step is retried through the queue after `min(2^attempt, 60)` s
    /// (so it survives this worker).
    ///
    /// # Errors
    /// When even the retry cannot be enqueued (apalis retries the job, the status sync
    /// enqueues it again on its next tick).
    #[tracing::instrument(name = "deploy.job", skip_all, fields(deployment.id = %id, action = action.as_str(), attempt))]
    pub async fn run(
        &self,
        id: DeploymentId,
        action: DeployAction,
        attempt: u32,
    ) -> Result<Next, ModelError> {
        match self.step(id).await {
            Ok(Next::Done) => Ok(Next::Done),
            Ok(Next::After(delay)) => {
                self.ports
                    .queue
                    .enqueue(id, DeployAction::Follow, delay)
                    .await?;
                Ok(Next::After(delay))
            }
            Err(err) => {
                let delay =
                    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60));
                tracing::warn!(deployment.id = %id, attempt, retry_in = ?delay, error = %err, "deploy step failed; retrying");
                self.ports
                    .queue
                    .retry(id, attempt.saturating_add(1), delay)
                    .await?;
                Ok(Next::After(delay))
            }
        }
    }

    /// One step of the deploy job of `id`. Idempotent: any number of steps, interleaved in any
    /// way across workers, converge on the same instances (the ledger refuses double booking).
    ///
    /// # Errors
    /// Storage failures (the job is retried).
    #[tracing::instrument(name = "deploy.step", skip_all, fields(deployment.id = %id))]
    pub async fn step(&self, id: DeploymentId) -> Result<Next, ModelError> {
        let Some(deployment) = self.ports.deployments.get(id).await? else {
            return Ok(Next::Done);
        };
        let instances = self.ports.deployments.instances(id).await?;
        match deployment.desired() {
            Desired::Running => self.converge(&deployment, instances).await,
            Desired::Stopped | Desired::Deleted => self.wind_down(&deployment, instances).await,
        }
    }

    /// Stops every instance; once none is left, the deployment is stopped (or removed).
    async fn wind_down(
        &self,
        deployment: &Deployment,
        instances: Vec<Instance>,
    ) -> Result<Next, ModelError> {
        let (to_stop, stopping): (Vec<&Instance>, Vec<&Instance>) =
            instances.iter().partition(|i| i.desired_running);
        if !to_stop.is_empty() {
            let events = to_stop
                .iter()
                .map(|i| {
                    (
                        deployment.id(),
                        self.event(
                            "instance_stopping",
                            format!("replica {} ({}) stopping", i.replica, i.id),
                        ),
                    )
                })
                .collect();
            let ids: Vec<InstanceId> = to_stop.iter().map(|i| i.id).collect();
            self.ports.deployments.stop_instances(&ids, events).await?;
            self.tell_nodes(to_stop.iter().map(|i| i.server_id)).await;
            self.ports.events.routes_changed().await;
        }
        // One its agent never picked up has nothing to stop.
        let never_started: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Assigned)
            .collect();
        if !never_started.is_empty() {
            let ids: Vec<InstanceId> = never_started.iter().map(|i| i.id).collect();
            let events = never_started
                .iter()
                .map(|i| {
                    (
                        deployment.id(),
                        self.event(
                            "instance_removed",
                            format!("replica {} removed before its agent started it", i.replica),
                        ),
                    )
                })
                .collect();
            self.ports
                .deployments
                .remove_instances(&ids, events)
                .await?;
            self.tell_nodes(never_started.iter().map(|i| i.server_id))
                .await;
        }
        let left = instances.len() - never_started.len();
        let _ = stopping;
        if left > 0 {
            self.set(
                deployment,
                DeploymentState::Stopping,
                Some(format!("{left} instance(s) still stopping")),
                None,
            )
            .await?;
            return Ok(Next::After(self.config.follow_every));
        }
        if deployment.desired() == Desired::Deleted {
            let audit = maas_shared::audit::NewAuditEvent {
                action: "deployment.removed".into(),
                target_type: "deployment".into(),
                target_id: Some(deployment.id().to_string()),
                details: json!({"name": deployment.spec().name()}),
                context: maas_shared::audit::ActionContext::default(),
            };
            self.ports
                .deployments
                .remove(deployment.id(), audit, self.ports.clock.now())
                .await?;
            self.ports.events.routes_changed().await;
            tracing::info!(deployment.id = %deployment.id(), "deployment removed");
            return Ok(Next::Done);
        }
        self.set(deployment, DeploymentState::Stopped, None, None)
            .await?;
        Ok(Next::Done)
    }

    /// Brings the instances to the desired replicas at the current generation, then grades.
    async fn converge(
        &self,
        deployment: &Deployment,
        instances: Vec<Instance>,
    ) -> Result<Next, ModelError> {
        let spec = deployment.spec();
        let generation = deployment.generation();
        let running: Vec<&Instance> = instances.iter().filter(|i| i.desired_running).collect();
        let extra: Vec<&Instance> = running
            .iter()
            .copied()
            .filter(|i| i.replica >= spec.replicas())
            .collect();
        if !extra.is_empty() {
            let ids: Vec<InstanceId> = extra.iter().map(|i| i.id).collect();
            let events = extra
                .iter()
                .map(|i| {
                    (
                        deployment.id(),
                        self.event(
                            "instance_stopping",
                            format!(
                                "replica {} stopping: scaled to {}",
                                i.replica,
                                spec.replicas()
                            ),
                        ),
                    )
                })
                .collect();
            self.ports.deployments.stop_instances(&ids, events).await?;
            self.tell_nodes(extra.iter().map(|i| i.server_id)).await;
            self.ports.events.routes_changed().await;
        }
        let kept: Vec<&Instance> = running
            .iter()
            .copied()
            .filter(|i| i.replica < spec.replicas())
            .collect();
        let stale = kept.iter().any(|i| i.generation < generation);
        if stale {
            self.ports
                .deployments
                .set_generation(deployment.id(), generation)
                .await?;
            self.tell_nodes(kept.iter().map(|i| i.server_id)).await;
            // Restarting instances answer nothing until they report ready again.
            self.ports.events.routes_changed().await;
        }
        let present: BTreeSet<i32> = kept.iter().map(|i| i.replica).collect();
        let missing: Vec<i32> = (0..spec.replicas())
            .filter(|r| !present.contains(r))
            .collect();
        let mut unplaced: Option<Vec<String>> = None;
        let mut placed_now = 0;
        for replica in &missing {
            match self.place_replica(deployment, *replica).await? {
                Ok(()) => placed_now += 1,
                Err(reasons) => {
                    unplaced = Some(reasons);
                    break;
                }
            }
        }
        if let Some(reasons) = unplaced {
            let placed = spec.replicas() - i32::try_from(missing.len()).unwrap_or(0) + placed_now;
            self.set(
                deployment,
                DeploymentState::Pending,
                Some(format!(
                    "{placed} of {} replica(s) placed; waiting for room: {}",
                    spec.replicas(),
                    reasons.join("; ")
                )),
                None,
            )
            .await?;
            return Ok(Next::After(self.config.pending_retry));
        }
        if !missing.is_empty() || stale {
            // Placed or restarted just now: read what the agents say on the next look.
            let state = if stale && missing.is_empty() {
                DeploymentState::Restarting
            } else {
                DeploymentState::Deploying
            };
            let deadline = self.ports.clock.now() + self.config.deploy_timeout;
            self.set(
                deployment,
                state,
                Some(format!(
                    "waiting for {} instance(s) to turn ready",
                    spec.replicas()
                )),
                Some(deadline),
            )
            .await?;
            return Ok(Next::After(self.config.follow_every));
        }
        self.grade(deployment, &kept).await
    }

    /// Places `replica` on the best server; retries when the ledger refused a slot another
    /// worker took meanwhile. The inner error lists why no server fits.
    async fn place_replica(
        &self,
        deployment: &Deployment,
        replica: i32,
    ) -> Result<Result<(), Vec<String>>, ModelError> {
        let spec = deployment.spec();
        for _ in 0..PLACE_ATTEMPTS {
            let candidates = self.ports.deployments.candidates(deployment.id()).await?;
            let placed = match place(spec, &candidates) {
                Ok(placed) => placed,
                Err(reasons) => return Ok(Err(reasons)),
            };
            let now = self.ports.clock.now();
            let instance = Instance {
                id: InstanceId::new(),
                deployment_id: deployment.id(),
                replica,
                server_id: placed.server_id,
                desired_running: true,
                generation: deployment.generation(),
                state: InstanceState::Assigned,
                port: None,
                pid: None,
                exit_code: None,
                restarts: 0,
                message: None,
                gpus: placed.gpus.clone(),
                cpu_cores: spec.cpu_cores(),
                memory_mib: spec.memory_mib(),
                created_at: now,
                updated_at: now,
            };
            let server = candidates
                .iter()
                .find(|c| c.server_id == placed.server_id)
                .map_or_else(String::new, |c| c.name.clone());
            let gpus = if placed.gpus.is_empty() {
                "no GPU".to_owned()
            } else {
                format!(
                    "GPU {}",
                    placed
                        .gpus
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            };
            let event = self.event(
                "scheduled",
                format!("replica {replica} placed on {server} ({gpus})"),
            );
            if self.ports.deployments.place(&instance, event).await? {
                self.ports.events.node_changed(placed.server_id).await;
                return Ok(Ok(()));
            }
            tracing::debug!(
                replica,
                "the ledger refused a slot taken meanwhile; placing again"
            );
        }
        Ok(Err(vec![
            "the GPU ledger kept refusing slots taken meanwhile; trying again".to_owned(),
        ]))
    }

    /// Grades a deployment whose instances are all placed at the current generation.
    async fn grade(&self, deployment: &Deployment, kept: &[&Instance]) -> Result<Next, ModelError> {
        let want = kept.len();
        let ready = kept
            .iter()
            .filter(|i| i.state == InstanceState::Ready)
            .count();
        if want == 0 {
            self.set(
                deployment,
                DeploymentState::Running,
                Some("scaled to 0 replicas".into()),
                None,
            )
            .await?;
            return Ok(Next::Done);
        }
        if let Some(failed) = kept.iter().find(|i| i.state == InstanceState::Failed) {
            self.set(
                deployment,
                DeploymentState::Failed,
                Some(format!(
                    "replica {} cannot start: {}",
                    failed.replica,
                    failed.message.as_deref().unwrap_or("no reason given")
                )),
                None,
            )
            .await?;
            return Ok(Next::Done);
        }
        if ready == want {
            self.set(deployment, DeploymentState::Running, None, None)
                .await?;
            return Ok(Next::Done);
        }
        let summary = kept
            .iter()
            .filter(|i| i.state != InstanceState::Ready)
            .map(|i| {
                let mut line = format!("replica {} {}", i.replica, i.state.as_str());
                if let Some(code) = i.exit_code {
                    line.push_str(&format!(" (exit code {code})"));
                }
                if let Some(message) = &i.message {
                    line.push_str(&format!(": {message}"));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("; ");
        match deployment.state() {
            DeploymentState::Running => {
                // It ran: its agents restart what crashed; the reports wake this job.
                self.set(
                    deployment,
                    DeploymentState::Running,
                    Some(format!("{ready} of {want} instance(s) ready: {summary}")),
                    None,
                )
                .await?;
                Ok(Next::Done)
            }
            DeploymentState::Failed => Ok(Next::Done),
            state @ (DeploymentState::Pending
            | DeploymentState::Scheduling
            | DeploymentState::Deploying
            | DeploymentState::Stopping
            | DeploymentState::Stopped
            | DeploymentState::Restarting) => {
                let now = self.ports.clock.now();
                let deadline = deployment
                    .deadline()
                    .unwrap_or(now + self.config.deploy_timeout);
                if now >= deadline {
                    self.set(
                        deployment,
                        DeploymentState::Failed,
                        Some(format!(
                            "not ready within {} s: {summary}",
                            self.config.deploy_timeout.num_seconds()
                        )),
                        None,
                    )
                    .await?;
                    return Ok(Next::Done);
                }
                let state = if state == DeploymentState::Restarting {
                    state
                } else {
                    DeploymentState::Deploying
                };
                self.set(
                    deployment,
                    state,
                    Some(format!("{ready} of {want} instance(s) ready: {summary}")),
                    Some(deadline),
                )
                .await?;
                Ok(Next::After(self.config.follow_every))
            }
        }
    }

    /// The status sync: replicas whose node stayed offline past the grace are removed (and
    /// placed again by their deploy job), and every deployment not at rest is enqueued, so a
    /// lost job or a crashed worker never leaves one behind.
    ///
    /// # Errors
    /// Storage failures.
    #[tracing::instrument(name = "deploy.sync", skip_all)]
    pub async fn sync(&self) -> Result<Synced, ModelError> {
        let now = self.ports.clock.now();
        let stranded = self
            .ports
            .deployments
            .stranded(now - self.config.lost_grace)
            .await?;
        let mut synced = Synced {
            lost: stranded.len(),
            ..Synced::default()
        };
        let mut touched: BTreeSet<DeploymentId> = BTreeSet::new();
        if !stranded.is_empty() {
            let ids: Vec<InstanceId> = stranded.iter().map(|i| i.id).collect();
            let events = stranded
                .iter()
                .map(|i| {
                    (
                        i.deployment_id,
                        self.event(
                            "instance_lost",
                            format!(
                                "replica {} lost: its node stayed offline past {} s; placing it again",
                                i.replica,
                                self.config.lost_grace.num_seconds()
                            ),
                        ),
                    )
                })
                .collect();
            self.ports
                .deployments
                .remove_instances(&ids, events)
                .await?;
            self.ports.events.routes_changed().await;
            touched.extend(stranded.iter().map(|i| i.deployment_id));
        }
        touched.extend(self.ports.deployments.unsettled().await?);
        for id in touched {
            self.ports
                .queue
                .enqueue(id, DeployAction::Sync, Duration::ZERO)
                .await?;
            synced.enqueued += 1;
        }
        Ok(synced)
    }
}
