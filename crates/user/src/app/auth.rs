//! Authentication: bearer JWT or API key → [`Principal`], served from the in-process cache so
//! that a cached hit touches no database.

use std::sync::Arc;

use async_trait::async_trait;

use super::IdentityDeps;
use crate::domain::api_key::ApiKey;
use crate::domain::errors::IdentityError;
use crate::domain::limits::{LimitRule, Subject};
use crate::domain::ports::{CachedAuth, PrincipalKey};
use crate::domain::principal::{KeyGrant, Principal};
use crate::domain::session::TokenRejection;
use crate::domain::user::{User, UserId, UserStatus};

/// What the caller presented.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <jwt or sk-...>`.
    Bearer(&'a str),
    /// `x-api-key: sk-...`.
    ApiKey(&'a str),
}

/// Turns credentials into principals. The contract other contexts depend on.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates a caller.
    ///
    /// # Errors
    /// [`IdentityError::InvalidToken`] (also for disabled or deleted users),
    /// [`IdentityError::TokenExpired`], or infrastructure failures.
    async fn authenticate(
        &self,
        credential: Credential<'_>,
    ) -> Result<Arc<Principal>, IdentityError>;
}

/// The principal a user acts as in background work done for them (a knowledge base's ingestion
/// is metered to its owner, under the owner's own limits). Another contract of this context.
#[async_trait]
pub trait Principals: Send + Sync + 'static {
    /// The signed-in principal of `user`, with their limits; `None` for a disabled, deleted or
    /// unknown user.
    ///
    /// # Errors
    /// Storage failures.
    async fn of_user(&self, user: UserId) -> Result<Option<Arc<Principal>>, IdentityError>;
}

/// The API key prefix every key starts with.
pub const KEY_PREFIX: &str = "sk-";

/// Authentication use cases.
#[derive(Clone)]
pub struct AuthService {
    deps: IdentityDeps,
}

impl AuthService {
    /// The service over `deps`.
    #[must_use]
    pub fn new(deps: IdentityDeps) -> Self {
        Self { deps }
    }

    async fn user_rules(&self, user: &User) -> Result<Vec<LimitRule>, IdentityError> {
        let subject = Subject::User(user.id());
        let policy = self.deps.policies.get(subject).await?;
        Ok(policy.rules(subject, Some(&self.deps.config.defaults)))
    }

    async fn load_key(&self, key: ApiKey) -> Result<Option<Principal>, IdentityError> {
        let now = self.deps.clock.now();
        if !key.is_usable(now) {
            return Ok(None);
        }
        let Some(user) = self
            .deps
            .users
            .find(key.owner())
            .await?
            .filter(User::is_active)
        else {
            return Ok(None);
        };
        let mut rules = self.user_rules(&user).await?;
        let key_subject = Subject::Key(key.id());
        let mut key_policy = self.deps.policies.get(key_subject).await?;
        key_policy.requests_per_minute = key_policy
            .requests_per_minute
            .or(key.limits().requests_per_minute);
        key_policy.tokens_per_minute = key_policy
            .tokens_per_minute
            .or(key.limits().tokens_per_minute);
        rules.extend(key_policy.rules(key_subject, None));
        Ok(Some(Principal::with_key(
            user.id(),
            user.username().as_str().to_owned(),
            user.roles().clone(),
            KeyGrant {
                id: key.id(),
                prefix: key.prefix().to_owned(),
                scopes: key.scopes().clone(),
                allowed_models: key.allowed_models().clone(),
                expires_at: key.expires_at(),
                app: key.app(),
            },
            rules,
        )))
    }

