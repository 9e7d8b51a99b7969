//! Test support for other contexts (feature `test-support`, for dev-dependencies only): callers
//! as the `Authenticator` would make them, without credentials, storage or limits.

use std::collections::BTreeSet;

use crate::domain::api_key::ApiKeyId;
use crate::domain::principal::{KeyGrant, Principal};
use crate::domain::user::UserId;
use crate::domain::values::{Role, Scope};

/// The username every test principal carries.
pub const USERNAME: &str = "test-user";

/// The public prefix of every test key.
pub const KEY_PREFIX: &str = "mk_test";

/// A user signed in with a login token, holding the permissions of `roles`, without limit rules.
#[must_use]
pub fn principal(user_id: UserId, roles: &[Role]) -> Principal {
    Principal::signed_in(
        user_id,
        USERNAME.to_owned(),
        roles.iter().copied().collect(),
        Vec::new(),
    )
}

/// A program calling with an API key of `user_id` scoped to inference, which never expires,
/// restricted to `allowed_models` (empty: any model), without limit rules.
#[must_use]
pub fn key_principal(user_id: UserId, roles: &[Role], allowed_models: &[&str]) -> Principal {
    key_principal_with(user_id, roles, key_grant(allowed_models))
}

/// A program calling with `key` of `user_id`, without limit rules.
#[must_use]
pub fn key_principal_with(user_id: UserId, roles: &[Role], key: KeyGrant) -> Principal {
    Principal::with_key(
        user_id,
        USERNAME.to_owned(),
        roles.iter().copied().collect(),
        key,
        Vec::new(),
    )
}

/// A fresh key grant: scope [`Scope::Inference`], prefix [`KEY_PREFIX`], no expiry, restricted
/// to `allowed_models` (empty: any model).
#[must_use]
pub fn key_grant(allowed_models: &[&str]) -> KeyGrant {
    KeyGrant {
        id: ApiKeyId::new(),
        prefix: KEY_PREFIX.to_owned(),
        scopes: BTreeSet::from([Scope::Inference]),
        allowed_models: allowed_models.iter().map(|&m| m.to_owned()).collect(),
        expires_at: None,
        app: None,
    }
}

/// A grant of an app key bound to `app` (no scopes; it may call models through its app only).
#[must_use]
pub fn app_key_grant(app: uuid::Uuid) -> KeyGrant {
    KeyGrant {
        id: ApiKeyId::new(),
        prefix: KEY_PREFIX.to_owned(),
        scopes: BTreeSet::new(),
        allowed_models: BTreeSet::new(),
        expires_at: None,
        app: Some(app),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::Permission;

    #[test]
    fn a_signed_in_principal_has_its_roles_permissions_and_no_key() {
        let user = UserId::new();
        let p = principal(user, &[Role::User]);
        assert_eq!(p.user_id(), user);
        assert!(p.can(Permission::UseModels));
        assert!(!p.can(Permission::ManageUsers));
        assert_eq!(p.key_id(), None);
        assert!(p.may_use_model("any"));
    }

    #[test]
    fn a_key_principal_is_narrowed_to_inference_and_its_models() {
        let user = UserId::new();
        let p = key_principal(user, &[Role::Admin], &["m"]);
        assert!(p.is_key());
        assert!(p.can(Permission::UseModels));
        assert!(!p.can(Permission::ManageUsers));
        assert!(p.may_use_model("m"));
        assert!(!p.may_use_model("other"));
        assert!(key_principal(user, &[Role::User], &[]).may_use_model("other"));
    }
}
