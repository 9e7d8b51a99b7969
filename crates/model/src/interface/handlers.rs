//! Registry, server and stats handlers: thin, the work is in the app services.

use actix_multipart::Multipart;
use actix_web::{HttpRequest, HttpResponse, web};
use maas_shared::http::{ApiError, PageQuery, PageResponse, ValidatedJson};
use maas_user::contract::Caller;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::dto::{
    AgentHealthResponse, ApproveAgentRequest, BrandPatch, BrandRequest, BrandResponse, CardPatch,
    CardRequest, CardResponse, CreatedServerResponse, JoinTokenResponse, LogoUpload, ModelPatch,
    ModelRequest, ModelResponse, ReorderBrandsRequest, ServerPatch, ServerRequest, ServerResponse,
    StatsResponse,
};
use crate::app::registry::RegistryService;
use crate::app::servers::ServerService;
use crate::domain::errors::{InvalidValue, ModelError};
use crate::domain::ports::LogoOwner;
use crate::domain::registry::{BrandDraft, BrandId, CardId, ModelId};
use crate::domain::server::ServerId;

/// Register a brand (admin)
#[utoipa::path(post, path = "/brands", tag = "registry", request_body = BrandRequest,
    responses((status = 201, body = BrandResponse), (status = 409, description = "`brand_name_taken`"), (status = 422, description = "`validation_failed` (every bad field)")),
    security(("bearer" = [])))]
pub async fn create_brand(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    body: ValidatedJson<BrandRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let b = body.into_inner();
    let brand = registry
        .create_brand(
            &actor,
            BrandDraft {
                name: b.name,
                description: b.description,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(BrandResponse::from(&brand)))
}

/// List brands
///
/// Every brand, in display order (a short list: not paginated).
#[utoipa::path(get, path = "/brands", tag = "registry", responses((status = 200, body = Vec<BrandResponse>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_brands(
    _caller: Caller,
    registry: web::Data<RegistryService>,
) -> Result<HttpResponse, ApiError> {
    let brands = registry.brands().await?;
    Ok(HttpResponse::Ok().json(brands.iter().map(BrandResponse::from).collect::<Vec<_>>()))
}

/// Get a brand
#[utoipa::path(get, path = "/brands/{brand_id}", tag = "registry", params(("brand_id" = Uuid, Path)), responses((status = 200, body = BrandResponse), (status = 404, description = "`brand_not_found`")), security(("bearer" = []), ("api_key" = [])))]
pub async fn get_brand(
    _caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let brand = registry
        .brand(BrandId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(BrandResponse::from(&brand)))
}

/// Change a brand (admin)
#[utoipa::path(patch, path = "/brands/{brand_id}", tag = "registry", params(("brand_id" = Uuid, Path)), request_body = BrandPatch,
    responses((status = 200, body = BrandResponse), (status = 404, description = "`brand_not_found`"), (status = 409, description = "`brand_name_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn update_brand(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<BrandPatch>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let patch = body.into_inner();
    let brand = registry
        .update_brand(&actor, BrandId::from_uuid(path.into_inner()), |d| {
            if let Some(name) = patch.name {
                d.name = name;
            }
            if let Some(description) = patch.description {
                d.description = description;
            }
        })
        .await?;
    Ok(HttpResponse::Ok().json(BrandResponse::from(&brand)))
}

/// Delete a brand (admin)
///
/// Only a brand without cards and servers (`in_use` otherwise).
#[utoipa::path(delete, path = "/brands/{brand_id}", tag = "registry", params(("brand_id" = Uuid, Path)),
    responses((status = 204), (status = 404, description = "`brand_not_found`"), (status = 409, description = "`in_use`")), security(("bearer" = [])))]
