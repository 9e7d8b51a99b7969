//! The one mapping from classified errors to HTTP responses.
//!
//! `/api/v1` answers with RFC 9457 `application/problem+json`; `/v1` answers with OpenAI's error
//! shape so OpenAI SDKs show the message. Both come from the same [`ApiError`], generic over its
//! body [`ErrorFormat`]; the status comes from [`status_of`], an exhaustive match on [`ErrorKind`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Classify, ErrorKind, FieldError};

/// Base of the `type` URI of problem responses; the code is the fragment.
pub const PROBLEM_TYPE_BASE: &str = "https://docs.maas.dev/errors#";
/// Content type of problem responses.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The HTTP status for each kind of error. The only place that makes this decision.
#[must_use]
pub const fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The kind behind a status that was produced outside our code (actix defaults).
#[must_use]
pub fn kind_of_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        405 => ErrorKind::MethodNotAllowed,
        409 => ErrorKind::Conflict,
        413 => ErrorKind::PayloadTooLarge,
        415 => ErrorKind::UnsupportedMediaType,
        422 => ErrorKind::Invalid,
        429 => ErrorKind::RateLimited,
        502..=504 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

/// A classified error on its way to the client.
pub struct ApiError<F: ErrorFormat = Problem> {
    kind: ErrorKind,
    code: Cow<'static, str>,
    detail: String,
    fields: Vec<FieldError>,
    retry_after: Option<Duration>,
    headers: Vec<(&'static str, String)>,
    source: Option<anyhow::Error>,
    format: PhantomData<F>,
}

/// An error rendered in OpenAI's shape, for the `/v1` API.
pub type OpenAiError = ApiError<OpenAi>;

impl<F: ErrorFormat> ApiError<F> {
    /// An error of `kind` with the kind's default code.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            code: Cow::Borrowed(kind.default_code()),
            detail: detail.into(),
            fields: Vec::new(),
            retry_after: None,
            headers: Vec::new(),
            source: None,
            format: PhantomData,
        }
    }

    /// The error's class.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Replaces the code.
    #[must_use]
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Cow::Borrowed(code);
        self
    }

    /// What the client is told. Internal errors never leak their cause.
    fn public_detail(&self) -> &str {
        if self.kind == ErrorKind::Internal {
            "An unexpected error occurred. Quote the x-request-id header when reporting it."
        } else {
            &self.detail
        }
    }

    fn parts(&self) -> ErrorParts<'_> {
        ErrorParts {
            kind: self.kind,
            status: status_of(self.kind),
            code: &self.code,
            detail: self.public_detail(),
            fields: &self.fields,
        }
    }
}

impl<F: ErrorFormat, E> From<E> for ApiError<F>
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        let kind = err.kind();
        Self {
            kind,
            code: Cow::Borrowed(err.code()),
            detail: err.to_string(),
            fields: err.field_errors(),
            retry_after: err.retry_after(),
            headers: err.headers(),
            // Kept for the log: the cause of a bug, or of a dependency being unavailable.
            source: matches!(kind, ErrorKind::Internal | ErrorKind::Unavailable)
                .then(|| anyhow::Error::new(err)),
            format: PhantomData,
        }
    }
}

impl<F: ErrorFormat> fmt::Debug for ApiError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("detail", &self.detail)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<F: ErrorFormat> fmt::Display for ApiError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.kind.title(), self.code, self.detail)
    }
}

impl<F: ErrorFormat> ResponseError for ApiError<F> {
    fn status_code(&self) -> StatusCode {
        status_of(self.kind)
    }

    fn error_response(&self) -> HttpResponse {
        if self.kind == ErrorKind::Internal {
            // Logged once, here, with the whole cause chain; the client only sees a generic text.
            tracing::error!(error.code = %self.code, error.cause_chain = ?self.source, "{}", self.detail);
        } else if self.kind == ErrorKind::Unavailable {
            // The client is told to retry; the operator needs to know which dependency failed.
            tracing::warn!(error.code = %self.code, error.cause_chain = ?self.source, "{}", self.detail);
        }
        let mut builder = HttpResponse::build(self.status_code());
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            builder.insert_header((header::RETRY_AFTER, secs.max(1)));
        }
        for (name, value) in &self.headers {
            builder.insert_header((*name, value.as_str()));
        }
        F::render(&self.parts(), builder)
    }
}

