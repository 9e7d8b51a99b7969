//! OpenAI's files and vector stores (`/v1/files`, `/v1/vector_stores`), in OpenAI's shapes
//! and error envelope, over knowledge bases: a vector store is a base, `vs_` + its id.

use actix_multipart::Multipart;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use maas_shared::http::{OpenAiError, ValidatedJson};
use maas_user::contract::Caller;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use super::handlers::read_form;
use crate::app::knowledge::Hit;
use crate::app::stores::{
    Attach, BatchView, FileUpload, StoreDraft, StorePatch, StoreSearch, StoreView, VectorStores,
};
use crate::domain::base::{BaseId, Chunking, ChunkingStrategy, KnowledgeBase};
use crate::domain::document::Document;
use crate::domain::errors::{InvalidValue, KnowledgeError};
use crate::domain::store::{
    BatchId, FileCounts, FileId, FileState, Filter, StoredFile, Window, parse_expiry,
    parse_store_metadata, static_chunking,
};

/// `actor!(req, caller, ctx, actor)`: the request's action context and the calling actor.
macro_rules! actor {
    ($req:expr, $caller:expr, $ctx:ident, $actor:ident) => {
        let $ctx = maas_user::contract::action_context(&$req);
        let $actor = maas_user::contract::Actor::Caller($caller.principal(), &$ctx);
    };
}

/// An error of this API, with OpenAI's names for what is not found.
fn oe(err: KnowledgeError) -> OpenAiError {
    let code = if matches!(err, KnowledgeError::BaseNotFound) {
        Some("vector_store_not_found")
    } else if matches!(err, KnowledgeError::DocumentNotFound) {
        Some("vector_store_file_not_found")
    } else {
        None
    };
    let out = OpenAiError::from(err);
    match code {
        Some(code) => out.with_code(code),
        None => out,
    }
}

fn unix(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

// Ids on the wire.

const FILE: &str = "file-";
const STORE: &str = "vs_";
const BATCH: &str = "vsfb_";

fn wire(prefix: &str, id: uuid::Uuid) -> String {
    format!("{prefix}{}", id.simple())
}

fn unwire(prefix: &str, raw: &str) -> Option<uuid::Uuid> {
    raw.strip_prefix(prefix)
        .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
}

fn store_id(raw: &str) -> Result<BaseId, KnowledgeError> {
    unwire(STORE, raw)
        .map(BaseId::from_uuid)
        .ok_or(KnowledgeError::BaseNotFound)
}

fn file_id(raw: &str) -> Result<FileId, KnowledgeError> {
    unwire(FILE, raw)
        .map(FileId::from_uuid)
        .ok_or(KnowledgeError::FileNotFound)
}

fn batch_id(raw: &str) -> Result<BatchId, KnowledgeError> {
    unwire(BATCH, raw)
        .map(BatchId::from_uuid)
        .ok_or(KnowledgeError::BatchNotFound)
}

/// A store and one of its batches from the path.
fn batch_path(path: web::Path<(String, String)>) -> Result<(BaseId, BatchId), KnowledgeError> {
    let (store, batch) = path.into_inner();
    Ok((store_id(&store)?, batch_id(&batch)?))
}

/// A store and one of its files from the path (with the file id as given).
fn file_path(
    path: web::Path<(String, String)>,
) -> Result<(BaseId, FileId, String), KnowledgeError> {
    let (store, raw) = path.into_inner();
    let store = store_id(&store)?;
    let file = file_id(&raw).map_err(|_| KnowledgeError::DocumentNotFound)?;
    Ok((store, file, raw))
}

/// A store file's id: its file's, or its document's for a document uploaded through the
/// management API.
fn doc_file_id(doc: &Document) -> String {
    wire(FILE, doc.file_id.map_or(doc.id.as_uuid(), |f| f.as_uuid()))
}

// Lists.

/// Paging of an OpenAI list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u64>,
    /// `asc` or `desc` by creation (default `desc`).
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
    /// The id of the last item of the previous page.
    #[param(pattern = "^(file-|vs_)[0-9a-f]{32}$")]
    pub after: Option<String>,
    /// The id of the first item of the next page (the page before it).
    #[param(pattern = "^(file-|vs_)[0-9a-f]{32}$")]
    pub before: Option<String>,
    /// Files only: `assistants` or `user_data`.
    #[param(pattern = "^(assistants|user_data)$")]
    pub purpose: Option<String>,
    /// Store files only: `in_progress`, `completed`, `failed` or `cancelled`.
    #[param(pattern = "^(in_progress|completed|failed|cancelled)$")]
    pub filter: Option<String>,
}

