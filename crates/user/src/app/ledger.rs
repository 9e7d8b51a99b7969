//! Draining the settlement stream into the durable ledger (and each entry's record into its
//! owner's table): written idempotently, acknowledged only once committed, so an entry is stored
//! exactly once whichever reader dies when.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::errors::IdentityError;
use crate::domain::ports::{
    LedgerEntry, SettledRecords, SettlementStream, StreamPosition, StreamStats, UsageLedger,
};

/// Moves settlements from the stream to PostgreSQL.
#[derive(Clone)]
pub struct LedgerDrain {
    stream: Arc<dyn SettlementStream>,
    ledger: Arc<dyn UsageLedger>,
    records: Arc<dyn SettledRecords>,
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Entries written and acknowledged.
    pub entries: usize,
    /// Of those, entries claimed from a reader that stopped.
    pub claimed: usize,
}

impl LedgerDrain {
    /// A drain of `stream` into `ledger`, handing each entry's record to `records`.
    #[must_use]
    pub fn new(
        stream: Arc<dyn SettlementStream>,
        ledger: Arc<dyn UsageLedger>,
        records: Arc<dyn SettledRecords>,
    ) -> Self {
        Self {
            stream,
            ledger,
            records,
        }
    }

    /// One batch of at most `max` entries for `consumer`: first (when `claim_idle` is given)
    /// those another reader left unacknowledged for that long, then new ones. Writes them, then
    /// acknowledges them. On a failed write nothing is acknowledged: the entries stay pending
    /// and are claimed again once idle.
    ///
    /// # Errors
    /// Stream or storage failures.
    #[tracing::instrument(name = "ledger.drain", skip_all, fields(consumer))]
    pub async fn step(
        &self,
        consumer: &str,
        claim_idle: Option<Duration>,
        max: usize,
    ) -> Result<Drained, IdentityError> {
        let mut batch = match claim_idle {
            Some(idle) => self.stream.claim(consumer, idle, max).await?,
            None => Vec::new(),
        };
        let claimed = batch.len();
        if batch.len() < max {
            batch.extend(self.stream.read(consumer, max - batch.len()).await?);
        }
        if batch.is_empty() {
            return Ok(Drained::default());
        }
        let mut entries: Vec<LedgerEntry> = Vec::with_capacity(batch.len());
        let mut records: Vec<Vec<u8>> = Vec::with_capacity(batch.len());
        let mut positions: Vec<StreamPosition> = Vec::with_capacity(batch.len());
        for settled in batch {
            entries.extend(settled.entry);
            records.extend(settled.record);
            positions.push(settled.position);
        }
        if let Err(err) = self.write(&entries, &records).await {
            if let Err(count) = self.stream.count_failed(positions.len() as u64).await {
                tracing::warn!(error = %count, "could not count a failed ledger batch");
            }
            return Err(err);
        }
        self.stream.ack(&positions).await?;
        Ok(Drained {
            entries: positions.len(),
            claimed,
        })
    }

    async fn write(
        &self,
        entries: &[LedgerEntry],
        records: &[Vec<u8>],
    ) -> Result<(), IdentityError> {
        if !entries.is_empty() {
            self.ledger.append(entries).await?;
        }
        if !records.is_empty() {
            self.records
                .store(records)
                .await
                .map_err(IdentityError::Unexpected)?;
        }
        Ok(())
    }

    /// Backlog, lag and counts of the stream.
    ///
    /// # Errors
    /// Stream failures.
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<StreamStats, IdentityError> {
        self.stream.stats(now).await
    }
}