/// The pieces of an error a format needs.
#[derive(Debug)]
pub struct ErrorParts<'a> {
    /// Class.
    pub kind: ErrorKind,
    /// Status from [`status_of`].
    pub status: StatusCode,
    /// Stable code.
    pub code: &'a str,
    /// Client-facing text.
    pub detail: &'a str,
    /// Bad fields, if any.
    pub fields: &'a [FieldError],
}

/// How an error body is written.
pub trait ErrorFormat: 'static {
    /// Writes the body into a response whose status (and extra headers) are already set.
    fn render(parts: &ErrorParts<'_>, builder: HttpResponseBuilder) -> HttpResponse;
}

/// RFC 9457 problem details (the `/api/v1` format).
#[derive(Debug)]
pub enum Problem {}

/// OpenAI's error envelope (the `/v1` format).
#[derive(Debug)]
pub enum OpenAi {}

/// Problem details body (RFC 9457) with our stable `code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemBody {
    /// URI naming the error code's documentation.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the class of error.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation for this occurrence.
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub code: String,
    /// Every invalid field (validation errors only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ErrorFormat for Problem {
    fn render(parts: &ErrorParts<'_>, mut builder: HttpResponseBuilder) -> HttpResponse {
        let body = ProblemBody {
            type_uri: format!("{PROBLEM_TYPE_BASE}{}", parts.code),
            title: parts.kind.title().to_owned(),
            status: parts.status.as_u16(),
            detail: parts.detail.to_owned(),
            code: parts.code.to_owned(),
            errors: parts.fields.to_vec(),
        };
        builder.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        ));
        builder.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

/// OpenAI error envelope: `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiErrorDetail,
}

/// The inside of an OpenAI error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type, e.g. `invalid_request_error`, `rate_limit_error`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Stable machine-readable code (same codes as the management API).
    pub code: String,
    /// The offending parameter, when one is known.
    pub param: Option<String>,
}

/// OpenAI's `type` for each kind.
#[must_use]
pub const fn openai_type_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest
        | ErrorKind::Invalid
        | ErrorKind::NotFound
        | ErrorKind::MethodNotAllowed
        | ErrorKind::Conflict
        | ErrorKind::PayloadTooLarge
        | ErrorKind::UnsupportedMediaType => "invalid_request_error",
        ErrorKind::Unauthenticated => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::QuotaExceeded => "insufficient_quota",
        ErrorKind::Unavailable => "api_error",
        ErrorKind::Internal => "server_error",
    }
}

impl ErrorFormat for OpenAi {
    fn render(parts: &ErrorParts<'_>, mut builder: HttpResponseBuilder) -> HttpResponse {
        let message = match parts.fields {
            [] => parts.detail.to_owned(),
            fields => {
                let list: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect();
                format!("{} ({})", parts.detail, list.join("; "))
            }
        };
        let body = OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message,
                error_type: openai_type_of(parts.kind).to_owned(),
                code: parts.code.to_owned(),
                param: parts.fields.first().map(|f| f.field.clone()),
            },
        };
        builder.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        builder.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;
    use crate::error::KernelError;

    async fn body_json(resp: HttpResponse) -> serde_json::Value {
        let bytes = to_bytes(resp.into_body()).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[actix_web::test]
    async fn problem_body_carries_code_status_and_fields() {
        let err: ApiError = KernelError::new(ErrorKind::Invalid, "bad input")
            .with_fields(vec![FieldError::new("name", "length", "too long")])
            .into();
        let resp = err.error_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_CONTENT_TYPE
        );
        let body = body_json(resp).await;
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["status"], 422);
        assert_eq!(
            body["type"],
            "https://docs.maas.dev/errors#validation_failed"
        );
        assert_eq!(body["errors"][0]["field"], "name");
    }

    #[actix_web::test]
    async fn internal_errors_hide_their_cause() {
        let err: ApiError = KernelError::new(ErrorKind::Internal, "db password is hunter2").into();
        let body = body_json(err.error_response()).await;
        assert!(!body["detail"].as_str().unwrap().contains("hunter2"));
        assert_eq!(body["code"], "internal");
    }

    #[actix_web::test]
    async fn openai_shape_and_retry_after() {
        let err: OpenAiError = KernelError::new(ErrorKind::RateLimited, "slow down")
            .with_retry_after(Duration::from_millis(1500))
            .into();
        let resp = err.error_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let body = body_json(resp).await;
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(body["error"]["message"], "slow down");
    }
}
