//! OpenAI's vector stores over knowledge bases: files uploaded on their own (`/v1/files`) and
//! attached to stores, the settings a store has that a base has not (metadata, expiry, last
//! activity), batches of attached files, and per document the file it came from and its own
//! chunking. A document can now be `cancelled` (its batch was cancelled before it was ready).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE knowledge_files (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    file_name text NOT NULL,
    purpose text NOT NULL,
    bytes bigint NOT NULL CHECK (bytes >= 0),
    media_type text NULL,
    content_hash text NOT NULL,
    storage_key text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX knowledge_files_owner_idx ON knowledge_files (owner_id, id);

CREATE TABLE knowledge_store_settings (
    base_id uuid PRIMARY KEY REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    metadata jsonb NOT NULL,
    expires_after_days integer NULL CHECK (expires_after_days BETWEEN 1 AND 365),
    last_active_at timestamptz NOT NULL
);

CREATE TABLE knowledge_file_batches (
    id uuid PRIMARY KEY,
    base_id uuid NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    owner_id uuid NOT NULL,
    cancelled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);
CREATE TABLE knowledge_batch_documents (
    batch_id uuid NOT NULL REFERENCES knowledge_file_batches (id) ON DELETE CASCADE,
    document_id uuid NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    PRIMARY KEY (batch_id, document_id)
);
CREATE INDEX knowledge_batch_documents_document_idx ON knowledge_batch_documents (document_id);

ALTER TABLE knowledge_documents
    ADD COLUMN file_id uuid NULL,
    ADD COLUMN chunking jsonb NULL,
    DROP CONSTRAINT knowledge_documents_status_check,
    ADD CONSTRAINT knowledge_documents_status_check
        CHECK (status IN ('queued', 'parsing', 'chunking', 'embedding', 'indexing', 'ready', 'failed', 'cancelled'));
CREATE INDEX knowledge_documents_file_idx ON knowledge_documents (file_id) WHERE file_id IS NOT NULL;
DROP INDEX knowledge_documents_open_idx;
CREATE INDEX knowledge_documents_open_idx ON knowledge_documents (updated_at)
    WHERE status NOT IN ('ready', 'failed', 'cancelled');
";

const DOWN: &str = r"
DROP INDEX IF EXISTS knowledge_documents_open_idx;
DELETE FROM knowledge_documents WHERE status = 'cancelled';
ALTER TABLE knowledge_documents
    DROP COLUMN IF EXISTS file_id,
    DROP COLUMN IF EXISTS chunking,
    DROP CONSTRAINT knowledge_documents_status_check,
    ADD CONSTRAINT knowledge_documents_status_check
        CHECK (status IN ('queued', 'parsing', 'chunking', 'embedding', 'indexing', 'ready', 'failed'));
CREATE INDEX knowledge_documents_open_idx ON knowledge_documents (updated_at)
    WHERE status NOT IN ('ready', 'failed');
DROP TABLE IF EXISTS knowledge_batch_documents;
DROP TABLE IF EXISTS knowledge_file_batches;
DROP TABLE IF EXISTS knowledge_store_settings;
DROP TABLE IF EXISTS knowledge_files;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(UP)
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(DOWN)
            .await
            .map(|_| ())
    }
}
