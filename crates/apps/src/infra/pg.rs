//! PostgreSQL: `apps`, `app_versions`, `app_end_users`, `app_messages`.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use maas_inference::contract::ConversationId;
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::UserId;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, SqlErr, Statement,
    TransactionTrait, Value,
};

use crate::domain::app::{App, AppId, AppVersion};
use crate::domain::config::AppConfig;
use crate::domain::errors::AppsError;
use crate::domain::message::{AppMessage, Citation, MessageEnd, MessageStatus, Rating, UsageDay};
use crate::domain::ports::{AppRepository, EndUsers, MessageFilter, MessageLog};

fn stmt(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn write_error(err: DbErr) -> AppsError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => AppsError::NameTaken,
        _ => AppsError::Unexpected(anyhow::Error::new(err).context("writing an app")),
    }
}

fn corrupt(what: &str, id: uuid::Uuid, err: impl std::fmt::Display) -> AppsError {
    AppsError::Unexpected(anyhow::anyhow!("stored {what} {id} is unreadable: {err}"))
}

fn config_json(config: &AppConfig) -> Result<serde_json::Value, AppsError> {
    serde_json::to_value(config).map_err(|e| AppsError::Unexpected(e.into()))
}

fn u32_of(v: i32, what: &str, id: uuid::Uuid) -> Result<u32, AppsError> {
    u32::try_from(v).map_err(|e| corrupt(what, id, e))
}

