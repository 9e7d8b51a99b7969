//! Writes that must not slow requests down: ledger entries and key use times are collected in
//! memory and written in batches by background tasks. Nothing is dropped: a full channel makes
//! callers wait, and a failed batch is retried before it is reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::domain::api_key::ApiKeyId;
use crate::domain::errors::IdentityError;
use crate::domain::limits::Subject;
use crate::domain::ports::{ApiKeyRepository, KeyUseRecorder, LedgerEntry, UsageLedger};

const BATCH: usize = 500;
const LINGER: Duration = Duration::from_millis(100);
const ATTEMPTS: u32 = 5;

/// A [`UsageLedger`] whose appends return at once and reach the inner ledger in batches.
pub struct BatchedLedger {
    tx: mpsc::UnboundedSender<LedgerEntry>,
    inner: Arc<dyn UsageLedger>,
}

impl BatchedLedger {
    /// Starts the writer task over `inner`.
    #[must_use]
    pub fn spawn(inner: Arc<dyn UsageLedger>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<LedgerEntry>();
        let writer = Arc::clone(&inner);
        maas_shared::batch::spawn_drainer(rx, LINGER, BATCH, move |batch: Vec<LedgerEntry>| {
            let writer = Arc::clone(&writer);
            async move { write_with_retry(writer.as_ref(), &batch).await }
        });
        Self { tx, inner }
    }
}

async fn write_with_retry(ledger: &dyn UsageLedger, batch: &[LedgerEntry]) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        match ledger.append(batch).await {
            Ok(()) => return,
            Err(err) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, entries = batch.len(), error = %err, "usage ledger write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(err) => {
                tracing::error!(entries = batch.len(), error = ?err, "usage ledger write failed for good; entries lost");
            }
        }
    }
}

#[async_trait]
impl UsageLedger for BatchedLedger {
    async fn append(&self, entries: &[LedgerEntry]) -> Result<(), IdentityError> {
        for entry in entries {
            self.tx
                .send(entry.clone())
                .map_err(|_| anyhow::anyhow!("usage ledger writer stopped"))?;
        }
        Ok(())
    }

    async fn totals(
        &self,
        subject: Subject,
        since: DateTime<Utc>,
    ) -> Result<(u64, u64), IdentityError> {
        self.inner.totals(subject, since).await
    }
}

/// Collects key use times; a background task writes the latest of each key every few seconds.
pub struct BatchedKeyUses {
    pending: Arc<Mutex<HashMap<ApiKeyId, DateTime<Utc>>>>,
}

impl BatchedKeyUses {
    /// Starts the flush task over `keys`, flushing every `every`.
    #[must_use]
    pub fn spawn(keys: Arc<dyn ApiKeyRepository>, every: Duration) -> Self {
        let pending: Arc<Mutex<HashMap<ApiKeyId, DateTime<Utc>>>> = Arc::default();
        let shared = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let batch: Vec<(ApiKeyId, DateTime<Utc>)> = shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain()
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                if let Err(err) = keys.touch(&batch).await {
                    tracing::warn!(keys = batch.len(), error = %err, "could not record key use; will retry");
                    let mut pending = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    for (id, at) in batch {
                        let slot = pending.entry(id).or_insert(at);
                        *slot = (*slot).max(at);
                    }
                }
            }
        });
        Self { pending }
    }
}

impl KeyUseRecorder for BatchedKeyUses {
    fn record(&self, key: ApiKeyId, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = pending.entry(key).or_insert(at);
        *slot = (*slot).max(at);
    }
}
