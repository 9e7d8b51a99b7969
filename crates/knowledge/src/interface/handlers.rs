//! Knowledge bases, their documents, and search (the owner only: another user's base is 404).

use actix_multipart::Multipart;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use maas_shared::http::{ApiError, PageQuery, PageResponse, ValidatedJson};
use maas_user::contract::Caller;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::app::knowledge::{BaseDraft, BasePatch, Hit, KnowledgeService, SearchDraft, Upload};
use crate::domain::base::{
    BaseId, Chunking, ChunkingDraft, KnowledgeBase, Retrieval, RetrievalDraft,
};
use crate::domain::document::{Document, DocumentId};
use crate::domain::errors::{InvalidValue, KnowledgeError};
use crate::domain::ports::ChunkView;

/// `actor!(req, caller, ctx, actor)`: the request's action context and the calling actor.
macro_rules! actor {
    ($req:expr, $caller:expr, $ctx:ident, $actor:ident) => {
        let $ctx = maas_user::contract::action_context(&$req);
        let $actor = maas_user::contract::Actor::Caller($caller.principal(), &$ctx);
    };
}

/// A whole number (`2` or `2.0`), when present.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    maas_shared::whole::opt_u64(d)
}

/// A whole number as the domain's drafts take it (out of range stays out of range).
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// How documents are cut into chunks.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ChunkingDto {
    /// `auto` (800 tokens, 400 overlap: OpenAI's default), `paragraph` (500/50: Dify's) or
    /// `custom`.
    #[schema(example = "auto")]
    pub strategy: Option<String>,
    /// Custom only: tokens per chunk, 50 to 8192 (4 characters count as a token when the
    /// model's tokenizer is not configured).
    #[schema(minimum = 50, maximum = 8192)]
    #[serde(default, deserialize_with = "whole")]
    pub size: Option<u64>,
    /// Custom only: tokens shared by neighbouring chunks, 0 to half the size.
    #[serde(default, deserialize_with = "whole")]
    pub overlap: Option<u64>,
    /// Custom only: the text is first cut at each of these (at most 10, 1 to 16 characters).
    #[schema(max_items = 10)]
    pub separators: Option<Vec<String>>,
}

impl From<&ChunkingDto> for ChunkingDraft {
    fn from(d: &ChunkingDto) -> Self {
        Self {
            strategy: d.strategy.clone(),
            size: d.size.map(signed),
            overlap: d.overlap.map(signed),
            separators: d.separators.clone(),
        }
    }
}

impl From<&Chunking> for ChunkingDto {
    fn from(c: &Chunking) -> Self {
        Self {
            strategy: Some(c.strategy.as_str().to_owned()),
            size: Some(u64::from(c.size)),
            overlap: Some(u64::from(c.overlap)),
            separators: Some(c.separators.clone()),
        }
    }
}

/// Search settings.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct RetrievalDto {
    /// `vector`, `fulltext` or `hybrid` (default `hybrid`).
    #[schema(example = "hybrid")]
    pub mode: Option<String>,
    /// Hits, 1 to 100 (default 5).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "whole")]
    pub top_k: Option<u64>,
    /// Hits scoring below are dropped, 0 to 1: cosine similarity (vector), the normalized
    /// rank (fulltext) or the fused score (hybrid, 1 = first in both rankings).
    #[schema(minimum = 0, maximum = 1)]
    pub score_threshold: Option<f64>,
    /// Hybrid: the vector ranking's weight in the fusion, 0 to 1 (default 0.7; full text gets
    /// the rest).
    #[schema(minimum = 0, maximum = 1)]
    pub vector_weight: Option<f64>,
}

impl From<&RetrievalDto> for RetrievalDraft {
    fn from(d: &RetrievalDto) -> Self {
        Self {
            mode: d.mode.clone(),
            top_k: d.top_k.map(signed),
            score_threshold: d.score_threshold,
            vector_weight: d.vector_weight,
        }
    }
}

impl From<&Retrieval> for RetrievalDto {
    fn from(r: &Retrieval) -> Self {
        Self {
            mode: Some(r.mode.as_str().to_owned()),
            top_k: Some(u64::from(r.top_k)),
            score_threshold: r.score_threshold.map(f64::from),
            vector_weight: Some(f64::from(r.vector_weight)),
        }
    }
}

