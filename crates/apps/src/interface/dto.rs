//! Request and response bodies of the apps API.

use chrono::{DateTime, NaiveDate, Utc};
use maas_user::contract::ApiKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::app::endpoint::Preview;
use crate::domain::app::{App, AppVersion};
use crate::domain::config::{
    AppConfig, ConfigDraft, Generation, GenerationDraft, KnowledgeDraft, KnowledgeSettings,
    Variable, VariableDraft,
};
use crate::domain::message::{AppMessage, Citation, UsageDay};
use crate::domain::prompt::Passage;

fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    maas_shared::whole::opt_u64(d)
}

fn signed(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// A prompt variable, written `{{name}}` in the system prompt.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct VariableDto {
    /// A letter or `_`, then letters, digits or `_` (at most 64); `context` is reserved.
    #[schema(example = "language", pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    pub name: String,
    /// `string` (default), `number`, `integer` or `boolean`.
    #[schema(pattern = "^(string|number|integer|boolean)$")]
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether a call must give it when it has no default (default `false`: empty text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Used when a call does not give it; of the variable's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Generation parameters sent with every call (they win over a caller's).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct GenerationDto {
    /// 0 to 2.
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Above 0, at most 1.
    pub top_p: Option<f64>,
    /// 1 to 32,768; caps a caller's `max_tokens`.
    #[schema(minimum = 1, maximum = 32768)]
    #[serde(default, deserialize_with = "whole")]
    pub max_tokens: Option<u64>,
    /// Up to 4 stop sequences, each 1 to 64 characters.
    #[schema(max_items = 4)]
    pub stop: Option<Vec<String>>,
}

/// Knowledge bases and retrieval: each question is searched in the bases and the best passages,
/// within the context budget, go into the system prompt (at `{{context}}`, else after it).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeDto {
    /// Your knowledge bases (at most 8).
    #[schema(max_items = 8)]
    pub bases: Option<Vec<Uuid>>,
    /// `vector`, `fulltext` or `hybrid` (default).
    #[schema(example = "hybrid")]
    pub mode: Option<String>,
    /// Passages retrieved over all bases, 1 to 20 (default 4).
    #[schema(minimum = 1, maximum = 20)]
    #[serde(default, deserialize_with = "whole")]
    pub top_k: Option<u64>,
    /// Passages scoring below are dropped, 0 to 1.
    #[schema(minimum = 0, maximum = 1)]
    pub score_threshold: Option<f64>,
    /// Tokens of passages the prompt holds at most (about four characters a token), 1 to
    /// 32,000 (default 1,500).
    #[schema(minimum = 1, maximum = 32000)]
    #[serde(default, deserialize_with = "whole")]
    pub max_context_tokens: Option<u64>,
}

/// A new app (a draft until published).
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    /// 1 to 100 characters, unique among your apps.
    #[schema(example = "Handbook helper", min_length = 1, max_length = 100)]
    pub name: String,
    /// At most 2,000 characters.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// A chat model served to you (a provider's or a deployment's); checked at publishing.
    #[schema(example = "qwen-chat", min_length = 1, max_length = 200)]
    pub model: String,
    /// The system prompt (at most 20,000 characters), with `{{variables}}` and optionally
    /// `{{context}}` for the retrieved passages.
    #[schema(max_length = 20000)]
    pub system_prompt: Option<String>,
    /// Declared variables (at most 32).
    #[schema(max_items = 32)]
    pub variables: Option<Vec<VariableDto>>,
    /// Generation parameters.
    pub generation: Option<GenerationDto>,
    /// Knowledge and retrieval.
    pub knowledge: Option<KnowledgeDto>,
    /// Shown by a client before the first question (at most 2,000 characters).
    #[schema(max_length = 2000)]
    pub opening_message: Option<String>,
    /// Offered to end users (at most 10, each 1 to 300 characters).
    #[schema(max_items = 10)]
    pub suggested_questions: Option<Vec<String>>,
}

