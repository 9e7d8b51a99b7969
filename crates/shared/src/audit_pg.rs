//! PostgreSQL adapter of the [`AuditLog`] port (table `audit_events`).

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use crate::audit::{
    ActionContext, AuditError, AuditEvent, AuditEventId, AuditFilter, AuditLog, NewAuditEvent,
};
use crate::clock::Clock;
use crate::paging::{Page, PageRequest};

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub actor_id: Option<Uuid>,
        pub action: String,
        pub target_type: String,
        pub target_id: Option<String>,
        pub request_id: Option<String>,
        pub ip: Option<String>,
        pub details: Json,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{ActiveModel as AuditActiveRow, Column, Entity as AuditTable, Model as AuditRow};

/// Stores audit events in PostgreSQL.
pub struct PgAuditLog {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl PgAuditLog {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

/// Writes `event` through `conn`: a context's repository passes its transaction, so that a
/// change and its audit event are committed together or not at all.
///
/// # Errors
/// Storage failures.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    event: NewAuditEvent,
    at: DateTime<Utc>,
) -> anyhow::Result<AuditEventId> {
    let id = AuditEventId::new();
    AuditActiveRow {
        id: Set(id.as_uuid()),
        actor_id: Set(event.context.actor),
        action: Set(event.action),
        target_type: Set(event.target_type),
        target_id: Set(event.target_id),
        request_id: Set(event.context.request_id),
        ip: Set(event.context.ip),
        details: Set(event.details),
        at: Set(at),
    }
    .insert(conn)
    .await
    .context("inserting audit event")?;
    Ok(id)
}

impl From<AuditRow> for AuditEvent {
    fn from(row: AuditRow) -> Self {
        Self {
            id: AuditEventId::from_uuid(row.id),
            event: NewAuditEvent {
                context: ActionContext {
                    actor: row.actor_id,
                    request_id: row.request_id,
                    ip: row.ip,
                },
                action: row.action,
                target_type: row.target_type,
                target_id: row.target_id,
                details: row.details,
            },
            at: row.at,
        }
    }
}

#[async_trait]
impl AuditLog for PgAuditLog {
    #[tracing::instrument(skip_all, fields(action = %event.action))]
    async fn record(&self, event: NewAuditEvent) -> Result<AuditEventId, AuditError> {
        Ok(insert(&self.db, event, self.clock.now()).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, AuditError> {
        let mut query = AuditTable::find().order_by_desc(Column::Id);
        if let Some(actor) = filter.actor {
            query = query.filter(Column::ActorId.eq(actor));
        }
        if let Some(target_type) = &filter.target_type {
            query = query.filter(Column::TargetType.eq(target_type.as_str()));
        }
        if let Some(target_id) = &filter.target_id {
            query = query.filter(Column::TargetId.eq(target_id.as_str()));
        }
        if let Some(cursor) = page.after() {
            query = query.filter(Column::Id.lt(cursor.id()));
        }
        let rows = query
            .limit(u64::from(page.limit()) + 1)
            .all(&self.db)
            .await
            .context("listing audit events")?;
        let page = Page::from_overfetch(rows, page, |row| row.id);
        Ok(page.map(AuditEvent::from))
    }
}
