//! Inference: upstream providers with their model routes, and the usage table, partitioned by
//! month (a default partition catches rows of months without their own, so nothing is lost).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE providers (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    base_url text NOT NULL,
    api_key_sealed bytea NULL,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    CONSTRAINT providers_name_key UNIQUE (name)
);

CREATE TABLE provider_models (
    provider_id uuid NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    model text NOT NULL,
    upstream_model text NOT NULL,
    position integer NOT NULL,
    PRIMARY KEY (provider_id, model)
);
CREATE INDEX provider_models_model_idx ON provider_models (model);

CREATE TABLE usage_records (
    id uuid NOT NULL,
    user_id uuid NOT NULL,
    key_id uuid NULL,
    model text NOT NULL,
    upstream text NOT NULL,
    endpoint text NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    estimated boolean NOT NULL,
    status integer NOT NULL,
    stream boolean NOT NULL,
    ttft_ms bigint NULL,
    latency_ms bigint NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;
CREATE INDEX usage_records_user_at_idx ON usage_records (user_id, at);
CREATE INDEX usage_records_key_at_idx ON usage_records (key_id, at) WHERE key_id IS NOT NULL;

-- Creates the monthly partition holding `day` (idempotent); the worker calls it ahead of time.
CREATE OR REPLACE FUNCTION usage_records_ensure_partition(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', day)::date;
    name text := format('usage_records_%s', to_char(first, 'YYYYMM'));
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_records FOR VALUES FROM (%L) TO (%L)',
                       name, first, (first + interval '1 month')::date);
    END IF;
END $$;
SELECT usage_records_ensure_partition(current_date);
SELECT usage_records_ensure_partition((current_date + interval '1 month')::date);
";

const DOWN: &str = r"
DROP FUNCTION IF EXISTS usage_records_ensure_partition(date);
DROP TABLE IF EXISTS usage_records;
DROP TABLE IF EXISTS provider_models;
DROP TABLE IF EXISTS providers;
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
