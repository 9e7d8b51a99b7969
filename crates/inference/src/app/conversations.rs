//! Conversations: CRUD, context for chat calls, recording exchanges, export, expiry.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt as _;
use futures_util::stream::{self, BoxStream};
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::Principal;
use uuid::Uuid;

use crate::domain::conversation::{
    Conversation, ConversationId, ExportRow, Message, MessageRole, parse_content, parse_title,
    storable,
};
use crate::domain::errors::{InferenceError, InvalidValue};
use crate::domain::ports::{ConversationRepository, ExportFilter};

/// Tunables.
#[derive(Clone, Copy, Debug)]
pub struct ConversationConfig {
    /// Messages of history added to a chat call.
    pub context_messages: u32,
    /// Inactivity after which a conversation is deleted.
    pub ttl: Duration,
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A JSON array of message objects.
    Json,
    /// CSV with a header row; cells that a spreadsheet would run as formulas are defused.
    Csv,
}

impl ExportFormat {
    /// `json` or `csv`.
    ///
    /// # Errors
    /// [`InvalidValue`] naming `format`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            _ => Err(InvalidValue::new("format", "json or csv")),
        }
    }

    /// The response content type.
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Conversation use cases.
#[derive(Clone)]
pub struct ConversationService {
    repo: Arc<dyn ConversationRepository>,
    clock: Arc<dyn Clock>,
    config: ConversationConfig,
}

impl ConversationService {
    /// The service.
    #[must_use]
    pub fn new(
        repo: Arc<dyn ConversationRepository>,
        clock: Arc<dyn Clock>,
        config: ConversationConfig,
    ) -> Self {
        Self {
            repo,
            clock,
            config,
        }
    }

    /// Starts a conversation.
    ///
    /// # Errors
    /// Invalid title.
    pub async fn create(
        &self,
        principal: &Principal,
        title: Option<&str>,
        model: Option<String>,
    ) -> Result<Conversation, InferenceError> {
        let title = parse_title(title.unwrap_or("New conversation"))?;
        if model
            .as_ref()
            .is_some_and(|m| m.is_empty() || m.chars().count() > 200)
        {
            return Err(InvalidValue::new("model", "1 to 200 characters").into());
        }
        let conversation = Conversation::start(principal.user_id(), title, model, self.clock.now());
        self.repo.insert(&conversation).await?;
        Ok(conversation)
    }

    /// One of the caller's conversations.
    ///
    /// # Errors
    /// [`InferenceError::ConversationNotFound`] for unknown or foreign ids.
    #[tracing::instrument(name = "conversations.get", skip_all, fields(user.id = %principal.user_id(), conversation.id = %id))]
    pub async fn get(
        &self,
        principal: &Principal,
        id: ConversationId,
    ) -> Result<Conversation, InferenceError> {
        self.repo
            .find_owned(principal.user_id(), id)
            .await?
            .ok_or(InferenceError::ConversationNotFound)
    }

