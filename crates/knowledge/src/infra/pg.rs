//! PostgreSQL: bases, documents, chunks and vectors (the record), and full-text search over
//! the chunks' terms (`tsvector` of the `simple` configuration: words, and CJK character pairs
//! made by [`search_text`]).

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::UserId;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, SqlErr, Statement,
    TransactionTrait, Value,
};
use serde_json::{Map, json};
use std::sync::Arc;

use crate::domain::base::{
    BaseId, Chunking, ChunkingStrategy, Embedding, KnowledgeBase, Retrieval, SearchMode,
};
use crate::domain::document::{Chunk, Document, DocumentId, DocumentKind, DocumentStatus};
use crate::domain::errors::KnowledgeError;
use crate::domain::ports::{
    BaseRepository, ChunkView, DocumentRepository, Inserted, Point, TextHit,
};
use crate::domain::store::{FileId, Filter, Op};
use crate::domain::text::search_text;

pub(crate) fn stmt(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn corrupt(table: &str, id: uuid::Uuid, what: &str) -> KnowledgeError {
    KnowledgeError::Unexpected(anyhow::anyhow!("stored {table} row {id} has a bad {what}"))
}

fn base_write_error(err: DbErr) -> KnowledgeError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => KnowledgeError::NameTaken,
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => KnowledgeError::BaseNotFound,
        _ => {
            KnowledgeError::Unexpected(anyhow::Error::new(err).context("writing a knowledge base"))
        }
    }
}

/// Vectors as stored: little-endian `f32`s.
/// A filter as SQL over `m` (a document's attributes as `jsonb`), its keys and values bound
/// as parameters after `values`.
fn filter_sql(filter: &Filter, values: &mut Vec<Value>) -> String {
    let mut bind = |v: Value| {
        values.push(v);
        format!("${}", values.len())
    };
    match filter {
        Filter::All(parts) | Filter::Any(parts) if parts.is_empty() => {
            if matches!(filter, Filter::All(_)) {
                "TRUE"
            } else {
                "FALSE"
            }
            .to_owned()
        }
        Filter::All(parts) | Filter::Any(parts) => {
            let glue = if matches!(filter, Filter::All(_)) {
                " AND "
            } else {
                " OR "
            };
            let sql: Vec<String> = parts.iter().map(|p| filter_sql(p, values)).collect();
            format!("({})", sql.join(glue))
        }
        Filter::Compare { key, op, value } => {
            let k = bind(key.clone().into());
            let v = bind(value.clone().into());
            let attr = format!("(m -> {k})");
            let compare = |sym: &str| {
                if value.is_number() {
                    format!(
                        "(jsonb_typeof({attr}) = 'number' AND (m ->> {k})::float8 {sym} ({v}::jsonb #>> '{{}}')::float8)"
                    )
                } else {
                    format!(
                        "(jsonb_typeof({attr}) = 'string' AND (m ->> {k}) COLLATE \"C\" {sym} ({v}::jsonb #>> '{{}}') COLLATE \"C\")"
                    )
                }
            };
            match op {
                Op::Eq => format!("({attr} = {v}::jsonb)"),
                Op::Ne => format!("({attr} IS DISTINCT FROM {v}::jsonb)"),
                Op::Gt => compare(">"),
                Op::Gte => compare(">="),
                Op::Lt => compare("<"),
                Op::Lte => compare("<="),
                Op::In => {
                    format!("({attr} IS NOT NULL AND {v}::jsonb @> jsonb_build_array({attr}))")
                }
                Op::Nin => {
                    format!("({attr} IS NULL OR NOT {v}::jsonb @> jsonb_build_array({attr}))")
                }
            }
        }
    }
}

pub(crate) fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// Reads a stored vector.
pub(crate) fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

pub(crate) fn ids_json(ids: &[uuid::Uuid]) -> Value {
    Value::Json(Some(Box::new(json!(ids))))
}

fn opt_ids_json(ids: Option<&[DocumentId]>) -> Value {
    match ids {
        Some(ids) => Value::Json(Some(Box::new(json!(
            ids.iter().map(DocumentId::as_uuid).collect::<Vec<_>>()
        )))),
        None => Value::Json(None),
    }
}

pub(crate) const BASE_COLUMNS: &str = "id, owner_id, name, description, embedding_model, generation, dims, next_model, next_generation, next_dims, chunking, retrieval, index_version, created_at, updated_at";

