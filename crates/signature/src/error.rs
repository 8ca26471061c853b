use thiserror::Error;

/// Why a request failed verification. Each message names what was wrong; none reveals a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("missing signature header {0}")]
    MissingHeader(String),
    #[error("malformed header {header}: {reason}")]
    MalformedHeader { header: String, reason: String },
    #[error("no signature in {header} matches an active secret of this source")]
    Mismatch { header: String },
    #[error(
        "timestamp {timestamp} is {skew} s away from the server clock ({now}), outside the tolerance of {tolerance} s"
    )]
    TimestampOutOfTolerance {
        timestamp: i64,
        now: i64,
        skew: i64,
        tolerance: u64,
    },
    #[error("body is not valid JSON: {0}")]
    InvalidBody(String),
}

impl VerifyError {
    /// The stable error code the ingress answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TimestampOutOfTolerance { .. } => "timestamp_out_of_tolerance",
            Self::InvalidBody(_) => "invalid_body",
            Self::MissingHeader(_) | Self::MalformedHeader { .. } | Self::Mismatch { .. } => {
                "invalid_signature"
            }
        }
    }

    /// A short label for metrics: one of `missing_header`, `malformed_header`, `mismatch`,
    /// `timestamp`, `invalid_body`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::Mismatch { .. } => "mismatch",
            Self::TimestampOutOfTolerance { .. } => "timestamp",
            Self::InvalidBody(_) => "invalid_body",
        }
    }
}

/// A secret that cannot be used with its scheme.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("secret #{index} is empty")]
    Empty { index: usize },
    #[error("secret #{index} is not a valid whsec_<base64> secret: {reason}")]
    BadStandardWebhooksSecret { index: usize, reason: String },
    #[error("scheme {0} needs at least one secret")]
    NoSecrets(&'static str),
}

/// A payload template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("unclosed {{ in {0:?}")]
    Unclosed(String),
    #[error("unknown placeholder {{{0}}}: use {{body}}, {{timestamp}} or {{id}}")]
    UnknownPlaceholder(String),
    #[error("{0:?} does not include {{body}}")]
    NoBody(String),
}
