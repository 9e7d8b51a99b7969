//! An app's endpoint: a call as one of its keys becomes the published version's prompt (its
//! variables, the passages retrieved for the question within the context budget, the end
//! user's conversation, their new message), a metered chat call as that key (charged to the
//! owner, under the key's limits), citations and a log row. A preview builds the same prompt
//! for the owner without calling the model.

use std::sync::Arc;

use maas_inference::contract::{
    ChatPort, ChatRequest, ConversationId, Conversations, InferenceError, Proxied, Settled,
};
use maas_knowledge::contract::{BaseId, KnowledgeError, Retrieval, Retriever};
use maas_shared::clock::Clock;
use maas_shared::tasks::Background;
use maas_user::contract::{Actor, Principal, Principals};
use serde_json::{Value, json};

use super::apps::AppService;
use crate::domain::app::{App, AppId, parse_end_user};
use crate::domain::call::{EndpointCall, upstream_request};
use crate::domain::config::AppConfig;
use crate::domain::errors::{AppsError, bad};
use crate::domain::message::{AppMessage, Citation, MessageEnd, MessageStatus, Rating};
use crate::domain::ports::{AppRepository, EndUsers, MessageLog};
use crate::domain::prompt::{Passage, quote, resolve_variables, system_message, within_budget};

/// The ports of the endpoint.
#[derive(Clone)]
pub struct EndpointPorts {
    /// Apps and versions.
    pub apps: Arc<dyn AppRepository>,
    /// End users' conversations.
    pub end_users: Arc<dyn EndUsers>,
    /// The call log.
    pub messages: Arc<dyn MessageLog>,
    /// Passages of the app's bases (searched as the owner).
    pub retriever: Arc<dyn Retriever>,
    /// The model call.
    pub chat: Arc<dyn ChatPort>,
    /// End users' conversations (the inference context's).
    pub conversations: Arc<dyn Conversations>,
    /// The owner's principal (retrieval, conversations).
    pub principals: Arc<dyn Principals>,
    /// Where a call's log row is finished once its answer is settled.
    pub background: Arc<dyn Background>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// An answer of the endpoint.
pub struct EndpointAnswer {
    /// The model's answer, as the gateway proxied it.
    pub proxied: Proxied,
    /// The log row of the call (for feedback).
    pub message_id: uuid::Uuid,
    /// The version that answered.
    pub version: u32,
    /// The passages the prompt held.
    pub citations: Vec<Citation>,
    /// The model that answered.
    pub model: String,
    /// When the call came (Unix seconds).
    pub created: i64,
}

/// Which configuration a preview builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewOf {
    /// The draft.
    Draft,
    /// The published version.
    Published,
    /// A version.
    Version(u32),
}

/// What a call would send.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    /// The version previewed (`None`: the draft).
    pub version: Option<u32>,
    /// The request body the model would get (with the end user's history in place).
    pub request: Value,
    /// The retrieved passages, best first, with their text.
    pub passages: Vec<Passage>,
    /// Their citations.
    pub citations: Vec<Citation>,
}

/// The endpoint's use cases.
#[derive(Clone)]
pub struct EndpointService {
    ports: EndpointPorts,
    apps: AppService,
}

/// A prompt ready to send.
struct Prepared {
    body: Value,
    preamble: usize,
    passages: Vec<Passage>,
    citations: Vec<Citation>,
}

impl EndpointService {
    /// The service (previews check ownership through `apps`).
    #[must_use]
    pub fn new(ports: EndpointPorts, apps: AppService) -> Self {
        Self { ports, apps }
    }

    async fn owner(&self, app: &App) -> Result<Arc<Principal>, AppsError> {
        self.ports
            .principals
            .of_user(app.owner)
            .await?
            .ok_or(AppsError::NotFound)
    }

    /// The published app a key may call (its own app, published), its version and that
    /// version's configuration.
    ///
    /// # Errors
    /// [`AppsError::NotFound`] for another app or an unpublished one.
    pub async fn published(
        &self,
        key: &Principal,
        id: AppId,
    ) -> Result<(App, u32, AppConfig), AppsError> {
        if key.app() != Some(id.as_uuid()) {
            return Err(AppsError::NotFound);
        }
        let app = self.ports.apps.get(id).await?.ok_or(AppsError::NotFound)?;
        if app.owner != key.user_id() {
            return Err(AppsError::NotFound);
        }
        let number = app.published_version.ok_or(AppsError::NotFound)?;
        let version = self
            .ports
            .apps
            .version(id, number)
            .await?
            .ok_or(AppsError::NotFound)?;
        Ok((app, number, version.config))
    }

