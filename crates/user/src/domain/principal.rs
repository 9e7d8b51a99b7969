//! Who is calling, with what rights and limits: the answer of the `Authenticator`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::api_key::ApiKeyId;
use super::errors::IdentityError;
use super::limits::LimitRule;
use super::user::UserId;
use super::values::{Permission, Role, Scope};

/// The key a request came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    /// Key id.
    pub id: ApiKeyId,
    /// Public prefix.
    pub prefix: String,
    /// Scopes.
    pub scopes: BTreeSet<Scope>,
    /// Models it may call; empty: any.
    pub allowed_models: BTreeSet<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user (the key's owner for key callers).
    pub user_id: UserId,
    /// Login name.
    pub username: String,
    /// Roles of the user.
    pub roles: BTreeSet<Role>,
    /// Effective permissions (a key's: its owner's narrowed by its scopes).
    pub permissions: BTreeSet<Permission>,
    /// Present for API key callers.
    pub key: Option<KeyGrant>,
    /// Every limit that applies to this caller (user's and key's).
    pub rules: Vec<LimitRule>,
}

impl Principal {
    /// Whether the caller has `permission`.
    #[must_use]
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// Demands `permission`.
    ///
    /// # Errors
    /// [`IdentityError::Forbidden`].
    pub fn require(&self, permission: Permission) -> Result<(), IdentityError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(IdentityError::Forbidden(permission))
        }
    }

    /// Whether the caller may call `model` (keys may be restricted to some models).
    #[must_use]
    pub fn may_use_model(&self, model: &str) -> bool {
        self.can(Permission::UseModels)
            && self
                .key
                .as_ref()
                .is_none_or(|k| k.allowed_models.is_empty() || k.allowed_models.contains(model))
    }

    /// Whether an API key (rather than a login token) authenticated the call.
    #[must_use]
    pub fn is_key(&self) -> bool {
        self.key.is_some()
    }
}
