//! The management API of apps (the owner only: another user's app is 404).

use actix_web::{HttpRequest, HttpResponse, web};
use maas_shared::http::{ApiError, PageQuery, PageResponse, ValidatedJson};
use maas_shared::paging::PageRequest;
use maas_user::contract::{ApiKeyId, Caller, KeyLimits};
use uuid::Uuid;

use super::dto::{
    AppKeyCreated, AppKeyList, AppKeyResponse, AppMessageResponse, AppResponse,
    CreateAppKeyRequest, CreateAppRequest, MessagesQuery, PreviewQuery, PreviewResponse,
    PublishRequest, RollbackRequest, UpdateAppRequest, UsageDayView, UsageQuery, UsageResponse,
    VersionList, VersionResponse,
};
use crate::app::apps::{AppPatch, AppService, NewApp};
use crate::app::endpoint::{EndpointService, PreviewOf};
use crate::domain::app::AppId;
use crate::domain::errors::{AppsError, bad};
use crate::domain::ports::MessageFilter;

macro_rules! actor {
    ($req:expr, $caller:expr, $ctx:ident, $actor:ident) => {
        let $ctx = maas_user::contract::action_context(&$req);
        let $actor = maas_user::contract::Actor::Caller($caller.principal(), &$ctx);
    };
}

fn app_id(id: Uuid) -> AppId {
    AppId::from_uuid(id)
}

/// Create an app
///
/// A draft: one chat model, a system prompt with declared `{{variables}}`, generation
/// parameters, knowledge bases and retrieval settings. Publish it to open its endpoint.
#[utoipa::path(post, path = "/apps", tag = "apps", request_body = CreateAppRequest,
    responses((status = 201, body = AppResponse), (status = 409, description = "`app_name_taken`"),
        (status = 422, description = "`validation_failed`: every bad field (`knowledge.bases[i]` not yours: `knowledge_base_not_found`; `system_prompt`: `undeclared_variable`)")),
    security(("bearer" = [])))]
pub async fn create_app(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    body: ValidatedJson<CreateAppRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (name, description, config) = body.into_inner().config();
    let new = NewApp {
        name,
        description,
        config,
    };
    let app = service
        .create(&actor, caller.principal().user_id(), new)
        .await?;
    Ok(HttpResponse::Created().json(AppResponse::from(&app)))
}

/// Your apps
#[utoipa::path(get, path = "/apps", tag = "apps", params(PageQuery),
    responses((status = 200, body = PageResponse<AppResponse>)), security(("bearer" = [])))]
pub async fn list_apps(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let page = query.into_inner().into_request()?;
    let list = service
        .list(&actor, caller.principal().user_id(), &page)
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |a| AppResponse::from(&a))))
}

/// An app
#[utoipa::path(get, path = "/apps/{app_id}", tag = "apps", params(("app_id" = Uuid, Path)),
    responses((status = 200, body = AppResponse), (status = 404, description = "`app_not_found`")),
    security(("bearer" = [])))]
pub async fn get_app(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let app = service.get(&actor, app_id(path.into_inner())).await?;
    Ok(HttpResponse::Ok().json(AppResponse::from(&app)))
}

/// Change an app's draft
///
/// The endpoint keeps serving the published version until the next publish.
#[utoipa::path(patch, path = "/apps/{app_id}", tag = "apps", params(("app_id" = Uuid, Path)), request_body = UpdateAppRequest,
    responses((status = 200, body = AppResponse), (status = 404, description = "`app_not_found`"),
        (status = 409, description = "`app_name_taken`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn update_app(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<UpdateAppRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (name, description, config) = body.into_inner().config();
    let app = service
        .update(
            &actor,
            app_id(path.into_inner()),
            AppPatch {
                name,
                description,
                config,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(AppResponse::from(&app)))
}

/// Delete an app
///
/// Its keys stop working; its versions, end users' bindings and log are deleted (the end
/// users' conversations stay with your other conversations until they expire).
#[utoipa::path(delete, path = "/apps/{app_id}", tag = "apps", params(("app_id" = Uuid, Path)),
    responses((status = 204), (status = 404, description = "`app_not_found`")), security(("bearer" = [])))]
