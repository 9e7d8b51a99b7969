//! Writes that must not slow requests down: key use times are collected in memory and written
//! by a background task (the latest per key; a failed write is kept for the next flush). Usage
//! is not batched in memory: it is settled into a durable stream (see `stream`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use maas_shared::tasks::Tasks;

use crate::domain::api_key::ApiKeyId;
use crate::domain::ports::{ApiKeyRepository, KeyUseRecorder};

/// Collects key use times; a background task writes the latest of each key every few seconds.
pub struct BatchedKeyUses {
    pending: Arc<Pending>,
}

impl BatchedKeyUses {
    /// Registers the flush loop over `keys` with `tasks`, flushing every `every` and once more
    /// on shutdown.
    #[must_use]
    pub fn start(keys: Arc<dyn ApiKeyRepository>, every: Duration, tasks: &Tasks) -> Self {
        let pending: Arc<Pending> = Arc::default();
        let shared = Arc::clone(&pending);
        tasks.spawn_loop("identity.key_use_writer", move |shutdown| async move {
            let mut tick = tokio::time::interval(every);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    () = shutdown.requested() => true,
                };
                flush(&shared, keys.as_ref()).await;
                if stopping {
                    return;
                }
            }
        });
        Self { pending }
    }
}

type Pending = Mutex<HashMap<ApiKeyId, DateTime<Utc>>>;

async fn flush(pending: &Pending, keys: &dyn ApiKeyRepository) {
    let batch: Vec<(ApiKeyId, DateTime<Utc>)> = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    if batch.is_empty() {
        return;
    }
    if let Err(err) = keys.touch(&batch).await {
        tracing::warn!(keys = batch.len(), error = %err, "could not record key use; will retry");
        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, at) in batch {
            let slot = pending.entry(id).or_insert(at);
            *slot = (*slot).max(at);
        }
    }
}

impl KeyUseRecorder for BatchedKeyUses {
    fn record(&self, key: ApiKeyId, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = pending.entry(key).or_insert(at);
        *slot = (*slot).max(at);
    }
}