#[derive(FromQueryResult)]
pub(crate) struct BaseRow {
    id: uuid::Uuid,
    owner_id: uuid::Uuid,
    name: String,
    description: String,
    embedding_model: String,
    generation: i32,
    dims: Option<i32>,
    next_model: Option<String>,
    next_generation: Option<i32>,
    next_dims: Option<i32>,
    chunking: serde_json::Value,
    retrieval: serde_json::Value,
    index_version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn chunking_json(c: &Chunking) -> serde_json::Value {
    json!({"strategy": c.strategy.as_str(), "size": c.size, "overlap": c.overlap, "separators": c.separators})
}

/// Reads stored chunking settings.
fn chunking_of(c: &serde_json::Value) -> Option<Chunking> {
    Some(Chunking {
        strategy: c["strategy"].as_str().and_then(ChunkingStrategy::parse)?,
        size: c["size"].as_u64().and_then(|v| u32::try_from(v).ok())?,
        overlap: c["overlap"].as_u64().and_then(|v| u32::try_from(v).ok())?,
        separators: serde_json::from_value(c["separators"].clone()).ok()?,
    })
}

fn retrieval_json(r: &Retrieval) -> serde_json::Value {
    json!({"mode": r.mode.as_str(), "top_k": r.top_k, "score_threshold": r.score_threshold, "vector_weight": r.vector_weight})
}

fn dims(raw: Option<i32>) -> Option<u32> {
    raw.and_then(|d| u32::try_from(d).ok())
}

impl TryFrom<BaseRow> for KnowledgeBase {
    type Error = KnowledgeError;

