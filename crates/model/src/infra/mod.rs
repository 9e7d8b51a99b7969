//! Adapters: PostgreSQL (registry, servers), Redis (heartbeats), the HMAC node secrets, the
//! agent HTTP client, and [`Compute::build`] wiring them for a composition root.

pub mod changes;
pub mod deployments_pg;
pub mod heartbeats;
mod pg;
pub mod probe;
pub mod registry_pg;
pub mod remote;
pub mod secrets;
pub mod servers_pg;
pub mod ssh_pg;
pub mod ssh_russh;

use std::sync::Arc;
use std::time::Duration;

use maas_shared::clock::Clock;
use maas_shared::kv::{Keyspace, Multiplexed};
use maas_shared::storage::BlobStore;
use sea_orm::DatabaseConnection;

use async_trait::async_trait;

use crate::app::deployer::{DeployConfig, Deployer, DeployerPorts};
use crate::app::deployments::{DeploymentPorts, DeploymentService};
use crate::app::directory::Directory;
use crate::app::feed::{FeedPorts, InstanceFeed};
use crate::app::nodes::{NodePorts, NodeService};
use crate::app::registry::RegistryService;
use crate::app::servers::{ServerPorts, ServerService};
use crate::app::ssh::{SshConfig, SshPorts, SshService};
use crate::app::tasks::{TaskPorts, TaskService};
use crate::domain::deploy_ports::{
    ComputeEvents, DeployAction, DeployQueue, DeploymentRepository, SecretSealer,
};
use crate::domain::deployment::DeploymentId;
use crate::domain::errors::ModelError;
use crate::domain::ports::{Heartbeats, NodeSecrets, RegistryRepository, ServerRepository};
use crate::domain::server::Liveness;

/// This context's typed configuration (the composition root maps settings to it).
#[derive(Clone, Debug)]
pub struct ComputeConfig {
    /// Heartbeat and report intervals and how silence is graded.
    pub liveness: Liveness,
    /// How long a join token stays valid.
    pub join_token_ttl: chrono::Duration,
    /// The largest logo accepted, in bytes.
    pub logo_max_bytes: usize,
    /// How long a call to an agent may take.
    pub agent_timeout: Duration,
    /// The deploy job's tunables.
    pub deploy: DeployConfig,
    /// The longest long-poll of an agent.
    pub assignment_wait: Duration,
    /// SSH, terminals and remote commands.
    pub ssh: SshConfig,
}

/// What [`Compute::build`] needs: ready adapters and the typed config.
pub struct ComputeParams {
    /// PostgreSQL pool.
    pub db: DatabaseConnection,
    /// Multiplexed Redis connection (heartbeats).
    pub redis: Multiplexed,
    /// This deployment's key prefix.
    pub keys: Keyspace,
    /// The platform's 32-byte key (node secrets are digested under a key derived from it).
    pub platform_key: [u8; 32],
    /// Where logos are stored.
    pub logos: Arc<dyn BlobStore>,
    /// Tunables.
    pub config: ComputeConfig,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// The context's services, wired.
#[derive(Clone)]
pub struct Compute {
    /// Brands, cards, models, logos.
    pub registry: RegistryService,
    /// Server administration.
    pub servers: ServerService,
    /// Agents and the liveness sweep.
    pub nodes: NodeService,
    /// Deployment administration.
    pub deployments: DeploymentService,
    /// The deploy job and the status sync.
    pub deployer: Deployer,
    /// Agents' assignments and instance reports.
    pub feed: InstanceFeed,
    /// Served names → ready endpoints, in memory (start [`changes::listen`] to keep it fresh).
    pub directory: Directory,
    /// Wakes this process's long-polls (fed by [`changes::listen`]).
    pub hub: changes::LocalHub,
    /// SSH access, checks, resources, terminals.
    pub ssh: SshService,
    /// Remote tasks, their schedule and runs.
    pub tasks: TaskService,
}

/// [`DeployQueue`] on the apalis queue of [`crate::jobs::DeployJob`]: delayed jobs (follows,
/// retries) are at most one per deployment per second of run time (the idempotency key), so
/// they never pile up; an immediate kick is always pushed, so a change is never lost to a job
/// that already ran.
struct ApalisDeployQueue {
    redis: Multiplexed,
    keys: Keyspace,
}

#[async_trait]
impl DeployQueue for ApalisDeployQueue {
    async fn enqueue(
        &self,
        deployment: DeploymentId,
        action: DeployAction,
        delay: Duration,
    ) -> Result<(), ModelError> {
        if !delay.is_zero() {
            return self.push_after(deployment, action, 0, delay).await;
        }
        // A kick for a change just made is never folded into a job of the same second: that
        // one may have run already, before the change (the job is idempotent; a spare run
        // finds nothing due).
        let conn = self.redis.get().await?;
        maas_shared::jobs::JobProducer::<crate::jobs::DeployJob>::new(conn, &self.keys)
            .push(crate::jobs::DeployJob {
                deployment_id: deployment.as_uuid(),
                action,
                attempt: 0,
            })
            .await?;
        Ok(())
    }

