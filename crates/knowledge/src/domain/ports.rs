//! What this context needs from outside: storage of bases, documents, chunks and vectors
//! (PostgreSQL, the system of record), a vector index, text extraction, token counting, and the
//! ingestion queue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::UserId;
use serde_json::{Map, Value};

use super::base::{BaseId, KnowledgeBase};
use super::document::{Chunk, Document, DocumentId, DocumentKind, DocumentStatus};
use super::errors::KnowledgeError;
use super::store::{
    BatchId, FileBatch, FileCounts, FileId, FileState, Filter, StoreSettings, StoredFile, Window,
};
use super::text::TokenCounter;

/// Storage of knowledge bases.
#[async_trait]
pub trait BaseRepository: Send + Sync {
    /// Stores a new base with its audit row.
    ///
    /// # Errors
    /// [`KnowledgeError::NameTaken`]; storage failures.
    async fn insert(
        &self,
        base: &KnowledgeBase,
        audit: NewAuditEvent,
    ) -> Result<(), KnowledgeError>;

    /// A base by id (anyone's: callers check ownership).
    ///
    /// # Errors
    /// Storage failures.
    async fn get(&self, id: BaseId) -> Result<Option<KnowledgeBase>, KnowledgeError>;

    /// An owner's bases by id.
    ///
    /// # Errors
    /// Storage failures.
    async fn list(
        &self,
        owner: UserId,
        page: &PageRequest,
    ) -> Result<Page<KnowledgeBase>, KnowledgeError>;

    /// Stores a changed base with its audit row.
    ///
    /// # Errors
    /// [`KnowledgeError::NameTaken`], [`KnowledgeError::BaseNotFound`]; storage failures.
    async fn update(
        &self,
        base: &KnowledgeBase,
        audit: NewAuditEvent,
    ) -> Result<(), KnowledgeError>;

    /// Deletes a base, its documents, chunks and vectors in one transaction with its audit
    /// row; answers the blob keys of its documents.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`]; storage failures.
    async fn delete(&self, id: BaseId, audit: NewAuditEvent)
    -> Result<Vec<String>, KnowledgeError>;

    /// Records the dimension of a generation's vectors (first writer wins); answers the stored
    /// one.
    ///
    /// # Errors
    /// Storage failures.
    async fn set_dims(
        &self,
        id: BaseId,
        generation: i32,
        dims: u32,
    ) -> Result<Option<u32>, KnowledgeError>;

    /// Makes the next generation live (`embedding ← next`) if it is still `generation`.
    ///
    /// # Errors
    /// Storage failures.
    async fn switch(&self, id: BaseId, generation: i32) -> Result<bool, KnowledgeError>;
}

/// How an insert went.
#[derive(Clone, Debug)]
pub enum Inserted {
    /// A new document.
    New(Document),
    /// The same bytes are already in the base: that document.
    Duplicate(Document),
}

/// A chunk as search shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkView {
    /// Chunk id.
    pub id: uuid::Uuid,
    /// Its document.
    pub document_id: DocumentId,
    /// The document's file name.
    pub file_name: String,
    /// The uploaded file the document came from, if any.
    pub file_id: Option<FileId>,
    /// Position in the document.
    pub position: u32,
    /// Text.
    pub content: String,
    /// The document's metadata.
    pub metadata: Map<String, Value>,
}

/// A full-text match.
#[derive(Clone, Debug, PartialEq)]
pub struct TextHit {
    /// Chunk id.
    pub chunk: uuid::Uuid,
    /// Rank normalized to 0..1.
    pub score: f32,
}

/// A vector stored for a chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Chunk id.
    pub chunk: uuid::Uuid,
    /// Its document.
    pub document: DocumentId,
    /// The embedding.
    pub vector: Vec<f32>,
}

/// Storage of documents, their chunks and vectors (the system of record) and full-text search.
#[async_trait]
pub trait DocumentRepository: Send + Sync {
    /// Stores a new document, unless its bytes are already in the base.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`]; storage failures.
    async fn insert(&self, document: &Document) -> Result<Inserted, KnowledgeError>;

