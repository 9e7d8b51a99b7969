//! Errors of the identity context and their classification.

use std::time::Duration;

use maas_shared::error::{Classify, ErrorKind, FieldError};

use super::values::{Permission, Scope};

pub use maas_shared::error::InvalidValue;

/// `Retry-After` of [`IdentityError::Unavailable`]: Redis reconnects on the next call.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where a limit stands, for the `x-ratelimit-*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitState {
    /// Name of the limit that decided (`requests_per_minute`, ...).
    pub name: String,
    /// Its maximum.
    pub limit: u64,
    /// What is left in the window.
    pub remaining: u64,
    /// Until the window resets (`None`: a lifetime quota never resets).
    pub reset_after: Option<Duration>,
}

/// Everything that can go wrong in the identity context.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Input breaks the rules; every bad field is listed.
    #[error("invalid input: {}", describe(.0))]
    Invalid(Vec<InvalidValue>),
    /// Unknown login or wrong password (deliberately indistinguishable).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// No credentials were presented.
    #[error("authentication required: send `Authorization: Bearer <token or API key>`")]
    MissingCredentials,
    /// A token or key that is malformed, forged, revoked or unknown.
    #[error("invalid or revoked credentials")]
    InvalidToken,
    /// An access token past its `exp`.
    #[error("the access token has expired; refresh it")]
    TokenExpired,
    /// A refresh token that was already spent: its whole session family is now revoked.
    #[error("refresh token reuse detected; the session has been revoked, log in again")]
    RefreshReused,
    /// The account is disabled.
    #[error("the account is disabled")]
    AccountDisabled,
    /// The caller lacks a permission.
    #[error("missing permission {0:?}")]
    Forbidden(Permission),
    /// A key may not carry this scope for this owner.
    #[error("you may not create a key with scope `{}`", .0.as_str())]
    ScopeNotAllowed(Scope),
    /// An app key used anywhere but its app's endpoint.
    #[error(
        "an app key calls only its app's endpoint (`/v1/apps/{{app_id}}/...`); use an API key here"
    )]
    AppKeyElsewhere,
    /// An app's endpoint called with something other than one of its app keys.
    #[error(
        "an app's endpoint is called with one of its app keys (`POST /api/v1/apps/{{id}}/keys`)"
    )]
    AppKeyRequired,
    /// Attempt to change one's own roles.
    #[error("you cannot change your own roles")]
    SelfRoleChange,
    /// Attempt to disable or delete one's own account.
    #[error("you cannot disable or delete your own account")]
    SelfStatusChange,
    /// The change would leave the platform without an active admin.
    #[error("the platform must keep at least one active admin")]
    LastAdmin,
    /// Open registration is switched off.
    #[error("self-registration is disabled; ask an administrator for an account")]
    RegistrationClosed,
    /// No such user (or not visible to the caller).
    #[error("user not found")]
    UserNotFound,
    /// No such API key (or not the caller's).
    #[error("API key not found")]
    KeyNotFound,
    /// The username is in use.
    #[error("username is already taken")]
    UsernameTaken,
    /// The e-mail address is in use.
    #[error("e-mail address is already registered")]
    EmailTaken,
    /// Too many login attempts for this username from this address.
    #[error("too many login attempts; try again later")]
    LoginThrottled(Duration),
    /// A rate limit is exhausted.
    #[error("rate limit `{}` exceeded", .0.name)]
    RateLimited(LimitState),
    /// A quota is spent for its period.
    #[error("quota `{}` exhausted for this period", .0.name)]
    QuotaExceeded(LimitState),
    /// A dependency the call cannot do without (Redis, which meters calls and carries
    /// invalidations) is down or timing out: refused, never let through unmetered; retry soon.
    #[error("a platform dependency is unavailable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    /// A storage or infrastructure failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn describe(values: &[InvalidValue]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<InvalidValue> for IdentityError {
    fn from(value: InvalidValue) -> Self {
        Self::Invalid(vec![value])
    }
}

impl Classify for IdentityError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::InvalidCredentials
            | Self::MissingCredentials
            | Self::InvalidToken
            | Self::TokenExpired
            | Self::RefreshReused => ErrorKind::Unauthenticated,
            Self::AccountDisabled
            | Self::Forbidden(_)
            | Self::ScopeNotAllowed(_)
            | Self::AppKeyElsewhere
            | Self::AppKeyRequired
            | Self::SelfRoleChange
            | Self::SelfStatusChange
            | Self::RegistrationClosed => ErrorKind::Forbidden,
            Self::LastAdmin | Self::UsernameTaken | Self::EmailTaken => ErrorKind::Conflict,
            Self::UserNotFound | Self::KeyNotFound => ErrorKind::NotFound,
            Self::LoginThrottled(_) | Self::RateLimited(_) => ErrorKind::RateLimited,
            Self::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "validation_failed",
            Self::InvalidCredentials => "invalid_credentials",
            Self::MissingCredentials => "unauthenticated",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::RefreshReused => "refresh_token_reused",
            Self::AccountDisabled => "account_disabled",
            Self::Forbidden(_) => "forbidden",
            Self::ScopeNotAllowed(_) => "scope_not_allowed",
            Self::AppKeyElsewhere => "app_key_not_allowed",
            Self::AppKeyRequired => "app_key_required",
            Self::SelfRoleChange => "self_role_change",
            Self::SelfStatusChange => "self_status_change",
            Self::LastAdmin => "last_admin",
            Self::RegistrationClosed => "registration_closed",
            Self::UserNotFound => "user_not_found",
            Self::KeyNotFound => "api_key_not_found",
            Self::UsernameTaken => "username_taken",
            Self::EmailTaken => "email_taken",
            Self::LoginThrottled(_) => "login_rate_limited",
            Self::RateLimited(_) => "rate_limited",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::Unavailable(_) => "dependency_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        if let Self::LoginThrottled(after) = self {
            return Some(*after);
        }
        if let Self::Unavailable(_) = self {
            return Some(UNAVAILABLE_RETRY_AFTER);
        }
        self.limit_state().and_then(|state| state.reset_after)
    }

    fn field_errors(&self) -> Vec<FieldError> {
        if let Self::Invalid(values) = self {
            return values.iter().map(FieldError::from).collect();
        }
        Vec::new()
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        self.limit_state().map(limit_headers).unwrap_or_default()
    }
}

impl IdentityError {
    /// The limit that refused, for rate-limit and quota refusals.
    #[must_use]
    pub fn limit_state(&self) -> Option<&LimitState> {
        if let Self::RateLimited(state) | Self::QuotaExceeded(state) = self {
            Some(state)
        } else {
            None
        }
    }
}

/// `x-ratelimit-*` headers describing `state`.
#[must_use]
pub fn limit_headers(state: &LimitState) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("x-ratelimit-limit", state.limit.to_string()),
        ("x-ratelimit-remaining", state.remaining.to_string()),
        ("x-ratelimit-policy", state.name.clone()),
    ];
    if let Some(reset) = state.reset_after {
        let secs = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        headers.push(("x-ratelimit-reset", secs.max(1).to_string()));
    }
    headers
}
