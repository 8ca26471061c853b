//! `[analytics]`, with `[nats]` and `[telemetry]`.

use std::net::SocketAddr;

use hookbus_bus::{NatsConfig, StartPosition};
use hookbus_config::{ConfigError, Loader};
use hookbus_telemetry::TelemetryConfig;
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Config {
    pub nats: NatsConfig,
    pub telemetry: TelemetryConfig,
    pub analytics: AnalyticsConfig,
}

impl Config {
    pub fn load(loader: &Loader) -> Result<Self, ConfigError> {
        let config = Self {
            nats: loader.section("nats")?,
            telemetry: loader.section("telemetry")?,
            analytics: loader.section("analytics")?,
        };
        if config.analytics.concurrency == 0 {
            return Err(ConfigError::invalid(
                "analytics.concurrency",
                "must be more than 0",
            ));
        }
        hookbus_bus::consumer::check_batch_size(
            "analytics.batch_size",
            config.analytics.batch_size,
        )?;
        if config.analytics.subjects.is_empty() {
            return Err(ConfigError::invalid(
                "analytics.subjects",
                "must name at least one subject",
            ));
        }
        Ok(config)
    }
}

/// The `[analytics]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    pub listen: SocketAddr,
    /// `sqlite://path` (default `sqlite://./data/analytics.db`) or `postgres://…`; `DATABASE_URL`
    /// overrides it.
    pub database_url: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// Where the consumer starts when it is created for the first time: `all` (default), `new`,
    /// or an RFC 3339 time.
    pub start: StartPosition,
    /// What it counts (default everything, `events.>`).
    pub subjects: Vec<String>,
    /// Batches counted at once.
    pub concurrency: usize,
    /// The most events counted in one transaction (those already delivered; a batch is never
    /// waited for).
    pub batch_size: usize,
    /// Wait for the broker to confirm each ack. Off by default: the ledger makes an event
    /// delivered again after a lost ack harmless.
    pub confirm_acks: bool,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8084)),
            database_url: "sqlite://./data/analytics.db".into(),
            consumer: "analytics".into(),
            start: StartPosition::All,
            subjects: vec!["events.>".into()],
            concurrency: 2,
            batch_size: 64,
            confirm_acks: false,
        }
    }
}
