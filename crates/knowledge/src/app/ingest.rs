//! Ingestion: one document from its bytes to searchable vectors, in steps that each leave the
//! record consistent, so that a job run again (a redelivery, a killed worker's document picked
//! up by the sweep) does only what is still due and never writes a chunk or a point twice.
//!
//! parse → chunk (ids from document and position; all chunks in one write) → embed (batches
//! of chunks with no vector yet, metered to the base's owner) → index (the document's points
//! upserted) → ready. A base whose embedding model changes gets the same steps for its next
//! generation; the last document to finish switches the base over.

use std::sync::Arc;
use std::time::Duration;

use maas_inference::contract::InferenceError;
use maas_user::contract::IdentityError;

use super::knowledge::{KnowledgePorts, space_of};
use crate::domain::base::{Embedding, KnowledgeBase};
use crate::domain::document::{Chunk, Document, DocumentId, DocumentStatus, chunk_id};
use crate::domain::errors::KnowledgeError;
use crate::domain::ports::{Extractor, Point, Tokenizers};
use crate::domain::text::split;

/// Tunables of the ingestion.
#[derive(Clone, Copy, Debug)]
pub struct IngestConfig {
    /// Chunks per embedding call.
    pub embed_batch: u32,
    /// How long a worker holds a document between steps (renewed after each batch).
    pub lease: Duration,
    /// Attempts after an upstream failure before the document fails.
    pub max_attempts: u32,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything due is done.
    Done,
    /// The document (or its base) was deleted.
    Gone,
    /// Another worker holds the document.
    Busy,
    /// Stopped; the document is failed with this reason.
    Failed(String),
    /// To be run again after this long (rate limited, or the embedder is down).
    RetryAfter(Duration),
}

/// Ingests documents.
#[derive(Clone)]
pub struct Ingestor {
    ports: KnowledgePorts,
    extractor: Arc<dyn Extractor>,
    tokenizers: Arc<dyn Tokenizers>,
    config: IngestConfig,
}

/// What stops a step.
enum Stop {
    Fail(String),
    Retry(Duration),
    /// The lease was lost (the document was cancelled, or another worker took it over).
    Lost,
    Error(KnowledgeError),
}

impl From<KnowledgeError> for Stop {
    fn from(err: KnowledgeError) -> Self {
        Self::Error(err)
    }
}

impl Ingestor {
    /// The ingestor of one worker process.
    #[must_use]
    pub fn new(
        ports: KnowledgePorts,
        extractor: Arc<dyn Extractor>,
        tokenizers: Arc<dyn Tokenizers>,
        config: IngestConfig,
    ) -> Self {
        Self {
            ports,
            extractor,
            tokenizers,
            config,
        }
    }