impl ListQuery {
    fn window(&self, prefix: &str) -> Result<Window, KnowledgeError> {
        let mut bad = Vec::new();
        let mut cursor = |raw: &Option<String>, field: &'static str| match raw.as_deref() {
            None | Some("") => None,
            Some(r) => unwire(prefix, r).or_else(|| {
                bad.push(InvalidValue::new(field, "must be an id this list answered"));
                None
            }),
        };
        let after = cursor(&self.after, "after");
        let before = cursor(&self.before, "before");
        let limit = self.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        match Window::parse(limit, self.order.as_deref(), after, before) {
            Ok(w) if bad.is_empty() => Ok(w),
            Ok(_) => Err(bad.into()),
            Err(more) => {
                bad.extend(more);
                Err(bad.into())
            }
        }
    }

    fn state(&self) -> Result<Option<FileState>, KnowledgeError> {
        match self.filter.as_deref() {
            None | Some("") => Ok(None),
            Some(raw) => FileState::parse(raw).map(Some).ok_or_else(|| {
                InvalidValue::new(
                    "filter",
                    "must be `in_progress`, `completed`, `failed` or `cancelled`",
                )
                .into()
            }),
        }
    }

    fn only(&self, allowed: &[&'static str]) -> Result<(), KnowledgeError> {
        let given = [
            ("purpose", self.purpose.is_some()),
            ("filter", self.filter.is_some()),
        ];
        let bad: Vec<InvalidValue> = given
            .into_iter()
            .filter(|(name, set)| *set && !allowed.contains(name))
            .map(|(name, _)| InvalidValue::new(name, "is not a parameter of this list"))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.into())
        }
    }
}

/// An OpenAI list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T: ToSchema> {
    /// `list`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// The items.
    pub data: Vec<T>,
    /// The first item's id.
    pub first_id: Option<String>,
    /// The last item's id (pass as `after` for the next page).
    pub last_id: Option<String>,
    /// Whether more items follow.
    pub has_more: bool,
}

fn list<T: ToSchema>(data: Vec<T>, has_more: bool, id: impl Fn(&T) -> String) -> ListResponse<T> {
    ListResponse {
        object: "list",
        first_id: data.first().map(&id),
        last_id: data.last().map(&id),
        data,
        has_more,
    }
}

/// A deletion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The id.
    pub id: String,
    /// `file`, `vector_store.deleted` or `vector_store.file.deleted`.
    pub object: &'static str,
    /// Always true.
    pub deleted: bool,
}

// Files.

/// A file.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileObject {
    /// `file-…`.
    pub id: String,
    /// `file`.
    #[schema(example = "file")]
    pub object: &'static str,
    /// Size in bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// The name given.
    pub filename: String,
    /// `assistants` or `user_data`.
    pub purpose: String,
    /// Always `processed` (deprecated by OpenAI; kept for older SDKs).
    pub status: &'static str,
    /// Files here do not expire.
    pub expires_at: Option<i64>,
}

impl From<&StoredFile> for FileObject {
    fn from(f: &StoredFile) -> Self {
        Self {
            id: wire(FILE, f.id.as_uuid()),
            object: "file",
            bytes: f.bytes,
            created_at: unix(f.created_at),
            filename: f.file_name.clone(),
            purpose: f.purpose.clone(),
            status: "processed",
            expires_at: None,
        }
    }
}

/// A file upload (`multipart/form-data`).
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the multipart form; the handler reads the parts"
)]
pub struct FileForm {
    /// The file: txt, md, html, pdf, docx, csv or jsonl, at most `knowledge.max_document_bytes`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// `assistants` or `user_data`.
    #[schema(example = "assistants")]
    purpose: String,
}

/// Upload a file
///
/// A file for vector stores (`purpose` `assistants` or `user_data`), of a type a store can
/// ingest (txt, md, html, pdf, docx, csv, jsonl; judged by its bytes). Attach it to stores
/// with `POST /v1/vector_stores/{id}/files`.
#[utoipa::path(post, path = "/files", tag = "files", request_body(content = FileForm, content_type = "multipart/form-data"),
    responses((status = 200, body = FileObject), (status = 400, description = "`validation_failed`: no `file`, a bad `purpose`, an unknown part"),
        (status = 413, description = "`payload_too_large`"), (status = 415, description = "`unsupported_media_type`, `document_type_mismatch`"),
        (status = 422, description = "`malformed_document`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_file(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    form: Multipart,
) -> Result<HttpResponse, OpenAiError> {
    let mut form = read_form(&req, form, service.max_file_bytes(), &["purpose"])
        .await
        .map_err(oe)?;
    let purpose = form.fields.remove("purpose").ok_or_else(|| {
        oe(InvalidValue::new("purpose", "a field named `purpose` is required").into())
    })?;
    actor!(req, caller, ctx, actor);
    let file = service
        .upload_file(
            &actor,
            FileUpload {
                file_name: form.file.name,
                media_type: form.file.media_type,
                bytes: form.file.bytes,
                purpose,
            },
        )
        .await
        .map_err(oe)?;
    Ok(HttpResponse::Ok().json(FileObject::from(&file)))
}

/// List files
#[utoipa::path(get, path = "/files", tag = "files", params(ListQuery),
    responses((status = 200, body = ListResponse<FileObject>), (status = 400, description = "`validation_failed`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_files(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, OpenAiError> {
    query.only(&["purpose"]).map_err(oe)?;
    let window = query.window(FILE).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let (files, more) = service
        .files(&actor, query.purpose.as_deref(), &window)
        .await
        .map_err(oe)?;
    let data = files.iter().map(FileObject::from).collect();
    Ok(HttpResponse::Ok().json(list(data, more, |f: &FileObject| f.id.clone())))
}

/// Retrieve a file
#[utoipa::path(get, path = "/files/{file_id}", tag = "files", params(("file_id" = String, Path, description = "`file-…`")),
    responses((status = 200, body = FileObject), (status = 404, description = "`file_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_file(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    let id = file_id(&path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let file = service.file(&actor, id).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(FileObject::from(&file)))
}

/// Retrieve a file's content
#[utoipa::path(get, path = "/files/{file_id}/content", tag = "files", params(("file_id" = String, Path, description = "`file-…`")),
    responses((status = 200, description = "The bytes uploaded", content_type = "application/octet-stream"), (status = 404, description = "`file_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn file_content(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    let id = file_id(&path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let (file, bytes) = service.file_content(&actor, id).await.map_err(oe)?;
    let kind = file
        .media_type
        .filter(|m| actix_web::http::header::HeaderValue::from_str(m).is_ok())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", kind))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("content-disposition", "attachment"))
        .body(bytes))
}

/// Delete a file
///
/// The file goes, and with it its document in every vector store it was attached to.
#[utoipa::path(delete, path = "/files/{file_id}", tag = "files", params(("file_id" = String, Path, description = "`file-…`")),
    responses((status = 200, body = Deleted), (status = 404, description = "`file_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_file(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    let id = file_id(&path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    service.delete_file(&actor, id).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(Deleted {
        id: path.into_inner(),
        object: "file",
        deleted: true,
    }))
}

// Stores.

/// OpenAI's chunking strategy of a request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChunkingParam {
    /// 800 tokens, 400 overlap.
    Auto,
    /// Given sizes.
    Static {
        /// The sizes.
        #[serde(rename = "static")]
        sizes: StaticSizes,
    },
}

