//! What the gateway needs from outside: provider storage, sealing of upstream keys, an HTTP
//! client for upstreams, and a sink for usage records.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use maas_user::contract::UserId;

use super::conversation::{Conversation, ConversationId, ExportRow, Message};
use super::errors::InferenceError;
use super::provider::{Provider, ProviderId};
use super::usage::{UsageQuery, UsageRow};

/// Persistence of providers.
#[async_trait]
pub trait ProviderRepository: Send + Sync + 'static {
    /// Stores a new provider with its routes.
    ///
    /// # Errors
    /// [`InferenceError::ProviderNameTaken`]; [`InferenceError::Unexpected`] on storage failure.
    async fn insert(&self, provider: &Provider) -> Result<(), InferenceError>;

    /// Every provider, oldest first.
    ///
    /// # Errors
    /// [`InferenceError::Unexpected`] on storage failure.
    async fn list(&self) -> Result<Vec<Provider>, InferenceError>;

    /// Deletes a provider; `false` when there was none.
    ///
    /// # Errors
    /// [`InferenceError::Unexpected`] on storage failure.
    async fn delete(&self, id: ProviderId) -> Result<bool, InferenceError>;
}

/// Encrypts upstream keys at rest.
pub trait KeySealer: Send + Sync + 'static {
    /// Encrypts a key.
    fn seal(&self, plaintext: &str) -> Vec<u8>;

    /// Decrypts a key.
    ///
    /// # Errors
    /// [`InferenceError::Unexpected`] for a wrong platform key or corrupt data.
    fn open(&self, sealed: &[u8]) -> Result<String, InferenceError>;
}

/// A request to an upstream.
#[derive(Clone)]
pub struct UpstreamRequest {
    /// Full URL.
    pub url: String,
    /// Bearer key, if any (never logged).
    pub api_key: Option<std::sync::Arc<str>>,
    /// JSON body.
    pub body: Bytes,
}

/// An upstream's answer, its body still streaming.
pub struct UpstreamResponse {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: Option<String>,
    /// Body chunks as they arrive; an error ends the stream.
    pub body: BoxStream<'static, Result<Bytes, UpstreamFailure>>,
}

/// Why an upstream call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamFailure {
    /// Could not connect or send.
    #[error("connect: {0}")]
    Connect(String),
    /// No first byte in time, or a stall between chunks.
    #[error("timed out")]
    Timeout,
    /// The body broke off.
    #[error("body: {0}")]
    Body(String),
}

/// HTTP to upstreams.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Sends a POST and returns once the status line and headers have arrived.
    ///
    /// # Errors
    /// [`UpstreamFailure`] when no response arrived.
    async fn post(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamFailure>;
}

/// Reading usage back.
#[async_trait]
pub trait UsageReports: Send + Sync + 'static {
    /// Aggregates usage records.
    ///
    /// # Errors
    /// [`InferenceError::Unexpected`] on storage failure.
    async fn report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, InferenceError>;
}

/// Exact-match cache of deterministic answers, namespaced per user.
#[async_trait]
pub trait ResponseCache: Send + Sync + 'static {
    /// The cached answer to exactly this request body of this user.
    async fn get(&self, user: UserId, request: &[u8]) -> Option<Bytes>;

    /// Stores an answer (failures are logged, never surfaced: the cache is an optimisation).
    async fn put(&self, user: UserId, request: &[u8], response: Bytes);
}

/// Export filter: one user's messages, optionally one conversation, within a time range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFilter {
    /// Owner.
    pub user_id: UserId,
    /// One conversation only.
    pub conversation_id: Option<ConversationId>,
    /// Messages at or after.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Messages before.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

/// Persistence of conversations.
#[async_trait]
pub trait ConversationRepository: Send + Sync + 'static {
    /// Stores a new conversation.
    ///
    /// # Errors
    /// Storage failure.
    async fn insert(&self, conversation: &Conversation) -> Result<(), InferenceError>;

    /// The conversation if `user` owns it.
    ///
    /// # Errors
    /// Storage failure.
    async fn find_owned(
        &self,
        user: UserId,
        id: ConversationId,
    ) -> Result<Option<Conversation>, InferenceError>;

    /// The user's conversations, newest first.
    ///
    /// # Errors
    /// Storage failure.
    async fn list(
        &self,
        user: UserId,
        page: &maas_shared::paging::PageRequest,
    ) -> Result<maas_shared::paging::Page<Conversation>, InferenceError>;

    /// Renames.
    ///
    /// # Errors
    /// Storage failure.
    async fn rename(
        &self,
        id: ConversationId,
        title: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), InferenceError>;

    /// Deletes with its messages; `false` if there was none.
    ///
    /// # Errors
    /// Storage failure.
    async fn delete(&self, user: UserId, id: ConversationId) -> Result<bool, InferenceError>;

    /// Appends messages and marks activity, in one transaction.
    ///
    /// # Errors
    /// Storage failure.
    async fn append(
        &self,
        conversation: &Conversation,
        messages: &[Message],
    ) -> Result<(), InferenceError>;

    /// Messages in order, paged.
    ///
    /// # Errors
    /// Storage failure.
    async fn messages(
        &self,
        id: ConversationId,
        page: &maas_shared::paging::PageRequest,
    ) -> Result<maas_shared::paging::Page<Message>, InferenceError>;

    /// The last `n` messages, oldest first.
    ///
    /// # Errors
    /// Storage failure.
    async fn last_messages(
        &self,
        id: ConversationId,
        n: u32,
    ) -> Result<Vec<Message>, InferenceError>;

    /// Streams matching messages in time order without holding them all in memory.
    ///
    /// # Errors
    /// Storage failure before the first row; later failures end the stream with an error item.
    async fn export(
        &self,
        filter: ExportFilter,
    ) -> Result<BoxStream<'static, Result<ExportRow, InferenceError>>, InferenceError>;

    /// Deletes conversations idle since before `cutoff`; returns how many.
    ///
    /// # Errors
    /// Storage failure.
    async fn expire(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, InferenceError>;
}
