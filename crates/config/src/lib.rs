//! Layered configuration: defaults (in the types), then one TOML file (`--config` or
//! `HOOKBUS_CONFIG`), then the environment (`HOOKBUS_<SECTION>__<KEY>`, plus `NATS_URL`).
//! Every section is validated at start-up; an error names the key. The sections every process
//! shares (`[nats]`, `[telemetry]`) are here, and [`ServiceConfig`] puts them beside a service's
//! own [`Section`].

#![forbid(unsafe_code)]

mod nats;
mod service;
mod telemetry;
mod units;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::de::DeserializeOwned;

pub use nats::{NatsConfig, StreamSettings};
pub use service::{Section, ServiceConfig};
pub use telemetry::{LogFormat, TelemetryConfig};
pub use units::{ByteSize, UnitError, duration};

/// The sections a configuration file may have today.
pub const SECTIONS: &[&str] = &[
    "nats",
    "telemetry",
    "ingress",
    "inventory",
    "analytics",
    "notifications",
    "egress",
    "dev",
];

/// The sections whose `database_url` `DATABASE_URL` sets.
pub const SQL_SECTIONS: &[&str] = &["inventory", "analytics", "notifications"];

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("configuration key {key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// The layered sources of one process's configuration.
#[derive(Debug, Clone)]
pub struct Loader {
    figment: Figment,
    file: Option<PathBuf>,
    /// (dotted key, environment variable) for every key the environment sets.
    env_keys: Vec<(String, String)>,
}

impl Loader {
    /// The file at `path` (when given) overlaid by the process environment.
    pub fn new(path: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::with_env(path, vars)
    }

    /// As `new`, with the environment given explicitly (for tests).
    pub fn with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => Some(
                std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?,
            ),
            None => None,
        };
        Self::layered(text.as_deref(), path, vars)
    }

    /// The TOML `text` overlaid by the environment `vars`, as if read from a file (the fuzzer's
    /// way in; errors name no file).
    pub fn from_toml(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::layered(Some(text), None, vars)
    }

    fn layered(
        text: Option<&str>,
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(text) = text {
            figment = figment.merge(Toml::string(text));
        }
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let lookup = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut env_keys = Vec::new();
        for (key, value) in &vars {
            if let Some(rest) = key.strip_prefix("HOOKBUS_")
                && rest.contains("__")
            {
                let path = rest.to_ascii_lowercase().replace("__", ".");
                figment = figment.merge(single(&path, value));
                env_keys.push((path, key.clone()));
            }
        }
        if let Some(url) = lookup("NATS_URL") {
            figment = figment.merge(single("nats.url", &url));
            env_keys.push(("nats.url".into(), "NATS_URL".into()));
        }
        // DATABASE_URL is every SQL-backed service's database.
        if let Some(url) = lookup("DATABASE_URL") {
            for section in SQL_SECTIONS {
                let key = format!("{section}.database_url");
                figment = figment.merge(Serialized::default(&key, url.clone()));
                env_keys.push((key, "DATABASE_URL".into()));
            }
        }
        let loader = Self {
            figment,
            file: path.map(Path::to_owned),
            env_keys,
        };
        loader.check_sections()?;
        Ok(loader)
    }

    /// Adds `toml` beneath everything already loaded: its values apply only where neither the file
    /// nor the environment sets the key (`hookbus dev`'s embedded defaults).
    pub fn with_defaults(mut self, toml: &str) -> Self {
        self.figment = self.figment.join(Toml::string(toml));
        self
    }

    /// The path given by `--config` or, failing that, `HOOKBUS_CONFIG`.
    pub fn path_from_env(cli: Option<PathBuf>) -> Option<PathBuf> {
        cli.or_else(|| std::env::var_os("HOOKBUS_CONFIG").map(PathBuf::from))
    }

    fn check_sections(&self) -> Result<(), ConfigError> {
        let value = self
            .figment
            .extract::<figment::value::Dict>()
            .map_err(|e| self.error("", &e))?;
        for key in value.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    key.clone(),
                    format!(
                        "unknown section{}; expected one of {}",
                        self.origin(key),
                        SECTIONS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One section, with its defaults for what is not set.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        self.figment
            .focus(name)
            .extract::<T>()
            .map_err(|e| self.error(name, &e))
    }

    /// Where a key was set: an environment variable or the file.
    fn origin(&self, key: &str) -> String {
        if let Some((_, var)) = self
            .env_keys
            .iter()
            .find(|(path, _)| path == key || path.starts_with(&format!("{key}.")))
        {
            format!(" (set by environment variable {var})")
        } else if let Some(file) = &self.file {
            format!(" (in {})", file.display())
        } else {
            String::new()
        }
    }

    fn error(&self, section: &str, error: &figment::Error) -> ConfigError {
        let key = std::iter::once(section.to_owned())
            .chain(error.path.iter().cloned())
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(".");
        let message = format!("{}{}", error.kind, self.origin(&key));
        ConfigError::Invalid { key, message }
    }
}

/// An environment value as figment parses it (`5` → integer, `[a, b]` → array, else text), at
/// the dotted `path`.
fn single(path: &str, value: &str) -> Serialized<figment::value::Value> {
    let parsed = value
        .parse::<figment::value::Value>()
        .unwrap_or_else(|never| match never {});
    Serialized::default(path, parsed)
}