fn u64_of(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// PostgreSQL text cannot hold NUL.
fn storable(text: &str) -> String {
    text.replace(maas_shared::text::NUL, "\u{FFFD}")
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Apps, versions and end users.
#[derive(Clone)]
pub struct PgApps {
    db: DatabaseConnection,
}

impl PgApps {
    /// The repository over `db`.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

const APP_COLUMNS: &str =
    "id, owner_id, name, description, config, published_version, created_at, updated_at";

#[derive(FromQueryResult)]
struct AppRow {
    id: uuid::Uuid,
    owner_id: uuid::Uuid,
    name: String,
    description: String,
    config: serde_json::Value,
    published_version: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<AppRow> for App {
    type Error = AppsError;

    fn try_from(r: AppRow) -> Result<Self, AppsError> {
        Ok(Self {
            id: AppId::from_uuid(r.id),
            owner: UserId::from_uuid(r.owner_id),
            name: r.name,
            description: r.description,
            draft: serde_json::from_value(r.config).map_err(|e| corrupt("app", r.id, e))?,
            published_version: r
                .published_version
                .map(|v| u32_of(v, "app", r.id))
                .transpose()?,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const VERSION_COLUMNS: &str =
    "app_id, number, config, note, rollback_of, published_by, published_at";

#[derive(FromQueryResult)]
struct VersionRow {
    app_id: uuid::Uuid,
    number: i32,
    config: serde_json::Value,
    note: Option<String>,
    rollback_of: Option<i32>,
    published_by: Option<uuid::Uuid>,
    published_at: DateTime<Utc>,
}

impl TryFrom<VersionRow> for AppVersion {
    type Error = AppsError;

    fn try_from(r: VersionRow) -> Result<Self, AppsError> {
        Ok(Self {
            app_id: AppId::from_uuid(r.app_id),
            number: u32_of(r.number, "app version", r.app_id)?,
            config: serde_json::from_value(r.config)
                .map_err(|e| corrupt("app version", r.app_id, e))?,
            note: r.note,
            rollback_of: r
                .rollback_of
                .map(|v| u32_of(v, "app version", r.app_id))
                .transpose()?,
            published_by: r.published_by.map(UserId::from_uuid),
            published_at: r.published_at,
        })
    }
}

#[async_trait]
impl AppRepository for PgApps {
    async fn insert(&self, app: &App, audit: NewAuditEvent) -> Result<(), AppsError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        txn.execute(stmt(
            &format!("INSERT INTO apps ({APP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL, $6, $6)"),
            [
                app.id.as_uuid().into(),
                app.owner.as_uuid().into(),
                app.name.clone().into(),
                app.description.clone().into(),
                config_json(&app.draft)?.into(),
                app.created_at.into(),
            ],
        ))
        .await
        .map_err(write_error)?;
        maas_shared::audit_pg::insert(&txn, audit, app.created_at).await?;
        txn.commit().await.context("committing")?;
        Ok(())
    }

    async fn get(&self, id: AppId) -> Result<Option<App>, AppsError> {
        AppRow::find_by_statement(stmt(
            &format!("SELECT {APP_COLUMNS} FROM apps WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading an app")?
        .map(App::try_from)
        .transpose()
    }

    async fn list(&self, owner: UserId, page: &PageRequest) -> Result<Page<App>, AppsError> {
        let rows = AppRow::find_by_statement(stmt(
            &format!("SELECT {APP_COLUMNS} FROM apps WHERE owner_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"),
            [
                owner.as_uuid().into(),
                page.after().map(maas_shared::paging::Cursor::id).into(),
                i64::from(page.limit() + 1).into(),
            ],
        ))
        .all(&self.db)
        .await
        .context("listing apps")?;
        let apps = rows
            .into_iter()
            .map(App::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(apps, page, |a| a.id.as_uuid()))
    }

    async fn update(&self, app: &App, audit: NewAuditEvent) -> Result<(), AppsError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "UPDATE apps SET name = $2, description = $3, config = $4, published_version = $5, updated_at = $6 WHERE id = $1",
                [
                    app.id.as_uuid().into(),
                    app.name.clone().into(),
                    app.description.clone().into(),
                    config_json(&app.draft)?.into(),
                    app.published_version.and_then(|v| i32::try_from(v).ok()).into(),
                    app.updated_at.into(),
                ],
            ))
            .await
            .map_err(write_error)?;
        if done.rows_affected() == 0 {
            return Err(AppsError::NotFound);
        }
        maas_shared::audit_pg::insert(&txn, audit, app.updated_at).await?;
        txn.commit().await.context("committing")?;
        Ok(())
    }

    async fn delete(
        &self,
        id: AppId,
        audit: NewAuditEvent,
        at: DateTime<Utc>,
    ) -> Result<bool, AppsError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "DELETE FROM apps WHERE id = $1",
                [id.as_uuid().into()],
            ))
            .await
            .context("deleting an app")?;
        maas_shared::audit_pg::insert(&txn, audit, at).await?;
        txn.commit().await.context("committing")?;
        Ok(done.rows_affected() > 0)
    }

    async fn publish(
        &self,
        version: AppVersion,
        audit: NewAuditEvent,
    ) -> Result<AppVersion, AppsError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        // The app's row is locked first: two publishes at once number one after the other.
        let locked = txn
            .execute(stmt(
                "SELECT 1 FROM apps WHERE id = $1 FOR UPDATE",
                [version.app_id.as_uuid().into()],
            ))
            .await
            .context("locking an app")?;
        if locked.rows_affected() == 0 {
            return Err(AppsError::NotFound);
        }
        let row = VersionRow::find_by_statement(stmt(
            &format!(
                "INSERT INTO app_versions ({VERSION_COLUMNS}) \
                 SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3, $4, $5, $6 FROM app_versions WHERE app_id = $1 \
                 RETURNING {VERSION_COLUMNS}"
            ),
            [
                version.app_id.as_uuid().into(),
                config_json(&version.config)?.into(),
                version.note.clone().into(),
                version.rollback_of.and_then(|v| i32::try_from(v).ok()).into(),
                version.published_by.map(|u| u.as_uuid()).into(),
                version.published_at.into(),
            ],
        ))
        .one(&txn)
        .await
        .context("publishing an app version")?
        .context("the new version's row")?;
        txn.execute(stmt(
            "UPDATE apps SET published_version = $2, updated_at = $3 WHERE id = $1",
            [
                version.app_id.as_uuid().into(),
                row.number.into(),
                version.published_at.into(),
            ],
        ))
        .await
        .context("serving the new version")?;
        let mut audit = audit;
        if let Some(details) = audit.details.as_object_mut() {
            details.insert("version".into(), row.number.into());
        }
        maas_shared::audit_pg::insert(&txn, audit, version.published_at).await?;
        txn.commit().await.context("committing")?;
        AppVersion::try_from(row)
    }

    async fn versions(&self, id: AppId) -> Result<Vec<AppVersion>, AppsError> {
        VersionRow::find_by_statement(stmt(
            &format!("SELECT {VERSION_COLUMNS} FROM app_versions WHERE app_id = $1 ORDER BY number DESC LIMIT 1000"),
            [id.as_uuid().into()],
        ))
        .all(&self.db)
        .await
        .context("listing app versions")?
        .into_iter()
        .map(AppVersion::try_from)
        .collect()
    }

    async fn version(&self, id: AppId, number: u32) -> Result<Option<AppVersion>, AppsError> {
        let Ok(number) = i32::try_from(number) else {
            return Ok(None);
        };
        VersionRow::find_by_statement(stmt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM app_versions WHERE app_id = $1 AND number = $2"
            ),
            [id.as_uuid().into(), number.into()],
        ))
        .one(&self.db)
        .await
        .context("reading an app version")?
        .map(AppVersion::try_from)
        .transpose()
    }
}

