//! Use cases of the identity context, one service per aggregate, over the domain ports.

pub mod accounts;
pub mod auth;
#[cfg(test)]
pub(crate) mod fakes;
pub mod keys;
pub mod ledger;
pub mod quotas;
pub mod sessions;

use std::sync::Arc;

use chrono::Duration;
use maas_shared::audit::{ActionContext, AuditLog, NewAuditEvent};
use maas_shared::clock::Clock;

use crate::domain::errors::IdentityError;
use crate::domain::limits::LimitDefaults;
use crate::domain::ports::{
    AccountChanges, ApiKeyRepository, InvalidationBus, KeyUseRecorder, LimitStore, PasswordHasher,
    PrincipalCache, QuotaPolicyRepository, RefreshTokenRepository, Secrets, TokenCodec,
    UsageLedger, UserRepository,
};
use crate::domain::principal::Principal;
use crate::domain::user::UserId;

/// Tunables of the identity context (built by the composition root from settings).
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// Whether anyone may create an account.
    pub allow_self_registration: bool,
    /// Login attempts per username and address per minute.
    pub login_attempts_per_minute: u64,
    /// Rate limits of users without their own.
    pub defaults: LimitDefaults,
}

/// Every port the identity services use.
#[derive(Clone)]
pub struct IdentityDeps {
    /// Users.
    pub users: Arc<dyn UserRepository>,
    /// Admins' changes of accounts, atomic with their audit events.
    pub account_changes: Arc<dyn AccountChanges>,
    /// Refresh tokens.
    pub refresh_tokens: Arc<dyn RefreshTokenRepository>,
    /// API keys.
    pub keys: Arc<dyn ApiKeyRepository>,
    /// Quota policies.
    pub policies: Arc<dyn QuotaPolicyRepository>,
    /// Durable usage ledger.
    pub ledger: Arc<dyn UsageLedger>,
    /// Shared counters.
    pub limits: Arc<dyn LimitStore>,
    /// Password hashing.
    pub hasher: Arc<dyn PasswordHasher>,
    /// Access tokens.
    pub tokens: Arc<dyn TokenCodec>,
    /// Secrets and digests.
    pub secrets: Arc<dyn Secrets>,
    /// Principal cache of this process.
    pub cache: Arc<dyn PrincipalCache>,
    /// Cross-replica invalidation.
    pub bus: Arc<dyn InvalidationBus>,
    /// Batched key use times.
    pub key_uses: Arc<dyn KeyUseRecorder>,
    /// Audit trail.
    pub audit: Arc<dyn AuditLog>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Tunables.
    pub config: IdentityConfig,
}

/// Who performs an action: a caller of the API, or the system itself (the CLI, bootstrap).
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    /// An authenticated caller.
    Caller(&'a Principal, &'a ActionContext),
    /// The operator at the CLI: trusted, audited as the system.
    System,
}

impl Actor<'_> {
    /// The audit context of this actor.
    #[must_use]
    pub fn context(&self) -> ActionContext {
        match self {
            Self::Caller(principal, ctx) => ActionContext {
                actor: Some(principal.user_id().as_uuid()),
                ..(*ctx).clone()
            },
            Self::System => ActionContext::default(),
        }
    }

    /// Demands a permission (the system has them all).
    ///
    /// # Errors
    /// [`IdentityError::Forbidden`].
    pub fn require(
        &self,
        permission: crate::domain::values::Permission,
    ) -> Result<(), IdentityError> {
        match self {
            Self::Caller(principal, _) => principal.require(permission),
            Self::System => Ok(()),
        }
    }

    /// The audit event of `action` by this actor on a `target_type` (never carries secrets).
    #[must_use]
    pub fn event(
        &self,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        audit_event(self, action, target_type, target_id, details)
    }

    /// The calling user, if any.
    #[must_use]
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::Caller(principal, _) => Some(principal.user_id()),
            Self::System => None,
        }
    }
}

/// The audit event of `action` by `actor` on a `target_type` (never carries secrets).
pub(crate) fn audit_event(
    actor: &Actor<'_>,
    action: &str,
    target_type: &str,
    target_id: Option<String>,
    details: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent {
        context: actor.context(),
        action: action.to_owned(),
        target_type: target_type.to_owned(),
        target_id,
        details,
    }
}

impl IdentityDeps {
    /// Appends an audit event; never carries secrets.
    pub(crate) async fn audit(
        &self,
        actor: &Actor<'_>,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        details: serde_json::Value,
    ) -> Result<(), IdentityError> {
        self.audit
            .record(audit_event(actor, action, target_type, target_id, details))
            .await
            .map_err(|e| IdentityError::Unexpected(e.0))?;
        Ok(())
    }

    /// Drops a user's cached principals here and on every replica.
    pub(crate) async fn user_changed(&self, user_id: UserId) -> Result<(), IdentityError> {
        self.cache.invalidate_user(user_id);
        self.bus.user_changed(user_id).await
    }
}
