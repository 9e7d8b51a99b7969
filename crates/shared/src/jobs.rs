//! Background job wiring on apalis + Redis (DESIGN §5).
//!
//! Each job type names its queue; producers (the API, the CLI) push through a [`JobProducer`],
//! `maas-worker` consumes from [`storage`] with the same namespace. Delivery is at least once, so
//! every handler must be idempotent.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use apalis::prelude::Storage as _;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::RedisSettings;
use crate::kv::Keyspace;

/// A job payload type and the queue it travels on.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// Queue name, stable across releases (`context.job`).
    const QUEUE: &'static str;
}

/// The apalis storage for job type `J`.
pub type JobStorage<J> = RedisStorage<J>;

/// Opens the multiplexed connection apalis uses (one per process is enough).
///
/// # Errors
/// When Redis is unreachable or the URL is malformed.
pub async fn connection(settings: &RedisSettings) -> anyhow::Result<ConnectionManager> {
    apalis_redis::connect(settings.url.expose_secret().to_owned())
        .await
        .context("connecting apalis to Redis")
}

/// The storage of queue `J::QUEUE` inside this deployment's keyspace.
#[must_use]
pub fn storage<J: Job>(conn: ConnectionManager, keyspace: &Keyspace) -> JobStorage<J> {
    let namespace = keyspace.key(&format!("jobs:{}", J::QUEUE));
    RedisStorage::new_with_config(conn, Config::default().set_namespace(&namespace))
}

/// A unique worker name for this process: apalis tracks liveness per worker id, so two
/// processes must never share one.
#[must_use]
pub fn worker_name(queue: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    format!(
        "{queue}@{host}:{}:{}:{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::now_v7().simple()
    )
}

/// Pushes jobs of type `J`.
pub struct JobProducer<J: Job> {
    storage: JobStorage<J>,
}

impl<J: Job> Clone for JobProducer<J> {
    fn clone(&self) -> Self {
        Self {
            storage: self.storage.clone(),
        }
    }
}

impl<J: Job> JobProducer<J> {
    /// A producer on `J::QUEUE`.
    #[must_use]
    pub fn new(conn: ConnectionManager, keyspace: &Keyspace) -> Self {
        Self {
            storage: storage::<J>(conn, keyspace),
        }
    }

    /// Enqueues `job` and returns its task id.
    ///
    /// # Errors
    /// When Redis rejects the push.
    pub async fn push(&self, job: J) -> anyhow::Result<String> {
        let mut storage = self.storage.clone();
        let parts = storage
            .push(job)
            .await
            .with_context(|| format!("enqueueing a {} job", J::QUEUE))?;
        Ok(parts.task_id.to_string())
    }
}

/// Proves the API → Redis → worker path end to end: the worker answers by storing a pong.
/// Used by `maas diagnostics ping-worker` and the worker integration test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticPing {
    /// Correlates the pong with this ping.
    pub id: uuid::Uuid,
    /// Simulated work before answering, in milliseconds (capped at [`DiagnosticPing::MAX_DELAY_MS`]);
    /// lets operators and tests watch a job that is in flight, e.g. across a worker shutdown.
    #[serde(default)]
    pub delay_ms: u64,
}

impl Job for DiagnosticPing {
    const QUEUE: &'static str = "diagnostics.ping";
}

impl DiagnosticPing {
    /// The longest simulated work a ping may ask for.
    pub const MAX_DELAY_MS: u64 = 30_000;

    /// The key where the worker notes that it started on this ping.
    #[must_use]
    pub fn started_key(&self, keyspace: &Keyspace) -> String {
        keyspace.key(&format!("diagnostics:started:{}", self.id))
    }

    /// The key where the worker stores its answer (the worker's name).
    #[must_use]
    pub fn pong_key(&self, keyspace: &Keyspace) -> String {
        keyspace.key(&format!("diagnostics:pong:{}", self.id))
    }
}
