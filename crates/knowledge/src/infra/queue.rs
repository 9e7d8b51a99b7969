//! The ingestion queue on apalis.

use std::time::Duration;

use async_trait::async_trait;
use maas_shared::jobs::JobProducer;
use maas_shared::kv::{Keyspace, Multiplexed};

use crate::domain::document::DocumentId;
use crate::domain::errors::KnowledgeError;
use crate::domain::ports::IngestQueue;
use crate::jobs::IngestJob;

/// Pushes [`IngestJob`]s.
#[derive(Clone)]
pub struct ApalisIngestQueue {
    redis: Multiplexed,
    keys: Keyspace,
}

impl ApalisIngestQueue {
    /// The queue on `redis` under `keys`.
    #[must_use]
    pub fn new(redis: Multiplexed, keys: Keyspace) -> Self {
        Self { redis, keys }
    }
}

#[async_trait]
impl IngestQueue for ApalisIngestQueue {
    async fn push(&self, document: DocumentId) -> Result<(), KnowledgeError> {
        let conn = self.redis.get().await?;
        JobProducer::<IngestJob>::new(conn, &self.keys)
            .push(IngestJob {
                document_id: document.as_uuid(),
                attempt: 0,
            })
            .await?;
        Ok(())
    }

    async fn retry(
        &self,
        document: DocumentId,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), KnowledgeError> {
        let conn = self.redis.get().await?;
        let key = format!("ingest:{document}:{attempt}");
        JobProducer::<IngestJob>::new(conn, &self.keys)
            .push_once_after(
                IngestJob {
                    document_id: document.as_uuid(),
                    attempt,
                },
                &key,
                delay.max(Duration::from_secs(1)),
            )
            .await?;
        Ok(())
    }
}
