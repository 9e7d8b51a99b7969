//! Join tokens and node credentials: random, stored as HMAC-SHA-256 digests under a key
//! derived from the platform key (a leaked table cannot be brute-forced offline).

use hmac::{Hmac, Mac};
use rand::Rng as _;
use rand::distributions::Alphanumeric;
use sha2::Sha256;

use crate::domain::ports::{Digest, Minted, NodeSecrets};

type HmacSha256 = Hmac<Sha256>;

/// [`NodeSecrets`] over the platform key.
pub struct HmacNodeSecrets {
    key: [u8; 32],
}

impl HmacNodeSecrets {
    /// Derives the digest key from the 32-byte platform key.
    #[must_use]
    pub fn new(platform_key: &[u8; 32]) -> Self {
        let key = match HmacSha256::new_from_slice(platform_key) {
            Ok(mut mac) => {
                mac.update(b"maas node secret digest v1");
                mac.finalize().into_bytes().into()
            }
            // HMAC takes keys of any length; this arm never runs.
            Err(_) => [0; 32],
        };
        Self { key }
    }

    fn mint(&self, prefix: &str) -> Minted {
        let random: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(43)
            .map(char::from)
            .collect();
        let plaintext = format!("{prefix}{random}");
        let digest = self.digest(&plaintext);
        Minted { plaintext, digest }
    }
}

impl NodeSecrets for HmacNodeSecrets {
    fn mint_join_token(&self) -> Minted {
        self.mint("mjt_")
    }

    fn mint_credential(&self) -> Minted {
        self.mint("mnc_")
    }

    fn digest(&self, presented: &str) -> Digest {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return Digest([0; 32]);
        };
        mac.update(presented.as_bytes());
        Digest(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_their_digests_stable() {
        let secrets = HmacNodeSecrets::new(&[7; 32]);
        let a = secrets.mint_credential();
        let b = secrets.mint_credential();
        assert!(a.plaintext.starts_with("mnc_") && a.plaintext.len() == 47);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(secrets.digest(&a.plaintext), a.digest);
        assert_ne!(
            HmacNodeSecrets::new(&[8; 32]).digest(&a.plaintext),
            a.digest
        );
    }
}