/// A static chunking's sizes.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticSizes {
    /// 100 to 4096 tokens.
    #[schema(minimum = 100, maximum = 4096)]
    #[serde(deserialize_with = "whole")]
    pub max_chunk_size_tokens: u64,
    /// 0 to half of `max_chunk_size_tokens`.
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "whole")]
    pub chunk_overlap_tokens: u64,
}

fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    maas_shared::whole::opt_u64(d)?.ok_or_else(|| serde::de::Error::custom("a whole number"))
}

fn chunking(param: Option<&ChunkingParam>) -> Result<Option<Chunking>, KnowledgeError> {
    match param {
        None => Ok(None),
        Some(ChunkingParam::Auto) => Ok(Some(Chunking::preset(ChunkingStrategy::Auto))),
        Some(ChunkingParam::Static { sizes }) => {
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            static_chunking(
                n(sizes.max_chunk_size_tokens),
                n(sizes.chunk_overlap_tokens),
            )
            .map(Some)
            .map_err(KnowledgeError::Invalid)
        }
    }
}

/// A chunking strategy as stored: `static` with its sizes, or `other` (custom separators).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkingObject {
    /// `static` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The sizes (`static` only).
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub sizes: Option<StaticSizes>,
}

impl From<&Chunking> for ChunkingObject {
    fn from(c: &Chunking) -> Self {
        if c.separators.is_empty() {
            Self {
                kind: "static",
                sizes: Some(StaticSizes {
                    max_chunk_size_tokens: u64::from(c.size),
                    chunk_overlap_tokens: u64::from(c.overlap),
                }),
            }
        } else {
            Self {
                kind: "other",
                sizes: None,
            }
        }
    }
}

/// An expiry policy.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiresAfter {
    /// `last_active_at`.
    #[schema(example = "last_active_at")]
    pub anchor: String,
    /// 1 to 365.
    #[schema(minimum = 1, maximum = 365)]
    #[serde(deserialize_with = "whole")]
    pub days: u64,
}

fn expiry(e: &ExpiresAfter) -> Result<u32, KnowledgeError> {
    parse_expiry(&e.anchor, i64::try_from(e.days).unwrap_or(i64::MAX))
        .map_err(KnowledgeError::Invalid)
}

fn store_metadata(v: Option<&Value>) -> Result<Map<String, Value>, KnowledgeError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(v) => Ok(parse_store_metadata(v)?),
    }
}

fn file_ids(raw: &[String]) -> Result<Vec<FileId>, KnowledgeError> {
    raw.iter().map(|r| file_id(r)).collect()
}

/// A new vector store.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateStoreRequest {
    /// 1 to 100 characters, unique among your stores and knowledge bases (default: made from
    /// the id).
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Files to attach at once (at most 500).
    #[schema(max_items = 500)]
    pub file_ids: Option<Vec<String>>,
    /// How attached files are cut (default `auto`).
    pub chunking_strategy: Option<ChunkingParam>,
    /// Expire this long after the last activity.
    pub expires_after: Option<ExpiresAfter>,
    /// Up to 16 string pairs.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Extension: the embedding model (default `knowledge.store_embedding_model`).
    #[schema(example = "minilm", min_length = 1, max_length = 128)]
    pub embedding_model: Option<String>,
}

