//! Encryption of stored credentials (upstream API keys, server passwords): XChaCha20-Poly1305
//! under the platform key (`crypto.encryption_key`). A sealed value is `nonce (24 bytes) ||
//! ciphertext+tag`; a random nonce per value, so equal secrets never look alike.

use std::fmt;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;

/// Seals and opens secrets with the platform key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A sealed value could not be opened: wrong key or tampered bytes.
#[derive(Debug, thiserror::Error)]
#[error("stored secret cannot be decrypted (wrong encryption key or corrupt data)")]
pub struct OpenError;

impl Sealer {
    /// A sealer with the 32-byte platform key.
    #[must_use]
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// Encrypts `plaintext`.
    #[must_use]
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption into a Vec only fails on absurd lengths (> 256 GiB).
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a value made by [`Sealer::seal`].
    ///
    /// # Errors
    /// [`OpenError`] for a wrong key or altered bytes.
    pub fn open(&self, sealed: &[u8]) -> Result<String, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_never_repeat() {
        let sealer = Sealer::new(&[1; 32]);
        let a = sealer.seal("sk-upstream");
        let b = sealer.seal("sk-upstream");
        assert_ne!(a, b);
        assert!(!a.windows(11).any(|w| w == b"sk-upstream"));
        assert_eq!(sealer.open(&a).unwrap(), "sk-upstream");
        assert!(Sealer::new(&[2; 32]).open(&a).is_err());
        let mut tampered = a.clone();
        tampered[30] ^= 1;
        assert!(sealer.open(&tampered).is_err());
        assert!(sealer.open(&[0; 5]).is_err());
    }
}
