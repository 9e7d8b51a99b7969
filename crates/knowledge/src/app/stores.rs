//! OpenAI's files and vector stores over knowledge bases: a store is a base (the same owner
//! check, ingestion, search), a file is uploaded on its own and becomes a document of each
//! store it is attached to, a batch attaches many and can be cancelled.

use std::collections::HashMap;
use std::sync::Arc;

use maas_user::contract::{Actor, UserId};
use serde_json::{Map, Value};

use super::knowledge::{BaseDraft, BasePatch, Hit, KnowledgeService, NewDocument, Upload};
use crate::domain::base::{
    BaseId, Chunking, ChunkingDraft, ChunkingStrategy, KnowledgeBase, Retrieval,
};
use crate::domain::document::{
    Document, DocumentId, DocumentKind, clean_file_name, content_hash, parse_metadata,
};
use crate::domain::errors::{InvalidValue, KnowledgeError};
use crate::domain::ports::{Extractor, StoreRepository};
use crate::domain::store::{
    BatchId, FileBatch, FileCounts, FileId, FileState, Filter, StoreSettings, StoredFile, Window,
    parse_purpose,
};

/// A file as uploaded to `/v1/files`.
#[derive(Clone, Debug)]
pub struct FileUpload {
    /// The name given.
    pub file_name: String,
    /// The part's media type.
    pub media_type: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The purpose given.
    pub purpose: String,
}

/// A store as OpenAI shows it.
#[derive(Clone, Debug)]
pub struct StoreView {
    /// Its base.
    pub base: KnowledgeBase,
    /// Its settings.
    pub settings: StoreSettings,
    /// Its files by state.
    pub counts: FileCounts,
    /// Bytes of its files.
    pub usage_bytes: u64,
    /// `expired`, `in_progress` or `completed`.
    pub status: &'static str,
}

/// A new store as asked.
#[derive(Clone, Debug, Default)]
pub struct StoreDraft {
    /// Name (absent: one is made from the id).
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Embedding model (absent: the configured default).
    pub embedding_model: Option<String>,
    /// Chunking of the files attached (absent: `auto`).
    pub chunking: Option<Chunking>,
    /// Metadata (validated).
    pub metadata: Map<String, Value>,
    /// Expiry in days after the last activity.
    pub expires_after_days: Option<u32>,
    /// Files to attach at once.
    pub file_ids: Vec<FileId>,
}

/// A change to a store (absent fields stay; `Some(None)` clears).
#[derive(Clone, Debug, Default)]
pub struct StorePatch {
    /// New name.
    pub name: Option<String>,
    /// New metadata, or none.
    pub metadata: Option<Map<String, Value>>,
    /// New expiry, or none.
    pub expires_after_days: Option<Option<u32>>,
}

/// A file to attach.
#[derive(Clone, Debug)]
pub struct Attach {
    /// The file.
    pub file_id: FileId,
    /// Its attributes (validated by the service).
    pub attributes: Option<Value>,
    /// Its own chunking.
    pub chunking: Option<Chunking>,
}

/// A search of a store as asked.
#[derive(Clone, Debug)]
pub struct StoreSearch {
    /// One query or several (their hits merged, best score kept).
    pub queries: Vec<String>,
    /// Attribute filter.
    pub filter: Option<Filter>,
    /// At most this many hits (1 to 50).
    pub max_results: u32,
    /// Only hits scoring at least this (0 to 1).
    pub score_threshold: Option<f32>,
}

/// A batch as OpenAI shows it.
#[derive(Clone, Debug)]
pub struct BatchView {
    /// The batch.
    pub batch: FileBatch,
    /// Its files by state.
    pub counts: FileCounts,
    /// `in_progress`, `completed`, `cancelled` or `failed`.
    pub status: &'static str,
}

/// The most files one batch (or store creation) attaches.
pub const MAX_BATCH_FILES: usize = 500;

/// Files and vector stores.
#[derive(Clone)]
pub struct VectorStores {
    knowledge: KnowledgeService,
    stores: Arc<dyn StoreRepository>,
    extractor: Arc<dyn Extractor>,
    default_model: String,
}

impl VectorStores {
    /// The service over `knowledge`; stores made without a model embed with `default_model`.
    #[must_use]
    pub fn new(
        knowledge: KnowledgeService,
        extractor: Arc<dyn Extractor>,
        default_model: String,
    ) -> Self {
        let stores = Arc::clone(&knowledge.ports().stores);
        Self {
            knowledge,
            stores,
            extractor,
            default_model,
        }
    }