pub async fn delete_app(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    service.delete(&actor, app_id(path.into_inner())).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Publish the draft
///
/// Snapshots the draft as the next immutable version; the endpoint serves it at once.
#[utoipa::path(post, path = "/apps/{app_id}/publish", tag = "apps", params(("app_id" = Uuid, Path)), request_body = PublishRequest,
    responses((status = 201, body = VersionResponse), (status = 404, description = "`app_not_found`"),
        (status = 422, description = "`model_not_found` (the model is not served to you), `validation_failed`")),
    security(("bearer" = [])))]
pub async fn publish_app(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<PublishRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let body = body.into_inner();
    let version = service
        .publish(&actor, app_id(path.into_inner()), body.note.as_deref())
        .await?;
    Ok(HttpResponse::Created().json(VersionResponse::from(&version)))
}

/// Roll back to an earlier version
///
/// Publishes that version's configuration again as a new version naming it; the draft is
/// left as it is.
#[utoipa::path(post, path = "/apps/{app_id}/rollback", tag = "apps", params(("app_id" = Uuid, Path)), request_body = RollbackRequest,
    responses((status = 201, body = VersionResponse), (status = 404, description = "`app_not_found`, `app_version_not_found`"),
        (status = 422, description = "`model_not_found`")),
    security(("bearer" = [])))]
pub async fn rollback_app(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<RollbackRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let body = body.into_inner();
    let version = service
        .rollback(
            &actor,
            app_id(path.into_inner()),
            body.version,
            body.note.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Created().json(VersionResponse::from(&version)))
}

/// Unpublish an app
///
/// Its endpoint answers 404 to its keys until it is published again.
#[utoipa::path(post, path = "/apps/{app_id}/unpublish", tag = "apps", params(("app_id" = Uuid, Path)),
    responses((status = 200, body = AppResponse), (status = 404, description = "`app_not_found`")), security(("bearer" = [])))]
pub async fn unpublish_app(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let app = service.unpublish(&actor, app_id(path.into_inner())).await?;
    Ok(HttpResponse::Ok().json(AppResponse::from(&app)))
}

/// The app's versions
///
/// Who published what and when, newest first.
#[utoipa::path(get, path = "/apps/{app_id}/versions", tag = "apps", params(("app_id" = Uuid, Path)),
    responses((status = 200, body = VersionList), (status = 404, description = "`app_not_found`")), security(("bearer" = [])))]
pub async fn list_versions(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let versions = service.versions(&actor, app_id(path.into_inner())).await?;
    Ok(HttpResponse::Ok().json(VersionList {
        data: versions.iter().map(VersionResponse::from).collect(),
    }))
}

/// One version of the app
#[utoipa::path(get, path = "/apps/{app_id}/versions/{number}", tag = "apps", params(("app_id" = Uuid, Path), ("number" = u32, Path)),
    responses((status = 200, body = VersionResponse), (status = 404, description = "`app_not_found`, `app_version_not_found`")), security(("bearer" = [])))]
pub async fn get_version(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<(Uuid, u32)>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (id, number) = path.into_inner();
    let version = service.version(&actor, app_id(id), number).await?;
    Ok(HttpResponse::Ok().json(VersionResponse::from(&version)))
}

/// Preview a call
///
/// The exact request the model would get for this call body (OpenAI's chat request, as sent
/// to the endpoint) and the passages retrieved, without calling the model.
#[utoipa::path(post, path = "/apps/{app_id}/preview", tag = "apps", params(("app_id" = Uuid, Path), PreviewQuery), request_body = Object,
    responses((status = 200, body = PreviewResponse), (status = 404, description = "`app_not_found`, `app_version_not_found`"),
        (status = 400, description = "`unsupported_parameter`"), (status = 422, description = "`validation_failed`, `invalid_variables` (each missing or mistyped variable listed)")),
    security(("bearer" = [])))]
