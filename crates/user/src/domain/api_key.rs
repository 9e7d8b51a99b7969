//! The `ApiKey` aggregate: a secret shown once, stored only as a keyed hash.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};

use super::errors::InvalidValue;
use super::user::UserId;
use super::values::Scope;

maas_shared::define_id!(
    /// Identifies an API key.
    ApiKeyId
);

/// A keyed hash (HMAC-SHA-256) of a secret: what is stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest(pub [u8; 32]);

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// A freshly minted secret: the plain text goes to the caller once, the rest is stored.
pub struct MintedSecret {
    /// The plain secret (shown once, never stored, never logged).
    pub plaintext: String,
    /// The public, identifying part (`sk-AbC12345`).
    pub prefix: String,
    /// What is stored.
    pub digest: SecretDigest,
}

impl fmt::Debug for MintedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedSecret")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A key's human label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    /// 1–64 printable characters.
    ///
    /// # Errors
    /// [`InvalidValue`] naming `name`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim();
        if (1..=64).contains(&value.chars().count()) && !value.chars().any(char::is_control) {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidValue::new("name", "1 to 64 printable characters"))
        }
    }

    /// The label.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Rate limits of one key (on top of its owner's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u64>,
}

/// What a new key is for: its validated label, scopes, models, limits and expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Label.
    pub name: KeyName,
    /// What it may be used for.
    pub scopes: BTreeSet<Scope>,
    /// Models it may call; empty means every model the owner may use.
    pub allowed_models: BTreeSet<String>,
    /// Its own rate limits.
    pub limits: KeyLimits,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// The app it is bound to: an app key calls that app's endpoint and nothing else.
    pub app: Option<uuid::Uuid>,
}

/// An API key as stored, for repositories to hand back ([`ApiKey::restore`]).
#[derive(Clone, Debug)]
pub struct StoredApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Owner.
    pub owner: UserId,
    /// Label, scopes, models, limits, expiry.
    pub spec: KeySpec,
    /// Public identifying part of the secret.
    pub prefix: String,
    /// Keyed hash of the secret.
    pub digest: SecretDigest,
    /// Last use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An API key of a user.
#[derive(Clone, Debug)]
pub struct ApiKey {
    id: ApiKeyId,
    owner: UserId,
    spec: KeySpec,
    prefix: String,
    digest: SecretDigest,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl ApiKey {
    /// A new key of `owner` holding `secret`.
    #[must_use]
    pub fn issue(owner: UserId, spec: KeySpec, secret: &MintedSecret, now: DateTime<Utc>) -> Self {
        Self {
            id: ApiKeyId::new(),
            owner,
            spec,
            prefix: secret.prefix.clone(),
            digest: secret.digest,
            last_used_at: None,
            revoked_at: None,
            created_at: now,
        }
    }

    /// A key as stored (repositories only).
    #[must_use]
    pub fn restore(stored: StoredApiKey) -> Self {
        let StoredApiKey {
            id,
            owner,
            spec,
            prefix,
            digest,
            last_used_at,
            revoked_at,
            created_at,
        } = stored;
        Self {
            id,
            owner,
            spec,
            prefix,
            digest,
            last_used_at,
            revoked_at,
            created_at,
        }
    }

    /// The app an app key is bound to (`None` for ordinary keys).
    #[must_use]
    pub fn app(&self) -> Option<uuid::Uuid> {
        self.spec.app
    }

    /// Id.
    #[must_use]
    pub fn id(&self) -> ApiKeyId {
        self.id
    }

    /// Owner.
    #[must_use]
    pub fn owner(&self) -> UserId {
        self.owner
    }

    /// Label.
    #[must_use]
    pub fn name(&self) -> &KeyName {
        &self.spec.name
    }

    /// Public identifying part of the secret.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Keyed hash of the secret.
    #[must_use]
    pub fn digest(&self) -> SecretDigest {
        self.digest
    }

    /// What it may be used for.
    #[must_use]
    pub fn scopes(&self) -> &BTreeSet<Scope> {
        &self.spec.scopes
    }

    /// Models it may call; empty means every model the owner may use.
    #[must_use]
    pub fn allowed_models(&self) -> &BTreeSet<String> {
        &self.spec.allowed_models
    }

    /// Its own rate limits.
    #[must_use]
    pub fn limits(&self) -> KeyLimits {
        self.spec.limits
    }

    /// When it stops working.
    #[must_use]
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.spec.expires_at
    }

    /// Last use (updated in batches, so up to a few seconds behind).
    #[must_use]
    pub fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.last_used_at
    }

    /// When it was revoked.
    #[must_use]
    pub fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.revoked_at
    }

    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// Whether it authenticates at `now`.
    #[must_use]
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at().is_none_or(|at| at > now)
    }

    /// Revokes it (idempotent).
    pub fn revoke(&mut self, now: DateTime<Utc>) {
        self.revoked_at.get_or_insert(now);
    }

    /// Notes a use at `at` (the latest use wins).
    pub fn mark_used(&mut self, at: DateTime<Utc>) {
        self.last_used_at = Some(self.last_used_at.map_or(at, |seen| seen.max(at)));
    }

    /// Replaces the secret; the old one stops working.
    pub fn rotate(&mut self, secret: &MintedSecret) {
        self.prefix.clone_from(&secret.prefix);
        self.digest = secret.digest;
    }
}
