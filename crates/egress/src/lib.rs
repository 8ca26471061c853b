//! Egress: delivery of events to subscriber endpoints.
//!
//! - [`api`]: the management API (endpoints, secrets, messages, attempts, resend, recover, dead
//!   letters, portal links) and its OpenAPI document.
//! - [`console`] and [`access`]: the web console and tenant portal under `/console`, which call
//!   the API's operations in the scope of their session.
//! - [`records`] and [`directory`]: the endpoint records in a JetStream KV bucket, and the
//!   in-memory copy every replica keeps by watching it.
//! - [`dispatch`]: events → one task per matching endpoint, on the endpoint's partition.
//! - [`flows`]: the partitions shared among the replicas, and per-endpoint queues and limits.
//! - [`delivery`], [`health`]: one task's attempt and what follows from its answer.
//! - [`deliver`], [`schedule`], [`ssrf`], [`endpoint`]: one signed attempt and the meaning of
//!   its answer, the retry schedule, the address checks, and which endpoints an event goes to.
//! - [`engine`], [`store`]: what all of these share, and the streams and buckets they use.

#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod attempt_log;
mod cache;
pub mod catalogue;
pub mod config;
pub mod console;
pub mod crypto;
pub mod deliver;
mod delivery;
pub mod directory;
pub mod dispatch;
pub mod endpoint;
pub mod engine;
pub mod flows;
mod health;
pub mod records;
pub mod schedule;
pub mod ssrf;
pub mod store;
mod store_error;
mod waiting;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::Json;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use hookbus_bus::ConsumerSpec;
use hookbus_service::ServiceError;
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, EgressConfig};
pub use ssrf::{AddressPolicy, Forbidden, Lookup, Refused, SystemLookup, http_client, refusal_of};

/// What stops the egress from starting, beyond what every service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("egress.encryption_key is required")]
    NoEncryptionKey,
    #[error("egress.encryption_key: {0}")]
    EncryptionKey(crypto::SecretError),
    #[error("egress.api_token is required")]
    NoApiToken,
    #[error("console: {0}")]
    Console(std::io::Error),
    #[error("could not read the endpoints bucket within 30 s")]
    EndpointsUnread,
    #[error("HTTP client: {0}")]
    HttpClient(reqwest::Error),
}

impl From<StartError> for ServiceError {
    fn from(e: StartError) -> Self {
        Self::own(e)
    }
}

/// Runs the egress until `shutdown`: the API on `listener`, the dispatcher and the workers.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    run_with_lookup(config, listener, Arc::new(SystemLookup), shutdown).await
}

