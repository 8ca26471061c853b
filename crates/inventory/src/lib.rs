//! The inventory: stock per SKU in SQL (SQLite by default, Postgres by `DATABASE_URL`), changed by
//! `order.created` (reserve), `order.cancelled` (release a recorded reservation; a cancel that comes
//! first leaves a tombstone) and `stock.adjusted` (set or add), exactly once in effect under
//! redelivery (the `processed_events` ledger). Every change emits `StockLevelChanged`, and
//! `LowStock`/`OutOfStock` on crossing their thresholds, through a transactional outbox.

#![forbid(unsafe_code)]

pub mod batch;
pub mod config;
pub mod handler;
pub mod outbox;
mod routes;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use hookbus_bus::Publisher;
use hookbus_service::{ConsumerApp, ServiceError};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::{Config, InventoryConfig};
pub use store::{Cause, Inventory, StockLevel, Thresholds};

/// The subjects the inventory consumes by default.
pub fn filter_subjects(config: &InventoryConfig) -> Vec<String> {
    hookbus_commerce::FILTER_SUBJECTS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(std::iter::once(format!(
            "events.*.{}",
            handler::STOCK_ADJUSTED
        )))
        .chain(config.extra_subjects.iter().cloned())
        .collect()
}

/// Runs the inventory until `shutdown`: consumer, outbox relay and HTTP API.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let settings = config.service;
    let store = hookbus_store::Store::open(&settings.database_url, store::migrations()).await?;
    let inventory = Arc::new(Inventory::new(
        store.clone(),
        Thresholds {
            default: settings.low_stock_threshold,
            per_sku: settings.thresholds.clone(),
        },
    ));
    let client = hookbus_bus::connect(&config.nats, "hookbus-inventory").await?;
    let publisher = Publisher::new(client.clone(), 256);
    hookbus_bus::ensure_events_stream(publisher.jetstream(), &config.nats.events).await?;
    let wake_relay = Arc::new(Notify::new());

    let relay = outbox::Relay {
        store: store.clone(),
        publisher,
        wake: wake_relay.clone(),
    };
    let relay_task = tokio::spawn(relay.run(settings.relay_interval, shutdown.clone()));

    let mut app = ConsumerApp::new(&settings.consumer_settings(), &config.nats, &store, &client);
    app.spec.ack_wait = settings.ack_wait;
    let metrics = handler::Metrics::default();
    let sub = app.registry.sub_registry_with_prefix("hookbus_inventory");
    sub.register(
        "events_applied",
        "Events whose effect this process committed",
        metrics.applied.clone(),
    );
    sub.register(
        "events_repeated",
        "Deliveries of events already applied (skipped by the ledger)",
        metrics.repeated.clone(),
    );
    let handler = handler::Handler {
        inventory: inventory.clone(),
        consumer: settings.consumer.clone().into(),
        wake_relay: wake_relay.clone(),
        metrics,
        max_deliveries: app.max_deliveries(),
    };
    let state = Arc::new(routes::AppState {
        inventory,
        api_token: settings.api_token.clone(),
        wake_relay,
    });
    let routes = Router::new()
        .route("/v1/stock", get(routes::list_stock))
        .route(
            "/v1/stock/{sku}",
            get(routes::get_stock).put(routes::put_stock),
        )
        .with_state(state);
    app.run(Arc::new(handler), routes, listener, shutdown)
        .await?;
    relay_task.await?;
    hookbus_bus::flush_before_exit(&client).await;
    Ok(())
}

/// The whole process, configured by `config_path` (or `HOOKBUS_CONFIG`) and the environment.
pub async fn service_main(config_path: Option<PathBuf>) -> Result<(), ServiceError> {
    hookbus_service::run_service("hookbus-inventory", config_path, run).await
}
