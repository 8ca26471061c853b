//! The `[nats]` section: how every process reaches the broker, and the `EVENTS` stream's settings.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// The `[nats]` section: how to reach the broker. `NATS_URL` overrides `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One or more server URLs, comma separated.
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// A token; prefer `HOOKBUS_NATS__TOKEN` or `token_file` to a value in the file.
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    /// CA certificate to trust for TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS even when the URL says `nats://`.
    pub require_tls: bool,
    /// How long start-up waits for the first connection.
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// The `EVENTS` stream.
    pub events: StreamSettings,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            token: None,
            token_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            require_tls: false,
            connect_timeout: Duration::from_secs(10),
            events: StreamSettings::default(),
        }
    }
}

/// Settings of a stream that hookbus provisions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Window of `Nats-Msg-Id` deduplication on the server.
    #[serde(with = "crate::duration")]
    pub duplicate_window: Duration,
    /// How long events are kept.
    #[serde(with = "crate::duration")]
    pub max_age: Duration,
    /// 1 on a single node, 3 in a cluster.
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
        }
    }
}
