//! The one composition root (DESIGN §3). It loads [`Settings`] once, turns them into each
//! context's typed config, builds the PostgreSQL pool and the Redis connections once, wires every
//! context's services from those, and owns the process's background work ([`Tasks`]) and its
//! shutdown. `maas-api`, `maas-worker` and `maas` are thin mains over it; no context reads
//! settings, opens a connection or spawns a task on its own.

pub mod settings;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backon::Retryable as _;
use maas_inference::app::conversations::{ConversationConfig, ConversationService};
use maas_inference::app::gateway::{GatewayConfig, TemplateOverhead};
use maas_inference::infra::{Gateway, GatewayParams, upstream};
use maas_knowledge::app::ingest::IngestConfig;
use maas_knowledge::app::knowledge::KnowledgeConfig;
use maas_knowledge::infra::{Knowledge, KnowledgeParams};
use maas_model::app::deployer::DeployConfig;
use maas_model::app::ssh::SshConfig;
use maas_model::domain::server::Liveness;
use maas_model::infra::{Compute, ComputeConfig, ComputeParams};
use maas_shared::audit::AuditLog;
use maas_shared::audit_pg::PgAuditLog;
use maas_shared::clock::{Clock, SystemClock};
use maas_shared::kv::{Keyspace, Multiplexed, RedisPool};
use maas_shared::tasks::{ShutdownReport, Tasks};
use maas_user::app::IdentityConfig;
use maas_user::contract::QuotaGate;
use maas_user::domain::limits::LimitDefaults;
use maas_user::domain::ports::StreamStats;
use maas_user::infra::drain::DrainConfig;
use maas_user::infra::{Identity, IdentityParams};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use secrecy::ExposeSecret as _;

pub use settings::{AppEnvironment, Settings, SettingsError};

/// Whether this process keeps long-lived caches fresh from other replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A server (`maas-api`, `maas-worker`): listens for invalidations.
    Server,
    /// A one-shot command (`maas ...`): keeps no cache worth invalidating.
    Command,
}

/// The connections and shared adapters of one process, built once.
#[derive(Clone)]
pub struct Platform {
    settings: Arc<Settings>,
    db: DatabaseConnection,
    redis: RedisPool,
    multiplexed: Multiplexed,
    keyspace: Keyspace,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditLog>,
    tasks: Tasks,
    role: Role,
}

/// Every service `maas-api` serves.
#[derive(Clone)]
pub struct ApiServices {
    /// Identity.
    pub identity: Identity,
    /// The gateway and conversations.
    pub gateway: Gateway,
    /// Registry, servers and node agents.
    pub compute: Compute,
    /// Knowledge bases.
    pub knowledge: Knowledge,
    /// Apps.
    pub apps: maas_apps::infra::Apps,
}

impl Platform {
    /// Connects to PostgreSQL (retrying while it comes up) and prepares the Redis connections
    /// (they connect on first use, so a process can start while Redis is still down).
    ///
    /// # Errors
    /// When PostgreSQL stays unreachable or a URL is malformed.
    pub async fn connect(settings: Settings, role: Role) -> anyhow::Result<Self> {
        let db = connect_postgres(&settings).await?;
        let redis = redis_pool(&settings)?;
        let multiplexed = Multiplexed::new(
            settings.redis.url.expose_secret(),
            Duration::from_millis(settings.redis.timeout_ms),
        )?;
        let keyspace = Keyspace::new(&settings.redis.key_prefix);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let audit: Arc<dyn AuditLog> = Arc::new(PgAuditLog::new(db.clone(), Arc::clone(&clock)));
        Ok(Self {
            settings: Arc::new(settings),
            db,
            redis,
            multiplexed,
            keyspace,
            clock,
            audit,
            tasks: Tasks::new(),
            role,
        })
    }

