//! Layered, typed settings (DESIGN §8).
//!
//! Precedence, lowest first: built-in defaults (`defaults.toml`, compiled in) →
//! `config/default.toml` → `config/{MAAS_ENV}.toml` → `MAAS__SECTION__KEY` environment variables,
//! with `DATABASE_URL`, `REDIS_URL` and `QDRANT_URL` accepted as aliases when the `MAAS__` form is
//! absent. Secrets are [`SecretString`]s: they never print (`Debug` and [`Settings::redacted`]
//! mask them), and [`Settings::validate`] refuses defaults or blanks in `production`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

const DEFAULTS: &str = include_str!("defaults.toml");
/// The development JWT secret; refused in production.
pub const DEV_JWT_SECRET: &str = "dev-only-jwt-secret-change-me-in-production-0000";
/// The development encryption key (base64 of 32 bytes); refused in production.
pub const DEV_ENCRYPTION_KEY: &str = "ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE=";
const REDACTED: &str = "[redacted]";

/// Which deployment this process belongs to (`MAAS_ENV`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnvironment {
    /// A developer's machine (default).
    Development,
    /// Automated tests.
    Test,
    /// A real deployment: secrets must be set.
    Production,
}

impl AppEnvironment {
    fn parse(value: &str) -> Result<Self, SettingsError> {
        match value.to_ascii_lowercase().as_str() {
            "development" | "dev" | "local" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(SettingsError::Invalid(format!(
                "MAAS_ENV must be development, test or production, not `{other}`"
            ))),
        }
    }

    /// The name used for `config/{name}.toml`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

/// All settings of every binary.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// From `MAAS_ENV`.
    pub environment: AppEnvironment,
    /// The rest, from the layered sources.
    #[serde(flatten)]
    pub sections: Sections,
}

impl std::ops::Deref for Settings {
    type Target = Sections;
    fn deref(&self) -> &Sections {
        &self.sections
    }
}

/// The sections read from files and environment.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sections {
    /// HTTP server.
    pub server: ServerSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// Redis.
    pub redis: RedisSettings,
    /// Token signing.
    pub auth: AuthSettings,
    /// Accounts, sessions and default limits.
    pub identity: IdentitySettings,
    /// The inference gateway.
    pub gateway: GatewaySettings,
    /// Conversation history.
    pub conversations: ConversationSettings,
    /// Encryption of stored credentials.
    pub crypto: CryptoSettings,
    /// Logs.
    pub telemetry: TelemetrySettings,
    /// Background workers.
    pub worker: WorkerSettings,
    /// The vector index of knowledge bases.
    pub vector_store: VectorStoreSettings,
    /// Settlement stream drain.
    pub ledger: LedgerSettings,
    /// Servers, agents and the registry's uploads.
    pub compute: ComputeSettings,
    /// Where uploaded files live.
    pub storage: StorageSettings,
    /// Knowledge bases: uploads, ingestion, the embedded vector index.
    pub knowledge: KnowledgeSettings,
}

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted JSON body in bytes.
    pub json_limit_bytes: usize,
    /// Seconds to let in-flight requests finish on SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
    /// Origins allowed by CORS; empty means CORS is closed. `*` allows any origin.
    pub cors_allowed_origins: Vec<String>,
    /// PEM certificate chain (leaf first); with `tls_key_file`, the server speaks HTTPS only
    /// (HTTP/2 and HTTP/1.1). `maas tls self-signed` writes a pair.
    #[serde(default)]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// With HTTPS on, a plain-HTTP port (on `host`) that answers every request with a 308
    /// redirect to HTTPS (0 picks a free one).
    #[serde(default)]
    pub http_redirect_port: Option<u16>,
}

/// `[database]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db`
    #[serde(serialize_with = "redact_url")]
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// Seconds to wait for a new connection.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for a pooled connection.
    pub acquire_timeout_secs: u64,
    /// Attempts to connect at start-up before giving up (1 s apart, growing to 5 s).
    pub connect_retries: u32,
}

/// `[redis]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port/db`
    #[serde(serialize_with = "redact_url")]
    pub url: SecretString,
    /// Pool size.
    pub pool_size: usize,
    /// Prefix of every key this deployment writes, so several can share one Redis.
    pub key_prefix: String,
    /// Milliseconds to wait for a pooled connection.
    pub timeout_ms: u64,
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HMAC key for access tokens (at least 32 bytes in production).
    #[serde(serialize_with = "redact")]
    pub jwt_secret: SecretString,
}

