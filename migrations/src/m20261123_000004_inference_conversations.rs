//! Inference: conversations and their messages (expired after inactivity by the worker).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    title text NOT NULL,
    model text NULL,
    created_at timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL
);
CREATE INDEX conversations_user_idx ON conversations (user_id, id);
CREATE INDEX conversations_activity_idx ON conversations (last_activity_at);

CREATE TABLE conversation_messages (
    id uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    role text NOT NULL CONSTRAINT conversation_messages_role_check
        CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX conversation_messages_conversation_idx ON conversation_messages (conversation_id, id);
CREATE INDEX conversation_messages_user_created_idx ON conversation_messages (user_id, created_at, id);
";

const DOWN: &str = r"
DROP TABLE IF EXISTS conversation_messages;
DROP TABLE IF EXISTS conversations;
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
