//! The audit trail: who did what to which resource, from where. Every admin action in every
//! context writes one event through the [`AuditLog`] port. Details must never carry a secret
//! (password, key, token): callers pass ids and names only.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Classify, ErrorKind};
use crate::paging::{Page, PageRequest};

crate::define_id!(
    /// Identifies one audit event.
    AuditEventId
);

/// Where an action came from: the acting user and the request that carried it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionContext {
    /// The acting user; `None` for the system itself (CLI bootstrap, workers).
    pub actor: Option<Uuid>,
    /// The `x-request-id` of the HTTP request, if any.
    pub request_id: Option<String>,
    /// The client's IP address, if known.
    pub ip: Option<String>,
}

/// An action to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEvent {
    /// Who and from where.
    pub context: ActionContext,
    /// Dotted verb, e.g. `user.disable`, `api_key.revoke`.
    pub action: String,
    /// Kind of the affected resource, e.g. `user`.
    pub target_type: String,
    /// Id of the affected resource, when there is one.
    pub target_id: Option<String>,
    /// Extra facts (never secrets).
    pub details: Value,
}

/// A recorded action.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Event id (time-ordered).
    pub id: AuditEventId,
    /// The recorded action.
    pub event: NewAuditEvent,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// Filters for reading the trail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events by this actor.
    pub actor: Option<Uuid>,
    /// Only events on this resource type.
    pub target_type: Option<String>,
    /// Only events on this resource id.
    pub target_id: Option<String>,
}

/// The audit store could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("audit log unavailable")]
pub struct AuditError(#[from] pub anyhow::Error);

impl Classify for AuditError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// Append-only store of [`AuditEvent`]s.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends one event.
    ///
    /// # Errors
    /// [`AuditError`] when the store is unreachable.
    async fn record(&self, event: NewAuditEvent) -> Result<AuditEventId, AuditError>;

    /// Lists events, newest first.
    ///
    /// # Errors
    /// [`AuditError`] when the store is unreachable.
    async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, AuditError>;
}
