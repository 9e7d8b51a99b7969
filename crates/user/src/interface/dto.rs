//! Request and response bodies of the identity API.

use chrono::{DateTime, Utc};
use maas_shared::http::enum_list;
use maas_shared::whole;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use uuid::Uuid;
use validator::Validate;

use crate::app::keys::{IssuedKey, NewKey};
use crate::app::quotas::RuleUsage;
use crate::app::sessions::SessionTokens;
use crate::domain::api_key::{ApiKey, KeyLimits};
use crate::domain::limits::{MAX_LIMIT, Metric, QuotaPolicy};
use crate::domain::user::User;

/// Log in with a username or e-mail and a password.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or e-mail address.
    #[validate(length(min = 1, max = 254))]
    #[schema(min_length = 1, max_length = 254)]
    pub login: String,
    /// Password.
    #[validate(length(min = 1, max = 1024))]
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

/// A refresh token, to rotate or to end its session.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    #[validate(length(min = 1, max = 256))]
    #[schema(min_length = 1, max_length = 256)]
    pub refresh_token: String,
}

/// Tokens of a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single-use refresh token; shown once. Spending it twice revokes the session.
    pub refresh_token: String,
    /// When the refresh token expires.
    pub refresh_expires_at: DateTime<Utc>,
    /// The logged-in user.
    pub user_id: Uuid,
}

impl TokenResponse {
    /// From a session, as of `now`.
    #[must_use]
    pub fn from_session(tokens: SessionTokens, now: DateTime<Utc>) -> Self {
        Self {
            expires_in: (tokens.access.expires_at - now).num_seconds().max(0),
            access_token: tokens.access.token,
            token_type: "Bearer",
            refresh_token: tokens.refresh_token,
            refresh_expires_at: tokens.refresh_expires_at,
            user_id: tokens.user_id.as_uuid(),
        }
    }
}

/// A new account.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 3–32 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit (stored
    /// lowercase).
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{2,31}$")]
    pub username: String,
    /// Optional e-mail address (also accepted as login): `local@domain.tld`, at most 254
    /// characters, no spaces.
    #[schema(
        pattern = "^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^@\\s.\\x00-\\x1f\\x7f-\\x9f]+(\\.[^@\\s.\\x00-\\x1f\\x7f-\\x9f]+)+$",
        max_length = 254
    )]
    pub email: Option<String>,
    /// 10–128 characters.
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    /// Roles: `admin`, `developer`, `user` (default `user`). Ignored on self-registration.
    #[serde(default)]
    #[schema(schema_with = role_list_or_none)]
    pub roles: Vec<String>,
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    /// Id.
    pub id: Uuid,
    /// Login name.
    pub username: String,
    /// E-mail.
    pub email: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// `active`, `disabled`.
    pub status: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last successful login.
    pub last_login_at: Option<DateTime<Utc>>,
}

impl From<&User> for UserResponse {
    fn from(user: &User) -> Self {
        Self {
            id: user.id().as_uuid(),
            username: user.username().as_str().to_owned(),
            email: user.email().map(|e| e.as_str().to_owned()),
            roles: user.roles().iter().map(|r| r.as_str().to_owned()).collect(),
            status: user.status().as_str().to_owned(),
            created_at: user.created_at(),
            updated_at: user.updated_at(),
            last_login_at: user.last_login_at(),
        }
    }
}

/// New roles of a user.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRolesRequest {
    /// At least one of `admin`, `developer`, `user`.
    #[validate(length(min = 1, max = 3))]
    #[schema(schema_with = role_list)]
    pub roles: Vec<String>,
}

/// A password change.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password.
    #[validate(length(min = 1, max = 1024))]
    #[schema(min_length = 1, max_length = 1024)]
    pub current_password: String,
    /// The new password (10–128 characters).
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
}

/// Rate limits of a key (each from 1 to 9223372036854775807, i.e. 2^63 − 1).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimitsDto {
    /// Requests per minute through this key.
    #[validate(range(min = 1, max = MAX_LIMIT, message = "must be between 1 and 9223372036854775807"))]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute through this key.
    #[validate(range(min = 1, max = MAX_LIMIT, message = "must be between 1 and 9223372036854775807"))]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub tokens_per_minute: Option<u64>,
}