/// A change to a vector store.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateStoreRequest {
    /// New name.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// New expiry (`null` clears it).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ExpiresAfter>)]
    pub expires_after: Option<Option<ExpiresAfter>>,
    /// New metadata (`null` clears it).
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Option<Value>>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Files by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileCountsObject {
    /// Being ingested.
    pub in_progress: u64,
    /// Ready.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// All.
    pub total: u64,
}

impl From<&FileCounts> for FileCountsObject {
    fn from(c: &FileCounts) -> Self {
        Self {
            in_progress: c.in_progress,
            completed: c.completed,
            failed: c.failed,
            cancelled: c.cancelled,
            total: c.total(),
        }
    }
}

/// A vector store.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreObject {
    /// `vs_…` (the knowledge base's id).
    pub id: String,
    /// `vector_store`.
    #[schema(example = "vector_store")]
    pub object: &'static str,
    /// Unix seconds.
    pub created_at: i64,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Bytes of its files.
    pub usage_bytes: u64,
    /// Files by state.
    pub file_counts: FileCountsObject,
    /// `expired`, `in_progress` or `completed`.
    pub status: &'static str,
    /// Expiry policy.
    pub expires_after: Option<ExpiresAfter>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds of the last search, attachment or change.
    pub last_active_at: i64,
    /// Metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Extension: the embedding model.
    pub embedding_model: String,
}

impl From<&StoreView> for StoreObject {
    fn from(v: &StoreView) -> Self {
        Self {
            id: wire(STORE, v.base.id.as_uuid()),
            object: "vector_store",
            created_at: unix(v.base.created_at),
            name: v.base.name.clone(),
            description: v.base.description.clone(),
            usage_bytes: v.usage_bytes,
            file_counts: FileCountsObject::from(&v.counts),
            status: v.status,
            expires_after: v.settings.expires_after_days.map(|days| ExpiresAfter {
                anchor: "last_active_at".to_owned(),
                days: u64::from(days),
            }),
            expires_at: v.settings.expires_at().map(unix),
            last_active_at: unix(v.settings.last_active_at),
            metadata: v.settings.metadata.clone(),
            embedding_model: v.base.embedding.model.clone(),
        }
    }
}

