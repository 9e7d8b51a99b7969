//! Value objects of the identity context: valid once constructed.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::errors::InvalidValue;

/// A login name: 3–32 characters of `a-z 0-9 . _ -`, starting with a letter or digit, stored
/// lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Validates and lowercases `raw`.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the `username` field.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim().to_ascii_lowercase();
        let ok_len = (3..=32).contains(&value.len());
        let ok_chars = value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        let ok_start = value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
        if ok_len && ok_chars && ok_start {
            Ok(Self(value))
        } else {
            Err(InvalidValue::new(
                "username",
                "3 to 32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            ))
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, stored lowercase. Checked for shape only; ownership is not verified.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Validates and lowercases `raw`.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the `email` field.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim().to_ascii_lowercase();
        let valid = value.chars().count() <= 254
            && !value.chars().any(char::is_whitespace)
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if valid {
            Ok(Self(value))
        } else {
            Err(InvalidValue::new("email", "not a valid e-mail address"))
        }
    }

    /// The address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plain-text password on its way to the hasher. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Shortest accepted password.
    pub const MIN_LEN: usize = 10;
    /// Longest accepted password (bounds hashing cost).
    pub const MAX_LEN: usize = 128;

    /// Checks the length policy (NIST 800-63B: length, not composition rules).
    ///
    /// # Errors
    /// [`InvalidValue`] naming `field`.
    pub fn parse(raw: String, field: &'static str) -> Result<Self, InvalidValue> {
        let chars = raw.chars().count();
        if (Self::MIN_LEN..=Self::MAX_LEN).contains(&chars) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new(field, "must be 10 to 128 characters"))
        }
    }

    /// Wraps a password offered at login without checking the policy (old passwords may be
    /// shorter than today's minimum).
    #[must_use]
    pub fn offered(raw: String) -> Self {
        Self(raw)
    }

    /// The text, for the hasher only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A stored password hash (PHC string). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by the hasher or read from storage.
    #[must_use]
    pub fn from_phc(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// What a person may do on the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the platform: users, quotas, models, servers.
    Admin,
    /// Builds on it: keys, knowledge bases, fine-tunes, apps.
    Developer,
    /// Uses models through keys and conversations.
    User,
}

impl Role {
    /// Every role, highest first.
    pub const ALL: [Self; 3] = [Self::Admin, Self::Developer, Self::User];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Developer => "developer",
            Self::User => "user",
        }
    }

    /// Reads a stored or requested name.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the `role` field.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(Self::Admin),
            "developer" => Ok(Self::Developer),
            "user" => Ok(Self::User),
            _ => Err(InvalidValue::new(
                "role",
                "must be admin, developer or user",
            )),
        }
    }

    /// What the role allows.
    #[must_use]
    pub fn permissions(self) -> &'static [Permission] {
        use Permission as P;
        match self {
            Self::Admin => &[
                P::ManageUsers,
                P::ManageQuotas,
                P::ViewAudit,
                P::ManageModels,
                P::ManageServers,
                P::UseModels,
                P::ManageOwnKeys,
                P::ManageKnowledge,
                P::ManageFinetunes,
                P::ManageApps,
            ],
            Self::Developer => &[
                P::UseModels,
                P::ManageOwnKeys,
                P::ManageKnowledge,
                P::ManageFinetunes,
                P::ManageApps,
            ],
            Self::User => &[P::UseModels, P::ManageOwnKeys],
        }
    }

    /// A short description, seeded into the `roles` table.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Self::Admin => "Runs the platform: users, quotas, models, servers",
            Self::Developer => "Builds on the platform: keys, knowledge bases, fine-tunes, apps",
            Self::User => "Uses models through API keys and conversations",
        }
    }
}

/// One thing a principal may do. Handlers demand permissions; roles and key scopes grant them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Create, disable, delete users and assign roles.
    ManageUsers,
    /// Set quotas and rate limits.
    ManageQuotas,
    /// Read the audit trail.
    ViewAudit,
    /// Register models, brands and cards.
    ManageModels,
    /// Register servers and deploy.
    ManageServers,
    /// Call models through the gateway.
    UseModels,
    /// Create and revoke one's own API keys.
    ManageOwnKeys,
    /// Build knowledge bases.
    ManageKnowledge,
    /// Run fine-tunes.
    ManageFinetunes,
    /// Publish apps.
    ManageApps,
}

