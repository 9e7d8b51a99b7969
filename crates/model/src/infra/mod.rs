//! Adapters: PostgreSQL (registry, servers), Redis (heartbeats), the HMAC node secrets, the
//! agent HTTP client, and [`Compute::build`] wiring them for a composition root.

pub mod heartbeats;
mod pg;
pub mod probe;
pub mod registry_pg;
pub mod secrets;
pub mod servers_pg;

use std::sync::Arc;
use std::time::Duration;

use maas_shared::clock::Clock;
use maas_shared::kv::{Keyspace, Multiplexed};
use maas_shared::storage::BlobStore;
use sea_orm::DatabaseConnection;

use crate::app::nodes::{NodePorts, NodeService};
use crate::app::registry::RegistryService;
use crate::app::servers::{ServerPorts, ServerService};
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
        let servers: Arc<dyn ServerRepository> =
            Arc::new(servers_pg::PgServers::new(p.db, Arc::clone(&p.clock)));
        let heartbeats: Arc<dyn Heartbeats> =
            Arc::new(heartbeats::RedisHeartbeats::new(p.redis, &p.keys));
        let secrets: Arc<dyn NodeSecrets> =
            Arc::new(secrets::HmacNodeSecrets::new(&p.platform_key));
        let probe = Arc::new(probe::HttpAgentProbe::new(p.config.agent_timeout)?);
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
                probe,
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
        );
        Ok(Self {
            registry,
            servers: server_service,
            nodes,
        })
    }
}
