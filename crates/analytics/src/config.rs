//! `[analytics]`, with `[nats]` and `[telemetry]`.

use std::net::SocketAddr;

use hookbus_bus::StartPosition;
use hookbus_config::{ConfigError, Loader, Section, ServiceConfig};
use hookbus_service::ConsumerSettings;
use serde::Deserialize;

/// The analytics's whole configuration: `[nats]`, `[telemetry]` and `[analytics]`.
pub type Config = ServiceConfig<AnalyticsConfig>;

impl Section for AnalyticsConfig {
    const NAME: &'static str = "analytics";

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn prepare(&mut self, _: &Loader) -> Result<(), ConfigError> {
        self.consumer_settings().check()?;
        if self.subjects.is_empty() {
            return Err(ConfigError::invalid(
                "analytics.subjects",
                "must name at least one subject",
            ));
        }
        Ok(())
    }
}

impl AnalyticsConfig {
    /// What the consumer runs with.
    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            section: Self::NAME,
            name: self.consumer.clone(),
            subjects: self.subjects.clone(),
            start: self.start,
            concurrency: self.concurrency,
            batch_size: self.batch_size,
            confirm_acks: self.confirm_acks,
        }
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
