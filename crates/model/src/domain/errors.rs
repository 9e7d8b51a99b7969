//! Errors of the registry and compute context, classified once for the HTTP edge.

use maas_shared::error::{Classify, ErrorKind, FieldError};
use maas_user::contract::IdentityError;

pub use maas_shared::error::InvalidValue;

/// What a registry or compute entity is (for not-found, taken and in-use errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    /// An accelerator brand.
    Brand,
    /// An accelerator card.
    Card,
    /// A registered model.
    Model,
    /// A GPU server.
    Server,
    /// A stored logo.
    Logo,
    /// A deployment.
    Deployment,
    /// A deployment's served model name.
    ServedName,
    /// An instance of a deployment.
    Instance,
    /// A remote task.
    Task,
    /// A run of a remote task.
    Run,
    /// A server's stored check.
    Check,
}

impl Entity {
    const fn noun(self) -> &'static str {
        match self {
            Self::Brand => "brand",
            Self::Card => "accelerator card",
            Self::Model => "model",
            Self::Server => "server",
            Self::Logo => "logo",
            Self::Deployment => "deployment",
            Self::ServedName => "served model name",
            Self::Instance => "instance",
            Self::Task => "remote task",
            Self::Run => "task run",
            Self::Check => "server check",
        }
    }
}

/// Everything that can go wrong in this context.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Input breaks the rules (every bad field listed).
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<InvalidValue>),
    /// No such entity.
    #[error("{} not found", .0.noun())]
    NotFound(Entity),
    /// The name is in use by another entity of the kind.
    #[error("a {} with this name already exists", .0.noun())]
    NameTaken(Entity),
    /// Others still refer to the entity (cards of a brand, servers of a card).
    #[error("the {noun} is still in use: {detail}", noun = .0.noun(), detail = .1)]
    InUse(Entity, &'static str),
    /// An upload is larger than allowed.
    #[error("the upload is larger than {0} bytes")]
    TooLarge(usize),
    /// An upload is not one of the accepted types (judged by its bytes).
    #[error("{0}")]
    UnsupportedType(&'static str),
    /// A join token that is unknown, expired or already spent.
    #[error("the join token is unknown, expired or already used")]
    InvalidJoinToken,
    /// A node credential that is missing or unknown.
    #[error("a valid node credential is required (Authorization: Bearer <node credential>)")]
    InvalidNodeCredential,
    /// The platform may not call this server's agent yet.
    #[error("{0}")]
    AgentNotApproved(&'static str),
    /// The agent did not answer.
    #[error("the agent did not answer: {0}")]
    AgentUnreachable(String),
    /// The action does not fit the entity's state (e.g. changing a deployment being deleted).
    #[error("{0}")]
    InvalidState(&'static str),
    /// Identity refused (forbidden) or failed.
    #[error(
        "the server has no SSH access (PUT /api/v1/servers/{{id}}/ssh) and no agent that answers"
    )]
    NoRemoteAccess,

    #[error(transparent)]
    Ssh(#[from] crate::domain::ssh::SshFailure),

    #[error("the terminal ticket is unknown, expired or already used")]
    InvalidTicket,

    #[error("the Origin of the WebSocket request is not allowed")]
    OriginNotAllowed,

    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Storage or infrastructure failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<InvalidValue> for ModelError {
    fn from(value: InvalidValue) -> Self {
        Self::Invalid(vec![value])
    }
}

impl ModelError {
    /// The error for a list of field errors (none: `Ok`).
    ///
    /// # Errors
    /// [`ModelError::Invalid`] when `errors` is not empty.
    pub fn check(errors: Vec<InvalidValue>) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Self::Invalid(errors))
        }
    }
}

impl Classify for ModelError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::NameTaken(_)
            | Self::InUse(..)
            | Self::AgentNotApproved(_)
            | Self::InvalidState(_) => ErrorKind::Conflict,
            Self::TooLarge(_) => ErrorKind::PayloadTooLarge,
            Self::UnsupportedType(_) => ErrorKind::UnsupportedMediaType,
            Self::InvalidJoinToken | Self::InvalidNodeCredential => ErrorKind::Unauthenticated,
            Self::AgentUnreachable(_) => ErrorKind::Unavailable,
            Self::NoRemoteAccess => ErrorKind::Conflict,
            Self::Ssh(crate::domain::ssh::SshFailure::HostKeyChanged { .. }) => ErrorKind::Conflict,
            Self::Ssh(_) => ErrorKind::Unavailable,
            Self::InvalidTicket => ErrorKind::Unauthenticated,
            Self::OriginNotAllowed => ErrorKind::Forbidden,
            Self::Identity(inner) => inner.kind(),
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "validation_failed",
            Self::NotFound(Entity::Brand) => "brand_not_found",
            Self::NotFound(Entity::Card) => "card_not_found",
            Self::NotFound(Entity::Model) => "model_not_found",
            Self::NotFound(Entity::Server) => "server_not_found",
            Self::NotFound(Entity::Logo) => "logo_not_found",
            Self::NotFound(Entity::Deployment | Entity::ServedName) => "deployment_not_found",
            Self::NotFound(Entity::Instance) => "instance_not_found",
            Self::NotFound(Entity::Task) => "task_not_found",
            Self::NotFound(Entity::Run) => "run_not_found",
            Self::NameTaken(Entity::Task) => "task_name_taken",
            Self::NotFound(Entity::Check) => "check_not_found",
            Self::NameTaken(Entity::Run | Entity::Check) => "conflict",
            Self::NameTaken(Entity::Brand) => "brand_name_taken",
            Self::NameTaken(Entity::Card) => "card_model_taken",
            Self::NameTaken(Entity::Model) => "model_name_taken",
            Self::NameTaken(Entity::Server) => "server_name_taken",
            Self::NameTaken(Entity::Logo | Entity::Instance) => "conflict",
            Self::NameTaken(Entity::Deployment) => "deployment_name_taken",
            Self::NameTaken(Entity::ServedName) => "served_name_taken",
            Self::InUse(..) => "in_use",
            Self::TooLarge(_) => "payload_too_large",
            Self::UnsupportedType(_) => "unsupported_media_type",
            Self::InvalidJoinToken => "invalid_join_token",
            Self::InvalidNodeCredential => "invalid_node_credential",
            Self::AgentNotApproved(_) => "agent_address_not_approved",
            Self::AgentUnreachable(_) => "agent_unreachable",
            Self::InvalidState(_) => "invalid_state",
            Self::NoRemoteAccess => "no_remote_access",
            Self::Ssh(failure) => failure.code(),
            Self::InvalidTicket => "terminal_ticket_invalid",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::Identity(inner) => inner.code(),
            Self::Unexpected(_) => "internal",
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Invalid(values) => values.iter().map(FieldError::from).collect(),
            Self::Identity(inner) => inner.field_errors(),
            Self::NotFound(_)
            | Self::NameTaken(_)
            | Self::InUse(..)
            | Self::TooLarge(_)
            | Self::UnsupportedType(_)
            | Self::InvalidJoinToken
            | Self::InvalidNodeCredential
            | Self::AgentNotApproved(_)
            | Self::AgentUnreachable(_)
            | Self::InvalidState(_)
            | Self::NoRemoteAccess
            | Self::Ssh(_)
            | Self::InvalidTicket
            | Self::OriginNotAllowed
            | Self::Unexpected(_) => Vec::new(),
        }
    }
}
