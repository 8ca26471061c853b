//! One service's whole configuration: `[nats]`, `[telemetry]` and the service's own section.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;

use crate::{ConfigError, Loader, NatsConfig, TelemetryConfig};

/// A service's own section (`[ingress]`, `[inventory]`, …).
pub trait Section: DeserializeOwned {
    /// Its name in the file and in `HOOKBUS_<NAME>__<KEY>`.
    const NAME: &'static str;

    /// The address the service's HTTP server listens on.
    fn listen(&self) -> SocketAddr;

    /// Completes and checks the section once it is read: secret files read, values validated.
    /// `loader` gives other sections a service reads a view of. The error names the key.
    fn prepare(&mut self, loader: &Loader) -> Result<(), ConfigError> {
        let _ = loader;
        Ok(())
    }
}

/// What every service is configured with: the broker, telemetry, and its own section `S`.
#[derive(Debug, Clone)]
pub struct ServiceConfig<S> {
    pub nats: NatsConfig,
    pub telemetry: TelemetryConfig,
    pub service: S,
}

impl<S: Section> ServiceConfig<S> {
    /// The three sections from `loader`, `S` prepared.
    pub fn load(loader: &Loader) -> Result<Self, ConfigError> {
        let mut config = Self {
            nats: loader.section("nats")?,
            telemetry: loader.section("telemetry")?,
            service: loader.section(S::NAME)?,
        };
        config.service.prepare(loader)?;
        Ok(config)
    }
}
