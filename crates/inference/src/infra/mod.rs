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
use maas_shared::seal::Sealer;
use maas_user::contract::QuotaGate;
use sea_orm::DatabaseConnection;

use crate::app::conversations::{ConversationConfig, ConversationService};
use crate::app::gateway::{GatewayConfig, GatewayService};
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
    /// Builds the adapters and services from settings. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// When the encryption key is malformed or the HTTP client cannot be built.
    pub fn build(
        settings: &maas_shared::config::Settings,
        db: DatabaseConnection,
        quota: Arc<dyn QuotaGate>,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let g = &settings.gateway;
        let sealer: Arc<dyn KeySealer> =
            Arc::new(PlatformSealer(Sealer::new(&settings.crypto.key_bytes()?)));
        let repo = Arc::new(postgres::PgProviderRepository::new(db.clone()));
        let upstream = Arc::new(upstream::HttpUpstream::new(upstream::Timeouts {
            connect: Duration::from_millis(g.connect_timeout_ms),
            first_byte: Duration::from_millis(g.first_byte_timeout_ms),
            idle: Duration::from_millis(g.idle_timeout_ms),
            total: Duration::from_millis(g.total_timeout_ms),
        })?);
        let usage = Arc::new(postgres::BatchedUsage::spawn(db.clone()));
        let db_for_conversations = db.clone();
        let response_cache: Option<Arc<dyn crate::domain::ports::ResponseCache>> =
            if g.cache_ttl_secs > 0 {
                Some(Arc::new(cache::RedisResponseCache::new(
                    maas_shared::kv::Multiplexed::new(&settings.redis)?,
                    maas_shared::kv::Keyspace::new(&settings.redis.key_prefix),
                    Duration::from_secs(g.cache_ttl_secs),
                )))
            } else {
                None
            };
        let reports = UsageService::new(
            Arc::new(postgres::PgUsageReports::new(db)),
            Arc::clone(&clock),
        );
        let gateway = GatewayService::new(
            repo.clone(),
            Arc::clone(&sealer),
            upstream,
            usage,
            quota,
            Arc::clone(&clock),
            GatewayConfig {
                routes_ttl: Duration::from_millis(g.routes_ttl_ms),
                max_response_bytes: g.max_response_bytes,
                default_max_tokens: g.default_max_tokens,
            },
            response_cache,
        );
        let conversations =
            conversation_service(settings, db_for_conversations, Arc::clone(&clock));
        let gateway = gateway.with_conversations(conversations.clone());
        let providers = ProviderService::new(repo, sealer, audit, clock, gateway.invalidator());
        Ok(Self {
            gateway,
            providers,
            usage: reports,
            conversations,
        })
    }
}

/// The conversation service alone (the worker's expiry job needs nothing else).
#[must_use]
pub fn conversation_service(
    settings: &maas_shared::config::Settings,
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
) -> ConversationService {
    let c = &settings.conversations;
    ConversationService::new(
        Arc::new(conversations::PgConversationRepository::new(db)),
        clock,
        ConversationConfig {
            context_messages: c.context_messages,
            ttl: chrono::Duration::hours(i64::try_from(c.ttl_hours).unwrap_or(24 * 365)),
        },
    )
}