/// A new knowledge base.
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct BaseRequest {
    /// 1 to 100 characters, unique among your bases (case-insensitive).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// An embedding model the platform serves you (`GET /v1/models`).
    #[schema(example = "minilm", min_length = 1, max_length = 128)]
    pub embedding_model: String,
    /// Chunking (default `auto`).
    #[validate(nested)]
    pub chunking: Option<ChunkingDto>,
    /// Search defaults.
    #[validate(nested)]
    pub retrieval: Option<RetrievalDto>,
}

/// A change to a base (absent fields stay). A new `embedding_model` re-embeds every document
/// in the background; search uses the old model until all are done, then switches at once.
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct BasePatchRequest {
    /// New name.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// New description.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// New embedding model.
    #[schema(min_length = 1, max_length = 128)]
    pub embedding_model: Option<String>,
    /// New search defaults (absent fields stay).
    #[validate(nested)]
    pub retrieval: Option<RetrievalDto>,
}

/// A knowledge base.
#[derive(Serialize, ToSchema)]
pub struct BaseResponse {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The model search embeds queries with.
    pub embedding_model: String,
    /// Its vectors' dimension (absent until the first document is embedded).
    pub dimensions: Option<u32>,
    /// A model change under way: the model being filled in.
    pub pending_embedding_model: Option<String>,
    /// Chunking.
    pub chunking: ChunkingDto,
    /// Search defaults.
    pub retrieval: RetrievalDto,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&KnowledgeBase> for BaseResponse {
    fn from(b: &KnowledgeBase) -> Self {
        Self {
            id: b.id.as_uuid(),
            owner_id: b.owner.as_uuid(),
            name: b.name.clone(),
            description: b.description.clone(),
            embedding_model: b.embedding.model.clone(),
            dimensions: b.embedding.dims,
            pending_embedding_model: b.next.as_ref().map(|n| n.model.clone()),
            chunking: ChunkingDto::from(&b.chunking),
            retrieval: RetrievalDto::from(&b.retrieval),
            created_at: b.created_at,
            updated_at: b.updated_at,
        }
    }
}

/// A document of a base.
#[derive(Serialize, ToSchema)]
pub struct DocumentResponse {
    /// Id.
    pub id: Uuid,
    /// Its base.
    pub knowledge_base_id: Uuid,
    /// The uploaded file's name (metadata only).
    pub file_name: String,
    /// `txt`, `md`, `html`, `pdf`, `docx`, `csv` or `jsonl`.
    pub kind: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub content_hash: String,
    /// `queued`, `parsing`, `chunking`, `embedding`, `indexing`, `ready` or `failed`.
    pub status: String,
    /// Why it failed, a stable code first (`extraction_failed: …`, `quota_exceeded: …`).
    pub error: Option<String>,
    /// Chunks made.
    pub chunks: u32,
    /// Tokens embedded.
    pub tokens: u64,
    /// Metadata given at upload.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&Document> for DocumentResponse {
    fn from(d: &Document) -> Self {
        Self {
            id: d.id.as_uuid(),
            knowledge_base_id: d.base_id.as_uuid(),
            file_name: d.file_name.clone(),
            kind: d.kind.as_str().to_owned(),
            bytes: d.bytes,
            content_hash: d.content_hash.clone(),
            status: d.status.as_str().to_owned(),
            error: d.error.clone(),
            chunks: d.chunks,
            tokens: d.tokens,
            metadata: d.metadata.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// An upload's answer.
#[derive(Serialize, ToSchema)]
pub struct UploadResponse {
    /// The document.
    pub document: DocumentResponse,
    /// True when the same bytes were already in the base (no new chunks are made).
    pub duplicate: bool,
}

/// A document upload (multipart).
#[derive(ToSchema)]
pub struct DocumentUpload {
    /// The file: txt, md, html, pdf, docx, csv or jsonl, named by the part's media type or the
    /// file name's extension, and checked against the bytes.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// A JSON object of at most 16 keys with string, number or boolean values.
    pub metadata: Option<String>,
}

/// A chunk.
#[derive(Serialize, ToSchema)]
pub struct ChunkResponse {
    /// Chunk id.
    pub id: Uuid,
    /// Its document.
    pub document_id: Uuid,
    /// The document's file name.
    pub file_name: String,
    /// Position in the document, from 0.
    pub position: u32,
    /// Text.
    pub content: String,
}

impl From<&ChunkView> for ChunkResponse {
    fn from(c: &ChunkView) -> Self {
        Self {
            id: c.id,
            document_id: c.document_id.as_uuid(),
            file_name: c.file_name.clone(),
            position: c.position,
            content: c.content.clone(),
        }
    }
}

/// A document's chunks.
#[derive(Serialize, ToSchema)]
pub struct ChunksResponse {
    /// By position.
    pub data: Vec<ChunkResponse>,
    /// Pass as `cursor` for the next page (absent on the last one).
    pub next_cursor: Option<String>,
}

/// A search.
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query, 1 to 8000 characters.
    #[schema(min_length = 1, max_length = 8000)]
    pub query: String,
    /// `vector`, `fulltext` or `hybrid` (default: the base's).
    pub mode: Option<String>,
    /// Hits, 1 to 100 (default: the base's).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "whole")]
    pub top_k: Option<u64>,
    /// Hits scoring below are dropped (0 to 1).
    #[schema(minimum = 0, maximum = 1)]
    pub score_threshold: Option<f64>,
    /// Hybrid: the vector ranking's weight (0 to 1).
    #[schema(minimum = 0, maximum = 1)]
    pub vector_weight: Option<f64>,
    /// Only documents whose metadata holds every pair (`file_name` and `kind` match the
    /// document's own).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
}

/// A search hit.
#[derive(Serialize, ToSchema)]
pub struct HitResponse {
    /// The chunk.
    pub chunk: ChunkResponse,
    /// The score of the mode, 0 to 1.
    pub score: f32,
    /// Cosine similarity, when the vector search found it.
    pub vector_score: Option<f32>,
    /// Full-text rank, when the text search found it.
    pub text_score: Option<f32>,
    /// The document's metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl From<&Hit> for HitResponse {
    fn from(h: &Hit) -> Self {
        Self {
            chunk: ChunkResponse::from(&h.chunk),
            score: h.score,
            vector_score: h.vector_score,
            text_score: h.text_score,
            metadata: h.chunk.metadata.clone(),
        }
    }
}

/// Search hits, best first.
#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    /// Hits.
    pub hits: Vec<HitResponse>,
}

/// A rebuilt index.
#[derive(Serialize, ToSchema)]
pub struct ReindexResponse {
    /// Points written from the record.
    pub points: u64,
}

fn base_id(path: web::Path<Uuid>) -> BaseId {
    BaseId::from_uuid(path.into_inner())
}

/// Create a knowledge base
#[utoipa::path(post, path = "/knowledge-bases", tag = "knowledge", request_body = BaseRequest,
    responses((status = 201, body = BaseResponse), (status = 409, description = "`knowledge_base_name_taken`"),
        (status = 422, description = "`validation_failed` (every bad field), `embedding_model_not_found`")),
    security(("bearer" = [])))]
