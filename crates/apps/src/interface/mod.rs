//! HTTP handlers, DTOs and the context's OpenAPI documents.

pub mod dto;
pub mod endpoint;
pub mod handlers;

use actix_web::web;

/// The management API, nested by `maas-api` under `/api/v1`.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        handlers::create_app, handlers::list_apps, handlers::get_app, handlers::update_app, handlers::delete_app,
        handlers::publish_app, handlers::rollback_app, handlers::unpublish_app, handlers::list_versions,
        handlers::get_version, handlers::preview_app, handlers::create_key, handlers::list_keys,
        handlers::revoke_key, handlers::list_messages, handlers::usage,
    ),
    components(schemas(
        dto::VariableDto, dto::GenerationDto, dto::KnowledgeDto, dto::CreateAppRequest, dto::UpdateAppRequest,
        dto::VariableView, dto::GenerationView, dto::KnowledgeView, dto::ConfigView, dto::AppResponse,
        dto::PublishRequest, dto::RollbackRequest, dto::VersionResponse, dto::VersionList,
        dto::CreateAppKeyRequest, dto::AppKeyResponse, dto::AppKeyCreated, dto::AppKeyList,
        dto::CitationView, dto::AppMessageResponse, dto::UsageDayView, dto::UsageResponse,
        dto::PassageView, dto::PreviewResponse,
    )),
    tags(
        (name = "apps", description = "Apps: a chat model, a prompt with variables and knowledge bases published as an OpenAI-shaped endpoint with its own keys; versions, rollback, previews, call logs, feedback and usage"),
    )
)]
pub struct AppsApi;

/// An app's endpoint, nested by `maas-api` under `/v1`.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(endpoint::chat_completions, endpoint::app_info, endpoint::feedback),
    components(schemas(dto::AppInfo, dto::FeedbackRequest)),
    tags(
        (name = "apps-endpoint", description = "A published app's endpoint, called with one of its app keys (OpenAI SDKs: `base_url` = `…/v1/apps/{app_id}`)"),
    )
)]
pub struct AppsEndpointApi;

/// Registers the management routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers as h;
    cfg.service(
        web::resource("/apps")
            .route(web::get().to(h::list_apps))
            .route(web::post().to(h::create_app)),
    )
    .service(
        web::resource("/apps/{app_id}")
            .route(web::get().to(h::get_app))
            .route(web::patch().to(h::update_app))
            .route(web::delete().to(h::delete_app)),
    )
    .service(web::resource("/apps/{app_id}/publish").route(web::post().to(h::publish_app)))
    .service(web::resource("/apps/{app_id}/rollback").route(web::post().to(h::rollback_app)))
    .service(web::resource("/apps/{app_id}/unpublish").route(web::post().to(h::unpublish_app)))
    .service(web::resource("/apps/{app_id}/versions").route(web::get().to(h::list_versions)))
    .service(web::resource("/apps/{app_id}/versions/{number}").route(web::get().to(h::get_version)))
    .service(web::resource("/apps/{app_id}/preview").route(web::post().to(h::preview_app)))
    .service(
        web::resource("/apps/{app_id}/keys")
            .route(web::get().to(h::list_keys))
            .route(web::post().to(h::create_key)),
    )
    .service(web::resource("/apps/{app_id}/keys/{key_id}").route(web::delete().to(h::revoke_key)))
    .service(web::resource("/apps/{app_id}/messages").route(web::get().to(h::list_messages)))
    .service(web::resource("/apps/{app_id}/usage").route(web::get().to(h::usage)));
}

/// Registers the endpoint's routes (under `/v1`).
pub fn configure_endpoint(cfg: &mut web::ServiceConfig) {
    use endpoint as e;
    cfg.service(web::resource("/apps/{app_id}").route(web::get().to(e::app_info)))
        .service(
            web::resource("/apps/{app_id}/chat/completions")
                .route(web::post().to(e::chat_completions)),
        )
        .service(
            web::resource("/apps/{app_id}/messages/{message_id}/feedback")
                .route(web::post().to(e::feedback)),
        );
}
