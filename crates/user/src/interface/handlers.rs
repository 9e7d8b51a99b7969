//! Handlers of the identity API: extract, call one service, map the result.

use actix_web::{HttpRequest, HttpResponse, web};
use maas_shared::clock::Clock;
use maas_shared::http::{ApiError, PageQuery, PageResponse, ValidatedJson};
use uuid::Uuid;

use super::dto::{
    ApiKeyResponse, ChangePasswordRequest, CreateKeyRequest, CreateUserRequest, CreatedKeyResponse,
    LoginRequest, QuotaPolicyDto, QuotaUsageResponse, RefreshRequest, SetRolesRequest,
    TokenResponse, UserResponse,
};
use super::extract::{
    Authorized, Caller, ManageOwnKeys, ManageQuotas, ManageUsers, action_context,
};
use crate::app::Actor;
use crate::app::accounts::{AccountService, NewAccount};
use crate::app::keys::ApiKeyService;
use crate::app::quotas::QuotaService;
use crate::app::sessions::SessionService;
use crate::domain::api_key::ApiKeyId;
use crate::domain::user::UserId;

/// The clock, as app data.
pub type ClockData = web::Data<std::sync::Arc<dyn Clock>>;

fn account(req: CreateUserRequest) -> NewAccount {
    NewAccount {
        username: req.username,
        email: req.email,
        password: req.password,
        roles: req.roles,
    }
}

/// Log in
///
/// Exchanges a username (or e-mail) and password for a short-lived access token and a
/// single-use refresh token. Unknown users and wrong passwords get the same answer. At most 5
/// attempts per minute per login name and client address (then 429 with `Retry-After`).
#[utoipa::path(
    post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "`invalid_credentials`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`account_disabled`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "`login_rate_limited`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`dependency_unavailable`: the login throttle's Redis is unreachable (with `Retry-After`)", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    req: HttpRequest,
    sessions: web::Data<SessionService>,
    clock: ClockData,
    body: ValidatedJson<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ip = req.peer_addr().map(|a| a.ip().to_string());
    let tokens = sessions
        .login(&body.login, body.password, ip.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from_session(tokens, clock.now())))
}

/// Refresh a session
///
/// Trades a refresh token for a new access token and a new refresh token. Each refresh token
/// works once: presenting a spent one revokes the whole session (`refresh_token_reused`).
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "`invalid_token` or `refresh_token_reused`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    sessions: web::Data<SessionService>,
    clock: ClockData,
    body: ValidatedJson<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let tokens = sessions.refresh(&body.refresh_token).await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from_session(tokens, clock.now())))
}

/// Log out
///
/// Ends the session of a refresh token; its access tokens stop working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest, responses((status = 204)))]
pub async fn logout(
    sessions: web::Data<SessionService>,
    body: ValidatedJson<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    sessions.logout(&body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Register
///
/// Creates an account with the `user` role, when self-registration is switched on
/// (`MAAS__IDENTITY__ALLOW_SELF_REGISTRATION`); otherwise 403 `registration_closed`.
#[utoipa::path(
    post, path = "/auth/register", tag = "auth", request_body = CreateUserRequest,
    responses((status = 201, body = UserResponse), (status = 403, description = "`registration_closed`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"))
)]
pub async fn register(
    accounts: web::Data<AccountService>,
    body: ValidatedJson<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = accounts.register(account(body.into_inner())).await?;
    Ok(HttpResponse::Created().json(UserResponse::from(&user)))
}

/// Who am I
#[utoipa::path(get, path = "/me", tag = "me", responses((status = 200, body = UserResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn me(
    caller: Caller,
    accounts: web::Data<AccountService>,
) -> Result<HttpResponse, ApiError> {
    let user = accounts.me(caller.principal()).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Change my password
///
/// Checks the current password, sets the new one and ends every session of the account.
#[utoipa::path(post, path = "/me/password", tag = "me", request_body = ChangePasswordRequest, responses((status = 204)), security(("bearer" = [])))]
pub async fn change_password(
    caller: Caller,
    accounts: web::Data<AccountService>,
    body: ValidatedJson<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    accounts
        .change_password(caller.principal(), body.current_password, body.new_password)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// My limits and quotas
///
/// Every rate limit and quota that applies to the caller, with what is used in the current
/// window. Called with an API key, the key's own limits are included.
#[utoipa::path(get, path = "/me/quota", tag = "me", responses((status = 200, body = QuotaUsageResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn my_quota(
    caller: Caller,
    quotas: web::Data<QuotaService>,
) -> Result<HttpResponse, ApiError> {
    let usage = quotas.usage(caller.principal()).await?;
    Ok(HttpResponse::Ok().json(QuotaUsageResponse {
        limits: usage.into_iter().map(Into::into).collect(),
    }))
}

/// List my API keys
#[utoipa::path(get, path = "/me/keys", tag = "me", params(PageQuery), responses((status = 200, body = PageResponse<ApiKeyResponse>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_my_keys(
    req: HttpRequest,
    caller: Authorized<ManageOwnKeys>,
    keys: web::Data<ApiKeyService>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner().into_request()?;
    let ctx = action_context(&req);
    let principal = caller.principal();
    let found = keys
        .list(Actor::Caller(principal, &ctx), principal.user_id(), &page)
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(found, |k| ApiKeyResponse::from(&k))))
}

