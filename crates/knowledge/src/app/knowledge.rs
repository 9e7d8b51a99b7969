//! Knowledge bases as their owners manage them: bases, uploads, documents, search (the
//! [`Retriever`] other contexts use) and rebuilding an index from the record.

use std::sync::Arc;

use async_trait::async_trait;
use maas_inference::contract::{Embedder, InferenceError};
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_shared::storage::BlobStore;
use maas_user::contract::{Actor, Permission, Principal, Principals, UserId};
use serde_json::{Map, Value, json};

use crate::domain::base::{
    BaseId, Chunking, ChunkingDraft, Embedding, KnowledgeBase, Retrieval, RetrievalDraft,
    RetrievalFields, SearchMode, parse_description, parse_model, parse_name,
};
use crate::domain::document::{
    Document, DocumentId, DocumentKind, DocumentStatus, clean_file_name, content_hash,
    parse_metadata,
};
use crate::domain::errors::{InvalidValue, KnowledgeError};
use crate::domain::ports::{
    BaseRepository, ChunkView, DocumentRepository, IngestQueue, Inserted, Space, StoreRepository,
    VectorIndex,
};
use crate::domain::search::{Ranked, from_text, from_vectors, fuse};
use crate::domain::store::{FileId, Filter};
use crate::domain::text::query_terms;

/// The ports of [`KnowledgeService`] and the ingestion.
#[derive(Clone)]
pub struct KnowledgePorts {
    /// Bases.
    pub bases: Arc<dyn BaseRepository>,
    /// Documents, chunks, vectors, full text.
    pub documents: Arc<dyn DocumentRepository>,
    /// Nearest-neighbour search.
    pub index: Arc<dyn VectorIndex>,
    /// Uploaded bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// The ingestion queue.
    pub queue: Arc<dyn IngestQueue>,
    /// Files, store settings and batches of OpenAI's vector-store API.
    pub stores: Arc<dyn StoreRepository>,
    /// Embeddings through the metered gateway.
    pub embedder: Arc<dyn Embedder>,
    /// Owners' principals (work done for them is metered to them).
    pub principals: Arc<dyn Principals>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Tunables.
#[derive(Clone, Copy, Debug)]
pub struct KnowledgeConfig {
    /// The largest document accepted, in bytes.
    pub max_document_bytes: usize,
}

/// A new base as asked.
#[derive(Clone, Debug, Default)]
pub struct BaseDraft {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Embedding model.
    pub embedding_model: String,
    /// Chunking.
    pub chunking: ChunkingDraft,
    /// Search defaults.
    pub retrieval: RetrievalDraft,
}

/// A change to a base (absent fields stay).
#[derive(Clone, Debug, Default)]
pub struct BasePatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// A new embedding model: re-embedded in the background, switched to when done.
    pub embedding_model: Option<String>,
    /// New search defaults.
    pub retrieval: Option<RetrievalDraft>,
}

/// An uploaded file.
#[derive(Clone, Debug)]
pub struct Upload {
    /// The file name given (kept as metadata only).
    pub file_name: String,
    /// The part's media type, if any.
    pub media_type: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Caller's metadata (a JSON object), if any.
    pub metadata: Option<Value>,
}

/// A document to add to a base: an upload, or a file attached to a vector store.
#[derive(Clone, Debug)]
pub(crate) struct NewDocument {
    /// The upload.
    pub upload: Upload,
    /// The uploaded file it comes from.
    pub file_id: Option<FileId>,
    /// Its own chunking.
    pub chunking: Option<Chunking>,
}

/// A search as asked.
#[derive(Clone, Debug, Default)]
pub struct SearchDraft {
    /// The query text.
    pub query: String,
    /// Mode, `top_k`, threshold, weight (absent: the base's defaults).
    pub retrieval: RetrievalDraft,
    /// Only documents whose metadata holds every pair.
    pub filter: Option<Value>,
}

/// One search hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// The chunk.
    pub chunk: ChunkView,
    /// The score of the mode, 0 to 1.
    pub score: f32,
    /// Cosine similarity, when found by vector.
    pub vector_score: Option<f32>,
    /// Full-text rank, when found by text.
    pub text_score: Option<f32>,
}