#[derive(FromQueryResult)]
struct ConversationRow {
    conversation_id: uuid::Uuid,
}

#[async_trait]
impl EndUsers for PgApps {
    async fn conversation(
        &self,
        app: AppId,
        end_user: &str,
    ) -> Result<Option<ConversationId>, AppsError> {
        Ok(ConversationRow::find_by_statement(stmt(
            "SELECT conversation_id FROM app_end_users WHERE app_id = $1 AND end_user = $2",
            [app.as_uuid().into(), end_user.into()],
        ))
        .one(&self.db)
        .await
        .context("reading an end user's conversation")?
        .map(|r| ConversationId::from_uuid(r.conversation_id)))
    }

    async fn bind(
        &self,
        app: AppId,
        end_user: &str,
        conversation: ConversationId,
        expired: Option<ConversationId>,
        at: DateTime<Utc>,
    ) -> Result<ConversationId, AppsError> {
        // Inserted, or replacing the expired one; a concurrent first call's binding wins.
        let row = ConversationRow::find_by_statement(stmt(
            "INSERT INTO app_end_users (app_id, end_user, conversation_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, end_user) DO UPDATE SET conversation_id = CASE \
                 WHEN app_end_users.conversation_id = $5 THEN EXCLUDED.conversation_id \
                 ELSE app_end_users.conversation_id END \
             RETURNING conversation_id",
            [
                app.as_uuid().into(),
                end_user.into(),
                conversation.as_uuid().into(),
                at.into(),
                expired.map(|c| c.as_uuid()).into(),
            ],
        ))
        .one(&self.db)
        .await
        .context("binding an end user's conversation")?
        .context("the binding's row")?;
        Ok(ConversationId::from_uuid(row.conversation_id))
    }
}

/// The call log.
#[derive(Clone)]
pub struct PgMessages {
    db: DatabaseConnection,
}

impl PgMessages {
    /// The log over `db`.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

const MESSAGE_COLUMNS: &str = "id, app_id, version, key_id, end_user, question, answer, citations, status, http_status, stream, latency_ms, ttft_ms, prompt_tokens, completion_tokens, feedback, feedback_comment, created_at";

#[derive(FromQueryResult)]
struct MessageRow {
    id: uuid::Uuid,
    app_id: uuid::Uuid,
    version: i32,
    key_id: Option<uuid::Uuid>,
    end_user: Option<String>,
    question: String,
    answer: Option<String>,
    citations: serde_json::Value,
    status: String,
    http_status: Option<i32>,
    stream: bool,
    latency_ms: Option<i64>,
    ttft_ms: Option<i64>,
    prompt_tokens: i64,
    completion_tokens: i64,
    feedback: Option<String>,
    feedback_comment: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<MessageRow> for AppMessage {
    type Error = AppsError;

    fn try_from(r: MessageRow) -> Result<Self, AppsError> {
        let citations: Vec<Citation> =
            serde_json::from_value(r.citations).map_err(|e| corrupt("app message", r.id, e))?;
        Ok(Self {
            id: r.id,
            app_id: AppId::from_uuid(r.app_id),
            version: u32_of(r.version, "app message", r.id)?,
            key_id: r.key_id,
            end_user: r.end_user,
            question: r.question,
            answer: r.answer,
            citations,
            status: MessageStatus::parse(&r.status)
                .ok_or_else(|| corrupt("app message", r.id, "status"))?,
            http_status: r.http_status.and_then(|s| u16::try_from(s).ok()),
            stream: r.stream,
            latency_ms: r.latency_ms.and_then(|v| u64::try_from(v).ok()),
            ttft_ms: r.ttft_ms.and_then(|v| u64::try_from(v).ok()),
            prompt_tokens: u64_of(Some(r.prompt_tokens)),
            completion_tokens: u64_of(Some(r.completion_tokens)),
            feedback: r.feedback.as_deref().and_then(Rating::parse),
            feedback_comment: r.feedback_comment,
            created_at: r.created_at,
        })
    }
}

#[derive(FromQueryResult)]
struct UsageRow {
    day: NaiveDate,
    messages: i64,
    end_users: i64,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    up: i64,
    down: i64,
}

#[async_trait]
impl MessageLog for PgMessages {
    async fn insert(&self, m: &AppMessage) -> Result<(), AppsError> {
        let citations =
            serde_json::to_value(&m.citations).map_err(|e| AppsError::Unexpected(e.into()))?;
        self.db
            .execute(stmt(
                "INSERT INTO app_messages (id, app_id, version, key_id, end_user, question, citations, status, stream, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                [
                    m.id.into(),
                    m.app_id.as_uuid().into(),
                    i32::try_from(m.version).unwrap_or(i32::MAX).into(),
                    m.key_id.into(),
                    m.end_user.clone().into(),
                    storable(&m.question).into(),
                    citations.into(),
                    m.status.as_str().into(),
                    m.stream.into(),
                    m.created_at.into(),
                ],
            ))
            .await
            .context("logging an app call")?;
        Ok(())
    }

