//! The Redis pool and key namespacing. Every key the platform writes starts with the configured
//! prefix, so several deployments (or tests) can share one Redis.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

/// A pool of multiplexed Redis connections (built once per process by the composition root).
pub type RedisPool = deadpool_redis::Pool;

/// One multiplexed, self-reconnecting connection for hot paths: using it costs exactly one round
/// trip per command (the pool checks each connection it hands out with a `PING`, which would
/// double the latency of a single command). It connects on first use, so a process can start
/// while Redis is still down; a failed connect is retried by the next caller.
#[derive(Clone)]
pub struct Multiplexed {
    client: redis::Client,
    config: redis::aio::ConnectionManagerConfig,
    conn: Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>>,
}

impl Multiplexed {
    /// A lazily connecting handle to `url`, with `timeout` for connecting and for each answer.
    ///
    /// # Errors
    /// When the URL is malformed.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("Redis URL")?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // No retries inside one call: redis' own backoff would hold a request for up to a
            // minute while Redis is down; the next call connects again anyway.
            .set_number_of_retries(0);
        Ok(Self {
            client,
            config,
            conn: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// The shared connection (a cheap clone), connecting first if needed.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn get(&self) -> anyhow::Result<redis::aio::ConnectionManager> {
        let conn = self
            .conn
            .get_or_try_init(|| {
                redis::aio::ConnectionManager::new_with_config(
                    self.client.clone(),
                    self.config.clone(),
                )
            })
            .await
            .context("connecting to Redis")?;
        Ok(conn.clone())
    }
}

impl std::fmt::Debug for Multiplexed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multiplexed")
            .field("connected", &self.conn.initialized())
            .finish()
    }
}

/// `PING` through the pool.
///
/// # Errors
/// When no connection can be had or Redis does not answer.
pub async fn ping(pool: &RedisPool) -> anyhow::Result<()> {
    let mut conn = pool.get().await.context("Redis connection")?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .context("Redis ping")?;
    Ok(())
}

/// The key prefix of this deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyspace(Arc<str>);

impl Keyspace {
    /// A keyspace with `prefix` (for example `maas:`).
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self(Arc::from(prefix))
    }

    /// The full key for `name`.
    #[must_use]
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    /// The prefix itself.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix() {
        assert_eq!(Keyspace::new("maas:").key("jobs:x"), "maas:jobs:x");
    }
}
