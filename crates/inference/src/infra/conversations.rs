//! Conversations in PostgreSQL; exports stream rows straight from a server-side query.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::UserId;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, StreamTrait,
    TransactionTrait, Value,
};
use uuid::Uuid;

use crate::domain::conversation::{Conversation, ConversationId, ExportRow, Message, MessageRole};
use crate::domain::errors::InferenceError;
use crate::domain::ports::{ConversationRepository, ExportFilter};

/// Conversations in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgConversationRepository {
    db: DatabaseConnection,
}

impl PgConversationRepository {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct ConversationRow {
    id: Uuid,
    user_id: Uuid,
    title: String,
    model: Option<String>,
    created_at: DateTime<Utc>,
    last_activity_at: DateTime<Utc>,
}

impl From<ConversationRow> for Conversation {
    fn from(r: ConversationRow) -> Self {
        Self::restore(
            ConversationId::from_uuid(r.id),
            UserId::from_uuid(r.user_id),
            r.title,
            r.model,
            r.created_at,
            r.last_activity_at,
        )
    }
}

#[derive(Debug, FromQueryResult)]
struct MessageRow {
    id: Uuid,
    conversation_id: Uuid,
    role: String,
    content: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<MessageRow> for Message {
    type Error = InferenceError;
    fn try_from(r: MessageRow) -> Result<Self, InferenceError> {
        Ok(Self {
            id: r.id,
            conversation_id: ConversationId::from_uuid(r.conversation_id),
            role: MessageRole::parse(&r.role)
                .map_err(|_| anyhow::anyhow!("stored message {} has role {}", r.id, r.role))?,
            content: r.content,
            created_at: r.created_at,
        })
    }
}

const CONVERSATION_COLUMNS: &str = "id, user_id, title, model, created_at, last_activity_at";
const MESSAGE_COLUMNS: &str = "id, conversation_id, role, content, created_at";

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[async_trait]
impl ConversationRepository for PgConversationRepository {
    async fn insert(&self, c: &Conversation) -> Result<(), InferenceError> {
        self.db
            .execute(stmt(
                "INSERT INTO conversations (id, user_id, title, model, created_at, last_activity_at) VALUES ($1, $2, $3, $4, $5, $6)",
                vec![c.id().as_uuid().into(), c.owner().as_uuid().into(), c.title().into(), c.model().map(str::to_owned).into(), c.created_at().into(), c.last_activity_at().into()],
            ))
            .await
            .context("inserting conversation")?;
        Ok(())
    }

