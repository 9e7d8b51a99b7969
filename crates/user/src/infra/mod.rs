//! Adapters of the identity ports: PostgreSQL repositories, Redis limits and invalidation,
//! the moka principal cache, argon2, JWT and HMAC, batched writers, and [`Identity::build`] that
//! wires them for a composition root.

pub mod batch;
pub mod cache;
pub mod crypto;
pub mod postgres;
pub mod redis_limits;

use std::sync::Arc;
use std::time::Duration;

use maas_shared::audit::AuditLog;
use maas_shared::clock::Clock;
use maas_shared::kv::Keyspace;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;

use crate::app::accounts::AccountService;
use crate::app::auth::AuthService;
use crate::app::keys::ApiKeyService;
use crate::app::quotas::QuotaService;
use crate::app::sessions::SessionService;
use crate::app::{IdentityConfig, IdentityDeps};

/// What [`Identity::build`] needs.
pub struct IdentityParams {
    /// PostgreSQL pool.
    pub db: DatabaseConnection,
    /// Multiplexed Redis connection (limits and invalidations: one round trip per command).
    pub redis: maas_shared::kv::Multiplexed,
    /// Redis URL (the invalidation listener holds a connection of its own).
    pub redis_url: String,
    /// This deployment's key prefix.
    pub keys: Keyspace,
    /// Access token signing key.
    pub jwt_secret: SecretString,
    /// Access token lifetime.
    pub access_ttl: chrono::Duration,
    /// The platform's 32-byte key (digests of API keys and refresh tokens derive from it).
    pub platform_key: [u8; 32],
    /// How long a cached principal may be served without a fresh look-up.
    pub cache_ttl: Duration,
    /// Tunables.
    pub config: IdentityConfig,
    /// Audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Whether to listen for invalidations (servers do; one-shot CLI commands need not).
    pub listen_for_invalidations: bool,
}

impl IdentityParams {
    /// Parameters from the platform settings (passed in by a composition root).
    ///
    /// # Errors
    /// When the encryption key or the Redis URL is malformed.
    pub fn from_settings(
        settings: &maas_shared::config::Settings,
        db: DatabaseConnection,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let redis = maas_shared::kv::Multiplexed::new(&settings.redis)?;
        use secrecy::ExposeSecret as _;
        let id = &settings.identity;
        let limit = |v: u64| (v > 0).then_some(v);
        Ok(Self {
            db,
            redis,
            redis_url: settings.redis.url.expose_secret().to_owned(),
            keys: Keyspace::new(&settings.redis.key_prefix),
            jwt_secret: settings.auth.jwt_secret.clone(),
            access_ttl: chrono::Duration::seconds(
                i64::try_from(id.access_token_ttl_secs).unwrap_or(i64::MAX / 1000),
            ),
            platform_key: settings.crypto.key_bytes()?,
            cache_ttl: Duration::from_secs(id.principal_cache_ttl_secs.max(1)),
            config: IdentityConfig {
                refresh_ttl: chrono::Duration::seconds(
                    i64::try_from(id.refresh_token_ttl_secs).unwrap_or(i64::MAX / 1000),
                ),
                allow_self_registration: id.allow_self_registration,
                login_attempts_per_minute: id.login_attempts_per_minute.max(1),
                defaults: crate::domain::limits::LimitDefaults {
                    requests_per_minute: limit(id.default_requests_per_minute),
                    tokens_per_minute: limit(id.default_tokens_per_minute),
                    requests_per_hour: limit(id.default_requests_per_hour),
                    requests_per_day: limit(id.default_requests_per_day),
                },
            },
            audit,
            clock,
            listen_for_invalidations: true,
        })
    }
}

/// The identity context's services, wired.
#[derive(Clone)]
pub struct Identity {
    /// Accounts.
    pub accounts: AccountService,
    /// Sessions.
    pub sessions: SessionService,
    /// API keys.
    pub keys: ApiKeyService,
    /// Authentication.
    pub auth: AuthService,
    /// Quotas and limits.
    pub quotas: QuotaService,
}

impl Identity {
    /// Builds every adapter and service; starts the batch writers (and the invalidation listener).
    /// Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// When a secret cannot be used.
    pub fn build(p: IdentityParams) -> anyhow::Result<Self> {
        let keys_repo: Arc<dyn crate::domain::ports::ApiKeyRepository> =
            Arc::new(postgres::PgApiKeyRepository::new(p.db.clone()));
        let ledger: Arc<dyn crate::domain::ports::UsageLedger> = Arc::new(
            batch::BatchedLedger::spawn(Arc::new(postgres::PgUsageLedger::new(p.db.clone()))),
        );
        let cache = Arc::new(cache::MokaPrincipalCache::new(100_000, p.cache_ttl));
        if p.listen_for_invalidations {
            cache::spawn_invalidation_listener(p.redis_url.clone(), &p.keys, Arc::clone(&cache));
        }
        let deps = IdentityDeps {
            users: Arc::new(postgres::PgUserRepository::new(p.db.clone())),
            refresh_tokens: Arc::new(postgres::PgRefreshTokenRepository::new(p.db.clone())),
            keys: Arc::clone(&keys_repo),
            policies: Arc::new(postgres::PgQuotaPolicyRepository::new(p.db.clone())),
            ledger: Arc::clone(&ledger),
            limits: Arc::new(redis_limits::RedisLimitStore::new(
                p.redis.clone(),
                p.keys.clone(),
                ledger,
            )),
            hasher: Arc::new(crypto::Argon2Hasher),
            tokens: Arc::new(crypto::JwtCodec::new(&p.jwt_secret, p.access_ttl)),
            secrets: Arc::new(crypto::HmacSecrets::new(&p.platform_key)?),
            cache,
            bus: Arc::new(cache::RedisInvalidationBus::new(p.redis, &p.keys)),
            key_uses: Arc::new(batch::BatchedKeyUses::spawn(
                keys_repo,
                Duration::from_secs(5),
            )),
            audit: p.audit,
            clock: p.clock,
            config: p.config,
        };
        Ok(Self {
            accounts: AccountService::new(deps.clone()),
            sessions: SessionService::new(deps.clone()),
            keys: ApiKeyService::new(deps.clone()),
            auth: AuthService::new(deps.clone()),
            quotas: QuotaService::new(deps),
        })
    }
}
