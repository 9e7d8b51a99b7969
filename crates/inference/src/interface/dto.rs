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
    /// The public name clients send: 1–200 characters, no spaces or control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub model: String,
    /// The provider's name for it (default: the same; the same rules).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub upstream_model: Option<String>,
}

/// A provider to register.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderRequest {
    /// Unique slug: 1–64 characters of a-z, 0-9, `-`, `_`, `.` (stored lowercase).
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    pub name: String,
    /// OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`: `http(s)://`, a host,
    /// no credentials, query or fragment; at most 2048 characters.
    #[schema(
        max_length = 2048,
        pattern = "^https?://[a-z][a-z0-9-]{0,30}(\\.[a-z][a-z0-9-]{0,30}){0,4}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]+){0,8}$"
    )]
    pub base_url: String,
    /// The provider's API key: stored encrypted, never returned.
    #[schema(max_length = 4096)]
    pub api_key: Option<String>,
    /// Models it serves: 1 to 500.
    #[validate(length(max = 500))]
    #[schema(min_items = 1, max_items = 500)]
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
    #[param(pattern = "^(day|model|key)$")]
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
    /// Title (default "New conversation"): 1–200 characters once trimmed.
    #[schema(
        max_length = 200,
        pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]([^\\x00]*[^\\s\\x00-\\x1f\\x7f-\\x9f])?$"
    )]
    pub title: Option<String>,
    /// The model it is mostly held with (1–200 characters).
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
}

/// A rename.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameConversationRequest {
    /// New title: 1–200 characters once trimmed.
    #[schema(
        max_length = 200,
        pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]([^\\x00]*[^\\s\\x00-\\x1f\\x7f-\\x9f])?$"
    )]
    pub title: String,
}

/// A message added by hand.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMessageRequest {
    /// `system`, `user`, `assistant` or `tool`.
    #[schema(pattern = "^(system|user|assistant|tool)$")]
    pub role: String,
    /// Text: at most 1,000,000 bytes.
    #[schema(max_length = 250_000)]
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
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
    /// Messages at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Messages before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// The request body schema of an OpenAI endpoint under `/v1` (`/chat/completions`,
/// `/completions`, `/embeddings`): the fields the gateway reads and checks; every other field
/// passes through to the upstream as it came.
#[must_use]
pub fn openai_request_schema(path: &str) -> Option<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{
        ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
    };
    use utoipa::openapi::{KnownFormat, SchemaFormat};

    let nullable = |t: Type| SchemaType::from_iter([t, Type::Null]);
    let text_or_list = || {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(SchemaType::AnyValue)))
    };
    let token_cap = || {
        ObjectBuilder::new()
            .schema_type(nullable(Type::Integer))
            .minimum(Some(0))
            .maximum(Some(crate::domain::call::MAX_COMPLETION_TOKENS))
            .description(Some("Completion cap: a whole number from 0 to 4294967296"))
    };
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "model",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .description(Some("A model of `GET /v1/models`")),
        )
        .required("model");
    let streamed = |object: ObjectBuilder| {
        object
            .property(
                "stream",
                ObjectBuilder::new().schema_type(nullable(Type::Boolean)),
            )
            .property(
                "stream_options",
                ObjectBuilder::new()
                    .schema_type(nullable(Type::Object))
                    .property(
                        "include_usage",
                        ObjectBuilder::new().schema_type(nullable(Type::Boolean)),
                    ),
            )
            .property("max_tokens", token_cap())
    };
    match path {
        "/chat/completions" => {
            let message = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "role",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["system", "developer", "user", "assistant", "tool"])),
                )
                .required("role")
                .property("content", text_or_list());
            object = streamed(object)
                .property(
                    "messages",
                    ArrayBuilder::new().items(message).min_items(Some(1)),
                )
                .required("messages")
                .property("max_completion_tokens", token_cap())
                .property(
                    "conversation_id",
                    ObjectBuilder::new()
                        .schema_type(nullable(Type::String))
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                        .pattern(Some(
                            "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
                        ))
                        .description(Some(
                            "Continue this conversation of yours: its history is sent first, \
                             and the exchange is stored (no NUL in `messages` then)",
                        )),
                );
        }
        "/completions" => {
            object = streamed(object)
                .property("prompt", text_or_list())
                .required("prompt");
        }
        "/embeddings" => {
            object = object.property("input", text_or_list()).required("input");
        }
        _ => return None,
    }
    Some(Schema::Object(object.build()))
}
