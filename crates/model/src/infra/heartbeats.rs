//! Last heartbeats in one Redis sorted set (member: server id, score: Unix milliseconds): a
//! heartbeat is one `ZADD`, a sweep of any number of nodes one `ZMSCORE`.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, TimeZone as _, Utc};
use maas_shared::kv::{Keyspace, Multiplexed};

use crate::domain::errors::ModelError;
use crate::domain::ports::Heartbeats;
use crate::domain::server::ServerId;

/// [`Heartbeats`] in Redis.
#[derive(Clone)]
pub struct RedisHeartbeats {
    redis: Multiplexed,
    key: String,
}

impl RedisHeartbeats {
    /// Heartbeats under this deployment's prefix.
    #[must_use]
    pub fn new(redis: Multiplexed, keys: &Keyspace) -> Self {
        Self {
            redis,
            key: keys.key("compute:heartbeats"),
        }
    }
}

#[async_trait]
impl Heartbeats for RedisHeartbeats {
    async fn beat(&self, id: ServerId, at: DateTime<Utc>) -> Result<(), ModelError> {
        let mut conn = self.redis.get().await?;
        let () = redis::cmd("ZADD")
            .arg(&self.key)
            .arg(at.timestamp_millis())
            .arg(id.to_string())
            .query_async(&mut conn)
            .await
            .context("recording a heartbeat")?;
        Ok(())
    }

    async fn last_seen(&self, ids: &[ServerId]) -> Result<Vec<Option<DateTime<Utc>>>, ModelError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.redis.get().await?;
        let mut cmd = redis::cmd("ZMSCORE");
        cmd.arg(&self.key);
        for id in ids {
            cmd.arg(id.to_string());
        }
        let scores: Vec<Option<f64>> = cmd
            .query_async(&mut conn)
            .await
            .context("reading heartbeats")?;
        Ok(scores
            .into_iter()
            .map(|score| {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "scores are whole Unix milliseconds"
                )]
                score.and_then(|ms| Utc.timestamp_millis_opt(ms as i64).single())
            })
            .collect())
    }

    async fn forget(&self, id: ServerId) -> Result<(), ModelError> {
        let mut conn = self.redis.get().await?;
        let _: i64 = redis::cmd("ZREM")
            .arg(&self.key)
            .arg(id.to_string())
            .query_async(&mut conn)
            .await
            .context("forgetting heartbeats")?;
        Ok(())
    }
}