    /// The passages of the app's bases for `question`, within its budget.
    async fn retrieve(
        &self,
        owner: &Principal,
        config: &AppConfig,
        question: &str,
    ) -> Result<Vec<Passage>, AppsError> {
        let k = &config.knowledge;
        if k.bases.is_empty() || question.trim().is_empty() {
            return Ok(Vec::new());
        }
        let retrieval = Retrieval {
            mode: k.search_mode(),
            top_k: k.top_k,
            score_threshold: k.score_threshold,
            ..Retrieval::default()
        };
        let mut passages = Vec::new();
        for base in &k.bases {
            match self
                .ports
                .retriever
                .retrieve(owner, BaseId::from_uuid(*base), question, Some(retrieval))
                .await
            {
                Ok(hits) => passages.extend(hits.into_iter().map(|h| Passage {
                    base_id: *base,
                    document_id: h.chunk.document_id.as_uuid(),
                    file_name: h.chunk.file_name,
                    chunk_id: h.chunk.id,
                    position: h.chunk.position,
                    score: h.score,
                    content: h.chunk.content,
                })),
                Err(KnowledgeError::BaseNotFound) => {
                    tracing::warn!(base = %base, "an app's knowledge base is gone; answering without it");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(within_budget(passages, k.top_k, k.max_context_tokens))
    }

    async fn prepare(
        &self,
        owner: &Principal,
        config: &AppConfig,
        call: &EndpointCall,
    ) -> Result<Prepared, AppsError> {
        let values = resolve_variables(&config.variables, call.variables.as_ref())
            .map_err(AppsError::Variables)?;
        let passages = self.retrieve(owner, config, call.question()).await?;
        let system = system_message(config, &values, &passages);
        let (body, preamble) = upstream_request(config, &system, call);
        let citations = passages
            .iter()
            .enumerate()
            .map(|(i, p)| Citation {
                index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                knowledge_base_id: p.base_id,
                document_id: p.document_id,
                file_name: p.file_name.clone(),
                chunk_id: p.chunk_id,
                position: p.position,
                score: p.score,
                quote: quote(&p.content),
            })
            .collect();
        Ok(Prepared {
            body,
            preamble,
            passages,
            citations,
        })
    }

    /// The end user's conversation: theirs, or a new one.
    async fn conversation_of(
        &self,
        owner: &Principal,
        app: &App,
        end_user: &str,
        expired: Option<ConversationId>,
    ) -> Result<ConversationId, AppsError> {
        if expired.is_none()
            && let Some(id) = self.ports.end_users.conversation(app.id, end_user).await?
        {
            return Ok(id);
        }
        let title: String = format!("{} · {end_user}", app.name)
            .chars()
            .take(200)
            .collect();
        let started = self
            .ports
            .conversations
            .start(owner, &title, Some(app.draft.model.clone()))
            .await?;
        self.ports
            .end_users
            .bind(app.id, end_user, started, expired, self.ports.clock.now())
            .await
    }

    /// Answers one call of the app's endpoint with its published version.
    ///
    /// # Errors
    /// [`AppsError::NotFound`] for another app, an unpublished app; the call's bad fields and
    /// variables; retrieval failures; the gateway's refusals (limits, quota, no upstream).
    #[tracing::instrument(name = "apps.chat", skip_all, fields(app.id = %id))]
    pub async fn chat(
        &self,
        key: Arc<Principal>,
        id: AppId,
        body: Value,
    ) -> Result<EndpointAnswer, AppsError> {
        let (app, version, config) = self.published(&key, id).await?;
        let call = EndpointCall::parse(body)?;
        let owner = self.owner(&app).await?;
        let prepared = self.prepare(&owner, &config, &call).await?;
        let mut conversation = match &call.user {
            Some(user) => Some(self.conversation_of(&owner, &app, user, None).await?),
            None => None,
        };
        let (proxied, settled) = loop {
            let (tx, rx) = tokio::sync::oneshot::channel::<Settled>();
            let request = ChatRequest {
                body: prepared.body.clone(),
                preamble: prepared.preamble,
                conversation,
                on_settled: Some(Box::new(move |s| {
                    let _ = tx.send(s);
                })),
            };
            match self.ports.chat.chat(Arc::clone(&key), request).await {
                // The end user's conversation expired (or its owner deleted it): a new one.
                Err(InferenceError::ConversationNotFound) if conversation.is_some() => {
                    let user = call.user.as_deref().unwrap_or_default();
                    conversation = Some(
                        self.conversation_of(&owner, &app, user, conversation)
                            .await?,
                    );
                }
                Err(other) => return Err(other.into()),
                Ok(proxied) => break (proxied, rx),
            }
        };
        let message = AppMessage {
            id: uuid::Uuid::now_v7(),
            app_id: id,
            version,
            key_id: key.key_id().map(|k| k.as_uuid()),
            end_user: call.user.clone(),
            question: call.question().chars().take(20_000).collect(),
            answer: None,
            citations: prepared.citations.clone(),
            status: MessageStatus::Pending,
            http_status: None,
            stream: call.stream,
            latency_ms: None,
            ttft_ms: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            feedback: None,
            feedback_comment: None,
            created_at: self.ports.clock.now(),
        };
        let message_id = message.id;
        let created = message.created_at.timestamp();
        // The answer is on its way (or here): the log must not keep it from the caller.
        let logged = match self.ports.messages.insert(&message).await {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, app.id = %id, "could not log an app call");
                false
            }
        };
        if logged {
            let messages = Arc::clone(&self.ports.messages);
            self.ports.background.spawn(Box::pin(async move {
                let end = match settled.await {
                    Ok(s) => end_of(&s),
                    Err(_) => MessageEnd {
                        status: MessageStatus::Failed,
                        http_status: 499,
                        answer: None,
                        latency_ms: 0,
                        ttft_ms: None,
                        prompt_tokens: 0,
                        completion_tokens: 0,
                    },
                };
                if let Err(err) = messages.finish(message_id, &end).await {
                    tracing::error!(error = %err, message.id = %message_id, "could not finish an app call's log row");
                }
            }));
        }
        Ok(EndpointAnswer {
            proxied,
            message_id,
            version,
            citations: prepared.citations,
            model: config.model,
            created,
        })
    }

    /// The exact request a call would send (and the passages retrieved), for the owner;
    /// the model is not called and nothing is charged but the retrieval's embedding.
    ///
    /// # Errors
    /// Not found; the call's bad fields and variables; retrieval failures.
    pub async fn preview(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        of: PreviewOf,
        body: Value,
    ) -> Result<Preview, AppsError> {
        let app = self.apps.get(actor, id).await?;
        let (version, config) = match of {
            PreviewOf::Draft => (None, app.draft.clone()),
            PreviewOf::Published | PreviewOf::Version(_) => {
                let number = match of {
                    PreviewOf::Version(n) => n,
                    PreviewOf::Published | PreviewOf::Draft => {
                        app.published_version.ok_or(AppsError::VersionNotFound)?
                    }
                };
                let v = self
                    .ports
                    .apps
                    .version(id, number)
                    .await?
                    .ok_or(AppsError::VersionNotFound)?;
                (Some(number), v.config)
            }
        };
        let call = EndpointCall::parse(body)?;
        let owner = self.owner(&app).await?;
        let mut prepared = self.prepare(&owner, &config, &call).await?;
        if let Some(user) = &call.user
            && let Some(conversation) = self.ports.end_users.conversation(id, user).await?
            && let Some(history) = self
                .ports
                .conversations
                .history(&owner, conversation)
                .await?
            && let Some(Value::Array(messages)) = prepared.body.get_mut("messages")
        {
            let own = messages.split_off(prepared.preamble.min(messages.len()));
            messages.extend(
                history
                    .into_iter()
                    .map(|m| json!({"role": m.role, "content": m.content})),
            );
            messages.extend(own);
        }
        Ok(Preview {
            version,
            request: prepared.body,
            passages: prepared.passages,
            citations: prepared.citations,
        })
    }

    /// Records an end user's rating of an answer (replacing an earlier one).
    ///
    /// # Errors
    /// Not found (another app's message, another end user's, an unpublished app); a bad
    /// rating or comment.
    pub async fn feedback(
        &self,
        key: &Principal,
        id: AppId,
        message: uuid::Uuid,
        rating: &str,
        comment: Option<&str>,
        end_user: Option<&str>,
    ) -> Result<(), AppsError> {
        self.published(key, id).await?;
        let mut bad_fields = Vec::new();
        let rating = Rating::parse(rating)
            .ok_or(())
            .map_err(|()| bad_fields.push(bad("rating", "invalid", "up or down")))
            .ok();
        let comment = comment.map(str::trim).filter(|c| !c.is_empty());
        if comment.is_some_and(|c| c.chars().count() > 1000 || c.contains('\0')) {
            bad_fields.push(bad(
                "comment",
                "invalid",
                "at most 1,000 characters, no NUL",
            ));
        }
        if let Some(user) = end_user
            && let Err(rule) = parse_end_user(user)
        {
            bad_fields.push(bad("user", "invalid", rule));
        }
        let Some(rating) = rating.filter(|_| bad_fields.is_empty()) else {
            return Err(AppsError::Invalid(bad_fields));
        };
        let found = self
            .ports
            .messages
            .get(id, message)
            .await?
            .ok_or(AppsError::MessageNotFound)?;
        // An end user's answer is rated by that end user only.
        if found.end_user.is_some() && found.end_user.as_deref() != end_user {
            return Err(AppsError::MessageNotFound);
        }
        if self
            .ports
            .messages
            .feedback(id, message, rating, comment)
            .await?
        {
            Ok(())
        } else {
            Err(AppsError::MessageNotFound)
        }
    }
}

fn end_of(s: &Settled) -> MessageEnd {
    let answered = (200..300).contains(&s.status) && s.answer.is_some();
    MessageEnd {
        status: if answered {
            MessageStatus::Answered
        } else {
            MessageStatus::Failed
        },
        http_status: s.status,
        answer: s.answer.clone(),
        latency_ms: s.latency_ms,
        ttft_ms: s.ttft_ms,
        prompt_tokens: s.usage.prompt,
        completion_tokens: s.usage.completion,
    }
}
