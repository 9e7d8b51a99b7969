//! Extractor configuration so that every rejection actix makes on our behalf (bad JSON, body too
//! large, wrong content type, bad query or path) is answered in our error format, never as
//! actix's plain-text default, plus a validating JSON extractor.

use std::future::{Ready, ready};
use std::ops::Deref;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{FromRequest, HttpRequest, ResponseError, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use super::error::{ApiError, ErrorFormat, OpenAi, Problem, kind_of_status};
use crate::error::{Classify, ErrorKind, FieldError};
use crate::text::nul_paths;

/// JSON body extractor settings: size limit and error mapping in format `F`.
#[must_use]
pub fn json_config<F: ErrorFormat>(limit_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit_bytes)
        .error_handler(|err, _req| json_error::<F>(&err).into())
}

#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "JsonPayloadError is non_exhaustive"
)]
fn json_error<F: ErrorFormat>(err: &JsonPayloadError) -> ApiError<F> {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "expected a JSON body with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::new(
            ErrorKind::Invalid,
            format!("request body does not match the schema: {e}"),
        ),
        JsonPayloadError::Deserialize(e) => ApiError::new(
            ErrorKind::BadRequest,
            format!("request body is not valid JSON: {e}"),
        )
        .with_code("malformed_json"),
        other => ApiError::new(
            ErrorKind::BadRequest,
            format!("could not read request body: {other}"),
        ),
    }
}

/// Query string extractor settings: errors in format `F`.
#[must_use]
pub fn query_config<F: ErrorFormat>() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let detail = match &err {
            QueryPayloadError::Deserialize(e) => format!("invalid query string: {e}"),
            other => format!("invalid query string: {other}"),
        };
        ApiError::<F>::new(ErrorKind::BadRequest, detail)
            .with_code("invalid_query")
            .into()
    })
}

/// Path segment extractor settings: a path that cannot name a resource is a 404 in format `F`.
#[must_use]
pub fn path_config<F: ErrorFormat>() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let detail = match &err {
            PathError::Deserialize(e) => format!("no such resource: {e}"),
            other => format!("no such resource: {other}"),
        };
        ApiError::<F>::new(ErrorKind::NotFound, detail).into()
    })
}

/// Fallback for `actix_web::middleware::ErrorHandlers::default_handler`: any error response that
/// is not already JSON (actix's 404/405 and other defaults) is rewritten in our format, chosen
/// by path: OpenAI's shape under `/v1`, problem+json elsewhere.
///
/// # Errors
/// Never fails; the signature is the one actix requires.
pub fn error_fallback<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with("application/problem+json")
        });
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let kind = kind_of_status(status);
    let detail = match kind {
        ErrorKind::NotFound => format!(
            "no route for {} {}",
            res.request().method(),
            res.request().path()
        ),
        ErrorKind::MethodNotAllowed => format!(
            "{} is not allowed on {}",
            res.request().method(),
            res.request().path()
        ),
        ErrorKind::BadRequest
        | ErrorKind::Invalid
        | ErrorKind::Unauthenticated
        | ErrorKind::Forbidden
        | ErrorKind::Conflict
        | ErrorKind::PayloadTooLarge
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::RateLimited
        | ErrorKind::QuotaExceeded
        | ErrorKind::Unavailable
        | ErrorKind::Internal => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let is_openai = res.request().path() == "/v1" || res.request().path().starts_with("/v1/");
    let rendered = if is_openai {
        ApiError::<OpenAi>::new(kind, detail).error_response()
    } else {
        ApiError::<Problem>::new(kind, detail).error_response()
    };
    let (req, original) = res.into_parts();
    let mut response = rendered.map_into_boxed_body();
    // Keep headers the original carried (Allow on 405, Retry-After, ...), but not its body type.
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let res: ServiceResponse<BoxBody> = ServiceResponse::new(req, response);
    Ok(ErrorHandlerResponse::Response(
        res.map_body(|_, body| EitherBody::right(body)),
    ))
}

