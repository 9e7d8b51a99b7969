//! Writes that must not slow requests down: ledger entries and key use times are collected in
//! memory and written in batches by background tasks. Nothing is dropped: a full channel makes
//! callers wait, and a failed batch is retried before it is reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use backon::Retryable as _;
use chrono::{DateTime, Utc};
use maas_shared::tasks::Tasks;
use tokio::sync::mpsc;

use crate::domain::api_key::ApiKeyId;
use crate::domain::errors::IdentityError;
use crate::domain::limits::Subject;
use crate::domain::ports::{ApiKeyRepository, KeyUseRecorder, LedgerEntry, UsageLedger};

const BATCH: usize = 500;
const LINGER: Duration = Duration::from_millis(100);

/// A [`UsageLedger`] whose appends return at once and reach the inner ledger in batches.
pub struct BatchedLedger {
    tx: mpsc::UnboundedSender<LedgerEntry>,
    inner: Arc<dyn UsageLedger>,
}

impl BatchedLedger {
    /// Registers the writer loop over `inner` with `tasks`; it flushes on shutdown.
    #[must_use]
    pub fn start(inner: Arc<dyn UsageLedger>, tasks: &Tasks) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<LedgerEntry>();
        let writer = Arc::clone(&inner);
        tasks.spawn_loop("identity.ledger_writer", move |shutdown| {
            maas_shared::batch::drain(
                rx,
                LINGER,
                BATCH,
                move |batch: Vec<LedgerEntry>| {
                    let writer = Arc::clone(&writer);
                    async move { write_with_retry(writer.as_ref(), &batch).await }
                },
                shutdown,
            )
        });
        Self { tx, inner }
    }
}

async fn write_with_retry(ledger: &dyn UsageLedger, batch: &[LedgerEntry]) {
    let written = (|| ledger.append(batch))
        .retry(maas_shared::retry::write_backoff())
        .notify(|err, delay| {
            tracing::warn!(entries = batch.len(), error = %err, retry_in = ?delay, "usage ledger write failed; retrying");
        })
        .await;
    if let Err(err) = written {
        tracing::error!(entries = batch.len(), error = ?err, "usage ledger write failed for good; entries lost");
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
