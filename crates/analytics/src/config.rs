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
    /// Handlers at once.
    pub concurrency: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8084)),
            database_url: "sqlite://./data/analytics.db".into(),
            consumer: "analytics".into(),
            start: StartPosition::All,
            subjects: vec!["events.>".into()],
            concurrency: 8,
        }
    }
}