pub async fn delete_brand(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    registry
        .delete_brand(&actor, BrandId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Reorder the brands (admin)
///
/// `brand_ids` names every brand exactly once; the list shows them in that order.
#[utoipa::path(put, path = "/brands/order", tag = "registry", request_body = ReorderBrandsRequest,
    responses((status = 200, body = Vec<BrandResponse>), (status = 422, description = "`validation_failed`: a brand missing, unknown or repeated")), security(("bearer" = [])))]
pub async fn reorder_brands(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    body: ValidatedJson<ReorderBrandsRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let ids: Vec<BrandId> = body
        .into_inner()
        .brand_ids
        .into_iter()
        .map(BrandId::from_uuid)
        .collect();
    let brands = registry.reorder_brands(&actor, &ids).await?;
    Ok(HttpResponse::Ok().json(brands.iter().map(BrandResponse::from).collect::<Vec<_>>()))
}

/// Register an accelerator card of a brand (admin)
#[utoipa::path(post, path = "/brands/{brand_id}/cards", tag = "registry", params(("brand_id" = Uuid, Path)), request_body = CardRequest,
    responses((status = 201, body = CardResponse), (status = 404, description = "`brand_not_found`"), (status = 409, description = "`card_model_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn create_card(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<CardRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let card = registry
        .create_card(
            &actor,
            BrandId::from_uuid(path.into_inner()),
            body.into_inner().draft(),
        )
        .await?;
    Ok(HttpResponse::Created().json(CardResponse::from(&card)))
}

/// `?brand_id=` on the card list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CardFilter {
    /// Only this brand's cards.
    pub brand_id: Option<Uuid>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

/// List accelerator cards
#[utoipa::path(get, path = "/cards", tag = "registry", params(CardFilter), responses((status = 200, body = PageResponse<CardResponse>), (status = 404, description = "`brand_not_found`")), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_cards(
    _caller: Caller,
    registry: web::Data<RegistryService>,
    query: web::Query<CardFilter>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .into_request()?;
    let cards = registry
        .cards(q.brand_id.map(BrandId::from_uuid), &page)
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(cards, |c| CardResponse::from(&c))))
}

/// Get an accelerator card
#[utoipa::path(get, path = "/cards/{card_id}", tag = "registry", params(("card_id" = Uuid, Path)), responses((status = 200, body = CardResponse), (status = 404, description = "`card_not_found`")), security(("bearer" = []), ("api_key" = [])))]
pub async fn get_card(
    _caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let card = registry.card(CardId::from_uuid(path.into_inner())).await?;
    Ok(HttpResponse::Ok().json(CardResponse::from(&card)))
}

/// Change an accelerator card (admin)
#[utoipa::path(patch, path = "/cards/{card_id}", tag = "registry", params(("card_id" = Uuid, Path)), request_body = CardPatch,
    responses((status = 200, body = CardResponse), (status = 404, description = "`card_not_found`"), (status = 409, description = "`card_model_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn update_card(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<CardPatch>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let patch = body.into_inner();
    let card = registry
        .update_card(&actor, CardId::from_uuid(path.into_inner()), |d| {
            patch.apply(d)
        })
        .await?;
    Ok(HttpResponse::Ok().json(CardResponse::from(&card)))
}

/// Delete an accelerator card (admin)
#[utoipa::path(delete, path = "/cards/{card_id}", tag = "registry", params(("card_id" = Uuid, Path)),
    responses((status = 204), (status = 404, description = "`card_not_found`"), (status = 409, description = "`in_use`: servers name it")), security(("bearer" = [])))]
pub async fn delete_card(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    registry
        .delete_card(&actor, CardId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Register a model (admin)
#[utoipa::path(post, path = "/models", tag = "registry", request_body = ModelRequest,
    responses((status = 201, body = ModelResponse), (status = 409, description = "`model_name_taken`"), (status = 422, description = "`validation_failed` (every bad field)")),
    security(("bearer" = [])))]
pub async fn create_model(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    body: ValidatedJson<ModelRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let model = registry
        .create_model(&actor, body.into_inner().draft())
        .await?;
    Ok(HttpResponse::Created().json(ModelResponse::from(&model)))
}

