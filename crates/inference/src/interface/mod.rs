//! HTTP: the OpenAI-compatible `/v1` API and provider administration under `/api/v1`.

pub mod dto;
pub mod handlers;
pub mod legacy;

use actix_web::web;

/// The OpenAI-compatible API (nested under `/v1`).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(handlers::list_models, handlers::chat_completions, handlers::completions, handlers::embeddings),
    components(schemas(dto::ModelList, dto::ModelEntry)),
    tags((name = "openai", description = "OpenAI-compatible inference: any OpenAI SDK works with an API key"))
)]
pub struct InferenceApi;

/// Provider administration (nested under `/api/v1`).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        handlers::create_provider, handlers::list_providers, handlers::delete_provider, handlers::usage_report,
        handlers::create_conversation, handlers::list_conversations, handlers::get_conversation,
        handlers::rename_conversation, handlers::delete_conversation, handlers::list_messages, handlers::add_message,
        handlers::export_all, handlers::export_one, handlers::deployment_chat,
    ),
    components(schemas(dto::CreateProviderRequest, dto::ModelRouteDto, dto::ProviderResponse, dto::UsageReportResponse, dto::UsageRowResponse,
        dto::CreateConversationRequest, dto::RenameConversationRequest, dto::AddMessageRequest, dto::ConversationResponse, dto::MessageResponse)),
    tags(
        (name = "providers", description = "Upstream OpenAI-compatible providers and the models they serve (admin)"),
        (name = "usage", description = "Metered usage of the gateway"),
        (name = "conversations", description = "Chat history: continue with `conversation_id`, export as JSON or CSV"),
    )
)]
pub struct ProvidersApi;

/// The seeds' request shapes, at the root of the app.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(legacy::generate, legacy::chat, legacy::chat_stream),
    components(schemas(legacy::GenerateRequest, legacy::GenerateResponse, legacy::GenerateOutput, legacy::LegacyChatRequest, legacy::LegacyChatResponse)),
    tags((name = "legacy", description = "Request shapes of the earlier services (/generate, /api/chat), served by the gateway"))
)]
pub struct LegacyApi;

pub use legacy::configure as configure_legacy;

/// Registers the `/v1` routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers as h;
    cfg.service(web::resource("/models").route(web::get().to(h::list_models)))
        .service(web::resource("/chat/completions").route(web::post().to(h::chat_completions)))
        .service(web::resource("/completions").route(web::post().to(h::completions)))
        .service(web::resource("/embeddings").route(web::post().to(h::embeddings)));
}

/// Registers the `/api/v1` routes.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    use handlers as h;
    cfg.service(
        web::resource("/deployments/{deployment_id}/chat/completions")
            .route(web::post().to(h::deployment_chat)),
    )
    .service(
        web::resource("/providers")
            .route(web::get().to(h::list_providers))
            .route(web::post().to(h::create_provider)),
    )
    .service(web::resource("/providers/{provider_id}").route(web::delete().to(h::delete_provider)))
    .service(web::resource("/usage").route(web::get().to(h::usage_report)))
    // `export` before `{conversation_id}`, which would otherwise claim the word.
    .service(web::resource("/conversations/export").route(web::get().to(h::export_all)))
    .service(
        web::resource("/conversations")
            .route(web::get().to(h::list_conversations))
            .route(web::post().to(h::create_conversation)),
    )
    .service(
        web::resource("/conversations/{conversation_id}")
            .route(web::get().to(h::get_conversation))
            .route(web::patch().to(h::rename_conversation))
            .route(web::delete().to(h::delete_conversation)),
    )
    .service(
        web::resource("/conversations/{conversation_id}/messages")
            .route(web::get().to(h::list_messages))
            .route(web::post().to(h::add_message)),
    )
    .service(
        web::resource("/conversations/{conversation_id}/export")
            .route(web::get().to(h::export_one)),
    );
}
