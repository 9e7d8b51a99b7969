//! PostgreSQL: what OpenAI's vector-store API adds to bases (files, store settings, batches)
//! and its lists, windowed by time-ordered id in either order.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_user::contract::UserId;
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, TransactionTrait, Value};
use serde_json::Map;

use super::pg::{BASE_COLUMNS, BaseRow, DOC_COLUMNS, DocRow, ids_json, stmt};
use crate::domain::base::{BaseId, KnowledgeBase};
use crate::domain::document::{Document, DocumentId, DocumentStatus};
use crate::domain::errors::KnowledgeError;
use crate::domain::ports::StoreRepository;
use crate::domain::store::{
    BatchId, FileBatch, FileCounts, FileId, FileState, Order, StoreSettings, StoredFile, Window,
};

/// Files, store settings and batches in PostgreSQL.
#[derive(Clone)]
pub struct PgStores {
    db: DatabaseConnection,
}

impl PgStores {
    /// The repository over `db`.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// The `WHERE` terms (after `AND`) and `ORDER BY … LIMIT …` of a window, its ids bound after
/// `values`.
fn window_sql(window: &Window, values: &mut Vec<Value>) -> (String, String) {
    let (after_op, before_op) = match window.order {
        Order::Asc => (">", "<"),
        Order::Desc => ("<", ">"),
    };
    let mut terms = String::new();
    if let Some(after) = window.after {
        values.push(after.into());
        terms.push_str(&format!(" AND id {after_op} ${}", values.len()));
    }
    if let Some(before) = window.before {
        values.push(before.into());
        terms.push_str(&format!(" AND id {before_op} ${}", values.len()));
    }
    values.push(i64::from(window.limit + 1).into());
    let direction = if window.fetch_descending() {
        "DESC"
    } else {
        "ASC"
    };
    (
        terms,
        format!("ORDER BY id {direction} LIMIT ${}", values.len()),
    )
}

const FILE_COLUMNS: &str =
    "id, owner_id, file_name, purpose, bytes, media_type, content_hash, storage_key, created_at";

#[derive(FromQueryResult)]
struct FileRow {
    id: uuid::Uuid,
    owner_id: uuid::Uuid,
    file_name: String,
    purpose: String,
    bytes: i64,
    media_type: Option<String>,
    content_hash: String,
    storage_key: String,
    created_at: DateTime<Utc>,
}

impl From<FileRow> for StoredFile {
    fn from(r: FileRow) -> Self {
        Self {
            id: FileId::from_uuid(r.id),
            owner: UserId::from_uuid(r.owner_id),
            file_name: r.file_name,
            purpose: r.purpose,
            bytes: u64::try_from(r.bytes).unwrap_or_default(),
            media_type: r.media_type,
            content_hash: r.content_hash,
            storage_key: r.storage_key,
            created_at: r.created_at,
        }
    }
}

#[derive(FromQueryResult)]
struct BatchRow {
    id: uuid::Uuid,
    base_id: uuid::Uuid,
    owner_id: uuid::Uuid,
    cancelled: bool,
    created_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct CountRow {
    base_id: uuid::Uuid,
    status: String,
    n: i64,
    bytes: i64,
}

fn docs(rows: Vec<DocRow>) -> Result<Vec<Document>, KnowledgeError> {
    rows.into_iter().map(Document::try_from).collect()
}

fn base_uuids(bases: &[BaseId]) -> Vec<uuid::Uuid> {
    bases.iter().map(BaseId::as_uuid).collect()
}

#[async_trait]
impl StoreRepository for PgStores {
    async fn insert_file(&self, f: &StoredFile) -> Result<(), KnowledgeError> {
        self.db
            .execute(stmt(
                &format!("INSERT INTO knowledge_files ({FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                [
                    f.id.as_uuid().into(),
                    f.owner.as_uuid().into(),
                    f.file_name.clone().into(),
                    f.purpose.clone().into(),
                    i64::try_from(f.bytes).unwrap_or(i64::MAX).into(),
                    f.media_type.clone().into(),
                    f.content_hash.clone().into(),
                    f.storage_key.clone().into(),
                    f.created_at.into(),
                ],
            ))
            .await
            .context("storing a file")?;
        Ok(())
    }