pub async fn create_base(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    body: ValidatedJson<BaseRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let b = body.into_inner();
    let draft = BaseDraft {
        name: b.name,
        description: b.description,
        embedding_model: b.embedding_model,
        chunking: b
            .chunking
            .as_ref()
            .map(ChunkingDraft::from)
            .unwrap_or_default(),
        retrieval: b
            .retrieval
            .as_ref()
            .map(RetrievalDraft::from)
            .unwrap_or_default(),
    };
    let base = service.create(&actor, None, &draft).await?;
    Ok(HttpResponse::Created().json(BaseResponse::from(&base)))
}

/// Your knowledge bases
#[utoipa::path(get, path = "/knowledge-bases", tag = "knowledge", params(PageQuery),
    responses((status = 200, body = PageResponse<BaseResponse>)), security(("bearer" = [])))]
pub async fn list_bases(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let list = service.list(&actor, None, &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |b| BaseResponse::from(&b))))
}

/// A knowledge base
#[utoipa::path(get, path = "/knowledge-bases/{kb_id}", tag = "knowledge", params(("kb_id" = Uuid, Path)),
    responses((status = 200, body = BaseResponse), (status = 404, description = "`knowledge_base_not_found`")),
    security(("bearer" = [])))]
pub async fn get_base(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let base = service.get(&actor, base_id(path)).await?;
    Ok(HttpResponse::Ok().json(BaseResponse::from(&base)))
}

/// Change a knowledge base
#[utoipa::path(patch, path = "/knowledge-bases/{kb_id}", tag = "knowledge", params(("kb_id" = Uuid, Path)), request_body = BasePatchRequest,
    responses((status = 200, body = BaseResponse), (status = 404, description = "`knowledge_base_not_found`"),
        (status = 409, description = "`knowledge_base_name_taken`, `knowledge_base_busy` (a model change is under way)"),
        (status = 422, description = "`validation_failed`, `embedding_model_not_found`")),
    security(("bearer" = [])))]
