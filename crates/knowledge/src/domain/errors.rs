//! Errors of the knowledge context, classified once for the HTTP edge.

use std::time::Duration;

use maas_shared::error::{Classify, ErrorKind, FieldError};
use maas_user::contract::IdentityError;

pub use maas_shared::error::InvalidValue;

/// Everything that can go wrong in this context.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// Input breaks the rules (every bad field listed).
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<InvalidValue>),
    /// No such knowledge base, or someone else's.
    #[error("knowledge base not found")]
    BaseNotFound,
    /// No such document in the base.
    #[error("document not found")]
    DocumentNotFound,
    /// No such uploaded file, or someone else's.
    #[error("file not found")]
    FileNotFound,
    /// No such file batch in the store.
    #[error("file batch not found")]
    BatchNotFound,
    /// The vector store expired (its `expires_after` passed since its last activity).
    #[error("the vector store expired; update its expires_after or create another")]
    Expired,
    /// The owner already has a base of that name.
    #[error("a knowledge base of that name exists")]
    NameTaken,
    /// The embedding model is not one the caller may use.
    #[error("embedding model `{0}` is not served to you")]
    UnknownModel(String),
    /// The file is larger than allowed.
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    /// The declared type is not one of the accepted ones.
    #[error("{0}")]
    UnsupportedType(String),
    /// The bytes are not of the declared type.
    #[error("{0}")]
    TypeMismatch(String),
    /// The bytes are of the declared type but cannot be read as one.
    #[error("{0}")]
    Malformed(String),
    /// The base is busy with a change that must end first.
    #[error("{0}")]
    Busy(String),
    /// Embedding failed (through the gateway): the model refused or is down.
    #[error("embedding failed: {0}")]
    Embedding(#[source] maas_inference::contract::InferenceError),
    /// The vector index (Qdrant) cannot be reached.
    #[error("the vector index is unavailable: {0}")]
    IndexUnavailable(String),
    /// Identity and metering failures.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Storage or another dependency failed.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<Vec<InvalidValue>> for KnowledgeError {
    fn from(values: Vec<InvalidValue>) -> Self {
        Self::Invalid(values)
    }
}

impl From<InvalidValue> for KnowledgeError {
    fn from(value: InvalidValue) -> Self {
        Self::Invalid(vec![value])
    }
}

impl Classify for KnowledgeError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) | Self::UnknownModel(_) | Self::Malformed(_) => ErrorKind::Invalid,
            Self::BaseNotFound
            | Self::DocumentNotFound
            | Self::FileNotFound
            | Self::BatchNotFound => ErrorKind::NotFound,
            Self::Expired => ErrorKind::BadRequest,
            Self::NameTaken | Self::Busy(_) => ErrorKind::Conflict,
            Self::TooLarge(_) => ErrorKind::PayloadTooLarge,
            Self::UnsupportedType(_) | Self::TypeMismatch(_) => ErrorKind::UnsupportedMediaType,
            Self::Embedding(inner) => inner.kind(),
            Self::Identity(inner) => inner.kind(),
            Self::IndexUnavailable(_) => ErrorKind::Unavailable,
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "validation_failed",
            Self::BaseNotFound => "knowledge_base_not_found",
            Self::DocumentNotFound => "document_not_found",
            Self::FileNotFound => "file_not_found",
            Self::BatchNotFound => "file_batch_not_found",
            Self::Expired => "vector_store_expired",
            Self::NameTaken => "knowledge_base_name_taken",
            Self::UnknownModel(_) => "embedding_model_not_found",
            Self::TooLarge(_) => "payload_too_large",
            Self::UnsupportedType(_) => "unsupported_media_type",
            Self::TypeMismatch(_) => "document_type_mismatch",
            Self::Malformed(_) => "malformed_document",
            Self::Busy(_) => "knowledge_base_busy",
            Self::Embedding(inner) => inner.code(),
            Self::Identity(inner) => inner.code(),
            Self::IndexUnavailable(_) => "vector_index_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Embedding(inner) => inner.retry_after(),
            Self::Identity(inner) => inner.retry_after(),
            Self::Invalid(_)
            | Self::BaseNotFound
            | Self::DocumentNotFound
            | Self::FileNotFound
            | Self::BatchNotFound
            | Self::Expired
            | Self::NameTaken
            | Self::UnknownModel(_)
            | Self::TooLarge(_)
            | Self::UnsupportedType(_)
            | Self::TypeMismatch(_)
            | Self::Malformed(_)
            | Self::Busy(_)
            | Self::IndexUnavailable(_)
            | Self::Unexpected(_) => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Invalid(values) => values.iter().map(FieldError::from).collect(),
            Self::Identity(inner) => inner.field_errors(),
            Self::Embedding(inner) => inner.field_errors(),
            Self::BaseNotFound
            | Self::DocumentNotFound
            | Self::FileNotFound
            | Self::BatchNotFound
            | Self::Expired
            | Self::NameTaken
            | Self::UnknownModel(_)
            | Self::TooLarge(_)
            | Self::UnsupportedType(_)
            | Self::TypeMismatch(_)
            | Self::Malformed(_)
            | Self::Busy(_)
            | Self::IndexUnavailable(_)
            | Self::Unexpected(_) => Vec::new(),
        }
    }
}
