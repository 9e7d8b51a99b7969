//! The identity context's tables: `roles`, `users`, `user_roles`, `api_keys`, `refresh_tokens`,
//! `quota_policies` and the `usage_ledger` that durable quotas are rebuilt from.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE roles (
    name        text PRIMARY KEY,
    description text NOT NULL
);

INSERT INTO roles (name, description) VALUES
    ('admin', 'Runs the platform: users, quotas, models, servers'),
    ('developer', 'Builds on the platform: keys, knowledge bases, fine-tunes, apps'),
    ('user', 'Uses models through API keys and conversations');

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL,
    email         text NULL,
    password_hash text NOT NULL,
    status        text NOT NULL CONSTRAINT users_status_check
                      CHECK (status IN ('active', 'disabled', 'deleted')),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_login_at timestamptz NULL
);

CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE user_roles (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    text NOT NULL REFERENCES roles (name),
    PRIMARY KEY (user_id, role)
);

CREATE INDEX user_roles_role_idx ON user_roles (role);

CREATE TABLE api_keys (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                text NOT NULL,
    prefix              text NOT NULL,
    key_digest          bytea NOT NULL CONSTRAINT api_keys_key_digest_key UNIQUE,
    scopes              jsonb NOT NULL CONSTRAINT api_keys_scopes_check
                            CHECK (jsonb_typeof(scopes) = 'array'),
    allowed_models      jsonb NOT NULL CONSTRAINT api_keys_allowed_models_check
                            CHECK (jsonb_typeof(allowed_models) = 'array'),
    requests_per_minute bigint NULL,
    tokens_per_minute   bigint NULL,
    expires_at          timestamptz NULL,
    last_used_at        timestamptz NULL,
    revoked_at          timestamptz NULL,
    created_at          timestamptz NOT NULL
);

CREATE INDEX api_keys_user_id_id_idx ON api_keys (user_id, id);

CREATE TABLE refresh_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id    uuid NOT NULL,
    token_digest bytea NOT NULL CONSTRAINT refresh_tokens_token_digest_key UNIQUE,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz NULL,
    revoked_at   timestamptz NULL,
    created_at   timestamptz NOT NULL
);

CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);

CREATE TABLE quota_policies (
    subject_type             text NOT NULL CONSTRAINT quota_policies_subject_type_check
                                 CHECK (subject_type IN ('user', 'key')),
    subject_id               uuid NOT NULL,
    requests_per_minute      bigint NULL,
    tokens_per_minute        bigint NULL,
    requests_per_hour        bigint NULL,
    requests_per_day         bigint NULL,
    tokens_per_day_quota     bigint NULL,
    tokens_per_month_quota   bigint NULL,
    tokens_total_quota       bigint NULL,
    requests_per_month_quota bigint NULL,
    requests_total_quota     bigint NULL,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_type, subject_id)
);

CREATE TABLE usage_ledger (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id  uuid NOT NULL,
    key_id   uuid NULL,
    tokens   bigint NOT NULL,
    requests bigint NOT NULL,
    at       timestamptz NOT NULL
);

CREATE INDEX usage_ledger_user_id_at_idx ON usage_ledger (user_id, at);
CREATE INDEX usage_ledger_key_id_at_idx ON usage_ledger (key_id, at) WHERE key_id IS NOT NULL;
";

const DOWN: &str = r"
DROP TABLE IF EXISTS usage_ledger;
DROP TABLE IF EXISTS quota_policies;
DROP TABLE IF EXISTS refresh_tokens;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS user_roles;
DROP TABLE IF EXISTS users;
DROP TABLE IF EXISTS roles;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