/// Searches bases for another context (apps), as the calling principal.
#[async_trait]
pub trait Retriever: Send + Sync + 'static {
    /// The best chunks of the principal's base `base` for `query`; `retrieval` overrides the
    /// base's defaults.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`] (also someone else's base); embedding failures.
    async fn retrieve(
        &self,
        principal: &Principal,
        base: BaseId,
        query: &str,
        retrieval: Option<Retrieval>,
    ) -> Result<Vec<Hit>, KnowledgeError>;

    /// Whether `base` exists and is the principal's.
    ///
    /// # Errors
    /// Storage failures.
    async fn has_base(&self, principal: &Principal, base: BaseId) -> Result<bool, KnowledgeError>;
}

/// Knowledge-base use cases.
#[derive(Clone)]
pub struct KnowledgeService {
    ports: KnowledgePorts,
    config: KnowledgeConfig,
}

/// Candidates each ranking contributes to a hybrid search, per hit asked.
const CANDIDATES_PER_HIT: u32 = 4;
/// The largest query, in characters.
const MAX_QUERY_CHARS: usize = 8000;

impl KnowledgeService {
    /// The service.
    #[must_use]
    pub fn new(ports: KnowledgePorts, config: KnowledgeConfig) -> Self {
        Self { ports, config }
    }

    /// The largest document accepted.
    #[must_use]
    pub fn max_document_bytes(&self) -> usize {
        self.config.max_document_bytes
    }

    fn caller(actor: &Actor<'_>) -> Result<(), KnowledgeError> {
        Ok(actor.require(Permission::ManageKnowledge)?)
    }

    /// The ports (for the vector-store API over this service).
    pub(crate) fn ports(&self) -> &KnowledgePorts {
        &self.ports
    }

    /// The base `id` if the actor may see it (someone else's is not found).
    pub(crate) async fn owned(
        &self,
        actor: &Actor<'_>,
        id: BaseId,
    ) -> Result<KnowledgeBase, KnowledgeError> {
        Self::caller(actor)?;
        let base = self
            .ports
            .bases
            .get(id)
            .await?
            .ok_or(KnowledgeError::BaseNotFound)?;
        match actor.user_id() {
            Some(user) if user != base.owner => Err(KnowledgeError::BaseNotFound),
            Some(_) | None => Ok(base),
        }
    }

    /// The principal work for `owner` runs as.
    async fn principal_of(&self, owner: UserId) -> Result<Arc<Principal>, KnowledgeError> {
        self.ports
            .principals
            .of_user(owner)
            .await?
            .ok_or(KnowledgeError::BaseNotFound)
    }

    async fn check_model(&self, owner: UserId, model: &str) -> Result<(), KnowledgeError> {
        let principal = self.principal_of(owner).await?;
        let served = self
            .ports
            .embedder
            .serves(&principal, model)
            .await
            .map_err(KnowledgeError::Embedding)?;
        if served {
            Ok(())
        } else {
            Err(KnowledgeError::UnknownModel(model.to_owned()))
        }
    }

    /// Creates a base owned by the caller (or by `owner` when the system acts).
    ///
    /// # Errors
    /// Every bad field; [`KnowledgeError::UnknownModel`]; [`KnowledgeError::NameTaken`].
    pub async fn create(
        &self,
        actor: &Actor<'_>,
        owner: Option<UserId>,
        draft: &BaseDraft,
    ) -> Result<KnowledgeBase, KnowledgeError> {
        Self::caller(actor)?;
        let owner = actor.user_id().or(owner).ok_or_else(|| {
            KnowledgeError::Invalid(vec![InvalidValue::new("owner", "name the owner")])
        })?;
        let mut bad = Vec::new();
        let name = parse_name(&draft.name).map_err(|e| bad.push(e)).ok();
        let description = parse_description(draft.description.as_deref().unwrap_or_default())
            .map_err(|e| bad.push(e))
            .ok();
        let model = parse_model(&draft.embedding_model)
            .map_err(|e| bad.push(e))
            .ok();
        let chunking = Chunking::parse(&draft.chunking)
            .map_err(|e| bad.extend(e))
            .ok();
        let retrieval = Retrieval::parse(
            &draft.retrieval,
            Retrieval::default(),
            RetrievalFields::BASE,
        )
        .map_err(|e| bad.extend(e))
        .ok();
        let (Some(name), Some(description), Some(model), Some(chunking), Some(retrieval)) =
            (name, description, model, chunking, retrieval)
        else {
            return Err(KnowledgeError::Invalid(bad));
        };
        self.check_model(owner, &model).await?;
        let now = self.ports.clock.now();
        let base = KnowledgeBase {
            id: BaseId::new(),
            owner,
            name,
            description,
            embedding: Embedding {
                model,
                generation: 1,
                dims: None,
            },
            next: None,
            chunking,
            retrieval,
            index_version: 0,
            created_at: now,
            updated_at: now,
        };
        let audit = actor.event(
            "knowledge_base.create",
            "knowledge_base",
            Some(base.id.to_string()),
            json!({"name": base.name, "owner": owner.as_uuid(), "embedding_model": base.embedding.model}),
        );
        self.ports.bases.insert(&base, audit).await?;
        Ok(base)
    }

