//! The ingress's configuration: `[nats]`, `[telemetry]` and `[ingress]` with its sources.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hookbus_bus::SourceName;
use hookbus_config::{ByteSize, ConfigError, Loader, Section, ServiceConfig, duration};
use hookbus_signature::{
    Algorithm, Encoding, Extract, HmacScheme, PayloadTemplate, Scheme, Verifier,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Everything the ingress reads: `[nats]`, `[telemetry]` and `[ingress]`.
pub type Config = ServiceConfig<IngressConfig>;

impl Section for IngressConfig {
    const NAME: &'static str = "ingress";

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Builds every source once, so that a bad one stops start-up naming its key.
    fn prepare(&mut self, _: &Loader) -> Result<(), ConfigError> {
        self.sources().map(drop)
    }
}

/// The `[ingress]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413 before anything else.
    pub body_limit: ByteSize,
    /// Total time for storing an event (PubAck), retries and waits for an in-flight slot included.
    #[serde(with = "duration")]
    pub publish_timeout: Duration,
    /// PubAcks awaited at once; further requests wait for a slot within `publish_timeout`.
    pub max_in_flight: usize,
    /// Default tolerance for signed timestamps, both directions.
    #[serde(with = "duration")]
    pub tolerance: Duration,
    /// The `Retry-After` sent with 503.
    #[serde(with = "duration")]
    pub retry_after: Duration,
    /// How long shutdown waits for requests in flight.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    pub sources: BTreeMap<String, SourceConfig>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            body_limit: ByteSize(512 * 1024),
            publish_timeout: Duration::from_millis(2500),
            max_in_flight: 4096,
            tolerance: Duration::from_secs(300),
            retry_after: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            sources: BTreeMap::new(),
        }
    }
}

/// One `[ingress.sources.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `standard-webhooks`, `github`, `stripe`, `shopify`, `slack`, `hmac` or `none`.
    pub verifier: VerifierName,
    /// Active secrets; several during a rotation.
    #[serde(default)]
    pub secrets: Vec<SecretString>,
    /// A file with more secrets, one per line.
    pub secrets_file: Option<PathBuf>,
    /// This source's tolerance, instead of `ingress.tolerance`.
    #[serde(default, with = "optional_duration")]
    pub tolerance: Option<Duration>,
    /// Requests per second accepted from this source; more get 429. Unlimited when absent.
    pub rate_limit: Option<u32>,
    /// The generic scheme's description (`verifier = "hmac"` only).
    pub hmac: Option<HmacConfig>,
    /// Where type and delivery id come from (`hmac` and `none` only).
    pub type_header: Option<String>,
    pub type_pointer: Option<String>,
    pub id_header: Option<String>,
    pub id_pointer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifierName {
    StandardWebhooks,
    Github,
    Stripe,
    Shopify,
    Slack,
    Hmac,
    None,
}

/// `[ingress.sources.<name>.hmac]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    pub header: String,
    #[serde(default)]
    pub prefix: String,
    /// `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: EncodingName,
    /// `sha256` (default) or `sha512`.
    #[serde(default)]
    pub algorithm: AlgorithmName,
    /// What is signed, with `{body}`, `{timestamp}`, `{id}`; default `{body}`.
    pub payload: Option<String>,
    pub timestamp_header: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingName {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlgorithmName {
    #[default]
    Sha256,
    Sha512,
}

mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| hookbus_config::duration::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A configured source, ready to verify.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: SourceName,
    pub verifier: Verifier,
    pub rate_limit: Option<u32>,
}

impl IngressConfig {
    /// Builds every source's verifier; the first bad one names its key.
    pub fn sources(&self) -> Result<Vec<Source>, ConfigError> {
        if self.body_limit.0 == 0 {
            return Err(ConfigError::invalid(
                "ingress.body_limit",
                "must be more than 0",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "ingress.max_in_flight",
                "must be more than 0",
            ));
        }
        if self.publish_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "ingress.publish_timeout",
                "must be more than 0",
            ));
        }
        self.sources
            .iter()
            .map(|(name, source)| source.build(name, self.tolerance))
            .collect()
    }
}