pub async fn preview_app(
    req: HttpRequest,
    caller: Caller,
    endpoint: web::Data<EndpointService>,
    path: web::Path<Uuid>,
    query: web::Query<PreviewQuery>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let of = match query.into_inner().of.as_deref() {
        None | Some("draft") => PreviewOf::Draft,
        Some("published") => PreviewOf::Published,
        Some(n) => n.parse::<u32>().map(PreviewOf::Version).map_err(|_| {
            AppsError::Invalid(vec![bad(
                "of",
                "invalid",
                "draft, published or a version number",
            )])
        })?,
    };
    let preview = endpoint
        .preview(&actor, app_id(path.into_inner()), of, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(PreviewResponse::from(preview)))
}

/// Create an app key
///
/// A key that calls this app's endpoint and nothing else, under its own rate limits; the
/// app's use is charged to you. The secret is shown once.
#[utoipa::path(post, path = "/apps/{app_id}/keys", tag = "apps", params(("app_id" = Uuid, Path)), request_body = CreateAppKeyRequest,
    responses((status = 201, body = AppKeyCreated), (status = 404, description = "`app_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn create_key(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<CreateAppKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let b = body.into_inner();
    let issued = service
        .create_key(
            &actor,
            app_id(path.into_inner()),
            &b.name,
            KeyLimits {
                requests_per_minute: b.requests_per_minute,
                tokens_per_minute: b.tokens_per_minute,
            },
            b.expires_at,
        )
        .await?;
    Ok(HttpResponse::Created().json(AppKeyCreated {
        key: AppKeyResponse::from(&issued.key),
        secret: issued.secret,
    }))
}

/// The app's keys
#[utoipa::path(get, path = "/apps/{app_id}/keys", tag = "apps", params(("app_id" = Uuid, Path)),
    responses((status = 200, body = AppKeyList), (status = 404, description = "`app_not_found`")), security(("bearer" = [])))]
pub async fn list_keys(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let keys = service.keys(&actor, app_id(path.into_inner())).await?;
    Ok(HttpResponse::Ok().json(AppKeyList {
        data: keys.iter().map(AppKeyResponse::from).collect(),
    }))
}

/// Revoke an app key
///
/// It stops working on every replica within a second.
#[utoipa::path(delete, path = "/apps/{app_id}/keys/{key_id}", tag = "apps", params(("app_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 200, body = AppKeyResponse), (status = 404, description = "`app_not_found`, `api_key_not_found` (also a key of another app)")),
    security(("bearer" = [])))]
pub async fn revoke_key(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let (id, key) = path.into_inner();
    let key = service
        .revoke_key(&actor, app_id(id), ApiKeyId::from_uuid(key))
        .await?;
    Ok(HttpResponse::Ok().json(AppKeyResponse::from(&key)))
}

/// The app's call log
///
/// Each call's question, answer, citations, latency, tokens and feedback, newest first.
#[utoipa::path(get, path = "/apps/{app_id}/messages", tag = "apps", params(("app_id" = Uuid, Path), MessagesQuery),
    responses((status = 200, body = PageResponse<AppMessageResponse>), (status = 404, description = "`app_not_found`")), security(("bearer" = [])))]
pub async fn list_messages(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let q = query.into_inner();
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filter = MessageFilter { end_user: q.user };
    let list = service
        .messages(&actor, app_id(path.into_inner()), &filter, &page)
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(list, |m| {
        AppMessageResponse::from(&m)
    })))
}

/// The app's usage
///
/// Calls, distinct end users, tokens and feedback by day (UTC).
#[utoipa::path(get, path = "/apps/{app_id}/usage", tag = "apps", params(("app_id" = Uuid, Path), UsageQuery),
    responses((status = 200, body = UsageResponse), (status = 404, description = "`app_not_found`"), (status = 422, description = "`validation_failed` (the range)")),
    security(("bearer" = [])))]
pub async fn usage(
    req: HttpRequest,
    caller: Caller,
    service: web::Data<AppService>,
    path: web::Path<Uuid>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let q = query.into_inner();
    let days = service
        .usage(&actor, app_id(path.into_inner()), q.from, q.to)
        .await?;
    Ok(HttpResponse::Ok().json(UsageResponse {
        messages: days.iter().map(|d| d.messages).sum(),
        prompt_tokens: days.iter().map(|d| d.prompt_tokens).sum(),
        completion_tokens: days.iter().map(|d| d.completion_tokens).sum(),
        days: days.iter().map(UsageDayView::from).collect(),
    }))
}