    /// The caller's conversations, newest first.
    ///
    /// # Errors
    /// Storage failure.
    pub async fn list(
        &self,
        principal: &Principal,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, InferenceError> {
        self.repo.list(principal.user_id(), page).await
    }

    /// Renames one of the caller's conversations.
    ///
    /// # Errors
    /// Not found; invalid title.
    #[tracing::instrument(name = "conversations.rename", skip_all, fields(user.id = %principal.user_id(), conversation.id = %id))]
    pub async fn rename(
        &self,
        principal: &Principal,
        id: ConversationId,
        title: &str,
    ) -> Result<Conversation, InferenceError> {
        let title = parse_title(title)?;
        let mut conversation = self.get(principal, id).await?;
        let now = self.clock.now();
        self.repo.rename(id, &title, now).await?;
        conversation.rename(title, now);
        Ok(conversation)
    }

    /// Deletes one of the caller's conversations and its messages.
    ///
    /// # Errors
    /// [`InferenceError::ConversationNotFound`].
    #[tracing::instrument(name = "conversations.delete", skip_all, fields(user.id = %principal.user_id(), conversation.id = %id))]
    pub async fn delete(
        &self,
        principal: &Principal,
        id: ConversationId,
    ) -> Result<(), InferenceError> {
        if self.repo.delete(principal.user_id(), id).await? {
            Ok(())
        } else {
            Err(InferenceError::ConversationNotFound)
        }
    }

    /// Adds a message by hand.
    ///
    /// # Errors
    /// Not found; invalid role or content.
    #[tracing::instrument(name = "conversations.add_message", skip_all, fields(user.id = %principal.user_id(), conversation.id = %id))]
    pub async fn add_message(
        &self,
        principal: &Principal,
        id: ConversationId,
        role: &str,
        content: &str,
    ) -> Result<Message, InferenceError> {
        let mut errors = Vec::new();
        let role = MessageRole::parse(role).map_err(|e| errors.push(e)).ok();
        let content = parse_content(content).map_err(|e| errors.push(e)).ok();
        let (Some(role), Some(content)) = (role, content) else {
            return Err(InferenceError::Invalid(errors));
        };
        let conversation = self.get(principal, id).await?;
        let message = Message {
            id: Uuid::now_v7(),
            conversation_id: id,
            role,
            content,
            created_at: self.clock.now(),
        };
        self.repo
            .append(&conversation, std::slice::from_ref(&message))
            .await?;
        Ok(message)
    }

    /// A conversation's messages in order.
    ///
    /// # Errors
    /// Not found.
    #[tracing::instrument(name = "conversations.messages", skip_all, fields(user.id = %principal.user_id(), conversation.id = %id))]
    pub async fn messages(
        &self,
        principal: &Principal,
        id: ConversationId,
        page: &PageRequest,
    ) -> Result<Page<Message>, InferenceError> {
        self.get(principal, id).await?;
        self.repo.messages(id, page).await
    }

    /// The conversation and its last messages, to prepend to a chat call.
    ///
    /// # Errors
    /// [`InferenceError::ConversationNotFound`].
    pub async fn context(
        &self,
        principal: &Principal,
        id: ConversationId,
    ) -> Result<(Conversation, Vec<Message>), InferenceError> {
        let conversation = self.get(principal, id).await?;
        let history = self
            .repo
            .last_messages(id, self.config.context_messages)
            .await?;
        Ok((conversation, history))
    }

    /// Stores what the caller sent and what the model answered.
    ///
    /// # Errors
    /// Storage failure.
    #[tracing::instrument(name = "conversations.record_exchange", skip_all, fields(conversation.id = %conversation.id()))]
    pub async fn record_exchange(
        &self,
        conversation: &Conversation,
        sent: &[(MessageRole, String)],
        answer: &str,
    ) -> Result<(), InferenceError> {
        let now = self.clock.now();
        let mut messages: Vec<Message> = sent
            .iter()
            .map(|(role, content)| Message {
                id: Uuid::now_v7(),
                conversation_id: conversation.id(),
                role: *role,
                content: storable(content)
                    .chars()
                    .take(crate::domain::conversation::MAX_CONTENT)
                    .collect(),
                created_at: now,
            })
            .collect();
        messages.push(Message {
            id: Uuid::now_v7(),
            conversation_id: conversation.id(),
            role: MessageRole::Assistant,
            content: storable(answer),
            created_at: now,
        });
        self.repo.append(conversation, &messages).await
    }

    /// Streams the caller's messages (one conversation or all) within a time range as JSON or
    /// CSV, in constant memory.
    ///
    /// # Errors
    /// Not found (for a foreign conversation); an invalid range.
    pub async fn export(
        &self,
        principal: &Principal,
        conversation: Option<ConversationId>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        format: ExportFormat,
    ) -> Result<BoxStream<'static, Result<Bytes, InferenceError>>, InferenceError> {
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(InvalidValue::new("from", "must be before `to`").into());
        }
        if let Some(id) = conversation {
            self.get(principal, id).await?;
        }
        let rows = self
            .repo
            .export(ExportFilter {
                user_id: principal.user_id(),
                conversation_id: conversation,
                from,
                to,
            })
            .await?;
        Ok(encode(rows, format))
    }

    /// Deletes conversations idle for longer than the configured period.
    ///
    /// # Errors
    /// Storage failure.
    #[tracing::instrument(name = "conversations.expire", skip_all)]
    pub async fn expire(&self) -> Result<u64, InferenceError> {
        self.repo.expire(self.clock.now() - self.config.ttl).await
    }
}

