//! Models and compute, part 1: accelerator brands and their cards, the model registry, and GPU
//! servers with the join token and node credential of their agent (both stored as digests).
//!
//! A heartbeat writes nothing here: the last heartbeat of each node lives in Redis, and a row
//! changes only when a node's status does (graded by the worker) or when it reports resources.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE brands (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    logo text NULL,
    sort_order integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT brands_name_key UNIQUE (name)
);
CREATE INDEX brands_sort_idx ON brands (sort_order, id);

CREATE TABLE accelerator_cards (
    id uuid PRIMARY KEY,
    brand_id uuid NOT NULL REFERENCES brands (id) ON DELETE RESTRICT,
    model text NOT NULL,
    memory_gib integer NOT NULL CHECK (memory_gib > 0),
    fp8_tflops double precision NULL,
    int8_tops double precision NULL,
    bf16_tflops double precision NULL,
    fp16_tflops double precision NULL,
    fp32_tflops double precision NULL,
    interconnect_gbps double precision NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT accelerator_cards_model_key UNIQUE (brand_id, model)
);

CREATE TABLE models (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    family text NOT NULL,
    parameters_b double precision NULL,
    context_length integer NOT NULL CHECK (context_length > 0),
    capabilities jsonb NOT NULL,
    quantization text NULL,
    source jsonb NOT NULL,
    default_engine text NOT NULL,
    licence text NULL,
    logo text NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT models_name_key UNIQUE (name)
);

CREATE TABLE servers (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    address text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}'::jsonb,
    brand_id uuid NULL REFERENCES brands (id) ON DELETE RESTRICT,
    card_id uuid NULL REFERENCES accelerator_cards (id) ON DELETE RESTRICT,
    expected_gpus integer NOT NULL CHECK (expected_gpus >= 0),
    status text NOT NULL CHECK (status IN ('pending', 'ready', 'not_ready', 'offline')),
    status_reason text NULL,
    status_changed_at timestamptz NOT NULL,
    join_token_digest bytea NULL,
    join_token_expires_at timestamptz NULL,
    node_credential_digest bytea NULL,
    hostname text NULL,
    agent_version text NULL,
    agent_url text NULL,
    approved_agent_url text NULL,
    registered_at timestamptz NULL,
    last_report jsonb NULL,
    reported_at timestamptz NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT servers_name_key UNIQUE (name),
    CONSTRAINT servers_join_token_key UNIQUE (join_token_digest),
    CONSTRAINT servers_node_credential_key UNIQUE (node_credential_digest)
);
CREATE INDEX servers_status_idx ON servers (status);
";

const DOWN: &str = r"
DROP TABLE IF EXISTS servers;
DROP TABLE IF EXISTS models;
DROP TABLE IF EXISTS accelerator_cards;
DROP TABLE IF EXISTS brands;
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