    async fn file(&self, id: FileId) -> Result<Option<StoredFile>, KnowledgeError> {
        Ok(FileRow::find_by_statement(stmt(
            &format!("SELECT {FILE_COLUMNS} FROM knowledge_files WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a file")?
        .map(StoredFile::from))
    }

    async fn files(
        &self,
        owner: UserId,
        purpose: Option<&str>,
        window: &Window,
    ) -> Result<Vec<StoredFile>, KnowledgeError> {
        let mut values = vec![owner.as_uuid().into(), purpose.map(str::to_owned).into()];
        let (terms, order) = window_sql(window, &mut values);
        let rows = FileRow::find_by_statement(stmt(
            &format!(
                "SELECT {FILE_COLUMNS} FROM knowledge_files
                 WHERE owner_id = $1 AND ($2::text IS NULL OR purpose = $2){terms} {order}"
            ),
            values,
        ))
        .all(&self.db)
        .await
        .context("listing files")?;
        Ok(rows.into_iter().map(StoredFile::from).collect())
    }

    async fn delete_file(&self, id: FileId) -> Result<Option<StoredFile>, KnowledgeError> {
        Ok(FileRow::find_by_statement(stmt(
            &format!("DELETE FROM knowledge_files WHERE id = $1 RETURNING {FILE_COLUMNS}"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("deleting a file")?
        .map(StoredFile::from))
    }

    async fn bases(
        &self,
        owner: UserId,
        window: &Window,
    ) -> Result<Vec<KnowledgeBase>, KnowledgeError> {
        let mut values = vec![owner.as_uuid().into()];
        let (terms, order) = window_sql(window, &mut values);
        let rows = BaseRow::find_by_statement(stmt(
            &format!(
                "SELECT {BASE_COLUMNS} FROM knowledge_bases WHERE owner_id = $1{terms} {order}"
            ),
            values,
        ))
        .all(&self.db)
        .await
        .context("listing vector stores")?;
        rows.into_iter().map(KnowledgeBase::try_from).collect()
    }

    async fn settings(
        &self,
        bases: &[BaseId],
    ) -> Result<Vec<(BaseId, StoreSettings)>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Row {
            base_id: uuid::Uuid,
            metadata: serde_json::Value,
            expires_after_days: Option<i32>,
            last_active_at: DateTime<Utc>,
        }
        let rows = Row::find_by_statement(stmt(
            "SELECT base_id, metadata, expires_after_days, last_active_at FROM knowledge_store_settings
             WHERE base_id IN (SELECT (jsonb_array_elements_text($1::jsonb))::uuid)",
            [ids_json(&base_uuids(bases))],
        ))
        .all(&self.db)
        .await
        .context("reading vector store settings")?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    BaseId::from_uuid(r.base_id),
                    StoreSettings {
                        metadata: if let serde_json::Value::Object(m) = r.metadata {
                            m
                        } else {
                            Map::new()
                        },
                        expires_after_days: r
                            .expires_after_days
                            .and_then(|d| u32::try_from(d).ok()),
                        last_active_at: r.last_active_at,
                    },
                )
            })
            .collect())
    }

    async fn put_settings(&self, base: BaseId, s: &StoreSettings) -> Result<(), KnowledgeError> {
        self.db
            .execute(stmt(
                "INSERT INTO knowledge_store_settings (base_id, metadata, expires_after_days, last_active_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (base_id) DO UPDATE SET metadata = EXCLUDED.metadata,
                     expires_after_days = EXCLUDED.expires_after_days, last_active_at = EXCLUDED.last_active_at",
                [
                    base.as_uuid().into(),
                    serde_json::Value::Object(s.metadata.clone()).into(),
                    s.expires_after_days
                        .and_then(|d| i32::try_from(d).ok())
                        .into(),
                    s.last_active_at.into(),
                ],
            ))
            .await
            .context("storing vector store settings")?;
        Ok(())
    }

    async fn usage(
        &self,
        bases: &[BaseId],
    ) -> Result<Vec<(BaseId, FileCounts, u64)>, KnowledgeError> {
        let rows = CountRow::find_by_statement(stmt(
            "SELECT base_id, status, count(*) AS n, coalesce(sum(bytes), 0)::bigint AS bytes
             FROM knowledge_documents
             WHERE base_id IN (SELECT (jsonb_array_elements_text($1::jsonb))::uuid)
             GROUP BY base_id, status",
            [ids_json(&base_uuids(bases))],
        ))
        .all(&self.db)
        .await
        .context("counting vector store files")?;
        let mut out: Vec<(BaseId, FileCounts, u64)> = bases
            .iter()
            .map(|b| (*b, FileCounts::default(), 0))
            .collect();
        for r in rows {
            let Some(status) = DocumentStatus::parse(&r.status) else {
                continue;
            };
            if let Some(entry) = out.iter_mut().find(|e| e.0.as_uuid() == r.base_id) {
                entry.1.add(status, u64::try_from(r.n).unwrap_or_default());
                entry.2 += u64::try_from(r.bytes).unwrap_or_default();
            }
        }
        Ok(out)
    }

    async fn documents(
        &self,
        base: BaseId,
        batch: Option<BatchId>,
        state: Option<FileState>,
        window: &Window,
    ) -> Result<Vec<Document>, KnowledgeError> {
        let statuses: Option<Vec<&str>> =
            state.map(|s| s.statuses().iter().map(|d| d.as_str()).collect());
        let mut values = vec![
            base.as_uuid().into(),
            batch.map(|b| b.as_uuid()).into(),
            statuses.map(|s| serde_json::json!(s)).into(),
        ];
        let (terms, order) = window_sql(window, &mut values);
        let rows = DocRow::find_by_statement(stmt(
            &format!(
                "SELECT {DOC_COLUMNS} FROM knowledge_documents
                 WHERE base_id = $1
                   AND ($2::uuid IS NULL OR id IN (SELECT document_id FROM knowledge_batch_documents WHERE batch_id = $2))
                   AND ($3::jsonb IS NULL OR status IN (SELECT jsonb_array_elements_text($3::jsonb))){terms} {order}"
            ),
            values,
        ))
        .all(&self.db)
        .await
        .context("listing vector store files")?;
        docs(rows)
    }

