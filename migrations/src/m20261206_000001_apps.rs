//! Apps: a model, a prompt and knowledge published as an endpoint. The draft configuration
//! lives on the app; publishing snapshots it as an immutable numbered version; each end user
//! of an app (the caller's opaque `user`) has one conversation of the inference context; every
//! endpoint call is logged with its question, answer, citations, latency, tokens and the end
//! user's feedback. App keys are API keys bound to one app (`api_keys.app_id`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE apps (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    config jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    published_version integer NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT apps_owner_name_key UNIQUE (owner_id, name)
);
CREATE INDEX apps_owner_idx ON apps (owner_id, id);

CREATE TABLE app_versions (
    app_id uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    number integer NOT NULL CHECK (number >= 1),
    config jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    note text NULL,
    rollback_of integer NULL,
    published_by uuid NULL,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (app_id, number)
);
ALTER TABLE apps ADD CONSTRAINT apps_published_version_fkey
    FOREIGN KEY (id, published_version) REFERENCES app_versions (app_id, number)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE app_end_users (
    app_id uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    end_user text NOT NULL,
    conversation_id uuid NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (app_id, end_user)
);

CREATE TABLE app_messages (
    id uuid PRIMARY KEY,
    app_id uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version integer NOT NULL,
    key_id uuid NULL,
    end_user text NULL,
    question text NOT NULL,
    answer text NULL,
    citations jsonb NOT NULL CHECK (jsonb_typeof(citations) = 'array'),
    status text NOT NULL CHECK (status IN ('pending', 'answered', 'failed')),
    http_status integer NULL,
    stream boolean NOT NULL,
    latency_ms bigint NULL,
    ttft_ms bigint NULL,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    feedback text NULL CHECK (feedback IN ('up', 'down')),
    feedback_comment text NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX app_messages_app_idx ON app_messages (app_id, id);
CREATE INDEX app_messages_app_created_idx ON app_messages (app_id, created_at);

ALTER TABLE api_keys ADD COLUMN app_id uuid NULL;
CREATE INDEX api_keys_app_idx ON api_keys (app_id) WHERE app_id IS NOT NULL;
";

const DOWN: &str = r"
DROP INDEX IF EXISTS api_keys_app_idx;
DELETE FROM api_keys WHERE app_id IS NOT NULL;
ALTER TABLE api_keys DROP COLUMN IF EXISTS app_id;
DROP TABLE IF EXISTS app_messages;
DROP TABLE IF EXISTS app_end_users;
ALTER TABLE IF EXISTS apps DROP CONSTRAINT IF EXISTS apps_published_version_fkey;
DROP TABLE IF EXISTS app_versions;
DROP TABLE IF EXISTS apps;
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