/// A change of an app's name, description or draft: each field given replaces the current one
/// (`knowledge` field by field); the published version is untouched.
#[derive(Debug, Default, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppRequest {
    /// Name, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Description, at most 2,000 characters.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Model.
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
    /// System prompt, at most 20,000 characters.
    #[schema(max_length = 20000)]
    pub system_prompt: Option<String>,
    /// Variables (the whole list, at most 32).
    #[schema(max_items = 32)]
    pub variables: Option<Vec<VariableDto>>,
    /// Generation parameters (the whole object).
    pub generation: Option<GenerationDto>,
    /// Knowledge and retrieval.
    pub knowledge: Option<KnowledgeDto>,
    /// Opening message (empty clears it; at most 2,000 characters).
    #[schema(max_length = 2000)]
    pub opening_message: Option<String>,
    /// Suggested questions (the whole list, at most 10).
    #[schema(max_items = 10)]
    pub suggested_questions: Option<Vec<String>>,
}

fn variables(v: Option<Vec<VariableDto>>) -> Option<Vec<VariableDraft>> {
    v.map(|list| {
        list.into_iter()
            .map(|d| VariableDraft {
                name: d.name,
                kind: d.kind,
                required: d.required,
                default: d.default,
                description: d.description,
            })
            .collect()
    })
}

fn generation(g: Option<GenerationDto>) -> Option<GenerationDraft> {
    g.map(|g| GenerationDraft {
        temperature: g.temperature,
        top_p: g.top_p,
        max_tokens: signed(g.max_tokens),
        stop: g.stop,
    })
}

fn knowledge(k: Option<KnowledgeDto>) -> Option<KnowledgeDraft> {
    k.map(|k| KnowledgeDraft {
        bases: k.bases,
        mode: k.mode,
        top_k: signed(k.top_k),
        score_threshold: k.score_threshold,
        max_context_tokens: signed(k.max_context_tokens),
    })
}

impl CreateAppRequest {
    /// The draft it asks for.
    #[must_use]
    pub fn config(self) -> (String, Option<String>, ConfigDraft) {
        (
            self.name,
            self.description,
            ConfigDraft {
                model: Some(self.model),
                system_prompt: self.system_prompt,
                variables: variables(self.variables),
                generation: generation(self.generation),
                knowledge: knowledge(self.knowledge),
                opening_message: self.opening_message,
                suggested_questions: self.suggested_questions,
            },
        )
    }
}

impl UpdateAppRequest {
    /// The change it asks for.
    #[must_use]
    pub fn config(self) -> (Option<String>, Option<String>, ConfigDraft) {
        (
            self.name,
            self.description,
            ConfigDraft {
                model: self.model,
                system_prompt: self.system_prompt,
                variables: variables(self.variables),
                generation: generation(self.generation),
                knowledge: knowledge(self.knowledge),
                opening_message: self.opening_message,
                suggested_questions: self.suggested_questions,
            },
        )
    }
}

/// A declared variable.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariableView {
    /// Name.
    pub name: String,
    /// `string`, `number`, `integer` or `boolean`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Required when it has no default.
    pub required: bool,
    /// Default.
    pub default: Option<Value>,
    /// Description.
    pub description: String,
}

impl From<&Variable> for VariableView {
    fn from(v: &Variable) -> Self {
        Self {
            name: v.name.clone(),
            kind: v.kind.as_str(),
            required: v.required,
            default: v.default.clone(),
            description: v.description.clone(),
        }
    }
}

/// Generation parameters.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationView {
    /// Temperature.
    pub temperature: Option<f64>,
    /// Top p.
    pub top_p: Option<f64>,
    /// Completion cap.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

impl From<&Generation> for GenerationView {
    fn from(g: &Generation) -> Self {
        Self {
            temperature: g.temperature,
            top_p: g.top_p,
            max_tokens: g.max_tokens,
            stop: g.stop.clone(),
        }
    }
}

