//! The bus: NATS connection from configuration, stream provisioning, subject naming and event
//! publishing that waits for JetStream's PubAck, the two consumer runtimes (one durable consumer
//! that every replica pulls, [`consumer`]; partitions shared among the replicas, one owner each,
//! [`partitioned`]) and dead letters.

#![forbid(unsafe_code)]

mod config;
mod connect;
pub mod consumer;
pub mod dlq;
mod error;
mod metrics;
pub mod partitioned;
mod publish;
mod service;
pub mod streams;
pub mod subject;

pub use config::{NatsConfig, StreamSettings};
pub use connect::{
    ConnectError, connect, ensure_fits_max_payload, flush_before_exit, is_connected,
    supports_version,
};
pub use consumer::{
    Checkpoint, ConsumerError, ConsumerSpec, Delivery, Outcome, StartPosition, run_batch_consumer,
    run_batch_consumer_from_env, run_consumer, run_consumer_from_env,
};
pub use error::NatsError;
pub use metrics::{ConsumerLabels, ConsumerMetrics};
pub use publish::{PublishError, Published, Publisher, event_headers};
pub use service::{BoxError, install_crypto_provider, service_main};
pub use streams::{EVENTS_STREAM, ProvisionError, ensure_events_stream, events_stream_config};

use tokio_util::sync::CancellationToken;

/// Room beyond the body for the envelope's other fields, the preserved provider headers and the
/// NATS headers, counted against the server's `max_payload`.
pub const ENVELOPE_HEADROOM: u64 = 32 * 1024;

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
