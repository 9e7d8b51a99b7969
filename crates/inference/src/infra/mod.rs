//! Adapters of the gateway: PostgreSQL providers and usage, the reqwest upstream client, the
//! sealer, and [`Gateway::build`] wiring them for a composition root.

pub mod cache;
pub mod conversations;
pub mod postgres;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use maas_shared::audit::AuditLog;
use maas_shared::clock::Clock;
use maas_shared::kv::{Keyspace, Multiplexed};
use maas_shared::seal::Sealer;
use maas_shared::tasks::{Background, Tasks};
use maas_user::contract::{QuotaGate, SettledRecords};
use sea_orm::DatabaseConnection;

use crate::app::conversations::{ConversationConfig, ConversationService};
use crate::app::gateway::{GatewayConfig, GatewayPorts, GatewayService};
use crate::app::providers::ProviderService;
use crate::app::usage::UsageService;
use crate::domain::errors::InferenceError;
use crate::domain::ports::KeySealer;

/// [`KeySealer`] over the platform [`Sealer`].
pub struct PlatformSealer(pub Sealer);

impl KeySealer for PlatformSealer {
    fn seal(&self, plaintext: &str) -> Vec<u8> {
        self.0.seal(plaintext)
    }

    fn open(&self, sealed: &[u8]) -> Result<String, InferenceError> {
        self.0
            .open(sealed)
            .map_err(|e| InferenceError::Unexpected(e.into()))
    }
}

/// What [`Gateway::build`] needs: ready adapters and this context's typed config (the
/// composition root maps the platform's settings to it).
pub struct GatewayParams {
    /// PostgreSQL pool.
    pub db: DatabaseConnection,
    /// Multiplexed Redis connection (the response cache).
    pub redis: Multiplexed,
    /// This deployment's key prefix.
    pub keys: Keyspace,
    /// The platform's 32-byte key (upstream keys are sealed with it).
    pub platform_key: [u8; 32],
    /// Upstream timeouts.
    pub timeouts: upstream::Timeouts,
    /// Gateway tunables.
    pub config: GatewayConfig,
    /// How long a cached answer lives; `None` turns the response cache off.
    pub cache_ttl: Option<Duration>,
    /// Conversation tunables.
    pub conversations: ConversationConfig,
    /// The identity context's metering gate.
    pub quota: Arc<dyn QuotaGate>,
    /// Audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The process's background work (settlements of calls whose client left, conversation
    /// writes).
    pub tasks: Tasks,
    /// Served names of deployments and their ready instances, when the model context runs.
    pub deployments: Option<Arc<dyn maas_model::contract::DeploymentDirectory>>,
}

/// The gateway's services, wired.
#[derive(Clone)]
pub struct Gateway {
    /// Proxying.
    pub gateway: GatewayService,
    /// Provider administration.
    pub providers: ProviderService,
    /// Usage reports.
    pub usage: UsageService,
    /// Conversations.
    pub conversations: ConversationService,
}

impl Gateway {
    /// Builds the adapters and services. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn build(p: GatewayParams) -> anyhow::Result<Self> {
        let sealer: Arc<dyn KeySealer> = Arc::new(PlatformSealer(Sealer::new(&p.platform_key)));
        let repo = Arc::new(postgres::PgProviderRepository::new(p.db.clone()));
        let upstream = Arc::new(upstream::HttpUpstream::new(p.timeouts)?);
        let response_cache: Option<Arc<dyn crate::domain::ports::ResponseCache>> =
            p.cache_ttl.map(|ttl| {
                Arc::new(cache::RedisResponseCache::new(
                    p.redis.clone(),
                    p.keys.clone(),
                    ttl,
                )) as Arc<dyn crate::domain::ports::ResponseCache>
            });
        let reports = UsageService::new(
            Arc::new(postgres::PgUsageReports::new(p.db.clone())),
            Arc::clone(&p.clock),
        );
        let background: Arc<dyn Background> = Arc::new(p.tasks.clone());
        let conversations = conversation_service(p.db, Arc::clone(&p.clock), p.conversations);
        let gateway = GatewayService::new(
            GatewayPorts {
                providers: repo.clone(),
                sealer: Arc::clone(&sealer),
                upstream,
                quota: p.quota,
                clock: Arc::clone(&p.clock),
                cache: response_cache,
                background,
            },
            p.config,
        )
        .with_conversations(conversations.clone());
        let gateway = match p.deployments {
            Some(directory) => gateway.with_deployments(directory),
            None => gateway,
        };
        let providers = ProviderService::new(repo, sealer, p.audit, p.clock, gateway.invalidator());
        Ok(Self {
            gateway,
            providers,
            usage: reports,
            conversations,
        })
    }
}

/// Where the worker stores the usage records that travel with settlements; it also keeps the
/// usage table's partitions created ahead of time (a loop registered with `tasks`).
#[must_use]
pub fn usage_records(db: DatabaseConnection, tasks: &Tasks) -> Arc<dyn SettledRecords> {
    postgres::keep_usage_partitions(db.clone(), tasks);
    Arc::new(postgres::PgUsageRecords::new(db))
}

/// The conversation service alone (the worker's expiry job needs nothing else).
#[must_use]
pub fn conversation_service(
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
    config: ConversationConfig,
) -> ConversationService {
    ConversationService::new(
        Arc::new(conversations::PgConversationRepository::new(db)),
        clock,
        config,
    )
}
