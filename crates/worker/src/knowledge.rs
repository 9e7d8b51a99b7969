//! Knowledge-base ingestion and the sweep that picks up documents whose worker died.

use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use maas_knowledge::app::ingest::{Ingestor, Outcome};
use maas_knowledge::domain::document::DocumentId;
use maas_knowledge::jobs::{IngestJob, IngestSweepJob};

/// The sweep's view of "stalled".
#[derive(Clone, Copy, Debug)]
pub(crate) struct StalledAfter(pub Duration);

/// Ingests one document (as far as it can go; a rate limit or a down embedder queues it again).
pub(crate) async fn ingest(job: IngestJob, ingestor: Data<Ingestor>) -> Result<(), BoxDynError> {
    let id = DocumentId::from_uuid(job.document_id);
    let outcome = ingestor.run(id, job.attempt).await?;
    match &outcome {
        Outcome::Done => tracing::info!(document = %id, "document ingested"),
        Outcome::Gone | Outcome::Busy => {
            tracing::debug!(document = %id, outcome = ?outcome, "nothing to ingest here");
        }
        Outcome::Failed(reason) => tracing::warn!(document = %id, reason, "document failed"),
        Outcome::RetryAfter(after) => {
            tracing::info!(document = %id, retry_in = ?after, "document ingestion waits");
        }
    }
    Ok(())
}

/// Queues again documents whose ingestion stopped.
pub(crate) async fn sweep(
    job: IngestSweepJob,
    ingestor: Data<Ingestor>,
    stalled: Data<StalledAfter>,
) -> Result<(), BoxDynError> {
    let StalledAfter(after) = *stalled;
    let n = ingestor.sweep(after).await?;
    if n > 0 {
        tracing::info!(
            tick = job.tick,
            documents = n,
            "stalled documents queued again"
        );
    }
    Ok(())
}