    async fn retry(
        &self,
        deployment: DeploymentId,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), ModelError> {
        self.push_after(deployment, DeployAction::Retry, attempt, delay)
            .await
    }
}

impl ApalisDeployQueue {
    async fn push_after(
        &self,
        deployment: DeploymentId,
        action: DeployAction,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), ModelError> {
        let conn = self.redis.get().await?;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            + delay;
        let key = format!("deploy:{deployment}:{}", at.as_secs());
        maas_shared::jobs::JobProducer::<crate::jobs::DeployJob>::new(conn, &self.keys)
            .push_once_after(
                crate::jobs::DeployJob {
                    deployment_id: deployment.as_uuid(),
                    action,
                    attempt,
                },
                &key,
                delay,
            )
            .await?;
        Ok(())
    }
}

/// [`SecretSealer`] over the platform's sealing key.
struct PlatformSealer(maas_shared::seal::Sealer);

impl SecretSealer for PlatformSealer {
    fn seal(&self, plaintext: &str) -> Vec<u8> {
        self.0.seal(plaintext)
    }

    fn open(&self, sealed: &[u8]) -> Result<String, ModelError> {
        self.0.open(sealed).map_err(|_| {
            ModelError::Unexpected(anyhow::anyhow!(
                "an agent secret is sealed under another platform key"
            ))
        })
    }
}

impl Compute {
    /// Builds the adapters and services.
    ///
    /// # Errors
    /// When the agent HTTP client cannot be built.
    pub fn build(p: ComputeParams) -> anyhow::Result<Self> {
        let registry_repo: Arc<dyn RegistryRepository> = Arc::new(registry_pg::PgRegistry::new(
            p.db.clone(),
            Arc::clone(&p.clock),
        ));
        let servers: Arc<dyn ServerRepository> = Arc::new(servers_pg::PgServers::new(
            p.db.clone(),
            Arc::clone(&p.clock),
        ));
        let deployments: Arc<dyn DeploymentRepository> =
            Arc::new(deployments_pg::PgDeployments::new(p.db.clone()));
        let queue: Arc<dyn DeployQueue> = Arc::new(ApalisDeployQueue {
            redis: p.redis.clone(),
            keys: p.keys.clone(),
        });
        let events: Arc<dyn ComputeEvents> =
            Arc::new(changes::RedisComputeEvents::new(p.redis.clone(), &p.keys));
        let sealer: Arc<dyn SecretSealer> = Arc::new(PlatformSealer(
            maas_shared::seal::Sealer::new(&p.platform_key),
        ));
        let hub = changes::LocalHub::default();
        let heartbeats: Arc<dyn Heartbeats> =
            Arc::new(heartbeats::RedisHeartbeats::new(p.redis.clone(), &p.keys));
        let ssh = SshService::new(
            SshPorts {
                servers: Arc::clone(&servers),
                ssh: Arc::new(ssh_pg::PgSsh::new(p.db.clone(), Arc::clone(&p.clock))),
                connector: Arc::new(ssh_russh::RusshConnector),
                agents: Arc::new(remote::HttpAgentShell::new(p.config.agent_timeout)?),
                deployments: Arc::clone(&deployments),
                heartbeats: Arc::clone(&heartbeats),
                tickets: Arc::new(remote::RedisTickets::new(p.redis.clone(), &p.keys)),
                sealer: Arc::clone(&sealer),
                clock: Arc::clone(&p.clock),
            },
            p.config.ssh.clone(),
            p.config.liveness,
        );
        let tasks = TaskService::new(TaskPorts {
            tasks: Arc::new(ssh_pg::PgTasks::new(p.db.clone(), Arc::clone(&p.clock))),
            servers: Arc::clone(&servers),
            queue: Arc::new(remote::ApalisRunQueue::new(p.redis.clone(), &p.keys)),
            ssh: ssh.clone(),
            clock: Arc::clone(&p.clock),
        });
        let secrets: Arc<dyn NodeSecrets> =
            Arc::new(secrets::HmacNodeSecrets::new(&p.platform_key));
        let probe = Arc::new(probe::HttpAgentProbe::new(p.config.agent_timeout)?);
        let deployment_service = DeploymentService::new(DeploymentPorts {
            deployments: Arc::clone(&deployments),
            registry: Arc::clone(&registry_repo),
            servers: Arc::clone(&servers),
            queue: Arc::clone(&queue),
            logs: Arc::clone(&probe) as _,
            sealer: Arc::clone(&sealer),
            events: Arc::clone(&events),
            clock: Arc::clone(&p.clock),
        });
        let deployer = Deployer::new(
            DeployerPorts {
                deployments: Arc::clone(&deployments),
                queue: Arc::clone(&queue),
                events: Arc::clone(&events),
                clock: Arc::clone(&p.clock),
            },
            p.config.deploy,
        );
        let feed = InstanceFeed::new(
            FeedPorts {
                deployments: Arc::clone(&deployments),
                queue,
                events: Arc::clone(&events),
                watches: Arc::new(hub.clone()),
                sealer,
                clock: Arc::clone(&p.clock),
            },
            p.config.assignment_wait,
        );
        let directory = Directory::new(deployments);
        let registry = RegistryService::new(
            Arc::clone(&registry_repo),
            p.logos,
            Arc::clone(&p.clock),
            p.config.logo_max_bytes,
        );
        let server_service = ServerService::new(
            ServerPorts {
                servers: Arc::clone(&servers),
                registry: registry_repo,
                heartbeats: Arc::clone(&heartbeats),
                secrets: Arc::clone(&secrets),
                probe: probe as _,
                clock: Arc::clone(&p.clock),
            },
            p.config.liveness,
            p.config.join_token_ttl,
        );
        let nodes = NodeService::new(
            NodePorts {
                servers,
                heartbeats,
                secrets,
                clock: p.clock,
            },
            p.config.liveness,
        )
        .with_events(Arc::clone(&events));
        Ok(Self {
            registry,
            servers: server_service,
            nodes,
            deployments: deployment_service,
            deployer,
            feed,
            directory,
            hub,
            ssh,
            tasks,
        })
    }
}