    async fn find_owned(
        &self,
        user: UserId,
        id: ConversationId,
    ) -> Result<Option<Conversation>, InferenceError> {
        let row = ConversationRow::find_by_statement(stmt(
            &format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2"
            ),
            vec![id.as_uuid().into(), user.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("loading conversation")?;
        Ok(row.map(Into::into))
    }

    async fn list(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, InferenceError> {
        let mut values: Vec<Value> =
            vec![user.as_uuid().into(), i64::from(page.limit() + 1).into()];
        let mut sql =
            format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1");
        if let Some(after) = page.after().map(maas_shared::paging::Cursor::id) {
            values.push(after.into());
            sql.push_str(" AND id < $3");
        }
        sql.push_str(" ORDER BY id DESC LIMIT $2");
        let rows = ConversationRow::find_by_statement(stmt(&sql, values))
            .all(&self.db)
            .await
            .context("listing conversations")?;
        Ok(Page::from_overfetch(rows, page, |r| r.id).map(Into::into))
    }

    async fn rename(
        &self,
        id: ConversationId,
        title: &str,
        at: DateTime<Utc>,
    ) -> Result<(), InferenceError> {
        self.db
            .execute(stmt(
                "UPDATE conversations SET title = $2, last_activity_at = $3 WHERE id = $1",
                vec![id.as_uuid().into(), title.into(), at.into()],
            ))
            .await
            .context("renaming conversation")?;
        Ok(())
    }

    async fn delete(&self, user: UserId, id: ConversationId) -> Result<bool, InferenceError> {
        let result = self
            .db
            .execute(stmt(
                "DELETE FROM conversations WHERE id = $1 AND user_id = $2",
                vec![id.as_uuid().into(), user.as_uuid().into()],
            ))
            .await
            .context("deleting conversation")?;
        Ok(result.rows_affected() > 0)
    }

    async fn append(
        &self,
        conversation: &Conversation,
        messages: &[Message],
    ) -> Result<(), InferenceError> {
        if messages.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await.context("starting a transaction")?;
        let mut sql = String::from(
            "INSERT INTO conversation_messages (id, conversation_id, user_id, role, content, created_at) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(messages.len() * 6);
        for (i, m) in messages.iter().enumerate() {
            let b = i * 6;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
            values.extend([
                m.id.into(),
                m.conversation_id.as_uuid().into(),
                conversation.owner().as_uuid().into(),
                m.role.as_str().into(),
                m.content.clone().into(),
                m.created_at.into(),
            ]);
        }
        txn.execute(stmt(&sql, values))
            .await
            .context("inserting messages")?;
        let last = messages
            .iter()
            .map(|m| m.created_at)
            .max()
            .unwrap_or(conversation.last_activity_at());
        txn.execute(stmt("UPDATE conversations SET last_activity_at = GREATEST(last_activity_at, $2) WHERE id = $1", vec![conversation.id().as_uuid().into(), last.into()]))
            .await
            .context("marking activity")?;
        txn.commit().await.context("committing messages")?;
        Ok(())
    }

    async fn messages(
        &self,
        id: ConversationId,
        page: &PageRequest,
    ) -> Result<Page<Message>, InferenceError> {
        let mut values: Vec<Value> = vec![id.as_uuid().into(), i64::from(page.limit() + 1).into()];
        let mut sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM conversation_messages WHERE conversation_id = $1"
        );
        if let Some(after) = page.after().map(maas_shared::paging::Cursor::id) {
            values.push(after.into());
            sql.push_str(" AND id > $3");
        }
        sql.push_str(" ORDER BY id ASC LIMIT $2");
        let rows = MessageRow::find_by_statement(stmt(&sql, values))
            .all(&self.db)
            .await
            .context("listing messages")?;
        let page = Page::from_overfetch(rows, page, |r| r.id);
        let items = page
            .items
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items,
            next: page.next,
        })
    }

    async fn last_messages(
        &self,
        id: ConversationId,
        n: u32,
    ) -> Result<Vec<Message>, InferenceError> {
        let rows = MessageRow::find_by_statement(stmt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM conversation_messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT $2"),
            vec![id.as_uuid().into(), i64::from(n).into()],
        ))
        .all(&self.db)
        .await
        .context("loading history")?;
        rows.into_iter().rev().map(Message::try_from).collect()
    }

    async fn export(
        &self,
        filter: ExportFilter,
    ) -> Result<BoxStream<'static, Result<ExportRow, InferenceError>>, InferenceError> {
        let mut sql = String::from(
            "SELECT m.conversation_id, c.title, m.id AS message_id, m.role, m.content, m.created_at \
             FROM conversation_messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = $1",
        );
        let mut values: Vec<Value> = vec![filter.user_id.as_uuid().into()];
        if let Some(id) = filter.conversation_id {
            values.push(id.as_uuid().into());
            sql.push_str(&format!(" AND m.conversation_id = ${}", values.len()));
        }
        if let Some(from) = filter.from {
            values.push(from.into());
            sql.push_str(&format!(" AND m.created_at >= ${}", values.len()));
        }
        if let Some(to) = filter.to {
            values.push(to.into());
            sql.push_str(&format!(" AND m.created_at < ${}", values.len()));
        }
        sql.push_str(" ORDER BY m.created_at, m.id");
        // The stream owns its pooled connection and fetches rows as the client reads them.
        let rows = self
            .db
            .stream(stmt(&sql, values))
            .await
            .context("starting the export query")?;
        Ok(rows
            .map(|row| {
                let row = row.context("reading an export row")?;
                Ok(ExportRow {
                    conversation_id: row
                        .try_get("", "conversation_id")
                        .context("conversation_id")?,
                    title: row.try_get("", "title").context("title")?,
                    message_id: row.try_get("", "message_id").context("message_id")?,
                    role: row.try_get("", "role").context("role")?,
                    content: row.try_get("", "content").context("content")?,
                    created_at: row.try_get("", "created_at").context("created_at")?,
                })
            })
            .boxed())
    }

    async fn expire(&self, cutoff: DateTime<Utc>) -> Result<u64, InferenceError> {
        let result = self
            .db
            .execute(stmt(
                "DELETE FROM conversations WHERE last_activity_at < $1",
                vec![cutoff.into()],
            ))
            .await
            .context("expiring conversations")?;
        Ok(result.rows_affected())
    }
}
