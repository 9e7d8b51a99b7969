//! Helpers of this context's PostgreSQL adapters: statements, error mapping, paging.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::PageRequest;
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, SqlErr, Statement, Value,
};

use crate::domain::errors::{Entity, ModelError};

/// A Postgres statement.
pub(crate) fn stmt(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// What a failed write means: a taken name, a missing parent, a row still referred to.
pub(crate) fn write_error(
    err: DbErr,
    entity: Entity,
    parent: Entity,
    what: &'static str,
) -> ModelError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => ModelError::NameTaken(entity),
        Some(SqlErr::ForeignKeyConstraintViolation(message)) => {
            if message.contains("update or delete on table") {
                ModelError::InUse(entity, what)
            } else {
                ModelError::NotFound(parent)
            }
        }
        _ => ModelError::Unexpected(anyhow::Error::new(err).context("writing to the registry")),
    }
}

/// Runs `statement` in `txn`; maps a failure with [`write_error`].
pub(crate) async fn exec(
    txn: &DatabaseTransaction,
    statement: Statement,
    entity: Entity,
    parent: Entity,
    what: &'static str,
) -> Result<ExecResult, ModelError> {
    txn.execute(statement)
        .await
        .map_err(|e| write_error(e, entity, parent, what))
}

/// Stores the audit event and commits.
pub(crate) async fn commit(
    txn: DatabaseTransaction,
    audit: NewAuditEvent,
    at: DateTime<Utc>,
) -> Result<(), ModelError> {
    maas_shared::audit_pg::insert(&txn, audit, at).await?;
    txn.commit().await.context("committing")?;
    Ok(())
}

/// `$n` (after id) and `$n+1` (limit) of a page query: the cursor and one row more than asked.
pub(crate) fn page_values(page: &PageRequest) -> [Value; 2] {
    [
        page.after().map(maas_shared::paging::Cursor::id).into(),
        i64::from(page.limit() + 1).into(),
    ]
}

/// A stored value that does not parse: corruption, not a client error.
pub(crate) fn corrupt(table: &str, id: uuid::Uuid, what: &str) -> ModelError {
    ModelError::Unexpected(anyhow::anyhow!("stored {table} row {id} has a bad {what}"))
}