    fn try_from(r: BaseRow) -> Result<Self, Self::Error> {
        let bad = |what| corrupt("knowledge_bases", r.id, what);
        let chunking = chunking_of(&r.chunking).ok_or_else(|| bad("chunking"))?;
        let q = &r.retrieval;
        let retrieval = Retrieval {
            mode: q["mode"]
                .as_str()
                .and_then(SearchMode::parse)
                .ok_or_else(|| bad("retrieval"))?,
            top_k: q["top_k"]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad("retrieval"))?,
            score_threshold: serde_json::from_value(q["score_threshold"].clone())
                .map_err(|_| bad("retrieval"))?,
            vector_weight: serde_json::from_value(q["vector_weight"].clone())
                .map_err(|_| bad("retrieval"))?,
        };
        let next = match (r.next_model, r.next_generation) {
            (Some(model), Some(generation)) => Some(Embedding {
                model,
                generation,
                dims: dims(r.next_dims),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => return Err(bad("next model")),
        };
        Ok(Self {
            id: BaseId::from_uuid(r.id),
            owner: UserId::from_uuid(r.owner_id),
            name: r.name,
            description: r.description,
            embedding: Embedding {
                model: r.embedding_model,
                generation: r.generation,
                dims: dims(r.dims),
            },
            next,
            chunking,
            retrieval,
            index_version: r.index_version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Bases in PostgreSQL.
#[derive(Clone)]
pub struct PgBases {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl PgBases {
    /// The repository over `db`.
    #[must_use]
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

fn i32_of(v: Option<u32>) -> Value {
    v.and_then(|d| i32::try_from(d).ok()).into()
}

#[async_trait]
impl BaseRepository for PgBases {
    async fn insert(
        &self,
        base: &KnowledgeBase,
        audit: NewAuditEvent,
    ) -> Result<(), KnowledgeError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        txn.execute(stmt(
            &format!("INSERT INTO knowledge_bases ({BASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL, $8, $9, 0, $10, $10)"),
            [
                base.id.as_uuid().into(),
                base.owner.as_uuid().into(),
                base.name.clone().into(),
                base.description.clone().into(),
                base.embedding.model.clone().into(),
                base.embedding.generation.into(),
                i32_of(base.embedding.dims),
                chunking_json(&base.chunking).into(),
                retrieval_json(&base.retrieval).into(),
                base.created_at.into(),
            ],
        ))
        .await
        .map_err(base_write_error)?;
        maas_shared::audit_pg::insert(&txn, audit, base.created_at).await?;
        txn.commit().await.context("committing")?;
        Ok(())
    }

    async fn get(&self, id: BaseId) -> Result<Option<KnowledgeBase>, KnowledgeError> {
        BaseRow::find_by_statement(stmt(
            &format!("SELECT {BASE_COLUMNS} FROM knowledge_bases WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a knowledge base")?
        .map(KnowledgeBase::try_from)
        .transpose()
    }

    async fn list(
        &self,
        owner: UserId,
        page: &PageRequest,
    ) -> Result<Page<KnowledgeBase>, KnowledgeError> {
        let rows = BaseRow::find_by_statement(stmt(
            &format!("SELECT {BASE_COLUMNS} FROM knowledge_bases WHERE owner_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"),
            [
                owner.as_uuid().into(),
                page.after().map(maas_shared::paging::Cursor::id).into(),
                i64::from(page.limit() + 1).into(),
            ],
        ))
        .all(&self.db)
        .await
        .context("listing knowledge bases")?;
        let bases = rows
            .into_iter()
            .map(KnowledgeBase::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(bases, page, |b| b.id.as_uuid()))
    }

    async fn update(
        &self,
        base: &KnowledgeBase,
        audit: NewAuditEvent,
    ) -> Result<(), KnowledgeError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "UPDATE knowledge_bases SET name = $2, description = $3, retrieval = $4, next_model = $5, next_generation = $6, updated_at = $7 WHERE id = $1",
                [
                    base.id.as_uuid().into(),
                    base.name.clone().into(),
                    base.description.clone().into(),
                    retrieval_json(&base.retrieval).into(),
                    base.next.as_ref().map(|n| n.model.clone()).into(),
                    base.next.as_ref().map(|n| n.generation).into(),
                    base.updated_at.into(),
                ],
            ))
            .await
            .map_err(base_write_error)?;
        if done.rows_affected() == 0 {
            return Err(KnowledgeError::BaseNotFound);
        }
        maas_shared::audit_pg::insert(&txn, audit, base.updated_at).await?;
        txn.commit().await.context("committing")?;
        Ok(())
    }

    async fn delete(
        &self,
        id: BaseId,
        audit: NewAuditEvent,
    ) -> Result<Vec<String>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Key {
            storage_key: String,
        }
        let txn = self.db.begin().await.context("starting a transaction")?;
        let keys = Key::find_by_statement(stmt(
            "SELECT storage_key FROM knowledge_documents WHERE base_id = $1",
            [id.as_uuid().into()],
        ))
        .all(&txn)
        .await
        .context("reading a base's documents")?;
        let done = txn
            .execute(stmt(
                "DELETE FROM knowledge_bases WHERE id = $1",
                [id.as_uuid().into()],
            ))
            .await
            .context("deleting a knowledge base")?;
        if done.rows_affected() == 0 {
            return Err(KnowledgeError::BaseNotFound);
        }
        maas_shared::audit_pg::insert(&txn, audit, self.clock.now()).await?;
        txn.commit().await.context("committing")?;
        Ok(keys.into_iter().map(|k| k.storage_key).collect())
    }

    async fn set_dims(
        &self,
        id: BaseId,
        generation: i32,
        dims: u32,
    ) -> Result<Option<u32>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Dims {
            dims: Option<i32>,
        }
        let d = i32::try_from(dims).unwrap_or(i32::MAX);
        let row = Dims::find_by_statement(stmt(
            "UPDATE knowledge_bases SET
                 dims = CASE WHEN generation = $2 THEN COALESCE(dims, $3) ELSE dims END,
                 next_dims = CASE WHEN next_generation = $2 THEN COALESCE(next_dims, $3) ELSE next_dims END
             WHERE id = $1
             RETURNING CASE WHEN generation = $2 THEN dims WHEN next_generation = $2 THEN next_dims END AS dims",
            [id.as_uuid().into(), generation.into(), d.into()],
        ))
        .one(&self.db)
        .await
        .context("storing a base's vector dimension")?;
        Ok(row.and_then(|r| self::dims(r.dims)))
    }

    async fn switch(&self, id: BaseId, generation: i32) -> Result<bool, KnowledgeError> {
        let done = self
            .db
            .execute(stmt(
                "UPDATE knowledge_bases SET embedding_model = next_model, generation = next_generation, dims = next_dims,
                     next_model = NULL, next_generation = NULL, next_dims = NULL, index_version = index_version + 1, updated_at = $3
                 WHERE id = $1 AND next_generation = $2",
                [id.as_uuid().into(), generation.into(), self.clock.now().into()],
            ))
            .await
            .context("switching a base's embedding model")?;
        Ok(done.rows_affected() == 1)
    }
}

pub(crate) const DOC_COLUMNS: &str = "id, base_id, owner_id, file_name, kind, bytes, content_hash, storage_key, status, error, chunks, tokens, metadata, file_id, chunking, created_at, updated_at";

#[derive(FromQueryResult)]
pub(crate) struct DocRow {
    id: uuid::Uuid,
    base_id: uuid::Uuid,
    owner_id: uuid::Uuid,
    file_name: String,
    kind: String,
    bytes: i64,
    content_hash: String,
    storage_key: String,
    status: String,
    error: Option<String>,
    chunks: i32,
    tokens: i64,
    metadata: serde_json::Value,
    file_id: Option<uuid::Uuid>,
    chunking: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DocRow> for Document {
    type Error = KnowledgeError;

    fn try_from(r: DocRow) -> Result<Self, Self::Error> {
        let bad = |what| corrupt("knowledge_documents", r.id, what);
        Ok(Self {
            id: DocumentId::from_uuid(r.id),
            base_id: BaseId::from_uuid(r.base_id),
            owner: UserId::from_uuid(r.owner_id),
            file_name: r.file_name,
            kind: DocumentKind::parse(&r.kind).ok_or_else(|| bad("kind"))?,
            bytes: u64::try_from(r.bytes).map_err(|_| bad("size"))?,
            content_hash: r.content_hash,
            storage_key: r.storage_key,
            status: DocumentStatus::parse(&r.status).ok_or_else(|| bad("status"))?,
            error: r.error,
            chunks: u32::try_from(r.chunks).map_err(|_| bad("chunk count"))?,
            tokens: u64::try_from(r.tokens).map_err(|_| bad("token count"))?,
            metadata: if let serde_json::Value::Object(m) = r.metadata {
                m
            } else {
                return Err(bad("metadata"));
            },
            file_id: r.file_id.map(FileId::from_uuid),
            chunking: match &r.chunking {
                Some(c) => Some(chunking_of(c).ok_or_else(|| bad("chunking"))?),
                None => None,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromQueryResult)]
struct ViewRow {
    id: uuid::Uuid,
    document_id: uuid::Uuid,
    file_name: String,
    file_id: Option<uuid::Uuid>,
    position: i32,
    content: String,
    metadata: serde_json::Value,
}

impl From<ViewRow> for ChunkView {
    fn from(r: ViewRow) -> Self {
        Self {
            id: r.id,
            document_id: DocumentId::from_uuid(r.document_id),
            file_name: r.file_name,
            file_id: r.file_id.map(FileId::from_uuid),
            position: u32::try_from(r.position).unwrap_or_default(),
            content: r.content,
            metadata: if let serde_json::Value::Object(m) = r.metadata {
                m
            } else {
                Map::new()
            },
        }
    }
}

#[derive(FromQueryResult)]
struct ChunkRow {
    id: uuid::Uuid,
    document_id: uuid::Uuid,
    position: i32,
    content: String,
    tokens: i32,
}

#[derive(FromQueryResult)]
struct PointRow {
    chunk_id: uuid::Uuid,
    document_id: uuid::Uuid,
    vector: Vec<u8>,
}

/// Reads stored points.
pub(crate) fn points_of(
    rows: Vec<(uuid::Uuid, uuid::Uuid, Vec<u8>)>,
) -> Result<Vec<Point>, KnowledgeError> {
    rows.into_iter()
        .map(|(chunk, document, bytes)| {
            Ok(Point {
                chunk,
                document: DocumentId::from_uuid(document),
                vector: decode_vector(&bytes)
                    .ok_or_else(|| corrupt("knowledge_vectors", chunk, "vector"))?,
            })
        })
        .collect()
}

/// Documents, chunks and vectors in PostgreSQL.
#[derive(Clone)]
pub struct PgDocuments {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl PgDocuments {
    /// The repository over `db`.
    #[must_use]
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    async fn doc(&self, sql: &str, values: Vec<Value>) -> Result<Option<Document>, KnowledgeError> {
        DocRow::find_by_statement(stmt(sql, values))
            .one(&self.db)
            .await
            .context("reading a document")?
            .map(Document::try_from)
            .transpose()
    }
}

#[async_trait]
impl DocumentRepository for PgDocuments {
    async fn insert(&self, d: &Document) -> Result<Inserted, KnowledgeError> {
        let inserted = self
            .doc(
                &format!(
                    "INSERT INTO knowledge_documents ({DOC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, 0, 0, $10, $12, $13, $11, $11)
                     ON CONFLICT (base_id, content_hash) DO NOTHING RETURNING {DOC_COLUMNS}"
                ),
                vec![
                    d.id.as_uuid().into(),
                    d.base_id.as_uuid().into(),
                    d.owner.as_uuid().into(),
                    d.file_name.clone().into(),
                    d.kind.as_str().into(),
                    i64::try_from(d.bytes).unwrap_or(i64::MAX).into(),
                    d.content_hash.clone().into(),
                    d.storage_key.clone().into(),
                    d.status.as_str().into(),
                    serde_json::Value::Object(d.metadata.clone()).into(),
                    d.created_at.into(),
                    d.file_id.map(|f| f.as_uuid()).into(),
                    d.chunking.as_ref().map(chunking_json).into(),
                ],
            )
            .await
            .map_err(|e| {
                let missing_base = matches!(&e, KnowledgeError::Unexpected(err)
                    if err
                        .downcast_ref::<DbErr>()
                        .and_then(DbErr::sql_err)
                        .is_some_and(|s| matches!(s, SqlErr::ForeignKeyConstraintViolation(_))));
                if missing_base { KnowledgeError::BaseNotFound } else { e }
            })?;
        if let Some(doc) = inserted {
            return Ok(Inserted::New(doc));
        }
        self.doc(
            &format!("SELECT {DOC_COLUMNS} FROM knowledge_documents WHERE base_id = $1 AND content_hash = $2"),
            vec![d.base_id.as_uuid().into(), d.content_hash.clone().into()],
        )
        .await?
        .map(Inserted::Duplicate)
        .ok_or(KnowledgeError::BaseNotFound)
    }

    async fn get(&self, id: DocumentId) -> Result<Option<Document>, KnowledgeError> {
        self.doc(
            &format!("SELECT {DOC_COLUMNS} FROM knowledge_documents WHERE id = $1"),
            vec![id.as_uuid().into()],
        )
        .await
    }

    async fn list(
        &self,
        base: BaseId,
        page: &PageRequest,
    ) -> Result<Page<Document>, KnowledgeError> {
        let rows = DocRow::find_by_statement(stmt(
            &format!("SELECT {DOC_COLUMNS} FROM knowledge_documents WHERE base_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"),
            [
                base.as_uuid().into(),
                page.after().map(maas_shared::paging::Cursor::id).into(),
                i64::from(page.limit() + 1).into(),
            ],
        ))
        .all(&self.db)
        .await
        .context("listing documents")?;
        let docs = rows
            .into_iter()
            .map(Document::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(docs, page, |d| d.id.as_uuid()))
    }

    async fn delete(&self, id: DocumentId) -> Result<Option<Document>, KnowledgeError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let doc = DocRow::find_by_statement(stmt(
            &format!("DELETE FROM knowledge_documents WHERE id = $1 RETURNING {DOC_COLUMNS}"),
            [id.as_uuid().into()],
        ))
        .one(&txn)
        .await
        .context("deleting a document")?
        .map(Document::try_from)
        .transpose()?;
        if let Some(d) = &doc {
            txn.execute(stmt(
                "UPDATE knowledge_bases SET index_version = index_version + 1 WHERE id = $1",
                [d.base_id.as_uuid().into()],
            ))
            .await
            .context("bumping the index version")?;
        }
        txn.commit().await.context("committing")?;
        Ok(doc)
    }

    async fn claim(
        &self,
        id: DocumentId,
        worker: uuid::Uuid,
        lease: Duration,
    ) -> Result<bool, KnowledgeError> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(1));
        let done = self
            .db
            .execute(stmt(
                "UPDATE knowledge_documents SET lease_owner = $2, lease_until = $3
                 WHERE id = $1 AND status NOT IN ('failed', 'cancelled') AND (lease_owner = $2 OR lease_until IS NULL OR lease_until < $4)",
                [id.as_uuid().into(), worker.into(), until.into(), now.into()],
            ))
            .await
            .context("claiming a document")?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(
        &self,
        id: DocumentId,
        worker: uuid::Uuid,
        not_before: Option<DateTime<Utc>>,
    ) -> Result<(), KnowledgeError> {
        self.db
            .execute(stmt(
                "UPDATE knowledge_documents SET lease_owner = NULL, lease_until = $3 WHERE id = $1 AND lease_owner = $2",
                [id.as_uuid().into(), worker.into(), not_before.into()],
            ))
            .await
            .context("releasing a document")?;
        Ok(())
    }

    async fn set_status(
        &self,
        id: DocumentId,
        status: DocumentStatus,
        error: Option<&str>,
    ) -> Result<bool, KnowledgeError> {
        let terminal = status.is_terminal();
        let done = self
            .db
            .execute(stmt(
                "UPDATE knowledge_documents SET status = $2, error = $3, updated_at = $4,
                     lease_owner = CASE WHEN $5 THEN NULL ELSE lease_owner END,
                     lease_until = CASE WHEN $5 THEN NULL ELSE lease_until END
                 WHERE id = $1 AND status NOT IN ('ready', 'failed', 'cancelled')",
                [
                    id.as_uuid().into(),
                    status.as_str().into(),
                    error.map(str::to_owned).into(),
                    self.clock.now().into(),
                    terminal.into(),
                ],
            ))
            .await
            .context("moving a document on")?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish(&self, id: DocumentId, chunks: u32) -> Result<(), KnowledgeError> {
        self.db
            .execute(stmt(
                "UPDATE knowledge_documents SET status = 'ready', error = NULL, chunks = $2, updated_at = $3, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND status NOT IN ('ready', 'failed', 'cancelled')",
                [
                    id.as_uuid().into(),
                    i32::try_from(chunks).unwrap_or(i32::MAX).into(),
                    self.clock.now().into(),
                ],
            ))
            .await
            .context("finishing a document")?;
        Ok(())
    }

    async fn unfinished(&self, base: BaseId, generation: i32) -> Result<u64, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let row = Count::find_by_statement(stmt(
            "SELECT count(*) AS n FROM knowledge_documents d
             WHERE d.base_id = $1 AND d.status NOT IN ('failed', 'cancelled') AND (d.status <> 'ready' OR EXISTS (
                 SELECT 1 FROM knowledge_chunks c
                 WHERE c.document_id = d.id
                   AND NOT EXISTS (SELECT 1 FROM knowledge_vectors v WHERE v.chunk_id = c.id AND v.generation = $2)))",
            [base.as_uuid().into(), generation.into()],
        ))
        .one(&self.db)
        .await
        .context("counting unfinished documents")?;
        Ok(row.map_or(0, |r| u64::try_from(r.n).unwrap_or(0)))
    }

    async fn save_chunks(
        &self,
        document: &Document,
        chunks: &[Chunk],
    ) -> Result<(), KnowledgeError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        for batch in chunks.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO knowledge_chunks (id, document_id, base_id, owner_id, position, content, tokens, terms) VALUES ",
            );
            let mut values: Vec<Value> = Vec::with_capacity(batch.len() * 6 + 2);
            values.push(document.base_id.as_uuid().into());
            values.push(document.owner.as_uuid().into());
            for (i, c) in batch.iter().enumerate() {
                let n = 3 + i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, $1, $2, ${}, ${}, ${}, to_tsvector('simple', ${}))",
                    n,
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5
                ));
                values.push(c.id.into());
                values.push(c.document_id.as_uuid().into());
                values.push(i32::try_from(c.position).unwrap_or(i32::MAX).into());
                values.push(c.content.clone().into());
                values.push(i32::try_from(c.tokens).unwrap_or(i32::MAX).into());
                values.push(search_text(&c.content).into());
            }
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            txn.execute(stmt(&sql, values))
                .await
                .context("storing chunks")?;
        }
        txn.commit().await.context("committing")?;
        Ok(())
    }

