//! API keys: create (secret shown once), list, revoke, rotate.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use maas_shared::paging::{Page, PageRequest};
use serde_json::json;

use super::{Actor, IdentityDeps};
use crate::domain::api_key::{ApiKey, ApiKeyId, KeyLimits, KeyName, KeySpec};
use crate::domain::errors::{IdentityError, InvalidValue};
use crate::domain::limits::{MAX_LIMIT, MAX_LIMIT_MESSAGE};
use crate::domain::user::{User, UserId, UserStatus};
use crate::domain::values::{Permission, Scope, may_grant};

/// A request for a new key.
#[derive(Clone, Debug, Default)]
pub struct NewKey {
    /// Label.
    pub name: String,
    /// Scopes (default: `inference`).
    pub scopes: Vec<String>,
    /// Models it may call (empty: any).
    pub allowed_models: Vec<String>,
    /// Its own rate limits.
    pub limits: KeyLimits,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Binds the key to one app (the apps context issues these; no scopes then).
    pub app: Option<uuid::Uuid>,
}

/// A key together with its secret, returned once at creation or rotation.
#[derive(Debug)]
pub struct IssuedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The secret (`sk-...`): shown now, never again.
    pub secret: String,
}

/// App keys, for the apps context: API keys bound to one app, which call that app's endpoint
/// and nothing else; the app's calls are charged to the key's owner under the key's own rate
/// limits. A contract of this context.
#[async_trait::async_trait]
pub trait AppKeys: Send + Sync + 'static {
    /// Issues a key of `owner` bound to `app` (the caller already checked the app is theirs).
    ///
    /// # Errors
    /// Invalid name, limits or expiry.
    async fn issue(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
        name: &str,
        limits: KeyLimits,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey, IdentityError>;

    /// The keys bound to `app`, newest first.
    ///
    /// # Errors
    /// Storage failure.
    async fn list(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
    ) -> Result<Vec<ApiKey>, IdentityError>;

    /// Revokes one of `app`'s keys.
    ///
    /// # Errors
    /// [`IdentityError::KeyNotFound`] for unknown keys and keys of other apps.
    async fn revoke(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
        key: ApiKeyId,
    ) -> Result<ApiKey, IdentityError>;

    /// Revokes every key of `app` (it is being deleted); answers how many.
    ///
    /// # Errors
    /// Storage failure.
    async fn revoke_all(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
    ) -> Result<usize, IdentityError>;
}

#[async_trait::async_trait]
impl AppKeys for ApiKeyService {
    async fn issue(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
        name: &str,
        limits: KeyLimits,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey, IdentityError> {
        self.create(
            actor,
            owner,
            NewKey {
                name: name.to_owned(),
                limits,
                expires_at,
                app: Some(app),
                ..NewKey::default()
            },
        )
        .await
    }

    async fn list(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
    ) -> Result<Vec<ApiKey>, IdentityError> {
        Self::authorize(&actor, owner)?;
        self.deps.keys.list_app(owner, app).await
    }

    async fn revoke(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
        key: ApiKeyId,
    ) -> Result<ApiKey, IdentityError> {
        let found = self.owned(&actor, owner, key).await?;
        if found.app() != Some(app) {
            return Err(IdentityError::KeyNotFound);
        }
        ApiKeyService::revoke(self, actor, owner, key).await
    }

    async fn revoke_all(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        app: uuid::Uuid,
    ) -> Result<usize, IdentityError> {
        let keys = AppKeys::list(self, actor, owner, app).await?;
        let mut revoked = 0;
        for key in keys.iter().filter(|k| k.revoked_at().is_none()) {
            ApiKeyService::revoke(self, actor, owner, key.id()).await?;
            revoked += 1;
        }
        Ok(revoked)
    }
}

/// API key use cases.
#[derive(Clone)]
pub struct ApiKeyService {
    deps: IdentityDeps,
}

impl ApiKeyService {
    /// The service over `deps`.
    #[must_use]
    pub fn new(deps: IdentityDeps) -> Self {
        Self { deps }
    }

    /// Checks who may manage `owner`'s keys: the owner (with `ManageOwnKeys`) or a user admin.
    fn authorize(actor: &Actor<'_>, owner: UserId) -> Result<(), IdentityError> {
        match actor.user_id() {
            Some(me) if me == owner => actor.require(Permission::ManageOwnKeys),
            Some(_) => actor
                .require(Permission::ManageUsers)
                .map_err(|_| IdentityError::UserNotFound),
            None => Ok(()),
        }
    }

    async fn live_owner(&self, owner: UserId) -> Result<User, IdentityError> {
        self.deps
            .users
            .find(owner)
            .await?
            .filter(|u| u.status() != UserStatus::Deleted)
            .ok_or(IdentityError::UserNotFound)
    }

