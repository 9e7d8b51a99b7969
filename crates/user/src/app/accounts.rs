//! Accounts: creation, registration, listing, status, roles, passwords, deletion, bootstrap.

use std::collections::BTreeSet;

use maas_shared::paging::{Page, PageRequest};
use serde_json::json;

use super::{Actor, IdentityDeps, audit_event};
use crate::domain::errors::{IdentityError, InvalidValue};
use crate::domain::ports::AccountChange;
use crate::domain::principal::Principal;
use crate::domain::user::{User, UserId, UserStatus};
use crate::domain::values::{Email, Password, Permission, Role, Username};

/// A request to create an account.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Login name.
    pub username: String,
    /// E-mail (optional).
    pub email: Option<String>,
    /// Initial password.
    pub password: String,
    /// Roles (admin only; defaults to `user`).
    pub roles: Vec<String>,
}

/// Outcome of the idempotent bootstrap.
#[derive(Debug)]
pub enum Bootstrap {
    /// The admin existed already; nothing changed.
    AlreadyPresent(User),
    /// Created with the given password.
    Created(User),
    /// Created with a generated password, to show once.
    CreatedWithPassword(User, String),
}

/// What an account change ends besides itself.
#[derive(Clone, Copy, Debug, Default)]
struct Ends {
    /// Every session (refresh token).
    sessions: bool,
    /// Every API key.
    keys: bool,
}

/// Account use cases.
#[derive(Clone)]
pub struct AccountService {
    deps: IdentityDeps,
}

fn parse_account(
    req: &NewAccount,
) -> Result<(Username, Option<Email>, Password, BTreeSet<Role>), IdentityError> {
    let mut errors = Vec::new();
    let username = Username::parse(&req.username)
        .map_err(|e| errors.push(e))
        .ok();
    let email = match req
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(raw) => Email::parse(raw).map_err(|e| errors.push(e)).ok(),
        None => None,
    };
    let password = Password::parse(req.password.clone(), "password")
        .map_err(|e| errors.push(e))
        .ok();
    let mut roles = BTreeSet::new();
    for raw in &req.roles {
        match Role::parse(raw) {
            Ok(role) => {
                roles.insert(role);
            }
            Err(e) => errors.push(e),
        }
    }
    if roles.is_empty() {
        roles.insert(Role::User);
    }
    match (username, password) {
        (Some(username), Some(password)) if errors.is_empty() => {
            Ok((username, email, password, roles))
        }
        _ => Err(IdentityError::Invalid(errors)),
    }
}

impl AccountService {
    /// The service over `deps`.
    #[must_use]
    pub fn new(deps: IdentityDeps) -> Self {
        Self { deps }
    }

    /// An admin (or the CLI) creates an account with any roles.
    ///
    /// # Errors
    /// Forbidden without `ManageUsers`; invalid input; duplicates.
    pub async fn create(&self, actor: Actor<'_>, req: NewAccount) -> Result<User, IdentityError> {
        actor.require(Permission::ManageUsers)?;
        let (username, email, password, roles) = parse_account(&req)?;
        let hash = self.deps.hasher.hash(&password).await?;
        let user = User::new(username, email, hash, roles, self.deps.clock.now());
        self.deps.users.insert(&user).await?;
        let roles: Vec<&str> = user.roles().iter().map(|r| r.as_str()).collect();
        self.deps
            .audit(
                &actor,
                "user.create",
                "user",
                Some(user.id().to_string()),
                json!({"username": user.username().as_str(), "roles": roles}),
            )
            .await?;
        Ok(user)
    }

    /// Open self-registration (only when switched on): always the `user` role.
    ///
    /// # Errors
    /// [`IdentityError::RegistrationClosed`]; invalid input; duplicates.
    pub async fn register(&self, mut req: NewAccount) -> Result<User, IdentityError> {
        if !self.deps.config.allow_self_registration {
            return Err(IdentityError::RegistrationClosed);
        }
        req.roles = vec![Role::User.as_str().to_owned()];
        let (username, email, password, roles) = parse_account(&req)?;
        let hash = self.deps.hasher.hash(&password).await?;
        let user = User::new(username, email, hash, roles, self.deps.clock.now());
        self.deps.users.insert(&user).await?;
        Ok(user)
    }