/// Knowledge and retrieval.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnowledgeView {
    /// Bases.
    pub bases: Vec<Uuid>,
    /// Mode.
    pub mode: String,
    /// Passages at most.
    pub top_k: u32,
    /// Threshold.
    pub score_threshold: Option<f32>,
    /// Context budget in tokens.
    pub max_context_tokens: u32,
}

impl From<&KnowledgeSettings> for KnowledgeView {
    fn from(k: &KnowledgeSettings) -> Self {
        Self {
            bases: k.bases.clone(),
            mode: k.mode.clone(),
            top_k: k.top_k,
            score_threshold: k.score_threshold,
            max_context_tokens: k.max_context_tokens,
        }
    }
}

/// An app's configuration (its draft, or a version's).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    /// Chat model.
    pub model: String,
    /// System prompt.
    pub system_prompt: String,
    /// Variables.
    pub variables: Vec<VariableView>,
    /// Generation parameters.
    pub generation: GenerationView,
    /// Knowledge and retrieval.
    pub knowledge: KnowledgeView,
    /// Opening message.
    pub opening_message: Option<String>,
    /// Suggested questions.
    pub suggested_questions: Vec<String>,
}

impl From<&AppConfig> for ConfigView {
    fn from(c: &AppConfig) -> Self {
        Self {
            model: c.model.clone(),
            system_prompt: c.system_prompt.clone(),
            variables: c.variables.iter().map(VariableView::from).collect(),
            generation: GenerationView::from(&c.generation),
            knowledge: KnowledgeView::from(&c.knowledge),
            opening_message: c.opening_message.clone(),
            suggested_questions: c.suggested_questions.clone(),
        }
    }
}

/// An app.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppResponse {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `draft` (app keys get 404) or `published`.
    #[schema(example = "published")]
    pub status: &'static str,
    /// The version the endpoint serves.
    pub published_version: Option<u32>,
    /// Its endpoint (OpenAI SDKs: `base_url` = this without `/chat/completions`).
    pub endpoint: String,
    /// The draft: what the next publish snapshots.
    pub draft: ConfigView,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&App> for AppResponse {
    fn from(a: &App) -> Self {
        Self {
            id: a.id.as_uuid(),
            name: a.name.clone(),
            description: a.description.clone(),
            status: a.status().as_str(),
            published_version: a.published_version,
            endpoint: format!("/v1/apps/{}/chat/completions", a.id),
            draft: ConfigView::from(&a.draft),
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// Publish the draft.
#[derive(Debug, Default, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// What changed (at most 500 characters on one line; trimmed).
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub note: Option<String>,
}

/// Publish an earlier version's configuration again.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to restore.
    #[schema(minimum = 1)]
    pub version: u32,
    /// Why (at most 500 characters on one line; trimmed).
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub note: Option<String>,
}

/// A published version (immutable).
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionResponse {
    /// 1, 2, … in publishing order.
    pub number: u32,
    /// The publisher's note.
    pub note: Option<String>,
    /// The version a rollback restored.
    pub rollback_of: Option<u32>,
    /// Who published it (absent: the operator at the CLI).
    pub published_by: Option<Uuid>,
    /// When.
    pub published_at: DateTime<Utc>,
    /// The configuration.
    pub config: ConfigView,
}

impl From<&AppVersion> for VersionResponse {
    fn from(v: &AppVersion) -> Self {
        Self {
            number: v.number,
            note: v.note.clone(),
            rollback_of: v.rollback_of,
            published_by: v.published_by.map(|u| u.as_uuid()),
            published_at: v.published_at,
            config: ConfigView::from(&v.config),
        }
    }
}

/// The app's versions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// Versions.
    pub data: Vec<VersionResponse>,
}