    /// Creates a key for `owner`. Its scopes can only narrow what the owner may do, and a key
    /// can only mint keys with scopes it has itself.
    ///
    /// # Errors
    /// Invalid input; [`IdentityError::ScopeNotAllowed`]; not found for other users' keys.
    #[tracing::instrument(name = "keys.create", skip_all, fields(user.id = %owner))]
    pub async fn create(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        req: NewKey,
    ) -> Result<IssuedKey, IdentityError> {
        Self::authorize(&actor, owner)?;
        let mut errors: Vec<InvalidValue> = Vec::new();
        let name = KeyName::parse(&req.name).map_err(|e| errors.push(e)).ok();
        let mut scopes = BTreeSet::new();
        for raw in &req.scopes {
            match Scope::parse(raw) {
                Ok(scope) => {
                    scopes.insert(scope);
                }
                Err(e) => errors.push(e),
            }
        }
        if req.app.is_some() {
            if !scopes.is_empty() || !req.allowed_models.is_empty() {
                errors.push(InvalidValue::new(
                    "scopes",
                    "an app key has no scopes or model list: it calls its app only",
                ));
            }
        } else if scopes.is_empty() {
            scopes.insert(Scope::Inference);
        }
        let models: BTreeSet<String> = req
            .allowed_models
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        if models.iter().any(|m| m.chars().count() > 200) {
            errors.push(InvalidValue::new(
                "allowed_models",
                "model names are at most 200 characters",
            ));
        }
        let now = self.deps.clock.now();
        if req.expires_at.is_some_and(|at| at <= now) {
            errors.push(InvalidValue::new("expires_at", "must be in the future"));
        }
        if [req.limits.requests_per_minute, req.limits.tokens_per_minute].contains(&Some(0)) {
            errors.push(InvalidValue::new("limits", "limits must be positive"));
        }
        for (field, value) in [
            ("limits.requests_per_minute", req.limits.requests_per_minute),
            ("limits.tokens_per_minute", req.limits.tokens_per_minute),
        ] {
            if value.is_some_and(|v| v > MAX_LIMIT) {
                errors.push(InvalidValue::new(field, MAX_LIMIT_MESSAGE));
            }
        }
        let Some(name) = name.filter(|_| errors.is_empty()) else {
            return Err(IdentityError::Invalid(errors));
        };
        let user = self.live_owner(owner).await?;
        for scope in &scopes {
            let caller_key_allows = match actor {
                Actor::Caller(principal, _) => {
                    principal.key().is_none_or(|k| k.scopes.contains(scope))
                }
                Actor::System => true,
            };
            if !may_grant(user.roles(), *scope) || !caller_key_allows {
                return Err(IdentityError::ScopeNotAllowed(*scope));
            }
        }
        let minted = self.deps.secrets.mint_api_key();
        let key = ApiKey::issue(
            owner,
            KeySpec {
                name,
                scopes,
                allowed_models: models,
                limits: req.limits,
                expires_at: req.expires_at,
                app: req.app,
            },
            &minted,
            now,
        );
        self.deps.keys.insert(&key).await?;
        let scope_names: Vec<&str> = key.scopes().iter().map(|s| s.as_str()).collect();
        self.deps
            .audit(
                &actor,
                "api_key.create",
                "api_key",
                Some(key.id().to_string()),
                json!({"owner": owner, "prefix": key.prefix(), "scopes": scope_names, "app": key.app()}),
            )
            .await?;
        Ok(IssuedKey {
            key,
            secret: minted.plaintext,
        })
    }

    /// The keys of `owner`, newest first.
    ///
    /// # Errors
    /// Not found for other users' keys (unless admin).
    #[tracing::instrument(name = "keys.list", skip_all, fields(user.id = %owner))]
    pub async fn list(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, IdentityError> {
        Self::authorize(&actor, owner)?;
        self.deps.keys.list(owner, page).await
    }

    async fn owned(
        &self,
        actor: &Actor<'_>,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<ApiKey, IdentityError> {
        Self::authorize(actor, owner).map_err(|_| IdentityError::KeyNotFound)?;
        self.deps
            .keys
            .find_owned(owner, id)
            .await?
            .ok_or(IdentityError::KeyNotFound)
    }

    /// Revokes a key; it stops working on every replica within a second.
    ///
    /// # Errors
    /// [`IdentityError::KeyNotFound`] for unknown keys and other users' keys.
    #[tracing::instrument(name = "keys.revoke", skip_all, fields(user.id = %owner, key.id = %id))]
    pub async fn revoke(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<ApiKey, IdentityError> {
        let mut key = self.owned(&actor, owner, id).await?;
        key.revoke(self.deps.clock.now());
        self.deps.keys.update(&key).await?;
        self.deps.cache.invalidate_key(key.digest());
        self.deps.bus.key_changed(key.digest()).await?;
        self.deps
            .audit(
                &actor,
                "api_key.revoke",
                "api_key",
                Some(id.to_string()),
                json!({"prefix": key.prefix()}),
            )
            .await?;
        Ok(key)
    }

    /// Replaces a key's secret; the old secret stops working at once.
    ///
    /// # Errors
    /// [`IdentityError::KeyNotFound`]; a revoked key cannot be rotated (not found).
    #[tracing::instrument(name = "keys.rotate", skip_all, fields(user.id = %owner, key.id = %id))]
    pub async fn rotate(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<IssuedKey, IdentityError> {
        let mut key = self.owned(&actor, owner, id).await?;
        if key.revoked_at().is_some() {
            return Err(IdentityError::KeyNotFound);
        }
        let old = key.digest();
        let minted = self.deps.secrets.mint_api_key();
        key.rotate(&minted);
        self.deps.keys.update(&key).await?;
        self.deps.cache.invalidate_key(old);
        self.deps.bus.key_changed(old).await?;
        self.deps
            .audit(
                &actor,
                "api_key.rotate",
                "api_key",
                Some(id.to_string()),
                json!({"prefix": key.prefix()}),
            )
            .await?;
        Ok(IssuedKey {
            key,
            secret: minted.plaintext,
        })
    }
}
