//! The verifier of one source: its scheme, its active secrets and its clock tolerance.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use crate::core::{Ctx, Verified};
use crate::error::{KeyError, VerifyError};
use crate::hmac_scheme::{Extract, HmacScheme};
use crate::schemes;

/// A signature scheme hookbus verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Standard Webhooks (also accepts Svix's `svix-*` header names).
    StandardWebhooks,
    Github,
    Stripe,
    Shopify,
    Slack,
    /// Any HMAC sender, described by configuration.
    Hmac(HmacScheme),
    /// No verification at all; type and id still come from `Extract`.
    None(Extract),
}

impl Scheme {
    /// The provider name recorded on events (`Event.provider`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
            Self::Hmac(_) => "hmac",
            Self::None(_) => "none",
        }
    }

    /// Headers that carry signature material; the ingress drops them from stored events.
    pub fn signature_headers(&self) -> Vec<&str> {
        match self {
            Self::StandardWebhooks => vec!["webhook-signature", "svix-signature"],
            Self::Github => vec!["x-hub-signature-256", "x-hub-signature"],
            Self::Stripe => vec!["stripe-signature"],
            Self::Shopify => vec!["x-shopify-hmac-sha256"],
            Self::Slack => vec!["x-slack-signature"],
            Self::Hmac(scheme) => vec![scheme.header.as_str()],
            Self::None(_) => vec![],
        }
    }
}

/// Verifies requests of one source.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<Vec<u8>>,
    tolerance: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &format_args!("[{} secrets]", self.keys.len()))
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    /// A verifier with the given active secrets (several during a rotation) and tolerance in
    /// seconds, applied in both directions to schemes with a signed timestamp.
    pub fn new<S: AsRef<str>>(
        scheme: Scheme,
        secrets: &[S],
        tolerance: u64,
    ) -> Result<Self, KeyError> {
        if secrets.is_empty() && !matches!(scheme, Scheme::None(_)) {
            return Err(KeyError::NoSecrets(scheme.name()));
        }
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| key_bytes(&scheme, index, secret.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scheme,
            keys,
            tolerance,
        })
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Verifies a request at `now` (unix seconds) and reads its type and delivery id.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let ctx = Ctx {
            headers,
            body,
            now,
            keys: &self.keys,
            tolerance: self.tolerance,
        };
        match &self.scheme {
            Scheme::StandardWebhooks => schemes::standard_webhooks(&ctx),
            Scheme::Github => schemes::github(&ctx),
            Scheme::Stripe => schemes::stripe(&ctx),
            Scheme::Shopify => schemes::shopify(&ctx),
            Scheme::Slack => schemes::slack(&ctx),
            Scheme::Hmac(scheme) => scheme.verify(&ctx),
            Scheme::None(extract) => extract.read(&ctx),
        }
    }
}

/// The key of a secret that is known to be valid for its scheme (signers, tests).
pub(crate) fn key_bytes_for(scheme: &Scheme, secret: &str) -> Vec<u8> {
    key_bytes(scheme, 0, secret).unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// The decoded key of one secret, as its scheme uses it.
fn key_bytes(scheme: &Scheme, index: usize, secret: &str) -> Result<Vec<u8>, KeyError> {
    if secret.is_empty() {
        return Err(KeyError::Empty { index });
    }
    match scheme {
        // Standard Webhooks: the key is the base64 after `whsec_`. Stripe uses its `whsec_`
        // string as the key as is, so only this scheme decodes.
        Scheme::StandardWebhooks => {
            let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
            STANDARD
                .decode(encoded)
                .map_err(|e| KeyError::BadStandardWebhooksSecret {
                    index,
                    reason: e.to_string(),
                })
        }
        _ => Ok(secret.as_bytes().to_vec()),
    }
}