/// Create a vector store
///
/// A knowledge base (its id is the store's without `vs_`), with `file_ids` attached at once.
/// Its embedding model is `embedding_model` (an extension) or `knowledge.store_embedding_model`.
#[utoipa::path(post, path = "/vector_stores", tag = "vector_stores", request_body = CreateStoreRequest,
    responses((status = 200, body = StoreObject), (status = 400, description = "`validation_failed` (every bad field)"),
        (status = 404, description = "`file_not_found`"), (status = 409, description = "`knowledge_base_name_taken`"),
        (status = 422, description = "`validation_failed`, `embedding_model_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_store(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    body: ValidatedJson<CreateStoreRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let b = body.into_inner();
    let mut bad = Vec::new();
    let chunking = chunking(b.chunking_strategy.as_ref())
        .map_err(|e| collect(&mut bad, e))
        .ok()
        .flatten();
    let metadata = store_metadata(b.metadata.as_ref())
        .map_err(|e| collect(&mut bad, e))
        .unwrap_or_default();
    let expires = b
        .expires_after
        .as_ref()
        .map(expiry)
        .transpose()
        .map_err(|e| collect(&mut bad, e))
        .ok()
        .flatten();
    if !bad.is_empty() {
        return Err(oe(KnowledgeError::Invalid(bad)));
    }
    let ids = file_ids(b.file_ids.as_deref().unwrap_or_default()).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let view = service
        .create_store(
            &actor,
            StoreDraft {
                name: b.name,
                description: b.description,
                embedding_model: b.embedding_model,
                chunking,
                metadata,
                expires_after_days: expires,
                file_ids: ids,
            },
        )
        .await
        .map_err(oe)?;
    Ok(HttpResponse::Ok().json(StoreObject::from(&view)))
}

fn collect(bad: &mut Vec<InvalidValue>, err: KnowledgeError) {
    if let KnowledgeError::Invalid(values) = err {
        bad.extend(values);
    }
}

/// List vector stores
#[utoipa::path(get, path = "/vector_stores", tag = "vector_stores", params(ListQuery),
    responses((status = 200, body = ListResponse<StoreObject>), (status = 400, description = "`validation_failed`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_stores(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, OpenAiError> {
    query.only(&[]).map_err(oe)?;
    let window = query.window(STORE).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let (views, more) = service.stores(&actor, &window).await.map_err(oe)?;
    let data = views.iter().map(StoreObject::from).collect();
    Ok(HttpResponse::Ok().json(list(data, more, |s: &StoreObject| s.id.clone())))
}

/// Retrieve a vector store
#[utoipa::path(get, path = "/vector_stores/{vector_store_id}", tag = "vector_stores", params(("vector_store_id" = String, Path, description = "`vs_…`")),
    responses((status = 200, body = StoreObject), (status = 404, description = "`vector_store_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_store(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    let id = store_id(&path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let view = service.store(&actor, id).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(StoreObject::from(&view)))
}

/// Modify a vector store
///
/// A change counts as activity (the expiry clock restarts).
#[utoipa::path(post, path = "/vector_stores/{vector_store_id}", tag = "vector_stores", params(("vector_store_id" = String, Path, description = "`vs_…`")),
    request_body = UpdateStoreRequest,
    responses((status = 200, body = StoreObject), (status = 400, description = "`validation_failed`"), (status = 404, description = "`vector_store_not_found`"),
        (status = 409, description = "`knowledge_base_name_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_store(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
    body: ValidatedJson<UpdateStoreRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let id = store_id(&path).map_err(oe)?;
    let b = body.into_inner();
    let mut bad = Vec::new();
    let metadata = match &b.metadata {
        None => None,
        Some(m) => store_metadata(m.as_ref())
            .map_err(|e| collect(&mut bad, e))
            .ok(),
    };
    let expires = match &b.expires_after {
        None => None,
        Some(None) => Some(None),
        Some(Some(e)) => expiry(e).map_err(|e| collect(&mut bad, e)).ok().map(Some),
    };
    if !bad.is_empty() {
        return Err(oe(KnowledgeError::Invalid(bad)));
    }
    actor!(req, caller, ctx, actor);
    let view = service
        .update_store(
            &actor,
            id,
            StorePatch {
                name: b.name,
                metadata,
                expires_after_days: expires,
            },
        )
        .await
        .map_err(oe)?;
    Ok(HttpResponse::Ok().json(StoreObject::from(&view)))
}

/// Delete a vector store
///
/// The store (a knowledge base) goes with its documents, chunks and vectors; the files stay.
#[utoipa::path(delete, path = "/vector_stores/{vector_store_id}", tag = "vector_stores", params(("vector_store_id" = String, Path, description = "`vs_…`")),
    responses((status = 200, body = Deleted), (status = 404, description = "`vector_store_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_store(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    let id = store_id(&path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    service.delete_store(&actor, id).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(Deleted {
        id: path.into_inner(),
        object: "vector_store.deleted",
        deleted: true,
    }))
}

// Store files.

/// Why a file failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastError {
    /// `invalid_file` (its text could not be read) or `server_error`.
    pub code: &'static str,
    /// The reason, a stable code first (`extraction_failed: …`).
    pub message: String,
}

/// A file of a vector store.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreFileObject {
    /// The file's id (`file-…`).
    pub id: String,
    /// `vector_store.file`.
    #[schema(example = "vector_store.file")]
    pub object: &'static str,
    /// Bytes.
    pub usage_bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// `vs_…`.
    pub vector_store_id: String,
    /// `in_progress`, `completed`, `failed` or `cancelled`.
    pub status: &'static str,
    /// Why it failed.
    pub last_error: Option<LastError>,
    /// How it was cut.
    pub chunking_strategy: ChunkingObject,
    /// Its attributes (search filters on them).
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

fn store_file(base: &KnowledgeBase, doc: &Document) -> StoreFileObject {
    let state = FileState::of(doc.status);
    let last_error = (state == FileState::Failed).then(|| {
        let message = doc.error.clone().unwrap_or_default();
        let code = if message.starts_with("extraction_failed") || message.starts_with("no_text") {
            "invalid_file"
        } else {
            "server_error"
        };
        LastError { code, message }
    });
    StoreFileObject {
        id: doc_file_id(doc),
        object: "vector_store.file",
        usage_bytes: doc.bytes,
        created_at: unix(doc.created_at),
        vector_store_id: wire(STORE, base.id.as_uuid()),
        status: state.as_str(),
        last_error,
        chunking_strategy: ChunkingObject::from(doc.chunking.as_ref().unwrap_or(&base.chunking)),
        attributes: doc.metadata.clone(),
    }
}

/// A file to attach.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// `file-…`, one of yours.
    pub file_id: String,
    /// Up to 16 keys with string (at most 512 characters), number or boolean values.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
    /// How it is cut (default: the store's).
    pub chunking_strategy: Option<ChunkingParam>,
}

fn attach(r: &AttachRequest) -> Result<Attach, KnowledgeError> {
    Ok(Attach {
        file_id: file_id(&r.file_id)?,
        attributes: r.attributes.clone(),
        chunking: chunking(r.chunking_strategy.as_ref())?,
    })
}

/// Attach a file to a vector store
///
/// The file becomes a document of the store and is ingested in the background (poll its
/// `status`). The same file (or the same bytes) again answers the document already there.
#[utoipa::path(post, path = "/vector_stores/{vector_store_id}/files", tag = "vector_stores", params(("vector_store_id" = String, Path, description = "`vs_…`")),
    request_body = AttachRequest,
    responses((status = 200, body = StoreFileObject), (status = 400, description = "`validation_failed`, `vector_store_expired`"),
        (status = 404, description = "`vector_store_not_found`, `file_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn attach_file(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
    body: ValidatedJson<AttachRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let id = store_id(&path).map_err(oe)?;
    let a = attach(&body).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let doc = service.attach(&actor, id, a).await.map_err(oe)?;
    let view = service.store(&actor, id).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(store_file(&view.base, &doc)))
}