    /// A document by id.
    ///
    /// # Errors
    /// Storage failures.
    async fn get(&self, id: DocumentId) -> Result<Option<Document>, KnowledgeError>;

    /// A base's documents by id.
    ///
    /// # Errors
    /// Storage failures.
    async fn list(
        &self,
        base: BaseId,
        page: &PageRequest,
    ) -> Result<Page<Document>, KnowledgeError>;

    /// Deletes a document with its chunks and vectors; answers it.
    ///
    /// # Errors
    /// Storage failures.
    async fn delete(&self, id: DocumentId) -> Result<Option<Document>, KnowledgeError>;

    /// Takes the document for `lease` (renewing one held by `worker`); false when another
    /// worker holds it or it ended.
    ///
    /// # Errors
    /// Storage failures.
    async fn claim(
        &self,
        id: DocumentId,
        worker: uuid::Uuid,
        lease: Duration,
    ) -> Result<bool, KnowledgeError>;

    /// Gives up `worker`'s lease on a document: its next run may go to any worker, not before
    /// `not_before` when given (the sweep leaves it alone until then).
    ///
    /// # Errors
    /// Storage failures.
    async fn release(
        &self,
        id: DocumentId,
        worker: uuid::Uuid,
        not_before: Option<DateTime<Utc>>,
    ) -> Result<(), KnowledgeError>;

    /// Moves a document that has not ended to `status` (with `error` for `failed`); false when
    /// it ended or is gone.
    ///
    /// # Errors
    /// Storage failures.
    async fn set_status(
        &self,
        id: DocumentId,
        status: DocumentStatus,
        error: Option<&str>,
    ) -> Result<bool, KnowledgeError>;

    /// Marks a document ready with its counts (and frees its lease).
    ///
    /// # Errors
    /// Storage failures.
    async fn finish(&self, id: DocumentId, chunks: u32) -> Result<(), KnowledgeError>;

    /// Documents of a base not yet done with `generation`: not ended, or ready with a chunk
    /// that has no vector of it.
    ///
    /// # Errors
    /// Storage failures.
    async fn unfinished(&self, base: BaseId, generation: i32) -> Result<u64, KnowledgeError>;

    /// Stores chunks; ones already stored (same id) are left as they are.
    ///
    /// # Errors
    /// Storage failures.
    async fn save_chunks(
        &self,
        document: &Document,
        chunks: &[Chunk],
    ) -> Result<(), KnowledgeError>;

    /// How many chunks a document has.
    ///
    /// # Errors
    /// Storage failures.
    async fn chunk_count(&self, id: DocumentId) -> Result<u32, KnowledgeError>;

    /// Up to `limit` of a document's chunks with no vector of `generation` yet, by position.
    ///
    /// # Errors
    /// Storage failures.
    async fn unembedded(
        &self,
        id: DocumentId,
        generation: i32,
        limit: u32,
    ) -> Result<Vec<Chunk>, KnowledgeError>;

    /// Stores vectors of `generation` (ones already stored are left) and adds `tokens` to the
    /// document's count.
    ///
    /// # Errors
    /// Storage failures.
    async fn save_vectors(
        &self,
        document: &Document,
        generation: i32,
        points: &[Point],
        tokens: u64,
    ) -> Result<(), KnowledgeError>;

