//! Quotas and rate limits: admins set policies; callers are admitted (rate limits + quota
//! reservation in one atomic step), then settle with real usage or release.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Actor, IdentityDeps};
use crate::domain::api_key::ApiKeyId;
use crate::domain::errors::IdentityError;
use crate::domain::limits::{Demand, LimitRule, QuotaPolicy, Subject};
use crate::domain::ports::{LedgerEntry, Reservation};
use crate::domain::principal::Principal;
use crate::domain::user::{UserId, UserStatus};
use crate::domain::values::Permission;

/// The metering contract other contexts (the gateway) depend on.
#[async_trait]
pub trait QuotaGate: Send + Sync + 'static {
    /// Checks every rate limit and quota of `principal` and reserves `demand`, atomically.
    ///
    /// # Errors
    /// [`IdentityError::RateLimited`] / [`IdentityError::QuotaExceeded`] with the refusing rule.
    async fn reserve(
        &self,
        principal: &Principal,
        demand: Demand,
    ) -> Result<Reservation, IdentityError>;

    /// Replaces the reserved token estimate with the real usage and records it durably.
    ///
    /// # Errors
    /// Infrastructure failures.
    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
    ) -> Result<(), IdentityError>;

    /// Gives the reservation back (the call did not happen).
    ///
    /// # Errors
    /// Infrastructure failures.
    async fn release(&self, reservation: &Reservation) -> Result<(), IdentityError>;
}

/// One rule with its current consumption.
#[derive(Clone, Debug)]
pub struct RuleUsage {
    /// The rule.
    pub rule: LimitRule,
    /// Consumed in the current window.
    pub used: u64,
    /// When the window resets (`None`: never).
    pub resets_at: Option<DateTime<Utc>>,
}

/// Quota use cases.
#[derive(Clone)]
pub struct QuotaService {
    deps: IdentityDeps,
}

impl QuotaService {
    /// The service over `deps`.
    #[must_use]
    pub fn new(deps: IdentityDeps) -> Self {
        Self { deps }
    }

    /// Sets the policy of a user (admin).
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::UserNotFound`].
    #[tracing::instrument(name = "quotas.set_user_policy", skip_all, fields(user.id = %user))]
    pub async fn set_user_policy(
        &self,
        actor: Actor<'_>,
        user: UserId,
        policy: QuotaPolicy,
    ) -> Result<(), IdentityError> {
        actor.require(Permission::ManageQuotas)?;
        self.deps
            .users
            .find(user)
            .await?
            .filter(|u| u.status() != UserStatus::Deleted)
            .ok_or(IdentityError::UserNotFound)?;
        self.put(&actor, Subject::User(user), user, policy).await
    }

    /// Sets the policy of one key of `owner` (admin).
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::KeyNotFound`].
    #[tracing::instrument(name = "quotas.set_key_policy", skip_all, fields(user.id = %owner, key.id = %key))]
    pub async fn set_key_policy(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        key: ApiKeyId,
        policy: QuotaPolicy,
    ) -> Result<(), IdentityError> {
        actor.require(Permission::ManageQuotas)?;
        self.deps
            .keys
            .find_owned(owner, key)
            .await?
            .ok_or(IdentityError::KeyNotFound)?;
        self.put(&actor, Subject::Key(key), owner, policy).await
    }

    async fn put(
        &self,
        actor: &Actor<'_>,
        subject: Subject,
        owner: UserId,
        policy: QuotaPolicy,
    ) -> Result<(), IdentityError> {
        self.deps.policies.put(subject, &policy).await?;
        self.deps.user_changed(owner).await?;
        self.deps
            .audit(
                actor,
                "quota.set",
                "quota",
                Some(subject.tag()),
                json!(format!("{policy:?}")),
            )
            .await
    }

    /// The policy stored for a user (admin).
    ///
    /// # Errors
    /// Forbidden.
    #[tracing::instrument(name = "quotas.user_policy", skip_all, fields(user.id = %user))]
    pub async fn user_policy(
        &self,
        actor: Actor<'_>,
        user: UserId,
    ) -> Result<QuotaPolicy, IdentityError> {
        actor.require(Permission::ManageQuotas)?;
        self.deps.policies.get(Subject::User(user)).await
    }

    /// Every rule that applies to the caller with its consumption in the current window.
    ///
    /// # Errors
    /// Infrastructure failures.
    pub async fn usage(&self, principal: &Principal) -> Result<Vec<RuleUsage>, IdentityError> {
        let now = self.deps.clock.now();
        let used = self.deps.limits.current(principal, now).await?;
        Ok(principal
            .rules()
            .iter()
            .zip(used)
            .map(|(rule, used)| RuleUsage {
                rule: rule.clone(),
                used,
                resets_at: rule.window.end(now),
            })
            .collect())
    }

    /// Admits a call that consumes no tokens (a request by API key): counts one request.
    ///
    /// # Errors
    /// As [`QuotaGate::reserve`].
    pub async fn admit_request(&self, principal: &Principal) -> Result<Reservation, IdentityError> {
        let reservation = self.reserve(principal, Demand { tokens: None }).await?;
        self.settle(&reservation, 0).await?;
        Ok(reservation)
    }
}

#[async_trait]
impl QuotaGate for QuotaService {
    async fn reserve(
        &self,
        principal: &Principal,
        demand: Demand,
    ) -> Result<Reservation, IdentityError> {
        self.deps
            .limits
            .admit(principal, principal.rules(), demand, self.deps.clock.now())
            .await
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
    ) -> Result<(), IdentityError> {
        if self.deps.limits.settle(reservation, actual_tokens).await? {
            let entry = LedgerEntry {
                user_id: reservation.user_id,
                key_id: reservation.key_id,
                tokens: actual_tokens,
                requests: 1,
                at: self.deps.clock.now(),
            };
            self.deps
                .ledger
                .append(std::slice::from_ref(&entry))
                .await?;
        }
        Ok(())
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), IdentityError> {
        self.deps.limits.release(reservation).await.map(|_| ())
    }
}