    /// Brings a document as far as it can go; `attempt` counts earlier runs that ended in an
    /// upstream failure.
    ///
    /// # Errors
    /// Storage failures (the job is retried).
    pub async fn run(&self, id: DocumentId, attempt: u32) -> Result<Outcome, KnowledgeError> {
        // The lease is this run's, not the process's: two runs of one document in one worker
        // (a retry and a sweep) must not both take it, or both would embed the same batch.
        let holder = uuid::Uuid::now_v7();
        let Some(doc) = self.ports.documents.get(id).await? else {
            return Ok(Outcome::Gone);
        };
        if matches!(
            doc.status,
            DocumentStatus::Failed | DocumentStatus::Cancelled
        ) {
            return Ok(Outcome::Done);
        }
        let Some(base) = self.ports.bases.get(doc.base_id).await? else {
            return Ok(Outcome::Gone);
        };
        if !self
            .ports
            .documents
            .claim(id, holder, self.config.lease)
            .await?
        {
            return Ok(Outcome::Busy);
        }
        match self.steps(&doc, &base, attempt, holder).await {
            Ok(()) => Ok(Outcome::Done),
            Err(Stop::Retry(after)) => {
                let not_before = self.ports.clock.now()
                    + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::hours(1));
                self.ports
                    .documents
                    .release(id, holder, Some(not_before))
                    .await?;
                self.ports.queue.retry(id, attempt + 1, after).await?;
                Ok(Outcome::RetryAfter(after))
            }
            Err(Stop::Fail(reason)) => {
                tracing::warn!(document = %id, reason, "ingestion failed");
                self.ports
                    .documents
                    .set_status(id, DocumentStatus::Failed, Some(&reason))
                    .await?;
                Ok(Outcome::Failed(reason))
            }
            Err(Stop::Lost) => Ok(Outcome::Busy),
            Err(Stop::Error(err)) => {
                // The job is retried: free the document for that run (or any other).
                if let Err(e) = self.ports.documents.release(id, holder, None).await {
                    tracing::warn!(document = %id, error = %e, "a failed run's lease could not be released");
                }
                Err(err)
            }
        }
    }

    async fn steps(
        &self,
        doc: &Document,
        base: &KnowledgeBase,
        attempt: u32,
        holder: uuid::Uuid,
    ) -> Result<(), Stop> {
        let mut chunks = self.ports.documents.chunk_count(doc.id).await?;
        if chunks == 0 {
            chunks = self.parse_and_chunk(doc, base).await?;
        }
        let mut base = base.clone();
        self.embed_and_index(doc, &mut base, false, attempt, holder)
            .await?;
        if doc.status != DocumentStatus::Ready {
            self.ports.documents.finish(doc.id, chunks).await?;
        }
        if base.next.is_some() {
            self.embed_and_index(doc, &mut base, true, attempt, holder)
                .await?;
            self.maybe_switch(&base).await?;
        }
        Ok(())
    }

    async fn status(&self, doc: &Document, status: DocumentStatus) -> Result<(), Stop> {
        if doc.status != DocumentStatus::Ready {
            self.ports
                .documents
                .set_status(doc.id, status, None)
                .await?;
        }
        Ok(())
    }

    async fn parse_and_chunk(&self, doc: &Document, base: &KnowledgeBase) -> Result<u32, Stop> {
        self.status(doc, DocumentStatus::Parsing).await?;
        let bytes = self
            .ports
            .blobs
            .get(&doc.storage_key)
            .await
            .map_err(KnowledgeError::Unexpected)?
            .ok_or_else(|| Stop::Fail("blob_missing: the uploaded bytes are gone".into()))?;
        let text = self
            .extractor
            .extract(doc.kind, bytes)
            .await
            .map_err(|e| Stop::Fail(format!("extraction_failed: {e}")))?;
        if text.trim().is_empty() {
            return Err(Stop::Fail("no_text: the document holds no text".into()));
        }
        self.status(doc, DocumentStatus::Chunking).await?;
        let counter = self.tokenizers.counter(&base.embedding.model);
        let chunking = doc.chunking.as_ref().unwrap_or(&base.chunking);
        let pieces = split(&text, chunking, counter.as_ref());
        let chunks: Vec<Chunk> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let position = u32::try_from(i).unwrap_or(u32::MAX);
                Chunk {
                    id: chunk_id(doc.id, position),
                    document_id: doc.id,
                    position,
                    content: p.text,
                    tokens: p.tokens,
                }
            })
            .collect();
        self.ports.documents.save_chunks(doc, &chunks).await?;
        Ok(u32::try_from(chunks.len()).unwrap_or(u32::MAX))
    }

    /// Embeds the chunks of the live generation (or the next one) that have no vector yet,
    /// then upserts the document's points into the index.
    async fn embed_and_index(
        &self,
        doc: &Document,
        base: &mut KnowledgeBase,
        next: bool,
        attempt: u32,
        holder: uuid::Uuid,
    ) -> Result<(), Stop> {
        let embedding: Embedding = if next {
            base.next.clone().ok_or(Stop::Retry(Duration::ZERO))?
        } else {
            base.embedding.clone()
        };
        let mut dims = embedding.dims;
        loop {
            let batch = self
                .ports
                .documents
                .unembedded(doc.id, embedding.generation, self.config.embed_batch)
                .await?;
            if batch.is_empty() {
                break;
            }
            if !next {
                self.status(doc, DocumentStatus::Embedding).await?;
            }
            let principal = self
                .ports
                .principals
                .of_user(doc.owner)
                .await
                .map_err(KnowledgeError::from)?
                .ok_or_else(|| {
                    Stop::Fail("owner_disabled: the base's owner cannot be charged".into())
                })?;
            let inputs: Vec<String> = batch.iter().map(|c| c.content.clone()).collect();
            let embedded = self
                .ports
                .embedder
                .embed(principal, &embedding.model, inputs)
                .await
                .map_err(|e| self.embed_stop(e, attempt))?;
            let width = embedded.vectors.first().map_or(0, Vec::len);
            let width = u32::try_from(width).unwrap_or(u32::MAX);
            let stored = self
                .ports
                .bases
                .set_dims(base.id, embedding.generation, width)
                .await?;
            if stored != Some(width) || dims.is_some_and(|d| d != width) {
                return Err(Stop::Fail(format!(
                    "dimension_mismatch: the model answered {width} dimensions, the base holds {}",
                    stored.or(dims).unwrap_or_default()
                )));
            }
            dims = Some(width);
            let points: Vec<Point> = batch
                .iter()
                .zip(embedded.vectors)
                .map(|(c, vector)| Point {
                    chunk: c.id,
                    document: doc.id,
                    vector,
                })
                .collect();
            self.ports
                .documents
                .save_vectors(doc, embedding.generation, &points, embedded.tokens)
                .await?;
            if !self
                .ports
                .documents
                .claim(doc.id, holder, self.config.lease)
                .await?
            {
                return Err(Stop::Lost);
            }
        }
        let Some(dims) = dims else {
            return Ok(());
        };
        let mut filled = embedding.clone();
        filled.dims = Some(dims);
        if next {
            base.next = Some(filled.clone());
        } else {
            base.embedding = filled.clone();
            self.status(doc, DocumentStatus::Indexing).await?;
        }
        let Some(space) = space_of(base, &filled) else {
            return Ok(());
        };
        let mut after = None;
        loop {
            let points = self
                .ports
                .documents
                .points(base.id, Some(doc.id), embedding.generation, after, 256)
                .await?;
            let Some(last) = points.last() else { break };
            after = Some(last.chunk);
            self.ports.index.upsert(&space, &points).await?;
        }
        Ok(())
    }

    fn embed_stop(&self, err: InferenceError, attempt: u32) -> Stop {
        let backoff = Duration::from_secs(2u64.saturating_pow(attempt.min(6)));
        match err {
            InferenceError::Identity(IdentityError::RateLimited(limit)) => Stop::Retry(
                limit
                    .reset_after
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_secs(1)),
            ),
            InferenceError::Identity(IdentityError::QuotaExceeded(q)) => Stop::Fail(format!(
                "quota_exceeded: the owner's {} of {} tokens is spent",
                q.name, q.limit
            )),
            InferenceError::ModelNotFound(model) => Stop::Fail(format!(
                "embedding_model_not_found: `{model}` is not served to the base's owner"
            )),
            InferenceError::UpstreamUnavailable(why) if attempt < self.config.max_attempts => {
                tracing::warn!(attempt, why, "the embedder failed; trying again later");
                Stop::Retry(backoff)
            }
            other @ (InferenceError::Invalid(_)
            | InferenceError::ProviderNotFound
            | InferenceError::ConversationNotFound
            | InferenceError::DeploymentNotFound
            | InferenceError::ProviderNameTaken
            | InferenceError::UpstreamUnavailable(_)
            | InferenceError::Identity(_)
            | InferenceError::Unexpected(_)) => Stop::Fail(format!("embedding_failed: {other}")),
        }
    }

    /// Switches a base to its next generation once no document is left without its vectors.
    async fn maybe_switch(&self, base: &KnowledgeBase) -> Result<(), Stop> {
        let Some(next) = &base.next else {
            return Ok(());
        };
        if self
            .ports
            .documents
            .unfinished(base.id, next.generation)
            .await?
            > 0
        {
            return Ok(());
        }
        if self.ports.bases.switch(base.id, next.generation).await? {
            self.ports
                .documents
                .drop_generations(base.id, next.generation)
                .await?;
            if let Some(old) = space_of(base, &base.embedding) {
                self.ports.index.drop_space(&old).await?;
            }
            tracing::info!(base = %base.id, model = next.model, "knowledge base switched to its new embedding model");
        }
        Ok(())
    }

    /// Queues again documents whose ingestion stopped (their worker died): not ended, lease
    /// run out, unchanged for `stalled_for`.
    ///
    /// # Errors
    /// Storage or queue failures.
    pub async fn sweep(&self, stalled_for: Duration) -> Result<usize, KnowledgeError> {
        let before = self.ports.clock.now()
            - chrono::Duration::from_std(stalled_for).unwrap_or(chrono::Duration::seconds(60));
        let stalled = self.ports.documents.stalled(before, 500).await?;
        for id in &stalled {
            self.ports.queue.push(*id).await?;
        }
        Ok(stalled.len())
    }
}