/// List a vector store's files
#[utoipa::path(get, path = "/vector_stores/{vector_store_id}/files", tag = "vector_stores", params(("vector_store_id" = String, Path, description = "`vs_…`"), ListQuery),
    responses((status = 200, body = ListResponse<StoreFileObject>), (status = 400, description = "`validation_failed`"), (status = 404, description = "`vector_store_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_store_files(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, OpenAiError> {
    let id = store_id(&path).map_err(oe)?;
    files_page(req, caller, service, id, None, &query).await
}

async fn files_page(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    store: BaseId,
    batch: Option<BatchId>,
    query: &ListQuery,
) -> Result<HttpResponse, OpenAiError> {
    query.only(&["filter"]).map_err(oe)?;
    let window = query.window(FILE).map_err(oe)?;
    let state = query.state().map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let (base, docs, more) = service
        .store_files(&actor, store, batch, state, &window)
        .await
        .map_err(|e| match (batch, e) {
            (Some(_), KnowledgeError::BatchNotFound) => oe(KnowledgeError::BatchNotFound),
            (_, e) => oe(e),
        })?;
    let data = docs.iter().map(|d| store_file(&base, d)).collect();
    Ok(HttpResponse::Ok().json(list(data, more, |f: &StoreFileObject| f.id.clone())))
}

/// Retrieve a vector store's file
#[utoipa::path(get, path = "/vector_stores/{vector_store_id}/files/{file_id}", tag = "vector_stores",
    params(("vector_store_id" = String, Path, description = "`vs_…`"), ("file_id" = String, Path, description = "`file-…`")),
    responses((status = 200, body = StoreFileObject), (status = 404, description = "`vector_store_not_found`, `vector_store_file_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_store_file(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, file, _) = file_path(path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let (base, doc) = service.store_file(&actor, id, file).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(store_file(&base, &doc)))
}

/// New attributes of a store file.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct AttributesRequest {
    /// Up to 16 keys with string, number or boolean values (`null` clears them).
    #[schema(value_type = Option<Object>)]
    pub attributes: Value,
}

/// Update a vector store file's attributes
#[utoipa::path(post, path = "/vector_stores/{vector_store_id}/files/{file_id}", tag = "vector_stores",
    params(("vector_store_id" = String, Path, description = "`vs_…`"), ("file_id" = String, Path, description = "`file-…`")),
    request_body = AttributesRequest,
    responses((status = 200, body = StoreFileObject), (status = 404, description = "`vector_store_not_found`, `vector_store_file_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_store_file(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<(String, String)>,
    body: ValidatedJson<AttributesRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, file, _) = file_path(path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let (base, doc) = service
        .update_store_file(&actor, id, file, &body.attributes)
        .await
        .map_err(oe)?;
    Ok(HttpResponse::Ok().json(store_file(&base, &doc)))
}

/// Remove a file from a vector store
///
/// Its chunks and vectors go; the file stays (delete it with `DELETE /v1/files/{id}`).
#[utoipa::path(delete, path = "/vector_stores/{vector_store_id}/files/{file_id}", tag = "vector_stores",
    params(("vector_store_id" = String, Path, description = "`vs_…`"), ("file_id" = String, Path, description = "`file-…`")),
    responses((status = 200, body = Deleted), (status = 404, description = "`vector_store_not_found`, `vector_store_file_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_store_file(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, file, raw) = file_path(path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    service.detach(&actor, id, file).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(Deleted {
        id: raw,
        object: "vector_store.file.deleted",
        deleted: true,
    }))
}

/// A piece of text.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextContent {
    /// `text`.
    #[serde(rename = "type")]
    #[schema(example = "text")]
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

/// The text of a store file.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileContentPage {
    /// `vector_store.file_content.page`.
    pub object: &'static str,
    /// The text extracted, in one piece.
    pub data: Vec<TextContent>,
    /// Always false.
    pub has_more: bool,
    /// Always null.
    pub next_page: Option<String>,
}

/// Retrieve a vector store file's parsed text
#[utoipa::path(get, path = "/vector_stores/{vector_store_id}/files/{file_id}/content", tag = "vector_stores",
    params(("vector_store_id" = String, Path, description = "`vs_…`"), ("file_id" = String, Path, description = "`file-…`")),
    responses((status = 200, body = FileContentPage), (status = 404, description = "`vector_store_not_found`, `vector_store_file_not_found`"),
        (status = 422, description = "`malformed_document` (its text cannot be read)")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn store_file_content(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, file, _) = file_path(path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let text = service
        .store_file_text(&actor, id, file)
        .await
        .map_err(oe)?;
    Ok(HttpResponse::Ok().json(FileContentPage {
        object: "vector_store.file_content.page",
        data: vec![TextContent { kind: "text", text }],
        has_more: false,
        next_page: None,
    }))
}

// Batches.

/// Files to attach together: `file_ids` (with shared `attributes` and `chunking_strategy`)
/// or `files` (each with its own).
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// `file-…` ids (1 to 500).
    #[schema(max_items = 500)]
    pub file_ids: Option<Vec<String>>,
    /// Each file with its own attributes and chunking (1 to 500).
    #[schema(max_items = 500)]
    pub files: Option<Vec<AttachRequest>>,
    /// Attributes of every file of `file_ids`.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
    /// Chunking of every file of `file_ids`.
    pub chunking_strategy: Option<ChunkingParam>,
}