impl SourceConfig {
    fn build(&self, name: &str, default_tolerance: Duration) -> Result<Source, ConfigError> {
        let key = |k: &str| format!("ingress.sources.{name}.{k}");
        let source_name = SourceName::parse(name)
            .map_err(|e| ConfigError::invalid(format!("ingress.sources.{name}"), e))?;

        let extract = Extract {
            type_header: self.type_header.as_deref().map(str::to_ascii_lowercase),
            type_pointer: self.type_pointer.clone(),
            id_header: self.id_header.as_deref().map(str::to_ascii_lowercase),
            id_pointer: self.id_pointer.clone(),
        };
        for (field, pointer) in [
            ("type_pointer", &self.type_pointer),
            ("id_pointer", &self.id_pointer),
        ] {
            if let Some(p) = pointer
                && !p.starts_with('/')
            {
                return Err(ConfigError::invalid(
                    key(field),
                    format!("{p:?} is not a JSON pointer (it starts with /)"),
                ));
            }
        }
        let uses_extract = extract != Extract::default();
        let scheme = match self.verifier {
            VerifierName::StandardWebhooks => Scheme::StandardWebhooks,
            VerifierName::Github => Scheme::Github,
            VerifierName::Stripe => Scheme::Stripe,
            VerifierName::Shopify => Scheme::Shopify,
            VerifierName::Slack => Scheme::Slack,
            VerifierName::None => Scheme::None(extract.clone()),
            VerifierName::Hmac => {
                let hmac = self.hmac.as_ref().ok_or_else(|| {
                    ConfigError::invalid(
                        key("hmac"),
                        "verifier \"hmac\" needs an [hmac] table with at least `header`",
                    )
                })?;
                let payload = match &hmac.payload {
                    Some(text) => PayloadTemplate::parse(text)
                        .map_err(|e| ConfigError::invalid(key("hmac.payload"), e))?,
                    None => PayloadTemplate::default(),
                };
                if payload.uses_timestamp() && hmac.timestamp_header.is_none() {
                    return Err(ConfigError::invalid(
                        key("hmac.timestamp_header"),
                        "the payload uses {timestamp}, so name the header that carries it",
                    ));
                }
                if payload.uses_id() && extract.id_header.is_none() && extract.id_pointer.is_none()
                {
                    return Err(ConfigError::invalid(
                        key("id_header"),
                        "the payload uses {id}, so set id_header or id_pointer",
                    ));
                }
                if hmac.header.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        key("hmac.header"),
                        "must name a header",
                    ));
                }
                Scheme::Hmac(HmacScheme {
                    header: hmac.header.to_ascii_lowercase(),
                    prefix: hmac.prefix.clone(),
                    encoding: match hmac.encoding {
                        EncodingName::Hex => Encoding::Hex,
                        EncodingName::Base64 => Encoding::Base64,
                    },
                    algorithm: match hmac.algorithm {
                        AlgorithmName::Sha256 => Algorithm::Sha256,
                        AlgorithmName::Sha512 => Algorithm::Sha512,
                    },
                    payload,
                    timestamp_header: hmac
                        .timestamp_header
                        .as_deref()
                        .map(str::to_ascii_lowercase),
                    extract,
                })
            }
        };
        if self.hmac.is_some() && self.verifier != VerifierName::Hmac {
            return Err(ConfigError::invalid(
                key("hmac"),
                "only for verifier = \"hmac\"",
            ));
        }
        if uses_extract && !matches!(self.verifier, VerifierName::Hmac | VerifierName::None) {
            return Err(ConfigError::invalid(
                key("type_header"),
                "type_header, type_pointer, id_header and id_pointer are only for the hmac and none verifiers; the others read type and id the provider's way",
            ));
        }

        let mut secrets: Vec<String> = self
            .secrets
            .iter()
            .map(|s| s.expose_secret().to_owned())
            .collect();
        if let Some(path) = &self.secrets_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    key("secrets_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            secrets.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        if self.verifier == VerifierName::None && !secrets.is_empty() {
            return Err(ConfigError::invalid(
                key("secrets"),
                "verifier \"none\" checks no signature, so it takes no secrets",
            ));
        }
        if self.verifier != VerifierName::None && secrets.is_empty() {
            return Err(ConfigError::invalid(
                key("secrets"),
                "a source with a signature scheme needs at least one secret (secrets or secrets_file)",
            ));
        }
        if self.rate_limit == Some(0) {
            return Err(ConfigError::invalid(
                key("rate_limit"),
                "must be more than 0, or absent for no limit",
            ));
        }
        let tolerance = self.tolerance.unwrap_or(default_tolerance).as_secs();
        let verifier = Verifier::new(scheme, &secrets, tolerance)
            .map_err(|e| ConfigError::invalid(key("secrets"), e))?;
        Ok(Source {
            name: source_name,
            verifier,
            rate_limit: self.rate_limit,
        })
    }
}
