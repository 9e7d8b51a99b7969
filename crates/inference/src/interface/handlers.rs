//! Gateway handlers: thin, the work is in [`GatewayService`].

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maas_shared::http::{ApiError, OpenAiError, ValidatedJson};
use maas_user::contract::{Authenticated, Caller, limit_headers};
use serde_json::Value;
use uuid::Uuid;

use super::dto::{
    CreateProviderRequest, ModelEntry, ModelList, ProviderResponse, UsageParams,
    UsageReportResponse, UsageRowResponse,
};
use crate::app::gateway::{Endpoint, GatewayService, Proxied, ProxiedBody};
use crate::app::providers::{NewProvider, ProviderService};
use crate::app::usage::{ReportRequest, UsageService};
use crate::domain::provider::ProviderId;
use crate::domain::usage::Grouping;

fn respond(proxied: Proxied) -> HttpResponse {
    let status = StatusCode::from_u16(proxied.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    builder.insert_header(("content-type", proxied.content_type.as_str()));
    if let Some(cache) = proxied.cache {
        builder.insert_header(("x-cache", cache));
    }
    if let Some(limit) = &proxied.limit {
        for (name, value) in limit_headers(limit) {
            builder.insert_header((name, value));
        }
    }
    match proxied.body {
        ProxiedBody::Full(bytes) => builder.body(bytes),
        ProxiedBody::Stream(stream) => {
            builder
                .insert_header(("cache-control", "no-cache"))
                .insert_header(("x-accel-buffering", "no"));
            builder.streaming(stream)
        }
    }
}

async fn proxy(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    endpoint: Endpoint,
    body: Value,
) -> Result<HttpResponse, OpenAiError> {
    Ok(respond(gateway.proxy(auth.0, endpoint, body).await?))
}

/// List models
///
/// The models this API key may call.
#[utoipa::path(get, path = "/models", tag = "openai", responses((status = 200, body = ModelList)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_models(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
) -> Result<HttpResponse, OpenAiError> {
    let models = gateway.models(&auth.0).await?;
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data: models.into_iter().map(ModelEntry::from).collect(),
    }))
}

/// Create a chat completion
///
/// OpenAI's chat completions, streamed (`"stream": true`, server-sent events) or not. Every
/// OpenAI parameter is passed through. The call is admitted against the key's and user's rate
/// limits and quotas first (429 when spent) and settled with the upstream's real usage.
#[utoipa::path(post, path = "/chat/completions", tag = "openai", request_body = Object,
    responses((status = 200, description = "OpenAI chat completion (JSON or text/event-stream)"), (status = 404, description = "`model_not_found`"), (status = 429, description = "`rate_limited` or `quota_exceeded`"), (status = 503, description = "`upstream_unavailable`")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn chat_completions(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    body: web::Json<Value>,
) -> Result<HttpResponse, OpenAiError> {
    proxy(auth, gateway, Endpoint::Chat, body.into_inner()).await
}

/// Create a completion
///
/// OpenAI's legacy text completions, streamed or not; metered like chat.
#[utoipa::path(post, path = "/completions", tag = "openai", request_body = Object, responses((status = 200, description = "OpenAI completion")), security(("bearer" = []), ("api_key" = [])))]
pub async fn completions(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    body: web::Json<Value>,
) -> Result<HttpResponse, OpenAiError> {
    proxy(auth, gateway, Endpoint::Completions, body.into_inner()).await
}

/// Create embeddings
#[utoipa::path(post, path = "/embeddings", tag = "openai", request_body = Object, responses((status = 200, description = "OpenAI embeddings")), security(("bearer" = []), ("api_key" = [])))]
pub async fn embeddings(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    body: web::Json<Value>,
) -> Result<HttpResponse, OpenAiError> {
    proxy(auth, gateway, Endpoint::Embeddings, body.into_inner()).await
}

/// Register a provider (admin)
///
/// An OpenAI-compatible upstream and the models it serves. Its key is stored encrypted and
/// never returned. Callers can never choose where a request or a credential goes: only these
/// registrations do.
#[utoipa::path(post, path = "/providers", tag = "providers", request_body = CreateProviderRequest, responses((status = 201, body = ProviderResponse), (status = 409, description = "`provider_name_taken`")), security(("bearer" = [])))]
pub async fn create_provider(
    req: HttpRequest,
    caller: Caller,
    providers: web::Data<ProviderService>,
    body: ValidatedJson<CreateProviderRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let request = NewProvider {
        name: body.name,
        base_url: body.base_url,
        api_key: body.api_key,
        models: body
            .models
            .into_iter()
            .map(|m| (m.model, m.upstream_model))
            .collect(),
    };
    let ctx = maas_user::contract::action_context(&req);
    let provider = providers.create(caller.principal(), &ctx, request).await?;
    Ok(HttpResponse::Created().json(ProviderResponse::from(&provider)))
}

/// List providers (admin)
#[utoipa::path(get, path = "/providers", tag = "providers", responses((status = 200, body = Vec<ProviderResponse>)), security(("bearer" = [])))]
pub async fn list_providers(
    caller: Caller,
    providers: web::Data<ProviderService>,
) -> Result<HttpResponse, ApiError> {
    let list = providers.list(caller.principal()).await?;
    Ok(HttpResponse::Ok().json(list.iter().map(ProviderResponse::from).collect::<Vec<_>>()))
}

/// Delete a provider (admin)
#[utoipa::path(delete, path = "/providers/{provider_id}", tag = "providers", params(("provider_id" = Uuid, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_provider(
    req: HttpRequest,
    caller: Caller,
    providers: web::Data<ProviderService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = maas_user::contract::action_context(&req);
    providers
        .delete(
            caller.principal(),
            &ctx,
            ProviderId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Usage report
///
/// Calls and tokens aggregated by day, model or key over a date range: your own, or (admins)
/// another user's (`user_id`) or everyone's (`all=true`).
#[utoipa::path(get, path = "/usage", tag = "usage", params(UsageParams), responses((status = 200, body = UsageReportResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn usage_report(
    caller: Caller,
    usage: web::Data<UsageService>,
    params: web::Query<UsageParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let request = ReportRequest {
        from: p.from,
        to: p.to,
        group_by: p.group_by,
        user_id: p.user_id,
        all_users: p.all,
    };
    let (query, rows) = usage.report(caller.principal(), request).await?;
    Ok(HttpResponse::Ok().json(UsageReportResponse {
        from: query.from,
        to: query.to,
        group_by: match query.group_by {
            Grouping::Day => "day",
            Grouping::Model => "model",
            Grouping::Key => "key",
        }
        .to_owned(),
        user_id: query.user_id,
        rows: rows
            .into_iter()
            .map(|r| UsageRowResponse {
                total_tokens: r.prompt_tokens + r.completion_tokens,
                group: r.group,
                requests: r.requests,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                estimated_requests: r.estimated_requests,
            })
            .collect(),
    }))
}