/// A new API key.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Label: 1–64 characters once trimmed, no control characters.
    #[schema(
        max_length = 64,
        pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]([^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f])?$"
    )]
    pub name: String,
    /// `inference` (default), `knowledge`, `finetune`, `apps`, `manage`; never more than you have.
    #[serde(default)]
    #[validate(length(max = 5))]
    #[schema(schema_with = scope_list)]
    pub scopes: Vec<String>,
    /// Models the key may call (each 1–200 characters, no spaces); empty for all.
    #[serde(default)]
    #[validate(length(max = 100))]
    #[schema(schema_with = model_list)]
    pub allowed_models: Vec<String>,
    /// The key's own rate limits.
    #[serde(default)]
    #[validate(nested)]
    pub limits: KeyLimitsDto,
    /// When the key stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<CreateKeyRequest> for NewKey {
    fn from(r: CreateKeyRequest) -> Self {
        Self {
            name: r.name,
            scopes: r.scopes,
            allowed_models: r.allowed_models,
            limits: KeyLimits {
                requests_per_minute: r.limits.requests_per_minute,
                tokens_per_minute: r.limits.tokens_per_minute,
            },
            expires_at: r.expires_at,
            app: None,
        }
    }
}

/// An API key (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Label.
    pub name: String,
    /// Identifying start of the secret, e.g. `sk-AbC12345`.
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Models it may call (empty: all).
    pub allowed_models: Vec<String>,
    /// Its own rate limits.
    pub limits: KeyLimitsDto,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use (batched: up to a few seconds behind).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The app an app key is bound to (it calls only that app's endpoint); absent for
    /// ordinary keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<Uuid>,
}

impl From<&ApiKey> for ApiKeyResponse {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id().as_uuid(),
            user_id: k.owner().as_uuid(),
            name: k.name().as_str().to_owned(),
            prefix: k.prefix().to_owned(),
            scopes: k.scopes().iter().map(|s| s.as_str().to_owned()).collect(),
            allowed_models: k.allowed_models().iter().cloned().collect(),
            limits: KeyLimitsDto {
                requests_per_minute: k.limits().requests_per_minute,
                tokens_per_minute: k.limits().tokens_per_minute,
            },
            expires_at: k.expires_at(),
            last_used_at: k.last_used_at(),
            revoked_at: k.revoked_at(),
            created_at: k.created_at(),
            app_id: k.app(),
        }
    }
}

/// A key with its secret: returned once, at creation or rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyResponse {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyResponse,
    /// The secret (`sk-...`). Store it now: it is never shown again.
    pub secret: String,
}

impl From<IssuedKey> for CreatedKeyResponse {
    fn from(issued: IssuedKey) -> Self {
        Self {
            key: ApiKeyResponse::from(&issued.key),
            secret: issued.secret,
        }
    }
}

/// Limits and quotas of a user or key. Unset rate limits fall back to the platform defaults;
/// unset quotas are unlimited. Every cap is at most 9223372036854775807 (2^63 − 1).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaPolicyDto {
    /// Rate limit: requests per minute.
    #[validate(range(min = 1, max = MAX_LIMIT, message = "must be between 1 and 9223372036854775807"))]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub requests_per_minute: Option<u64>,
    /// Rate limit: tokens per minute.
    #[validate(range(min = 1, max = MAX_LIMIT, message = "must be between 1 and 9223372036854775807"))]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub tokens_per_minute: Option<u64>,
    /// Rate limit: requests per hour.
    #[validate(range(min = 1, max = MAX_LIMIT, message = "must be between 1 and 9223372036854775807"))]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub requests_per_hour: Option<u64>,
    /// Rate limit: requests per UTC day.
    #[validate(range(min = 1, max = MAX_LIMIT, message = "must be between 1 and 9223372036854775807"))]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub requests_per_day: Option<u64>,
    /// Quota: tokens per UTC day.
    #[validate(range(max = MAX_LIMIT, message = "must be at most 9223372036854775807"))]
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub tokens_per_day_quota: Option<u64>,
    /// Quota: tokens per calendar month.
    #[validate(range(max = MAX_LIMIT, message = "must be at most 9223372036854775807"))]
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub tokens_per_month_quota: Option<u64>,
    /// Quota: tokens in total.
    #[validate(range(max = MAX_LIMIT, message = "must be at most 9223372036854775807"))]
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub tokens_total_quota: Option<u64>,
    /// Quota: requests per calendar month.
    #[validate(range(max = MAX_LIMIT, message = "must be at most 9223372036854775807"))]
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub requests_per_month_quota: Option<u64>,
    /// Quota: requests in total.
    #[validate(range(max = MAX_LIMIT, message = "must be at most 9223372036854775807"))]
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub requests_total_quota: Option<u64>,
}