/// A new app key.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateAppKeyRequest {
    /// Label, 1 to 100 characters.
    #[schema(example = "website widget", min_length = 1, max_length = 100)]
    pub name: String,
    /// Requests per minute (on top of the owner's limits).
    #[serde(default, deserialize_with = "whole")]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute.
    #[serde(default, deserialize_with = "whole")]
    pub tokens_per_minute: Option<u64>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An app key (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct AppKeyResponse {
    /// Id.
    pub id: Uuid,
    /// Label.
    pub name: String,
    /// Identifying start of the secret.
    pub prefix: String,
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use (batched: a few seconds behind).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl From<&ApiKey> for AppKeyResponse {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id().as_uuid(),
            name: k.name().as_str().to_owned(),
            prefix: k.prefix().to_owned(),
            requests_per_minute: k.limits().requests_per_minute,
            tokens_per_minute: k.limits().tokens_per_minute,
            expires_at: k.expires_at(),
            last_used_at: k.last_used_at(),
            revoked_at: k.revoked_at(),
            created_at: k.created_at(),
        }
    }
}

/// A created app key with its secret: shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppKeyCreated {
    /// The key.
    #[serde(flatten)]
    pub key: AppKeyResponse,
    /// The secret (`sk-…`), for `Authorization: Bearer` on the app's endpoint only.
    pub secret: String,
}

/// The app's keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppKeyList {
    /// Keys.
    pub data: Vec<AppKeyResponse>,
}

/// A citation: a passage the prompt held.
#[derive(Debug, Serialize, ToSchema)]
pub struct CitationView {
    /// Its number in the prompt (`[n]`).
    pub index: u32,
    /// Knowledge base.
    pub knowledge_base_id: Uuid,
    /// Document.
    pub document_id: Uuid,
    /// The document's file name.
    pub file_name: String,
    /// Chunk.
    pub chunk_id: Uuid,
    /// Position of the chunk in its document.
    pub position: u32,
    /// Score of the search mode, 0 to 1.
    pub score: f32,
    /// The chunk's first 200 characters.
    pub quote: String,
}

impl From<&Citation> for CitationView {
    fn from(c: &Citation) -> Self {
        Self {
            index: c.index,
            knowledge_base_id: c.knowledge_base_id,
            document_id: c.document_id,
            file_name: c.file_name.clone(),
            chunk_id: c.chunk_id,
            position: c.position,
            score: c.score,
            quote: c.quote.clone(),
        }
    }
}

/// One logged call.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppMessageResponse {
    /// Id.
    pub id: Uuid,
    /// The version that answered.
    pub version: u32,
    /// The app key it came with.
    pub key_id: Option<Uuid>,
    /// The caller's end user.
    pub user: Option<String>,
    /// The question (the end user's last message).
    pub question: String,
    /// The answer, once complete.
    pub answer: Option<String>,
    /// The passages the prompt held.
    pub citations: Vec<CitationView>,
    /// `pending`, `answered` or `failed`.
    pub status: &'static str,
    /// What the client saw (499: it left).
    pub http_status: Option<u16>,
    /// Streamed.
    pub stream: bool,
    /// Milliseconds to the end.
    pub latency_ms: Option<u64>,
    /// Milliseconds to the first byte.
    pub ttft_ms: Option<u64>,
    /// Prompt tokens charged.
    pub prompt_tokens: u64,
    /// Completion tokens charged.
    pub completion_tokens: u64,
    /// `up` or `down`.
    pub feedback: Option<&'static str>,
    /// The end user's comment.
    pub feedback_comment: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<&AppMessage> for AppMessageResponse {
    fn from(m: &AppMessage) -> Self {
        Self {
            id: m.id,
            version: m.version,
            key_id: m.key_id,
            user: m.end_user.clone(),
            question: m.question.clone(),
            answer: m.answer.clone(),
            citations: m.citations.iter().map(CitationView::from).collect(),
            status: m.status.as_str(),
            http_status: m.http_status,
            stream: m.stream,
            latency_ms: m.latency_ms,
            ttft_ms: m.ttft_ms,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            feedback: m.feedback.map(|r| r.as_str()),
            feedback_comment: m.feedback_comment.clone(),
            created_at: m.created_at,
        }
    }
}

