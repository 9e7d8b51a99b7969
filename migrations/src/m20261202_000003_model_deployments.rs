//! Models and compute, part 2: deployments (the desired state), their event log, the instances
//! placed on servers and the GPU ledger in which one slot has one holder.
//!
//! Double booking is made impossible here, not in code: a GPU slot is the primary key
//! `(server_id, gpu_index)` of `gpu_slots`, and a replica has at most one instance that should
//! run (`instances_replica_running`). The agent's secret for the platform's calls is kept sealed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE deployments (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    model_id uuid NOT NULL REFERENCES models (id) ON DELETE RESTRICT,
    engine text NOT NULL CHECK (engine IN ('builtin', 'llama.cpp', 'vllm', 'sglang', 'custom')),
    command text NULL,
    args jsonb NOT NULL,
    env jsonb NOT NULL,
    replicas integer NOT NULL CHECK (replicas BETWEEN 0 AND 64),
    gpus_per_replica integer NOT NULL CHECK (gpus_per_replica BETWEEN 0 AND 16),
    cpu_cores double precision NULL,
    memory_mib bigint NULL,
    placement jsonb NOT NULL,
    desired text NOT NULL CHECK (desired IN ('running', 'stopped', 'deleted')),
    state text NOT NULL CHECK (state IN ('pending', 'scheduling', 'deploying', 'running', 'failed', 'stopping', 'stopped', 'restarting')),
    reason text NULL,
    generation integer NOT NULL CHECK (generation > 0),
    deadline timestamptz NULL,
    created_by uuid NULL REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT deployments_name_key UNIQUE (name)
);
CREATE INDEX deployments_state_idx ON deployments (state);

-- A served name routes to one deployment.
CREATE TABLE deployment_names (
    name text PRIMARY KEY,
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    position integer NOT NULL
);
CREATE INDEX deployment_names_deployment_idx ON deployment_names (deployment_id);

CREATE TABLE deployment_events (
    id uuid PRIMARY KEY,
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    actor uuid NULL,
    kind text NOT NULL,
    message text NOT NULL
);
CREATE INDEX deployment_events_deployment_idx ON deployment_events (deployment_id, id);

CREATE TABLE instances (
    id uuid PRIMARY KEY,
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    replica integer NOT NULL CHECK (replica >= 0),
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE RESTRICT,
    desired text NOT NULL CHECK (desired IN ('running', 'stopped')),
    generation integer NOT NULL CHECK (generation > 0),
    state text NOT NULL CHECK (state IN ('assigned', 'downloading', 'starting', 'ready', 'unhealthy', 'exited', 'failed', 'stopping', 'stopped', 'lost')),
    port integer NULL,
    pid integer NULL,
    exit_code integer NULL,
    restarts integer NOT NULL DEFAULT 0,
    message text NULL,
    cpu_cores double precision NULL,
    memory_mib bigint NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX instances_replica_running ON instances (deployment_id, replica) WHERE desired = 'running';
CREATE INDEX instances_server_idx ON instances (server_id);
CREATE INDEX instances_deployment_idx ON instances (deployment_id);

-- The GPU ledger: a slot exists while an instance holds it, and only one can.
CREATE TABLE gpu_slots (
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE RESTRICT,
    gpu_index integer NOT NULL CHECK (gpu_index >= 0),
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    PRIMARY KEY (server_id, gpu_index)
);
CREATE INDEX gpu_slots_instance_idx ON gpu_slots (instance_id);

ALTER TABLE servers ADD COLUMN agent_secret_sealed bytea NULL;
";

const DOWN: &str = r"
ALTER TABLE servers DROP COLUMN IF EXISTS agent_secret_sealed;
DROP TABLE IF EXISTS gpu_slots;
DROP TABLE IF EXISTS instances;
DROP TABLE IF EXISTS deployment_events;
DROP TABLE IF EXISTS deployment_names;
DROP TABLE IF EXISTS deployments;
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
