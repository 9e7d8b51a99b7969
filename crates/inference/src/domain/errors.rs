//! Errors of the gateway and their classification (OpenAI's shape on `/v1`, problem+json on
//! `/api/v1`, both from the same codes).

use std::time::Duration;

use maas_shared::error::{Classify, ErrorKind, FieldError};
use maas_user::contract::IdentityError;

pub use maas_shared::error::InvalidValue;

/// Everything that can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// Input breaks the rules.
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<InvalidValue>),
    /// No such model, or not one this caller may use.
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    /// No such provider.
    #[error("provider not found")]
    ProviderNotFound,
    /// No such conversation (or not the caller's).
    #[error("conversation not found")]
    ConversationNotFound,
    /// No such deployment (or it should not run).
    #[error("deployment not found (or stopped)")]
    DeploymentNotFound,
    /// A provider with this name exists.
    #[error("a provider with this name already exists")]
    ProviderNameTaken,
    /// No upstream answered (connect failure, timeout, 5xx on every target).
    #[error("no upstream could serve the request: {0}")]
    UpstreamUnavailable(String),
    /// Identity refused (rate limit, quota) or failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Storage or infrastructure failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<InvalidValue> for InferenceError {
    fn from(value: InvalidValue) -> Self {
        Self::Invalid(vec![value])
    }
}

impl Classify for InferenceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::ModelNotFound(_)
            | Self::ProviderNotFound
            | Self::ConversationNotFound
            | Self::DeploymentNotFound => ErrorKind::NotFound,
            Self::ProviderNameTaken => ErrorKind::Conflict,
            Self::UpstreamUnavailable(_) => ErrorKind::Unavailable,
            Self::Identity(inner) => inner.kind(),
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "validation_failed",
            Self::ModelNotFound(_) => "model_not_found",
            Self::ProviderNotFound => "provider_not_found",
            Self::ConversationNotFound => "conversation_not_found",
            Self::DeploymentNotFound => "deployment_not_found",
            Self::ProviderNameTaken => "provider_name_taken",
            Self::UpstreamUnavailable(_) => "upstream_unavailable",
            Self::Identity(inner) => inner.code(),
            Self::Unexpected(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        if let Self::Identity(inner) = self {
            inner.retry_after()
        } else {
            None
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Invalid(values) => values.iter().map(FieldError::from).collect(),
            Self::Identity(inner) => inner.field_errors(),
            Self::ModelNotFound(_)
            | Self::ProviderNotFound
            | Self::ConversationNotFound
            | Self::DeploymentNotFound
            | Self::ProviderNameTaken
            | Self::UpstreamUnavailable(_)
            | Self::Unexpected(_) => Vec::new(),
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        if let Self::Identity(inner) = self {
            inner.headers()
        } else {
            Vec::new()
        }
    }
}