/// A batch of files.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchObject {
    /// `vsfb_…`.
    pub id: String,
    /// `vector_store.files_batch`.
    #[schema(example = "vector_store.files_batch")]
    pub object: &'static str,
    /// Unix seconds.
    pub created_at: i64,
    /// `vs_…`.
    pub vector_store_id: String,
    /// `in_progress`, `completed`, `cancelled` or `failed`.
    pub status: &'static str,
    /// Its files by state.
    pub file_counts: FileCountsObject,
}

impl From<&BatchView> for BatchObject {
    fn from(v: &BatchView) -> Self {
        Self {
            id: wire(BATCH, v.batch.id.as_uuid()),
            object: "vector_store.files_batch",
            created_at: unix(v.batch.created_at),
            vector_store_id: wire(STORE, v.batch.base_id.as_uuid()),
            status: v.status,
            file_counts: FileCountsObject::from(&v.counts),
        }
    }
}

/// Attach files to a vector store in a batch
///
/// Every file is checked first (none is attached when one is not yours).
#[utoipa::path(post, path = "/vector_stores/{vector_store_id}/file_batches", tag = "vector_stores", params(("vector_store_id" = String, Path, description = "`vs_…`")),
    request_body = BatchRequest,
    responses((status = 200, body = BatchObject), (status = 400, description = "`validation_failed`, `vector_store_expired`"),
        (status = 404, description = "`vector_store_not_found`, `file_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_batch(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
    body: ValidatedJson<BatchRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let id = store_id(&path).map_err(oe)?;
    let b = body.into_inner();
    let files: Vec<Attach> = match (&b.file_ids, &b.files) {
        (Some(ids), None) => {
            let shared = chunking(b.chunking_strategy.as_ref()).map_err(oe)?;
            file_ids(ids)
                .map_err(oe)?
                .into_iter()
                .map(|file_id| Attach {
                    file_id,
                    attributes: b.attributes.clone(),
                    chunking: shared.clone(),
                })
                .collect()
        }
        (None, Some(files)) if b.attributes.is_none() && b.chunking_strategy.is_none() => files
            .iter()
            .map(attach)
            .collect::<Result<_, _>>()
            .map_err(oe)?,
        _ => {
            return Err(oe(InvalidValue::new(
                "file_ids",
                "give `file_ids` (with shared `attributes` and `chunking_strategy`) or `files`, not both",
            )
            .into()));
        }
    };
    actor!(req, caller, ctx, actor);
    let view = service.create_batch(&actor, id, files).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(BatchObject::from(&view)))
}

/// Retrieve a file batch
#[utoipa::path(get, path = "/vector_stores/{vector_store_id}/file_batches/{batch_id}", tag = "vector_stores",
    params(("vector_store_id" = String, Path, description = "`vs_…`"), ("batch_id" = String, Path, description = "`vsfb_…`")),
    responses((status = 200, body = BatchObject), (status = 404, description = "`vector_store_not_found`, `file_batch_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_batch(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, batch) = batch_path(path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let view = service.batch(&actor, id, batch).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(BatchObject::from(&view)))
}

/// Cancel a file batch
///
/// Its files not yet ready stop (at their next step) and are `cancelled`; they never appear in
/// search.
#[utoipa::path(post, path = "/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", tag = "vector_stores",
    params(("vector_store_id" = String, Path, description = "`vs_…`"), ("batch_id" = String, Path, description = "`vsfb_…`")),
    responses((status = 200, body = BatchObject), (status = 404, description = "`vector_store_not_found`, `file_batch_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn cancel_batch(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, batch) = batch_path(path).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let view = service.cancel_batch(&actor, id, batch).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(BatchObject::from(&view)))
}

/// List a file batch's files
#[utoipa::path(get, path = "/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", tag = "vector_stores",
    params(("vector_store_id" = String, Path, description = "`vs_…`"), ("batch_id" = String, Path, description = "`vsfb_…`"), ListQuery),
    responses((status = 200, body = ListResponse<StoreFileObject>), (status = 400, description = "`validation_failed`"),
        (status = 404, description = "`vector_store_not_found`, `file_batch_not_found`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_batch_files(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, batch) = batch_path(path).map_err(oe)?;
    files_page(req, caller, service, id, Some(batch), &query).await
}

// Search.

/// A search of a vector store.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct VectorStoreSearchRequest {
    /// A query, or up to 10 (their hits merged, best score kept).
    #[schema(value_type = Object)]
    pub query: Value,
    /// A comparison (`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `nin` on an attribute) or a
    /// compound (`and`, `or`) filter.
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Value>,
    /// 1 to 50 (default 10).
    #[schema(minimum = 1, maximum = 50)]
    #[serde(default, deserialize_with = "maas_shared::whole::opt_u64")]
    pub max_num_results: Option<u64>,
    /// Ranking.
    pub ranking_options: Option<RankingOptions>,
    /// Accepted; queries are not rewritten (`search_query` echoes them).
    pub rewrite_query: Option<bool>,
}

/// Ranking of a search.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RankingOptions {
    /// `auto`, `default-2024-11-15` or `none`: each ranks with the store's search mode (hybrid
    /// by default); no reranker model runs.
    #[schema(example = "auto")]
    pub ranker: Option<String>,
    /// Hits scoring below are dropped (0 to 1).
    #[schema(minimum = 0, maximum = 1)]
    pub score_threshold: Option<f64>,
}

/// A search hit.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    /// The file's id (`file-…`).
    pub file_id: String,
    /// Its name.
    pub filename: String,
    /// 0 to 1.
    pub score: f32,
    /// Its attributes.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// The chunk's text.
    pub content: Vec<TextContent>,
}

