//! [`ResponseCache`] in Redis: key = user id + SHA-256 of the canonical request body.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use maas_shared::kv::{Keyspace, Multiplexed};
use maas_user::contract::UserId;
use sha2::{Digest, Sha256};

use crate::domain::ports::ResponseCache;

/// Redis-backed response cache.
pub struct RedisResponseCache {
    conn: Multiplexed,
    keys: Keyspace,
    ttl: Duration,
}

impl RedisResponseCache {
    /// A cache whose entries live `ttl`.
    #[must_use]
    pub fn new(conn: Multiplexed, keys: Keyspace, ttl: Duration) -> Self {
        Self { conn, keys, ttl }
    }

    fn key(&self, user: UserId, request: &[u8]) -> String {
        let digest = hex::encode(Sha256::digest(request));
        self.keys.key(&format!("cache:{user}:{digest}"))
    }
}

#[async_trait]
impl ResponseCache for RedisResponseCache {
    async fn get(&self, user: UserId, request: &[u8]) -> Option<Bytes> {
        let mut conn = self.conn.get().await.ok()?;
        let found: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(user, request))
            .query_async(&mut conn)
            .await
            .ok()?;
        found.map(Bytes::from)
    }

    async fn put(&self, user: UserId, request: &[u8], response: Bytes) {
        let Ok(mut conn) = self.conn.get().await else {
            return;
        };
        let ttl = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let stored: Result<(), redis::RedisError> = redis::cmd("SET")
            .arg(self.key(user, request))
            .arg(response.as_ref())
            .arg("PX")
            .arg(ttl)
            .query_async(&mut conn)
            .await;
        if let Err(err) = stored {
            tracing::warn!(error = %err, "could not store a cached response");
        }
    }
}
