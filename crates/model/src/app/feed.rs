//! The agents' side of deployments: a node long-polls what it should run (answered at once when
//! its list changed, else when it changes or the wait ends) and reports what its instances do.
//! A report that changes an instance's state logs it, wakes the instance's deploy job and, when
//! readiness changed, tells every gateway.

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use maas_shared::clock::Clock;

use crate::domain::deploy_ports::{
    ComputeEvents, DeployAction, DeployQueue, DeploymentRepository, NodeWatches, SecretSealer,
};
use crate::domain::deployment::{Assignments, InstanceReport, InstanceState};
use crate::domain::errors::{Entity, InvalidValue, ModelError};
use crate::domain::ports::NodeSession;
use crate::domain::server::ServerId;

/// The ports of [`InstanceFeed`].
#[derive(Clone)]
pub struct FeedPorts {
    /// Deployments and instances.
    pub deployments: Arc<dyn DeploymentRepository>,
    /// Wakes deploy jobs.
    pub queue: Arc<dyn DeployQueue>,
    /// Tells gateways.
    pub events: Arc<dyn ComputeEvents>,
    /// Wakes long-polls.
    pub watches: Arc<dyn NodeWatches>,
    /// Seals agents' secrets.
    pub sealer: Arc<dyn SecretSealer>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Agents' instance assignments and reports.
#[derive(Clone)]
pub struct InstanceFeed {
    ports: FeedPorts,
    max_wait: Duration,
}

/// The longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

fn own(session: NodeSession, id: ServerId) -> Result<(), ModelError> {
    if session.server == id {
        Ok(())
    } else {
        Err(ModelError::NotFound(Entity::Server))
    }
}

/// The version of an assignment list: equal lists, equal versions (in every replica).
fn fingerprint(list: &[crate::domain::deployment::Assignment]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(list)
        .unwrap_or_default()
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl InstanceFeed {
    /// The feed; a long-poll waits at most `max_wait` (capped at [`MAX_WAIT`]).
    #[must_use]
    pub fn new(ports: FeedPorts, max_wait: Duration) -> Self {
        Self {
            ports,
            max_wait: max_wait.min(MAX_WAIT),
        }
    }

    /// What node `id` should run. With `known` (the version it has), waits up to `wait` for a
    /// change before answering the same list.
    ///
    /// # Errors
    /// Another node's id is not found; storage failures.
    pub async fn assignments(
        &self,
        session: NodeSession,
        id: ServerId,
        known: Option<&str>,
        wait: Duration,
    ) -> Result<Assignments, ModelError> {
        own(session, id)?;
        let deadline = Instant::now() + wait.min(self.max_wait);
        // Watching before reading: a change between the read and the wait still wakes it.
        let mut watch = self.ports.watches.watch();
        loop {
            let instances = self.ports.deployments.assignments(id).await?;
            let version = fingerprint(&instances);
            let now = Instant::now();
            if known != Some(version.as_str()) || now >= deadline {
                return Ok(Assignments { version, instances });
            }
            watch.changed(deadline - now).await;
        }
    }

    /// Applies node `id`'s report of its instances (and keeps the secret its agent gave for
    /// the platform's calls, sealed).
    ///
    /// # Errors
    /// Another node's id is not found; bad fields; storage failures.
    pub async fn report(
        &self,
        session: NodeSession,
        id: ServerId,
        reports: &[InstanceReport],
        agent_secret: Option<&str>,
    ) -> Result<usize, ModelError> {
        own(session, id)?;
        let mut errors = Vec::new();
        if let Err(e) = InstanceReport::check(reports) {
            errors.push(e);
        }
        if agent_secret.is_some_and(|s| {
            !(32..=128).contains(&s.len())
                || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }) {
            errors.push(InvalidValue::new(
                "agent_secret",
                "32 to 128 characters of letters, digits and '_'",
            ));
        }
        ModelError::check(errors)?;
        if let Some(secret) = agent_secret {
            self.ports
                .deployments
                .set_agent_secret(id, self.ports.sealer.seal(secret))
                .await?;
        }
        let now = self.ports.clock.now();
        let transitions = self
            .ports
            .deployments
            .apply_reports(id, reports, now)
            .await?;
        if transitions.is_empty() {
            return Ok(0);
        }
        if transitions
            .iter()
            .any(|t| t.from == InstanceState::Ready || t.to == InstanceState::Ready)
        {
            self.ports.events.routes_changed().await;
        }
        let deployments: std::collections::BTreeSet<_> =
            transitions.iter().map(|t| t.deployment_id).collect();
        for deployment in deployments {
            if let Err(err) = self
                .ports
                .queue
                .enqueue(deployment, DeployAction::Report, Duration::ZERO)
                .await
            {
                tracing::warn!(deployment.id = %deployment, error = %err, "could not wake a deploy job; the status sync will");
            }
        }
        Ok(transitions.len())
    }
}
