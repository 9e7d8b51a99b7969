//! Login sessions: password login, refresh-token rotation with reuse detection, logout.

use std::time::Duration as StdDuration;

use uuid::Uuid;

use super::IdentityDeps;
use crate::domain::errors::IdentityError;
use crate::domain::session::{Consumed, IssuedToken, RefreshToken};
use crate::domain::user::{User, UserId};
use crate::domain::values::Password;

/// What a successful login or refresh returns.
#[derive(Debug)]
pub struct SessionTokens {
    /// Short-lived JWT for `Authorization: Bearer`.
    pub access: IssuedToken,
    /// Opaque, single-use refresh token (shown once).
    pub refresh_token: String,
    /// When the refresh token expires.
    pub refresh_expires_at: chrono::DateTime<chrono::Utc>,
    /// Who logged in.
    pub user_id: UserId,
}

/// Session use cases.
#[derive(Clone)]
pub struct SessionService {
    deps: IdentityDeps,
}

impl SessionService {
    /// The service over `deps`.
    #[must_use]
    pub fn new(deps: IdentityDeps) -> Self {
        Self { deps }
    }

    /// Logs in by username or e-mail. Unknown users and wrong passwords get the same error after
    /// the same work; attempts are limited per login name and client address.
    ///
    /// # Errors
    /// [`IdentityError::LoginThrottled`], [`IdentityError::InvalidCredentials`],
    /// [`IdentityError::AccountDisabled`].
    pub async fn login(
        &self,
        login: &str,
        password: String,
        client_ip: Option<&str>,
    ) -> Result<SessionTokens, IdentityError> {
        let login = login.trim().to_ascii_lowercase();
        let throttle = format!("login:{login}:{}", client_ip.unwrap_or("-"));
        if let Some(wait) = self
            .deps
            .limits
            .hit(
                &throttle,
                self.deps.config.login_attempts_per_minute,
                StdDuration::from_secs(60),
            )
            .await?
        {
            return Err(IdentityError::LoginThrottled(wait));
        }
        let user = self.deps.users.find_by_login(&login).await?;
        let offered = Password::offered(password);
        let matches = self
            .deps
            .hasher
            .verify(&offered, user.as_ref().map(User::password_hash))
            .await?;
        let mut user = match user {
            Some(user) if matches => user,
            _ => return Err(IdentityError::InvalidCredentials),
        };
        if !user.is_active() {
            return Err(IdentityError::AccountDisabled);
        }
        let now = self.deps.clock.now();
        user.logged_in(now);
        self.deps.users.update(&user).await?;
        self.issue(user.id(), Uuid::now_v7()).await
    }

    /// Trades a refresh token for a new pair. A token presented twice revokes its whole family
    /// (the legitimate holder and the thief both have to log in again).
    ///
    /// # Errors
    /// [`IdentityError::RefreshReused`], [`IdentityError::InvalidToken`],
    /// [`IdentityError::AccountDisabled`].
    pub async fn refresh(&self, refresh_token: &str) -> Result<SessionTokens, IdentityError> {
        let digest = self.deps.secrets.digest(refresh_token);
        let now = self.deps.clock.now();
        match self.deps.refresh_tokens.consume(digest, now).await? {
            Consumed::Fresh(spent) => {
                let user = self
                    .deps
                    .users
                    .find(spent.user_id)
                    .await?
                    .ok_or(IdentityError::InvalidToken)?;
                if !user.is_active() {
                    self.deps
                        .refresh_tokens
                        .revoke_family(spent.family_id, now)
                        .await?;
                    return Err(IdentityError::AccountDisabled);
                }
                self.issue(user.id(), spent.family_id).await
            }
            Consumed::Reused { user_id, family_id } => {
                self.deps
                    .refresh_tokens
                    .revoke_family(family_id, now)
                    .await?;
                self.deps.user_changed(user_id).await?;
                tracing::warn!(user.id = %user_id, session = %family_id, "refresh token reuse: session family revoked");
                Err(IdentityError::RefreshReused)
            }
            Consumed::Rejected => Err(IdentityError::InvalidToken),
        }
    }

    /// Ends the session a refresh token belongs to (idempotent; unknown tokens are ignored).
    ///
    /// # Errors
    /// Storage failures only.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), IdentityError> {
        let digest = self.deps.secrets.digest(refresh_token);
        if let Some((user_id, family)) = self.deps.refresh_tokens.family_of(digest).await? {
            self.deps
                .refresh_tokens
                .revoke_family(family, self.deps.clock.now())
                .await?;
            // The session's access tokens end with it, on every replica.
            self.deps.user_changed(user_id).await?;
        }
        Ok(())
    }

    async fn issue(
        &self,
        user_id: UserId,
        family_id: Uuid,
    ) -> Result<SessionTokens, IdentityError> {
        let now = self.deps.clock.now();
        let minted = self.deps.secrets.mint_refresh_token();
        let expires_at = now + self.deps.config.refresh_ttl;
        self.deps
            .refresh_tokens
            .insert(&RefreshToken {
                id: Uuid::now_v7(),
                user_id,
                family_id,
                digest: minted.digest,
                expires_at,
                created_at: now,
            })
            .await?;
        let access = self.deps.tokens.issue(user_id, family_id, now)?;
        Ok(SessionTokens {
            access,
            refresh_token: minted.plaintext,
            refresh_expires_at: expires_at,
            user_id,
        })
    }
}
