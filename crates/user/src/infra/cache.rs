//! The in-process principal cache (moka) and its cross-replica invalidation over Redis pub/sub.
//! Entries also expire on their own (a safety net should a message be lost); after a lost
//! subscription the whole cache is dropped, since messages may have been missed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use backon::BackoffBuilder as _;
use futures_util::StreamExt as _;
use maas_shared::kv::{Keyspace, Multiplexed};
use maas_shared::tasks::Tasks;
use moka::sync::Cache;

use super::{redis_connection, redis_failure};
use crate::domain::api_key::SecretDigest;
use crate::domain::errors::IdentityError;
use crate::domain::ports::{CachedAuth, InvalidationBus, PrincipalCache, PrincipalKey};
use crate::domain::user::UserId;

/// Principals cached in this process.
pub struct MokaPrincipalCache {
    cache: Cache<PrincipalKey, CachedAuth>,
}

impl MokaPrincipalCache {
    /// A cache of at most `capacity` entries living at most `ttl`.
    #[must_use]
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }
}

impl PrincipalCache for MokaPrincipalCache {
    fn get(&self, key: &PrincipalKey) -> Option<CachedAuth> {
        self.cache.get(key)
    }

    fn put(&self, key: PrincipalKey, outcome: CachedAuth) {
        self.cache.insert(key, outcome);
    }

    fn invalidate_user(&self, user_id: UserId) {
        let result = self
            .cache
            .invalidate_entries_if(move |_key, value| match value {
                CachedAuth::Valid(p) => p.user_id() == user_id,
                CachedAuth::Refused { owner } => *owner == Some(user_id),
            });
        if result.is_err() {
            // Only possible if closures were not enabled; never leave stale rights behind.
            self.cache.invalidate_all();
        }
    }

    fn invalidate_key(&self, digest: SecretDigest) {
        self.cache.invalidate(&PrincipalKey::Key(digest));
    }
}

fn encode(digest: &SecretDigest) -> String {
    hex::encode(digest.0)
}

fn decode(text: &str) -> Option<SecretDigest> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(SecretDigest(out))
}

/// Publishes invalidations on a Redis channel.
pub struct RedisInvalidationBus {
    conn: Multiplexed,
    channel: String,
}

impl RedisInvalidationBus {
    /// A bus publishing on this deployment's invalidation channel.
    #[must_use]
    pub fn new(conn: Multiplexed, keys: &Keyspace) -> Self {
        Self {
            conn,
            channel: channel(keys),
        }
    }

    async fn publish(&self, message: String) -> Result<(), IdentityError> {
        let mut conn = redis_connection(&self.conn).await?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(message)
            .query_async(&mut conn)
            .await
            .map_err(redis_failure("publishing an invalidation"))?;
        Ok(())
    }
}

fn channel(keys: &Keyspace) -> String {
    keys.key("auth:invalidate")
}

#[async_trait]
impl InvalidationBus for RedisInvalidationBus {
    async fn user_changed(&self, user_id: UserId) -> Result<(), IdentityError> {
        self.publish(format!("user:{user_id}")).await
    }

    async fn key_changed(&self, digest: SecretDigest) -> Result<(), IdentityError> {
        self.publish(format!("key:{}", encode(&digest))).await
    }
}

fn apply(cache: &MokaPrincipalCache, message: &str) {
    match message.split_once(':') {
        Some(("user", id)) => match id.parse::<UserId>() {
            Ok(id) => cache.invalidate_user(id),
            Err(_) => cache.clear(),
        },
        Some(("key", hex)) => match decode(hex) {
            Some(digest) => cache.invalidate_key(digest),
            None => cache.clear(),
        },
        _ => cache.clear(),
    }
}

/// Registers the invalidation listener with `tasks`: it listens for as long as the process runs,
/// reconnecting with backoff after failures, and stops on shutdown.
pub fn listen_for_invalidations(
    client: redis::Client,
    keys: &Keyspace,
    cache: Arc<MokaPrincipalCache>,
    tasks: &Tasks,
) {
    let channel = channel(keys);
    tasks.spawn_loop("identity.invalidation_listener", move |shutdown| async move {
        let mut backoff = maas_shared::retry::reconnect_backoff().build();
        loop {
            let started = std::time::Instant::now();
            tokio::select! {
                result = listen(&client, &channel, &cache) => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "principal invalidation listener lost Redis; reconnecting");
                    }
                }
                () = shutdown.requested() => return,
            }
            cache.clear();
            // A subscription that lived a while starts the backoff over.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = maas_shared::retry::reconnect_backoff().build();
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.requested() => return,
            }
        }
    });
}

async fn listen(
    client: &redis::Client,
    channel: &str,
    cache: &MokaPrincipalCache,
) -> anyhow::Result<()> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("opening the pub/sub connection")?;
    pubsub.subscribe(channel).await.context("subscribing")?;
    // Anything published while we were not listening is unknown: start clean.
    cache.clear();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        match message.get_payload::<String>() {
            Ok(payload) => apply(cache, &payload),
            Err(_) => cache.clear(),
        }
    }
    anyhow::bail!("pub/sub stream ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_survive_the_wire() {
        let digest = SecretDigest([0xab; 32]);
        assert_eq!(decode(&encode(&digest)), Some(digest));
        assert_eq!(decode("zz"), None);
    }
}