/// Create an API key
///
/// Returns the secret once. A key can only narrow what its owner may do, and a key can only
/// create keys with scopes it has itself (403 `scope_not_allowed`).
#[utoipa::path(post, path = "/me/keys", tag = "me", request_body = CreateKeyRequest, responses((status = 201, body = CreatedKeyResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn create_my_key(
    req: HttpRequest,
    caller: Authorized<ManageOwnKeys>,
    keys: web::Data<ApiKeyService>,
    body: ValidatedJson<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let principal = caller.principal();
    let issued = keys
        .create(
            Actor::Caller(principal, &ctx),
            principal.user_id(),
            body.into_inner().into(),
        )
        .await?;
    Ok(HttpResponse::Created().json(CreatedKeyResponse::from(issued)))
}

/// Revoke one of my API keys
///
/// The key stops working on every replica within a second. Other users' keys are 404.
#[utoipa::path(delete, path = "/me/keys/{key_id}", tag = "me", params(("key_id" = Uuid, Path)), responses((status = 200, body = ApiKeyResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn revoke_my_key(
    req: HttpRequest,
    caller: Authorized<ManageOwnKeys>,
    keys: web::Data<ApiKeyService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let principal = caller.principal();
    let key = keys
        .revoke(
            Actor::Caller(principal, &ctx),
            principal.user_id(),
            ApiKeyId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ApiKeyResponse::from(&key)))
}

/// Rotate one of my API keys
///
/// Issues a new secret for the key (same id, scopes and limits); the old secret stops working.
#[utoipa::path(post, path = "/me/keys/{key_id}/rotate", tag = "me", params(("key_id" = Uuid, Path)), responses((status = 200, body = CreatedKeyResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn rotate_my_key(
    req: HttpRequest,
    caller: Authorized<ManageOwnKeys>,
    keys: web::Data<ApiKeyService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let principal = caller.principal();
    let issued = keys
        .rotate(
            Actor::Caller(principal, &ctx),
            principal.user_id(),
            ApiKeyId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::Ok().json(CreatedKeyResponse::from(issued)))
}

/// List users (admin)
#[utoipa::path(get, path = "/users", tag = "users", params(PageQuery), responses((status = 200, body = PageResponse<UserResponse>)), security(("bearer" = [])))]
pub async fn list_users(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    accounts: web::Data<AccountService>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner().into_request()?;
    let ctx = action_context(&req);
    let found = accounts
        .list(Actor::Caller(caller.principal(), &ctx), &page)
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(found, |u| UserResponse::from(&u))))
}

