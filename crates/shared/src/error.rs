//! Error classification without HTTP.
//!
//! Every context defines its own `thiserror` enum and implements [`Classify`] for it: a coarse
//! [`ErrorKind`] (which the HTTP edge maps to a status exactly once) and a stable, machine-readable
//! snake_case code that clients may match on. Codes are part of the public API: never rename one.

use std::time::Duration;

use serde::Serialize;

/// The coarse classes of failure the platform distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request could not be read at all (malformed JSON, bad query string).
    BadRequest,
    /// The request was readable but its content breaks a rule.
    Invalid,
    /// No or bad credentials.
    Unauthenticated,
    /// Valid credentials without the needed permission.
    Forbidden,
    /// The resource does not exist or belongs to someone else.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The request conflicts with the current state (duplicate, wrong state transition).
    Conflict,
    /// The body is larger than allowed.
    PayloadTooLarge,
    /// The body's content type is not accepted.
    UnsupportedMediaType,
    /// Too many requests in a window; retry later.
    RateLimited,
    /// The caller's quota is spent for the period.
    QuotaExceeded,
    /// A dependency (database, Redis, upstream model) is unreachable or failing.
    Unavailable,
    /// A bug or an unexpected failure; details are logged, never returned.
    Internal,
}

impl ErrorKind {
    /// The code used when an error has no more specific one.
    #[must_use]
    pub const fn default_code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Invalid => "validation_failed",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Unavailable => "upstream_unavailable",
            Self::Internal => "internal",
        }
    }

    /// A short human title for the class (the problem+json `title`).
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad request",
            Self::Invalid => "Validation failed",
            Self::Unauthenticated => "Unauthenticated",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::RateLimited => "Too many requests",
            Self::QuotaExceeded => "Quota exceeded",
            Self::Unavailable => "Service unavailable",
            Self::Internal => "Internal error",
        }
    }
}

/// One bad field of a request, so a client can show every problem at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Path of the field, dotted for nested fields (`limits.requests_per_minute`).
    pub field: String,
    /// Stable code of the rule that failed (`length`, `range`, `email`, ...).
    pub code: String,
    /// Human readable explanation.
    pub message: String,
}

impl FieldError {
    /// A field error from its parts.
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A value that failed one of its rules, found while constructing a domain value; contexts
/// collect these into their own "invalid input" error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    /// The request field.
    pub field: &'static str,
    /// What is wrong.
    pub message: &'static str,
}

impl InvalidValue {
    /// A rule failure on `field`.
    #[must_use]
    pub const fn new(field: &'static str, message: &'static str) -> Self {
        Self { field, message }
    }
}

impl From<&InvalidValue> for FieldError {
    fn from(value: &InvalidValue) -> Self {
        Self::new(value.field, "invalid", value.message)
    }
}

/// Classifies an error for clients. Implemented by every context's error enum.
pub trait Classify {
    /// The coarse class, which decides the HTTP status.
    fn kind(&self) -> ErrorKind;

    /// The stable machine code; defaults to the kind's code.
    fn code(&self) -> &'static str {
        self.kind().default_code()
    }

    /// For [`ErrorKind::RateLimited`] / [`ErrorKind::QuotaExceeded`]: when to try again.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// For [`ErrorKind::Invalid`]: every field that failed.
    fn field_errors(&self) -> Vec<FieldError> {
        Vec::new()
    }

    /// Extra response headers (e.g. `x-ratelimit-*` on a 429).
    fn headers(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// A ready-made classified error, for the kernel's own tests of the error mapping.
#[cfg(test)]
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub(crate) struct KernelError {
    kind: ErrorKind,
    code: &'static str,
    detail: String,
    fields: Vec<FieldError>,
    retry_after: Option<Duration>,
}

#[cfg(test)]
impl KernelError {
    /// An error of `kind` with that kind's default code.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            code: kind.default_code(),
            detail: detail.into(),
            fields: Vec::new(),
            retry_after: None,
        }
    }

    /// Replaces the code with a more specific one.
    #[must_use]
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Attaches field errors (for [`ErrorKind::Invalid`]).
    #[must_use]
    pub fn with_fields(mut self, fields: Vec<FieldError>) -> Self {
        self.fields = fields;
        self
    }

    /// Attaches a retry hint (for [`ErrorKind::RateLimited`]).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

#[cfg(test)]
impl Classify for KernelError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
    fn code(&self) -> &'static str {
        self.code
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    fn field_errors(&self) -> Vec<FieldError> {
        self.fields.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_keeps_its_specific_code_and_fields() {
        let err = KernelError::new(ErrorKind::Invalid, "bad body")
            .with_code("body_invalid")
            .with_fields(vec![FieldError::new("name", "length", "too long")]);
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert_eq!(err.code(), "body_invalid");
        assert_eq!(err.field_errors().len(), 1);
        assert_eq!(err.to_string(), "bad body");
    }

    #[test]
    fn default_codes_are_the_documented_ones() {
        assert_eq!(ErrorKind::Invalid.default_code(), "validation_failed");
        assert_eq!(
            ErrorKind::Unavailable.default_code(),
            "upstream_unavailable"
        );
        assert_eq!(ErrorKind::QuotaExceeded.default_code(), "quota_exceeded");
    }
}
