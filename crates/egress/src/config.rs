//! `[egress]`, with `[nats]` and `[telemetry]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hookbus_bus::{NatsConfig, StartPosition};
use hookbus_config::{ConfigError, Loader, duration};
use hookbus_telemetry::TelemetryConfig;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::schedule::RetrySchedule;

#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsConfig,
    pub telemetry: TelemetryConfig,
    pub egress: EgressConfig,
}

impl Config {
    pub fn load(loader: &Loader) -> Result<Self, ConfigError> {
        let mut config = Self {
            nats: loader.section("nats")?,
            telemetry: loader.section("telemetry")?,
            egress: loader.section("egress")?,
        };
        config.egress.read_secret_files()?;
        config.egress.validate()?;
        Ok(config)
    }
}

/// The `[egress]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    pub listen: SocketAddr,
    /// Bearer token of the management API (at least 16 characters). Set it through
    /// `HOOKBUS_EGRESS__API_TOKEN` or `api_token_file`.
    pub api_token: Option<SecretString>,
    pub api_token_file: Option<PathBuf>,
    /// The key that encrypts endpoint secrets at rest: 32 bytes, base64. Set it through
    /// `HOOKBUS_EGRESS__ENCRYPTION_KEY` or `encryption_key_file`; every replica needs the same.
    pub encryption_key: Option<SecretString>,
    pub encryption_key_file: Option<PathBuf>,
    /// Lets deliveries reach loopback and private addresses (development and tests only).
    pub allow_private_networks: bool,
    /// Ranges opened although they are private (an internal subscriber's network).
    pub allowed_subnets: Vec<IpNet>,
    /// Timeout of one delivery request.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Delays before the 2nd, 3rd, … attempt.
    #[serde(with = "duration::list")]
    pub retry_schedule: Vec<Duration>,
    /// Fraction each retry delay may move either way.
    pub retry_jitter: f64,
    /// An endpoint failing without a success for this long is disabled.
    #[serde(with = "duration")]
    pub disable_after: Duration,
    /// How long the old secret keeps signing after a rotation.
    #[serde(with = "duration")]
    pub rotation_overlap: Duration,
    /// How long delivery status records and attempts are kept.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// Requests in flight at once from this replica, all endpoints together.
    pub max_concurrent_requests: usize,
    /// `max_in_flight` of an endpoint created without one.
    pub default_max_in_flight: u32,
    /// The dispatcher's durable consumer on `EVENTS`.
    pub dispatcher: String,
    /// Where the dispatcher starts when it is created for the first time.
    pub start: StartPosition,
    /// Events the dispatcher fans out at once.
    pub dispatch_concurrency: usize,
    /// Task partitions: each is one durable consumer on `EGRESS_TASKS`, owned by one replica at a
    /// time. Fixed once the stream exists (every endpoint's tasks are on its partition's subject).
    pub partitions: u16,
    /// Tasks of one endpoint that may wait at its owner beyond its `max_in_flight`; more are
    /// parked (acked and stored as a message schedule for when the endpoint has room).
    pub endpoint_buffer: u32,
    /// The server's limit on a partition's delivered, unsettled tasks (its `max_ack_pending`).
    pub partition_max_ack_pending: i64,
    /// A replica that has not shown itself alive for this long loses its partitions to the
    /// others: the lifetime of its entry in `egress_replicas` and its partitions' pin.
    #[serde(with = "duration")]
    pub replica_timeout: Duration,
}

impl Default for EgressConfig {
    fn default() -> Self {
        let schedule = RetrySchedule::default();
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            api_token: None,
            api_token_file: None,
            encryption_key: None,
            encryption_key_file: None,
            allow_private_networks: false,
            allowed_subnets: Vec::new(),
            request_timeout: Duration::from_secs(15),
            retry_schedule: schedule.delays,
            retry_jitter: schedule.jitter,
            disable_after: Duration::from_secs(5 * 24 * 3600),
            rotation_overlap: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_concurrent_requests: 512,
            default_max_in_flight: 16,
            dispatcher: "egress-dispatcher".into(),
            start: StartPosition::New,
            dispatch_concurrency: 128,
            partitions: 64,
            endpoint_buffer: 8,
            partition_max_ack_pending: 4096,
            replica_timeout: Duration::from_secs(10),
        }
    }
}