    async fn chunk_count(&self, id: DocumentId) -> Result<u32, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let row = Count::find_by_statement(stmt(
            "SELECT count(*) AS n FROM knowledge_chunks WHERE document_id = $1",
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("counting chunks")?;
        Ok(row.map_or(0, |r| u32::try_from(r.n).unwrap_or(u32::MAX)))
    }

    async fn unembedded(
        &self,
        id: DocumentId,
        generation: i32,
        limit: u32,
    ) -> Result<Vec<Chunk>, KnowledgeError> {
        let rows = ChunkRow::find_by_statement(stmt(
            "SELECT c.id, c.document_id, c.position, c.content, c.tokens FROM knowledge_chunks c
             WHERE c.document_id = $1
               AND NOT EXISTS (SELECT 1 FROM knowledge_vectors v WHERE v.chunk_id = c.id AND v.generation = $2)
             ORDER BY c.position LIMIT $3",
            [id.as_uuid().into(), generation.into(), i64::from(limit).into()],
        ))
        .all(&self.db)
        .await
        .context("reading chunks to embed")?;
        Ok(rows
            .into_iter()
            .map(|r| Chunk {
                id: r.id,
                document_id: DocumentId::from_uuid(r.document_id),
                position: u32::try_from(r.position).unwrap_or_default(),
                content: r.content,
                tokens: u32::try_from(r.tokens).unwrap_or_default(),
            })
            .collect())
    }

    async fn save_vectors(
        &self,
        document: &Document,
        generation: i32,
        points: &[Point],
        tokens: u64,
    ) -> Result<(), KnowledgeError> {
        if points.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await.context("starting a transaction")?;
        let mut sql = String::from(
            "INSERT INTO knowledge_vectors (chunk_id, generation, base_id, owner_id, document_id, vector) VALUES ",
        );
        let mut values: Vec<Value> = vec![
            generation.into(),
            document.base_id.as_uuid().into(),
            document.owner.as_uuid().into(),
            document.id.as_uuid().into(),
        ];
        for (i, p) in points.iter().enumerate() {
            let n = 5 + i * 2;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("(${n}, $1, $2, $3, $4, ${})", n + 1));
            values.push(p.chunk.into());
            values.push(encode_vector(&p.vector).into());
        }
        sql.push_str(" ON CONFLICT (chunk_id, generation) DO NOTHING");
        let inserted = txn
            .execute(stmt(&sql, values))
            .await
            .context("storing vectors")?;
        // Tokens count once: only when this call stored the vectors (a replay stores none).
        if inserted.rows_affected() > 0 {
            txn.execute(stmt(
                "UPDATE knowledge_documents SET tokens = tokens + $2, updated_at = $3 WHERE id = $1",
                [
                    document.id.as_uuid().into(),
                    i64::try_from(tokens).unwrap_or(i64::MAX).into(),
                    self.clock.now().into(),
                ],
            ))
            .await
            .context("counting tokens")?;
        }
        txn.commit().await.context("committing")?;
        Ok(())
    }

