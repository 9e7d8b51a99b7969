//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::gate::Refused;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
}

impl ApiError {
    /// 400 `invalid_request_error` about one parameter.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_value",
            param: Some(param),
            message: message.into(),
        }
    }

    /// 400 for a parameter this engine does not implement.
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: "unsupported_parameter",
            ..Self::invalid(param, message)
        }
    }

    /// 400 for a body that is not the JSON expected.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_json",
            param: None,
            message: message.into(),
        }
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            code: "payload_too_large",
            param: None,
            message: format!("the request body is over {limit} bytes"),
        }
    }

    /// 400 for a prompt longer than the context window.
    pub fn context_exceeded(message: impl Into<String>) -> Self {
        Self {
            code: "context_length_exceeded",
            ..Self::invalid("messages", message)
        }
    }

    /// 404 for a model this engine does not serve.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            param: Some("model"),
            message: format!("the model `{model}` is not served here"),
        }
    }

    /// 401 for a missing or wrong key.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            code: "invalid_api_key",
            param: None,
            message: "a valid API key is required (Authorization: Bearer ...)".into(),
        }
    }

    /// 404 for an unknown route.
    pub fn no_route() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "not_found",
            param: None,
            message: "no such endpoint".into(),
        }
    }

    /// 500; the detail is logged, not returned.
    pub fn internal(error: &anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "generation failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: "internal_error",
            param: None,
            message: "the engine failed to answer this request".into(),
        }
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: "engine_overloaded",
            param: None,
            message: refused.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("retry-after", "1"));
        }
        response.json(self.body())
    }
}
