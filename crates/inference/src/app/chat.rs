//! Chat for other contexts (an app's endpoint): the same metered call as
//! `/v1/chat/completions`, with a preamble the caller built (an app's system prompt and
//! retrieved context) that goes before a conversation's history and is not stored with it,
//! and a hook that learns what the call came to. Conversations are reached through
//! [`Conversations`].

use std::sync::Arc;

use async_trait::async_trait;
use maas_user::contract::Principal;
use serde_json::Value;

use super::conversations::ConversationService;
use super::gateway::{Call, Endpoint, GatewayService, Proxied};
use super::settlement::OnSettled;
use crate::domain::conversation::ConversationId;
use crate::domain::errors::InferenceError;

/// One chat call another context makes.
pub struct ChatRequest {
    /// An OpenAI chat request (`model`, `messages`, parameters, `stream`, `stream_options`).
    pub body: Value,
    /// How many leading messages are the caller's preamble.
    pub preamble: usize,
    /// The conversation the call continues (its history goes after the preamble; the messages
    /// after the preamble and the answer are stored in it).
    pub conversation: Option<ConversationId>,
    /// Runs with what the call came to once it is settled.
    pub on_settled: Option<OnSettled>,
}

/// Chat completions through the metered gateway, as `principal` (under its limits, charged to
/// its owner). The contract other contexts depend on.
#[async_trait]
pub trait ChatPort: Send + Sync + 'static {
    /// Proxies one chat call; a streamed answer is metered as it passes.
    ///
    /// # Errors
    /// [`InferenceError::Invalid`] for a malformed body; [`InferenceError::ModelNotFound`];
    /// [`InferenceError::ConversationNotFound`]; rate limit and quota refusals;
    /// [`InferenceError::UpstreamUnavailable`] when no upstream answered.
    async fn chat(
        &self,
        principal: Arc<Principal>,
        request: ChatRequest,
    ) -> Result<Proxied, InferenceError>;

    /// Whether `model` is served to `principal`.
    ///
    /// # Errors
    /// Storage failures.
    async fn serves_chat(&self, principal: &Principal, model: &str)
    -> Result<bool, InferenceError>;
}

#[async_trait]
impl ChatPort for GatewayService {
    async fn chat(
        &self,
        principal: Arc<Principal>,
        request: ChatRequest,
    ) -> Result<Proxied, InferenceError> {
        let ChatRequest {
            mut body,
            preamble,
            conversation,
            on_settled,
        } = request;
        if let (Some(id), Some(object)) = (conversation, body.as_object_mut()) {
            object.insert("conversation_id".into(), Value::String(id.to_string()));
        }
        let call = Call::parse(Endpoint::Chat, body)?.with_preamble(preamble);
        self.proxy_with(principal, call, on_settled).await
    }

    async fn serves_chat(
        &self,
        principal: &Principal,
        model: &str,
    ) -> Result<bool, InferenceError> {
        Ok(self.models(principal).await?.iter().any(|m| m.id == model))
    }
}

/// One stored message of a conversation, as another context reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryMessage {
    /// `user`, `assistant` or `system`.
    pub role: &'static str,
    /// Text.
    pub content: String,
}

/// Conversations for another context: an app keeps one per end user, owned by the app's
/// owner (so they expire and export with the owner's others).
#[async_trait]
pub trait Conversations: Send + Sync + 'static {
    /// Starts a conversation of `principal`'s user.
    ///
    /// # Errors
    /// Invalid title; storage failure.
    async fn start(
        &self,
        principal: &Principal,
        title: &str,
        model: Option<String>,
    ) -> Result<ConversationId, InferenceError>;

    /// The messages a call continuing `id` would be given (`None` when it no longer exists:
    /// expired or deleted).
    ///
    /// # Errors
    /// Storage failure.
    async fn history(
        &self,
        principal: &Principal,
        id: ConversationId,
    ) -> Result<Option<Vec<HistoryMessage>>, InferenceError>;
}

#[async_trait]
impl Conversations for ConversationService {
    async fn start(
        &self,
        principal: &Principal,
        title: &str,
        model: Option<String>,
    ) -> Result<ConversationId, InferenceError> {
        Ok(self.create(principal, Some(title), model).await?.id())
    }

    async fn history(
        &self,
        principal: &Principal,
        id: ConversationId,
    ) -> Result<Option<Vec<HistoryMessage>>, InferenceError> {
        match self.context(principal, id).await {
            Ok((_, messages)) => Ok(Some(
                messages
                    .into_iter()
                    .map(|m| HistoryMessage {
                        role: m.role.as_str(),
                        content: m.content,
                    })
                    .collect(),
            )),
            Err(InferenceError::ConversationNotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }
}
