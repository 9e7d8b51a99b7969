//! HTTP: the registry, servers, stats and the agents' API (all under `/api/v1`).

pub mod dto;
pub mod handlers;
pub mod node;

use actix_web::web;

/// The OpenAPI document of this context, nested by `maas-api` under `/api/v1`.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        handlers::create_brand, handlers::list_brands, handlers::get_brand, handlers::update_brand, handlers::delete_brand,
        handlers::reorder_brands, handlers::upload_brand_logo, handlers::remove_brand_logo,
        handlers::create_card, handlers::list_cards, handlers::get_card, handlers::update_card, handlers::delete_card,
        handlers::create_model, handlers::list_models, handlers::get_model, handlers::update_model, handlers::delete_model,
        handlers::upload_model_logo, handlers::remove_model_logo, handlers::get_logo,
        handlers::create_server, handlers::list_servers, handlers::get_server, handlers::update_server, handlers::delete_server,
        handlers::issue_join_token, handlers::approve_agent, handlers::agent_health, handlers::stats,
        node::join, node::heartbeat, node::report,
    ),
    components(schemas(
        dto::BrandRequest, dto::BrandPatch, dto::BrandResponse, dto::ReorderBrandsRequest,
        dto::CardRequest, dto::CardPatch, dto::CardResponse,
        dto::CapabilityDto, dto::EngineDto, dto::SourceDto, dto::ModelRequest, dto::ModelPatch, dto::ModelResponse, dto::LogoUpload,
        dto::ServerRequest, dto::ServerPatch, dto::ServerResponse, dto::CreatedServerResponse, dto::JoinTokenResponse,
        dto::ApproveAgentRequest, dto::AgentHealthResponse, dto::AgentResponse, dto::ReportedResources, dto::ResourcesDto,
        dto::DiskDto, dto::GpuDto, dto::NodeStatusDto, dto::StatsResponse,
        dto::JoinRequest, dto::JoinResponse, dto::HeartbeatResponse, dto::ReportRequest,
    )),
    tags(
        (name = "registry", description = "Accelerator brands and cards, and the models the platform can deploy (admins write, every signed-in user reads)"),
        (name = "servers", description = "GPU servers and their node agents (admin), and platform figures"),
        (name = "agents", description = "What `maas-agent` calls: join with a join token, then heartbeat and report with its node credential"),
    )
)]
pub struct ModelApi;

/// Registers this context's routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers as h;
    cfg.service(
        web::resource("/brands")
            .route(web::get().to(h::list_brands))
            .route(web::post().to(h::create_brand)),
    )
    // `order` before `{brand_id}`, which would otherwise claim the word.
    .service(web::resource("/brands/order").route(web::put().to(h::reorder_brands)))
    .service(
        web::resource("/brands/{brand_id}")
            .route(web::get().to(h::get_brand))
            .route(web::patch().to(h::update_brand))
            .route(web::delete().to(h::delete_brand)),
    )
    .service(
        web::resource("/brands/{brand_id}/logo")
            .route(web::put().to(h::upload_brand_logo))
            .route(web::delete().to(h::remove_brand_logo)),
    )
    .service(web::resource("/brands/{brand_id}/cards").route(web::post().to(h::create_card)))
    .service(web::resource("/cards").route(web::get().to(h::list_cards)))
    .service(
        web::resource("/cards/{card_id}")
            .route(web::get().to(h::get_card))
            .route(web::patch().to(h::update_card))
            .route(web::delete().to(h::delete_card)),
    )
    .service(
        web::resource("/models")
            .route(web::get().to(h::list_models))
            .route(web::post().to(h::create_model)),
    )
    .service(
        web::resource("/models/{model_id}")
            .route(web::get().to(h::get_model))
            .route(web::patch().to(h::update_model))
            .route(web::delete().to(h::delete_model)),
    )
    .service(
        web::resource("/models/{model_id}/logo")
            .route(web::put().to(h::upload_model_logo))
            .route(web::delete().to(h::remove_model_logo)),
    )
    .service(web::resource("/logos/{name}").route(web::get().to(h::get_logo)))
    .service(
        web::resource("/servers")
            .route(web::get().to(h::list_servers))
            .route(web::post().to(h::create_server)),
    )
    .service(
        web::resource("/servers/{server_id}")
            .route(web::get().to(h::get_server))
            .route(web::patch().to(h::update_server))
            .route(web::delete().to(h::delete_server)),
    )
    .service(
        web::resource("/servers/{server_id}/join-token").route(web::post().to(h::issue_join_token)),
    )
    .service(
        web::resource("/servers/{server_id}/agent/approve").route(web::post().to(h::approve_agent)),
    )
    .service(
        web::resource("/servers/{server_id}/agent/health").route(web::get().to(h::agent_health)),
    )
    .service(web::resource("/stats").route(web::get().to(h::stats)))
    .service(web::resource("/agents/join").route(web::post().to(node::join)))
    .service(web::resource("/nodes/{server_id}/heartbeat").route(web::post().to(node::heartbeat)))
    .service(web::resource("/nodes/{server_id}/report").route(web::put().to(node::report)));
}