    async fn points(
        &self,
        base: BaseId,
        document: Option<DocumentId>,
        generation: i32,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<Point>, KnowledgeError> {
        let rows = PointRow::find_by_statement(stmt(
            "SELECT chunk_id, document_id, vector FROM knowledge_vectors
             WHERE base_id = $1 AND generation = $2 AND ($3::uuid IS NULL OR document_id = $3) AND ($4::uuid IS NULL OR chunk_id > $4)
             ORDER BY chunk_id LIMIT $5",
            [
                base.as_uuid().into(),
                generation.into(),
                document.map(|d| d.as_uuid()).into(),
                after.into(),
                i64::from(limit).into(),
            ],
        ))
        .all(&self.db)
        .await
        .context("reading vectors")?;
        points_of(
            rows.into_iter()
                .map(|r| (r.chunk_id, r.document_id, r.vector))
                .collect(),
        )
    }

    async fn drop_generations(&self, base: BaseId, keep: i32) -> Result<(), KnowledgeError> {
        self.db
            .execute(stmt(
                "DELETE FROM knowledge_vectors WHERE base_id = $1 AND generation <> $2",
                [base.as_uuid().into(), keep.into()],
            ))
            .await
            .context("dropping old vectors")?;
        Ok(())
    }

    async fn matching(
        &self,
        base: BaseId,
        filter: &Filter,
    ) -> Result<Vec<DocumentId>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Id {
            id: uuid::Uuid,
        }
        let mut values = vec![base.as_uuid().into()];
        let condition = filter_sql(filter, &mut values);
        let rows = Id::find_by_statement(stmt(
            &format!(
                "SELECT id FROM (
                     SELECT id, metadata || jsonb_build_object('file_name', file_name, 'kind', kind) AS m
                     FROM knowledge_documents WHERE base_id = $1
                 ) d WHERE {condition}"
            ),
            values,
        ))
        .all(&self.db)
        .await
        .context("filtering documents")?;
        Ok(rows
            .into_iter()
            .map(|r| DocumentId::from_uuid(r.id))
            .collect())
    }