/// List registered models
#[utoipa::path(get, path = "/models", tag = "registry", params(PageQuery), responses((status = 200, body = PageResponse<ModelResponse>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_models(
    _caller: Caller,
    registry: web::Data<RegistryService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.into_inner().into_request()?;
    let models = registry.models(&page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(models, |m| ModelResponse::from(&m))))
}

/// Get a registered model
#[utoipa::path(get, path = "/models/{model_id}", tag = "registry", params(("model_id" = Uuid, Path)), responses((status = 200, body = ModelResponse), (status = 404, description = "`model_not_found`")), security(("bearer" = []), ("api_key" = [])))]
pub async fn get_model(
    _caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let model = registry
        .model(ModelId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(ModelResponse::from(&model)))
}

/// Change a registered model (admin)
#[utoipa::path(patch, path = "/models/{model_id}", tag = "registry", params(("model_id" = Uuid, Path)), request_body = ModelPatch,
    responses((status = 200, body = ModelResponse), (status = 404, description = "`model_not_found`"), (status = 409, description = "`model_name_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn update_model(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<ModelPatch>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let patch = body.into_inner();
    let model = registry
        .update_model(&actor, ModelId::from_uuid(path.into_inner()), |d| {
            patch.apply(d)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ModelResponse::from(&model)))
}

/// Delete a registered model (admin)
#[utoipa::path(delete, path = "/models/{model_id}", tag = "registry", params(("model_id" = Uuid, Path)), responses((status = 204), (status = 404, description = "`model_not_found`")), security(("bearer" = [])))]
pub async fn delete_model(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    registry
        .delete_model(&actor, ModelId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Reads the `file` part of a multipart upload (nothing else may be sent).
async fn read_upload(
    req: &HttpRequest,
    form: Multipart,
    limit: usize,
) -> Result<Vec<u8>, ModelError> {
    use maas_shared::http::FormError;
    let rules = maas_shared::http::FormRules {
        file: "file",
        max_file_bytes: limit,
        text: &[],
        max_text_bytes: 0,
    };
    match maas_shared::http::read_form(req, form, rules).await {
        Ok(form) => Ok(form.file.bytes),
        Err(FormError::NotMultipart) => Err(ModelError::UnsupportedType(
            "send the image as multipart/form-data, in a field named `file`",
        )),
        Err(FormError::FileTooLarge(limit)) => Err(ModelError::TooLarge(limit)),
        Err(FormError::MissingFile) => {
            Err(InvalidValue::new("file", "a field named `file` with the image is required").into())
        }
        Err(FormError::Unexpected(_)) => {
            Err(InvalidValue::new("file", "send only a field named `file` with the image").into())
        }
        Err(FormError::Unreadable | FormError::BadText(_)) => {
            Err(InvalidValue::new("file", "the multipart body could not be read").into())
        }
    }
}

async fn upload(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    form: Multipart,
    owner: LogoOwner,
) -> Result<(), ApiError> {
    let bytes = read_upload(&req, form, registry.logo_limit()).await?;
    actor!(req, caller, ctx, actor);
    registry.set_logo(&actor, owner, &bytes).await?;
    Ok(())
}

/// Upload a brand's logo (admin)
///
/// PNG, JPEG, GIF or WebP, judged by the bytes (never by the file name or declared type), at
/// most 2 MB by default; stored under a generated name. Replaces the brand's logo.
#[utoipa::path(put, path = "/brands/{brand_id}/logo", tag = "registry", params(("brand_id" = Uuid, Path)),
    request_body(content = LogoUpload, content_type = "multipart/form-data"),
    responses((status = 200, body = BrandResponse), (status = 404, description = "`brand_not_found`"), (status = 413, description = "`payload_too_large`"), (status = 415, description = "`unsupported_media_type`: not an accepted image, or not multipart"), (status = 422, description = "`validation_failed`: no `file` field")),
    security(("bearer" = [])))]
pub async fn upload_brand_logo(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
    form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let id = BrandId::from_uuid(path.into_inner());
    upload(req, caller, registry.clone(), form, LogoOwner::Brand(id)).await?;
    Ok(HttpResponse::Ok().json(BrandResponse::from(&registry.brand(id).await?)))
}

/// Remove a brand's logo (admin)
#[utoipa::path(delete, path = "/brands/{brand_id}/logo", tag = "registry", params(("brand_id" = Uuid, Path)), responses((status = 204), (status = 404, description = "`brand_not_found`")), security(("bearer" = [])))]
pub async fn remove_brand_logo(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    registry
        .remove_logo(
            &actor,
            LogoOwner::Brand(BrandId::from_uuid(path.into_inner())),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Upload a model's logo (admin)
///
/// As for brands: PNG, JPEG, GIF or WebP by content, at most 2 MB by default.
#[utoipa::path(put, path = "/models/{model_id}/logo", tag = "registry", params(("model_id" = Uuid, Path)),
    request_body(content = LogoUpload, content_type = "multipart/form-data"),
    responses((status = 200, body = ModelResponse), (status = 404, description = "`model_not_found`"), (status = 413, description = "`payload_too_large`"), (status = 415, description = "`unsupported_media_type`"), (status = 422, description = "`validation_failed`: no `file` field")),
    security(("bearer" = [])))]
pub async fn upload_model_logo(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
    form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let id = ModelId::from_uuid(path.into_inner());
    upload(req, caller, registry.clone(), form, LogoOwner::Model(id)).await?;
    Ok(HttpResponse::Ok().json(ModelResponse::from(&registry.model(id).await?)))
}

/// Remove a model's logo (admin)
#[utoipa::path(delete, path = "/models/{model_id}/logo", tag = "registry", params(("model_id" = Uuid, Path)), responses((status = 204), (status = 404, description = "`model_not_found`")), security(("bearer" = [])))]
pub async fn remove_model_logo(
    req: HttpRequest,
    caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    registry
        .remove_logo(
            &actor,
            LogoOwner::Model(ModelId::from_uuid(path.into_inner())),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Get a logo
///
/// Served with the type its bytes have and `X-Content-Type-Options: nosniff`.
#[utoipa::path(get, path = "/logos/{name}", tag = "registry", params(("name" = String, Path, description = "The name in a `logo_url`")),
    responses((status = 200, description = "The image", content_type = "image/png"), (status = 404, description = "`logo_not_found`")), security(("bearer" = []), ("api_key" = [])))]
pub async fn get_logo(
    _caller: Caller,
    registry: web::Data<RegistryService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let logo = registry.logo(&path.into_inner()).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", logo.content_type))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("content-security-policy", "default-src 'none'"))
        .insert_header(("cache-control", "private, max-age=86400, immutable"))
        .body(logo.bytes))
}