fn read_file(key: &str, path: &PathBuf) -> Result<SecretString, ConfigError> {
    std::fs::read_to_string(path)
        .map(|text| SecretString::from(text.trim().to_owned()))
        .map_err(|e| ConfigError::invalid(key, format!("{}: {e}", path.display())))
}

impl EgressConfig {
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.api_token_file {
            self.api_token = Some(read_file("egress.api_token_file", path)?);
        }
        if let Some(path) = &self.encryption_key_file {
            self.encryption_key = Some(read_file("egress.encryption_key_file", path)?);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match &self.api_token {
            None => {
                return Err(ConfigError::invalid(
                    "egress.api_token",
                    "is required (the management API's bearer token)",
                ));
            }
            Some(token) if token.expose_secret().len() < 16 => {
                return Err(ConfigError::invalid(
                    "egress.api_token",
                    "must be at least 16 characters",
                ));
            }
            Some(_) => {}
        }
        match &self.encryption_key {
            None => {
                return Err(ConfigError::invalid(
                    "egress.encryption_key",
                    "is required (32 bytes, base64; e.g. `openssl rand -base64 32`)",
                ));
            }
            Some(key) => {
                crate::crypto::SecretBox::from_base64(key.expose_secret())
                    .map_err(|e| ConfigError::invalid("egress.encryption_key", e))?;
            }
        }
        if self.retry_schedule.iter().any(Duration::is_zero) {
            return Err(ConfigError::invalid(
                "egress.retry_schedule",
                "delays must be more than 0",
            ));
        }
        if !(0.0..1.0).contains(&self.retry_jitter) {
            return Err(ConfigError::invalid(
                "egress.retry_jitter",
                "must be at least 0 and below 1",
            ));
        }
        for (key, value) in [
            (
                "egress.max_concurrent_requests",
                self.max_concurrent_requests,
            ),
            (
                "egress.default_max_in_flight",
                self.default_max_in_flight as usize,
            ),
            ("egress.dispatch_concurrency", self.dispatch_concurrency),
            ("egress.partitions", usize::from(self.partitions)),
            (
                "egress.partition_max_ack_pending",
                self.partition_max_ack_pending.max(0) as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be more than 0"));
            }
        }
        if self.partitions > 1024 {
            return Err(ConfigError::invalid(
                "egress.partitions",
                "must be at most 1024",
            ));
        }
        if self.replica_timeout < Duration::from_secs(2) {
            return Err(ConfigError::invalid(
                "egress.replica_timeout",
                "must be at least 2s",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "egress.request_timeout",
                "must be more than 0",
            ));
        }
        Ok(())
    }

    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule {
            delays: self.retry_schedule.clone(),
            jitter: self.retry_jitter,
        }
    }

    pub fn policy(&self) -> crate::AddressPolicy {
        crate::AddressPolicy {
            allow_private_networks: self.allow_private_networks,
            allowed_subnets: self.allowed_subnets.clone(),
        }
    }

    /// How long one pull of a partition's tasks lasts: well inside `replica_timeout`, the pin's
    /// lifetime without a pull.
    pub fn pull_expiry(&self) -> Duration {
        (self.replica_timeout / 4).max(Duration::from_millis(500))
    }

    /// The broker's ack deadline for a delivery task: always longer than the request, so a slow
    /// endpoint is never sent a duplicate because of it.
    pub fn task_ack_wait(&self) -> Duration {
        self.request_timeout * 2 + Duration::from_secs(10)
    }
}
