//! Webhook signatures: a verifier for each inbound scheme hookbus accepts, and the outbound
//! Standard Webhooks signer.
//!
//! No I/O happens here and the clock is a parameter, so every scheme is tested with fixed times.
//! Comparisons are constant-time (`hmac::Mac::verify_slice`).

#![forbid(unsafe_code)]

mod core;
mod error;
mod hmac_scheme;
mod outbound;
mod provider;
mod schemes;
mod verifier;

pub use crate::core::{Algorithm, Verified};
pub use error::{KeyError, TemplateError, VerifyError};
pub use hmac_scheme::{Encoding, Extract, HmacScheme, PayloadTemplate};
pub use outbound::{SigningSecret, sign_standard_webhooks};
pub use provider::{Outgoing, sign_as_provider};
pub use verifier::{Scheme, Verifier};

/// Default tolerance between a signed timestamp and the verifier's clock, in both directions.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