pub async fn update_base(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<BasePatchRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let p = body.into_inner();
    let patch = BasePatch {
        name: p.name,
        description: p.description,
        embedding_model: p.embedding_model,
        retrieval: p.retrieval.as_ref().map(RetrievalDraft::from),
    };
    let base = service.update(&actor, base_id(path), &patch).await?;
    Ok(HttpResponse::Ok().json(BaseResponse::from(&base)))
}

/// Delete a knowledge base with its documents, chunks and vectors
#[utoipa::path(delete, path = "/knowledge-bases/{kb_id}", tag = "knowledge", params(("kb_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "`knowledge_base_not_found`")),
    security(("bearer" = [])))]
pub async fn delete_base(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    service.delete(&actor, base_id(path)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Reads an upload's form: the `file` part and the text parts `text` (64 KiB each at most).
pub(crate) async fn read_form(
    req: &HttpRequest,
    form: Multipart,
    limit: usize,
    text: &[&str],
) -> Result<maas_shared::http::Form, KnowledgeError> {
    use maas_shared::http::FormError;
    let rules = maas_shared::http::FormRules {
        file: "file",
        max_file_bytes: limit,
        text,
        max_text_bytes: 64 * 1024,
    };
    maas_shared::http::read_form(req, form, rules)
        .await
        .map_err(|e| match e {
            FormError::NotMultipart => KnowledgeError::UnsupportedType(
                "send the file as multipart/form-data, in a part named `file`".into(),
            ),
            FormError::FileTooLarge(limit) => KnowledgeError::TooLarge(limit),
            FormError::MissingFile => {
                InvalidValue::new("file", "a part named `file` with the file is required").into()
            }
            FormError::Unexpected(_) => InvalidValue::new(
                "form",
                "holds a part that is not expected (or one given twice)",
            )
            .into(),
            FormError::BadText(_) => {
                InvalidValue::new("form", "a text part is over 64 KiB or not UTF-8").into()
            }
            FormError::Unreadable => {
                InvalidValue::new("file", "the multipart body could not be read").into()
            }
        })
}

async fn read_upload(
    req: &HttpRequest,
    form: Multipart,
    limit: usize,
) -> Result<Upload, KnowledgeError> {
    let mut form = read_form(req, form, limit, &["metadata"]).await?;
    let metadata = form
        .fields
        .remove("metadata")
        .map(|raw| {
            serde_json::from_str(&raw)
                .map_err(|_| InvalidValue::new("metadata", "must be a JSON object"))
        })
        .transpose()?;
    Ok(Upload {
        file_name: form.file.name,
        media_type: form.file.media_type,
        bytes: form.file.bytes,
        metadata,
    })
}

/// Upload a document
///
/// The type is named by the part's media type (or the file name's extension) and must agree
/// with the bytes; the file name is kept as metadata only. The worker extracts, chunks, embeds
/// (metered to the base's owner) and indexes it: follow `status`. The same bytes uploaded again
/// answer the existing document (`duplicate: true`, 200) and make no new chunks.
#[utoipa::path(post, path = "/knowledge-bases/{kb_id}/documents", tag = "knowledge", params(("kb_id" = Uuid, Path)),
    request_body(content = DocumentUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = UploadResponse, description = "Stored and queued"), (status = 200, body = UploadResponse, description = "The same bytes are already in the base"),
        (status = 404, description = "`knowledge_base_not_found`"), (status = 413, description = "`payload_too_large` (20 MB by default)"),
        (status = 415, description = "`unsupported_media_type` (not an accepted type, or not multipart), `document_type_mismatch` (the bytes are not of the declared type)"),
        (status = 422, description = "`validation_failed` (no `file` part, bad `metadata`), `malformed_document` (e.g. a JSON lines file with a line that is not JSON)")),
    security(("bearer" = [])))]
pub async fn upload_document(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<Uuid>,
    form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let id = base_id(path);
    let upload = read_upload(&req, form, service.max_document_bytes()).await?;
    actor!(req, caller, ctx, actor);
    let (doc, duplicate) = service.upload(&actor, id, upload).await?;
    let body = UploadResponse {
        document: DocumentResponse::from(&doc),
        duplicate,
    };
    Ok(if duplicate {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Created().json(body)
    })
}