    /// The caller's own account.
    ///
    /// # Errors
    /// [`IdentityError::UserNotFound`] if it vanished.
    pub async fn me(&self, principal: &Principal) -> Result<User, IdentityError> {
        self.deps
            .users
            .find(principal.user_id())
            .await?
            .filter(User::is_active)
            .ok_or(IdentityError::UserNotFound)
    }

    /// Any non-deleted account (admin).
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::UserNotFound`].
    #[tracing::instrument(name = "accounts.get", skip_all, fields(user.id = %id))]
    pub async fn get(&self, actor: Actor<'_>, id: UserId) -> Result<User, IdentityError> {
        actor.require(Permission::ManageUsers)?;
        self.find_live(id).await
    }

    /// A user by id or login name (CLI convenience).
    ///
    /// # Errors
    /// [`IdentityError::UserNotFound`].
    pub async fn resolve(
        &self,
        actor: Actor<'_>,
        id_or_login: &str,
    ) -> Result<User, IdentityError> {
        actor.require(Permission::ManageUsers)?;
        if let Ok(id) = id_or_login.parse::<UserId>() {
            return self.find_live(id).await;
        }
        self.deps
            .users
            .find_by_login(id_or_login)
            .await?
            .ok_or(IdentityError::UserNotFound)
    }

    /// Non-deleted accounts in creation order (admin).
    ///
    /// # Errors
    /// Forbidden.
    pub async fn list(
        &self,
        actor: Actor<'_>,
        page: &PageRequest,
    ) -> Result<Page<User>, IdentityError> {
        actor.require(Permission::ManageUsers)?;
        self.deps.users.list(page).await
    }

    async fn find_live(&self, id: UserId) -> Result<User, IdentityError> {
        self.deps
            .users
            .find(id)
            .await?
            .filter(|u| u.status() != UserStatus::Deleted)
            .ok_or(IdentityError::UserNotFound)
    }

    /// Writes an admin's change of `user` with its audit event, all at once; when the user was
    /// an active admin before (`was_admin`), refuses with [`IdentityError::LastAdmin`] if no
    /// active admin would remain. Then drops the cached principals (and the revoked keys) here
    /// and on every replica.
    async fn commit(
        &self,
        actor: &Actor<'_>,
        user: &User,
        was_admin: bool,
        ends: Ends,
        action: &str,
        details: serde_json::Value,
    ) -> Result<(), IdentityError> {
        let id = user.id();
        let revoked = self
            .deps
            .account_changes
            .apply(AccountChange {
                user: user.clone(),
                keep_an_admin: was_admin,
                end_sessions: ends.sessions,
                revoke_keys: ends.keys,
                at: self.deps.clock.now(),
                audit: audit_event(actor, action, "user", Some(id.to_string()), details),
            })
            .await?;
        for digest in revoked {
            self.deps.cache.invalidate_key(digest);
            self.deps.bus.key_changed(digest).await?;
        }
        self.deps.user_changed(id).await
    }

    /// Disables or re-enables an account; disabling ends its sessions and stops its keys at once.
    /// Nobody disables their own account.
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::SelfStatusChange`]; not found; [`IdentityError::LastAdmin`].
    #[tracing::instrument(name = "accounts.set_enabled", skip_all, fields(user.id = %id, enabled))]
    pub async fn set_enabled(
        &self,
        actor: Actor<'_>,
        id: UserId,
        enabled: bool,
    ) -> Result<User, IdentityError> {
        actor.require(Permission::ManageUsers)?;
        if !enabled && actor.user_id() == Some(id) {
            return Err(IdentityError::SelfStatusChange);
        }
        let mut user = self.find_live(id).await?;
        let was_admin = user.is_active_admin();
        let now = self.deps.clock.now();
        let (status, action) = if enabled {
            (UserStatus::Active, "user.enable")
        } else {
            (UserStatus::Disabled, "user.disable")
        };
        user.set_status(status, now)?;
        let ends = Ends {
            sessions: !enabled,
            keys: false,
        };
        self.commit(&actor, &user, was_admin, ends, action, json!({}))
            .await?;
        Ok(user)
    }

    /// Deletes an account: final; its keys are revoked and its sessions end, with the audit
    /// event, in one transaction. Nobody deletes their own account.
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::SelfStatusChange`]; not found; [`IdentityError::LastAdmin`].
    #[tracing::instrument(name = "accounts.delete", skip_all, fields(user.id = %id))]
    pub async fn delete(&self, actor: Actor<'_>, id: UserId) -> Result<(), IdentityError> {
        actor.require(Permission::ManageUsers)?;
        if actor.user_id() == Some(id) {
            return Err(IdentityError::SelfStatusChange);
        }
        let mut user = self.find_live(id).await?;
        let was_admin = user.is_active_admin();
        user.set_status(UserStatus::Deleted, self.deps.clock.now())?;
        let details = json!({"username": user.username().as_str()});
        let ends = Ends {
            sessions: true,
            keys: true,
        };
        self.commit(&actor, &user, was_admin, ends, "user.delete", details)
            .await
    }

    /// Replaces a user's roles. Nobody changes their own roles.
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::SelfRoleChange`]; not found; [`IdentityError::LastAdmin`].
    #[tracing::instrument(name = "accounts.set_roles", skip_all, fields(user.id = %id))]
    pub async fn set_roles(
        &self,
        actor: Actor<'_>,
        id: UserId,
        roles: &[String],
    ) -> Result<User, IdentityError> {
        actor.require(Permission::ManageUsers)?;
        if actor.user_id() == Some(id) {
            return Err(IdentityError::SelfRoleChange);
        }
        let mut errors = Vec::new();
        let parsed: BTreeSet<Role> = roles
            .iter()
            .filter_map(|r| Role::parse(r).map_err(|e| errors.push(e)).ok())
            .collect();
        if !errors.is_empty() {
            return Err(IdentityError::Invalid(errors));
        }
        let mut user = self.find_live(id).await?;
        let was_admin = user.is_active_admin();
        user.set_roles(parsed, self.deps.clock.now())?;
        let names: Vec<&str> = user.roles().iter().map(|r| r.as_str()).collect();
        let details = json!({"roles": names});
        let ends = Ends::default();
        self.commit(&actor, &user, was_admin, ends, "user.set_roles", details)
            .await?;
        Ok(user)
    }

    /// Changes the caller's password after checking the current one; ends every session.
    ///
    /// # Errors
    /// [`IdentityError::InvalidCredentials`] for a wrong current password; invalid new password.
    #[tracing::instrument(name = "accounts.change_password", skip_all, fields(user.id = %principal.user_id()))]
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: String,
        new: String,
    ) -> Result<(), IdentityError> {
        let new = Password::parse(new, "new_password")?;
        let mut user = self.me(principal).await?;
        if !self
            .deps
            .hasher
            .verify(&Password::offered(current), Some(user.password_hash()))
            .await?
        {
            return Err(IdentityError::InvalidCredentials);
        }
        let hash = self.deps.hasher.hash(&new).await?;
        let now = self.deps.clock.now();
        user.change_password(hash, now);
        self.deps.users.update(&user).await?;
        self.deps.refresh_tokens.revoke_user(user.id(), now).await?;
        // Every session ends, access tokens included (the caller logs in again).
        self.deps.user_changed(user.id()).await
    }

    /// A strong random password (for accounts created by an operator without one).
    #[must_use]
    pub fn generate_password(&self) -> String {
        self.deps.secrets.generate_password()
    }

    /// Idempotent bootstrap of the first admin: creates `username` as admin unless it exists.
    /// Without a password, one is generated and returned to show once.
    ///
    /// # Errors
    /// Invalid input; storage failures.
    pub async fn bootstrap_admin(
        &self,
        username: &str,
        password: Option<String>,
    ) -> Result<Bootstrap, IdentityError> {
        let name = Username::parse(username)?;
        if let Some(existing) = self.deps.users.find_by_login(name.as_str()).await? {
            return Ok(Bootstrap::AlreadyPresent(existing));
        }
        let (password, generated) = match password.filter(|p| !p.is_empty()) {
            Some(given) => (given, false),
            None => (self.deps.secrets.generate_password(), true),
        };
        let req = NewAccount {
            username: name.as_str().to_owned(),
            email: None,
            password: password.clone(),
            roles: vec!["admin".into()],
        };
        let user = self.create(Actor::System, req).await?;
        Ok(if generated {
            Bootstrap::CreatedWithPassword(user, password)
        } else {
            Bootstrap::Created(user)
        })
    }
}