/// Register a server (admin)
///
/// Answers with the server and a one-time join token for its agent (`maas-agent --token`):
/// shown once, stored as a digest only.
#[utoipa::path(post, path = "/servers", tag = "servers", request_body = ServerRequest,
    responses((status = 201, body = CreatedServerResponse), (status = 409, description = "`server_name_taken`"), (status = 422, description = "`validation_failed` (every bad field)")),
    security(("bearer" = [])))]
pub async fn create_server(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    body: ValidatedJson<ServerRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (view, token) = servers.create(&actor, body.into_inner().draft()).await?;
    Ok(HttpResponse::Created().json(CreatedServerResponse {
        server: ServerResponse::from(&view),
        join_token: token.token,
        join_token_expires_at: token.expires_at,
    }))
}

/// List servers (admin)
#[utoipa::path(get, path = "/servers", tag = "servers", params(PageQuery), responses((status = 200, body = PageResponse<ServerResponse>)), security(("bearer" = [])))]
pub async fn list_servers(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let list = servers.list(&actor, &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |v| ServerResponse::from(&v))))
}

/// Get a server (admin)
#[utoipa::path(get, path = "/servers/{server_id}", tag = "servers", params(("server_id" = Uuid, Path)), responses((status = 200, body = ServerResponse), (status = 404, description = "`server_not_found`")), security(("bearer" = [])))]
pub async fn get_server(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let view = servers
        .get(&actor, ServerId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(ServerResponse::from(&view)))
}

