//! The outbound signer: Standard Webhooks signatures for deliveries to subscribers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::core;
use crate::error::KeyError;

/// A Standard Webhooks signing secret (`whsec_<base64 of the key>`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// A secret from raw key bytes (24 to 64 random bytes are usual).
    pub fn from_key(key: Vec<u8>) -> Self {
        Self(key)
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let encoded =
            text.strip_prefix("whsec_")
                .ok_or_else(|| KeyError::BadStandardWebhooksSecret {
                    index: 0,
                    reason: "does not start with whsec_".into(),
                })?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| KeyError::BadStandardWebhooksSecret {
                index: 0,
                reason: e.to_string(),
            })?;
        if key.is_empty() {
            return Err(KeyError::Empty { index: 0 });
        }
        Ok(Self(key))
    }

    /// The raw key bytes.
    pub fn key(&self) -> &[u8] {
        &self.0
    }

    /// The `whsec_<base64>` form subscribers configure.
    pub fn expose(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.0))
    }
}

/// The `webhook-signature` header value for one delivery attempt: one `v1,<base64>` entry per
/// active secret, space separated.
pub fn sign_standard_webhooks(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let timestamp = timestamp.to_string();
    let mut header = String::new();
    for secret in secrets {
        let signature = core::sha256(
            &secret.0,
            &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
        );
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        header.push_str(&STANDARD.encode(signature));
    }
    header
}