    async fn finish(&self, id: uuid::Uuid, end: &MessageEnd) -> Result<(), AppsError> {
        self.db
            .execute(stmt(
                "UPDATE app_messages SET status = $2, http_status = $3, answer = $4, latency_ms = $5, ttft_ms = $6, \
                 prompt_tokens = $7, completion_tokens = $8 WHERE id = $1 AND status = 'pending'",
                [
                    id.into(),
                    end.status.as_str().into(),
                    i32::from(end.http_status).into(),
                    end.answer.as_deref().map(storable).into(),
                    i64_of(end.latency_ms).into(),
                    end.ttft_ms.map(i64_of).into(),
                    i64_of(end.prompt_tokens).into(),
                    i64_of(end.completion_tokens).into(),
                ],
            ))
            .await
            .context("finishing an app call's log row")?;
        Ok(())
    }

    async fn get(&self, app: AppId, id: uuid::Uuid) -> Result<Option<AppMessage>, AppsError> {
        MessageRow::find_by_statement(stmt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM app_messages WHERE app_id = $1 AND id = $2"),
            [app.as_uuid().into(), id.into()],
        ))
        .one(&self.db)
        .await
        .context("reading an app message")?
        .map(AppMessage::try_from)
        .transpose()
    }

    async fn list(
        &self,
        app: AppId,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> Result<Page<AppMessage>, AppsError> {
        let rows = MessageRow::find_by_statement(stmt(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM app_messages WHERE app_id = $1 AND ($2::uuid IS NULL OR id < $2) \
                 AND ($3::text IS NULL OR end_user = $3) ORDER BY id DESC LIMIT $4"
            ),
            [
                app.as_uuid().into(),
                page.after().map(maas_shared::paging::Cursor::id).into(),
                filter.end_user.clone().into(),
                i64::from(page.limit() + 1).into(),
            ],
        ))
        .all(&self.db)
        .await
        .context("listing app messages")?;
        let messages = rows
            .into_iter()
            .map(AppMessage::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(messages, page, |m| m.id))
    }

    async fn feedback(
        &self,
        app: AppId,
        id: uuid::Uuid,
        rating: Rating,
        comment: Option<&str>,
    ) -> Result<bool, AppsError> {
        let done = self
            .db
            .execute(stmt(
                "UPDATE app_messages SET feedback = $3, feedback_comment = $4 WHERE app_id = $1 AND id = $2",
                [app.as_uuid().into(), id.into(), rating.as_str().into(), comment.map(str::to_owned).into()],
            ))
            .await
            .context("recording feedback")?;
        Ok(done.rows_affected() > 0)
    }

    async fn usage(
        &self,
        app: AppId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageDay>, AppsError> {
        let rows = UsageRow::find_by_statement(stmt(
            "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, COUNT(*) AS messages, COUNT(DISTINCT end_user) AS end_users, \
             SUM(prompt_tokens)::bigint AS prompt_tokens, SUM(completion_tokens)::bigint AS completion_tokens, \
             COUNT(*) FILTER (WHERE feedback = 'up') AS up, COUNT(*) FILTER (WHERE feedback = 'down') AS down \
             FROM app_messages WHERE app_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY 1 ORDER BY 1",
            [app.as_uuid().into(), from.into(), to.into()],
        ))
        .all(&self.db)
        .await
        .context("summing an app's use")?;
        Ok(rows
            .into_iter()
            .map(|r| UsageDay {
                day: r.day,
                messages: u64_of(Some(r.messages)),
                end_users: u64_of(Some(r.end_users)),
                prompt_tokens: u64_of(r.prompt_tokens),
                completion_tokens: u64_of(r.completion_tokens),
                up: u64_of(Some(r.up)),
                down: u64_of(Some(r.down)),
            })
            .collect())
    }
}
