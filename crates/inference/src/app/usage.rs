//! Usage reports: callers see their own; admins see anyone's or everyone's.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use maas_shared::clock::Clock;
use maas_user::contract::{Permission, Principal, UserId};

use crate::domain::errors::{InferenceError, InvalidValue};
use crate::domain::ports::UsageReports;
use crate::domain::usage::{Grouping, UsageQuery, UsageRow};

/// The longest range one report may cover.
const MAX_RANGE_DAYS: i64 = 366;

/// What the caller asked for.
#[derive(Clone, Debug, Default)]
pub struct ReportRequest {
    /// From (default: 30 days ago).
    pub from: Option<DateTime<Utc>>,
    /// To (default: now).
    pub to: Option<DateTime<Utc>>,
    /// `day` (default), `model` or `key`.
    pub group_by: Option<String>,
    /// Another user (admins only).
    pub user_id: Option<UserId>,
    /// Every user (admins only).
    pub all_users: bool,
}

/// Usage report use cases.
#[derive(Clone)]
pub struct UsageService {
    reports: Arc<dyn UsageReports>,
    clock: Arc<dyn Clock>,
}

impl UsageService {
    /// The service.
    #[must_use]
    pub fn new(reports: Arc<dyn UsageReports>, clock: Arc<dyn Clock>) -> Self {
        Self { reports, clock }
    }

    /// Aggregates usage.
    ///
    /// # Errors
    /// Invalid range or grouping; forbidden for other users without `ManageUsers`.
    pub async fn report(
        &self,
        principal: &Principal,
        req: ReportRequest,
    ) -> Result<(UsageQuery, Vec<UsageRow>), InferenceError> {
        let now = self.clock.now();
        let to = req.to.unwrap_or(now);
        let from = req.from.unwrap_or(to - Duration::days(30));
        let mut errors = Vec::new();
        if from >= to {
            errors.push(InvalidValue::new("from", "must be before `to`"));
        } else if to - from > Duration::days(MAX_RANGE_DAYS) {
            errors.push(InvalidValue::new("to", "a report covers at most 366 days"));
        }
        let group_by = match req.group_by.as_deref().unwrap_or("day") {
            "day" => Some(Grouping::Day),
            "model" => Some(Grouping::Model),
            "key" => Some(Grouping::Key),
            _ => {
                errors.push(InvalidValue::new("group_by", "day, model or key"));
                None
            }
        };
        let Some(group_by) = group_by.filter(|_| errors.is_empty()) else {
            return Err(InferenceError::Invalid(errors));
        };
        let user_id = match (req.user_id, req.all_users) {
            (None, false) => Some(principal.user_id()),
            (Some(id), _) if id == principal.user_id() => Some(id),
            (other, _) => {
                principal.require(Permission::ManageUsers)?;
                other
            }
        };
        let query = UsageQuery {
            user_id,
            from,
            to,
            group_by,
        };
        let rows = self.reports.report(&query).await?;
        Ok((query, rows))
    }
}