    /// A base's (or one document's) vectors of `generation` after chunk `after`, by chunk id.
    ///
    /// # Errors
    /// Storage failures.
    async fn points(
        &self,
        base: BaseId,
        document: Option<DocumentId>,
        generation: i32,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<Point>, KnowledgeError>;

    /// Deletes a base's vectors of every generation but `keep`.
    ///
    /// # Errors
    /// Storage failures.
    async fn drop_generations(&self, base: BaseId, keep: i32) -> Result<(), KnowledgeError>;

    /// The documents of a base whose attributes pass `filter` (their metadata; `file_name`
    /// and `kind` are the document's own fields).
    ///
    /// # Errors
    /// Storage failures.
    async fn matching(
        &self,
        base: BaseId,
        filter: &Filter,
    ) -> Result<Vec<DocumentId>, KnowledgeError>;

    /// Full-text search of one owner's base: chunks holding any of `terms`, best first.
    ///
    /// # Errors
    /// Storage failures.
    async fn fulltext(
        &self,
        owner: UserId,
        base: BaseId,
        terms: &[String],
        documents: Option<&[DocumentId]>,
        limit: u32,
    ) -> Result<Vec<TextHit>, KnowledgeError>;

    /// Chunks of one owner's base by id, for showing.
    ///
    /// # Errors
    /// Storage failures.
    async fn views(
        &self,
        owner: UserId,
        base: BaseId,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<ChunkView>, KnowledgeError>;

    /// A document's chunks by position.
    ///
    /// # Errors
    /// Storage failures.
    async fn chunks(
        &self,
        id: DocumentId,
        page: &PageRequest,
    ) -> Result<Vec<ChunkView>, KnowledgeError>;

    /// Documents whose lease ran out (or was never taken) with work left: not ended and
    /// unchanged since `before`, or ready but missing vectors of the generation their base
    /// changes to (a model change older than `before`).
    ///
    /// # Errors
    /// Storage failures.
    async fn stalled(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DocumentId>, KnowledgeError>;

    /// The documents of a base.
    ///
    /// # Errors
    /// Storage failures.
    async fn ids(&self, base: BaseId) -> Result<Vec<DocumentId>, KnowledgeError>;
}

/// The vectors of one base and generation, as an index holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Space {
    /// Tenant (every query is filtered by it inside the index).
    pub owner: UserId,
    /// Base.
    pub base: BaseId,
    /// The embedding model.
    pub model: String,
    /// The generation.
    pub generation: i32,
    /// Vector dimension.
    pub dims: u32,
}

/// A nearest neighbour.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorHit {
    /// Chunk id.
    pub chunk: uuid::Uuid,
    /// Its document.
    pub document: DocumentId,
    /// Cosine similarity.
    pub score: f32,
}

/// Nearest-neighbour search over a base's vectors: Qdrant, or the embedded default.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Writes points (already stored in the record) into the index; visible to searches when
    /// it returns.
    ///
    /// # Errors
    /// Index failures.
    async fn upsert(&self, space: &Space, points: &[Point]) -> Result<(), KnowledgeError>;

    /// Removes a document's points.
    ///
    /// # Errors
    /// Index failures.
    async fn delete_document(
        &self,
        space: &Space,
        document: DocumentId,
    ) -> Result<(), KnowledgeError>;

    /// Removes every point of a base and generation.
    ///
    /// # Errors
    /// Index failures.
    async fn drop_space(&self, space: &Space) -> Result<(), KnowledgeError>;

    /// The `top_k` nearest points to `query` (restricted to `documents` when given), best
    /// first.
    ///
    /// # Errors
    /// Index failures.
    async fn search(
        &self,
        space: &Space,
        query: &[f32],
        top_k: usize,
        documents: Option<&[DocumentId]>,
    ) -> Result<Vec<VectorHit>, KnowledgeError>;
}

/// Why text could not be extracted (shown on the document).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExtractError(pub String);

/// Turns a document's bytes into text.
#[async_trait]
pub trait Extractor: Send + Sync {
    /// The text of `bytes` of type `kind`.
    ///
    /// # Errors
    /// [`ExtractError`] when the bytes cannot be read as that type.
    async fn extract(&self, kind: DocumentKind, bytes: Vec<u8>) -> Result<String, ExtractError>;
}

/// The token counters of embedding models.
pub trait Tokenizers: Send + Sync {
    /// The counter of `model` (an estimate when its tokenizer is not known).
    fn counter(&self, model: &str) -> Arc<dyn TokenCounter>;
}

/// The ingestion queue.
#[async_trait]
pub trait IngestQueue: Send + Sync {
    /// Queues a document's ingestion.
    ///
    /// # Errors
    /// Queue failures.
    async fn push(&self, document: DocumentId) -> Result<(), KnowledgeError>;

    /// Queues a document's ingestion again after `delay` (rate limited, or the embedder was
    /// down); `attempt` counts the runs so far.
    ///
    /// # Errors
    /// Queue failures.
    async fn retry(
        &self,
        document: DocumentId,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), KnowledgeError>;
}

