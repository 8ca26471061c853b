//! The verifier of one source: its scheme, its active secrets and its clock tolerance.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

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

/// What a verified request says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The event type as the provider names it (`orders/create`, `pull_request.opened`,
    /// `payment_intent.succeeded`); `None` when the request does not say.
    pub event_type: Option<String>,
    /// The provider's delivery id, when it sends one.
    pub delivery_id: Option<String>,
    /// When the event happened, as unix seconds, when the provider says.
    pub occurred_at: Option<i64>,
    /// Slack's `url_verification` challenge, to be echoed back instead of publishing anything.
    pub challenge: Option<String>,
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

/// One request as the schemes see it.
pub(crate) struct Ctx<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub now: i64,
    pub keys: &'a [Vec<u8>],
    pub tolerance: u64,
}

impl Ctx<'_> {
    /// A header's value as text; absent → `None`; not visible ASCII → malformed.
    pub fn header(&self, name: &str) -> Result<Option<&str>, VerifyError> {
        match self.headers.get(name) {
            None => Ok(None),
            Some(value) => {
                value
                    .to_str()
                    .map(|v| Some(v.trim()))
                    .map_err(|_| VerifyError::MalformedHeader {
                        header: name.to_owned(),
                        reason: "not visible ASCII".into(),
                    })
            }
        }
    }

    pub fn required(&self, name: &str) -> Result<&str, VerifyError> {
        match self.header(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(VerifyError::MissingHeader(name.to_owned())),
        }
    }

    /// Fails when `timestamp` is further than the tolerance from now, in either direction.
    pub fn check_tolerance(&self, timestamp: i64) -> Result<(), VerifyError> {
        let skew = self.now.saturating_sub(timestamp);
        if skew.unsigned_abs() > self.tolerance {
            return Err(VerifyError::TimestampOutOfTolerance {
                timestamp,
                now: self.now,
                skew,
                tolerance: self.tolerance,
            });
        }
        Ok(())
    }

    pub fn json(&self) -> Result<serde_json::Value, VerifyError> {
        serde_json::from_slice(self.body).map_err(|e| VerifyError::InvalidBody(e.to_string()))
    }
}

pub(crate) fn parse_timestamp(header: &str, value: &str) -> Result<i64, VerifyError> {
    value
        .parse::<i64>()
        .map_err(|_| VerifyError::MalformedHeader {
            header: header.to_owned(),
            reason: format!("{value:?} is not a unix timestamp in seconds"),
        })
}
