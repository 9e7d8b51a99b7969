//! Gateway handlers: thin, the work is in [`GatewayService`].

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maas_shared::http::{ApiError, OpenAiError, ValidatedJson};
use maas_user::contract::{Authenticated, Caller, UserId, limit_headers};
use serde_json::Value;
use uuid::Uuid;

use super::dto::{
    CreateProviderRequest, ModelEntry, ModelList, ProviderResponse, UsageParams,
    UsageReportResponse, UsageRowResponse,
};
use crate::app::gateway::{Call, Endpoint, GatewayService, Proxied, ProxiedBody};
use crate::app::providers::{NewProvider, ProviderService};
use crate::app::usage::{ReportRequest, UsageService};
use crate::domain::provider::ProviderId;
use crate::domain::usage::Grouping;

/// Turns a proxied answer into the HTTP response (status, type, limit and cache headers).
pub(crate) fn respond(proxied: Proxied) -> HttpResponse {
    let status = StatusCode::from_u16(proxied.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    builder.insert_header(("content-type", proxied.content_type.as_str()));
    if let Some(cache) = proxied.cache {
        builder.insert_header(("x-cache", cache));
    }
    // What the call cost here and upstream, in ms (W3C Server-Timing; a stream's figures run to
    // its head). `maas-api` also records `gateway` in its overhead histogram.
    builder.insert_header((
        "server-timing",
        server_timing(proxied.gateway_time, proxied.upstream_time),
    ));
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

/// `gateway;dur=0.213, upstream;dur=1.532` (milliseconds).
#[must_use]
pub fn server_timing(gateway: std::time::Duration, upstream: std::time::Duration) -> String {
    format!(
        "gateway;dur={:.3}, upstream;dur={:.3}",
        gateway.as_secs_f64() * 1000.0,
        upstream.as_secs_f64() * 1000.0
    )
}

async fn proxy(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    endpoint: Endpoint,
    body: Value,
) -> Result<HttpResponse, OpenAiError> {
    let call = Call::parse(endpoint, body)?;
    Ok(respond(gateway.proxy(auth.0, call).await?))
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
    responses((status = 200, description = "OpenAI chat completion (JSON or text/event-stream)"), (status = 404, description = "`model_not_found`"), (status = 429, description = "`rate_limited` or `quota_exceeded`"), (status = 503, description = "`upstream_unavailable` (no upstream answered) or `dependency_unavailable` (the limiter's Redis is unreachable; with `Retry-After`)")),
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
#[utoipa::path(post, path = "/completions", tag = "openai", request_body = Object, responses((status = 200, description = "OpenAI completion"), (status = 404, description = "`model_not_found`")), security(("bearer" = []), ("api_key" = [])))]
pub async fn completions(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    body: web::Json<Value>,
) -> Result<HttpResponse, OpenAiError> {
    proxy(auth, gateway, Endpoint::Completions, body.into_inner()).await
}

/// Create embeddings
#[utoipa::path(post, path = "/embeddings", tag = "openai", request_body = Object, responses((status = 200, description = "OpenAI embeddings"), (status = 404, description = "`model_not_found`")), security(("bearer" = []), ("api_key" = [])))]
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
        user_id: p.user_id.map(UserId::from_uuid),
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
        user_id: query.user_id.map(|u| u.as_uuid()),
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

use super::dto::{
    AddMessageRequest, ConversationResponse, CreateConversationRequest, ExportParams,
    MessageResponse, RenameConversationRequest,
};
use crate::app::conversations::{ConversationService, ExportFormat};
use crate::domain::conversation::ConversationId;
use maas_shared::http::{PageQuery, PageResponse};

/// Start a conversation
#[utoipa::path(post, path = "/conversations", tag = "conversations", request_body = CreateConversationRequest, responses((status = 201, body = ConversationResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn create_conversation(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    body: ValidatedJson<CreateConversationRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let conversation = conversations
        .create(caller.principal(), body.title.as_deref(), body.model)
        .await?;
    Ok(HttpResponse::Created().json(ConversationResponse::from(&conversation)))
}

/// List my conversations
#[utoipa::path(get, path = "/conversations", tag = "conversations", params(PageQuery), responses((status = 200, body = PageResponse<ConversationResponse>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_conversations(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner().into_request()?;
    let found = conversations.list(caller.principal(), &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(found, |c| {
        ConversationResponse::from(&c)
    })))
}

/// Get a conversation
#[utoipa::path(get, path = "/conversations/{conversation_id}", tag = "conversations", params(("conversation_id" = Uuid, Path)), responses((status = 200, body = ConversationResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn get_conversation(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conversation = conversations
        .get(
            caller.principal(),
            ConversationId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ConversationResponse::from(&conversation)))
}

/// Rename a conversation
#[utoipa::path(patch, path = "/conversations/{conversation_id}", tag = "conversations", params(("conversation_id" = Uuid, Path)), request_body = RenameConversationRequest, responses((status = 200, body = ConversationResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn rename_conversation(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<RenameConversationRequest>,
) -> Result<HttpResponse, ApiError> {
    let conversation = conversations
        .rename(
            caller.principal(),
            ConversationId::from_uuid(path.into_inner()),
            &body.title,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ConversationResponse::from(&conversation)))
}