/// What an API key may be used for. A key's permissions are its owner's, narrowed by its scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Call models (`/v1`).
    Inference,
    /// Knowledge bases.
    Knowledge,
    /// Fine-tuning.
    Finetune,
    /// Apps.
    Apps,
    /// Everything the owner may do on the management API, administration included.
    Manage,
}

impl Scope {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inference => "inference",
            Self::Knowledge => "knowledge",
            Self::Finetune => "finetune",
            Self::Apps => "apps",
            Self::Manage => "manage",
        }
    }

    /// Reads a stored or requested name.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the `scopes` field.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "inference" => Ok(Self::Inference),
            "knowledge" => Ok(Self::Knowledge),
            "finetune" => Ok(Self::Finetune),
            "apps" => Ok(Self::Apps),
            "manage" => Ok(Self::Manage),
            _ => Err(InvalidValue::new(
                "scopes",
                "each scope must be inference, knowledge, finetune, apps or manage",
            )),
        }
    }

    /// The permissions this scope can carry (still capped by the owner's roles).
    #[must_use]
    pub fn permissions(self) -> &'static [Permission] {
        use Permission as P;
        match self {
            Self::Inference => &[P::UseModels],
            Self::Knowledge => &[P::ManageKnowledge],
            Self::Finetune => &[P::ManageFinetunes],
            Self::Apps => &[P::ManageApps],
            Self::Manage => &[
                P::ManageUsers,
                P::ManageQuotas,
                P::ViewAudit,
                P::ManageModels,
                P::ManageServers,
                P::UseModels,
                P::ManageOwnKeys,
                P::ManageKnowledge,
                P::ManageFinetunes,
                P::ManageApps,
            ],
        }
    }
}

/// The union of the permissions of `roles`.
#[must_use]
pub fn permissions_of(roles: &BTreeSet<Role>) -> BTreeSet<Permission> {
    roles
        .iter()
        .flat_map(|r| r.permissions().iter().copied())
        .collect()
}

/// The permissions a key with `scopes` grants an owner with `roles`: never more than the owner's.
#[must_use]
pub fn key_permissions(roles: &BTreeSet<Role>, scopes: &BTreeSet<Scope>) -> BTreeSet<Permission> {
    let granted: BTreeSet<Permission> = scopes
        .iter()
        .flat_map(|s| s.permissions().iter().copied())
        .collect();
    permissions_of(roles)
        .intersection(&granted)
        .copied()
        .collect()
}

/// Whether an owner with `roles` may put `scope` on a key: only when the scope would carry at
/// least one permission the owner has, and never a scope that widens nothing but asks for more.
#[must_use]
pub fn may_grant(roles: &BTreeSet<Role>, scope: Scope) -> bool {
    let owned = permissions_of(roles);
    scope.permissions().iter().all(|p| owned.contains(p))
        || (scope == Scope::Manage && !owned.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(Username::parse(" Alice.B ").unwrap().as_str(), "alice.b");
        for bad in ["ab", "-alice", "has space", "émile", &"a".repeat(33)] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_a_domain_with_a_dot() {
        assert_eq!(
            Email::parse("A@Example.COM").unwrap().as_str(),
            "a@example.com"
        );
        for bad in ["a", "a@b", "@b.c", "a@@b.c", "a b@c.d", "a@.c"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_have_a_length_policy_and_never_print() {
        assert!(Password::parse("short".into(), "password").is_err());
        let pw = Password::parse("correct horse battery".into(), "password").unwrap();
        assert!(!format!("{pw:?}").contains("horse"));
    }

    #[test]
    fn a_key_never_carries_more_than_its_owner_has() {
        let user = BTreeSet::from([Role::User]);
        let all = BTreeSet::from([Scope::Manage, Scope::Finetune, Scope::Inference]);
        let granted = key_permissions(&user, &all);
        assert!(granted.contains(&Permission::UseModels));
        assert!(!granted.contains(&Permission::ManageUsers));
        assert!(!granted.contains(&Permission::ManageFinetunes));
        assert!(!may_grant(&user, Scope::Finetune));
        assert!(may_grant(&user, Scope::Inference));
        assert!(may_grant(
            &BTreeSet::from([Role::Developer]),
            Scope::Finetune
        ));
    }
}