/// A cell a spreadsheet would evaluate as a formula gets a leading apostrophe.
fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// Rows are encoded in batches: one chunk (and one write) per batch, not per row.
const BATCH_ROWS: usize = 512;

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().from_writer(Vec::with_capacity(64 * 1024))
}

fn write_csv(writer: &mut csv::Writer<Vec<u8>>, fields: &[&str]) -> Result<(), InferenceError> {
    let fail = |e: csv::Error| InferenceError::Unexpected(e.into());
    for field in fields {
        writer.write_field(defuse(field).as_bytes()).map_err(fail)?;
    }
    // An empty record ends the current one.
    writer.write_record(None::<&[u8]>).map_err(fail)
}

fn finish_csv(writer: csv::Writer<Vec<u8>>) -> Result<Bytes, InferenceError> {
    writer
        .into_inner()
        .map(Bytes::from)
        .map_err(|e| InferenceError::Unexpected(anyhow::anyhow!("csv: {e}")))
}

fn csv_line(fields: &[&str]) -> Result<Bytes, InferenceError> {
    let mut writer = csv_writer();
    write_csv(&mut writer, fields)?;
    finish_csv(writer)
}

fn csv_batch(batch: Vec<Result<ExportRow, InferenceError>>) -> Result<Bytes, InferenceError> {
    let mut writer = csv_writer();
    for row in batch {
        let row = row?;
        let (conversation, message, at) = (
            row.conversation_id.to_string(),
            row.message_id.to_string(),
            row.created_at.to_rfc3339(),
        );
        write_csv(
            &mut writer,
            &[
                &conversation,
                &row.title,
                &message,
                &row.role,
                &row.content,
                &at,
            ],
        )?;
    }
    finish_csv(writer)
}

fn json_batch(
    batch: Vec<Result<ExportRow, InferenceError>>,
    first: &mut bool,
) -> Result<Bytes, InferenceError> {
    let mut out = Vec::with_capacity(64 * 1024);
    for row in batch {
        let row = row?;
        if !std::mem::take(first) {
            out.extend_from_slice(b",\n");
        }
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "conversation_id": row.conversation_id,
                "conversation_title": row.title,
                "message_id": row.message_id,
                "role": row.role,
                "content": row.content,
                "created_at": row.created_at,
            }),
        )
        .map_err(|e| InferenceError::Unexpected(e.into()))?;
    }
    Ok(Bytes::from(out))
}

fn encode(
    rows: BoxStream<'static, Result<ExportRow, InferenceError>>,
    format: ExportFormat,
) -> BoxStream<'static, Result<Bytes, InferenceError>> {
    let batches = rows.ready_chunks(BATCH_ROWS);
    match format {
        ExportFormat::Csv => {
            let header = csv_line(&[
                "conversation_id",
                "conversation_title",
                "message_id",
                "role",
                "content",
                "created_at",
            ]);
            stream::once(async move { header })
                .chain(batches.map(csv_batch))
                .boxed()
        }
        ExportFormat::Json => {
            let body = batches.scan(true, |first, batch| {
                let chunk = json_batch(batch, first);
                async move { Some(chunk) }
            });
            stream::once(async { Ok(Bytes::from_static(b"[\n")) })
                .chain(body)
                .chain(stream::once(async { Ok(Bytes::from_static(b"\n]\n")) }))
                .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused_and_quoting_is_csv() {
        assert_eq!(defuse("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(defuse("@cmd"), "'@cmd");
        assert_eq!(defuse("plain"), "plain");
        let line = csv_line(&["a,b", "say \"hi\"", "-1+1"]).unwrap();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",'-1+1\n"
        );
    }
}