    /// The same platform over another clock (tests hold time still with a manual one).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.audit = Arc::new(PgAuditLog::new(self.db.clone(), Arc::clone(&clock)));
        self.clock = clock;
        self
    }

    /// The settings this process runs with.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The PostgreSQL pool.
    #[must_use]
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The Redis pool (health checks, occasional commands).
    #[must_use]
    pub fn redis(&self) -> &RedisPool {
        &self.redis
    }

    /// The multiplexed Redis connection of hot paths and job queues.
    #[must_use]
    pub fn multiplexed(&self) -> &Multiplexed {
        &self.multiplexed
    }

    /// This deployment's Redis key prefix.
    #[must_use]
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// Time.
    #[must_use]
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// The audit trail.
    #[must_use]
    pub fn audit(&self) -> Arc<dyn AuditLog> {
        Arc::clone(&self.audit)
    }

    /// The process's background work.
    #[must_use]
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The identity context, wired.
    ///
    /// # Errors
    /// When a secret cannot be used or a URL is malformed.
    pub fn identity(&self) -> anyhow::Result<Identity> {
        let s = &self.settings;
        let id = &s.identity;
        let limit = |v: u64| (v > 0).then_some(v);
        let invalidations = match self.role {
            Role::Server => {
                Some(redis::Client::open(s.redis.url.expose_secret()).context("Redis URL")?)
            }
            Role::Command => None,
        };
        Identity::build(IdentityParams {
            db: self.db.clone(),
            redis: self.multiplexed.clone(),
            invalidations,
            keys: self.keyspace.clone(),
            jwt_secret: s.auth.jwt_secret.clone(),
            access_ttl: seconds(id.access_token_ttl_secs),
            platform_key: s.crypto.key_bytes()?,
            cache_ttl: Duration::from_secs(id.principal_cache_ttl_secs.max(1)),
            reservation_hold: Duration::from_millis(s.gateway.total_timeout_ms)
                + Duration::from_secs(id.reservation_margin_secs),
            config: IdentityConfig {
                refresh_ttl: seconds(id.refresh_token_ttl_secs),
                allow_self_registration: id.allow_self_registration,
                login_attempts_per_minute: id.login_attempts_per_minute.max(1),
                defaults: LimitDefaults {
                    requests_per_minute: limit(id.default_requests_per_minute),
                    tokens_per_minute: limit(id.default_tokens_per_minute),
                    requests_per_hour: limit(id.default_requests_per_hour),
                    requests_per_day: limit(id.default_requests_per_day),
                },
            },
            audit: self.audit(),
            clock: self.clock(),
            tasks: self.tasks.clone(),
        })
    }

    /// The gateway context, metering through `quota`.
    ///
    /// # Errors
    /// When the encryption key is malformed or the HTTP client cannot be built.
    pub fn gateway(
        &self,
        quota: Arc<dyn QuotaGate>,
        deployments: Option<Arc<dyn maas_model::contract::DeploymentDirectory>>,
    ) -> anyhow::Result<Gateway> {
        let s = &self.settings;
        let g = &s.gateway;
        Gateway::build(GatewayParams {
            db: self.db.clone(),
            redis: self.multiplexed.clone(),
            keys: self.keyspace.clone(),
            platform_key: s.crypto.key_bytes()?,
            timeouts: upstream::Timeouts {
                connect: Duration::from_millis(g.connect_timeout_ms),
                first_byte: Duration::from_millis(g.first_byte_timeout_ms),
                idle: Duration::from_millis(g.idle_timeout_ms),
                total: Duration::from_millis(g.total_timeout_ms),
            },
            config: GatewayConfig {
                routes_ttl: Duration::from_millis(g.routes_ttl_ms),
                max_response_bytes: g.max_response_bytes,
                default_max_tokens: g.default_max_tokens,
                template_overhead: TemplateOverhead {
                    base: g.template_overhead_tokens,
                    per_message: g.message_overhead_tokens,
                },
            },
            cache_ttl: (g.cache_ttl_secs > 0).then(|| Duration::from_secs(g.cache_ttl_secs)),
            conversations: self.conversation_config(),
            quota,
            audit: self.audit(),
            clock: self.clock(),
            tasks: self.tasks.clone(),
            deployments,
        })
    }

    /// The registry and compute context, wired (logos in the local store of `[storage]`).
    ///
    /// # Errors
    /// When the encryption key is malformed or the agent HTTP client cannot be built.
    pub fn compute(&self) -> anyhow::Result<Compute> {
        let s = &self.settings;
        let c = &s.compute;
        Compute::build(ComputeParams {
            db: self.db.clone(),
            redis: self.multiplexed.clone(),
            keys: self.keyspace.clone(),
            platform_key: s.crypto.key_bytes()?,
            logos: Arc::new(maas_shared::storage::LocalDir::new(
                s.storage.dir.join("logos"),
            )),
            config: ComputeConfig {
                liveness: Liveness {
                    heartbeat: Duration::from_secs(c.heartbeat_interval_secs.max(1)),
                    report: Duration::from_secs(c.report_interval_secs.max(1)),
                    missed_before_not_ready: c.missed_heartbeats_before_not_ready.max(1),
                    offline_after: Duration::from_secs(c.offline_after_secs.max(1)),
                },
                join_token_ttl: chrono::Duration::hours(
                    i64::try_from(c.join_token_ttl_hours.max(1)).unwrap_or(24),
                ),
                logo_max_bytes: c.logo_max_bytes,
                agent_timeout: Duration::from_millis(c.agent_timeout_ms.max(1)),
                deploy: DeployConfig {
                    deploy_timeout: seconds(c.deploy_timeout_secs.max(1)),
                    follow_every: Duration::from_millis(c.deploy_follow_ms.max(1)),
                    pending_retry: Duration::from_secs(c.pending_retry_secs.max(1)),
                    lost_grace: seconds(c.reschedule_after_offline_secs),
                },
                assignment_wait: Duration::from_secs(c.assignment_wait_secs.clamp(1, 60)),
                ssh: SshConfig {
                    connect_timeout: Duration::from_millis(c.ssh_connect_timeout_ms.max(100)),
                    ticket_ttl: Duration::from_secs(c.terminal_ticket_ttl_secs.clamp(1, 600)),
                    idle_timeout: Duration::from_secs(c.terminal_idle_secs.max(1)),
                    allowed_origins: c.terminal_allowed_origins.clone(),
                    parallelism: c.remote_parallelism.clamp(1, 64),
                },
            },
            clock: self.clock(),
        })
    }

    /// The knowledge context, embedding through `gateway` and metering to owners known to
    /// `identity` (documents' bytes in the local store of `[storage]`).
    ///
    /// # Errors
    /// When a configured tokenizer cannot be loaded.
    pub fn knowledge(&self, identity: &Identity, gateway: &Gateway) -> anyhow::Result<Knowledge> {
        let s = &self.settings;
        let k = &s.knowledge;
        Knowledge::build(KnowledgeParams {
            db: self.db.clone(),
            redis: self.multiplexed.clone(),
            keys: self.keyspace.clone(),
            blobs: Arc::new(maas_shared::storage::LocalDir::new(
                s.storage.dir.join("knowledge"),
            )),
            embedder: Arc::new(gateway.gateway.clone()),
            principals: Arc::new(identity.auth.clone()),
            index: self.vector_index()?,
            embedded_cache_bytes: k.embedded_cache_mb.saturating_mul(1024 * 1024),
            embedded_precision: match k.embedded_precision {
                crate::settings::EmbeddedPrecision::F32 => {
                    maas_knowledge::infra::embedded::Precision::F32
                }
                crate::settings::EmbeddedPrecision::F16 => {
                    maas_knowledge::infra::embedded::Precision::F16
                }
            },
            tokenizers: k.tokenizers.clone(),
            config: KnowledgeConfig {
                max_document_bytes: k.max_document_bytes.max(1),
            },
            store_embedding_model: k.store_embedding_model.clone(),
            ingest: IngestConfig {
                embed_batch: k.embed_batch.clamp(1, 2048),
                lease: Duration::from_secs(k.lease_secs.max(5)),
                max_attempts: k.max_attempts,
            },
            clock: self.clock(),
        })
    }

    /// The apps context: its model calls through `gateway` (as the app's keys, charged to
    /// the owners `identity` knows), retrieval through `knowledge`.
    #[must_use]
    pub fn apps(
        &self,
        identity: &Identity,
        gateway: &Gateway,
        knowledge: &Knowledge,
    ) -> maas_apps::infra::Apps {
        maas_apps::infra::Apps::build(maas_apps::infra::AppsParams {
            db: self.db.clone(),
            chat: Arc::new(gateway.gateway.clone()),
            conversations: Arc::new(gateway.conversations.clone()),
            retriever: Arc::new(knowledge.service.clone()),
            keys: Arc::new(identity.keys.clone()),
            principals: Arc::new(identity.auth.clone()),
            background: Arc::new(self.tasks.clone()),
            clock: self.clock(),
        })
    }

    /// The configured vector index: Qdrant, or `None` for the embedded one.
    fn vector_index(
        &self,
    ) -> anyhow::Result<Option<Arc<dyn maas_knowledge::domain::ports::VectorIndex>>> {
        let v = &self.settings.vector_store;
        match (v.kind, &v.url) {
            (crate::settings::VectorStoreKind::Embedded, _) => Ok(None),
            (crate::settings::VectorStoreKind::Qdrant, None) => {
                anyhow::bail!("vector_store.kind = \"qdrant\" needs vector_store.url")
            }
            (crate::settings::VectorStoreKind::Qdrant, Some(url)) => {
                let key = v.api_key.as_ref().map(|k| k.expose_secret().to_owned());
                let index = maas_knowledge::infra::qdrant::QdrantIndex::connect(
                    url,
                    key,
                    &v.collection_prefix,
                )?;
                tracing::info!(url, "knowledge bases search Qdrant");
                Ok(Some(Arc::new(index)))
            }
        }
    }

    /// The conversation service alone (the worker's expiry job needs nothing else).
    #[must_use]
    pub fn conversations(&self) -> ConversationService {
        maas_inference::infra::conversation_service(
            self.db.clone(),
            self.clock(),
            self.conversation_config(),
        )
    }

    fn conversation_config(&self) -> ConversationConfig {
        let c = &self.settings.conversations;
        ConversationConfig {
            context_messages: c.context_messages,
            ttl: chrono::Duration::hours(i64::try_from(c.ttl_hours).unwrap_or(24 * 365)),
        }
    }

    /// Everything `maas-api` serves.
    ///
    /// # Errors
    /// As [`Platform::identity`] and [`Platform::gateway`].
    pub fn api(&self) -> anyhow::Result<ApiServices> {
        let identity = self.identity()?;
        let quota: Arc<dyn QuotaGate> = Arc::new(identity.quotas.clone());
        let compute = self.compute()?;
        self.listen_for_compute_changes(&compute)?;
        let gateway = self.gateway(quota, Some(Arc::new(compute.directory.clone())))?;
        let knowledge = self.knowledge(&identity, &gateway)?;
        let apps = self.apps(&identity, &gateway, &knowledge);
        Ok(ApiServices {
            identity,
            gateway,
            compute,
            knowledge,
            apps,
        })
    }

    /// Keeps `compute`'s deployment directory and long-poll hub fresh (Redis pub/sub, with a
    /// refresh on a timer): `maas-api`'s background loop.
    ///
    /// # Errors
    /// A malformed Redis URL.
    pub fn listen_for_compute_changes(&self, compute: &Compute) -> anyhow::Result<()> {
        let s = &self.settings;
        let client = redis::Client::open(s.redis.url.expose_secret()).context("Redis URL")?;
        maas_model::infra::changes::listen(
            client,
            &self.keyspace,
            compute.hub.clone(),
            compute.directory.clone(),
            Duration::from_secs(s.compute.directory_refresh_secs.max(1)),
            &self.tasks,
        );
        Ok(())
    }

    /// Starts the drain of the settlement stream into the ledger and the usage table (and the
    /// usage table's partition upkeep): `maas-worker`'s background loops.
    pub fn start_ledger_drain(&self, identity: &Identity) {
        let l = &self.settings.ledger;
        let records = maas_inference::infra::usage_records(self.db.clone(), &self.tasks);
        maas_user::infra::drain::start(
            identity.ledger_drain(records),
            DrainConfig {
                batch: l.batch.max(1),
                claim_idle: Duration::from_millis(l.claim_idle_ms.max(1)),
                idle_wait: Duration::from_millis(l.idle_wait_ms.max(1)),
            },
            &self.tasks,
        );
    }

    /// Reports the settlement stream's backlog, lag and counts to `report` every
    /// `ledger.metrics_every_secs` (for `maas-api`'s `/metrics`), until shutdown.
    pub fn watch_settlements(
        &self,
        identity: &Identity,
        report: impl Fn(&StreamStats) + Send + Sync + 'static,
    ) {
        let identity = identity.clone();
        let every = Duration::from_secs(self.settings.ledger.metrics_every_secs.max(1));
        self.tasks
            .spawn_loop("identity.settlement_gauges", move |shutdown| async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = shutdown.requested() => return,
                    }
                    match identity.settlement_stats().await {
                        Ok(stats) => report(&stats),
                        Err(err) => {
                            tracing::warn!(error = %err, "could not read the settlement stream's state");
                        }
                    }
                }
            });
    }

    /// Lets background work finish, flushes and stops every loop, then closes the pool, all
    /// within `timeout`.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let report = self.tasks.shutdown(timeout).await;
        if let Err(err) = self.db.clone().close().await {
            tracing::warn!(error = %err, "closing the PostgreSQL pool");
        }
        report
    }
}

