//! Servers over SSH: each server's SSH access (credential sealed, host key pinned), the last
//! check of each server, and remote tasks with their runs.
//!
//! A schedule fires once per due time however many workers tick: a run is unique per
//! `(task_id, server_id, scheduled_for)` and the task's `next_run_at` only moves forward by a
//! compare-and-set, so a second worker seeing the same tick inserts nothing.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE server_ssh (
    server_id uuid PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username text NOT NULL,
    auth text NOT NULL CHECK (auth IN ('password', 'private_key')),
    credential_sealed bytea NOT NULL,
    host_key_algorithm text NULL,
    host_key_fingerprint text NULL,
    host_key_pinned_at timestamptz NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE server_checks (
    server_id uuid PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('online', 'degraded', 'offline')),
    checked_at timestamptz NOT NULL,
    latency_ms integer NULL,
    detail jsonb NOT NULL
);

CREATE TABLE remote_tasks (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    command text NOT NULL,
    server_ids jsonb NOT NULL,
    schedule_kind text NOT NULL CHECK (schedule_kind IN ('once', 'every', 'cron')),
    schedule_at timestamptz NULL,
    every_secs integer NULL CHECK (every_secs IS NULL OR every_secs >= 1),
    cron text NULL,
    timeout_secs integer NOT NULL CHECK (timeout_secs BETWEEN 1 AND 86400),
    output_limit_bytes integer NOT NULL CHECK (output_limit_bytes BETWEEN 1 AND 16777216),
    enabled boolean NOT NULL,
    next_run_at timestamptz NULL,
    created_by uuid NULL REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT remote_tasks_name_key UNIQUE (name)
);
CREATE INDEX remote_tasks_due_idx ON remote_tasks (next_run_at) WHERE enabled AND next_run_at IS NOT NULL;

CREATE TABLE remote_task_runs (
    id uuid PRIMARY KEY,
    task_id uuid NOT NULL REFERENCES remote_tasks (id) ON DELETE CASCADE,
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    trigger text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    scheduled_for timestamptz NOT NULL,
    state text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'lost')),
    via text NULL,
    exit_code integer NULL,
    stdout bytea NULL,
    stderr bytea NULL,
    stdout_truncated boolean NOT NULL DEFAULT false,
    stderr_truncated boolean NOT NULL DEFAULT false,
    error text NULL,
    started_at timestamptz NULL,
    finished_at timestamptz NULL,
    duration_ms bigint NULL,
    created_at timestamptz NOT NULL
);
-- One scheduled run per task, server and due time: a tick seen twice adds nothing.
CREATE UNIQUE INDEX remote_task_runs_due_key ON remote_task_runs (task_id, server_id, scheduled_for) WHERE trigger = 'schedule';
CREATE INDEX remote_task_runs_task_idx ON remote_task_runs (task_id, id);
CREATE INDEX remote_task_runs_queued_idx ON remote_task_runs (created_at) WHERE state = 'queued';
";

const DOWN: &str = r"
DROP TABLE IF EXISTS remote_task_runs;
DROP TABLE IF EXISTS remote_tasks;
DROP TABLE IF EXISTS server_checks;
DROP TABLE IF EXISTS server_ssh;
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