/// Change a server (admin)
#[utoipa::path(patch, path = "/servers/{server_id}", tag = "servers", params(("server_id" = Uuid, Path)), request_body = ServerPatch,
    responses((status = 200, body = ServerResponse), (status = 404, description = "`server_not_found`"), (status = 409, description = "`server_name_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn update_server(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<ServerPatch>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let patch = body.into_inner();
    let view = servers
        .update(&actor, ServerId::from_uuid(path.into_inner()), |d| {
            patch.apply(d)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ServerResponse::from(&view)))
}

/// Delete a server (admin)
///
/// Its agent's credential stops working at once.
#[utoipa::path(delete, path = "/servers/{server_id}", tag = "servers", params(("server_id" = Uuid, Path)), responses((status = 204), (status = 404, description = "`server_not_found`")), security(("bearer" = [])))]
pub async fn delete_server(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    servers
        .delete(&actor, ServerId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Issue a new join token (admin)
///
/// An unspent earlier token stops working. An agent that joins with the new one gets a new
/// node credential; the old credential stops working.
#[utoipa::path(post, path = "/servers/{server_id}/join-token", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 201, body = JoinTokenResponse), (status = 404, description = "`server_not_found`")), security(("bearer" = [])))]
pub async fn issue_join_token(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let token = servers
        .issue_join_token(&actor, ServerId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Created().json(JoinTokenResponse {
        join_token: token.token,
        expires_at: token.expires_at,
    }))
}

/// Approve the agent's address (admin)
///
/// The platform calls an agent (health, logs) only at the address the agent reports, once an
/// admin approved exactly that address; if the agent later reports another, calls stop until
/// it is approved again.
#[utoipa::path(post, path = "/servers/{server_id}/agent/approve", tag = "servers", params(("server_id" = Uuid, Path)), request_body = ApproveAgentRequest,
    responses((status = 200, body = ServerResponse), (status = 404, description = "`server_not_found`"), (status = 409, description = "`agent_address_not_approved`: the agent reports another address"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn approve_agent(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<ApproveAgentRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let view = servers
        .approve_agent(
            &actor,
            ServerId::from_uuid(path.into_inner()),
            &body.into_inner().agent_url,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ServerResponse::from(&view)))
}

/// Check the agent's health (admin)
///
/// Calls `GET /health` on the agent at its approved address (no redirects; link-local and
/// cloud-metadata addresses refused at connect time).
#[utoipa::path(get, path = "/servers/{server_id}/agent/health", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 200, body = AgentHealthResponse), (status = 404, description = "`server_not_found`"), (status = 409, description = "`agent_address_not_approved`"), (status = 503, description = "`agent_unreachable`")),
    security(("bearer" = [])))]
pub async fn agent_health(
    req: HttpRequest,
    caller: Caller,
    servers: web::Data<ServerService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let health = servers
        .agent_health(&actor, ServerId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(AgentHealthResponse::from(health)))
}

/// Platform figures
///
/// Servers (all, online, per status), deployments per state, ready instances and models.
#[utoipa::path(get, path = "/stats", tag = "servers", responses((status = 200, body = StatsResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn stats(
    _caller: Caller,
    servers: web::Data<ServerService>,
    deployments: web::Data<crate::app::deployments::DeploymentService>,
) -> Result<HttpResponse, ApiError> {
    let stats = deployments.add_figures(servers.stats().await?).await?;
    Ok(HttpResponse::Ok().json(StatsResponse::from(stats)))
}
