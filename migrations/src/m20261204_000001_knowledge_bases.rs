//! Knowledge bases: bases, documents, their chunks (with the terms full-text search matches)
//! and the chunks' vectors, one row per chunk and generation. PostgreSQL is the record: any
//! vector index is rebuilt from `knowledge_vectors`.
//!
//! A chunk's id is derived from its document and position, so a resumed ingestion inserts
//! nothing twice (`ON CONFLICT DO NOTHING` on the primary keys). Identical bytes in one base are
//! one document (`UNIQUE (base_id, content_hash)`). The owner's id is on every row a search
//! reads, so every query filters by tenant and base.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE knowledge_bases (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text NOT NULL,
    embedding_model text NOT NULL,
    generation integer NOT NULL,
    dims integer NULL CHECK (dims > 0),
    next_model text NULL,
    next_generation integer NULL,
    next_dims integer NULL CHECK (next_dims > 0),
    chunking jsonb NOT NULL,
    retrieval jsonb NOT NULL,
    index_version bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK ((next_model IS NULL) = (next_generation IS NULL))
);
CREATE UNIQUE INDEX knowledge_bases_owner_name_key ON knowledge_bases (owner_id, lower(name));

CREATE TABLE knowledge_documents (
    id uuid PRIMARY KEY,
    base_id uuid NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    owner_id uuid NOT NULL,
    file_name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('txt', 'md', 'html', 'pdf', 'docx', 'csv', 'jsonl')),
    bytes bigint NOT NULL CHECK (bytes >= 0),
    content_hash text NOT NULL,
    storage_key text NOT NULL,
    status text NOT NULL CHECK (status IN ('queued', 'parsing', 'chunking', 'embedding', 'indexing', 'ready', 'failed')),
    error text NULL,
    chunks integer NOT NULL DEFAULT 0,
    tokens bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL,
    lease_owner uuid NULL,
    lease_until timestamptz NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (base_id, content_hash)
);
CREATE INDEX knowledge_documents_base_idx ON knowledge_documents (base_id, id);
CREATE INDEX knowledge_documents_open_idx ON knowledge_documents (updated_at)
    WHERE status NOT IN ('ready', 'failed');

CREATE TABLE knowledge_chunks (
    id uuid PRIMARY KEY,
    document_id uuid NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    base_id uuid NOT NULL,
    owner_id uuid NOT NULL,
    position integer NOT NULL CHECK (position >= 0),
    content text NOT NULL,
    tokens integer NOT NULL,
    terms tsvector NOT NULL,
    UNIQUE (document_id, position)
);
CREATE INDEX knowledge_chunks_base_idx ON knowledge_chunks (base_id, owner_id);
CREATE INDEX knowledge_chunks_terms_idx ON knowledge_chunks USING gin (terms);

CREATE TABLE knowledge_vectors (
    chunk_id uuid NOT NULL REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
    generation integer NOT NULL,
    base_id uuid NOT NULL,
    owner_id uuid NOT NULL,
    document_id uuid NOT NULL,
    vector bytea NOT NULL,
    PRIMARY KEY (chunk_id, generation)
);
CREATE INDEX knowledge_vectors_base_idx ON knowledge_vectors (base_id, generation, chunk_id);
CREATE INDEX knowledge_vectors_document_idx ON knowledge_vectors (document_id, generation);
";

const DOWN: &str = r"
DROP TABLE IF EXISTS knowledge_vectors;
DROP TABLE IF EXISTS knowledge_chunks;
DROP TABLE IF EXISTS knowledge_documents;
DROP TABLE IF EXISTS knowledge_bases;
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
