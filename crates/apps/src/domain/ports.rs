//! What this context needs from outside: its storage. (The model call, retrieval,
//! conversations and keys come from the other contexts' published contracts.)

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_inference::contract::ConversationId;
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::UserId;

use super::app::{App, AppId, AppVersion};
use super::errors::AppsError;
use super::message::{AppMessage, MessageEnd, Rating, UsageDay};

/// Apps and their versions.
#[async_trait]
pub trait AppRepository: Send + Sync + 'static {
    /// Stores a new app, with its audit event, in one transaction.
    ///
    /// # Errors
    /// [`AppsError::NameTaken`]; storage failure.
    async fn insert(&self, app: &App, audit: NewAuditEvent) -> Result<(), AppsError>;

    /// One app.
    ///
    /// # Errors
    /// Storage failure.
    async fn get(&self, id: AppId) -> Result<Option<App>, AppsError>;

    /// The owner's apps, oldest first.
    ///
    /// # Errors
    /// Storage failure.
    async fn list(&self, owner: UserId, page: &PageRequest) -> Result<Page<App>, AppsError>;

    /// Writes name, description, draft and published version (and `updated_at`).
    ///
    /// # Errors
    /// [`AppsError::NameTaken`]; [`AppsError::NotFound`]; storage failure.
    async fn update(&self, app: &App, audit: NewAuditEvent) -> Result<(), AppsError>;

    /// Deletes an app with its versions, end users and log.
    ///
    /// # Errors
    /// Storage failure.
    async fn delete(
        &self,
        id: AppId,
        audit: NewAuditEvent,
        at: DateTime<Utc>,
    ) -> Result<bool, AppsError>;

    /// Snapshots `config`-bearing `version` (numbered after the last one, whatever number it
    /// holds) and makes it the published one, in one transaction; answers it as stored.
    ///
    /// # Errors
    /// [`AppsError::NotFound`]; storage failure.
    async fn publish(
        &self,
        version: AppVersion,
        audit: NewAuditEvent,
    ) -> Result<AppVersion, AppsError>;

    /// The app's versions, newest first.
    ///
    /// # Errors
    /// Storage failure.
    async fn versions(&self, id: AppId) -> Result<Vec<AppVersion>, AppsError>;

    /// One version.
    ///
    /// # Errors
    /// Storage failure.
    async fn version(&self, id: AppId, number: u32) -> Result<Option<AppVersion>, AppsError>;
}

/// The conversation each end user of an app continues.
#[async_trait]
pub trait EndUsers: Send + Sync + 'static {
    /// The end user's conversation, if they have one.
    ///
    /// # Errors
    /// Storage failure.
    async fn conversation(
        &self,
        app: AppId,
        end_user: &str,
    ) -> Result<Option<ConversationId>, AppsError>;

    /// Binds the end user to `conversation` unless they are bound to another already (then
    /// answers that one: two first calls at once share one conversation), or replaces
    /// `expired` with it.
    ///
    /// # Errors
    /// Storage failure.
    async fn bind(
        &self,
        app: AppId,
        end_user: &str,
        conversation: ConversationId,
        expired: Option<ConversationId>,
        at: DateTime<Utc>,
    ) -> Result<ConversationId, AppsError>;
}

/// Filters of the message log.
#[derive(Clone, Debug, Default)]
pub struct MessageFilter {
    /// One end user's.
    pub end_user: Option<String>,
}

/// The log of an app's calls.
#[async_trait]
pub trait MessageLog: Send + Sync + 'static {
    /// Logs an admitted call.
    ///
    /// # Errors
    /// Storage failure.
    async fn insert(&self, message: &AppMessage) -> Result<(), AppsError>;

    /// Writes how a call ended.
    ///
    /// # Errors
    /// Storage failure.
    async fn finish(&self, id: uuid::Uuid, end: &MessageEnd) -> Result<(), AppsError>;

    /// One message of `app`.
    ///
    /// # Errors
    /// Storage failure.
    async fn get(&self, app: AppId, id: uuid::Uuid) -> Result<Option<AppMessage>, AppsError>;

    /// The app's messages, newest first.
    ///
    /// # Errors
    /// Storage failure.
    async fn list(
        &self,
        app: AppId,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> Result<Page<AppMessage>, AppsError>;

    /// Sets a message's feedback (replacing an earlier one).
    ///
    /// # Errors
    /// Storage failure.
    async fn feedback(
        &self,
        app: AppId,
        id: uuid::Uuid,
        rating: Rating,
        comment: Option<&str>,
    ) -> Result<bool, AppsError>;

    /// Use by day in `[from, to)`, oldest first.
    ///
    /// # Errors
    /// Storage failure.
    async fn usage(
        &self,
        app: AppId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageDay>, AppsError>;
}
