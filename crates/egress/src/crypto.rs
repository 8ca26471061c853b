//! Endpoint secrets at rest: ChaCha20-Poly1305 (ring) under a 32-byte key from config, a fresh
//! random nonce per secret, and the endpoint id as associated data, so a ciphertext copied onto
//! another endpoint's record does not decrypt.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

pub struct SecretBox {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

/// A key or a sealed secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("not base64: {0}")]
    NotBase64(String),
    #[error("must be 32 bytes, is {0}")]
    KeyLength(usize),
    #[error("unusable key")]
    UnusableKey,
    #[error("secret ciphertext too short")]
    TooShort,
    #[error("bad nonce")]
    BadNonce,
    #[error("secret does not decrypt (wrong egress.encryption_key, or a tampered record)")]
    NoDecrypt,
}

impl SecretBox {
    /// The key as configured: 32 bytes, base64.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        Self::from_key(&Self::key_bytes(text)?)
    }

    /// The box of a key's 32 bytes ([`SecretBox::key_bytes`]).
    pub fn from_key(bytes: &[u8]) -> Result<Self, SecretError> {
        let key =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| SecretError::UnusableKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// The 32 bytes of a key as configured (base64).
    pub fn key_bytes(text: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| SecretError::NotBase64(e.to_string()))?;
        if bytes.len() != 32 {
            return Err(SecretError::KeyLength(bytes.len()));
        }
        Ok(bytes)
    }

    /// `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, owner: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .expect("the system random generator works");
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut sealed,
            )
            .expect("a secret fits ChaCha20-Poly1305");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, owner: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::TooShort);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::BadNonce)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buffer)
            .map_err(|_| SecretError::NoDecrypt)?;
        Ok(plain.to_vec())
    }

    /// 32 random bytes: a new signing key.
    pub fn random_key(&self) -> Vec<u8> {
        let mut key = vec![0u8; 32];
        self.random
            .fill(&mut key)
            .expect("the system random generator works");
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_owner() {
        let key = STANDARD.encode([7u8; 32]);
        let sealed_box = SecretBox::from_base64(&key).unwrap();
        let sealed = sealed_box.seal("ep_1", b"whsec_abc");
        assert!(!sealed.windows(9).any(|w| w == b"whsec_abc"));
        assert_eq!(sealed_box.open("ep_1", &sealed).unwrap(), b"whsec_abc");
        assert!(sealed_box.open("ep_2", &sealed).is_err());
        let other = SecretBox::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open("ep_1", &sealed).is_err());
        assert!(
            SecretBox::from_base64("c2hvcnQ=")
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }
}