    /// The largest file accepted.
    #[must_use]
    pub fn max_file_bytes(&self) -> usize {
        self.knowledge.max_document_bytes()
    }

    fn owner(actor: &Actor<'_>) -> Result<UserId, KnowledgeError> {
        actor.require(maas_user::contract::Permission::ManageKnowledge)?;
        actor
            .user_id()
            .ok_or_else(|| InvalidValue::new("owner", "files belong to a user").into())
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.knowledge.ports().clock.now()
    }

    // Files.

    /// Stores an uploaded file (of a type a store can ingest).
    ///
    /// # Errors
    /// A bad purpose; [`KnowledgeError::TooLarge`]; [`KnowledgeError::UnsupportedType`];
    /// [`KnowledgeError::TypeMismatch`]; [`KnowledgeError::Malformed`].
    pub async fn upload_file(
        &self,
        actor: &Actor<'_>,
        upload: FileUpload,
    ) -> Result<StoredFile, KnowledgeError> {
        let owner = Self::owner(actor)?;
        let purpose = parse_purpose(&upload.purpose)?;
        if upload.bytes.len() > self.max_file_bytes() {
            return Err(KnowledgeError::TooLarge(self.max_file_bytes()));
        }
        let file_name = clean_file_name(&upload.file_name);
        DocumentKind::declared(upload.media_type.as_deref(), &file_name)?.check(&upload.bytes)?;
        let id = FileId::new();
        let file = StoredFile {
            id,
            owner,
            file_name,
            purpose,
            bytes: u64::try_from(upload.bytes.len()).unwrap_or(u64::MAX),
            media_type: upload.media_type,
            content_hash: content_hash(&upload.bytes),
            storage_key: format!("file-{id}"),
            created_at: self.now(),
        };
        let blobs = &self.knowledge.ports().blobs;
        blobs.put(&file.storage_key, &upload.bytes).await?;
        if let Err(err) = self.stores.insert_file(&file).await {
            if let Err(e) = blobs.delete(&file.storage_key).await {
                tracing::warn!(error = %e, "an unstored file's bytes could not be removed");
            }
            return Err(err);
        }
        Ok(file)
    }

    /// The caller's files in a window; whether there are more.
    ///
    /// # Errors
    /// A bad purpose.
    pub async fn files(
        &self,
        actor: &Actor<'_>,
        purpose: Option<&str>,
        window: &Window,
    ) -> Result<(Vec<StoredFile>, bool), KnowledgeError> {
        let owner = Self::owner(actor)?;
        if let Some(p) = purpose {
            parse_purpose(p)?;
        }
        let rows = self.stores.files(owner, purpose, window).await?;
        Ok(window.finish(rows))
    }

    /// One of the caller's files.
    ///
    /// # Errors
    /// [`KnowledgeError::FileNotFound`] (also someone else's).
    pub async fn file(&self, actor: &Actor<'_>, id: FileId) -> Result<StoredFile, KnowledgeError> {
        let owner = Self::owner(actor)?;
        self.stores
            .file(id)
            .await?
            .filter(|f| f.owner == owner)
            .ok_or(KnowledgeError::FileNotFound)
    }

    /// A file's bytes.
    ///
    /// # Errors
    /// [`KnowledgeError::FileNotFound`].
    pub async fn file_content(
        &self,
        actor: &Actor<'_>,
        id: FileId,
    ) -> Result<(StoredFile, Vec<u8>), KnowledgeError> {
        let file = self.file(actor, id).await?;
        let bytes = self
            .knowledge
            .ports()
            .blobs
            .get(&file.storage_key)
            .await
            .map_err(KnowledgeError::Unexpected)?
            .ok_or(KnowledgeError::FileNotFound)?;
        Ok((file, bytes))
    }

    /// Deletes a file and removes it from every store it is attached to.
    ///
    /// # Errors
    /// [`KnowledgeError::FileNotFound`].
    pub async fn delete_file(&self, actor: &Actor<'_>, id: FileId) -> Result<(), KnowledgeError> {
        let file = self.file(actor, id).await?;
        for doc in self.stores.attached(id).await? {
            if let Ok(base) = self.knowledge.owned(actor, doc.base_id).await {
                self.knowledge.remove_document(&base, doc.id).await?;
            }
        }
        self.stores.delete_file(id).await?;
        if let Err(err) = self.knowledge.ports().blobs.delete(&file.storage_key).await {
            tracing::warn!(error = %err, file = %id, "a deleted file's bytes could not be removed");
        }
        tracing::info!(file = %id, "file deleted with its documents in every store");
        Ok(())
    }