    /// The caller's bases (the system lists `owner`'s).
    ///
    /// # Errors
    /// Permission; storage failures.
    pub async fn list(
        &self,
        actor: &Actor<'_>,
        owner: Option<UserId>,
        page: &PageRequest,
    ) -> Result<Page<KnowledgeBase>, KnowledgeError> {
        Self::caller(actor)?;
        let owner = actor.user_id().or(owner).ok_or_else(|| {
            KnowledgeError::Invalid(vec![InvalidValue::new("owner", "name the owner")])
        })?;
        self.ports.bases.list(owner, page).await
    }

    /// One base.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`].
    pub async fn get(
        &self,
        actor: &Actor<'_>,
        id: BaseId,
    ) -> Result<KnowledgeBase, KnowledgeError> {
        self.owned(actor, id).await
    }

    /// Changes a base. A new embedding model re-embeds every document in the background into a
    /// new generation; search serves the old one until the switch.
    ///
    /// # Errors
    /// Every bad field; [`KnowledgeError::UnknownModel`]; [`KnowledgeError::NameTaken`];
    /// [`KnowledgeError::Busy`] while an earlier model change runs.
    pub async fn update(
        &self,
        actor: &Actor<'_>,
        id: BaseId,
        patch: &BasePatch,
    ) -> Result<KnowledgeBase, KnowledgeError> {
        let mut base = self.owned(actor, id).await?;
        let mut bad = Vec::new();
        if let Some(name) = &patch.name {
            match parse_name(name) {
                Ok(n) => base.name = n,
                Err(e) => bad.push(e),
            }
        }
        if let Some(d) = &patch.description {
            match parse_description(d) {
                Ok(d) => base.description = d,
                Err(e) => bad.push(e),
            }
        }
        if let Some(r) = &patch.retrieval {
            match Retrieval::parse(r, base.retrieval, RetrievalFields::BASE) {
                Ok(r) => base.retrieval = r,
                Err(e) => bad.extend(e),
            }
        }
        let mut model_change = None;
        if let Some(m) = &patch.embedding_model {
            match parse_model(m) {
                Ok(m) if m == base.embedding.model => {}
                Ok(m) => model_change = Some(m),
                Err(e) => bad.push(e),
            }
        }
        if !bad.is_empty() {
            return Err(KnowledgeError::Invalid(bad));
        }
        if let Some(model) = &model_change {
            if base.next.is_some() {
                return Err(KnowledgeError::Busy(
                    "an embedding model change is still under way".into(),
                ));
            }
            self.check_model(base.owner, model).await?;
            base.next = Some(Embedding {
                model: model.clone(),
                generation: base.embedding.generation + 1,
                dims: None,
            });
        }
        base.updated_at = self.ports.clock.now();
        let audit = actor.event(
            "knowledge_base.update",
            "knowledge_base",
            Some(base.id.to_string()),
            json!({"name": base.name, "embedding_model": model_change}),
        );
        self.ports.bases.update(&base, audit).await?;
        if model_change.is_some() {
            for doc in self.ports.documents.ids(base.id).await? {
                self.ports.queue.push(doc).await?;
            }
        }
        Ok(base)
    }

    /// Deletes a base with its documents, chunks and vectors.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`].
    pub async fn delete(&self, actor: &Actor<'_>, id: BaseId) -> Result<(), KnowledgeError> {
        let base = self.owned(actor, id).await?;
        let audit = actor.event(
            "knowledge_base.delete",
            "knowledge_base",
            Some(id.to_string()),
            json!({"name": base.name}),
        );
        let blobs = self.ports.bases.delete(id, audit).await?;
        for space in spaces(&base) {
            self.ports.index.drop_space(&space).await?;
        }
        for key in blobs {
            if let Err(err) = self.ports.blobs.delete(&key).await {
                tracing::warn!(error = %err, key, "a deleted document's bytes could not be removed");
            }
        }
        Ok(())
    }

