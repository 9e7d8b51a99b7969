//! [`PgRefreshTokenRepository`]: table `refresh_tokens`.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Value};
use uuid::Uuid;

use super::{digest_from_bytes, digest_value, statement};
use crate::domain::api_key::SecretDigest;
use crate::domain::errors::IdentityError;
use crate::domain::ports::RefreshTokenRepository;
use crate::domain::session::{Consumed, RefreshToken};
use crate::domain::user::UserId;

/// Stores refresh tokens (their digests only) in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgRefreshTokenRepository {
    db: DatabaseConnection,
}

impl PgRefreshTokenRepository {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct TokenRow {
    id: Uuid,
    user_id: Uuid,
    family_id: Uuid,
    token_digest: Vec<u8>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl TokenRow {
    fn into_token(self) -> anyhow::Result<RefreshToken> {
        Ok(RefreshToken {
            id: self.id,
            user_id: UserId::from_uuid(self.user_id),
            family_id: self.family_id,
            digest: digest_from_bytes(&self.token_digest)?,
            expires_at: self.expires_at,
            created_at: self.created_at,
        })
    }
}

#[derive(Debug, FromQueryResult)]
struct LiveRow {
    live: bool,
}

#[derive(Debug, FromQueryResult)]
struct FamilyRow {
    user_id: Uuid,
    family_id: Uuid,
    used_at: Option<DateTime<Utc>>,
}

#[async_trait]
impl RefreshTokenRepository for PgRefreshTokenRepository {
    #[tracing::instrument(skip_all)]
    async fn insert(&self, token: &RefreshToken) -> Result<(), IdentityError> {
        self.db
            .execute(statement(
                "INSERT INTO refresh_tokens (id, user_id, family_id, token_digest, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    Value::from(token.id),
                    Value::from(token.user_id.as_uuid()),
                    Value::from(token.family_id),
                    digest_value(token.digest),
                    Value::from(token.expires_at),
                    Value::from(token.created_at),
                ],
            ))
            .await
            .context("inserting refresh token")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn consume(
        &self,
        digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Consumed, IdentityError> {
        // One conditional UPDATE: of two concurrent uses, the second waits for the first's row
        // lock, re-checks `used_at IS NULL`, updates nothing and is reported as reuse below.
        let spent = TokenRow::find_by_statement(statement(
            "UPDATE refresh_tokens SET used_at = $2 \
             WHERE token_digest = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
             RETURNING id, user_id, family_id, token_digest, expires_at, created_at",
            [digest_value(digest), Value::from(now)],
        ))
        .one(&self.db)
        .await
        .context("consuming refresh token")?;
        if let Some(row) = spent {
            return Ok(Consumed::Fresh(row.into_token()?));
        }
        let known = FamilyRow::find_by_statement(statement(
            "SELECT user_id, family_id, used_at FROM refresh_tokens WHERE token_digest = $1",
            [digest_value(digest)],
        ))
        .one(&self.db)
        .await
        .context("looking up refresh token")?;
        // A spent token presented again is reuse even if its family was revoked since: the
        // caller revokes the family (again) and refuses.
        Ok(match known {
            Some(row) if row.used_at.is_some() => Consumed::Reused {
                user_id: UserId::from_uuid(row.user_id),
                family_id: row.family_id,
            },
            Some(_) | None => Consumed::Rejected,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_family(
        &self,
        family_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        self.db
            .execute(statement(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                [Value::from(family_id), Value::from(now)],
            ))
            .await
            .context("revoking refresh token family")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_user(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), IdentityError> {
        self.db
            .execute(statement(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
                [Value::from(user_id.as_uuid()), Value::from(now)],
            ))
            .await
            .context("revoking refresh tokens of user")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn family_live(
        &self,
        family_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, IdentityError> {
        let row = LiveRow::find_by_statement(statement(
            "SELECT EXISTS (SELECT 1 FROM refresh_tokens \
             WHERE family_id = $1 AND revoked_at IS NULL AND expires_at > $2) AS live",
            [Value::from(family_id), Value::from(now)],
        ))
        .one(&self.db)
        .await
        .context("checking a session")?;
        Ok(row.is_some_and(|r| r.live))
    }

    #[tracing::instrument(skip_all)]
    async fn family_of(
        &self,
        digest: SecretDigest,
    ) -> Result<Option<(UserId, Uuid)>, IdentityError> {
        let row = FamilyRow::find_by_statement(statement(
            "SELECT user_id, family_id, used_at FROM refresh_tokens WHERE token_digest = $1",
            [digest_value(digest)],
        ))
        .one(&self.db)
        .await
        .context("finding refresh token family")?;
        Ok(row.map(|r| (UserId::from_uuid(r.user_id), r.family_id)))
    }
}