/// `[identity]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// Lifetime of access tokens (JWT), in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_token_ttl_secs: u64,
    /// Whether anyone may create an account at `POST /api/v1/auth/register`.
    pub allow_self_registration: bool,
    /// Login attempts per login name and client address per minute.
    pub login_attempts_per_minute: u64,
    /// Seconds a cached principal may be served without a fresh look-up (revocations are
    /// pushed to every replica at once; this is only the safety net).
    pub principal_cache_ttl_secs: u64,
    /// Default requests per minute of a user without their own limit (0: none).
    pub default_requests_per_minute: u64,
    /// Default tokens per minute of a user without their own limit (0: none).
    pub default_tokens_per_minute: u64,
    /// Default requests per hour of a user without their own limit (0: none).
    pub default_requests_per_hour: u64,
    /// Default requests per day of a user without their own limit (0: none).
    pub default_requests_per_day: u64,
    /// Seconds past the longest a call may take (`gateway.total_timeout_ms`) before a
    /// reservation nobody settled (its process died) is released by the sweeper.
    pub reservation_margin_secs: u64,
    /// When the reservation sweeper runs (cron with seconds: sec min hour day month weekday).
    pub reservation_sweep_schedule: String,
}

/// `[gateway]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Milliseconds to connect to an upstream.
    pub connect_timeout_ms: u64,
    /// Milliseconds until an upstream's response headers must arrive.
    pub first_byte_timeout_ms: u64,
    /// Milliseconds an upstream stream may stall between chunks.
    pub idle_timeout_ms: u64,
    /// Milliseconds a whole upstream call may take.
    pub total_timeout_ms: u64,
    /// Milliseconds a replica serves its provider table before re-reading it.
    pub routes_ttl_ms: u64,
    /// Largest non-streamed upstream response, in bytes.
    pub max_response_bytes: usize,
    /// Completion tokens reserved when a request names no `max_tokens`.
    pub default_max_tokens: u64,
    /// Largest request body on `/v1`, in bytes (image content parts travel inline).
    pub max_request_bytes: usize,
    /// Seconds a cached answer lives (non-streamed calls at temperature 0, and embeddings);
    /// 0 turns the response cache off.
    pub cache_ttl_secs: u64,
    /// Tokens a chat template may add to a prompt once (a default system prompt, the
    /// generation prompt): part of each call's reservation, which bounds what it can cost.
    pub template_overhead_tokens: u64,
    /// Tokens a chat template may add per message (role markers, separators).
    pub message_overhead_tokens: u64,
}

/// `[conversations]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationSettings {
    /// Messages of history added to a chat call that names a `conversation_id`.
    pub context_messages: u32,
    /// Hours without activity after which a conversation is deleted.
    pub ttl_hours: u64,
    /// When the worker deletes idle conversations: a cron expression with seconds
    /// (`sec min hour day-of-month month day-of-week`), e.g. `0 */5 * * * *` every five minutes.
    /// However many workers run, each tick's run happens once.
    pub expiry_schedule: String,
}

/// `[crypto]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSettings {
    /// Base64 of 32 random bytes; encrypts stored upstream keys and server credentials.
    #[serde(serialize_with = "redact")]
    pub encryption_key: SecretString,
}

impl CryptoSettings {
    /// The decoded 32-byte key.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when the key is not base64 of exactly 32 bytes.
    pub fn key_bytes(&self) -> Result<[u8; 32], SettingsError> {
        let bytes = STANDARD
            .decode(self.encryption_key.expose_secret().trim())
            .map_err(|_| {
                SettingsError::Invalid("crypto.encryption_key is not valid base64".into())
            })?;
        bytes.try_into().map_err(|_| {
            SettingsError::Invalid("crypto.encryption_key must decode to exactly 32 bytes".into())
        })
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,maas=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

/// `[worker]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs run at once per queue in one worker process.
    pub concurrency: usize,
    /// Seconds to let running jobs finish on SIGTERM.
    pub shutdown_timeout_secs: u64,
}

/// `[ledger]`: the drain of the settlement stream into PostgreSQL (in `maas-worker`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Entries written per batch.
    pub batch: usize,
    /// Milliseconds an entry may stay unacknowledged by its reader (a worker that died) before
    /// another worker claims it.
    pub claim_idle_ms: u64,
    /// Milliseconds between reads while the stream is empty.
    pub idle_wait_ms: u64,
    /// Seconds between refreshes of the stream's gauges in `maas-api`'s `/metrics`.
    pub metrics_every_secs: u64,
}

