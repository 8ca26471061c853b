//! The ingress: `POST /webhooks/{source}` verifies a provider's signature on the raw body, stores
//! the request as a `hookbus.v1.Event` on `events.<source>.<type>`, and answers 2xx only after
//! JetStream's PubAck.

#![forbid(unsafe_code)]

pub mod config;
mod error;
mod limit;
mod metrics;
mod routes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use hookbus_bus::{ENVELOPE_HEADROOM, Publisher};
use hookbus_service::ServiceError;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, IngressConfig, Source, SourceConfig};
pub use error::ApiError;
pub use routes::{EVENT_ID_NAMESPACE, event_ids};

/// Runs the ingress on `listener` (bound by the caller, so tests can use port 0) until `shutdown`
/// is cancelled; requests in flight then get up to `drain_timeout` to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let sources = config.service.sources()?;
    let client = hookbus_bus::connect(&config.nats, "hookbus-ingress").await?;
    hookbus_bus::ensure_fits_max_payload(&client, config.service.body_limit.0, ENVELOPE_HEADROOM)?;
    let publisher = Publisher::new(client.clone(), config.service.max_in_flight);
    hookbus_bus::ensure_events_stream(publisher.jetstream(), &config.nats.events).await?;

    for source in &sources {
        if matches!(source.verifier.scheme(), hookbus_signature::Scheme::None(_)) {
            tracing::warn!(source = %source.name, "source accepts unverified webhooks (verifier = \"none\")");
        }
    }
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let state = Arc::new(routes::AppState {
        sources: sources
            .into_iter()
            .map(|source| {
                let state = routes::SourceState {
                    limiter: source.rate_limit.and_then(limit::RateLimiter::new),
                    dropped_headers: source
                        .verifier
                        .scheme()
                        .signature_headers()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    source,
                };
                (state.source.name.as_str().to_owned(), state)
            })
            .collect::<HashMap<_, _>>(),
        publisher,
        client: client.clone(),
        body_limit: config.service.body_limit.0,
        publish_timeout: config.service.publish_timeout,
        retry_after: config.service.retry_after,
        metrics,
    });
    let app = router(state).merge(hookbus_telemetry::metrics_router(Arc::new(registry)));

    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, sources = config.service.sources.len(), "ingress listening");
    let drain = config.service.drain_timeout;
    let stopping = shutdown.clone();
    let serve = axum::serve(listener, app).with_graceful_shutdown(stopping.cancelled_owned());
    tokio::select! {
        result = serve => result?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "drain timeout reached with requests still in flight");
        }
    }
    hookbus_bus::flush_before_exit(&client).await;
    tracing::info!("ingress stopped");
    Ok(())
}

fn router(state: routes::SharedState) -> Router {
    let routes = Router::new()
        .route("/webhooks/{source}", post(routes::receive))
        .route("/readyz", get(routes::readyz))
        // The body limit is enforced by the handler itself, with the ingress's error format.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    hookbus_service::with_health(routes)
}

/// The whole process: configuration from `config_path` (or `HOOKBUS_CONFIG`) and the environment,
/// telemetry, the listener, and SIGINT/SIGTERM for a graceful stop.
pub async fn service_main(config_path: Option<PathBuf>) -> Result<(), ServiceError> {
    hookbus_service::run_service("hookbus-ingress", config_path, run).await
}