    async fn document_of(
        &self,
        base: BaseId,
        file: &StoredFile,
    ) -> Result<Option<Document>, KnowledgeError> {
        DocRow::find_by_statement(stmt(
            &format!(
                "SELECT {DOC_COLUMNS} FROM knowledge_documents
                 WHERE base_id = $1 AND (file_id = $2 OR content_hash = $3)
                 ORDER BY (file_id = $2) DESC NULLS LAST LIMIT 1"
            ),
            [
                base.as_uuid().into(),
                file.id.as_uuid().into(),
                file.content_hash.clone().into(),
            ],
        ))
        .one(&self.db)
        .await
        .context("finding a file's document")?
        .map(Document::try_from)
        .transpose()
    }

    async fn attached(&self, file: FileId) -> Result<Vec<Document>, KnowledgeError> {
        let rows = DocRow::find_by_statement(stmt(
            &format!("SELECT {DOC_COLUMNS} FROM knowledge_documents WHERE file_id = $1"),
            [file.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("finding a file's documents")?;
        docs(rows)
    }

    async fn set_attributes(
        &self,
        document: DocumentId,
        attributes: &Map<String, serde_json::Value>,
    ) -> Result<(), KnowledgeError> {
        self.db
            .execute(stmt(
                "UPDATE knowledge_documents SET metadata = $2 WHERE id = $1",
                [
                    document.as_uuid().into(),
                    serde_json::Value::Object(attributes.clone()).into(),
                ],
            ))
            .await
            .context("storing a file's attributes")?;
        Ok(())
    }

    async fn insert_batch(
        &self,
        b: &FileBatch,
        documents: &[DocumentId],
    ) -> Result<(), KnowledgeError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        txn.execute(stmt(
            "INSERT INTO knowledge_file_batches (id, base_id, owner_id, cancelled, created_at) VALUES ($1, $2, $3, $4, $5)",
            [
                b.id.as_uuid().into(),
                b.base_id.as_uuid().into(),
                b.owner.as_uuid().into(),
                b.cancelled.into(),
                b.created_at.into(),
            ],
        ))
        .await
        .context("storing a file batch")?;
        let ids: Vec<uuid::Uuid> = documents.iter().map(DocumentId::as_uuid).collect();
        txn.execute(stmt(
            "INSERT INTO knowledge_batch_documents (batch_id, document_id)
             SELECT $1, (jsonb_array_elements_text($2::jsonb))::uuid ON CONFLICT DO NOTHING",
            [b.id.as_uuid().into(), ids_json(&ids)],
        ))
        .await
        .context("storing a file batch's documents")?;
        txn.commit().await.context("committing")?;
        Ok(())
    }

    async fn batch(&self, id: BatchId) -> Result<Option<FileBatch>, KnowledgeError> {
        Ok(BatchRow::find_by_statement(stmt(
            "SELECT id, base_id, owner_id, cancelled, created_at FROM knowledge_file_batches WHERE id = $1",
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a file batch")?
        .map(|r| FileBatch {
            id: BatchId::from_uuid(r.id),
            base_id: BaseId::from_uuid(r.base_id),
            owner: UserId::from_uuid(r.owner_id),
            cancelled: r.cancelled,
            created_at: r.created_at,
        }))
    }

    async fn batch_counts(&self, id: BatchId) -> Result<FileCounts, KnowledgeError> {
        let rows = CountRow::find_by_statement(stmt(
            "SELECT d.base_id, d.status, count(*) AS n, coalesce(sum(d.bytes), 0)::bigint AS bytes
             FROM knowledge_batch_documents b JOIN knowledge_documents d ON d.id = b.document_id
             WHERE b.batch_id = $1 GROUP BY d.base_id, d.status",
            [id.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("counting a batch's files")?;
        let mut counts = FileCounts::default();
        for r in rows {
            if let Some(status) = DocumentStatus::parse(&r.status) {
                counts.add(status, u64::try_from(r.n).unwrap_or_default());
            }
        }
        Ok(counts)
    }

    async fn cancel_batch(&self, id: BatchId) -> Result<u64, KnowledgeError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        txn.execute(stmt(
            "UPDATE knowledge_file_batches SET cancelled = true WHERE id = $1",
            [id.as_uuid().into()],
        ))
        .await
        .context("cancelling a file batch")?;
        let done = txn
            .execute(stmt(
                "UPDATE knowledge_documents SET status = 'cancelled', error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = now()
                 WHERE id IN (SELECT document_id FROM knowledge_batch_documents WHERE batch_id = $1)
                   AND status NOT IN ('ready', 'failed', 'cancelled')",
                [id.as_uuid().into()],
            ))
            .await
            .context("cancelling a file batch's documents")?;
        txn.commit().await.context("committing")?;
        Ok(done.rows_affected())
    }
}