/// Search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    /// `vector_store.search_results.page`.
    pub object: &'static str,
    /// The queries.
    pub search_query: Vec<String>,
    /// Best first.
    pub data: Vec<SearchResult>,
    /// Always false.
    pub has_more: bool,
    /// Always null.
    pub next_page: Option<String>,
}

fn result(hit: Hit) -> SearchResult {
    SearchResult {
        file_id: wire(
            FILE,
            hit.chunk
                .file_id
                .map_or(hit.chunk.document_id.as_uuid(), |f| f.as_uuid()),
        ),
        filename: hit.chunk.file_name,
        score: hit.score,
        attributes: hit.chunk.metadata,
        content: vec![TextContent {
            kind: "text",
            text: hit.chunk.content,
        }],
    }
}

fn search_request(b: &VectorStoreSearchRequest) -> Result<StoreSearch, KnowledgeError> {
    let mut bad = Vec::new();
    let queries: Vec<String> = if let Value::String(q) = &b.query {
        vec![q.clone()]
    } else if let Some(items) = b
        .query
        .as_array()
        .filter(|i| i.iter().all(Value::is_string))
    {
        items
            .iter()
            .filter_map(|q| q.as_str().map(str::to_owned))
            .collect()
    } else {
        bad.push(InvalidValue::new(
            "query",
            "must be a string or a list of strings",
        ));
        Vec::new()
    };
    let filter = match &b.filters {
        None | Some(Value::Null) => None,
        Some(f) => Filter::parse(f).map_err(|e| bad.push(e)).ok(),
    };
    let ranking = b.ranking_options.as_ref();
    if ranking
        .and_then(|r| r.ranker.as_deref())
        .is_some_and(|r| !matches!(r, "auto" | "default-2024-11-15" | "none"))
    {
        bad.push(InvalidValue::new(
            "ranking_options.ranker",
            "must be `auto`, `default-2024-11-15` or `none`",
        ));
    }
    let max_results = b
        .max_num_results
        .map_or(10, |n| u32::try_from(n).unwrap_or(u32::MAX));
    if !bad.is_empty() {
        return Err(KnowledgeError::Invalid(bad));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a score threshold between 0 and 1"
    )]
    let score_threshold = ranking.and_then(|r| r.score_threshold).map(|t| t as f32);
    Ok(StoreSearch {
        queries,
        filter,
        max_results,
        score_threshold,
    })
}

/// Search a vector store
///
/// The best chunks for the query (embedded as the caller, metered to you), with their file and
/// attributes. Filters apply to the files' attributes (and `file_name`, `kind`).
#[utoipa::path(post, path = "/vector_stores/{vector_store_id}/search", tag = "vector_stores", params(("vector_store_id" = String, Path, description = "`vs_…`")),
    request_body = VectorStoreSearchRequest,
    responses((status = 200, body = SearchPage), (status = 400, description = "`validation_failed`, `vector_store_expired`"),
        (status = 404, description = "`vector_store_not_found`"), (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`, `quota_exceeded`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn search(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<VectorStores>,
    path: web::Path<String>,
    body: ValidatedJson<VectorStoreSearchRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let id = store_id(&path).map_err(oe)?;
    let search = search_request(&body).map_err(oe)?;
    actor!(req, caller, ctx, actor);
    let hits = service.search(&actor, id, &search).await.map_err(oe)?;
    Ok(HttpResponse::Ok().json(SearchPage {
        object: "vector_store.search_results.page",
        search_query: search.queries,
        data: hits.into_iter().map(result).collect(),
        has_more: false,
        next_page: None,
    }))
}

#[cfg(test)]
mod tests {
    use maas_shared::error::Classify as _;

    use super::*;

    #[test]
    fn wire_ids_round_trip_and_refuse_other_prefixes() {
        let id = uuid::Uuid::now_v7();
        let w = wire(STORE, id);
        assert!(w.starts_with("vs_") && w.len() == 35);
        assert_eq!(unwire(STORE, &w), Some(id));
        assert_eq!(unwire(FILE, &w), None);
        assert_eq!(unwire(STORE, "vs_nothex"), None);
        assert_eq!(
            oe(KnowledgeError::BaseNotFound).code(),
            "vector_store_not_found"
        );
        assert_eq!(KnowledgeError::FileNotFound.code(), "file_not_found");
    }
}
