//! Errors of the apps context, classified once for the HTTP edge.

use std::time::Duration;

use maas_inference::contract::InferenceError;
use maas_knowledge::contract::KnowledgeError;
use maas_shared::error::{Classify, ErrorKind, FieldError};
use maas_user::contract::IdentityError;

/// Everything that can go wrong in this context.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    /// Input breaks the rules; every bad field is listed.
    #[error("invalid request: {}", describe(.0))]
    Invalid(Vec<FieldError>),
    /// The call's prompt variables are missing or of the wrong type; every one is listed.
    #[error("invalid variables: {}", describe(.0))]
    Variables(Vec<FieldError>),
    /// A parameter the endpoint does not take.
    #[error(
        "unsupported parameter `{0}`: an app's endpoint takes model, messages, stream, stream_options, user, variables, temperature, top_p, max_tokens, max_completion_tokens, stop and n = 1"
    )]
    UnsupportedParameter(String),
    /// No such app (or someone else's; or, to app keys, not published).
    #[error("app not found")]
    NotFound,
    /// No such version of the app.
    #[error("app version not found")]
    VersionNotFound,
    /// No such message of the app (or another end user's).
    #[error("app message not found")]
    MessageNotFound,
    /// The owner has an app of that name.
    #[error("an app of that name exists")]
    NameTaken,
    /// Publishing an app whose model is not served.
    #[error("model `{0}` is not served to the app's owner")]
    ModelNotServed(String),
    /// An inference failure (the model call).
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// A retrieval failure.
    #[error(transparent)]
    Knowledge(#[from] KnowledgeError),
    /// An identity failure (keys, limits).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A storage or infrastructure failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn describe(values: &[FieldError]) -> String {
    values
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<Vec<FieldError>> for AppsError {
    fn from(values: Vec<FieldError>) -> Self {
        Self::Invalid(values)
    }
}

impl From<maas_shared::audit::AuditError> for AppsError {
    fn from(err: maas_shared::audit::AuditError) -> Self {
        Self::Unexpected(err.0)
    }
}

impl Classify for AppsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) | Self::Variables(_) | Self::ModelNotServed(_) => ErrorKind::Invalid,
            Self::UnsupportedParameter(_) => ErrorKind::BadRequest,
            Self::NotFound | Self::VersionNotFound | Self::MessageNotFound => ErrorKind::NotFound,
            Self::NameTaken => ErrorKind::Conflict,
            Self::Inference(inner) => inner.kind(),
            Self::Knowledge(inner) => inner.kind(),
            Self::Identity(inner) => inner.kind(),
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "validation_failed",
            Self::Variables(_) => "invalid_variables",
            Self::UnsupportedParameter(_) => "unsupported_parameter",
            Self::NotFound => "app_not_found",
            Self::VersionNotFound => "app_version_not_found",
            Self::MessageNotFound => "app_message_not_found",
            Self::NameTaken => "app_name_taken",
            Self::ModelNotServed(_) => "model_not_found",
            Self::Inference(inner) => inner.code(),
            Self::Knowledge(inner) => inner.code(),
            Self::Identity(inner) => inner.code(),
            Self::Unexpected(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Inference(inner) => inner.retry_after(),
            Self::Knowledge(inner) => inner.retry_after(),
            Self::Identity(inner) => inner.retry_after(),
            Self::Invalid(_)
            | Self::Variables(_)
            | Self::UnsupportedParameter(_)
            | Self::NotFound
            | Self::VersionNotFound
            | Self::MessageNotFound
            | Self::NameTaken
            | Self::ModelNotServed(_)
            | Self::Unexpected(_) => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Invalid(values) | Self::Variables(values) => values.clone(),
            Self::Inference(inner) => inner.field_errors(),
            Self::Knowledge(inner) => inner.field_errors(),
            Self::Identity(inner) => inner.field_errors(),
            Self::ModelNotServed(_) => vec![FieldError::new(
                "model",
                "not_served",
                "not a chat model served to you",
            )],
            Self::UnsupportedParameter(name) => {
                vec![FieldError::new(
                    name.clone(),
                    "unsupported",
                    "not a parameter of an app's endpoint",
                )]
            }
            Self::NotFound
            | Self::VersionNotFound
            | Self::MessageNotFound
            | Self::NameTaken
            | Self::Unexpected(_) => Vec::new(),
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Inference(inner) => inner.headers(),
            Self::Knowledge(inner) => inner.headers(),
            Self::Identity(inner) => inner.headers(),
            Self::Invalid(_)
            | Self::Variables(_)
            | Self::UnsupportedParameter(_)
            | Self::NotFound
            | Self::VersionNotFound
            | Self::MessageNotFound
            | Self::NameTaken
            | Self::ModelNotServed(_)
            | Self::Unexpected(_) => Vec::new(),
        }
    }
}

/// A field error from its parts (this context's fields are often dynamic:
/// `variables.topic`, `knowledge.bases[1]`).
#[must_use]
pub fn bad(field: impl Into<String>, code: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, code, message)
}