/// `[compute]`: node agents and how the platform grades their silence.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSettings {
    /// Seconds between two heartbeats of an agent (agents take it from the platform).
    pub heartbeat_interval_secs: u64,
    /// Seconds between two resource reports of an agent.
    pub report_interval_secs: u64,
    /// Missed heartbeats before a node is `not_ready`.
    pub missed_heartbeats_before_not_ready: u32,
    /// Seconds of silence before a node is `offline`.
    pub offline_after_secs: u64,
    /// Cron schedule (sec min hour day month weekday) of the worker's liveness sweep.
    pub liveness_schedule: String,
    /// Hours a join token stays valid.
    pub join_token_ttl_hours: u64,
    /// Largest logo upload, bytes.
    pub logo_max_bytes: usize,
    /// Milliseconds a call from the platform to an agent may take.
    pub agent_timeout_ms: u64,
    /// Seconds a deployment's instances may take to turn ready before it fails.
    pub deploy_timeout_secs: u64,
    /// Milliseconds before a deploy job in motion looks again (whole seconds on the queue).
    pub deploy_follow_ms: u64,
    /// Seconds before a pending deployment tries to place again.
    pub pending_retry_secs: u64,
    /// Seconds a node stays offline before its replicas are placed elsewhere.
    pub reschedule_after_offline_secs: u64,
    /// Cron schedule of the worker's status sync (desired vs reported state).
    pub status_sync_schedule: String,
    /// Longest long-poll of an agent for its assignments, seconds (at most 60).
    pub assignment_wait_secs: u64,
    /// Seconds between two refreshes of the deployment directory (besides announced changes).
    pub directory_refresh_secs: u64,
    /// How long an SSH connection and login may take, milliseconds.
    pub ssh_connect_timeout_ms: u64,
    /// Seconds a terminal ticket stays valid (it is also single-use).
    pub terminal_ticket_ttl_secs: u64,
    /// A terminal with no input for this many seconds is closed.
    pub terminal_idle_secs: u64,
    /// Origins, besides the API's own, that a browser may open a terminal from.
    pub terminal_allowed_origins: Vec<String>,
    /// Cron schedule of the remote tasks' tick (which fires the tasks that are due).
    pub task_schedule: String,
    /// How many servers `check-all` and `resources` probe at once.
    pub remote_parallelism: usize,
    /// Where `scripts/fetch-console-assets.sh` put xterm.js for the terminal page.
    pub console_assets_dir: std::path::PathBuf,
}

/// `[storage]`: uploads (logos).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of the local store (shared by every `maas-api` replica, e.g. a mounted volume).
    pub dir: std::path::PathBuf,
}

/// `[knowledge]`: knowledge bases.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeSettings {
    /// The largest document accepted, in bytes.
    pub max_document_bytes: usize,
    /// Chunks per embedding call of the ingestion.
    pub embed_batch: u32,
    /// How long a worker holds a document between steps, seconds (renewed after each batch).
    pub lease_secs: u64,
    /// Upstream failures before a document fails.
    pub max_attempts: u32,
    /// When the sweep queues again documents whose worker died (cron, seconds first).
    pub sweep_schedule: String,
    /// A document unchanged this long with no live lease is queued again, seconds.
    pub stalled_after_secs: u64,
    /// Memory the embedded vector index may hold per process, MiB.
    pub embedded_cache_mb: u64,
    /// `f32` (default) or `f16`: how the embedded index holds vectors in memory (f16 halves
    /// the memory; scores move by about 1e-3).
    pub embedded_precision: EmbeddedPrecision,
    /// `tokenizer.json` per embedding model name: chunks are sized in that model's tokens
    /// (4 characters count as a token for the others).
    pub tokenizers: std::collections::HashMap<String, std::path::PathBuf>,
    /// The embedding model of vector stores created through `/v1/vector_stores` without one
    /// (the request's `embedding_model` extension field chooses another).
    pub store_embedding_model: String,
}

