//! What the schemes share: the request as they see it, what a verified request says, the
//! HMAC algorithms and their constant-time comparison. Every other module of the crate may import
//! this one; this one imports none of them but `error`.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Sha256, Sha512};

use crate::error::VerifyError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
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

/// An HMAC over `parts` (concatenated) with `key`.
pub(crate) fn compute(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Computed {
    match algorithm {
        Algorithm::Sha256 => Computed::Sha256(keyed::<Hmac<Sha256>>(key, parts)),
        Algorithm::Sha512 => Computed::Sha512(keyed::<Hmac<Sha512>>(key, parts)),
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> M {
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

#[derive(Clone)]
pub(crate) enum Computed {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl Computed {
    /// Whether any candidate equals this MAC, each comparison in constant time.
    pub(crate) fn matches_any<'a>(&self, candidates: impl IntoIterator<Item = &'a [u8]>) -> bool {
        candidates.into_iter().any(|candidate| match self {
            Self::Sha256(mac) => mac.clone().verify_slice(candidate).is_ok(),
            Self::Sha512(mac) => mac.clone().verify_slice(candidate).is_ok(),
        })
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Sha256(mac) => mac.finalize().into_bytes().to_vec(),
            Self::Sha512(mac) => mac.finalize().into_bytes().to_vec(),
        }
    }
}

/// HMAC-SHA256 over `parts`, for signers and tests.
pub(crate) fn sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    compute(Algorithm::Sha256, key, parts).into_bytes()
}