/// Flattens validator's nested errors into one list of dotted field paths.
#[must_use]
pub fn validation_fields(errors: &ValidationErrors) -> Vec<FieldError> {
    let mut out = Vec::new();
    collect(errors, "", &mut out);
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

fn collect(errors: &ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => out.extend(list.iter().map(|e| {
                let message = e
                    .message
                    .as_ref()
                    .map_or_else(|| format!("failed rule `{}`", e.code), ToString::to_string);
                FieldError::new(path.clone(), e.code.to_string(), message)
            })),
            ValidationErrorsKind::Struct(inner) => collect(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect(inner, &format!("{path}[{index}]"), out);
                }
            }
        }
    }
}

/// Validation failures of a request DTO.
#[derive(Debug, thiserror::Error)]
#[error("the request has invalid fields")]
pub struct InvalidRequest(Vec<FieldError>);

impl Classify for InvalidRequest {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
    fn field_errors(&self) -> Vec<FieldError> {
        self.0.clone()
    }
}

/// A JSON object that does not fit the request type (wrong types, unknown or missing fields).
#[derive(Debug, thiserror::Error)]
#[error("request body does not match the schema: {0}")]
struct SchemaMismatch(serde_json::Error);

impl Classify for SchemaMismatch {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
}

/// A JSON body that has passed its `validator` rules; failures list every bad field.
#[derive(Debug)]
pub struct ValidatedJson<T>(pub T);

impl<T> ValidatedJson<T> {
    /// The validated value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for ValidatedJson<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + Validate + 'static> FromRequest for ValidatedJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    /// Reads the body as JSON (size, content type and syntax are checked by [`json_config`]),
    /// refuses anything but an object (field `body`) and any string holding a NUL character
    /// (each such field by its path), then reads `T` from it and checks its rules.
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Value>::from_request(req, payload);
        let openai = req.path().starts_with("/v1/");
        Box::pin(async move {
            let value = json.await?.into_inner();
            if !value.is_object() {
                return Err(rejection(
                    openai,
                    InvalidRequest(vec![FieldError::new(
                        "body",
                        "type",
                        "the request body must be a JSON object",
                    )]),
                ));
            }
            // PostgreSQL cannot store NUL in text: refuse it here, naming each field, rather
            // than fail the write later.
            let nul = nul_paths(&value, "");
            if !nul.is_empty() {
                return Err(rejection(
                    openai,
                    InvalidRequest(
                        nul.into_iter()
                            .map(|field| {
                                FieldError::new(
                                    field,
                                    "nul_character",
                                    "must not contain the NUL character (U+0000)",
                                )
                            })
                            .collect(),
                    ),
                ));
            }
            let value = serde_json::from_value::<T>(value)
                .map_err(|e| rejection(openai, SchemaMismatch(e)))?;
            match value.validate() {
                Ok(()) => Ok(Self(value)),
                Err(errors) => Err(rejection(
                    openai,
                    InvalidRequest(validation_fields(&errors)),
                )),
            }
        })
    }
}

/// `err` in the error format of the request's API.
fn rejection<E>(openai: bool, err: E) -> actix_web::Error
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    if openai {
        ApiError::<OpenAi>::from(err).into()
    } else {
        ApiError::<Problem>::from(err).into()
    }
}

/// The client's address as seen by this server (the TCP peer). Forwarded headers are not
/// trusted, since any client can set them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIp(pub Option<String>);

impl FromRequest for ClientIp {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self(req.peer_addr().map(|a| a.ip().to_string()))))
    }
}

/// Whether the request says its body is `multipart/form-data` (uploads refuse anything else
/// with a 415 before reading a byte).
#[must_use]
pub fn is_multipart(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

#[cfg(test)]
mod tests {
    use validator::Validate;

    use super::*;

    #[derive(Validate)]
    struct Inner {
        #[validate(range(min = 1))]
        n: u32,
    }

    #[derive(Validate)]
    struct Outer {
        #[validate(length(min = 1, message = "must not be empty"))]
        name: String,
        #[validate(email)]
        email: String,
        #[validate(nested)]
        inner: Inner,
    }

    #[test]
    fn every_bad_field_is_listed_with_its_path() {
        let value = Outer {
            name: String::new(),
            email: "nope".into(),
            inner: Inner { n: 0 },
        };
        let fields = validation_fields(&value.validate().unwrap_err());
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["email", "inner.n", "name"]);
        assert_eq!(fields[2].message, "must not be empty");
    }
}
