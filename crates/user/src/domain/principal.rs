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
    /// The app an app key is bound to: such a key calls that app's endpoint only.
    pub app: Option<uuid::Uuid>,
}

/// An authenticated caller. Only the identity context makes one (from a verified credential);
/// every other context receives it and reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    user_id: UserId,
    username: String,
    roles: BTreeSet<Role>,
    permissions: BTreeSet<Permission>,
    key: Option<KeyGrant>,
    rules: Vec<LimitRule>,
}

impl Principal {
    /// A user signed in with a login token: the permissions of their roles.
    pub(crate) fn signed_in(
        user_id: UserId,
        username: String,
        roles: BTreeSet<Role>,
        rules: Vec<LimitRule>,
    ) -> Self {
        let permissions = super::values::permissions_of(&roles);
        Self {
            user_id,
            username,
            roles,
            permissions,
            key: None,
            rules,
        }
    }

    /// A program calling with one of `user_id`'s API keys: the owner's permissions narrowed by
    /// the key's scopes.
    pub(crate) fn with_key(
        user_id: UserId,
        username: String,
        roles: BTreeSet<Role>,
        key: KeyGrant,
        rules: Vec<LimitRule>,
    ) -> Self {
        // An app key carries no scope: it may only call models, and only through its app.
        let permissions = if key.app.is_some() {
            super::values::permissions_of(&roles)
                .into_iter()
                .filter(|p| *p == Permission::UseModels)
                .collect()
        } else {
            super::values::key_permissions(&roles, &key.scopes)
        };
        Self {
            user_id,
            username,
            roles,
            permissions,
            key: Some(key),
            rules,
        }
    }

    /// The user (the key's owner for key callers).
    #[must_use]
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// Login name.
    #[must_use]
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Roles of the user.
    #[must_use]
    pub fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }

    /// Effective permissions (a key's: its owner's narrowed by its scopes).
    #[must_use]
    pub fn permissions(&self) -> &BTreeSet<Permission> {
        &self.permissions
    }

    /// The key the call came with; `None` for login tokens.
    #[must_use]
    pub fn key(&self) -> Option<&KeyGrant> {
        self.key.as_ref()
    }

    /// The id of the key the call came with, if any.
    #[must_use]
    pub fn key_id(&self) -> Option<ApiKeyId> {
        self.key.as_ref().map(|k| k.id)
    }

    /// Every limit that applies to this caller (user's and key's).
    #[must_use]
    pub fn rules(&self) -> &[LimitRule] {
        &self.rules
    }

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

    /// The app of an app key (`None` for login tokens and ordinary keys).
    #[must_use]
    pub fn app(&self) -> Option<uuid::Uuid> {
        self.key.as_ref().and_then(|k| k.app)
    }

    /// Whether an API key (rather than a login token) authenticated the call.
    #[must_use]
    pub fn is_key(&self) -> bool {
        self.key.is_some()
    }
}
