//! The ledger is written from the settlement stream, where an entry may be delivered more than
//! once: each entry carries the request it settles, and a request is stored once.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r"
ALTER TABLE usage_ledger ADD COLUMN request_id uuid NULL;
CREATE UNIQUE INDEX usage_ledger_request_id_key ON usage_ledger (request_id);
";

const DOWN: &str = r"
DROP INDEX IF EXISTS usage_ledger_request_id_key;
ALTER TABLE usage_ledger DROP COLUMN IF EXISTS request_id;
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