/// Delete a conversation
#[utoipa::path(delete, path = "/conversations/{conversation_id}", tag = "conversations", params(("conversation_id" = Uuid, Path)), responses((status = 204)), security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_conversation(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    conversations
        .delete(
            caller.principal(),
            ConversationId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List a conversation's messages
#[utoipa::path(get, path = "/conversations/{conversation_id}/messages", tag = "conversations", params(("conversation_id" = Uuid, Path), PageQuery), responses((status = 200, body = PageResponse<MessageResponse>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_messages(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    path: web::Path<Uuid>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner().into_request()?;
    let found = conversations
        .messages(
            caller.principal(),
            ConversationId::from_uuid(path.into_inner()),
            &page,
        )
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(found, |m| {
        MessageResponse::from(&m)
    })))
}

/// Add a message to a conversation
#[utoipa::path(post, path = "/conversations/{conversation_id}/messages", tag = "conversations", params(("conversation_id" = Uuid, Path)), request_body = AddMessageRequest, responses((status = 201, body = MessageResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn add_message(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<AddMessageRequest>,
) -> Result<HttpResponse, ApiError> {
    let message = conversations
        .add_message(
            caller.principal(),
            ConversationId::from_uuid(path.into_inner()),
            &body.role,
            &body.content,
        )
        .await?;
    Ok(HttpResponse::Created().json(MessageResponse::from(&message)))
}

async fn export(
    caller: &Caller,
    conversations: &ConversationService,
    id: Option<ConversationId>,
    params: ExportParams,
) -> Result<HttpResponse, ApiError> {
    let format = ExportFormat::parse(params.format.as_deref().unwrap_or("json"))
        .map_err(crate::domain::errors::InferenceError::from)?;
    let body = conversations
        .export(caller.principal(), id, params.from, params.to, format)
        .await?;
    let extension = if format == ExportFormat::Csv {
        "csv"
    } else {
        "json"
    };
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"conversations.{extension}\""),
        ))
        .streaming(futures_util::StreamExt::map(body, |chunk| {
            // Headers are gone already: the only way left to signal a failure is to cut the body.
            chunk.inspect_err(|err| tracing::error!(error = ?err, "export failed mid-stream"))
        })))
}

/// Export my conversations
///
/// Every message of every conversation of the caller (optionally within `from`/`to`), as a JSON
/// array or CSV, streamed straight from the database (constant memory for any size). CSV cells
/// that a spreadsheet would run as formulas are prefixed with `'`.
#[utoipa::path(get, path = "/conversations/export", tag = "conversations", params(ExportParams), responses((status = 200, description = "JSON array or CSV")), security(("bearer" = []), ("api_key" = [])))]
pub async fn export_all(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    params: web::Query<ExportParams>,
) -> Result<HttpResponse, ApiError> {
    export(&caller, &conversations, None, params.into_inner()).await
}

/// Export one conversation
#[utoipa::path(get, path = "/conversations/{conversation_id}/export", tag = "conversations", params(("conversation_id" = Uuid, Path), ExportParams), responses((status = 200, description = "JSON array or CSV")), security(("bearer" = []), ("api_key" = [])))]
pub async fn export_one(
    caller: Caller,
    conversations: web::Data<ConversationService>,
    path: web::Path<Uuid>,
    params: web::Query<ExportParams>,
) -> Result<HttpResponse, ApiError> {
    export(
        &caller,
        &conversations,
        Some(ConversationId::from_uuid(path.into_inner())),
        params.into_inner(),
    )
    .await
}

/// Chat with a deployment (admin)
///
/// The seeds' per-service chat: an OpenAI chat completion sent to the deployment under its
/// first served name, through the gateway (metered like any call). Without `conversation_id`
/// a conversation is started; its id comes back in `x-conversation-id` and the exchange is
/// kept in it.
#[utoipa::path(post, path = "/deployments/{deployment_id}/chat/completions", tag = "deployments", request_body = Object,
    params(("deployment_id" = Uuid, Path)),
    responses((status = 200, description = "OpenAI chat completion (JSON or text/event-stream); `x-conversation-id` names the conversation"),
        (status = 403, description = "`forbidden`"), (status = 404, description = "`deployment_not_found`, `conversation_not_found`"),
        (status = 503, description = "`upstream_unavailable` (no ready instance)")),
    security(("bearer" = [])))]
pub async fn deployment_chat(
    auth: Authenticated,
    gateway: web::Data<GatewayService>,
    path: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    auth.0
        .require(maas_user::contract::Permission::ManageServers)
        .map_err(crate::domain::errors::InferenceError::from)?;
    let model = gateway
        .deployment_model(path.into_inner())
        .ok_or(crate::domain::errors::InferenceError::DeploymentNotFound)?;
    let mut body = body.into_inner();
    let Some(object) = body.as_object_mut() else {
        return Err(crate::domain::errors::InferenceError::Invalid(vec![
            maas_shared::error::InvalidValue::new("body", "a JSON object"),
        ])
        .into());
    };
    object.insert("model".into(), Value::String(model.clone()));
    let conversation = match object.get("conversation_id") {
        Some(Value::String(id)) => id.clone(),
        _ => {
            let conversations = gateway
                .conversations()
                .ok_or(crate::domain::errors::InferenceError::ConversationNotFound)?;
            let created = conversations
                .create(&auth.0, Some(&format!("Chat with {model}")), Some(model))
                .await?;
            let id = created.id().to_string();
            object.insert("conversation_id".into(), Value::String(id.clone()));
            id
        }
    };
    let call = Call::parse(Endpoint::Chat, body)?;
    let mut response = respond(gateway.proxy(auth.0, call).await?);
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&conversation) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-conversation-id"),
            value,
        );
    }
    Ok(response)
}
