//! The process around a service: its one argument, configuration, telemetry, the listening
//! socket and the signals.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use hookbus_config::{ConfigError, Loader, Section, ServiceConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The arguments of a service binary (`hookbus-ingress --config FILE`).
#[derive(Debug, Clone, clap::Parser)]
#[command(version)]
pub struct ServiceArgs {
    /// Configuration file (TOML); also `HOOKBUS_CONFIG`. The environment overrides it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ServiceArgs {
    /// The process's arguments; exits with clap's usage message when they are wrong.
    pub fn from_env() -> Self {
        <Self as clap::Parser>::parse()
    }
}

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Telemetry(#[from] hookbus_telemetry::TelemetryError),
    #[error("{service}: listen on {addr}: {cause}")]
    Listen {
        service: &'static str,
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] hookbus_bus::ConnectError),
    #[error(transparent)]
    Provision(#[from] hookbus_bus::ProvisionError),
    #[error(transparent)]
    Consumer(#[from] hookbus_bus::ConsumerError),
    #[error(transparent)]
    Store(#[from] hookbus_store::StoreError),
    #[error("HTTP server: {0}")]
    Serve(#[from] std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("a task of the service failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// What only one service can fail with (its rules, its senders, its keys), typed there.
    #[error(transparent)]
    Own(Box<dyn std::error::Error + Send + Sync>),
}

impl ServiceError {
    /// A service's own error.
    pub fn own(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Own(Box::new(error))
    }
}

/// Runs a whole service process: loads its configuration from `config_path` (or
/// `HOOKBUS_CONFIG`) and the environment, starts telemetry as `service`, listens on the address
/// its section names, and calls `run` until SIGINT or SIGTERM.
pub async fn run_service<S, Fut>(
    service: &'static str,
    config_path: Option<PathBuf>,
    run: impl FnOnce(ServiceConfig<S>, TcpListener, CancellationToken) -> Fut,
) -> Result<(), ServiceError>
where
    S: Section,
    Fut: Future<Output = Result<(), ServiceError>>,
{
    install_crypto_provider();
    let loader = Loader::new(Loader::path_from_env(config_path).as_deref())?;
    let config = ServiceConfig::<S>::load(&loader)?;
    let _telemetry = hookbus_telemetry::init(service, &config.telemetry)?;
    let addr = config.service.listen();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|cause| ServiceError::Listen {
            service,
            addr,
            cause,
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    run(config, listener, shutdown).await
}

/// The `main` of a service binary: its arguments, a multi-threaded runtime, and `service_main`
/// until it returns. The binaries use it through [`service_binary!`](crate::service_binary).
pub fn main<F, Fut>(service_main: F) -> Result<(), ServiceError>
where
    F: FnOnce(Option<PathBuf>) -> Fut,
    Fut: Future<Output = Result<(), ServiceError>>,
{
    let args = ServiceArgs::from_env();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?
        .block_on(service_main(args.config))
}

/// A service binary's whole `main.rs` but its doc: the allocator every hookbus binary uses
/// (mimalloc, see the `hookbus` binary's main) and a `main` that runs `service_main`.
#[macro_export]
macro_rules! service_binary {
    ($service_main:path) => {
        #[global_allocator]
        static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

        fn main() -> anyhow::Result<()> {
            Ok($crate::start::main($service_main)?)
        }
    };
}

/// The one rustls crypto provider of the process (ring, as async-nats uses), for every TLS client
/// (reqwest, lettre, async-nats); a second call is a no-op. Services install it at start-up;
/// libraries that build a TLS client call it first too.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("stop signal received, draining");
    token.cancel();
}

/// A crash point for tests: aborts the process when `HOOKBUS_FAILPOINTS` (comma separated) names
/// `name`, as a `kill -9` would at that spot. Off unless the variable is set.
pub fn failpoint(name: &str) {
    static ACTIVE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let active = ACTIVE.get_or_init(|| {
        std::env::var("HOOKBUS_FAILPOINTS")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    });
    if active.iter().any(|a| a == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