/// [`run`] with its own name resolution (tests map public-looking names to 127.0.0.1).
pub async fn run_with_lookup(
    config: Config,
    listener: TcpListener,
    lookup: Arc<dyn Lookup>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let settings = config.service.clone();
    let key = settings
        .encryption_key
        .as_ref()
        .ok_or(StartError::NoEncryptionKey)?;
    let key_bytes =
        crypto::SecretBox::key_bytes(key.expose_secret()).map_err(StartError::EncryptionKey)?;
    let secrets =
        Arc::new(crypto::SecretBox::from_key(&key_bytes).map_err(StartError::EncryptionKey)?);
    let token = settings.api_token.clone().ok_or(StartError::NoApiToken)?;
    // The console's templates and logo, before anything starts: a missing logo stops start-up.
    let views = console::Views::new(&settings.console).map_err(StartError::Console)?;
    let client = hookbus_bus::connect(&config.nats, "hookbus-egress").await?;
    let js = jetstream::new(client.clone());
    let replicas = config.nats.events.replicas;
    hookbus_bus::ensure_events_stream(&js, &config.nats.events).await?;
    hookbus_bus::dlq::ensure_dlq_stream(&js, replicas).await?;
    let stores = store::Stores::provision(
        js,
        settings.retention,
        replicas,
        hookbus_bus::EVENTS_STREAM,
        (settings.partitions, settings.replica_timeout),
    )
    .await?;

    let directory = directory::Directory::new();
    let bucket = stores.endpoints.clone();
    let last = bucket
        .status()
        .await
        .map(|s| s.info.state.last_sequence)
        .unwrap_or_default();
    tokio::spawn(directory.clone().follow(
        stores.endpoints.clone(),
        secrets.clone(),
        shutdown.clone(),
    ));
    if last > 0 && !directory.caught_up(last, Duration::from_secs(30)).await {
        return Err(StartError::EndpointsUnread.into());
    }

    let http = http_client(settings.policy(), lookup, settings.request_timeout)
        .map_err(StartError::HttpClient)?;
    let publisher = hookbus_bus::Publisher::new(client.clone(), 256);
    let engine = engine::Engine::new(
        stores,
        directory,
        secrets,
        settings.clone(),
        publisher,
        http,
    );

    let mut registry = Registry::default();
    let sub = registry.sub_registry_with_prefix("hookbus_egress");
    let metrics = &engine.metrics;
    sub.register(
        "attempts",
        "Delivery attempts by outcome",
        metrics.attempts.clone(),
    );
    sub.register(
        "delivery_latency_seconds",
        "Time from request to answer of each attempt",
        metrics.latency.clone(),
    );
    sub.register(
        "tasks_dispatched",
        "Delivery tasks queued",
        metrics.dispatched.clone(),
    );
    sub.register(
        "tasks_dead_lettered",
        "Delivery tasks dead-lettered (retries exhausted, or the event gone)",
        metrics.dead_lettered.clone(),
    );
    sub.register(
        "endpoints_disabled",
        "Disabled endpoints",
        metrics.disabled.clone(),
    );
    sub.register(
        "tasks_waiting",
        "Tasks waiting in an endpoint's queue at the replica that owns its partition",
        metrics.waiting.clone(),
    );
    sub.register(
        "tasks_in_flight",
        "Tasks of an endpoint started and not yet settled, at the replica that owns its partition",
        metrics.in_flight.clone(),
    );
    sub.register(
        "tasks_parked",
        "Tasks parked as a schedule because their endpoint had no room",
        metrics.parked.clone(),
    );
    sub.register(
        "tasks_held",
        "Tasks held because their endpoint is disabled",
        metrics.held.clone(),
    );
    sub.register(
        "partitions_owned",
        "Task partitions this replica owns",
        metrics.partitions_owned.clone(),
    );

    let flows = tokio::spawn(flows::run(engine.clone(), shutdown.clone()));
    let mut spec = ConsumerSpec::new(settings.dispatcher.clone(), &["events.>"])
        .start(settings.start)
        .concurrency(settings.dispatch_concurrency)
        .metrics(&hookbus_bus::ConsumerMetrics::register(&mut registry));
    spec.stream = config.nats.events.clone();
    spec.max_deliveries = engine::DISPATCH_MAX_DELIVERIES;
    // An event delivered again after a lost ack finds its dispatch marker and is acked again.
    spec.confirm_acks = false;
    let dispatcher_engine = engine.clone();
    let dispatcher = tokio::spawn(hookbus_bus::run_consumer(
        client.clone(),
        spec,
        move |delivery| {
            let engine = dispatcher_engine.clone();
            async move { engine.dispatch(delivery).await }
        },
        shutdown.clone(),
    ));

    let access = Arc::new(access::Access::new(&key_bytes));
    let state = Arc::new(api::ApiState {
        engine: engine.clone(),
        token: token.clone(),
        access: access.clone(),
    });
    let (routes, document) = api::router(state);
    let document = Arc::new(document);
    let mut app = routes
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .route("/readyz", get(readyz).with_state(client.clone()));
    if settings.console.enabled {
        let console = console::ConsoleState::new(
            engine.clone(),
            access,
            token,
            settings.sources.clone(),
            views,
        );
        app = app.nest("/console", console::router(Arc::new(console)));
    }
    hookbus_service::serve(
        "egress",
        listener,
        app,
        registry,
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    dispatcher.await??;
    flows.await?;
    Ok(())
}

async fn readyz(State(client): State<async_nats::Client>) -> Response {
    hookbus_service::readiness(&[("broker_connected", hookbus_bus::is_connected(&client))])
}

/// The whole process, configured by `config_path` (or `HOOKBUS_CONFIG`) and the environment.
pub async fn service_main(config_path: Option<PathBuf>) -> Result<(), ServiceError> {
    hookbus_service::run_service("hookbus-egress", config_path, run).await
}
