//! The seeds' request shapes: `POST /generate`, `POST /api/chat`, `POST /api/chat-stream`.
//! Same authentication (API key), limits, metering and conversations as `/v1`.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpResponse, web};
use maas_shared::http::{ApiError, ValidatedJson};
use maas_user::contract::Authenticated;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use super::handlers::respond;
use crate::app::conversations::ConversationService;
use crate::app::gateway::GatewayService;
use crate::app::legacy::{self, ChatAnswer};
use crate::domain::conversation::ConversationId;

/// `POST /generate`
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Model to use.
    #[schema(min_length = 1, max_length = 200)]
    pub model: String,
    /// 1 to 32 prompts, each answered separately.
    #[schema(min_items = 1, max_items = 32)]
    pub prompts: Vec<String>,
    /// `temperature`, `top_p`, `max_tokens`, `stop`, `seed`, `presence_penalty`, `frequency_penalty`.
    #[serde(default)]
    #[schema(schema_with = sampling_params)]
    pub sampling_params: Map<String, Value>,
}

/// The sampling parameters `/generate` passes on (no others).
fn sampling_params() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let typed = |t: Type| ObjectBuilder::new().schema_type(t);
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "temperature",
            typed(Type::Number).minimum(Some(0)).maximum(Some(2)),
        )
        .property(
            "top_p",
            typed(Type::Number).minimum(Some(0)).maximum(Some(1)),
        )
        .property(
            "max_tokens",
            typed(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(crate::domain::call::MAX_COMPLETION_TOKENS)),
        )
        .property(
            "stop",
            utoipa::openapi::schema::OneOfBuilder::new()
                .item(typed(Type::String))
                .item(
                    utoipa::openapi::schema::ArrayBuilder::new()
                        .items(typed(Type::String))
                        .max_items(Some(4)),
                ),
        )
        .property("seed", typed(Type::Integer))
        .property(
            "presence_penalty",
            typed(Type::Number).minimum(Some(-2)).maximum(Some(2)),
        )
        .property(
            "frequency_penalty",
            typed(Type::Number).minimum(Some(-2)).maximum(Some(2)),
        )
        .additional_properties(Some(
            AdditionalProperties::<utoipa::openapi::schema::Schema>::FreeForm(false),
        ))
        .build()
}

/// One answer of `/generate`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateOutput {
    /// Generated text.
    pub text: String,
    /// OpenAI usage of this prompt.
    #[schema(value_type = Object)]
    pub usage: Value,
}

/// `/generate` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    /// Model used.
    pub model: String,
    /// One output per prompt, in order.
    pub outputs: Vec<GenerateOutput>,
}

/// `POST /api/chat` and `/api/chat-stream`
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyChatRequest {
    /// Model to use.
    #[schema(min_length = 1, max_length = 200)]
    pub model: String,
    /// The user's message (not blank).
    #[schema(pattern = "^[^\\x00]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00]*$")]
    pub message: String,
    /// Continue this conversation (its last messages are sent as context); a new one is
    /// started when absent.
    pub conversation_id: Option<Uuid>,
}

/// `/api/chat` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyChatResponse {
    /// The model's reply.
    pub reply: String,
    /// The conversation it was stored in.
    pub conversation_id: Uuid,
}

/// Generate (legacy)
///
/// nano-vllm style batch generation: each prompt is answered as one chat message.
#[utoipa::path(post, path = "/generate", tag = "legacy", request_body = GenerateRequest, responses((status = 200, body = GenerateResponse), (status = 404, description = "`model_not_found`")), security(("bearer" = []), ("api_key" = [])))]
pub async fn generate(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    body: ValidatedJson<GenerateRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let outputs = legacy::generate(
        &gateway,
        auth.0,
        &body.model,
        &body.prompts,
        &body.sampling_params,
    )
    .await?;
    Ok(HttpResponse::Ok().json(GenerateResponse {
        model: body.model,
        outputs: outputs
            .into_iter()
            .map(|o| GenerateOutput {
                text: o.text,
                usage: o.usage,
            })
            .collect(),
    }))
}

/// Both chat shapes: the whole reply as JSON, or the stream with the conversation in a header.
async fn answer(
    auth: Authenticated,
    gateway: &GatewayService,
    conversations: &ConversationService,
    body: LegacyChatRequest,
    stream: bool,
) -> Result<HttpResponse, ApiError> {
    let id = body.conversation_id.map(ConversationId::from_uuid);
    match legacy::chat(
        gateway,
        conversations,
        auth.0,
        &body.model,
        &body.message,
        id,
        stream,
    )
    .await?
    {
        ChatAnswer::Reply {
            reply,
            conversation_id,
        } => Ok(HttpResponse::Ok().json(LegacyChatResponse {
            reply,
            conversation_id: conversation_id.as_uuid(),
        })),
        ChatAnswer::Stream(proxied, conversation_id) => {
            let mut response = respond(proxied);
            if let Ok(value) = HeaderValue::from_str(&conversation_id.to_string()) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("x-conversation-id"), value);
            }
            Ok(response)
        }
    }
}

/// Chat (legacy)
///
/// One message in, the whole reply out; stored in a conversation.
#[utoipa::path(post, path = "/api/chat", tag = "legacy", request_body = LegacyChatRequest, responses((status = 200, body = LegacyChatResponse), (status = 404, description = "`model_not_found`, or `not_found`: no such conversation of the caller's")), security(("bearer" = []), ("api_key" = [])))]
pub async fn chat(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    conversations: web::Data<ConversationService>,
    body: ValidatedJson<LegacyChatRequest>,
) -> Result<HttpResponse, ApiError> {
    answer(auth, &gateway, &conversations, body.into_inner(), false).await
}

/// Chat, streamed (legacy)
///
/// Like `/api/chat`, answered as server-sent events (OpenAI chunks); the conversation id is in
/// the `x-conversation-id` header.
#[utoipa::path(post, path = "/api/chat-stream", tag = "legacy", request_body = LegacyChatRequest, responses((status = 200, description = "text/event-stream of OpenAI chunks"), (status = 404, description = "`model_not_found`, or `not_found`: no such conversation of the caller's")), security(("bearer" = []), ("api_key" = [])))]
pub async fn chat_stream(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    conversations: web::Data<ConversationService>,
    body: ValidatedJson<LegacyChatRequest>,
) -> Result<HttpResponse, ApiError> {
    answer(auth, &gateway, &conversations, body.into_inner(), true).await
}

/// Registers the legacy routes at the root of the app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/generate").route(web::post().to(generate)))
        .service(web::resource("/api/chat").route(web::post().to(chat)))
        .service(web::resource("/api/chat-stream").route(web::post().to(chat_stream)));
}
