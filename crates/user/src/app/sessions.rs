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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::accounts::{AccountService, NewAccount};
    use crate::app::auth::{AuthService, Authenticator as _, Credential};
    use crate::app::fakes::{self, BusMessage, Handles};
    use crate::domain::ports::PrincipalKey;

    const PASSWORD: &str = "correct horse battery";

    async fn with_user() -> (SessionService, AuthService, Handles, UserId) {
        let (deps, handles) = fakes::deps();
        let user = AccountService::new(deps.clone())
            .register(NewAccount {
                username: "dora".to_owned(),
                email: Some("dora@example.test".to_owned()),
                password: PASSWORD.to_owned(),
                roles: Vec::new(),
            })
            .await
            .unwrap();
        (
            SessionService::new(deps.clone()),
            AuthService::new(deps),
            handles,
            user.id(),
        )
    }

    #[tokio::test]
    async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
        let (sessions, auth, handles, user) = with_user().await;
        let first = sessions
            .login("Dora", PASSWORD.to_owned(), Some("10.0.0.1"))
            .await
            .unwrap();
        assert_eq!(first.user_id, user);
        let family = sessions
            .deps
            .tokens
            .verify(&first.access.token)
            .unwrap()
            .session_id;

        // Rotation: the old token is spent, its successor belongs to the same session.
        let second = sessions.refresh(&first.refresh_token).await.unwrap();
        assert_eq!(second.user_id, user);
        assert_ne!(second.refresh_token, first.refresh_token);
        let claims = sessions.deps.tokens.verify(&second.access.token).unwrap();
        assert_eq!((claims.user_id, claims.session_id), (user, family));
        assert_eq!(handles.refresh_tokens.in_family(family), 2);
        assert_eq!(handles.refresh_tokens.revoked_in_family(family), 0);
        let principal = auth
            .authenticate(Credential::Bearer(&second.access.token))
            .await
            .unwrap();
        assert_eq!(principal.user_id(), user);
        assert!(handles.cache.contains(&PrincipalKey::Session(family)));
        assert_eq!(handles.bus.take(), []);

        // The spent token again: reuse. The whole family is revoked and the session ends
        // everywhere: its cache entry here, a broadcast for the other replicas.
        let reused = sessions.refresh(&first.refresh_token).await.unwrap_err();
        assert!(matches!(reused, IdentityError::RefreshReused), "{reused:?}");
        assert_eq!(handles.refresh_tokens.revoked_in_family(family), 2);
        assert_eq!(handles.bus.take(), [BusMessage::UserChanged(user)]);
        assert!(!handles.cache.contains(&PrincipalKey::Session(family)));

        // The successor and the session's access tokens no longer work.
        let successor = sessions.refresh(&second.refresh_token).await.unwrap_err();
        assert!(
            matches!(successor, IdentityError::InvalidToken),
            "{successor:?}"
        );
        let access = auth
            .authenticate(Credential::Bearer(&second.access.token))
            .await
            .unwrap_err();
        assert!(matches!(access, IdentityError::InvalidToken), "{access:?}");
        let old_access = auth
            .authenticate(Credential::Bearer(&first.access.token))
            .await
            .unwrap_err();
        assert!(
            matches!(old_access, IdentityError::InvalidToken),
            "{old_access:?}"
        );
        assert_eq!(handles.refresh_tokens.in_family(family), 2);
        assert_eq!(handles.bus.take(), []);

        // Presented once more, it is still reuse (and is broadcast again).
        let again = sessions.refresh(&first.refresh_token).await.unwrap_err();
        assert!(matches!(again, IdentityError::RefreshReused), "{again:?}");
        assert_eq!(handles.bus.take(), [BusMessage::UserChanged(user)]);

        // A new login starts a new, working session.
        let fresh = sessions
            .login("dora", PASSWORD.to_owned(), Some("10.0.0.1"))
            .await
            .unwrap();
        let next = sessions.refresh(&fresh.refresh_token).await.unwrap();
        assert_eq!(next.user_id, user);
    }

    #[tokio::test]
    async fn an_unknown_refresh_token_is_invalid_and_revokes_nothing() {
        let (sessions, _auth, handles, _user) = with_user().await;
        let login = sessions
            .login("dora", PASSWORD.to_owned(), None)
            .await
            .unwrap();
        let err = sessions.refresh("rt-not-ours").await.unwrap_err();
        assert!(matches!(err, IdentityError::InvalidToken), "{err:?}");
        assert_eq!(handles.bus.take(), []);
        sessions.refresh(&login.refresh_token).await.unwrap();
    }

    #[tokio::test]
    async fn login_attempts_are_throttled_per_name_and_address() {
        let (sessions, _auth, _handles, user) = with_user().await;
        for _ in 0..5 {
            let err = sessions
                .login("dora", "wrong password!".to_owned(), Some("10.0.0.2"))
                .await
                .unwrap_err();
            assert!(matches!(err, IdentityError::InvalidCredentials), "{err:?}");
        }
        let throttled = sessions
            .login("dora", PASSWORD.to_owned(), Some("10.0.0.2"))
            .await
            .unwrap_err();
        assert!(
            matches!(throttled, IdentityError::LoginThrottled(wait) if wait == StdDuration::from_secs(60)),
            "{throttled:?}"
        );
        let elsewhere = sessions
            .login("dora", PASSWORD.to_owned(), Some("10.0.0.3"))
            .await
            .unwrap();
        assert_eq!(elsewhere.user_id, user);
    }
}