    async fn fulltext(
        &self,
        owner: UserId,
        base: BaseId,
        terms: &[String],
        documents: Option<&[DocumentId]>,
        limit: u32,
    ) -> Result<Vec<TextHit>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Row {
            id: uuid::Uuid,
            score: f32,
        }
        let rows = Row::find_by_statement(stmt(
            "WITH q AS (SELECT to_tsquery('simple', string_agg(quote_literal(t), ' | ')) AS q FROM jsonb_array_elements_text($3::jsonb) t)
             SELECT c.id, ts_rank_cd(c.terms, q.q, 32)::real AS score
             FROM knowledge_chunks c
             JOIN knowledge_documents d ON d.id = c.document_id AND d.status = 'ready'
             CROSS JOIN q
             WHERE c.base_id = $1 AND c.owner_id = $2 AND c.terms @@ q.q
               AND ($4::jsonb IS NULL OR c.document_id IN (SELECT (jsonb_array_elements_text($4::jsonb))::uuid))
             ORDER BY score DESC, c.id LIMIT $5",
            [
                base.as_uuid().into(),
                owner.as_uuid().into(),
                json!(terms).into(),
                opt_ids_json(documents),
                i64::from(limit).into(),
            ],
        ))
        .all(&self.db)
        .await
        .context("searching the full text")?;
        Ok(rows
            .into_iter()
            .map(|r| TextHit {
                chunk: r.id,
                score: r.score,
            })
            .collect())
    }

    async fn views(
        &self,
        owner: UserId,
        base: BaseId,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<ChunkView>, KnowledgeError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = ViewRow::find_by_statement(stmt(
            "SELECT c.id, c.document_id, d.file_name, d.file_id, c.position, c.content, d.metadata
             FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id AND d.status = 'ready'
             WHERE c.base_id = $1 AND c.owner_id = $2 AND c.id IN (SELECT (jsonb_array_elements_text($3::jsonb))::uuid)",
            [base.as_uuid().into(), owner.as_uuid().into(), ids_json(ids)],
        ))
        .all(&self.db)
        .await
        .context("reading chunks")?;
        Ok(rows.into_iter().map(ChunkView::from).collect())
    }

    async fn chunks(
        &self,
        id: DocumentId,
        page: &PageRequest,
    ) -> Result<Vec<ChunkView>, KnowledgeError> {
        let after = page.after().map(maas_shared::paging::Cursor::id);
        // Chunks page by position; a cursor is the last chunk's id, whose position is looked up.
        let rows = ViewRow::find_by_statement(stmt(
            "SELECT c.id, c.document_id, d.file_name, d.file_id, c.position, c.content, d.metadata
             FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
             WHERE c.document_id = $1
               AND ($2::uuid IS NULL OR c.position > (SELECT position FROM knowledge_chunks WHERE id = $2))
             ORDER BY c.position LIMIT $3",
            [
                id.as_uuid().into(),
                after.into(),
                i64::from(page.limit()).into(),
            ],
        ))
        .all(&self.db)
        .await
        .context("reading a document's chunks")?;
        Ok(rows.into_iter().map(ChunkView::from).collect())
    }

    async fn stalled(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DocumentId>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Id {
            id: uuid::Uuid,
        }
        let rows = Id::find_by_statement(stmt(
            "SELECT d.id FROM knowledge_documents d
             WHERE (d.lease_until IS NULL OR d.lease_until < $2) AND (
                 (d.status NOT IN ('ready', 'failed', 'cancelled') AND d.updated_at < $1)
                 -- A ready document whose base changes model and that still lacks vectors of
                 -- the new generation (its worker died while re-embedding it).
                 OR (d.status = 'ready' AND EXISTS (
                     SELECT 1 FROM knowledge_bases b
                     WHERE b.id = d.base_id AND b.next_generation IS NOT NULL AND b.updated_at < $1
                       AND EXISTS (SELECT 1 FROM knowledge_chunks c WHERE c.document_id = d.id
                           AND NOT EXISTS (SELECT 1 FROM knowledge_vectors v WHERE v.chunk_id = c.id AND v.generation = b.next_generation)))))
             ORDER BY d.updated_at LIMIT $3",
            [before.into(), self.clock.now().into(), i64::from(limit).into()],
        ))
        .all(&self.db)
        .await
        .context("finding stalled documents")?;
        Ok(rows
            .into_iter()
            .map(|r| DocumentId::from_uuid(r.id))
            .collect())
    }

    async fn ids(&self, base: BaseId) -> Result<Vec<DocumentId>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Id {
            id: uuid::Uuid,
        }
        let rows = Id::find_by_statement(stmt(
            "SELECT id FROM knowledge_documents WHERE base_id = $1 ORDER BY id",
            [base.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("listing a base's documents")?;
        Ok(rows
            .into_iter()
            .map(|r| DocumentId::from_uuid(r.id))
            .collect())
    }
}
