//! HMAC helpers shared by the schemes.

use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

use crate::hmac_scheme::Algorithm;

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