/// Create a user (admin)
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUserRequest, responses((status = 201, body = UserResponse), (status = 409, description = "`username_taken` or `email_taken`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn create_user(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    accounts: web::Data<AccountService>,
    body: ValidatedJson<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let user = accounts
        .create(
            Actor::Caller(caller.principal(), &ctx),
            account(body.into_inner()),
        )
        .await?;
    Ok(HttpResponse::Created().json(UserResponse::from(&user)))
}

/// Get a user (admin)
#[utoipa::path(get, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)), responses((status = 200, body = UserResponse)), security(("bearer" = [])))]
pub async fn get_user(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    accounts: web::Data<AccountService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let user = accounts
        .get(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Delete a user (admin)
///
/// Final: the account's keys are revoked and its sessions end. Nobody deletes their own account
/// (403 `self_status_change`), and the last active admin cannot be deleted (409 `last_admin`).
#[utoipa::path(delete, path = "/users/{user_id}", tag = "users", params(("user_id" = Uuid, Path)),
    responses(
        (status = 204),
        (status = 403, description = "`self_status_change` (your own account) or `forbidden`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`last_admin`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn delete_user(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    accounts: web::Data<AccountService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    accounts
        .delete(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn set_enabled(
    req: &HttpRequest,
    caller: &Authorized<ManageUsers>,
    accounts: &AccountService,
    id: Uuid,
    enabled: bool,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(req);
    let user = accounts
        .set_enabled(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(id),
            enabled,
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Disable a user (admin)
///
/// The user's sessions end and keys stop working on every replica within a second. Nobody
/// disables their own account (403 `self_status_change`), and the last active admin cannot be
/// disabled (409 `last_admin`).
#[utoipa::path(post, path = "/users/{user_id}/disable", tag = "users", params(("user_id" = Uuid, Path)),
    responses(
        (status = 200, body = UserResponse),
        (status = 403, description = "`self_status_change` (your own account) or `forbidden`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`last_admin`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn disable_user(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    accounts: web::Data<AccountService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(&req, &caller, &accounts, path.into_inner(), false).await
}

/// Enable a user (admin)
#[utoipa::path(post, path = "/users/{user_id}/enable", tag = "users", params(("user_id" = Uuid, Path)), responses((status = 200, body = UserResponse)), security(("bearer" = [])))]
pub async fn enable_user(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    accounts: web::Data<AccountService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(&req, &caller, &accounts, path.into_inner(), true).await
}

/// Set a user's roles (admin)
///
/// Nobody changes their own roles (403 `self_role_change`).
#[utoipa::path(put, path = "/users/{user_id}/roles", tag = "users", params(("user_id" = Uuid, Path)), request_body = SetRolesRequest,
    responses(
        (status = 200, body = UserResponse),
        (status = 403, description = "`self_role_change` (your own roles) or `forbidden`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`last_admin`", body = maas_shared::http::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn set_roles(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    accounts: web::Data<AccountService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<SetRolesRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let user = accounts
        .set_roles(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(path.into_inner()),
            &body.roles,
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Get a user's limits and quotas (admin)
#[utoipa::path(get, path = "/users/{user_id}/quota", tag = "users", params(("user_id" = Uuid, Path)), responses((status = 200, body = QuotaPolicyDto)), security(("bearer" = [])))]
pub async fn get_user_quota(
    req: HttpRequest,
    caller: Authorized<ManageQuotas>,
    quotas: web::Data<QuotaService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let policy = quotas
        .user_policy(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(path.into_inner()),
        )
        .await?;
    Ok(HttpResponse::Ok().json(QuotaPolicyDto::from(policy)))
}

/// Set a user's limits and quotas (admin)
///
/// Replaces the whole policy; takes effect on every replica within a second.
#[utoipa::path(put, path = "/users/{user_id}/quota", tag = "users", params(("user_id" = Uuid, Path)), request_body = QuotaPolicyDto, responses((status = 200, body = QuotaPolicyDto)), security(("bearer" = [])))]
pub async fn set_user_quota(
    req: HttpRequest,
    caller: Authorized<ManageQuotas>,
    quotas: web::Data<QuotaService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<QuotaPolicyDto>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let policy = body.into_inner();
    quotas
        .set_user_policy(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(path.into_inner()),
            policy.into(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(policy))
}

/// List a user's API keys (admin)
#[utoipa::path(get, path = "/users/{user_id}/keys", tag = "users", params(("user_id" = Uuid, Path), PageQuery), responses((status = 200, body = PageResponse<ApiKeyResponse>)), security(("bearer" = [])))]
pub async fn list_user_keys(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    keys: web::Data<ApiKeyService>,
    path: web::Path<Uuid>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner().into_request()?;
    let ctx = action_context(&req);
    let found = keys
        .list(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(path.into_inner()),
            &page,
        )
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(found, |k| ApiKeyResponse::from(&k))))
}

/// Create an API key for a user (admin)
#[utoipa::path(post, path = "/users/{user_id}/keys", tag = "users", params(("user_id" = Uuid, Path)), request_body = CreateKeyRequest, responses((status = 201, body = CreatedKeyResponse)), security(("bearer" = [])))]
pub async fn create_user_key(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    keys: web::Data<ApiKeyService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let issued = keys
        .create(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(path.into_inner()),
            body.into_inner().into(),
        )
        .await?;
    Ok(HttpResponse::Created().json(CreatedKeyResponse::from(issued)))
}

/// Revoke a user's API key (admin)
#[utoipa::path(delete, path = "/users/{user_id}/keys/{key_id}", tag = "users", params(("user_id" = Uuid, Path), ("key_id" = Uuid, Path)), responses((status = 200, body = ApiKeyResponse)), security(("bearer" = [])))]
pub async fn revoke_user_key(
    req: HttpRequest,
    caller: Authorized<ManageUsers>,
    keys: web::Data<ApiKeyService>,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let (user, key) = path.into_inner();
    let key = keys
        .revoke(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(user),
            ApiKeyId::from_uuid(key),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ApiKeyResponse::from(&key)))
}

/// Set an API key's limits and quotas (admin)
#[utoipa::path(put, path = "/users/{user_id}/keys/{key_id}/quota", tag = "users", params(("user_id" = Uuid, Path), ("key_id" = Uuid, Path)), request_body = QuotaPolicyDto, responses((status = 200, body = QuotaPolicyDto)), security(("bearer" = [])))]
pub async fn set_key_quota(
    req: HttpRequest,
    caller: Authorized<ManageQuotas>,
    quotas: web::Data<QuotaService>,
    path: web::Path<(Uuid, Uuid)>,
    body: ValidatedJson<QuotaPolicyDto>,
) -> Result<HttpResponse, ApiError> {
    let ctx = action_context(&req);
    let (user, key) = path.into_inner();
    let policy = body.into_inner();
    quotas
        .set_key_policy(
            Actor::Caller(caller.principal(), &ctx),
            UserId::from_uuid(user),
            ApiKeyId::from_uuid(key),
            policy.into(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(policy))
}