    /// Stores an uploaded file as a document of the base and queues its ingestion; the same
    /// bytes already in the base answer that document (`true`: it is a duplicate).
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`]; [`KnowledgeError::TooLarge`];
    /// [`KnowledgeError::UnsupportedType`]; [`KnowledgeError::TypeMismatch`];
    /// [`KnowledgeError::Malformed`]; a bad `metadata`.
    pub async fn upload(
        &self,
        actor: &Actor<'_>,
        base_id: BaseId,
        upload: Upload,
    ) -> Result<(Document, bool), KnowledgeError> {
        let base = self.owned(actor, base_id).await?;
        self.add_document(
            &base,
            NewDocument {
                upload,
                file_id: None,
                chunking: None,
            },
        )
        .await
    }

    /// Stores a document of `base` (owned by the caller) and queues its ingestion; the same
    /// bytes already in the base answer that document (`true`: it is a duplicate).
    pub(crate) async fn add_document(
        &self,
        base: &KnowledgeBase,
        new: NewDocument,
    ) -> Result<(Document, bool), KnowledgeError> {
        let NewDocument {
            upload,
            file_id,
            chunking,
        } = new;
        let base_id = base.id;
        if upload.bytes.len() > self.config.max_document_bytes {
            return Err(KnowledgeError::TooLarge(self.config.max_document_bytes));
        }
        let metadata = match &upload.metadata {
            Some(v) => parse_metadata(v)?,
            None => Map::new(),
        };
        let file_name = clean_file_name(&upload.file_name);
        let kind = DocumentKind::declared(upload.media_type.as_deref(), &file_name)?;
        kind.check(&upload.bytes)?;
        let now = self.ports.clock.now();
        let id = DocumentId::new();
        let storage_key = id.to_string();
        let document = Document {
            id,
            base_id,
            owner: base.owner,
            file_name,
            kind,
            bytes: u64::try_from(upload.bytes.len()).unwrap_or(u64::MAX),
            content_hash: content_hash(&upload.bytes),
            storage_key: storage_key.clone(),
            status: DocumentStatus::Queued,
            error: None,
            chunks: 0,
            tokens: 0,
            metadata,
            file_id,
            chunking,
            created_at: now,
            updated_at: now,
        };
        self.ports.blobs.put(&storage_key, &upload.bytes).await?;
        match self.ports.documents.insert(&document).await {
            Ok(Inserted::New(doc)) => {
                self.ports.queue.push(doc.id).await?;
                Ok((doc, false))
            }
            Ok(Inserted::Duplicate(existing)) => {
                self.ports.blobs.delete(&storage_key).await?;
                Ok((existing, true))
            }
            Err(err) => {
                if let Err(e) = self.ports.blobs.delete(&storage_key).await {
                    tracing::warn!(error = %e, "an unstored upload's bytes could not be removed");
                }
                Err(err)
            }
        }
    }

    /// The documents of a base.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`].
    pub async fn documents(
        &self,
        actor: &Actor<'_>,
        base: BaseId,
        page: &PageRequest,
    ) -> Result<Page<Document>, KnowledgeError> {
        self.owned(actor, base).await?;
        self.ports.documents.list(base, page).await
    }

    /// One document of a base.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::DocumentNotFound`].
    pub async fn document(
        &self,
        actor: &Actor<'_>,
        base: BaseId,
        id: DocumentId,
    ) -> Result<Document, KnowledgeError> {
        self.owned(actor, base).await?;
        self.ports
            .documents
            .get(id)
            .await?
            .filter(|d| d.base_id == base)
            .ok_or(KnowledgeError::DocumentNotFound)
    }

    /// A document's chunks by position.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::DocumentNotFound`].
    pub async fn chunks(
        &self,
        actor: &Actor<'_>,
        base: BaseId,
        id: DocumentId,
        page: &PageRequest,
    ) -> Result<Vec<ChunkView>, KnowledgeError> {
        self.document(actor, base, id).await?;
        self.ports.documents.chunks(id, page).await
    }

    /// Deletes a document with its chunks, vectors and bytes.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::DocumentNotFound`].
    pub async fn delete_document(
        &self,
        actor: &Actor<'_>,
        base: BaseId,
        id: DocumentId,
    ) -> Result<(), KnowledgeError> {
        let owned = self.owned(actor, base).await?;
        self.document(actor, base, id).await?;
        self.remove_document(&owned, id).await
    }

    /// Deletes a document of `owned` with its chunks, vectors and bytes.
    pub(crate) async fn remove_document(
        &self,
        owned: &KnowledgeBase,
        id: DocumentId,
    ) -> Result<(), KnowledgeError> {
        let Some(doc) = self.ports.documents.delete(id).await? else {
            return Err(KnowledgeError::DocumentNotFound);
        };
        for space in spaces(owned) {
            self.ports.index.delete_document(&space, id).await?;
        }
        if let Err(err) = self.ports.blobs.delete(&doc.storage_key).await {
            tracing::warn!(error = %err, document = %id, "a deleted document's bytes could not be removed");
        }
        Ok(())
    }

    /// Searches a base (embedding the query as the caller, or as the owner when the system
    /// searches).
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`]; every bad field; embedding failures.
    pub async fn search(
        &self,
        actor: &Actor<'_>,
        base: BaseId,
        draft: &SearchDraft,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let base = self.owned(actor, base).await?;
        let mut bad = Vec::new();
        let query = draft.query.trim();
        if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS || query.contains('\0') {
            bad.push(InvalidValue::new(
                "query",
                "must be 1 to 8000 characters without NUL",
            ));
        }
        let retrieval = Retrieval::parse(&draft.retrieval, base.retrieval, RetrievalFields::SEARCH)
            .map_err(|e| bad.extend(e))
            .ok();
        let filter = match &draft.filter {
            None | Some(Value::Null) => None,
            Some(v) => parse_metadata(v)
                .map(|pairs| Filter::all_equal(&pairs))
                .map_err(|_| {
                    bad.push(InvalidValue::new(
                        "filter",
                        "must be an object of at most 16 metadata keys with string, number or boolean values",
                    ));
                })
                .ok(),
        };
        let Some(retrieval) = retrieval.filter(|_| bad.is_empty()) else {
            return Err(KnowledgeError::Invalid(bad));
        };
        let principal = self.searcher(actor, &base).await?;
        self.run_search(&principal, &base, query, retrieval, filter.as_ref())
            .await
    }

    /// Who a search runs as: the caller, or the owner when the system searches.
    pub(crate) async fn searcher(
        &self,
        actor: &Actor<'_>,
        base: &KnowledgeBase,
    ) -> Result<Arc<Principal>, KnowledgeError> {
        match actor {
            Actor::Caller(principal, _) => Ok(Arc::new((*principal).clone())),
            Actor::System => self.principal_of(base.owner).await,
        }
    }

    /// Searches `base` as `principal` (who may use it).
    pub(crate) async fn run_search(
        &self,
        principal: &Arc<Principal>,
        base: &KnowledgeBase,
        query: &str,
        retrieval: Retrieval,
        filter: Option<&Filter>,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let documents = match filter {
            Some(f) => Some(self.ports.documents.matching(base.id, f).await?),
            None => None,
        };
        if documents.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let top_k = retrieval.top_k;
        let wide = match retrieval.mode {
            SearchMode::Hybrid => top_k.saturating_mul(CANDIDATES_PER_HIT).max(20),
            SearchMode::Vector | SearchMode::Fulltext => top_k,
        };
        let vector_hits = match retrieval.mode {
            SearchMode::Vector | SearchMode::Hybrid => {
                self.vector_hits(principal, base, query, wide, documents.as_deref())
                    .await?
            }
            SearchMode::Fulltext => Vec::new(),
        };
        let text_hits = match retrieval.mode {
            SearchMode::Fulltext | SearchMode::Hybrid => {
                let terms = query_terms(query);
                if terms.is_empty() {
                    Vec::new()
                } else {
                    self.ports
                        .documents
                        .fulltext(base.owner, base.id, &terms, documents.as_deref(), wide)
                        .await?
                }
            }
            SearchMode::Vector => Vec::new(),
        };
        let ranked: Vec<Ranked> = match retrieval.mode {
            SearchMode::Vector => from_vectors(&vector_hits),
            SearchMode::Fulltext => from_text(&text_hits),
            SearchMode::Hybrid => fuse(&vector_hits, &text_hits, retrieval.vector_weight),
        };
        let threshold = retrieval.score_threshold.unwrap_or(0.0);
        let ranked: Vec<Ranked> = ranked
            .into_iter()
            .filter(|r| r.score >= threshold)
            .collect();
        let ids: Vec<uuid::Uuid> = ranked.iter().map(|r| r.chunk).collect();
        let views = self
            .ports
            .documents
            .views(base.owner, base.id, &ids)
            .await?;
        let mut hits = Vec::new();
        for r in ranked {
            if let Some(view) = views.iter().find(|v| v.id == r.chunk) {
                hits.push(Hit {
                    chunk: view.clone(),
                    score: r.score,
                    vector_score: r.vector_score,
                    text_score: r.text_score,
                });
            }
            if hits.len() >= usize::try_from(top_k).unwrap_or(usize::MAX) {
                break;
            }
        }
        Ok(hits)
    }

    async fn vector_hits(
        &self,
        principal: &Arc<Principal>,
        base: &KnowledgeBase,
        query: &str,
        k: u32,
        documents: Option<&[DocumentId]>,
    ) -> Result<Vec<crate::domain::ports::VectorHit>, KnowledgeError> {
        let Some(space) = live_space(base) else {
            // Nothing embedded yet: no vector can match.
            return Ok(Vec::new());
        };
        let embedded = self
            .ports
            .embedder
            .embed(
                Arc::clone(principal),
                &base.embedding.model,
                vec![query.to_owned()],
            )
            .await
            .map_err(embedding_error)?;
        let Some(vector) = embedded.vectors.into_iter().next() else {
            return Ok(Vec::new());
        };
        if u32::try_from(vector.len()).ok() != Some(space.dims) {
            return Err(KnowledgeError::Embedding(
                InferenceError::UpstreamUnavailable(format!(
                    "the model answered {} dimensions; the base's vectors have {}",
                    vector.len(),
                    space.dims
                )),
            ));
        }
        self.ports
            .index
            .search(
                &space,
                &vector,
                usize::try_from(k).unwrap_or(usize::MAX),
                documents,
            )
            .await
    }

    /// Rebuilds a base's vector index from the record; answers the points written.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`]; index failures.
    pub async fn reindex(&self, actor: &Actor<'_>, id: BaseId) -> Result<u64, KnowledgeError> {
        let base = self.owned(actor, id).await?;
        let mut written = 0;
        for space in spaces(&base) {
            self.ports.index.drop_space(&space).await?;
            let mut after = None;
            loop {
                let points = self
                    .ports
                    .documents
                    .points(base.id, None, space.generation, after, 500)
                    .await?;
                let Some(last) = points.last() else { break };
                after = Some(last.chunk);
                self.ports.index.upsert(&space, &points).await?;
                written += u64::try_from(points.len()).unwrap_or(0);
            }
        }
        tracing::info!(base = %id, points = written, "knowledge base reindexed from the record");
        Ok(written)
    }
}