    // Stores.

    async fn views(&self, bases: Vec<KnowledgeBase>) -> Result<Vec<StoreView>, KnowledgeError> {
        let ids: Vec<BaseId> = bases.iter().map(|b| b.id).collect();
        let mut settings: HashMap<BaseId, StoreSettings> =
            self.stores.settings(&ids).await?.into_iter().collect();
        let mut usage: HashMap<BaseId, (FileCounts, u64)> = self
            .stores
            .usage(&ids)
            .await?
            .into_iter()
            .map(|(b, c, u)| (b, (c, u)))
            .collect();
        let now = self.now();
        Ok(bases
            .into_iter()
            .map(|base| {
                let settings = settings
                    .remove(&base.id)
                    .unwrap_or_else(|| StoreSettings::of_base(base.created_at));
                let (counts, usage_bytes) = usage.remove(&base.id).unwrap_or_default();
                let status = if settings.expired(now) {
                    "expired"
                } else if counts.in_progress > 0 || base.next.is_some() {
                    "in_progress"
                } else {
                    "completed"
                };
                StoreView {
                    base,
                    settings,
                    counts,
                    usage_bytes,
                    status,
                }
            })
            .collect())
    }

    async fn view(&self, base: KnowledgeBase) -> Result<StoreView, KnowledgeError> {
        self.views(vec![base])
            .await?
            .into_iter()
            .next()
            .ok_or(KnowledgeError::BaseNotFound)
    }

    /// A store the caller owns that has not expired; its activity is recorded.
    async fn active(
        &self,
        actor: &Actor<'_>,
        id: BaseId,
    ) -> Result<(KnowledgeBase, StoreSettings), KnowledgeError> {
        let base = self.knowledge.owned(actor, id).await?;
        let mut settings = self
            .stores
            .settings(&[id])
            .await?
            .into_iter()
            .next()
            .map_or_else(|| StoreSettings::of_base(base.created_at), |(_, s)| s);
        let now = self.now();
        if settings.expired(now) {
            return Err(KnowledgeError::Expired);
        }
        settings.last_active_at = now;
        self.stores.put_settings(id, &settings).await?;
        Ok((base, settings))
    }

    /// Creates a store (a base) and attaches `file_ids`.
    ///
    /// # Errors
    /// As base creation; [`KnowledgeError::FileNotFound`] for a file not the caller's.
    pub async fn create_store(
        &self,
        actor: &Actor<'_>,
        draft: StoreDraft,
    ) -> Result<StoreView, KnowledgeError> {
        let owner = Self::owner(actor)?;
        if draft.file_ids.len() > MAX_BATCH_FILES {
            return Err(InvalidValue::new("file_ids", "at most 500 files").into());
        }
        let mut files = Vec::new();
        for id in &draft.file_ids {
            files.push(self.file(actor, *id).await?);
        }
        let chunking = draft.chunking.clone().unwrap_or_default();
        let name = draft.name.clone().unwrap_or_else(|| {
            format!(
                "Vector store {}",
                &uuid::Uuid::now_v7().simple().to_string()[20..]
            )
        });
        let base = self
            .knowledge
            .create(
                actor,
                Some(owner),
                &BaseDraft {
                    name,
                    description: draft.description.clone(),
                    embedding_model: draft
                        .embedding_model
                        .clone()
                        .unwrap_or_else(|| self.default_model.clone()),
                    chunking: chunking_draft(&chunking),
                    retrieval: crate::domain::base::RetrievalDraft::default(),
                },
            )
            .await?;
        let settings = StoreSettings {
            metadata: draft.metadata,
            expires_after_days: draft.expires_after_days,
            last_active_at: base.created_at,
        };
        self.stores.put_settings(base.id, &settings).await?;
        for file in files {
            self.attach_file(&base, &file, None, None).await?;
        }
        self.view(base).await
    }