fn seconds(secs: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

/// Connects with the configured pool size and timeouts, retrying while the server comes up.
async fn connect_postgres(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let d = &settings.database;
    let mut options = ConnectOptions::new(d.url.expose_secret().to_owned());
    options
        .max_connections(d.max_connections)
        .min_connections(d.min_connections)
        .connect_timeout(Duration::from_secs(d.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(d.acquire_timeout_secs))
        .sqlx_logging(false);
    (|| Database::connect(options.clone()))
        .retry(maas_shared::retry::startup_backoff(d.connect_retries.max(1)))
        .notify(|err, delay| {
            tracing::warn!(error = %err, retry_in = ?delay, "PostgreSQL not reachable yet; retrying");
        })
        .await
        .context("connecting to PostgreSQL")
}

/// The Redis pool (connections open lazily).
fn redis_pool(settings: &Settings) -> anyhow::Result<RedisPool> {
    use deadpool_redis::{Config, PoolConfig, Runtime, Timeouts};
    let r = &settings.redis;
    let mut config = Config::from_url(r.url.expose_secret());
    let wait = Some(Duration::from_millis(r.timeout_ms));
    config.pool = Some(PoolConfig {
        max_size: r.pool_size,
        timeouts: Timeouts {
            wait,
            create: wait,
            recycle: wait,
        },
        ..PoolConfig::default()
    });
    config
        .create_pool(Some(Runtime::Tokio1))
        .context("building the Redis pool")
}
