//! Reading the audit trail (admins with `ViewAudit`).

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use maas_shared::audit::{AuditEvent, AuditFilter, AuditLog};
use maas_shared::http::{ApiError, PageQuery, PageResponse};

use crate::domain::errors::{IdentityError, InvalidValue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{Authorized, ViewAudit};

/// Filters of `GET /audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only actions by this user.
    pub actor: Option<Uuid>,
    /// Only actions on this kind of resource (`user`, `api_key`, `quota`, `provider`).
    #[param(pattern = "^[a-z_]{1,32}$")]
    pub target_type: Option<String>,
    /// Only actions on this resource (its id as recorded, at most 200 characters).
    #[param(max_length = 200, pattern = "^[^\\x00]*$")]
    pub target_id: Option<String>,
}

/// One recorded admin action.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventResponse {
    /// Event id.
    pub id: Uuid,
    /// Who (absent for the system: CLI, bootstrap).
    pub actor: Option<Uuid>,
    /// What, e.g. `user.disable`.
    pub action: String,
    /// Kind of resource.
    pub target_type: String,
    /// Which resource.
    pub target_id: Option<String>,
    /// The request that carried it.
    pub request_id: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// Extra facts (never secrets).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<AuditEvent> for AuditEventResponse {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id.as_uuid(),
            actor: e.event.context.actor,
            action: e.event.action,
            target_type: e.event.target_type,
            target_id: e.event.target_id,
            request_id: e.event.context.request_id,
            ip: e.event.context.ip,
            details: e.event.details,
            at: e.at,
        }
    }
}

/// The audit log, as app data.
pub type AuditData = web::Data<Arc<dyn AuditLog>>;

/// Audit trail (admin)
///
/// Every admin action, newest first, optionally filtered by actor or resource.
#[utoipa::path(get, path = "/audit", tag = "users", params(AuditParams, PageQuery), responses((status = 200, body = PageResponse<AuditEventResponse>)), security(("bearer" = [])))]
pub async fn list_audit(
    _caller: Authorized<ViewAudit>,
    audit: AuditData,
    filter: web::Query<AuditParams>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner().into_request()?;
    let f = filter.into_inner();
    let mut invalid = Vec::new();
    if f.target_type.as_deref().is_some_and(|t| {
        !(1..=32).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    }) {
        invalid.push(InvalidValue::new(
            "target_type",
            "1 to 32 characters of a-z or '_'",
        ));
    }
    if f.target_id
        .as_deref()
        .is_some_and(|t| t.chars().count() > 200 || t.contains('\0'))
    {
        invalid.push(InvalidValue::new(
            "target_id",
            "at most 200 characters, without NUL",
        ));
    }
    if !invalid.is_empty() {
        return Err(IdentityError::Invalid(invalid).into());
    }
    let filter = AuditFilter {
        actor: f.actor,
        target_type: f.target_type,
        target_id: f.target_id,
    };
    let events = audit.list(&filter, &page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::from_page(events, AuditEventResponse::from)))
}
