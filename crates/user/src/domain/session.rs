//! Login sessions: short-lived access tokens and rotating refresh tokens grouped in families.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::api_key::SecretDigest;
use super::user::UserId;

/// A stored refresh token (only its digest is kept).
#[derive(Clone, Debug)]
pub struct RefreshToken {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: UserId,
    /// The login this token descends from; reuse revokes the whole family.
    pub family_id: Uuid,
    /// SHA-256 keyed digest of the token.
    pub digest: SecretDigest,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Issued.
    pub created_at: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Clone, Debug)]
pub enum Consumed {
    /// It was valid and is now spent: issue its successor.
    Fresh(RefreshToken),
    /// It had been spent before: a copy is in someone else's hands.
    Reused {
        /// Owner.
        user_id: UserId,
        /// Family to revoke.
        family_id: Uuid,
    },
    /// Unknown, expired or revoked.
    Rejected,
}

/// Claims of a verified access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessClaims {
    /// The user.
    pub user_id: UserId,
    /// The session family.
    pub session_id: Uuid,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// Why an access token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRejection {
    /// Past `exp`.
    Expired,
    /// Anything else: bad signature, algorithm, audience, type, shape.
    Invalid,
}

/// A signed access token.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
}