/// A base's documents
#[utoipa::path(get, path = "/knowledge-bases/{kb_id}/documents", tag = "knowledge", params(("kb_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = PageResponse<DocumentResponse>), (status = 404, description = "`knowledge_base_not_found`")),
    security(("bearer" = [])))]
pub async fn list_documents(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let list = service.documents(&actor, base_id(path), &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |d| {
        DocumentResponse::from(&d)
    })))
}

/// A document
#[utoipa::path(get, path = "/knowledge-bases/{kb_id}/documents/{document_id}", tag = "knowledge", params(("kb_id" = Uuid, Path), ("document_id" = Uuid, Path)),
    responses((status = 200, body = DocumentResponse), (status = 404, description = "`knowledge_base_not_found`, `document_not_found`")),
    security(("bearer" = [])))]
pub async fn get_document(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (kb, doc) = path.into_inner();
    let doc = service
        .document(&actor, BaseId::from_uuid(kb), DocumentId::from_uuid(doc))
        .await?;
    Ok(HttpResponse::Ok().json(DocumentResponse::from(&doc)))
}

/// Delete a document with its chunks and vectors
#[utoipa::path(delete, path = "/knowledge-bases/{kb_id}/documents/{document_id}", tag = "knowledge", params(("kb_id" = Uuid, Path), ("document_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "`knowledge_base_not_found`, `document_not_found`")),
    security(("bearer" = [])))]
pub async fn delete_document(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (kb, doc) = path.into_inner();
    service
        .delete_document(&actor, BaseId::from_uuid(kb), DocumentId::from_uuid(doc))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A document's chunks, by position
#[utoipa::path(get, path = "/knowledge-bases/{kb_id}/documents/{document_id}/chunks", tag = "knowledge", params(("kb_id" = Uuid, Path), ("document_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = ChunksResponse), (status = 404, description = "`knowledge_base_not_found`, `document_not_found`")),
    security(("bearer" = [])))]
pub async fn document_chunks(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (kb, doc) = path.into_inner();
    let page = query.into_inner().into_request()?;
    let chunks = service
        .chunks(
            &actor,
            BaseId::from_uuid(kb),
            DocumentId::from_uuid(doc),
            &page,
        )
        .await?;
    let full = u32::try_from(chunks.len()).unwrap_or(u32::MAX) >= page.limit();
    let next_cursor = chunks
        .last()
        .filter(|_| full)
        .map(|c| maas_shared::paging::Cursor::after(c.id).encode());
    Ok(HttpResponse::Ok().json(ChunksResponse {
        data: chunks.iter().map(ChunkResponse::from).collect(),
        next_cursor,
    }))
}

/// Search a knowledge base (hit testing)
///
/// `vector` embeds the query with the base's model (metered to you) and ranks chunks by cosine
/// similarity; `fulltext` matches words (and pairs of CJK characters, so Chinese text is found
/// too) in PostgreSQL; `hybrid` fuses both rankings by weighted reciprocal rank. Every query is
/// restricted to your base; `filter` only narrows it.
#[utoipa::path(post, path = "/knowledge-bases/{kb_id}/search", tag = "knowledge", params(("kb_id" = Uuid, Path)), request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 404, description = "`knowledge_base_not_found`"),
        (status = 422, description = "`validation_failed` (every bad field)"), (status = 429, description = "`rate_limited`"), (status = 402, description = "`quota_exceeded`"),
        (status = 503, description = "`upstream_unavailable`: the embedding model could not answer")),
    security(("bearer" = [])))]
pub async fn search(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<SearchRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let b = body.into_inner();
    let draft = SearchDraft {
        query: b.query,
        retrieval: RetrievalDraft {
            mode: b.mode,
            top_k: b.top_k.map(signed),
            score_threshold: b.score_threshold,
            vector_weight: b.vector_weight,
        },
        filter: b.filter,
    };
    let hits = service.search(&actor, base_id(path), &draft).await?;
    Ok(HttpResponse::Ok().json(SearchResponse {
        hits: hits.iter().map(HitResponse::from).collect(),
    }))
}

/// Rebuild a base's vector index from the record
#[utoipa::path(post, path = "/knowledge-bases/{kb_id}/reindex", tag = "knowledge", params(("kb_id" = Uuid, Path)),
    responses((status = 200, body = ReindexResponse), (status = 404, description = "`knowledge_base_not_found`")),
    security(("bearer" = [])))]
pub async fn reindex(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<KnowledgeService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let points = service.reindex(&actor, base_id(path)).await?;
    Ok(HttpResponse::Ok().json(ReindexResponse { points }))
}
