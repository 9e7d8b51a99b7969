//! Bodies of the gateway API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::app::gateway::ListedModel;
use crate::domain::provider::Provider;

/// `GET /v1/models`
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// Models the key may use.
    pub data: Vec<ModelEntry>,
}

/// One model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    /// The name to send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix time it was registered.
    pub created: i64,
    /// The provider serving it.
    pub owned_by: String,
}

impl From<ListedModel> for ModelEntry {
    fn from(m: ListedModel) -> Self {
        Self {
            id: m.id,
            object: "model",
            created: m.created,
            owned_by: m.owned_by,
        }
    }
}

/// A model a provider serves.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRouteDto {
    /// The public name clients send.
    pub model: String,
    /// The provider's name for it (default: the same).
    pub upstream_model: Option<String>,
}

/// A provider to register.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderRequest {
    /// Unique slug.
    pub name: String,
    /// OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The provider's API key: stored encrypted, never returned.
    pub api_key: Option<String>,
    /// Models it serves (at least one).
    #[validate(length(max = 500))]
    pub models: Vec<ModelRouteDto>,
}

/// A registered provider (never its key).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderResponse {
    /// Id.
    pub id: Uuid,
    /// Slug.
    pub name: String,
    /// Base URL.
    pub base_url: String,
    /// Whether a key is stored.
    pub has_api_key: bool,
    /// Models.
    pub models: Vec<ModelRouteDto>,
    /// Routed to.
    pub enabled: bool,
    /// Registered.
    pub created_at: DateTime<Utc>,
}

impl From<&Provider> for ProviderResponse {
    fn from(p: &Provider) -> Self {
        Self {
            id: p.id().as_uuid(),
            name: p.name().as_str().to_owned(),
            base_url: p.base_url().as_str().to_owned(),
            has_api_key: p.sealed_key().is_some(),
            models: p
                .models()
                .iter()
                .map(|m| ModelRouteDto {
                    model: m.model.clone(),
                    upstream_model: Some(m.upstream_model.clone()),
                })
                .collect(),
            enabled: p.enabled(),
            created_at: p.created_at(),
        }
    }
}

/// `GET /api/v1/usage` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// From (RFC 3339, inclusive; default 30 days before `to`).
    pub from: Option<DateTime<Utc>>,
    /// To (RFC 3339, exclusive; default now). At most 366 days after `from`.
    pub to: Option<DateTime<Utc>>,
    /// `day` (default), `model` or `key`.
    pub group_by: Option<String>,
    /// Another user's usage (admins).
    pub user_id: Option<Uuid>,
    /// Everyone's usage (admins).
    #[serde(default)]
    pub all: bool,
}

/// One group of a usage report.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRowResponse {
    /// The day (`YYYY-MM-DD`), model, or key id (empty for calls with a login token).
    pub group: String,
    /// Calls.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt + completion.
    pub total_tokens: u64,
    /// Calls whose counts are estimates (the upstream reported none).
    pub estimated_requests: u64,
}

/// A usage report.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReportResponse {
    /// From (inclusive).
    pub from: DateTime<Utc>,
    /// To (exclusive).
    pub to: DateTime<Utc>,
    /// Grouping.
    pub group_by: String,
    /// Whose usage; absent for everyone's.
    pub user_id: Option<Uuid>,
    /// Groups in order.
    pub rows: Vec<UsageRowResponse>,
}

/// A new conversation.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationRequest {
    /// Title (default "New conversation").
    pub title: Option<String>,
    /// The model it is mostly held with.
    pub model: Option<String>,
}

/// A rename.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameConversationRequest {
    /// New title (1–200 characters).
    pub title: String,
}

/// A message added by hand.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMessageRequest {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationResponse {
    /// Id: pass it as `conversation_id` on chat completions to continue it.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Model.
    pub model: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last activity (it expires after a period without any).
    pub last_activity_at: DateTime<Utc>,
}

impl From<&crate::domain::conversation::Conversation> for ConversationResponse {
    fn from(c: &crate::domain::conversation::Conversation) -> Self {
        Self {
            id: c.id().as_uuid(),
            title: c.title().to_owned(),
            model: c.model().map(str::to_owned),
            created_at: c.created_at(),
            last_activity_at: c.last_activity_at(),
        }
    }
}

/// A message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    /// Id.
    pub id: Uuid,
    /// Speaker.
    pub role: String,
    /// Text.
    pub content: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<&crate::domain::conversation::Message> for MessageResponse {
    fn from(m: &crate::domain::conversation::Message) -> Self {
        Self {
            id: m.id,
            role: m.role.as_str().to_owned(),
            content: m.content.clone(),
            created_at: m.created_at,
        }
    }
}

/// Export parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Messages at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Messages before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}