impl From<Vec<InvalidValue>> for IdentityError {
    fn from(values: Vec<InvalidValue>) -> Self {
        Self::Invalid(values)
    }
}

#[cfg(test)]
mod tests {
    use maas_shared::audit::ActionContext;

    use super::*;
    use crate::app::fakes::{self, BusMessage, Handles};

    fn account(name: &str, roles: &[&str]) -> NewAccount {
        NewAccount {
            username: name.to_owned(),
            email: Some(format!("{name}@example.test")),
            password: "correct horse battery".to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn principal_of(user: &User) -> Principal {
        Principal::signed_in(
            user.id(),
            user.username().as_str().to_owned(),
            user.roles().clone(),
            Vec::new(),
        )
    }

    async fn service_with_admins(names: &[&str]) -> (AccountService, Handles, Vec<User>) {
        let (deps, handles) = fakes::deps();
        let service = AccountService::new(deps);
        let mut admins = Vec::new();
        for name in names {
            admins.push(
                service
                    .create(Actor::System, account(name, &["admin"]))
                    .await
                    .unwrap(),
            );
        }
        handles.bus.take();
        (service, handles, admins)
    }

    async fn stored(service: &AccountService, id: UserId) -> User {
        service.deps.users.find(id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn the_only_admin_cannot_be_demoted_disabled_or_deleted() {
        let (service, handles, admins) = service_with_admins(&["root"]).await;
        let root = &admins[0];
        let ctx = ActionContext::default();
        let me = principal_of(root);

        let own = service
            .set_roles(Actor::Caller(&me, &ctx), root.id(), &["user".to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(own, IdentityError::SelfRoleChange), "{own:?}");
        let own = service
            .set_enabled(Actor::Caller(&me, &ctx), root.id(), false)
            .await
            .unwrap_err();
        assert!(matches!(own, IdentityError::SelfStatusChange), "{own:?}");
        let own = service
            .delete(Actor::Caller(&me, &ctx), root.id())
            .await
            .unwrap_err();
        assert!(matches!(own, IdentityError::SelfStatusChange), "{own:?}");

        let demote = service
            .set_roles(Actor::System, root.id(), &["developer".to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(demote, IdentityError::LastAdmin), "{demote:?}");
        let disable = service
            .set_enabled(Actor::System, root.id(), false)
            .await
            .unwrap_err();
        assert!(matches!(disable, IdentityError::LastAdmin), "{disable:?}");
        let delete = service.delete(Actor::System, root.id()).await.unwrap_err();
        assert!(matches!(delete, IdentityError::LastAdmin), "{delete:?}");

        // Nothing was written, broadcast or audited by the refusals.
        let after = stored(&service, root.id()).await;
        assert_eq!(after.status(), UserStatus::Active);
        assert_eq!(after.roles(), &BTreeSet::from([Role::Admin]));
        assert_eq!(handles.users.active_admins(), 1);
        assert_eq!(handles.bus.take(), []);
        assert_eq!(
            handles.audit.actions(),
            [("user.create".to_owned(), Some(root.id().to_string()))]
        );

        // Changing roles while keeping `admin` is not a demotion.
        let kept = service
            .set_roles(
                Actor::System,
                root.id(),
                &["admin".to_owned(), "developer".to_owned()],
            )
            .await
            .unwrap();
        assert_eq!(
            kept.roles(),
            &BTreeSet::from([Role::Admin, Role::Developer])
        );
        assert_eq!(handles.bus.take(), [BusMessage::UserChanged(root.id())]);
    }

    #[tokio::test]
    async fn of_two_admins_one_may_be_demoted_then_the_other_is_the_last() {
        let (service, handles, admins) = service_with_admins(&["alice", "bob"]).await;
        let (alice, bob) = (&admins[0], &admins[1]);
        let ctx = ActionContext::default();
        let as_alice = principal_of(alice);

        let demoted = service
            .set_roles(
                Actor::Caller(&as_alice, &ctx),
                bob.id(),
                &["user".to_owned()],
            )
            .await
            .unwrap();
        assert_eq!(demoted.roles(), &BTreeSet::from([Role::User]));
        assert_eq!(
            stored(&service, bob.id()).await.roles(),
            &BTreeSet::from([Role::User])
        );
        assert_eq!(handles.users.active_admins(), 1);
        assert_eq!(handles.bus.take(), [BusMessage::UserChanged(bob.id())]);

        let again = service
            .set_roles(Actor::System, alice.id(), &["user".to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(again, IdentityError::LastAdmin), "{again:?}");
        let delete = service.delete(Actor::System, alice.id()).await.unwrap_err();
        assert!(matches!(delete, IdentityError::LastAdmin), "{delete:?}");
        assert_eq!(handles.users.active_admins(), 1);
        assert_eq!(handles.bus.take(), []);
        let actions: Vec<String> = handles
            .audit
            .actions()
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        assert_eq!(actions, ["user.create", "user.create", "user.set_roles"]);
    }

    #[tokio::test]
    async fn a_disabled_admin_does_not_count_as_an_active_one() {
        let (service, handles, admins) = service_with_admins(&["alice", "bob"]).await;
        let (alice, bob) = (&admins[0], &admins[1]);

        let disabled = service
            .set_enabled(Actor::System, bob.id(), false)
            .await
            .unwrap();
        assert_eq!(disabled.status(), UserStatus::Disabled);
        assert_eq!(handles.users.active_admins(), 1);

        let last = service
            .set_enabled(Actor::System, alice.id(), false)
            .await
            .unwrap_err();
        assert!(matches!(last, IdentityError::LastAdmin), "{last:?}");

        service
            .set_enabled(Actor::System, bob.id(), true)
            .await
            .unwrap();
        service.delete(Actor::System, alice.id()).await.unwrap();
        assert_eq!(
            stored(&service, alice.id()).await.status(),
            UserStatus::Deleted
        );
        assert_eq!(handles.users.active_admins(), 1);
        assert_eq!(
            handles.bus.take(),
            [
                BusMessage::UserChanged(bob.id()),
                BusMessage::UserChanged(bob.id()),
                BusMessage::UserChanged(alice.id()),
            ]
        );
    }

    /// Both demotions read two admins before either writes (the fake yields before writing);
    /// the check and the write are one step, so exactly one passes.
    #[tokio::test]
    async fn concurrent_demotions_of_two_admins_keep_one() {
        let (service, handles, admins) = service_with_admins(&["alice", "bob"]).await;
        let roles = ["user".to_owned()];
        let (first, second) = tokio::join!(
            service.set_roles(Actor::System, admins[0].id(), &roles),
            service.set_roles(Actor::System, admins[1].id(), &roles),
        );
        assert_eq!(handles.users.active_admins(), 1);
        assert!(
            matches!(
                (&first, &second),
                (Ok(_), Err(IdentityError::LastAdmin)) | (Err(IdentityError::LastAdmin), Ok(_))
            ),
            "{first:?} / {second:?}"
        );
    }

    #[tokio::test]
    async fn usernames_and_emails_are_unique_ignoring_case() {
        let (deps, _handles) = fakes::deps();
        let service = AccountService::new(deps);
        service.register(account("carol", &[])).await.unwrap();

        let same_name = service
            .register(NewAccount {
                email: None,
                ..account("CAROL", &[])
            })
            .await
            .unwrap_err();
        assert!(
            matches!(same_name, IdentityError::UsernameTaken),
            "{same_name:?}"
        );

        let same_email = service
            .register(NewAccount {
                email: Some("Carol@Example.TEST".to_owned()),
                ..account("carol2", &[])
            })
            .await
            .unwrap_err();
        assert!(
            matches!(same_email, IdentityError::EmailTaken),
            "{same_email:?}"
        );
    }
}