    /// The caller's stores in a window; whether there are more.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn stores(
        &self,
        actor: &Actor<'_>,
        window: &Window,
    ) -> Result<(Vec<StoreView>, bool), KnowledgeError> {
        let owner = Self::owner(actor)?;
        let (bases, more) = window.finish(self.stores.bases(owner, window).await?);
        Ok((self.views(bases).await?, more))
    }

    /// One store.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`].
    pub async fn store(&self, actor: &Actor<'_>, id: BaseId) -> Result<StoreView, KnowledgeError> {
        let base = self.knowledge.owned(actor, id).await?;
        self.view(base).await
    }

    /// Changes a store's name, metadata or expiry (a change is activity: it restarts the
    /// expiry clock).
    ///
    /// # Errors
    /// As base changes.
    pub async fn update_store(
        &self,
        actor: &Actor<'_>,
        id: BaseId,
        patch: StorePatch,
    ) -> Result<StoreView, KnowledgeError> {
        let mut base = self.knowledge.owned(actor, id).await?;
        if patch.name.is_some() {
            base = self
                .knowledge
                .update(
                    actor,
                    id,
                    &BasePatch {
                        name: patch.name.clone(),
                        ..BasePatch::default()
                    },
                )
                .await?;
        }
        let mut settings = self
            .stores
            .settings(&[id])
            .await?
            .into_iter()
            .next()
            .map_or_else(|| StoreSettings::of_base(base.created_at), |(_, s)| s);
        if let Some(m) = patch.metadata {
            settings.metadata = m;
        }
        if let Some(e) = patch.expires_after_days {
            settings.expires_after_days = e;
        }
        settings.last_active_at = self.now();
        self.stores.put_settings(id, &settings).await?;
        self.view(base).await
    }

    /// Deletes a store with its documents (the files stay).
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`].
    pub async fn delete_store(&self, actor: &Actor<'_>, id: BaseId) -> Result<(), KnowledgeError> {
        self.knowledge.delete(actor, id).await
    }

    // Store files.

    async fn attach_file(
        &self,
        base: &KnowledgeBase,
        file: &StoredFile,
        attributes: Option<&Value>,
        chunking: Option<Chunking>,
    ) -> Result<Document, KnowledgeError> {
        let bytes = self
            .knowledge
            .ports()
            .blobs
            .get(&file.storage_key)
            .await
            .map_err(KnowledgeError::Unexpected)?
            .ok_or(KnowledgeError::FileNotFound)?;
        let (doc, duplicate) = self
            .knowledge
            .add_document(
                base,
                NewDocument {
                    upload: Upload {
                        file_name: file.file_name.clone(),
                        media_type: file.media_type.clone(),
                        bytes,
                        metadata: attributes.filter(|v| !v.is_null()).cloned(),
                    },
                    file_id: Some(file.id),
                    chunking,
                },
            )
            .await?;
        if duplicate && let Some(a) = attributes {
            let a = parse_metadata(a).map_err(|_| attributes_rule())?;
            self.stores.set_attributes(doc.id, &a).await?;
        }
        Ok(doc)
    }

    /// Attaches one of the caller's files to a store; the same file (or bytes) again answers
    /// the document already there.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::FileNotFound`],
    /// [`KnowledgeError::Expired`]; bad attributes.
    pub async fn attach(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        attach: Attach,
    ) -> Result<Document, KnowledgeError> {
        let (base, _) = self.active(actor, store).await?;
        let file = self.file(actor, attach.file_id).await?;
        check_attributes(attach.attributes.as_ref())?;
        self.attach_file(&base, &file, attach.attributes.as_ref(), attach.chunking)
            .await
    }

    /// A store's files (of one state, when given) in a window; whether there are more.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`].
    pub async fn store_files(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        batch: Option<BatchId>,
        state: Option<FileState>,
        window: &Window,
    ) -> Result<(KnowledgeBase, Vec<Document>, bool), KnowledgeError> {
        let base = self.knowledge.owned(actor, store).await?;
        if let Some(b) = batch {
            self.owned_batch(&base, b).await?;
        }
        // A store file's id is its file's: the window resumes at that file's document.
        let mut window = *window;
        window.after = self.document_cursor(&base, window.after).await?;
        window.before = self.document_cursor(&base, window.before).await?;
        let rows = self.stores.documents(store, batch, state, &window).await?;
        let (docs, more) = window.finish(rows);
        Ok((base, docs, more))
    }

    /// The document id a store-file cursor (a file id, or a document id) stands for.
    async fn document_cursor(
        &self,
        base: &KnowledgeBase,
        cursor: Option<uuid::Uuid>,
    ) -> Result<Option<uuid::Uuid>, KnowledgeError> {
        let Some(id) = cursor else { return Ok(None) };
        let file = self
            .stores
            .file(FileId::from_uuid(id))
            .await?
            .filter(|f| f.owner == base.owner);
        Ok(Some(match file {
            Some(f) => self
                .stores
                .document_of(base.id, &f)
                .await?
                .map_or(id, |d| d.id.as_uuid()),
            None => id,
        }))
    }

    /// The document of a store that a file id names: the file's (attached from it, or the
    /// same bytes), or a document uploaded through the management API by its own id.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::DocumentNotFound`].
    pub async fn store_file(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        file: FileId,
    ) -> Result<(KnowledgeBase, Document), KnowledgeError> {
        let base = self.knowledge.owned(actor, store).await?;
        let owner = base.owner;
        let found = match self.stores.file(file).await?.filter(|f| f.owner == owner) {
            Some(f) => self.stores.document_of(store, &f).await?,
            None => self
                .knowledge
                .ports()
                .documents
                .get(DocumentId::from_uuid(file.as_uuid()))
                .await?
                .filter(|d| d.base_id == store),
        };
        let doc = found.ok_or(KnowledgeError::DocumentNotFound)?;
        Ok((base, doc))
    }

    /// Replaces a store file's attributes.
    ///
    /// # Errors
    /// As [`Self::store_file`]; bad attributes.
    pub async fn update_store_file(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        file: FileId,
        attributes: &Value,
    ) -> Result<(KnowledgeBase, Document), KnowledgeError> {
        let attributes = if attributes.is_null() {
            Map::new()
        } else {
            parse_metadata(attributes).map_err(|_| attributes_rule())?
        };
        let (base, mut doc) = self.store_file(actor, store, file).await?;
        self.stores.set_attributes(doc.id, &attributes).await?;
        doc.metadata = attributes;
        Ok((base, doc))
    }

    /// Removes a file from a store (its chunks and vectors go; the file stays).
    ///
    /// # Errors
    /// As [`Self::store_file`].
    pub async fn detach(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        file: FileId,
    ) -> Result<DocumentId, KnowledgeError> {
        let (base, doc) = self.store_file(actor, store, file).await?;
        self.knowledge.remove_document(&base, doc.id).await?;
        Ok(doc.id)
    }

    /// The text a store extracted from one of its files.
    ///
    /// # Errors
    /// As [`Self::store_file`]; [`KnowledgeError::Malformed`] when the text cannot be read.
    pub async fn store_file_text(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        file: FileId,
    ) -> Result<String, KnowledgeError> {
        let (_, doc) = self.store_file(actor, store, file).await?;
        let bytes = self
            .knowledge
            .ports()
            .blobs
            .get(&doc.storage_key)
            .await
            .map_err(KnowledgeError::Unexpected)?
            .ok_or(KnowledgeError::DocumentNotFound)?;
        self.extractor
            .extract(doc.kind, bytes)
            .await
            .map_err(|e| KnowledgeError::Malformed(format!("the file's text cannot be read: {e}")))
    }

    // Batches.

    async fn owned_batch(
        &self,
        base: &KnowledgeBase,
        id: BatchId,
    ) -> Result<FileBatch, KnowledgeError> {
        self.stores
            .batch(id)
            .await?
            .filter(|b| b.base_id == base.id)
            .ok_or(KnowledgeError::BatchNotFound)
    }

    async fn batch_view(&self, batch: FileBatch) -> Result<BatchView, KnowledgeError> {
        let counts = self.stores.batch_counts(batch.id).await?;
        let status = batch.status(&counts);
        Ok(BatchView {
            batch,
            counts,
            status,
        })
    }

    /// Attaches many of the caller's files at once (every file checked first).
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::FileNotFound`],
    /// [`KnowledgeError::Expired`]; bad attributes; more than 500 files.
    pub async fn create_batch(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        files: Vec<Attach>,
    ) -> Result<BatchView, KnowledgeError> {
        if files.is_empty() || files.len() > MAX_BATCH_FILES {
            return Err(InvalidValue::new("file_ids", "name 1 to 500 files").into());
        }
        let (base, _) = self.active(actor, store).await?;
        let mut found = Vec::new();
        for a in &files {
            check_attributes(a.attributes.as_ref())?;
            found.push(self.file(actor, a.file_id).await?);
        }
        let mut docs = Vec::new();
        for (a, file) in files.into_iter().zip(found) {
            let doc = self
                .attach_file(&base, &file, a.attributes.as_ref(), a.chunking)
                .await?;
            docs.push(doc.id);
        }
        let batch = FileBatch {
            id: BatchId::new(),
            base_id: base.id,
            owner: base.owner,
            cancelled: false,
            created_at: self.now(),
        };
        self.stores.insert_batch(&batch, &docs).await?;
        self.batch_view(batch).await
    }

    /// One batch of a store.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::BatchNotFound`].
    pub async fn batch(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        id: BatchId,
    ) -> Result<BatchView, KnowledgeError> {
        let base = self.knowledge.owned(actor, store).await?;
        let batch = self.owned_batch(&base, id).await?;
        self.batch_view(batch).await
    }

    /// Cancels a batch: its files not yet ready stop and are `cancelled`.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::BatchNotFound`].
    pub async fn cancel_batch(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        id: BatchId,
    ) -> Result<BatchView, KnowledgeError> {
        let base = self.knowledge.owned(actor, store).await?;
        let mut batch = self.owned_batch(&base, id).await?;
        let cancelled = self.stores.cancel_batch(id).await?;
        tracing::info!(batch = %id, cancelled, "file batch cancelled");
        batch.cancelled = true;
        self.batch_view(batch).await
    }

    // Search.

    /// Searches a store: each query as the base's default mode, hits merged by chunk (best
    /// score kept), best first.
    ///
    /// # Errors
    /// [`KnowledgeError::BaseNotFound`], [`KnowledgeError::Expired`]; a bad query; embedding
    /// failures.
    pub async fn search(
        &self,
        actor: &Actor<'_>,
        store: BaseId,
        search: &StoreSearch,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let mut bad = Vec::new();
        if search.queries.is_empty()
            || search.queries.len() > 10
            || search
                .queries
                .iter()
                .any(|q| q.trim().is_empty() || q.chars().count() > 8000 || q.contains('\0'))
        {
            bad.push(InvalidValue::new(
                "query",
                "must be 1 to 10 queries of 1 to 8000 characters without NUL",
            ));
        }
        if !(1..=50).contains(&search.max_results) {
            bad.push(InvalidValue::new("max_num_results", "must be 1 to 50"));
        }
        if search
            .score_threshold
            .is_some_and(|t| !(0.0..=1.0).contains(&t))
        {
            bad.push(InvalidValue::new(
                "ranking_options.score_threshold",
                "must be 0 to 1",
            ));
        }
        if !bad.is_empty() {
            return Err(KnowledgeError::Invalid(bad));
        }
        let (base, _) = self.active(actor, store).await?;
        let principal = self.knowledge.searcher(actor, &base).await?;
        let retrieval = Retrieval {
            top_k: search.max_results,
            score_threshold: search.score_threshold,
            ..base.retrieval
        };
        let mut merged: Vec<Hit> = Vec::new();
        for query in &search.queries {
            let hits = self
                .knowledge
                .run_search(
                    &principal,
                    &base,
                    query.trim(),
                    retrieval,
                    search.filter.as_ref(),
                )
                .await?;
            for hit in hits {
                match merged.iter_mut().find(|h| h.chunk.id == hit.chunk.id) {
                    Some(seen) if seen.score >= hit.score => {}
                    Some(seen) => *seen = hit,
                    None => merged.push(hit),
                }
            }
        }
        merged.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.chunk.id.cmp(&b.chunk.id))
        });
        merged.truncate(usize::try_from(search.max_results).unwrap_or(usize::MAX));
        Ok(merged)
    }
}

fn attributes_rule() -> InvalidValue {
    InvalidValue::new(
        "attributes",
        "must be an object of at most 16 keys (1 to 64 characters) with string (at most 512 characters), number or boolean values",
    )
}

fn check_attributes(attributes: Option<&Value>) -> Result<(), KnowledgeError> {
    match attributes {
        None | Some(Value::Null) => Ok(()),
        Some(v) => parse_metadata(v)
            .map(|_| ())
            .map_err(|_| attributes_rule().into()),
    }
}

/// The draft of validated chunking settings.
fn chunking_draft(c: &Chunking) -> ChunkingDraft {
    match c.strategy {
        ChunkingStrategy::Custom => ChunkingDraft {
            strategy: Some("custom".into()),
            size: Some(i64::from(c.size)),
            overlap: Some(i64::from(c.overlap)),
            separators: (!c.separators.is_empty()).then(|| c.separators.clone()),
        },
        ChunkingStrategy::Auto | ChunkingStrategy::Paragraph => ChunkingDraft {
            strategy: Some(c.strategy.as_str().into()),
            ..ChunkingDraft::default()
        },
    }
}