/// Storage of what OpenAI's vector-store API adds to bases: uploaded files, store settings,
/// file batches, and the lists and counts of its shapes.
#[async_trait]
pub trait StoreRepository: Send + Sync {
    /// Stores an uploaded file.
    ///
    /// # Errors
    /// Storage failures.
    async fn insert_file(&self, file: &StoredFile) -> Result<(), KnowledgeError>;

    /// A file by id (anyone's: callers check ownership).
    ///
    /// # Errors
    /// Storage failures.
    async fn file(&self, id: FileId) -> Result<Option<StoredFile>, KnowledgeError>;

    /// An owner's files in a window, at most `limit + 1` (see [`Window::finish`]).
    ///
    /// # Errors
    /// Storage failures.
    async fn files(
        &self,
        owner: UserId,
        purpose: Option<&str>,
        window: &Window,
    ) -> Result<Vec<StoredFile>, KnowledgeError>;

    /// Deletes a file's record; answers it.
    ///
    /// # Errors
    /// Storage failures.
    async fn delete_file(&self, id: FileId) -> Result<Option<StoredFile>, KnowledgeError>;

    /// An owner's bases in a window, at most `limit + 1`.
    ///
    /// # Errors
    /// Storage failures.
    async fn bases(
        &self,
        owner: UserId,
        window: &Window,
    ) -> Result<Vec<KnowledgeBase>, KnowledgeError>;

    /// The stored settings of these bases (a base without a row has none).
    ///
    /// # Errors
    /// Storage failures.
    async fn settings(
        &self,
        bases: &[BaseId],
    ) -> Result<Vec<(BaseId, StoreSettings)>, KnowledgeError>;

    /// Stores a base's settings.
    ///
    /// # Errors
    /// Storage failures.
    async fn put_settings(
        &self,
        base: BaseId,
        settings: &StoreSettings,
    ) -> Result<(), KnowledgeError>;

    /// Files by state and bytes used of these bases.
    ///
    /// # Errors
    /// Storage failures.
    async fn usage(
        &self,
        bases: &[BaseId],
    ) -> Result<Vec<(BaseId, FileCounts, u64)>, KnowledgeError>;

    /// A base's documents (of one batch, when given; in one state, when given) in a window,
    /// at most `limit + 1`.
    ///
    /// # Errors
    /// Storage failures.
    async fn documents(
        &self,
        base: BaseId,
        batch: Option<BatchId>,
        state: Option<FileState>,
        window: &Window,
    ) -> Result<Vec<Document>, KnowledgeError>;

    /// The document of `base` that holds `file`: attached from it, or with the same bytes.
    ///
    /// # Errors
    /// Storage failures.
    async fn document_of(
        &self,
        base: BaseId,
        file: &StoredFile,
    ) -> Result<Option<Document>, KnowledgeError>;

    /// Every document attached from `file`, in any base.
    ///
    /// # Errors
    /// Storage failures.
    async fn attached(&self, file: FileId) -> Result<Vec<Document>, KnowledgeError>;

    /// Replaces a document's attributes (its metadata).
    ///
    /// # Errors
    /// Storage failures.
    async fn set_attributes(
        &self,
        document: DocumentId,
        attributes: &Map<String, Value>,
    ) -> Result<(), KnowledgeError>;

    /// Stores a batch and the documents it attached.
    ///
    /// # Errors
    /// Storage failures.
    async fn insert_batch(
        &self,
        batch: &FileBatch,
        documents: &[DocumentId],
    ) -> Result<(), KnowledgeError>;

    /// A batch by id.
    ///
    /// # Errors
    /// Storage failures.
    async fn batch(&self, id: BatchId) -> Result<Option<FileBatch>, KnowledgeError>;

    /// Files of a batch by state.
    ///
    /// # Errors
    /// Storage failures.
    async fn batch_counts(&self, id: BatchId) -> Result<FileCounts, KnowledgeError>;

    /// Marks a batch cancelled and its documents that are not ready or failed `cancelled`
    /// (their ingestion stops at its next step); answers how many were cancelled.
    ///
    /// # Errors
    /// Storage failures.
    async fn cancel_batch(&self, id: BatchId) -> Result<u64, KnowledgeError>;
}
