//! The `User` aggregate.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::errors::IdentityError;
use super::values::{Email, PasswordHash, Permission, Role, Username, permissions_of};

maas_shared::define_id!(
    /// Identifies a user.
    UserId
);

/// Lifecycle of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    /// May log in and use keys.
    Active,
    /// Blocked by an admin; keys and sessions stop working.
    Disabled,
    /// Removed; kept only so ids in history stay meaningful. Never listed, never revived.
    Deleted,
}

impl UserStatus {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
        }
    }

    /// Reads a stored name.
    ///
    /// # Errors
    /// When the name is unknown (corrupt data).
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        match raw {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            "deleted" => Ok(Self::Deleted),
            other => anyhow::bail!("unknown user status `{other}`"),
        }
    }
}

/// A person (or service account) on the platform.
#[derive(Clone, Debug)]
pub struct User {
    id: UserId,
    username: Username,
    email: Option<Email>,
    password_hash: PasswordHash,
    roles: BTreeSet<Role>,
    status: UserStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

/// Stored fields of a user, for adapters rebuilding the aggregate.
#[derive(Clone, Debug)]
pub struct UserRecord {
    /// Id.
    pub id: UserId,
    /// Login name.
    pub username: Username,
    /// E-mail, if given.
    pub email: Option<Email>,
    /// Argon2id PHC string.
    pub password_hash: PasswordHash,
    /// Roles.
    pub roles: BTreeSet<Role>,
    /// Lifecycle state.
    pub status: UserStatus,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last successful login.
    pub last_login_at: Option<DateTime<Utc>>,
}

impl User {
    /// A new active user.
    #[must_use]
    pub fn new(
        username: Username,
        email: Option<Email>,
        password_hash: PasswordHash,
        roles: BTreeSet<Role>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: UserId::new(),
            username,
            email,
            password_hash,
            roles,
            status: UserStatus::Active,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        }
    }

    /// Rebuilds a stored user.
    #[must_use]
    pub fn from_record(r: UserRecord) -> Self {
        Self {
            id: r.id,
            username: r.username,
            email: r.email,
            password_hash: r.password_hash,
            roles: r.roles,
            status: r.status,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_login_at: r.last_login_at,
        }
    }

    /// Id.
    #[must_use]
    pub fn id(&self) -> UserId {
        self.id
    }
    /// Login name.
    #[must_use]
    pub fn username(&self) -> &Username {
        &self.username
    }
    /// E-mail.
    #[must_use]
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }
    /// Stored hash.
    #[must_use]
    pub fn password_hash(&self) -> &PasswordHash {
        &self.password_hash
    }
    /// Roles.
    #[must_use]
    pub fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }
    /// Permissions granted by the roles.
    #[must_use]
    pub fn permissions(&self) -> BTreeSet<Permission> {
        permissions_of(&self.roles)
    }
    /// Lifecycle state.
    #[must_use]
    pub fn status(&self) -> UserStatus {
        self.status
    }
    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Last change.
    #[must_use]
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// Last successful login.
    #[must_use]
    pub fn last_login_at(&self) -> Option<DateTime<Utc>> {
        self.last_login_at
    }
    /// Whether the account may be used.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }
    /// Whether it is an active admin.
    #[must_use]
    pub fn is_active_admin(&self) -> bool {
        self.is_active() && self.roles.contains(&Role::Admin)
    }

    /// Records a successful login.
    pub fn logged_in(&mut self, now: DateTime<Utc>) {
        self.last_login_at = Some(now);
    }

    /// Replaces the password hash.
    pub fn change_password(&mut self, hash: PasswordHash, now: DateTime<Utc>) {
        self.password_hash = hash;
        self.updated_at = now;
    }

    /// Replaces the roles.
    ///
    /// # Errors
    /// [`IdentityError::Invalid`] when no role is given.
    pub fn set_roles(
        &mut self,
        roles: BTreeSet<Role>,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        if roles.is_empty() {
            return Err(
                super::errors::InvalidValue::new("roles", "at least one role is required").into(),
            );
        }
        self.roles = roles;
        self.updated_at = now;
        Ok(())
    }

    /// Moves to `status`.
    ///
    /// # Errors
    /// [`IdentityError::UserNotFound`] for a deleted user: deletion is final.
    pub fn set_status(
        &mut self,
        status: UserStatus,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        if self.status == UserStatus::Deleted {
            return Err(IdentityError::UserNotFound);
        }
        self.status = status;
        self.updated_at = now;
        Ok(())
    }
}
