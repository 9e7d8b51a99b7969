//! Argon2id password hashing, HS256 access tokens and keyed digests of secrets.

use std::sync::OnceLock;

use anyhow::Context as _;
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{
    PasswordHash as PhcHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng as _;
use rand::distributions::Alphanumeric;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::api_key::{MintedSecret, SecretDigest};
use crate::domain::errors::IdentityError;
use crate::domain::ports::{PasswordHasher, Secrets, TokenCodec};
use crate::domain::session::{AccessClaims, IssuedToken, TokenRejection};
use crate::domain::user::UserId;
use crate::domain::values::{Password, PasswordHash};

/// Argon2id with the crate's defaults: the OWASP parameters (19 MiB, t=2, p=1).
#[derive(Debug, Default)]
pub struct Argon2Hasher;

/// Runs CPU-heavy work on the blocking pool, inside the caller's span.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, IdentityError> {
    let span = tracing::Span::current();
    Ok(tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .context("password hashing task")?)
}

/// A hash of a random password, verified against when the user is unknown so that both paths
/// cost the same.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(Uuid::now_v7().to_string().as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, IdentityError> {
        let password = SecretString::from(password.expose().to_owned());
        let phc = blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
        Ok(PasswordHash::from_phc(phc))
    }

    async fn verify(
        &self,
        password: &Password,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, IdentityError> {
        let password = SecretString::from(password.expose().to_owned());
        let (phc, known) = match hash {
            Some(hash) => (hash.as_str().to_owned(), true),
            None => (decoy_hash().to_owned(), false),
        };
        let matches = blocking(move || {
            PhcHash::new(&phc)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.expose_secret().as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await?;
        Ok(matches && known)
    }
}

const AUDIENCE: &str = "maas-api";
const ISSUER: &str = "maas";
const ACCESS: &str = "access";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    aud: String,
    iss: String,
    jti: String,
    typ: String,
}

/// HS256 access tokens. Only HS256 is accepted; `exp`, `nbf`, `aud`, `iss`, `sub` are required
/// and checked, and the `typ` claim must say `access`.
pub struct JwtCodec {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl JwtCodec {
    /// A codec signing with `secret`, issuing tokens valid for `ttl`.
    #[must_use]
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl,
        }
    }
}

impl TokenCodec for JwtCodec {
    fn issue(
        &self,
        user_id: UserId,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, IdentityError> {
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            aud: AUDIENCE.to_owned(),
            iss: ISSUER.to_owned(),
            jti: Uuid::now_v7().to_string(),
            typ: ACCESS.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing a JWT")?;
        Ok(IssuedToken { token, expires_at })
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                if matches!(e.kind(), JwtErrorKind::ExpiredSignature) {
                    TokenRejection::Expired
                } else {
                    TokenRejection::Invalid
                }
            })?;
        let claims = data.claims;
        if claims.typ != ACCESS {
            return Err(TokenRejection::Invalid);
        }
        let user_id = claims
            .sub
            .parse::<UserId>()
            .map_err(|_| TokenRejection::Invalid)?;
        let session_id = Uuid::parse_str(&claims.sid).map_err(|_| TokenRejection::Invalid)?;
        let expires_at = Utc
            .timestamp_opt(claims.exp, 0)
            .single()
            .ok_or(TokenRejection::Invalid)?;
        Ok(AccessClaims {
            user_id,
            session_id,
            expires_at,
        })
    }
}

/// Secrets from the OS RNG; digests are HMAC-SHA-256 under a key derived from the platform's
/// encryption key, so a leaked table of digests cannot be brute-forced offline.
pub struct HmacSecrets {
    key: SecretBox<[u8; 32]>,
}

type HmacSha256 = Hmac<Sha256>;

impl HmacSecrets {
    /// Derives the digest key from the 32-byte platform key.
    ///
    /// # Errors
    /// Only if HMAC rejects the key, which it never does for 32 bytes.
    pub fn new(platform_key: &[u8; 32]) -> anyhow::Result<Self> {
        let mut mac = HmacSha256::new_from_slice(platform_key).context("digest key")?;
        mac.update(b"maas secret digest v1");
        let derived: [u8; 32] = mac.finalize().into_bytes().into();
        Ok(Self {
            key: SecretBox::new(Box::new(derived)),
        })
    }

    fn random(len: usize) -> String {
        OsRng
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect()
    }
}

impl Secrets for HmacSecrets {
    fn mint_api_key(&self) -> MintedSecret {
        let prefix = format!("sk-{}", Self::random(8));
        let plaintext = format!("{prefix}{}", Self::random(32));
        let digest = self.digest(&plaintext);
        MintedSecret {
            plaintext,
            prefix,
            digest,
        }
    }

    fn mint_refresh_token(&self) -> MintedSecret {
        let plaintext = Self::random(43);
        let digest = self.digest(&plaintext);
        MintedSecret {
            prefix: String::new(),
            plaintext,
            digest,
        }
    }

    fn digest(&self, presented: &str) -> SecretDigest {
        // new_from_slice cannot fail for HMAC; fall back to an all-zero digest that matches nothing stored.
        let Ok(mut mac) = HmacSha256::new_from_slice(self.key.expose_secret()) else {
            return SecretDigest([0; 32]);
        };
        mac.update(presented.as_bytes());
        SecretDigest(mac.finalize().into_bytes().into())
    }

    fn generate_password(&self) -> String {
        Self::random(24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> JwtCodec {
        JwtCodec::new(&SecretString::from("k".repeat(40)), Duration::minutes(15))
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_session() {
        let codec = codec();
        let (user, session) = (UserId::new(), Uuid::now_v7());
        let issued = codec
            .issue(
                user,
                session,
                maas_shared::clock::Clock::now(&maas_shared::clock::SystemClock),
            )
            .unwrap();
        let claims = codec.verify(&issued.token).unwrap();
        assert_eq!((claims.user_id, claims.session_id), (user, session));
    }

    #[test]
    fn tokens_from_another_key_or_expired_are_refused() {
        let other = JwtCodec::new(&SecretString::from("x".repeat(40)), Duration::minutes(15));
        let token = other
            .issue(
                UserId::new(),
                Uuid::now_v7(),
                maas_shared::clock::Clock::now(&maas_shared::clock::SystemClock),
            )
            .unwrap()
            .token;
        assert_eq!(codec().verify(&token), Err(TokenRejection::Invalid));
        let old = codec()
            .issue(
                UserId::new(),
                Uuid::now_v7(),
                maas_shared::clock::Clock::now(&maas_shared::clock::SystemClock)
                    - Duration::hours(1),
            )
            .unwrap()
            .token;
        assert_eq!(codec().verify(&old), Err(TokenRejection::Expired));
    }

    #[test]
    fn api_keys_have_the_documented_shape_and_digest_stably() {
        let secrets = HmacSecrets::new(&[3; 32]).unwrap();
        let key = secrets.mint_api_key();
        assert!(key.plaintext.starts_with(&key.prefix));
        assert_eq!(key.prefix.len(), 11);
        assert_eq!(key.plaintext.len(), 43);
        assert_eq!(secrets.digest(&key.plaintext), key.digest);
        assert_ne!(secrets.mint_api_key().digest, key.digest);
    }
}