/// How the embedded vector index holds vectors.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddedPrecision {
    /// 4 bytes a dimension.
    #[default]
    F32,
    /// 2 bytes a dimension.
    F16,
}

/// Which vector index serves knowledge-base search.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VectorStoreKind {
    /// Exact search in each process over the vectors in PostgreSQL (no extra server).
    #[default]
    Embedded,
    /// Qdrant (`url`), for large bases and scale-out.
    Qdrant,
}

/// `[vector_store]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VectorStoreSettings {
    /// `embedded` (default) or `qdrant`.
    pub kind: VectorStoreKind,
    /// Qdrant's gRPC URL (`http://host:6334`); `QDRANT_URL` sets it too.
    pub url: Option<String>,
    /// Qdrant API key.
    #[serde(serialize_with = "redact_opt")]
    pub api_key: Option<SecretString>,
    /// Qdrant collections are named `{collection_prefix}_{model}_{dims}`.
    pub collection_prefix: String,
}

/// Settings could not be loaded or are unsafe.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source could not be read or parsed.
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range or malformed.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A secret is missing or still the development default in production.
    #[error("refusing to start in production: {0} is missing or set to its development default")]
    InsecureSecret(&'static str),
}

impl Settings {
    /// Loads settings from the process environment and `MAAS_CONFIG_DIR` (default `config`).
    ///
    /// # Errors
    /// [`SettingsError`] when a source is malformed or [`Settings::validate`] refuses the result.
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_with(&[])
    }

    /// Like [`Settings::load`], with `overrides` (dotted key, value) applied last; used by tests
    /// and by binaries for command-line flags.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_with(overrides: &[(&str, &str)]) -> Result<Self, SettingsError> {
        let environment = AppEnvironment::parse(
            &std::env::var("MAAS_ENV").unwrap_or_else(|_| "development".into()),
        )?;
        let dir = std::env::var_os("MAAS_CONFIG_DIR")
            .map_or_else(|| PathBuf::from("config"), PathBuf::from);
        Self::load_from(environment, &dir, overrides)
    }

    fn load_from(
        environment: AppEnvironment,
        dir: &Path,
        overrides: &[(&str, &str)],
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from(dir.join("default.toml")).required(false))
            .add_source(
                File::from(dir.join(format!("{}.toml", environment.as_str()))).required(false),
            )
            .add_source(
                Environment::with_prefix("MAAS")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("server.cors_allowed_origins")
                    .with_list_parse_key("compute.terminal_allowed_origins")
                    .try_parsing(true),
            );
        for (alias, key, canonical) in [
            ("DATABASE_URL", "database.url", "MAAS__DATABASE__URL"),
            ("REDIS_URL", "redis.url", "MAAS__REDIS__URL"),
            ("QDRANT_URL", "vector_store.url", "MAAS__VECTOR_STORE__URL"),
        ] {
            if std::env::var_os(canonical).is_none() {
                builder = builder.set_override_option(key, std::env::var(alias).ok())?;
            }
        }
        for (key, value) in overrides {
            builder = builder.set_override(*key, *value)?;
        }
        let sections: Sections = builder.build()?.try_deserialize()?;
        let settings = Self {
            environment,
            sections,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks ranges and, in production, that every secret is set and not a development default.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] or [`SettingsError::InsecureSecret`].
    pub fn validate(&self) -> Result<(), SettingsError> {
        let s = &self.sections;
        if s.server.json_limit_bytes == 0 {
            return Err(SettingsError::Invalid(
                "server.json_limit_bytes must be positive".into(),
            ));
        }
        if s.database.max_connections == 0
            || s.database.min_connections > s.database.max_connections
        {
            return Err(SettingsError::Invalid(
                "database.max_connections must be positive and at least database.min_connections"
                    .into(),
            ));
        }
        if s.identity.access_token_ttl_secs == 0 || s.identity.refresh_token_ttl_secs == 0 {
            return Err(SettingsError::Invalid(
                "identity token lifetimes must be positive".into(),
            ));
        }
        if s.redis.pool_size == 0 || s.worker.concurrency == 0 {
            return Err(SettingsError::Invalid(
                "redis.pool_size and worker.concurrency must be positive".into(),
            ));
        }
        s.crypto.key_bytes()?;
        if s.vector_store.kind == VectorStoreKind::Qdrant && s.vector_store.url.is_none() {
            return Err(SettingsError::Invalid(
                "vector_store.kind = \"qdrant\" needs vector_store.url (or QDRANT_URL)".into(),
            ));
        }
        if s.vector_store.collection_prefix.is_empty()
            || !s
                .vector_store
                .collection_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(SettingsError::Invalid(
                "vector_store.collection_prefix must be letters, digits and _".into(),
            ));
        }
        if self.environment == AppEnvironment::Production {
            let jwt = s.auth.jwt_secret.expose_secret();
            if jwt.len() < 32 || jwt == DEV_JWT_SECRET {
                return Err(SettingsError::InsecureSecret(
                    "MAAS__AUTH__JWT_SECRET (32+ bytes)",
                ));
            }
            if s.crypto.encryption_key.expose_secret().trim() == DEV_ENCRYPTION_KEY {
                return Err(SettingsError::InsecureSecret(
                    "MAAS__CRYPTO__ENCRYPTION_KEY",
                ));
            }
        }
        Ok(())
    }

    /// The effective settings as TOML with every secret masked (`maas config show`).
    ///
    /// # Errors
    /// Only if serialisation fails, which would be a bug.
    pub fn redacted(&self) -> Result<String, SettingsError> {
        let value =
            serde_json::to_value(self).map_err(|e| SettingsError::Invalid(e.to_string()))?;
        Ok(serde_json::to_string_pretty(&value).unwrap_or_default())
    }
}