/// Filters of the message log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// One end user's messages (the `user` the caller sent: 1 to 256 characters, no control
    /// characters).
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub user: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

/// The usage range.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start (default: 30 days before `to`).
    pub from: Option<DateTime<Utc>>,
    /// End, exclusive (default: now); at most 366 days after `from`.
    pub to: Option<DateTime<Utc>>,
}

/// One day of use.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDayView {
    /// Day (UTC).
    pub day: NaiveDate,
    /// Calls.
    pub messages: u64,
    /// Distinct named end users.
    pub end_users: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Thumbs up.
    pub up: u64,
    /// Thumbs down.
    pub down: u64,
}

impl From<&UsageDay> for UsageDayView {
    fn from(d: &UsageDay) -> Self {
        Self {
            day: d.day,
            messages: d.messages,
            end_users: d.end_users,
            prompt_tokens: d.prompt_tokens,
            completion_tokens: d.completion_tokens,
            up: d.up,
            down: d.down,
        }
    }
}

/// An app's use by day, and its totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    /// Days with calls, oldest first.
    pub days: Vec<UsageDayView>,
    /// Calls in the range.
    pub messages: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// A passage retrieved for a preview, with its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassageView {
    /// Knowledge base.
    pub knowledge_base_id: Uuid,
    /// Document.
    pub document_id: Uuid,
    /// File name.
    pub file_name: String,
    /// Chunk.
    pub chunk_id: Uuid,
    /// Position.
    pub position: u32,
    /// Score.
    pub score: f32,
    /// Text.
    pub content: String,
}

impl From<&Passage> for PassageView {
    fn from(p: &Passage) -> Self {
        Self {
            knowledge_base_id: p.base_id,
            document_id: p.document_id,
            file_name: p.file_name.clone(),
            chunk_id: p.chunk_id,
            position: p.position,
            score: p.score,
            content: p.content.clone(),
        }
    }
}

/// Which configuration a preview builds.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// `draft` (default), `published` or a version number.
    pub of: Option<String>,
}

/// What a call would send, without calling the model.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewResponse {
    /// The version previewed (absent: the draft).
    pub version: Option<u32>,
    /// The model.
    pub model: String,
    /// The exact messages the model would get (the system prompt with variables and passages,
    /// the end user's history, the new message).
    #[schema(value_type = Vec<Object>)]
    pub messages: Value,
    /// The whole request body the model would get.
    #[schema(value_type = Object)]
    pub request: Value,
    /// The passages retrieved, best first.
    pub retrieved: Vec<PassageView>,
    /// Their citations.
    pub citations: Vec<CitationView>,
}

impl From<Preview> for PreviewResponse {
    fn from(p: Preview) -> Self {
        Self {
            version: p.version,
            model: p
                .request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            messages: p.request.get("messages").cloned().unwrap_or(Value::Null),
            retrieved: p.passages.iter().map(PassageView::from).collect(),
            citations: p.citations.iter().map(CitationView::from).collect(),
            request: p.request,
        }
    }
}

/// An end user's rating of an answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// `up` or `down`.
    #[schema(example = "up", pattern = "^(up|down)$")]
    pub rating: String,
    /// At most 1,000 characters.
    #[schema(max_length = 1000)]
    pub comment: Option<String>,
    /// The end user the answer was for (required when the call named one).
    pub user: Option<String>,
}

/// What an end user's client shows of the app.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppInfo {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The version answering.
    pub version: u32,
    /// Opening message.
    pub opening_message: Option<String>,
    /// Suggested questions.
    pub suggested_questions: Vec<String>,
    /// Variables a call gives in `variables`.
    pub variables: Vec<VariableView>,
}