    async fn by_key(&self, presented: &str) -> Result<Arc<Principal>, IdentityError> {
        // Anything that cannot be one of our keys is refused before any lookup.
        if !presented.starts_with(KEY_PREFIX) || presented.len() > 128 {
            return Err(IdentityError::InvalidToken);
        }
        let digest = self.deps.secrets.digest(presented);
        let cache_key = PrincipalKey::Key(digest);
        let outcome = match self.deps.cache.get(&cache_key) {
            Some(cached) => cached,
            None => {
                let loaded = match self.deps.keys.find_by_digest(digest).await? {
                    Some(key) => {
                        let owner = key.owner();
                        match self.load_key(key).await? {
                            Some(principal) => CachedAuth::Valid(Arc::new(principal)),
                            None => CachedAuth::Refused { owner: Some(owner) },
                        }
                    }
                    None => CachedAuth::Refused { owner: None },
                };
                self.deps.cache.put(cache_key, loaded.clone());
                loaded
            }
        };
        let CachedAuth::Valid(principal) = outcome else {
            return Err(IdentityError::InvalidToken);
        };
        let now = self.deps.clock.now();
        let Some(grant) = principal.key() else {
            return Err(IdentityError::InvalidToken);
        };
        if grant.expires_at.is_some_and(|at| at <= now) {
            return Err(IdentityError::InvalidToken);
        }
        self.deps.key_uses.record(grant.id, now);
        Ok(principal)
    }

    async fn by_jwt(&self, token: &str) -> Result<Arc<Principal>, IdentityError> {
        let claims = self
            .deps
            .tokens
            .verify(token)
            .map_err(|rejection| match rejection {
                TokenRejection::Expired => IdentityError::TokenExpired,
                TokenRejection::Invalid => IdentityError::InvalidToken,
            })?;
        // Cached per session: a logout, a password change or a disabled account drops the
        // entries (here and, over the invalidation bus, on every replica), so the session's
        // access tokens stop working at once rather than when they expire.
        let cache_key = PrincipalKey::Session(claims.session_id);
        let outcome = match self.deps.cache.get(&cache_key) {
            Some(cached) => cached,
            None => {
                let live = self
                    .deps
                    .refresh_tokens
                    .family_live(claims.session_id, self.deps.clock.now())
                    .await?;
                let loaded = if live {
                    self.load_user(claims.user_id).await?
                } else {
                    CachedAuth::Refused {
                        owner: Some(claims.user_id),
                    }
                };
                self.deps.cache.put(cache_key, loaded.clone());
                loaded
            }
        };
        // Deleted and disabled users are cached as refused: their tokens stop working.
        match outcome {
            CachedAuth::Valid(principal) => Ok(principal),
            CachedAuth::Refused { .. } => Err(IdentityError::InvalidToken),
        }
    }

    async fn load_user(&self, id: UserId) -> Result<CachedAuth, IdentityError> {
        let refused = CachedAuth::Refused { owner: Some(id) };
        let Some(user) = self.deps.users.find(id).await? else {
            return Ok(refused);
        };
        match user.status() {
            UserStatus::Deleted | UserStatus::Disabled => Ok(refused),
            UserStatus::Active => {
                let rules = self.user_rules(&user).await?;
                Ok(CachedAuth::Valid(Arc::new(Principal::signed_in(
                    user.id(),
                    user.username().as_str().to_owned(),
                    user.roles().clone(),
                    rules,
                ))))
            }
        }
    }
}

#[async_trait]
impl Authenticator for AuthService {
    async fn authenticate(
        &self,
        credential: Credential<'_>,
    ) -> Result<Arc<Principal>, IdentityError> {
        match credential {
            Credential::ApiKey(key) => self.by_key(key.trim()).await,
            Credential::Bearer(token) if token.trim().starts_with(KEY_PREFIX) => {
                self.by_key(token.trim()).await
            }
            Credential::Bearer(token) => self.by_jwt(token.trim()).await,
        }
    }
}

#[async_trait]
impl Principals for AuthService {
    async fn of_user(&self, user: UserId) -> Result<Option<Arc<Principal>>, IdentityError> {
        Ok(match self.load_user(user).await? {
            CachedAuth::Valid(principal) => Some(principal),
            CachedAuth::Refused { .. } => None,
        })
    }
}
