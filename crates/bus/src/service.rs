//! The process around a service: configuration, telemetry, the listening socket and the signals.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use hookbus_config::{ConfigError, Loader};
use hookbus_telemetry::TelemetryConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a whole service process: loads its configuration from `config_path` (or
/// `HOOKBUS_CONFIG`) and the environment with `load`, starts telemetry as `service`, listens on
/// the address `settings` names, and calls `run` until SIGINT or SIGTERM.
pub async fn service_main<C, Fut, E>(
    service: &'static str,
    config_path: Option<PathBuf>,
    load: impl FnOnce(&Loader) -> Result<C, ConfigError>,
    settings: impl FnOnce(&C) -> (&TelemetryConfig, SocketAddr),
    run: impl FnOnce(C, TcpListener, CancellationToken) -> Fut,
) -> Result<(), BoxError>
where
    Fut: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    install_crypto_provider();
    let loader = Loader::new(Loader::path_from_env(config_path).as_deref())?;
    let config = load(&loader)?;
    let (telemetry, listen) = settings(&config);
    let _telemetry = hookbus_telemetry::init(service, telemetry)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{service}: listen on {listen}: {e}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::stop_on_signal(shutdown.clone()));
    run(config, listener, shutdown).await.map_err(Into::into)
}

/// The one rustls crypto provider of the process (ring, as async-nats uses), for every TLS client
/// (reqwest, lettre, async-nats); a second call is a no-op. Services install it at start-up;
/// libraries that build a TLS client call it first too.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