fn redact<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

fn redact_opt<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

/// Shows a connection URL with its password masked: hosts and database names help operators.
fn redact_url<S: Serializer>(url: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url_password(url.expose_secret()))
}

fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}"),
            None if userinfo.is_empty() => format!("{scheme}://@{host}"),
            None => format!("{scheme}://{REDACTED}@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: AppEnvironment, overrides: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load_from(env, Path::new("/nonexistent"), overrides)
    }

    #[test]
    fn defaults_load_in_development() {
        let settings = load(AppEnvironment::Development, &[]).unwrap();
        assert_eq!(settings.server.port, 8080);
        assert!(settings.server.cors_allowed_origins.is_empty());
    }

    #[test]
    fn production_refuses_development_secrets() {
        let err = load(AppEnvironment::Production, &[]).unwrap_err();
        assert!(matches!(err, SettingsError::InsecureSecret(_)), "{err}");
        let err = load(
            AppEnvironment::Production,
            &[("auth.jwt_secret", &"k".repeat(40))],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                SettingsError::InsecureSecret("MAAS__CRYPTO__ENCRYPTION_KEY")
            ),
            "{err}"
        );
        let key = STANDARD.encode([7u8; 32]);
        let ok = load(
            AppEnvironment::Production,
            &[
                ("auth.jwt_secret", &"k".repeat(40)),
                ("crypto.encryption_key", &key),
            ],
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn a_short_encryption_key_is_refused_everywhere() {
        let key = STANDARD.encode([7u8; 16]);
        assert!(matches!(
            load(
                AppEnvironment::Development,
                &[("crypto.encryption_key", &key)]
            ),
            Err(SettingsError::Invalid(_))
        ));
    }

    #[test]
    fn secrets_never_print() {
        let settings = load(
            AppEnvironment::Development,
            &[
                ("database.url", "postgres://maas:hunter2@db:5432/maas"),
                ("auth.jwt_secret", "topsecretvalue"),
            ],
        )
        .unwrap();
        let shown = settings.redacted().unwrap();
        let debugged = format!("{settings:?}");
        for text in [&shown, &debugged] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("topsecretvalue"), "{text}");
        }
        assert!(
            shown.contains("postgres://maas:[redacted]@db:5432/maas"),
            "{shown}"
        );
    }

    #[test]
    fn url_masking_handles_every_form() {
        assert_eq!(
            mask_url_password("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(
            mask_url_password("redis://:pw@h:1/0"),
            "redis://:[redacted]@h:1/0"
        );
        assert_eq!(mask_url_password("garbage"), REDACTED);
    }
}