impl From<QuotaPolicyDto> for QuotaPolicy {
    fn from(d: QuotaPolicyDto) -> Self {
        Self {
            requests_per_minute: d.requests_per_minute,
            tokens_per_minute: d.tokens_per_minute,
            requests_per_hour: d.requests_per_hour,
            requests_per_day: d.requests_per_day,
            tokens_per_day_quota: d.tokens_per_day_quota,
            tokens_per_month_quota: d.tokens_per_month_quota,
            tokens_total_quota: d.tokens_total_quota,
            requests_per_month_quota: d.requests_per_month_quota,
            requests_total_quota: d.requests_total_quota,
        }
    }
}

impl From<QuotaPolicy> for QuotaPolicyDto {
    fn from(p: QuotaPolicy) -> Self {
        Self {
            requests_per_minute: p.requests_per_minute,
            tokens_per_minute: p.tokens_per_minute,
            requests_per_hour: p.requests_per_hour,
            requests_per_day: p.requests_per_day,
            tokens_per_day_quota: p.tokens_per_day_quota,
            tokens_per_month_quota: p.tokens_per_month_quota,
            tokens_total_quota: p.tokens_total_quota,
            requests_per_month_quota: p.requests_per_month_quota,
            requests_total_quota: p.requests_total_quota,
        }
    }
}

/// One limit with its consumption.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitUsageResponse {
    /// Rule name, e.g. `user.requests_per_day`.
    pub name: String,
    /// `requests` or `tokens`.
    pub metric: &'static str,
    /// `minute`, `hour`, `day`, `month` or `total`.
    pub window: &'static str,
    /// Whether it is a quota (else a rate limit).
    pub quota: bool,
    /// The cap.
    pub limit: u64,
    /// Consumed in the current window.
    pub used: u64,
    /// Left in the current window.
    pub remaining: u64,
    /// When the window resets (absent for lifetime quotas).
    pub resets_at: Option<DateTime<Utc>>,
}

impl From<RuleUsage> for LimitUsageResponse {
    fn from(u: RuleUsage) -> Self {
        Self {
            metric: match u.rule.metric {
                Metric::Requests => "requests",
                Metric::Tokens => "tokens",
            },
            window: u.rule.window.as_str(),
            quota: u.rule.is_quota(),
            limit: u.rule.max,
            used: u.used,
            remaining: u.rule.max.saturating_sub(u.used),
            resets_at: u.resets_at,
            name: u.rule.name,
        }
    }
}

/// The caller's limits and quotas.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaUsageResponse {
    /// Every rule that applies to the caller (the user's, and the key's when called with a key).
    pub limits: Vec<LimitUsageResponse>,
}

/// The roles a request may name.
const ROLES: [&str; 3] = ["admin", "developer", "user"];

fn role_list() -> utoipa::openapi::schema::Array {
    enum_list(&ROLES, 1, 3)
}

fn role_list_or_none() -> utoipa::openapi::schema::Array {
    enum_list(&ROLES, 0, 3)
}

fn scope_list() -> utoipa::openapi::schema::Array {
    enum_list(
        &["inference", "knowledge", "finetune", "apps", "manage"],
        0,
        5,
    )
}

/// Up to 100 model names, each 1–200 characters without spaces or control characters.
fn model_list() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(200))
                .pattern(Some("^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$")),
        )
        .max_items(Some(100))
        .build()
}
