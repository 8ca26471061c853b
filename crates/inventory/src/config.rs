//! `[inventory]`, with `[nats]` and `[telemetry]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hookbus_bus::StartPosition;
use hookbus_config::{ConfigError, Loader, Section, ServiceConfig, duration};
use hookbus_service::ConsumerSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The inventory's whole configuration: `[nats]`, `[telemetry]` and `[inventory]`.
pub type Config = ServiceConfig<InventoryConfig>;

impl Section for InventoryConfig {
    const NAME: &'static str = "inventory";

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn prepare(&mut self, _: &Loader) -> Result<(), ConfigError> {
        self.validate()
    }
}

/// The `[inventory]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    pub listen: SocketAddr,
    /// `sqlite://path` (default `sqlite://./data/inventory.db`) or `postgres://…`; `DATABASE_URL`
    /// overrides it.
    pub database_url: String,
    /// Bearer token for `PUT /v1/stock/{sku}`; without one, `PUT` is refused.
    pub api_token: Option<SecretString>,
    /// `LowStock` when a level crosses below this, unless the SKU has its own.
    pub low_stock_threshold: i64,
    /// Per-SKU thresholds.
    pub thresholds: BTreeMap<String, i64>,
    /// The durable consumer's name.
    pub consumer: String,
    /// Where the consumer starts when it is created for the first time: `new` (default), `all`,
    /// or an RFC 3339 time.
    pub start: StartPosition,
    /// Extra subjects beyond the commerce events and `events.*.stock.adjusted`.
    pub extra_subjects: Vec<String>,
    /// Batches handled at once.
    pub concurrency: usize,
    /// The most events applied in one transaction (those already delivered; a batch is never
    /// waited for).
    pub batch_size: usize,
    /// Wait for the broker to confirm each ack. Off by default: the ledger makes an event
    /// delivered again after a lost ack harmless.
    pub confirm_acks: bool,
    /// How long the broker waits for an ack before redelivering (in-progress acks extend it while
    /// a handler runs).
    #[serde(with = "duration")]
    pub ack_wait: Duration,
    /// How often the outbox relay looks for unsent rows when nothing wakes it.
    #[serde(with = "duration")]
    pub relay_interval: Duration,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8082)),
            database_url: "sqlite://./data/inventory.db".into(),
            api_token: None,
            low_stock_threshold: 5,
            thresholds: BTreeMap::new(),
            consumer: "inventory".into(),
            start: StartPosition::New,
            extra_subjects: Vec::new(),
            concurrency: 2,
            batch_size: 64,
            confirm_acks: false,
            ack_wait: Duration::from_secs(30),
            relay_interval: Duration::from_millis(500),
        }
    }
}

impl InventoryConfig {
    /// What the consumer runs with: the commerce events, `stock.adjusted` and the extra
    /// subjects.
    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            section: Self::NAME,
            name: self.consumer.clone(),
            subjects: crate::filter_subjects(self),
            start: self.start,
            concurrency: self.concurrency,
            batch_size: self.batch_size,
            confirm_acks: self.confirm_acks,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.consumer_settings().check()?;
        if self
            .api_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 16)
        {
            return Err(ConfigError::invalid(
                "inventory.api_token",
                "must be at least 16 characters",
            ));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return Err(ConfigError::invalid(
                "inventory.database_url",
                "must start with sqlite: or postgres:",
            ));
        }
        Ok(())
    }
}
