//! Adapters of the identity ports: PostgreSQL repositories, Redis limits and invalidation,
//! the moka principal cache, argon2, JWT and HMAC, batched writers, and [`Identity::build`] that
//! wires them for a composition root.

pub mod batch;
pub mod cache;
pub mod crypto;
pub mod drain;
pub mod postgres;
pub mod redis_limits;
pub mod shards;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use maas_shared::audit::AuditLog;
use maas_shared::clock::Clock;
use maas_shared::kv::Keyspace;
use maas_shared::tasks::Tasks;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;

use crate::app::accounts::AccountService;
use crate::app::auth::AuthService;
use crate::app::keys::ApiKeyService;
use crate::app::ledger::LedgerDrain;
use crate::app::quotas::QuotaService;
use crate::app::sessions::SessionService;
use crate::app::{IdentityConfig, IdentityDeps};
use crate::domain::errors::IdentityError;
use crate::domain::ports::{SettledRecords, SettlementStream, StreamStats, UsageLedger};

/// The shared Redis connection, connecting first if needed; failing to connect means Redis is
/// [`IdentityError::Unavailable`].
pub(crate) async fn redis_connection(
    conn: &maas_shared::kv::Multiplexed,
) -> Result<redis::aio::ConnectionManager, IdentityError> {
    conn.get().await.map_err(IdentityError::Unavailable)
}

/// A failed Redis command (`what`) as an identity error: Redis down, timing out or asking to
/// retry is [`IdentityError::Unavailable`] (503 with `Retry-After`); a failure that no retry can
/// fix (an unexpected reply type, a script error) is a bug, [`IdentityError::Unexpected`].
pub(crate) fn redis_failure(what: &'static str) -> impl FnOnce(redis::RedisError) -> IdentityError {
    move |err| {
        let transient =
            err.is_io_error() || !matches!(err.retry_method(), redis::RetryMethod::NoRetry);
        let err = anyhow::Error::new(err).context(what);
        if transient {
            IdentityError::Unavailable(err)
        } else {
            IdentityError::Unexpected(err)
        }
    }
}

/// What [`Identity::build`] needs: ready adapters and this context's typed config, never the
/// platform's settings (the composition root, `maas-platform`, maps those).
pub struct IdentityParams {
    /// PostgreSQL pool.
    pub db: DatabaseConnection,
    /// Multiplexed Redis connection (limits and invalidations: one round trip per command).
    pub redis: maas_shared::kv::Multiplexed,
    /// Where to listen for invalidations from other replicas (a pub/sub connection of its own);
    /// `None` for one-shot processes such as CLI commands, which keep no cache worth keeping.
    pub invalidations: Option<redis::Client>,
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
    /// How long a reservation may stay unsettled before the sweeper releases it (the longest a
    /// call can take, plus a margin).
    pub reservation_hold: Duration,
    /// Tunables.
    pub config: IdentityConfig,
    /// Audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The process's background work: batch writers and the invalidation listener run there.
    pub tasks: Tasks,
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
    stream: Arc<dyn SettlementStream>,
    ledger: Arc<dyn UsageLedger>,
    clock: Arc<dyn Clock>,
}

impl Identity {
    /// Builds every adapter and service; registers the batch writers (and the invalidation
    /// listener) with the process's tasks. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// When a secret cannot be used.
    pub fn build(p: IdentityParams) -> anyhow::Result<Self> {
        let keys_repo: Arc<dyn crate::domain::ports::ApiKeyRepository> =
            Arc::new(postgres::PgApiKeyRepository::new(p.db.clone()));
        let ledger: Arc<dyn UsageLedger> = Arc::new(postgres::PgUsageLedger::new(p.db.clone()));
        let stream: Arc<dyn SettlementStream> = Arc::new(stream::RedisSettlementStream::new(
            p.redis.clone(),
            p.keys.clone(),
        ));
        let cache = Arc::new(cache::MokaPrincipalCache::new(100_000, p.cache_ttl));
        if let Some(client) = p.invalidations {
            cache::listen_for_invalidations(client, &p.keys, Arc::clone(&cache), &p.tasks);
        }
        let deps = IdentityDeps {
            users: Arc::new(postgres::PgUserRepository::new(p.db.clone())),
            account_changes: Arc::new(postgres::PgAccountChanges::new(p.db.clone())),
            refresh_tokens: Arc::new(postgres::PgRefreshTokenRepository::new(p.db.clone())),
            keys: Arc::clone(&keys_repo),
            policies: Arc::new(postgres::PgQuotaPolicyRepository::new(p.db.clone())),
            ledger: Arc::clone(&ledger),
            limits: Arc::new(redis_limits::RedisLimitStore::new(
                p.redis.clone(),
                p.keys.clone(),
                Arc::clone(&ledger),
                p.reservation_hold,
            )),
            hasher: Arc::new(crypto::Argon2Hasher),
            tokens: Arc::new(crypto::JwtCodec::new(&p.jwt_secret, p.access_ttl)),
            secrets: Arc::new(crypto::HmacSecrets::new(&p.platform_key)?),
            cache,
            bus: Arc::new(cache::RedisInvalidationBus::new(p.redis, &p.keys)),
            key_uses: Arc::new(batch::BatchedKeyUses::start(
                keys_repo,
                Duration::from_secs(5),
                &p.tasks,
            )),
            audit: p.audit,
            clock: Arc::clone(&p.clock),
            config: p.config,
        };
        Ok(Self {
            accounts: AccountService::new(deps.clone()),
            sessions: SessionService::new(deps.clone()),
            keys: ApiKeyService::new(deps.clone()),
            auth: AuthService::new(deps.clone()),
            quotas: QuotaService::new(deps),
            stream,
            ledger,
            clock: p.clock,
        })
    }

    /// The drain of the settlement stream into the ledger, storing each entry's record with
    /// `records` (the worker runs it: see [`drain::start`]).
    #[must_use]
    pub fn ledger_drain(&self, records: Arc<dyn SettledRecords>) -> LedgerDrain {
        LedgerDrain::new(Arc::clone(&self.stream), Arc::clone(&self.ledger), records)
    }

    /// Backlog, lag and counts of the settlement stream (for `/metrics`).
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn settlement_stats(&self) -> Result<StreamStats, IdentityError> {
        self.stream.stats(self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use maas_shared::error::{Classify as _, ErrorKind};

    use super::*;

    #[test]
    fn redis_down_or_slow_is_unavailable_and_a_bad_reply_is_a_bug() {
        for cause in [
            io::Error::from(io::ErrorKind::TimedOut),
            io::Error::from(io::ErrorKind::ConnectionRefused),
            io::Error::from(io::ErrorKind::ConnectionReset),
        ] {
            let err = redis_failure("running a script")(cause.into());
            assert!(matches!(err, IdentityError::Unavailable(_)), "{err:?}");
            assert_eq!(err.kind(), ErrorKind::Unavailable);
            assert_eq!(err.code(), "dependency_unavailable");
            assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
            assert_eq!(
                err.to_string(),
                "a platform dependency is unavailable; retry shortly",
                "the cause is for the log only"
            );
        }
        let bug = redis_failure("reading a counter")(
            (redis::ErrorKind::UnexpectedReturnType, "not an integer").into(),
        );
        assert!(matches!(bug, IdentityError::Unexpected(_)), "{bug:?}");
        assert_eq!(bug.kind(), ErrorKind::Internal);
    }
}