#[async_trait]
impl Retriever for KnowledgeService {
    async fn retrieve(
        &self,
        principal: &Principal,
        base: BaseId,
        query: &str,
        retrieval: Option<Retrieval>,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let ctx = maas_shared::audit::ActionContext::default();
        let actor = Actor::Caller(principal, &ctx);
        let base = self.owned(&actor, base).await?;
        let retrieval = retrieval.unwrap_or(base.retrieval);
        self.run_search(&Arc::new(principal.clone()), &base, query, retrieval, None)
            .await
    }

    async fn has_base(&self, principal: &Principal, base: BaseId) -> Result<bool, KnowledgeError> {
        let ctx = maas_shared::audit::ActionContext::default();
        match self.owned(&Actor::Caller(principal, &ctx), base).await {
            Ok(_) => Ok(true),
            Err(KnowledgeError::BaseNotFound) => Ok(false),
            Err(other) => Err(other),
        }
    }
}

/// An embedding failure as this context reports it.
pub(crate) fn embedding_error(err: InferenceError) -> KnowledgeError {
    if let InferenceError::Identity(inner) = err {
        KnowledgeError::Identity(inner)
    } else {
        KnowledgeError::Embedding(err)
    }
}

/// The live generation's index space, once its dimension is known.
pub(crate) fn live_space(base: &KnowledgeBase) -> Option<Space> {
    space_of(base, &base.embedding)
}

/// The index space of one of a base's generations, once its dimension is known.
pub(crate) fn space_of(base: &KnowledgeBase, embedding: &Embedding) -> Option<Space> {
    Some(Space {
        owner: base.owner,
        base: base.id,
        model: embedding.model.clone(),
        generation: embedding.generation,
        dims: embedding.dims?,
    })
}

/// Every index space a base has (live, and the one a model change fills).
pub(crate) fn spaces(base: &KnowledgeBase) -> Vec<Space> {
    std::iter::once(&base.embedding)
        .chain(base.next.as_ref())
        .filter_map(|e| space_of(base, e))
        .collect()
}
